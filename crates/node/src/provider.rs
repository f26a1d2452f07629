//! The provider side: publish offers, take tasks up to the free slots (plus
//! a short queue), fetch their module and inputs by hash, run them in the
//! sandbox, keep the outputs as blobs, and answer with a signed result.

use crate::{Internal, NodeError, blobs};
use net::wire::{self, Offer, ResultBody, SignedResult, TaskAssignment, TaskRequest, TaskResponse};
use net::{InboundId, Keypair, NetHandle, PeerId};
use sandbox::{HeldOutput, InputDir, Metering, Sandbox, SandboxConfig, TaskRun};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use store::BlobStore;
use tokio::sync::{Semaphore, mpsc};
#[cfg(feature = "adversary")]
use types::OutputFile;
use types::{Outcome, Trap};

/// Tasks accepted beyond the free slots, waiting for one (the requester's prefetch).
pub const QUEUED_TASKS_MAX: u32 = 4;
/// Tasks one requester may hold here beyond the slots: with the slots
/// taken in arrival order, no requester can crowd out the others by
/// sending far more than its credit window (slots + 1).
pub const QUEUED_PER_REQUESTER_MAX: u32 = 2;
const OFFER_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub slots: u32,
    pub price_per_gfuel: u64,
    /// The most memory one task may ask for.
    pub task_memory_bytes_max: u64,
    /// Test only: each task takes this many times as long (1 = honest speed).
    #[cfg(feature = "adversary")]
    pub throttle: u32,
    /// Test only: how this provider lies.
    #[cfg(feature = "adversary")]
    pub misbehave: Option<Misbehaviour>,
}

impl Default for ProviderConfig {
    /// One slot, price 1, tasks up to 1 GiB, honest.
    fn default() -> Self {
        ProviderConfig {
            slots: 1,
            price_per_gfuel: 1,
            task_memory_bytes_max: types::limits::GIB,
            #[cfg(feature = "adversary")]
            throttle: 1,
            #[cfg(feature = "adversary")]
            misbehave: None,
        }
    }
}

/// Test-only ways to be a bad provider.
#[cfg(feature = "adversary")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Results whose signature does not verify.
    BadSignature,
    /// Output blobs whose bytes do not match their hash.
    BadOutput,
    /// Results over the control message limit.
    Oversized,
    /// A wrong output of its own (signed, well-formed) on this share of tasks.
    Wrong { percent: u8 },
    /// After its first `after` tasks, the same wrong output as every other
    /// colluder on the tasks whose id falls in this share (all colluders
    /// pick the same tasks).
    Collude { after: u64, percent: u8 },
    /// Honest for its first `after` tasks, then wrong on this share.
    Intermittent { after: u64, percent: u8 },
    /// Claims more fuel than the task used.
    FuelLie,
    /// Answers with the signed result of the task it ran before.
    Replay,
    /// Accepts tasks and never answers.
    Silent,
}

#[cfg(feature = "adversary")]
impl std::str::FromStr for Misbehaviour {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected bad-signature, bad-output, oversized, wrong:PERCENT, \
                        collude:[AFTER:]PERCENT, intermittent:AFTER:PERCENT, fuel, replay or silent";
        let percent = |p: &str| -> Result<u8, String> {
            p.parse::<u8>()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| format!("{p:?} is not a percentage"))
        };
        let parts: Vec<&str> = s.split(':').collect();
        Ok(match parts.as_slice() {
            ["bad-signature"] => Misbehaviour::BadSignature,
            ["bad-output"] => Misbehaviour::BadOutput,
            ["oversized"] => Misbehaviour::Oversized,
            ["wrong", p] => Misbehaviour::Wrong {
                percent: percent(p)?,
            },
            ["collude", p] => Misbehaviour::Collude {
                after: 0,
                percent: percent(p)?,
            },
            ["collude", after, p] => Misbehaviour::Collude {
                after: after
                    .parse()
                    .map_err(|_| format!("{after:?} is not a number of tasks"))?,
                percent: percent(p)?,
            },
            ["intermittent", after, p] => Misbehaviour::Intermittent {
                after: after
                    .parse()
                    .map_err(|_| format!("{after:?} is not a number of tasks"))?,
                percent: percent(p)?,
            },
            ["fuel"] => Misbehaviour::FuelLie,
            ["replay"] => Misbehaviour::Replay,
            ["silent"] => Misbehaviour::Silent,
            _ => return Err(expected.into()),
        })
    }
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ProviderStatus {
    pub slots_total: u32,
    pub slots_free: u32,
    pub tasks_run: u64,
    pub fuel_used: u64,
    pub fuel_per_sec: u64,
    pub price_per_gfuel: u64,
}

