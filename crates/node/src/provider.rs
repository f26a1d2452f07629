//! The provider side: publish offers, take tasks up to the free slots (plus
//! a short queue), fetch their module and inputs by hash, run them in the
//! sandbox, keep the outputs as blobs, and answer with a signed result.

use crate::{Internal, NodeError, blobs};
use net::wire::{self, Offer, ResultBody, SignedResult, TaskAssignment, TaskRequest, TaskResponse};
use net::{InboundId, Keypair, NetHandle, PeerId};
use sandbox::{InputDir, Sandbox, SandboxConfig, TaskRun};
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

#[derive(Clone, Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
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
    /// What it ran and is owed, kept across restarts.
    db: store::Db,
    keypair: Keypair,
    blobs: Arc<BlobStore>,
    sandbox: Arc<Sandbox>,
    sandbox_nan_canonical: Arc<Sandbox>,
    slots: Arc<Semaphore>,
    accepted: u32,
    work_dir: PathBuf,
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
        let sandbox = Arc::new(Sandbox::new(SandboxConfig {
            cache_dir: cache_dir.clone(),
            parallel_compilation: false,
            ..SandboxConfig::default()
        })?);
        let sandbox_nan_canonical = Arc::new(Sandbox::new(SandboxConfig {
            cache_dir,
            parallel_compilation: false,
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
            db,
            slots: Arc::new(Semaphore::new(config.slots as usize)),
            config,
            keypair,
            blobs,
            sandbox,
            sandbox_nan_canonical,
            accepted: 0,
            work_dir,
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

    /// A slot is free again; `run` is what it ran, when it answered with a result.
    pub fn on_done(&mut self, key: TaskKey, run: Option<store::Run>) {
        self.cancels.remove(&key);
        self.accepted = self.accepted.saturating_sub(1);
        let Some(run) = run else {
            return;
        };
        self.tasks_run += 1;
        if let Err(e) = self.db.insert_run(&run) {
            tracing::error!(target: "plexus::provider", job = %run.job, task = run.task, "cannot record a run: {e}");
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
        let task = match request {
            TaskRequest::Run(task) => task,
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
        if self.accepted >= self.config.slots + QUEUED_TASKS_MAX {
            return refuse(format!("busy: {} tasks accepted", self.accepted));
        }
        // Cancelled and answered tasks are on their way out and do not count.
        let held = self
            .cancels
            .iter()
            .filter(|((r, ..), cancelled)| *r == from && !cancelled.load(Ordering::Relaxed))
            .count() as u32;
        if held >= self.config.slots + QUEUED_PER_REQUESTER_MAX {
            return refuse(format!(
                "busy: {held} of your tasks accepted, the most one requester may hold here"
            ));
        }
        if task.limits.memory_bytes_max > self.config.task_memory_bytes_max {
            return refuse(format!(
                "task asks for {} bytes of memory, this provider allows {}",
                task.limits.memory_bytes_max, self.config.task_memory_bytes_max
            ));
        }
        #[cfg(feature = "adversary")]
        if self.config.misbehave == Some(Misbehaviour::Silent) {
            // Taken, never answered: the request stays open on the wire.
            tracing::debug!(target: "plexus::provider", job = %task.job_id, task = task.task_index, "silently holding a task");
            return;
        }
        self.accepted += 1;
        let cancel = Arc::new(AtomicBool::new(false));
        let key = (from, task.job_id.clone(), task.task_index, task.attempt);
        self.cancels.insert(key.clone(), cancel.clone());
        let sandbox = if task.canonicalize_nans {
            &self.sandbox_nan_canonical
        } else {
            &self.sandbox
        };
        let job = RunJob {
            from,
            cancel,
            sandbox: sandbox.clone(),
            task,
            net: net.clone(),
            blobs: self.blobs.clone(),
            keypair: self.keypair.clone(),
            slots: self.slots.clone(),
            work_dir: self.work_dir.clone(),
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
            let (response, run) = match job.run().await {
                Ok((response, fuel, outcome)) => {
                    let run = store::Run {
                        requester: job.from.to_string(),
                        job: job.task.job_id.clone(),
                        task: job.task.task_index,
                        attempt: job.task.attempt,
                        fuel,
                        outcome,
                        finished_at_ms: crate::now_ms(),
                    };
                    (response, Some(run))
                }
                Err(reason) => {
                    tracing::warn!(target: "plexus::provider", "task failed: {reason}");
                    (TaskResponse::Failed { reason }, None)
                }
            };
            // Answered: it no longer counts against its requester's share
            // (the node learns it is done only after the answer is out, and
            // the requester may send the next task first).
            job.cancel.store(true, Ordering::Relaxed);
            let _ = job.net.respond_task(id, response).await;
            let _ = internal.send(Internal::ProviderDone(key, run)).await;
        });
    }
}

struct RunJob {
    from: PeerId,
    cancel: Arc<AtomicBool>,
    task: TaskAssignment,
    net: NetHandle,
    blobs: Arc<BlobStore>,
    sandbox: Arc<Sandbox>,
    keypair: Keypair,
    slots: Arc<Semaphore>,
    work_dir: PathBuf,
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

impl RunJob {
    /// The outputs that travel with the result, smallest first, up to
    /// INLINE_OUTPUT_BYTES_MAX together.
    fn inline_outputs(&self, outputs: &[types::OutputFile]) -> Vec<wire::InlineOutput> {
        let mut by_size: Vec<&types::OutputFile> = outputs.iter().collect();
        by_size.sort_by_key(|o| o.size_bytes);
        let mut budget = wire::INLINE_OUTPUT_BYTES_MAX;
        let mut inline = Vec::new();
        for output in by_size {
            if output.size_bytes > budget {
                break;
            }
            if inline
                .iter()
                .any(|i: &wire::InlineOutput| i.hash == output.hash)
            {
                continue;
            }
            let Ok(bytes) = std::fs::read(self.blobs.path(&output.hash)) else {
                break;
            };
            budget -= output.size_bytes;
            #[cfg(feature = "adversary")]
            let bytes = if self.misbehave == Some(Misbehaviour::BadOutput) {
                let mut bytes = bytes;
                bytes.push(b'!');
                bytes
            } else {
                bytes
            };
            inline.push(wire::InlineOutput {
                hash: output.hash,
                bytes,
            });
        }
        inline
    }

    /// Runs the task; the response with the fuel it used and how it ended.
    async fn run(&self) -> Result<(TaskResponse, u64, String), String> {
        let t = &self.task;
        blobs::fetch(&self.net, &self.blobs, &self.metrics, self.from, t.module)
            .await
            .map_err(|e| e.to_string())?;
        for (_, hash) in &t.inputs {
            blobs::fetch(&self.net, &self.blobs, &self.metrics, self.from, *hash)
                .await
                .map_err(|e| e.to_string())?;
        }
        let _permit = self
            .slots
            .acquire()
            .await
            .map_err(|_| "shutting down".to_owned())?;
        if self.cancel.load(Ordering::Relaxed) {
            return Err(CANCELLED.into());
        }
        let (sandbox, blobs, task, work_dir, cancel) = (
            self.sandbox.clone(),
            self.blobs.clone(),
            t.clone(),
            self.work_dir.clone(),
            self.cancel.clone(),
        );
        let body = tokio::task::spawn_blocking(move || {
            execute_cancellable(&sandbox, &blobs, &task, &work_dir, Some(cancel))
        })
        .await
        .map_err(|e| format!("task panicked: {e}"))??;
        if body.outcome
            == (Outcome::Trapped {
                trap: Trap::Cancelled,
            })
        {
            return Err(CANCELLED.into());
        }
        #[cfg(feature = "adversary")]
        if self.throttle > 1 {
            let extra = body.run_ms.max(1) * (self.throttle as u64 - 1);
            tokio::time::sleep(Duration::from_millis(extra)).await;
        }
        let (fuel, outcome) = (body.fuel_used.unwrap_or(0), body.outcome.to_string());
        self.fuel_used.fetch_add(fuel, Ordering::Relaxed);
        self.metrics.fuel_run.inc_by(body.fuel_used.unwrap_or(0));
        #[cfg(feature = "adversary")]
        let body = self.misbehave_on(body)?;
        #[allow(unused_mut)]
        let mut signed = SignedResult::sign(&self.keypair, &body).map_err(|e| e.to_string())?;
        #[cfg(feature = "adversary")]
        if self.misbehave == Some(Misbehaviour::Replay) {
            let mut cheat = self.cheat.lock().map_err(|_| "poisoned".to_owned())?;
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
        let inline = self.inline_outputs(&body.outputs);
        Ok((TaskResponse::Done(signed, inline), fuel, outcome))
    }
}

#[cfg(feature = "adversary")]
impl RunJob {
    /// Turns an honest result into the lie this provider tells, if any.
    fn misbehave_on(&self, mut body: ResultBody) -> Result<ResultBody, String> {
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
                Some(first) => {
                    std::fs::read(self.blobs.path(&first.hash)).map_err(|e| e.to_string())?
                }
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
        Ok(body)
    }
}

/// What a cancelled task answers (the requester has stopped listening).
const CANCELLED: &str = "cancelled by the requester";

pub(crate) fn execute(
    sandbox: &Sandbox,
    blobs: &BlobStore,
    t: &TaskAssignment,
    work_dir: &Path,
) -> Result<ResultBody, String> {
    execute_cancellable(sandbox, blobs, t, work_dir, None)
}

fn execute_cancellable(
    sandbox: &Sandbox,
    blobs: &BlobStore,
    t: &TaskAssignment,
    work_dir: &Path,
    cancel: Option<Arc<AtomicBool>>,
) -> Result<ResultBody, String> {
    let bytes =
        std::fs::read(blobs.path(&t.module)).map_err(|e| format!("module {}: {e}", t.module))?;
    let module = sandbox.load(&bytes).map_err(|e| e.to_string())?;
    let inputs: Vec<(String, PathBuf)> = t
        .inputs
        .iter()
        .map(|(name, hash)| (name.clone(), blobs.path(hash)))
        .collect();
    let staged = if inputs.is_empty() {
        None
    } else {
        Some(InputDir::stage(&work_dir.join("inputs"), &inputs).map_err(|e| e.to_string())?)
    };
    let scratch = tempfile::Builder::new()
        .prefix("task-")
        .tempdir_in(work_dir)
        .map_err(|e| e.to_string())?;
    let out = scratch.path().join("out");
    let report = sandbox
        .run_cancellable(
            &module,
            &TaskRun {
                program: &t.program,
                args: &t.args,
                env: &t.env,
                inputs: staged.as_ref(),
                output_dir: &out,
                seed: t.seed,
                limits: t.limits,
                entry: t.entry.as_deref(),
                allow_missing_imports: false,
            },
            cancel,
        )
        .map_err(|e| e.to_string())?;
    // Outputs become blobs, served to the requester by hash.
    for output in &report.outputs {
        let stored = blobs
            .put_file(&out.join(&output.name))
            .map_err(|e| e.to_string())?;
        if stored != output.hash {
            return Err(format!("output {} changed while being stored", output.name));
        }
    }
    Ok(ResultBody {
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
    })
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
