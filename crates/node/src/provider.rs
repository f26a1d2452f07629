//! The provider's shell: it feeds each event (a task request, a cancel, a
//! fetch or a run finished, a requester come or gone, the tick) to the
//! provider's pure core (`provider::Core`), and carries out what the core
//! decides: answers refusals, fetches a request's module and inputs by
//! hash, runs it in the sandbox when the core gives it a slot, keeps the
//! outputs as blobs, answers with signed results, records the runs, and
//! publishes the offer. Which request runs when, what a cancel stops and
//! what is refused are the core's; this file decides none of it.

use crate::{Internal, NodeError, blobs};
#[cfg(feature = "adversary")]
use ::provider::Forgery;
use ::provider::{Action, CANCELLED, Core, Input, Knobs, Ran, Strategy, Terms, Totals, Write};
use net::wire::{self, ResultBody, SignedResult, TaskAssignment, TaskRequest, TaskResponse};
use net::{InboundId, Keypair, NetHandle, PeerId};
use sandbox::{HeldOutput, InputDir, Metering, Sandbox, SandboxConfig, TaskRun};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(feature = "adversary")]
use std::time::Duration;
use std::time::Instant;
use store::BlobStore;
use tokio::sync::mpsc;
#[cfg(feature = "adversary")]
use types::OutputFile;
use types::{Attempt, JobId, Outcome, RequestId, Trap};

#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub slots: u32,
    pub price_per_gfuel: u64,
    /// The most memory one task may ask for.
    pub task_memory_bytes_max: u64,
    /// Test only: how this provider lies, or how slow it is.
    #[cfg(feature = "adversary")]
    pub strategy: Strategy,
}

impl Default for ProviderConfig {
    /// One slot, price 1, tasks up to 1 GiB, honest.
    fn default() -> Self {
        ProviderConfig {
            slots: 1,
            price_per_gfuel: 1,
            task_memory_bytes_max: types::limits::GIB,
            #[cfg(feature = "adversary")]
            strategy: Strategy::Honest,
        }
    }
}