/// A task held by this provider: requester, job, task, attempt.
pub(crate) type TaskKey = (PeerId, String, u64, u32);

pub(crate) struct Provider {
    config: ProviderConfig,
    /// The cancel flag of every task accepted and not yet answered.
    cancels: HashMap<TaskKey, Arc<AtomicBool>>,
    /// Every request (a task or a batch) holding a slot or waiting for
    /// one: its requester, and whether it has been answered.
    requests: HashMap<u64, (PeerId, Arc<AtomicBool>)>,
    next_request: u64,
    scratch: Arc<ScratchDirs>,
    /// What it ran and is owed, kept across restarts.
    db: store::Db,
    keypair: Keypair,
    blobs: Arc<BlobStore>,
    sandbox: Arc<Sandbox>,
    sandbox_nan_canonical: Arc<Sandbox>,
    slots: Arc<Semaphore>,
    accepted: u32,
    fuel_per_sec: u64,
    fuel_used: Arc<AtomicU64>,
    tasks_run: u64,
    next_offer: Instant,
    metrics: Arc<crate::Metrics>,
    cores: u32,
    memory_bytes: u64,
    #[cfg(feature = "adversary")]
    cheat: Arc<std::sync::Mutex<CheatState>>,
}

impl Provider {
    pub fn new(
        config: ProviderConfig,
        data_dir: &Path,
        db: store::Db,
        keypair: Keypair,
        blobs: Arc<BlobStore>,
        metrics: Arc<crate::Metrics>,
    ) -> Result<Provider, NodeError> {
        let cache_dir = Some(data_dir.join("cache/modules"));
        // Compiles use every core: a module is compiled once per provider,
        // and the task waiting for it (benchmark B4's cold start) matters
        // more than the few milliseconds a running task loses meanwhile.
        let sandbox = Arc::new(Sandbox::new(SandboxConfig {
            cache_dir: cache_dir.clone(),
            parallel_compilation: true,
            ..SandboxConfig::default()
        })?);
        let sandbox_nan_canonical = Arc::new(Sandbox::new(SandboxConfig {
            cache_dir,
            parallel_compilation: true,
            nan_canonicalization: true,
            ..SandboxConfig::default()
        })?);
        let work_dir = data_dir.join("work");
        std::fs::create_dir_all(&work_dir)
            .map_err(|e| NodeError::Job(format!("create {}: {e}", work_dir.display())))?;
        let fuel_per_sec = benchmark(&sandbox, &work_dir)?;
        let totals = db.run_totals()?;
        Ok(Provider {
            cancels: HashMap::new(),
            requests: HashMap::new(),
            next_request: 0,
            scratch: Arc::new(ScratchDirs::new(work_dir.clone())),
            db,
            slots: Arc::new(Semaphore::new(config.slots as usize)),
            config,
            keypair,
            blobs,
            sandbox,
            sandbox_nan_canonical,
            accepted: 0,
            fuel_per_sec,
            fuel_used: Arc::new(AtomicU64::new(totals.fuel)),
            tasks_run: totals.tasks,
            next_offer: Instant::now(),
            metrics,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_bytes: total_memory_bytes(),
            #[cfg(feature = "adversary")]
            cheat: Arc::default(),
        })
    }

    pub fn status(&self) -> ProviderStatus {
        ProviderStatus {
            slots_total: self.config.slots,
            slots_free: self.config.slots.saturating_sub(self.accepted),
            tasks_run: self.tasks_run,
            fuel_used: self.fuel_used.load(Ordering::Relaxed),
            fuel_per_sec: self.fuel_per_sec,
            price_per_gfuel: self.config.price_per_gfuel,
        }
    }

    /// Whether this provider serves corrupted blobs (test builds only).
    pub fn corrupts_blobs(&self) -> bool {
        #[cfg(feature = "adversary")]
        if self.config.misbehave == Some(Misbehaviour::BadOutput) {
            return true;
        }
        false
    }

    pub fn publish_offer_soon(&mut self) {
        self.next_offer = Instant::now();
    }

