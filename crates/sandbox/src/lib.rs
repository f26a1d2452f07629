//! The sandbox: runs one task — a WASI preview 1 command module with its
//! arguments, environment, read-only inputs under `/in` and one writable
//! `/out` — in wasmtime, under fuel, memory, wall-clock and output limits.
//!
//! Guarantees:
//! - **Nothing of the host** is visible but the two preopened directories:
//!   no host environment, no network, no clock, no entropy.
//! - **Deterministic by construction**: NaN canonicalisation, no threads, a
//!   virtual clock, `random_get` seeded from the task's seed, fixed file
//!   metadata. The same (module, arguments, inputs, seed) gives byte-identical
//!   outputs and the same fuel, on every run and machine of one engine identity.
//! - **Bounded**: every limit hit is a typed [`Trap`], never a host failure,
//!   and the next task is unaffected.
//!
//! Running a task is one call: [`Sandbox::run`] on a thread of its own, or
//! [`Sandbox::run_async`] on an async thread (a provider starts a short
//! task there and moves a long one to a sandbox thread).

mod cache;
mod engine;
mod imports;
mod run;

pub use engine::{INSTANCES_MAX, Metering, SandboxConfig};
pub use run::{HeldOutput, InputDir, STDOUT_FILE, TaskReport, TaskRun};
pub use types::outcome::{Outcome, OutputFile, Trap};

use std::sync::Arc;
use types::BlobHash;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("module is {size_bytes} bytes, over the limit of {limit_bytes} (MODULE_BYTES_MAX)")]
    ModuleTooLarge { size_bytes: u64, limit_bytes: u64 },
    #[error("not a WebAssembly module: {0}")]
    NotWasm(String),
    #[error("invalid module {hash}: {message}")]
    InvalidModule { hash: String, message: String },
    #[error(
        "the module imports {module}::{name}, which the sandbox does not provide (WASI preview 1 only); allow missing imports to make it trap when called"
    )]
    MissingImport { module: String, name: String },
    #[error("the module exports no function `{0}` to start")]
    MissingEntry(String),
    #[error("invalid input {name:?}: {message}")]
    InvalidInput { name: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("engine: {0}")]
    Engine(String),
}

impl SandboxError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }
}

/// A compiled module, ready to instantiate; cheap to clone.
#[derive(Clone)]
pub struct LoadedModule {
    pub hash: BlobHash,
    /// 0 when taken from memory by hash alone (`Sandbox::load_known`).
    pub size_bytes: u64,
    /// Whether it came from a cache (memory or disk) rather than a compile.
    pub cached: bool,
    pub compile_ms: u64,
    pub(crate) module: Arc<wasmtime::Module>,
}

pub use engine::Sandbox;

/// Drives a sandbox future ([`Sandbox::run_async`]) to its end on this
/// thread: one of a tokio runtime's blocking pool, or one outside any
/// runtime (never an async worker thread, where blocking panics).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    wasmtime_wasi::runtime::in_tokio(future)
}