impl ProviderConfig {
    /// Honest, unless the adversary build says otherwise.
    fn strategy(&self) -> Strategy {
        #[cfg(feature = "adversary")]
        return self.strategy;
        #[cfg(not(feature = "adversary"))]
        Strategy::Honest
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

/// A request the core holds: where to answer it, and its tasks, each with
/// the flag that stops it.
struct Pending {
    /// Taken when the request starts or fails (its answer is on its way).
    answer_to: Option<InboundId>,
    /// Asked as one task (`TaskRequest::Run`), answered as one.
    single: bool,
    tasks: Vec<(TaskAssignment, Arc<AtomicBool>)>,
}

pub(crate) struct Provider {
    core: Core<PeerId>,
    pending: HashMap<RequestId, Pending>,
    scratch: Arc<ScratchDirs>,
    /// What it ran and is owed, kept across restarts.
    db: store::Db,
    keypair: Keypair,
    blobs: Arc<BlobStore>,
    sandbox: Arc<Sandbox>,
    sandbox_nan_canonical: Arc<Sandbox>,
    metrics: Arc<crate::Metrics>,
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
        if config.strategy() == Strategy::Selective {
            return Err(NodeError::Job(
                "the selective strategy needs to know who holds each task: only the simulations play it".into(),
            ));
        }
        let terms = Terms {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_bytes: total_memory_bytes(),
            price_per_gfuel: config.price_per_gfuel,
            fuel_per_sec,
            engine: sandbox.engine_identity().to_owned(),
        };
        let core = Core::new(
            Knobs::new(config.slots, config.task_memory_bytes_max),
            terms,
            config.strategy(),
            Totals {
                tasks_run: totals.tasks,
                fuel_used: totals.fuel,
            },
        );
        Ok(Provider {
            core,
            pending: HashMap::new(),
            scratch: Arc::new(ScratchDirs::new(work_dir.clone())),
            db,
            keypair,
            blobs,
            sandbox,
            sandbox_nan_canonical,
            metrics,
            #[cfg(feature = "adversary")]
            cheat: Arc::default(),
        })
    }

    pub fn status(&self) -> ProviderStatus {
        let (terms, totals) = (self.core.terms(), self.core.totals());
        ProviderStatus {
            slots_total: self.core.knobs().slots,
            slots_free: self.core.slots_free(),
            tasks_run: totals.tasks_run,
            fuel_used: totals.fuel_used,
            fuel_per_sec: terms.fuel_per_sec,
            price_per_gfuel: terms.price_per_gfuel,
        }
    }

    /// Whether this provider serves corrupted blobs (test builds only).
    pub fn corrupts_blobs(&self) -> bool {
        self.core.strategy() == Strategy::BadOutput
    }

    /// A requester connected: it hears the offer at the next tick.
    pub fn on_requester_came(&mut self, net: &NetHandle, internal: &mpsc::Sender<Internal>) {
        self.step(Input::RequesterCame, net, internal);
    }

    /// A requester gone (disconnected) will never read its answers: the
    /// core stops its tasks here.
    pub fn on_requester_gone(
        &mut self,
        requester: PeerId,
        net: &NetHandle,
        internal: &mpsc::Sender<Internal>,
    ) {
        self.step(Input::RequesterGone { from: requester }, net, internal);
    }

    pub fn on_tick(&mut self, net: &NetHandle, internal: &mpsc::Sender<Internal>) {
        self.step(Input::Tick, net, internal);
    }

    /// A request's module and inputs are here, or could not be fetched.
    pub fn on_fetched(
        &mut self,
        request: RequestId,
        result: Result<(), String>,
        net: &NetHandle,
        internal: &mpsc::Sender<Internal>,
    ) {
        self.step(Input::Fetched { request, result }, net, internal);
    }

    /// A request was answered: what each task ran, if it ran.
    pub fn on_done(
        &mut self,
        request: RequestId,
        ran: Vec<Ran>,
        net: &NetHandle,
        internal: &mpsc::Sender<Internal>,
    ) {
        self.pending.remove(&request);
        self.step(Input::Done { request, ran }, net, internal);
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
                let attempts = attempts
                    .into_iter()
                    .map(|(task, attempt)| Attempt { task, attempt })
                    .collect();
                let input = Input::Cancel {
                    from,
                    job: JobId(job_id),
                    attempts,
                };
                let actions = self.core.step(crate::now_ms(), input);
                return self.execute(actions, Some((from, id)), net, internal);
            }
        };
        let seen: Vec<::provider::Task> = tasks
            .iter()
            .map(|t| ::provider::Task {
                job: JobId(t.job_id.clone()),
                attempt: Attempt {
                    task: t.task_index,
                    attempt: t.attempt,
                },
                memory_bytes_max: t.limits.memory_bytes_max,
            })
            .collect();
        let input = Input::Request { from, tasks: seen };
        let mut actions = self.core.step(crate::now_ms(), input);
        let admitted = actions.iter().find_map(|a| match a {
            Action::Admit { request } => Some(*request),
            _ => None,
        });
        let Some(request) = admitted else {
            if actions.is_empty() {
                // Taken, never answered (a silent provider): the request
                // stays open on the wire until the requester gives up.
                tracing::debug!(target: "plexus::provider", %from, "holding a request unanswered");
            }
            return self.execute(actions, Some((from, id)), net, internal);
        };
        let tasks = tasks
            .into_iter()
            .map(|t| (t, Arc::new(AtomicBool::new(false))))
            .collect();
        let pending = Pending {
            answer_to: Some(id),
            single,
            tasks,
        };
        match self.missing(&pending) {
            // Everything is here: fetched at once, with no trip through
            // the node's loop (a short task's whole run is ~0.2 ms).
            needed if needed.is_empty() => {
                self.pending.insert(request, pending);
                let input = Input::Fetched {
                    request,
                    result: Ok(()),
                };
                actions.extend(self.core.step(crate::now_ms(), input));
            }
            needed => {
                self.pending.insert(request, pending);
                let (net, blobs, metrics) = (net.clone(), self.blobs.clone(), self.metrics.clone());
                let internal = internal.clone();
                tokio::spawn(async move {
                    let mut result = Ok(());
                    for hash in needed {
                        if let Err(e) = blobs::fetch(&net, &blobs, &metrics, from, hash).await {
                            result = Err(e.to_string());
                            break;
                        }
                    }
                    let _ = internal
                        .send(Internal::ProviderFetched(request, result))
                        .await;
                });
            }
        }
        self.execute(actions, Some((from, id)), net, internal);
    }

    fn step(&mut self, input: Input<PeerId>, net: &NetHandle, internal: &mpsc::Sender<Internal>) {
        let actions = self.core.step(crate::now_ms(), input);
        self.execute(actions, None, net, internal);
    }

    /// The blobs a request needs that are not here (a module compiled in
    /// memory is never read again).
    fn missing(&self, p: &Pending) -> Vec<types::BlobHash> {
        let mut needed: Vec<types::BlobHash> = Vec::new();
        for (t, _) in &p.tasks {
            let sandbox = sandbox_for(t, &self.sandbox, &self.sandbox_nan_canonical);
            let module = Some(t.module).filter(|m| !sandbox.is_compiled(m));
            for hash in module.into_iter().chain(t.inputs.iter().map(|(_, h)| *h)) {
                if !needed.contains(&hash) && !self.blobs.contains(&hash) {
                    needed.push(hash);
                }
            }
        }
        needed
    }

    /// Carries out one step's actions: its records first, in one
    /// transaction, then the answers, stops and starts. `asked` is the
    /// request the step answers (a refusal, a cancel's count).
    fn execute(
        &mut self,
        actions: Vec<Action<PeerId>>,
        asked: Option<(PeerId, InboundId)>,
        net: &NetHandle,
        internal: &mpsc::Sender<Internal>,
    ) {
        let runs: Vec<store::Run> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Persist(Write::Run {
                    requester,
                    ran,
                    finished_at_ms,
                }) => Some(store::Run {
                    requester: requester.to_string(),
                    job: ran.job.0.clone(),
                    task: ran.attempt.task,
                    attempt: ran.attempt.attempt,
                    fuel: ran.fuel,
                    outcome: ran.outcome.clone(),
                    finished_at_ms: *finished_at_ms,
                }),
                _ => None,
            })
            .collect();
        if !runs.is_empty() {
            // A record lost is a run this provider cannot show it did; the
            // requester holds the signed result either way.
            let recorded = self.db.transaction(|db| {
                for run in &runs {
                    if let Err(e) = db.insert_run(run) {
                        tracing::error!(target: "plexus::provider", job = %run.job, task = run.task, "cannot record a run: {e}");
                    }
                }
            });
            if let Err(e) = recorded {
                tracing::error!(target: "plexus::provider", "cannot record runs: {e}");
            }
        }
        for action in actions {
            match action {
                Action::Persist(_) | Action::Admit { .. } => {}
                Action::Refuse(why) => {
                    if let Some((from, id)) = asked {
                        tracing::debug!(target: "plexus::provider", %from, "refused: {why}");
                        respond(
                            net,
                            id,
                            TaskResponse::Refused {
                                reason: why.to_string(),
                            },
                        );
                    }
                }
                Action::Cancelled { count } => {
                    if let Some((from, id)) = asked {
                        if count > 0 {
                            tracing::info!(target: "plexus::provider", "{count} tasks cancelled by {from}");
                        }
                        respond(net, id, TaskResponse::Cancelled { count });
                    }
                }
                Action::Stop { request, attempts } => {
                    if let Some(p) = self.pending.get(&request) {
                        for (t, stop) in &p.tasks {
                            let a = Attempt {
                                task: t.task_index,
                                attempt: t.attempt,
                            };
                            if attempts.contains(&a) {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                }
                Action::Fail { request, reason } => {
                    tracing::warn!(target: "plexus::provider", "tasks failed: {reason}");
                    if let Some(p) = self.pending.remove(&request)
                        && let Some(id) = p.answer_to
                    {
                        let failed = || TaskResponse::Failed {
                            reason: reason.clone(),
                        };
                        let response = if p.single {
                            failed()
                        } else {
                            TaskResponse::Batch(p.tasks.iter().map(|_| failed()).collect())
                        };
                        respond(net, id, response);
                    }
                }
                Action::Start { request, alone } => self.start(request, alone, net, internal),
                Action::Publish(offer) => {
                    let net = net.clone();
                    tokio::spawn(async move {
                        let _ = net.publish_offer(offer).await;
                    });
                }
            }
        }
    }

    /// Runs a request the core gave a slot: its answer goes out, and the
    /// core hears it is done (before the answer, so the requester's next
    /// request finds the slot free).
    fn start(
        &mut self,
        request: RequestId,
        alone: bool,
        net: &NetHandle,
        internal: &mpsc::Sender<Internal>,
    ) {
        let Some(p) = self.pending.get_mut(&request) else {
            return;
        };
        let Some(id) = p.answer_to.take() else {
            return;
        };
        let batch = RunBatch {
            tasks: p.tasks.clone(),
            alone,
            blobs: self.blobs.clone(),
            sandbox: self.sandbox.clone(),
            sandbox_nan_canonical: self.sandbox_nan_canonical.clone(),
            keypair: self.keypair.clone(),
            scratch: self.scratch.clone(),
            metrics: self.metrics.clone(),
            #[cfg(feature = "adversary")]
            strategy: self.core.strategy(),
            #[cfg(feature = "adversary")]
            cheat: self.cheat.clone(),
        };
        let single = p.single;
        let (net, internal) = (net.clone(), internal.clone());
        tokio::spawn(async move {
            let answers = match batch.run().await {
                Ok(answers) => answers,
                Err(reason) => {
                    tracing::warn!(target: "plexus::provider", "tasks failed: {reason}");
                    let failed = || TaskResponse::Failed {
                        reason: reason.clone(),
                    };
                    batch.tasks.iter().map(|_| (failed(), None)).collect()
                }
            };
            let mut ran = Vec::with_capacity(answers.len());
            let mut responses = Vec::with_capacity(answers.len());
            for ((task, _), (response, run)) in batch.tasks.iter().zip(answers) {
                if let Some((fuel, outcome)) = run {
                    ran.push(Ran {
                        job: JobId(task.job_id.clone()),
                        attempt: Attempt {
                            task: task.task_index,
                            attempt: task.attempt,
                        },
                        fuel,
                        outcome,
                    });
                }
                responses.push(response);
            }
            let response = match (single, responses.pop()) {
                (true, Some(one)) if responses.is_empty() => one,
                (_, last) => {
                    responses.extend(last);
                    TaskResponse::Batch(responses)
                }
            };
            let _ = internal.send(Internal::ProviderDone(request, ran)).await;
            let _ = net.respond_task(id, response).await;
        });
    }
}

fn respond(net: &NetHandle, id: InboundId, response: TaskResponse) {
    let net = net.clone();
    tokio::spawn(async move {
        let _ = net.respond_task(id, response).await;
    });
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

/// A request on its slot: its tasks run one after the other.
struct RunBatch {
    /// Each task with the flag that stops it.
    tasks: Vec<(TaskAssignment, Arc<AtomicBool>)>,
    /// Nothing else runs on this provider (the core says so).
    alone: bool,
    blobs: Arc<BlobStore>,
    sandbox: Arc<Sandbox>,
    sandbox_nan_canonical: Arc<Sandbox>,
    keypair: Keypair,
    scratch: Arc<ScratchDirs>,
    metrics: Arc<crate::Metrics>,
    #[cfg(feature = "adversary")]
    strategy: Strategy,
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
    /// Runs the tasks one after the other on one sandbox thread (its
    /// module and inputs are here), and answers each: a signed
    /// result with the small outputs inline (INLINE_OUTPUT_BYTES_MAX across
    /// the batch; the others kept as blobs), or why it failed.
    async fn run(&self) -> Result<Vec<Answer>, String> {
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
                sandbox.metering() == Metering::Fuel && sandbox.is_compiled(&t.module) && self.alone
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
        if self.strategy.slowdown() > 1 {
            let extra = body.run_ms.max(1) * (u64::from(self.strategy.slowdown()) - 1);
            tokio::time::sleep(Duration::from_millis(extra)).await;
        }
        let (fuel, outcome) = (body.fuel_used.unwrap_or(0), body.outcome.to_string());
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
        if self.strategy == Strategy::Replay {
            let mut cheat = self.cheat.lock().unwrap_or_else(|p| p.into_inner());
            let previous = cheat.last.replace(signed.clone());
            if let Some(previous) = previous {
                signed = previous;
            }
        }
        #[cfg(feature = "adversary")]
        if self.strategy == Strategy::BadSignature
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
        if self.strategy == Strategy::BadOutput {
            for output in &mut inline {
                output.bytes.push(b'!');
            }
        }
        let tasks = {
            let mut cheat = self.cheat.lock().map_err(|_| "poisoned".to_owned())?;
            cheat.tasks += 1;
            cheat.tasks
        };
        let own = self.keypair.public().to_peer_id().to_string();
        match self.strategy {
            Strategy::Oversized => body.stderr_tail = vec![b'x'; 2 << 20],
            Strategy::FuelLie => body.fuel_used = body.fuel_used.map(|f| f + 1_000),
            _ => {}
        }
        let forge = self
            .strategy
            .forgery(tasks, &own, &body.job_id, body.task_index)
            .map(|forgery| match forgery {
                Forgery::Own => own,
                Forgery::Shared => "collude".to_owned(),
            });
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