    pub async fn maybe_publish(&mut self, net: &NetHandle) {
        if Instant::now() < self.next_offer {
            return;
        }
        self.next_offer = Instant::now() + OFFER_INTERVAL;
        let status = self.status();
        let offer = Offer {
            cores: self.cores,
            memory_bytes: self.memory_bytes,
            task_memory_bytes_max: self.config.task_memory_bytes_max,
            slots_total: status.slots_total,
            slots_free: status.slots_free,
            price_per_gfuel: self.config.price_per_gfuel,
            fuel_per_sec: self.fuel_per_sec,
            engine: self.sandbox.engine_identity().to_owned(),
            expires_at_ms: crate::now_ms() + wire::OFFER_TTL_MS,
        };
        let _ = net.publish_offer(offer).await;
    }

    /// Stops the attempts `from` names of its job (all of them when none is
    /// named; every job's when no job is); returns how many were still held here.
    fn cancel(&mut self, from: &PeerId, job_id: Option<&str>, attempts: &[(u64, u32)]) -> u32 {
        let mut count = 0;
        for ((requester, job, task, attempt), flag) in &self.cancels {
            let named = job_id.is_none_or(|j| j == job)
                && (attempts.is_empty() || attempts.contains(&(*task, *attempt)));
            if requester == from && named && !flag.swap(true, Ordering::Relaxed) {
                count += 1;
            }
        }
        if count > 0 {
            tracing::info!(target: "plexus::provider", job = ?job_id, "{count} tasks cancelled by {from}");
        }
        count
    }

    /// A requester gone (disconnected) will never read its answers: its
    /// tasks here stop. Should it come back, it sends them again.
    pub fn on_requester_gone(&mut self, requester: &PeerId) {
        self.cancel(requester, None, &[]);
    }

    /// A request's slot is free again; for each of its tasks, what it ran
    /// when it answered with a result (recorded in one transaction).
    pub fn on_done(&mut self, request: u64, tasks: Vec<(TaskKey, Option<store::Run>)>) {
        self.requests.remove(&request);
        self.accepted = self.accepted.saturating_sub(1);
        let recorded = self.db.transaction(|db| {
            for (key, run) in &tasks {
                self.cancels.remove(key);
                let Some(run) = run else {
                    continue;
                };
                self.tasks_run += 1;
                if let Err(e) = db.insert_run(run) {
                    tracing::error!(target: "plexus::provider", job = %run.job, task = run.task, "cannot record a run: {e}");
                }
            }
        });
        if let Err(e) = recorded {
            tracing::error!(target: "plexus::provider", "cannot record runs: {e}");
        }
    }

