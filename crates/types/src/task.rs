//! The words the requester's core and its shell share about a job's tasks:
//! which job, which task, which attempt, where a job stands, and why an
//! attempt gave no result.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A job, named by the requester that holds it (`j-…`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One execution of one task: its index in the job and its attempt number.
/// Attempt numbers are used once each per task, across restarts too; 0 is
/// the requester's own run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Attempt {
    pub task: u64,
    pub attempt: u32,
}

/// A task of a job.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskRef {
    pub job: JobId,
    pub task: u64,
}

/// Where a job stands. One mapping to and from text ([`JobPhase::as_str`],
/// [`JobPhase::parse`]) serves the database, the API and the CLI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobPhase {
    Running,
    Assembling,
    Completed,
    Failed,
    Cancelled,
}

impl JobPhase {
    pub const ALL: [JobPhase; 5] = [
        JobPhase::Running,
        JobPhase::Assembling,
        JobPhase::Completed,
        JobPhase::Failed,
        JobPhase::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Running => "running",
            JobPhase::Assembling => "assembling",
            JobPhase::Completed => "completed",
            JobPhase::Failed => "failed",
            JobPhase::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<JobPhase> {
        JobPhase::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// Completed, failed or cancelled: nothing more will happen to it.
    pub fn has_ended(self) -> bool {
        !matches!(self, JobPhase::Running | JobPhase::Assembling)
    }
}

impl fmt::Display for JobPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an attempt gave no result. Another provider may still succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    /// The provider answered with an error (a blob it could not fetch, its
    /// sandbox failing): counts against the task and the provider.
    Error { reason: String },
    /// No answer within the attempt's time: the provider kept the task past
    /// its whole budget.
    TimedOut,
    /// The provider went away (disconnected): no fault of the task or, as
    /// far as anyone can tell, of the provider.
    Lost,
    /// The provider declined the work (busy, over a limit of its own).
    Refused { reason: String },
}

impl Failure {
    /// Whether the attempt says nothing about its task, so that it counts
    /// apart from the task's failures: the provider went away, declined, or
    /// never answered (a task that outruns its own deadline ends with a
    /// result, a deadline trap, so silence is the provider's or the
    /// network's). On a network of machines that come and go, and of links
    /// that break, a task may meet several of these without being at fault.
    pub fn is_lost(&self) -> bool {
        !matches!(self, Failure::Error { .. })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Error { reason } => write!(f, "{reason}"),
            Failure::TimedOut => write!(f, "no answer in time"),
            Failure::Lost => write!(f, "provider gone"),
            Failure::Refused { reason } => write!(f, "refused: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_maps_to_one_string_and_back() {
        for p in JobPhase::ALL {
            assert_eq!(JobPhase::parse(p.as_str()), Some(p));
            assert_eq!(
                serde_json::to_string(&p).expect("encodes"),
                format!("\"{p}\"")
            );
        }
        assert_eq!(JobPhase::parse("done"), None);
        assert!(JobPhase::Cancelled.has_ended() && !JobPhase::Assembling.has_ended());
    }
}
