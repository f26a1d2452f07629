//! The replication policy and a provider's record.

use crate::VerifyError;
use serde::{Deserialize, Serialize};

pub use types::limits::REPLICAS_MAX;

/// How hard a job checks its results.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Lowest share of a trusted provider's results that are still
    /// replicated (DESIGN.md: never below 10% by default).
    pub floor: f64,
    /// Verified results after which a provider's rate reaches the floor; the
    /// rate falls linearly from 1 until then.
    pub ramp: u32,
    /// Executions of a replicated task, all on different providers.
    pub replicas: u8,
    /// Executions added on unrelated providers when results disagree, before
    /// the requester's own run decides. They widen the net: a second cheater
    /// among them is caught by the same ground truth.
    pub escalation: u8,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            floor: 0.1,
            ramp: 10,
            replicas: 2,
            escalation: 1,
        }
    }
}

impl Policy {
    pub fn validate(&self) -> Result<(), VerifyError> {
        if !(0.0..=1.0).contains(&self.floor) {
            return Err(VerifyError::Floor(self.floor));
        }
        if !(2..=REPLICAS_MAX).contains(&self.replicas) {
            return Err(VerifyError::Replicas(self.replicas));
        }
        if self.escalation > REPLICAS_MAX {
            return Err(VerifyError::Escalation(self.escalation));
        }
        Ok(())
    }
}

/// A provider's record, kept across jobs (the node stores it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Results confirmed by another provider or by the requester's own run.
    pub verified: u64,
    /// Times it was caught returning a result the ground truth contradicts.
    pub disagreed: u64,
    /// Attempts it took and did not answer in time.
    pub timed_out: u64,
    /// Verified results since it was last caught: the rate falls with this.
    pub streak: u64,
}

impl Record {
    /// The share of this provider's results to replicate.
    pub fn replication_rate(&self, policy: &Policy) -> f64 {
        let ramp = f64::from(policy.ramp.max(1));
        (1.0 - self.streak as f64 / ramp).max(policy.floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_starts_at_one_falls_to_the_floor_and_never_below() {
        let policy = Policy::default();
        let at = |streak| {
            Record {
                streak,
                ..Record::default()
            }
            .replication_rate(&policy)
        };
        assert_eq!(at(0), 1.0);
        assert!((at(5) - 0.5).abs() < 1e-9);
        assert_eq!(at(10), 0.1);
        assert_eq!(at(10_000), 0.1);
        let full = Policy {
            floor: 1.0,
            ..policy
        };
        assert_eq!(
            Record {
                streak: 99,
                ..Record::default()
            }
            .replication_rate(&full),
            1.0
        );
    }

    #[test]
    fn bad_policies_are_refused() {
        let ok = Policy::default();
        assert_eq!(ok.validate(), Ok(()));
        for (bad, err) in [
            (Policy { floor: 1.5, ..ok }, VerifyError::Floor(1.5)),
            (Policy { replicas: 1, ..ok }, VerifyError::Replicas(1)),
            (
                Policy {
                    escalation: 9,
                    ..ok
                },
                VerifyError::Escalation(9),
            ),
        ] {
            assert_eq!(bad.validate(), Err(err));
        }
    }
}