    pub fn on_task_request(
        &mut self,
        from: PeerId,
        id: InboundId,
        request: TaskRequest,
        net: &NetHandle,
        internal: &mpsc::Sender<Internal>,
    ) {
        let (tasks, single) = match request {
            TaskRequest::Run(task) => (vec![task], true),
            TaskRequest::RunBatch(tasks) => (tasks, false),
            TaskRequest::Cancel { job_id, attempts } => {
                let count = self.cancel(&from, Some(&job_id), &attempts);
                let net = net.clone();
                tokio::spawn(async move {
                    let _ = net
                        .respond_task(id, TaskResponse::Cancelled { count })
                        .await;
                });
                return;
            }
        };
        let refuse = |reason: String| {
            let net = net.clone();
            tokio::spawn(async move {
                let _ = net.respond_task(id, TaskResponse::Refused { reason }).await;
            });
        };
        if tasks.is_empty() || tasks.len() > wire::BATCH_TASKS_MAX {
            return refuse(format!(
                "a batch of {} tasks (1 to BATCH_TASKS_MAX = {})",
                tasks.len(),
                wire::BATCH_TASKS_MAX
            ));
        }
        // A request takes one slot, whatever its number of tasks.
        if self.accepted >= self.config.slots + QUEUED_TASKS_MAX {
            return refuse(format!("busy: {} requests accepted", self.accepted));
        }
        // Answered requests are on their way out and do not count.
        let held = self
            .requests
            .values()
            .filter(|(r, answered)| *r == from && !answered.load(Ordering::Relaxed))
            .count() as u32;
        if held >= self.config.slots + QUEUED_PER_REQUESTER_MAX {
            return refuse(format!(
                "busy: {held} of your requests accepted, the most one requester may hold here"
            ));
        }
        if let Some(task) = tasks
            .iter()
            .find(|t| t.limits.memory_bytes_max > self.config.task_memory_bytes_max)
        {
            return refuse(format!(
                "task asks for {} bytes of memory, this provider allows {}",
                task.limits.memory_bytes_max, self.config.task_memory_bytes_max
            ));
        }
        #[cfg(feature = "adversary")]
        if self.config.misbehave == Some(Misbehaviour::Silent) {
            // Taken, never answered: the request stays open on the wire.
            tracing::debug!(target: "plexus::provider", tasks = tasks.len(), "silently holding tasks");
            return;
        }
        self.accepted += 1;
        self.next_request = self.next_request.wrapping_add(1);
        let request_id = self.next_request;
        let answered = Arc::new(AtomicBool::new(false));
        self.requests.insert(request_id, (from, answered.clone()));
        let tasks: Vec<(TaskAssignment, Arc<AtomicBool>)> = tasks
            .into_iter()
            .map(|task| {
                let cancel = Arc::new(AtomicBool::new(false));
                let key = (from, task.job_id.clone(), task.task_index, task.attempt);
                self.cancels.insert(key, cancel.clone());
                (task, cancel)
            })
            .collect();
        let job = RunBatch {
            from,
            tasks,
            net: net.clone(),
            blobs: self.blobs.clone(),
            sandbox: self.sandbox.clone(),
            sandbox_nan_canonical: self.sandbox_nan_canonical.clone(),
            keypair: self.keypair.clone(),
            slots: self.slots.clone(),
            slots_total: self.config.slots as usize,
            scratch: self.scratch.clone(),
            fuel_used: self.fuel_used.clone(),
            metrics: self.metrics.clone(),
            #[cfg(feature = "adversary")]
            throttle: self.config.throttle,
            #[cfg(feature = "adversary")]
            misbehave: self.config.misbehave,
            #[cfg(feature = "adversary")]
            cheat: self.cheat.clone(),
        };
        let internal = internal.clone();
        tokio::spawn(async move {
            let answers = match job.run().await {
                Ok(answers) => answers,
                Err(reason) => {
                    tracing::warn!(target: "plexus::provider", "tasks failed: {reason}");
                    job.tasks
                        .iter()
                        .map(|_| {
                            (
                                TaskResponse::Failed {
                                    reason: reason.clone(),
                                },
                                None,
                            )
                        })
                        .collect()
                }
            };
            let mut done = Vec::with_capacity(answers.len());
            let mut responses = Vec::with_capacity(answers.len());
            for ((task, cancel), (response, ran)) in job.tasks.iter().zip(answers) {
                // Answered: it no longer counts against its requester's share
                // (the node learns it is done only after the answer is out, and
                // the requester may send the next request first).
                cancel.store(true, Ordering::Relaxed);
                let run = ran.map(|(fuel, outcome)| store::Run {
                    requester: job.from.to_string(),
                    job: task.job_id.clone(),
                    task: task.task_index,
                    attempt: task.attempt,
                    fuel,
                    outcome,
                    finished_at_ms: crate::now_ms(),
                });
                done.push((
                    (job.from, task.job_id.clone(), task.task_index, task.attempt),
                    run,
                ));
                responses.push(response);
            }
            answered.store(true, Ordering::Relaxed);
            let response = match (single, responses.len()) {
                (true, 1) => responses.pop().unwrap_or(TaskResponse::Failed {
                    reason: "no answer".into(),
                }),
                _ => TaskResponse::Batch(responses),
            };
            let _ = job.net.respond_task(id, response).await;
            // The answer's connection task was just woken; let it write
            // before the node records the runs (tokio runs the task woken
            // last first, and the record is not on the requester's path).
            tokio::task::yield_now().await;
            let _ = internal
                .send(Internal::ProviderDone(request_id, done))
                .await;
        });
    }
}

/// Reusable scratch directories for tasks' `/out`: one made and removed
/// per task cost a provider more than a short task's whole run (mkdir,
/// rmdir and the file system's journal). Emptied before reuse.
pub(crate) struct ScratchDirs {
    parent: PathBuf,
    free: std::sync::Mutex<Vec<tempfile::TempDir>>,
}

/// Idle scratch directories kept; more are removed when given back.
const SCRATCH_DIRS_KEPT_MAX: usize = 64;

