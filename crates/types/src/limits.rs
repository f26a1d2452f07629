//! Every bound in one place. Exceeding one is an error that names it.

use serde::{Deserialize, Serialize};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

/// Largest module the sandbox accepts (DESIGN.md).
/// A control message (offer, request, answer) on the wire.
pub const CONTROL_MESSAGE_BYTES_MAX: u64 = MIB;
/// Tasks one request may carry: short tasks go several to a message, so
/// the round trip, the substream and the handoff to a sandbox thread are
/// paid once per batch instead of once per task.
pub const BATCH_TASKS_MAX: usize = 64;
/// Requests one requester may hold on a provider beyond its slots: the
/// provider refuses more ("busy"). Both sides keep it: the requester's
/// credit window is the slots plus at most `PREFETCH_PER_PROVIDER_MAX`.
pub const QUEUED_PER_REQUESTER_MAX: u32 = 2;
/// Requests a requester sends a provider beyond its slots, so it never
/// waits for work. One less than the provider holds: an answer on its way
/// back still counts there while the next request is already sent.
pub const PREFETCH_PER_PROVIDER_MAX: u32 = 1;
const _: () = assert!(PREFETCH_PER_PROVIDER_MAX < QUEUED_PER_REQUESTER_MAX);
/// What a batch's request and its answer may hold, by the sender's
/// estimate (an assignment's or a result's strings, plus a margin per
/// item); the message limit stays the hard bound.
pub const BATCH_BYTES_BUDGET: u64 = CONTROL_MESSAGE_BYTES_MAX / 2;

/// Connections a node keeps established at once, in total and inbound (so
/// inbound ones alone cannot fill it: an eclipse), per peer (TCP and QUIC
/// on each address mDNS or identify found, and a simultaneous dial each
/// way), and being set up at once each way. A requester of 10,000
/// providers holds one or two each.
pub const CONNECTIONS_MAX: u32 = 16_384;
pub const CONNECTIONS_INBOUND_MAX: u32 = 12_288;
pub const CONNECTIONS_PER_PEER_MAX: u32 = 8;
pub const CONNECTIONS_PENDING_MAX: u32 = 256;
const _: () = assert!(CONNECTIONS_INBOUND_MAX < CONNECTIONS_MAX);

/// Task requests one peer may send a node per second, and in a burst; one
/// past them is refused ("rate limit") and counted. Far above what dispatch
/// sends (B1: ~8,500 tasks/s to one provider, in batches of up to 64), so
/// only a flood meets it.
pub const TASK_REQUESTS_PER_PEER_PER_SEC: u32 = 10_000;
pub const TASK_REQUESTS_BURST_PER_PEER: u32 = 20_000;
/// Blob requests (a chunk, or a stream for a whole blob) one peer may send
/// a node per second, and in a burst. A chunk is at most a MiB, so the
/// rate allows some 5 GB/s of chunks, past any link; a stream carries a
/// whole blob (a module, an input, a task's output), and a requester fetches
/// at most a few per task it settles.
pub const BLOB_REQUESTS_PER_PEER_PER_SEC: u32 = 5_000;
pub const BLOB_REQUESTS_BURST_PER_PEER: u32 = 10_000;
/// Peers whose request rate a node remembers at once.
pub const RATE_LIMITED_PEERS_MAX: usize = 16_384;

pub const MODULE_BYTES_MAX: u64 = 256 * MIB;
/// Largest job file read; a job file is a description, not data.
pub const JOB_FILE_BYTES_MAX: u64 = MIB;
/// Tasks one job may expand to. Tasks are expanded lazily, one index at a
/// time, so this bounds work and bookkeeping, not an allocation.
pub const TASKS_PER_JOB_MAX: u64 = 1_000_000;
pub const INPUTS_PER_JOB_MAX: usize = 256;
pub const ARGS_PER_TASK_MAX: usize = 1024;
pub const ARG_BYTES_MAX: usize = 64 * KIB as usize;
pub const ENV_VARS_MAX: usize = 256;
/// Longest explicit list of sweep values in a job file.
pub const SWEEP_VALUES_MAX: usize = 100_000;
pub const NAME_BYTES_MAX: usize = 255;

/// The guest's stderr is kept as a tail of at most this many bytes.
pub const STDERR_TAIL_BYTES_MAX: u64 = 64 * KIB;
/// Files a task may leave in its output directory.
pub const OUTPUT_FILES_MAX: usize = 1024;
pub const TASK_MEMORY_BYTES_MAX: u64 = 16 * GIB;

/// Most executions of one task in one round of verification.
pub const REPLICAS_MAX: u8 = 5;

pub const TASK_FUEL_DEFAULT: u64 = 1_000_000_000_000;
pub const TASK_MEMORY_BYTES_DEFAULT: u64 = 512 * MIB;
pub const TASK_DEADLINE_MS_DEFAULT: u64 = 300_000;
pub const TASK_OUTPUT_BYTES_DEFAULT: u64 = 64 * MIB;

const _: () = assert!(TASK_MEMORY_BYTES_DEFAULT <= TASK_MEMORY_BYTES_MAX);
const _: () = assert!(STDERR_TAIL_BYTES_MAX <= TASK_OUTPUT_BYTES_DEFAULT);

/// The limits one task runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLimits {
    /// None: no metering (benchmarks only; results carry no fuel figure).
    pub fuel: Option<u64>,
    pub memory_bytes_max: u64,
    pub deadline_ms: u64,
    /// All output files together, the captured stdout included.
    pub output_bytes_max: u64,
    pub stderr_tail_bytes_max: u64,
}

impl Default for TaskLimits {
    fn default() -> Self {
        TaskLimits {
            fuel: Some(TASK_FUEL_DEFAULT),
            memory_bytes_max: TASK_MEMORY_BYTES_DEFAULT,
            deadline_ms: TASK_DEADLINE_MS_DEFAULT,
            output_bytes_max: TASK_OUTPUT_BYTES_DEFAULT,
            stderr_tail_bytes_max: STDERR_TAIL_BYTES_MAX,
        }
    }
}
