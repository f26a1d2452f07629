//! The verification core: for one job, which tasks to replicate, which
//! results to accept, when to escalate a disagreement, and whom to exclude.
//!
//! Our sandbox is deterministic, so an honest result is a bit-exact function
//! of the task (within one engine identity) and any disagreement proves a
//! fault. The rules (DESIGN.md, "Verification policy"):
//!
//! - **Unanimity, never majority.** A task's result is accepted only when
//!   every non-void result of the same engine identity agrees. A disagreement
//!   brings more replicas on unrelated providers and then the requester's own
//!   run (ground truth), which decides; everyone it contradicts is caught.
//! - **Adaptive replication with a floor.** A provider without a record has
//!   every result replicated; the rate falls as its verified results grow,
//!   never below the floor; being caught resets it.
//! - **A caught provider's testimony is void.** Every task it vouched for in
//!   the job, alone or with others, is verified again.
//!
//! *Invariant:* no I/O, no clock, no global randomness. The caller feeds
//! events ([`JobVerifier::on_dispatch`], [`JobVerifier::on_result`], ...) and
//! carries out the [`Action`]s returned, so the node and the seeded
//! simulations (the `sim` crate: this policy alone, and the whole core)
//! run the same code.

mod bound;
mod job;
mod policy;

pub use bound::coalition_bound;
pub use job::{Action, Claim, JobVerifier, Method, Summary};
pub use policy::{Policy, REPLICAS_MAX, Record};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VerifyError {
    #[error("verification floor {0} is not between 0 and 1")]
    Floor(f64),
    #[error("replicas {0} is not between 2 and {REPLICAS_MAX} (REPLICAS_MAX)")]
    Replicas(u8),
    #[error("escalation replicas {0} is over {REPLICAS_MAX} (REPLICAS_MAX)")]
    Escalation(u8),
}