impl ScratchDirs {
    pub(crate) fn new(parent: PathBuf) -> ScratchDirs {
        ScratchDirs {
            parent,
            free: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Result<tempfile::TempDir, String> {
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match reused {
            Some(dir) => Ok(dir),
            None => tempfile::Builder::new()
                .prefix("task-")
                .tempdir_in(&self.parent)
                .map_err(|e| format!("create a scratch directory: {e}")),
        }
    }

    /// Back to the pool once its `out` is empty again (dropped otherwise).
    fn give_back(&self, dir: tempfile::TempDir) {
        let out = dir.path().join("out");
        let emptied = match std::fs::read_dir(&out) {
            Ok(mut entries) => {
                entries.next().is_none()
                    || (std::fs::remove_dir_all(&out).is_ok() && std::fs::create_dir(&out).is_ok())
            }
            Err(_) => std::fs::create_dir(&out).is_ok(),
        };
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if emptied && free.len() < SCRATCH_DIRS_KEPT_MAX {
            free.push(dir);
        }
    }
}

struct RunBatch {
    from: PeerId,
    /// Each task with its cancel flag.
    tasks: Vec<(TaskAssignment, Arc<AtomicBool>)>,
    net: NetHandle,
    blobs: Arc<BlobStore>,
    sandbox: Arc<Sandbox>,
    sandbox_nan_canonical: Arc<Sandbox>,
    keypair: Keypair,
    slots: Arc<Semaphore>,
    slots_total: usize,
    scratch: Arc<ScratchDirs>,
    fuel_used: Arc<AtomicU64>,
    metrics: Arc<crate::Metrics>,
    #[cfg(feature = "adversary")]
    throttle: u32,
    #[cfg(feature = "adversary")]
    misbehave: Option<Misbehaviour>,
    #[cfg(feature = "adversary")]
    cheat: Arc<std::sync::Mutex<CheatState>>,
}

/// What a cheating provider remembers between tasks (test builds only).
#[cfg(feature = "adversary")]
#[derive(Default)]
pub(crate) struct CheatState {
    tasks: u64,
    last: Option<SignedResult>,
}

/// A task's answer, and the fuel and outcome of a run that produced a result.
type Answer = (TaskResponse, Option<(u64, String)>);

impl RunBatch {
    /// Fetches what the batch needs, takes one slot, runs the tasks one
    /// after the other on one sandbox thread, and answers each: a signed
    /// result with the small outputs inline (INLINE_OUTPUT_BYTES_MAX across
    /// the batch; the others kept as blobs), or why it failed.
    async fn run(&self) -> Result<Vec<Answer>, String> {
        let mut needed: Vec<types::BlobHash> = Vec::new();
        for (t, _) in &self.tasks {
            // A module compiled in memory is never read again.
            let sandbox = sandbox_for(t, &self.sandbox, &self.sandbox_nan_canonical);
            let module = Some(t.module).filter(|m| !sandbox.is_compiled(m));
            for hash in module.into_iter().chain(t.inputs.iter().map(|(_, h)| *h)) {
                if !needed.contains(&hash) {
                    needed.push(hash);
                }
            }
        }
        for hash in needed {
            blobs::fetch(&self.net, &self.blobs, &self.metrics, self.from, hash)
                .await
                .map_err(|e| e.to_string())?;
        }
        let _permit = self
            .slots
            .acquire()
            .await
            .map_err(|_| "shutting down".to_owned())?;
        let tasks = self.tasks.clone();
        let (sandbox, sandbox_nan, blobs, scratch) = (
            self.sandbox.clone(),
            self.sandbox_nan_canonical.clone(),
            self.blobs.clone(),
            self.scratch.clone(),
        );
        // A lone task on an otherwise idle provider starts here, on the
        // node's async thread: handing it to a sandbox thread and back cost
        // a one-task job ~0.1 ms of its ~0.7. One that is still running
        // after INLINE_FUEL_MAX moves to a sandbox thread. Not when other
        // tasks run: two tasks on this one thread would run one at a time.
        let inline = match self.tasks.as_slice() {
            [(t, _)] => {
                let sandbox = sandbox_for(t, &self.sandbox, &self.sandbox_nan_canonical);
                sandbox.metering() == Metering::Fuel
                    && sandbox.is_compiled(&t.module)
                    && self.slots.available_permits() + 1 >= self.slots_total
            }
            _ => false,
        };
        let mut work = Box::pin(async move {
            let mut bodies = Vec::with_capacity(tasks.len());
            for (t, cancel) in &tasks {
                if cancel.load(Ordering::Relaxed) {
                    bodies.push(Err(CANCELLED.to_owned()));
                    continue;
                }
                let sandbox = sandbox_for(t, &sandbox, &sandbox_nan);
                let dir = match scratch.take() {
                    Ok(dir) => dir,
                    Err(e) => {
                        bodies.push(Err(e));
                        continue;
                    }
                };
                let ran = execute_cancellable(
                    sandbox,
                    &blobs,
                    t,
                    &dir.path().join("out"),
                    Some(cancel.clone()),
                    wire::INLINE_OUTPUT_BYTES_MAX,
                    inline.then_some(INLINE_FUEL_MAX),
                )
                .await;
                scratch.give_back(dir);
                bodies.push(ran);
            }
            bodies
        });
        let ran_here = if inline {
            // A panic here is the task's failure, as on a sandbox thread.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                work.as_mut().poll(&mut cx)
            }));
            match polled {
                Ok(std::task::Poll::Ready(bodies)) => Some(bodies),
                Ok(std::task::Poll::Pending) => None,
                Err(_) => return Err("task panicked".into()),
            }
        } else {
            None
        };
        let bodies = match ran_here {
            Some(bodies) => bodies,
            None => tokio::task::spawn_blocking(move || sandbox::block_on(work))
                .await
                .map_err(|e| format!("task panicked: {e}"))?,
        };
        let mut inline_budget = wire::INLINE_OUTPUT_BYTES_MAX;
        let mut answer_budget = wire::BATCH_BYTES_BUDGET;
        let mut answers = Vec::with_capacity(bodies.len());
        for ran in bodies {
            let answer = match ran {
                Ok((body, held)) => {
                    self.answer(body, held, &mut inline_budget, &mut answer_budget)
                        .await
                }
                Err(reason) => (TaskResponse::Failed { reason }, None),
            };
            answers.push(answer);
        }
        Ok(answers)
    }

    /// One task's answer: its signed result and the held outputs that fit
    /// the inline budget (the others become blobs the requester fetches).
    async fn answer(
        &self,
        body: ResultBody,
        held: Vec<HeldOutput>,
        inline_budget: &mut u64,
        answer_budget: &mut u64,
    ) -> Answer {
        if body.outcome
            == (Outcome::Trapped {
                trap: Trap::Cancelled,
            })
        {
            return (
                TaskResponse::Failed {
                    reason: CANCELLED.into(),
                },
                None,
            );
        }
        // The answer of a batch is bounded: a result that would overflow it
        // is refused as back-pressure, and the requester sends it alone.
        let size = body.size_estimate();
        if size > *answer_budget && *answer_budget < wire::BATCH_BYTES_BUDGET {
            return (
                TaskResponse::Refused {
                    reason: "the batch's answer is full: send this task alone".into(),
                },
                None,
            );
        }
        *answer_budget = answer_budget.saturating_sub(size);
        #[cfg(feature = "adversary")]
        if self.throttle > 1 {
            let extra = body.run_ms.max(1) * (self.throttle as u64 - 1);
            tokio::time::sleep(Duration::from_millis(extra)).await;
        }
        let (fuel, outcome) = (body.fuel_used.unwrap_or(0), body.outcome.to_string());
        self.fuel_used.fetch_add(fuel, Ordering::Relaxed);
        self.metrics.fuel_run.inc_by(fuel);
        let mut inline = Vec::new();
        for h in held {
            if inline.iter().any(|i: &wire::InlineOutput| i.hash == h.hash) {
                continue;
            }
            if h.bytes.len() as u64 <= *inline_budget {
                *inline_budget -= h.bytes.len() as u64;
                inline.push(wire::InlineOutput {
                    hash: h.hash,
                    bytes: h.bytes,
                });
            } else if let Err(e) = self.blobs.put_bytes(&h.bytes) {
                return (
                    TaskResponse::Failed {
                        reason: format!("store an output: {e}"),
                    },
                    None,
                );
            }
        }
        #[cfg(feature = "adversary")]
        let (body, inline) = match self.misbehave_on(body, inline) {
            Ok(cheat) => cheat,
            Err(reason) => return (TaskResponse::Failed { reason }, None),
        };
        #[allow(unused_mut)]
        let mut signed = match SignedResult::sign(&self.keypair, &body) {
            Ok(signed) => signed,
            Err(e) => {
                return (
                    TaskResponse::Failed {
                        reason: e.to_string(),
                    },
                    None,
                );
            }
        };
        #[cfg(feature = "adversary")]
        if self.misbehave == Some(Misbehaviour::Replay) {
            let mut cheat = self.cheat.lock().unwrap_or_else(|p| p.into_inner());
            let previous = cheat.last.replace(signed.clone());
            if let Some(previous) = previous {
                signed = previous;
            }
        }
        #[cfg(feature = "adversary")]
        if self.misbehave == Some(Misbehaviour::BadSignature)
            && let Some(byte) = signed.signature.first_mut()
        {
            *byte ^= 0xff;
        }
        (TaskResponse::Done(signed, inline), Some((fuel, outcome)))
    }
}

