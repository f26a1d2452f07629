//! The vocabulary of Plexus: ids, units, limits, and the job file. No I/O,
//! no async: every other crate depends on this one, and it on nothing of ours.

pub mod ids;
pub mod job;
pub mod limits;
pub mod offer;
pub mod outcome;
pub mod task;

pub use ids::{BlobHash, Credits, Fuel, RequestId};
pub use job::{ExpandedTask, Job, JobError, ModuleSource, ParamValue, Requirements, Verification};
pub use limits::TaskLimits;
pub use offer::Offer;
pub use outcome::{Outcome, OutputFile, Trap};
pub use task::{Attempt, Failure, JobId, JobPhase, TaskRef};
