//! The requester's tunable constants, in one struct: the node runs the
//! defaults, the simulation draws a set per seed (as FoundationDB's BUGGIFY
//! does) so that rare paths are walked.

use rand::Rng;
use types::limits::{BATCH_BYTES_BUDGET, BATCH_TASKS_MAX, PREFETCH_PER_PROVIDER_MAX};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Knobs {
    /// Requests sent to a provider beyond its slots, so it never waits for
    /// work; at most `PREFETCH_PER_PROVIDER_MAX` (providers refuse more).
    pub prefetch_per_provider: u32,
    /// About how much work one request carries: short tasks are batched up
    /// to this (and `batch_tasks_max`), by the job's run times so far. A
    /// round trip costs about half a millisecond; a few milliseconds of
    /// work make that small without making batches long.
    pub batch_target_ms: f64,
    /// A batch takes at most 1/this of what is left per slot.
    pub batch_shares_per_slot: u64,
    pub batch_tasks_max: usize,
    pub batch_bytes_budget: u64,
    /// Attempts of one task that end without a result before the job fails.
    pub attempts_max: u32,
    /// Attempts of one task lost with their provider (a disconnection, a
    /// refusal) before they count as failures too.
    pub lost_attempts_max: u32,
    /// Time an attempt may take beyond the task's own deadline (blob
    /// fetches, queueing).
    pub attempt_margin_ms: u64,
    /// How much slower than its benchmark a provider may run a task before
    /// its attempt counts as timed out.
    pub benchmark_slack: f64,
    /// A failed task waits this long before its next attempt, doubling with
    /// each failure up to `retry_backoff_max_ms`.
    pub retry_backoff_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// Failed attempts a provider may have in one job before it is left out.
    pub failures_before_exclusion: u32,
    /// Queued executions one provider's turn looks through for one it may
    /// run: a replica must skip the providers that already hold its task.
    pub pending_scan_max: usize,
    /// A straggler gets a copy on an idle provider once it has run this many
    /// times the job's median execution, and at least `speculate_after_min_ms`.
    pub speculate_factor: u64,
    pub speculate_after_min_ms: u64,
    /// Execution times a job remembers for its median.
    pub durations_kept: usize,
    /// The chance that a provider whose turn comes takes a replica it may
    /// run (else the next turn draws again): replicas land on providers
    /// drawn at random, not on neighbours in rank.
    pub replica_take_chance: f64,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            prefetch_per_provider: 1,
            batch_target_ms: 5.0,
            batch_shares_per_slot: 4,
            batch_tasks_max: BATCH_TASKS_MAX,
            batch_bytes_budget: BATCH_BYTES_BUDGET,
            attempts_max: 5,
            lost_attempts_max: 20,
            attempt_margin_ms: 30_000,
            benchmark_slack: 4.0,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 5_000,
            failures_before_exclusion: 3,
            pending_scan_max: 64,
            speculate_factor: 2,
            speculate_after_min_ms: 500,
            durations_kept: 64,
            replica_take_chance: 0.25,
        }
    }
}

impl Knobs {
    /// The prefetch within what providers hold.
    pub fn prefetch(&self) -> u32 {
        self.prefetch_per_provider.min(PREFETCH_PER_PROVIDER_MAX)
    }

    /// A set drawn for one simulation seed: each knob somewhere in the range
    /// where the requester must still be correct (not fast).
    pub fn randomised(rng: &mut impl Rng) -> Knobs {
        Knobs {
            prefetch_per_provider: rng.random_range(0..=PREFETCH_PER_PROVIDER_MAX),
            batch_target_ms: [0.5, 5.0, 50.0][rng.random_range(0..3)],
            batch_shares_per_slot: rng.random_range(1..=8),
            batch_tasks_max: [1, 8, BATCH_TASKS_MAX][rng.random_range(0..3)],
            batch_bytes_budget: BATCH_BYTES_BUDGET,
            attempts_max: rng.random_range(3..=8),
            lost_attempts_max: rng.random_range(10..=30),
            attempt_margin_ms: [500, 5_000, 30_000][rng.random_range(0..3)],
            benchmark_slack: [2.0, 4.0, 8.0][rng.random_range(0..3)],
            retry_backoff_ms: [1, 100, 1_000][rng.random_range(0..3)],
            retry_backoff_max_ms: 5_000,
            failures_before_exclusion: rng.random_range(2..=5),
            pending_scan_max: [4, 64][rng.random_range(0..2)],
            speculate_factor: rng.random_range(2..=4),
            speculate_after_min_ms: [50, 500][rng.random_range(0..2)],
            durations_kept: [8, 64][rng.random_range(0..2)],
            replica_take_chance: [0.1, 0.25, 1.0][rng.random_range(0..3)],
        }
    }

    /// The wait before the next attempt of a task that failed `failed` times.
    pub fn backoff_ms(&self, failed: u32) -> u64 {
        self.retry_backoff_ms
            .saturating_mul(1 << failed.saturating_sub(1).min(16))
            .min(self.retry_backoff_max_ms)
    }

    /// How long one attempt may take on a provider: the task's deadline, or,
    /// when less, its whole fuel budget at `benchmark_slack` times the
    /// provider's benchmarked slowness; plus the margin for fetching blobs.
    pub fn attempt_timeout_ms(&self, limits: &types::TaskLimits, fuel_per_sec: u64) -> u64 {
        let by_fuel = match limits.fuel {
            Some(fuel) if fuel_per_sec > 0 => {
                (fuel as f64 / fuel_per_sec as f64 * self.benchmark_slack * 1000.0) as u64
            }
            _ => limits.deadline_ms,
        };
        limits.deadline_ms.min(by_fuel) + self.attempt_margin_ms
    }
}