#[cfg(feature = "adversary")]
impl RunBatch {
    /// Turns an honest result and its inline outputs into the lie this
    /// provider tells, if any.
    fn misbehave_on(
        &self,
        mut body: ResultBody,
        mut inline: Vec<wire::InlineOutput>,
    ) -> Result<(ResultBody, Vec<wire::InlineOutput>), String> {
        if self.misbehave == Some(Misbehaviour::BadOutput) {
            for output in &mut inline {
                output.bytes.push(b'!');
            }
        }
        let tasks = {
            let mut cheat = self.cheat.lock().map_err(|_| "poisoned".to_owned())?;
            cheat.tasks += 1;
            cheat.tasks
        };
        // A draw per task that every colluder makes alike.
        let by_task = |salt: &str| {
            let h = types::BlobHash::of(
                format!("{salt}:{}:{}", body.job_id, body.task_index).as_bytes(),
            );
            (u64::from_le_bytes(h.0[..8].try_into().unwrap_or_default()) % 100) as u8
        };
        let own = self.keypair.public().to_peer_id().to_string();
        let forge = match self.misbehave {
            Some(Misbehaviour::Oversized) => {
                body.stderr_tail = vec![b'x'; 2 << 20];
                None
            }
            Some(Misbehaviour::FuelLie) => {
                body.fuel_used = body.fuel_used.map(|f| f + 1_000);
                None
            }
            Some(Misbehaviour::Wrong { percent }) => (by_task(&own) < percent).then_some(own),
            Some(Misbehaviour::Collude { after, percent }) => {
                (tasks > after && by_task("collude") < percent).then(|| "collude".to_owned())
            }
            Some(Misbehaviour::Intermittent { after, percent }) => {
                (tasks > after && by_task(&own) < percent).then_some(own)
            }
            _ => None,
        };
        if let Some(marker) = forge {
            // A well-formed lie: a real blob, served and hashed like any output.
            let mut bytes = match body.outputs.first() {
                Some(first) => match inline.iter().find(|i| i.hash == first.hash) {
                    Some(i) => i.bytes.clone(),
                    None => {
                        std::fs::read(self.blobs.path(&first.hash)).map_err(|e| e.to_string())?
                    }
                },
                None => Vec::new(),
            };
            bytes.extend_from_slice(marker.as_bytes());
            let hash = self.blobs.put_bytes(&bytes).map_err(|e| e.to_string())?;
            let forged = OutputFile {
                name: body
                    .outputs
                    .first()
                    .map_or("forged".into(), |f| f.name.clone()),
                size_bytes: bytes.len() as u64,
                hash,
            };
            match body.outputs.first_mut() {
                Some(first) => *first = forged,
                None => body.outputs.push(forged),
            }
        }
        Ok((body, inline))
    }
}

