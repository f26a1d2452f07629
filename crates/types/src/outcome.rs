//! How a task ended, and what it left: the part of a result every crate shares.

use crate::BlobHash;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The guest returned from its entry point (code 0) or called `proc_exit`.
    Exited {
        code: i32,
    },
    Trapped {
        trap: Trap,
    },
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        *self == Outcome::Exited { code: 0 }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Exited { code } => write!(f, "exited with code {code}"),
            Outcome::Trapped { trap } => write!(f, "trapped: {trap}"),
        }
    }
}

/// One line on a failed task: how it ended and the last line it wrote to stderr.
pub fn describe_failure(index: u64, outcome: &Outcome, stderr_tail: &[u8]) -> String {
    let tail = String::from_utf8_lossy(stderr_tail);
    let last_line = tail
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if last_line.is_empty() {
        format!("task {index} {outcome}")
    } else {
        format!("task {index} {outcome} (stderr: {last_line})")
    }
}

/// Why a task stopped before it finished: limits first, then the guest's own faults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "trap", rename_all = "snake_case")]
pub enum Trap {
    #[error("out of fuel (limit {fuel_limit})")]
    OutOfFuel { fuel_limit: u64 },
    #[error("out of memory (limit {limit_bytes} bytes)")]
    OutOfMemory { limit_bytes: u64 },
    #[error("deadline of {deadline_ms} ms passed")]
    Deadline { deadline_ms: u64 },
    #[error("output larger than the limit of {limit_bytes} bytes")]
    OutputTooLarge { limit_bytes: u64 },
    #[error("stack overflow")]
    StackOverflow,
    #[error("invalid output: {message}")]
    InvalidOutput { message: String },
    #[error("guest trap: {message}")]
    Guest { message: String },
    /// Stopped because whoever asked for it no longer wants it.
    #[error("cancelled")]
    Cancelled,
}

impl Trap {
    /// A stable code for the kind of trap, and its data: what replicas
    /// compare, so that rewording a message never changes what they agree
    /// on. Codes are never reused.
    pub fn code(&self) -> (&'static str, Vec<u8>) {
        match self {
            Trap::OutOfFuel { fuel_limit } => ("out_of_fuel", fuel_limit.to_le_bytes().to_vec()),
            Trap::OutOfMemory { limit_bytes } => {
                ("out_of_memory", limit_bytes.to_le_bytes().to_vec())
            }
            Trap::Deadline { deadline_ms } => ("deadline", deadline_ms.to_le_bytes().to_vec()),
            Trap::OutputTooLarge { limit_bytes } => {
                ("output_too_large", limit_bytes.to_le_bytes().to_vec())
            }
            Trap::StackOverflow => ("stack_overflow", Vec::new()),
            // The guest's own words (or the engine's, for its trap codes):
            // part of the deterministic result within one engine identity.
            Trap::InvalidOutput { message } => ("invalid_output", message.as_bytes().to_vec()),
            Trap::Guest { message } => ("guest", message.as_bytes().to_vec()),
            Trap::Cancelled => ("cancelled", Vec::new()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path under `/out`, with `/` separators.
    pub name: String,
    pub size_bytes: u64,
    pub hash: BlobHash,
}