/// The sandbox a task asks for: with NaN canonicalisation or without.
fn sandbox_for<'a>(
    t: &TaskAssignment,
    plain: &'a Sandbox,
    nan_canonical: &'a Sandbox,
) -> &'a Sandbox {
    if t.canonicalize_nans {
        nan_canonical
    } else {
        plain
    }
}

/// What a cancelled task answers (the requester has stopped listening).
const CANCELLED: &str = "cancelled by the requester";
/// Fuel a task started on the node's async thread runs there (a no-op
/// task takes a few thousand; about a millisecond's work) before the rest
/// of it moves to a sandbox thread.
const INLINE_FUEL_MAX: u64 = 1_000_000;

/// Runs a task where every output is a file, stored as a blob (the
/// requester's own runs).
pub(crate) fn execute(
    sandbox: &Sandbox,
    blobs: &BlobStore,
    t: &TaskAssignment,
    work_dir: &Path,
) -> Result<ResultBody, String> {
    let scratch = tempfile::Builder::new()
        .prefix("task-")
        .tempdir_in(work_dir)
        .map_err(|e| e.to_string())?;
    let out = scratch.path().join("out");
    sandbox::block_on(execute_cancellable(sandbox, blobs, t, &out, None, 0, None)).map(|(b, _)| b)
}

/// Runs a task with `out` as its `/out`. Outputs that fit `hold_bytes_max`
/// together come back in memory; the others are stored as blobs. With
/// `yield_every_fuel`, the task yields that often (see `Sandbox::run_async`).
async fn execute_cancellable(
    sandbox: &Sandbox,
    blobs: &BlobStore,
    t: &TaskAssignment,
    out: &Path,
    cancel: Option<Arc<AtomicBool>>,
    hold_bytes_max: u64,
    yield_every_fuel: Option<u64>,
) -> Result<(ResultBody, Vec<HeldOutput>), String> {
    // The module is a blob checked on arrival: a compiled one is found by hash.
    let module = sandbox
        .load_known(t.module, || std::fs::read(blobs.path(&t.module)))
        .map_err(|e| e.to_string())?;
    let inputs: Vec<(String, PathBuf)> = t
        .inputs
        .iter()
        .map(|(name, hash)| (name.clone(), blobs.path(hash)))
        .collect();
    let staged = if inputs.is_empty() {
        None
    } else {
        let parent = out.parent().unwrap_or(out).join("inputs");
        Some(InputDir::stage(&parent, &inputs).map_err(|e| e.to_string())?)
    };
    let report = sandbox
        .run_async(
            &module,
            &TaskRun {
                program: &t.program,
                args: &t.args,
                env: &t.env,
                inputs: staged.as_ref(),
                output_dir: out,
                seed: t.seed,
                limits: t.limits,
                entry: t.entry.as_deref(),
                allow_missing_imports: false,
                hold_bytes_max,
            },
            cancel,
            yield_every_fuel,
        )
        .await
        .map_err(|e| e.to_string())?;
    // Outputs not held become blobs, served to the requester by hash.
    for output in &report.outputs {
        if report.held.iter().any(|h| h.hash == output.hash) {
            continue;
        }
        let stored = blobs
            .put_file(&out.join(&output.name))
            .map_err(|e| e.to_string())?;
        if stored != output.hash {
            return Err(format!("output {} changed while being stored", output.name));
        }
    }
    let body = ResultBody {
        job_id: t.job_id.clone(),
        task_index: t.task_index,
        attempt: t.attempt,
        module: t.module,
        inputs: t.inputs.clone(),
        seed: t.seed,
        limits: t.limits,
        engine: sandbox.engine_identity().to_owned(),
        outcome: report.outcome,
        fuel_used: report.fuel_used.map(|f| f.0),
        outputs: report.outputs,
        stderr_tail: report.stderr_tail,
        run_ms: report.run_ms,
    };
    Ok((body, report.held))
}

/// Fuel per second on one slot, from a small built-in Mandelbrot tile.
fn benchmark(sandbox: &Sandbox, work_dir: &Path) -> Result<u64, NodeError> {
    let bytes = guests::builtin("mandelbrot")
        .ok_or_else(|| NodeError::Job("the mandelbrot workload is not built in".into()))?;
    let module = sandbox.load(bytes)?;
    let scratch = tempfile::Builder::new()
        .prefix("bench-")
        .tempdir_in(work_dir)
        .map_err(|e| NodeError::Job(e.to_string()))?;
    let args: Vec<String> = ["--size", "256", "--per-side", "1", "--tile", "0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let started = Instant::now();
    let report = sandbox.run(
        &module,
        &TaskRun {
            program: "mandelbrot",
            args: &args,
            env: &[],
            inputs: None,
            output_dir: &scratch.path().join("out"),
            seed: 0,
            limits: types::TaskLimits::default(),
            entry: None,
            allow_missing_imports: false,
            hold_bytes_max: 0,
        },
    )?;
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    Ok((report.fuel_used.map_or(0, |f| f.0) as f64 / secs) as u64)
}

fn total_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}
