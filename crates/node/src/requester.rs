//! The requester's shell: it turns what happens to the node (a job
//! submitted, an offer heard, a provider's answers, the requester's own
//! run, an assembly done, a provider gone, a tick of the clock) into an
//! [`Input`] of the pure [`Scheduler`], and carries out the actions the
//! core returns. Every decision (dispatch, credit, batching, retries,
//! exclusion, speculation, verification, settlement, the end of a job) is
//! the core's; this file does only what the core cannot: the database,
//! the network, the sandbox, the blob store and the clock.
//!
//! *Persist before send, in one place:* [`Requester::execute`] commits
//! every write of a step in one transaction and only then queues the
//! step's sends; when the commit fails nothing of the step is sent, and
//! the core hears it ([`Input::Unrecorded`]): the jobs concerned fail
//! naming the error instead of carrying on without their records.
//!
//! *Restore is the simulation's:* a restart rebuilds each running job
//! from its persisted writes alone (settled results, attempt numbers
//! used) through [`Input::Restore`], the input `sim` crashes and
//! restores its requester with.

use crate::{Internal, Metrics, NodeError, blobs, now_ms, provider};
use market::NoMatch;
use net::wire::{self, Offer, SignedResult, TaskAssignment, TaskRequest, TaskResponse};
use net::{NetHandle, PeerId};
use sandbox::{Sandbox, SandboxConfig};
use scheduler::{Action, Answer, Counters, Input, JobSpec, Knobs, Scheduler, Write};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::BlobStore;
use tokio::sync::mpsc;
use types::{
    Attempt, BlobHash, Failure, Job, JobId, JobPhase, ModuleSource, Outcome, OutputFile, RequestId,
    Trap,
};
use verify::{Claim, Method, Policy, Record, Summary};

/// Jobs kept by one node (finished ones included): the core's bound.
const JOBS_MAX: usize = scheduler::JOBS_MAX;
/// Finished jobs that leave memory at once when JOBS_MAX is reached (their
/// records stay in the database): one shift of the list per this many
/// submissions, not one per submission.
const JOBS_EVICTED_AT_ONCE: usize = JOBS_MAX / 4;
/// Most tasks one page of `GET /api/jobs/{id}/tasks` lists.
pub const TASKS_PAGE_MAX: u64 = 10_000;
/// The cheater share assumed when `job status` states what a coalition
/// holding every replica of a task could pass.
const ASSUMED_CHEATER_SHARE: f64 = 0.2;
/// Requests waiting in the outbox between a step's commit and their send
/// (one step sends at most one request per provider with credit, and the
/// node flushes after every event); past it, a bug, named as one.
const OUTBOX_MAX: usize = 65_536;

/// A submission ready to start ([`Requester::prepare`]).
pub struct Prepared {
    id: JobId,
    shell: JobShell,
    spec: JobSpec,
    record: store::JobRecord,
    tasks: u64,
}

impl Prepared {
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// What its escrow must lock, when it has a budget: the budget, at its
    /// highest price per Gfuel.
    pub fn escrow(&self) -> Option<(types::Credits, u64)> {
        let r = &self.shell.job.requirements;
        Some((r.budget?, r.price_per_gfuel_max?))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobSubmission {
    /// The job file's name, for error messages.
    pub job_file: String,
    pub job_toml: String,
    /// Where the job file's relative paths start (module, inputs).
    pub base_dir: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProviderShare {
    pub peer_id: String,
    /// Its results that were accepted (alone or as an agreeing replica).
    pub tasks_done: u64,
    pub in_flight: u64,
    /// Fuel of its accepted results: what it is owed for this job.
    pub fuel: u64,
    /// Time its sandboxes spent running this job's tasks.
    pub busy_ms: u64,
}

/// Where one task of a job stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskInfo {
    pub index: u64,
    /// pending, running or settled.
    pub state: String,
    /// Providers running it now (replicas run at once).
    pub running_on: Vec<String>,
    /// Executions handed out so far.
    pub attempts: u32,
    /// How its accepted result was established (Replicas, SpotCheck,
    /// GroundTruth, Reputation; Unverified when the job turned checks off).
    pub method: Option<String>,
}

/// What a selective coalition could have slipped through unanimity.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CoalitionBound {
    pub assumed_cheater_share: f64,
    /// Providers that took part in the job, and the cheaters assumed among them.
    pub providers: u64,
    pub cheaters: u64,
    pub replicas: u64,
    /// C(c,k)/C(N,k): the chance the coalition held every replica of a task.
    pub per_replicated_task: f64,
    pub replicated_tasks: u64,
    pub expected_wrong_at_most: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerificationStatus {
    pub enabled: bool,
    pub floor: f64,
    pub replicas: u8,
    /// How each result was established (by_replicas, by_spot_check,
    /// by_ground_truth, on_reputation), what was found (disagreements,
    /// reverified, executions, ground_truth_runs, replicated_tasks) and the
    /// providers caught (excluded: their results void, their offers ignored).
    #[serde(flatten)]
    pub summary: Summary<String>,
    pub bound: Option<CoalitionBound>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: String,
    pub name: String,
    /// running, assembling, completed, failed or cancelled.
    pub state: JobPhase,
    pub tasks_total: u64,
    pub tasks_done: u64,
    pub tasks_in_flight: u64,
    pub retries: u64,
    /// Fuel of the accepted result of each task, summed: the job's work.
    pub fuel: u64,
    /// The most the job may cost, in credits (`requirements.budget`).
    pub budget: Option<u64>,
    /// Credits it has committed: the worst case of every execution out
    /// plus the cost of every result come back, so at least what it will
    /// pay (an ended job: its accepted results at its highest price).
    pub committed: u64,
    pub providers: Vec<ProviderShare>,
    pub verification: VerificationStatus,
    pub result: Option<String>,
    pub checksum: Option<u64>,
    pub error: Option<String>,
    pub elapsed_s: f64,
    /// While the job waits with nothing out: the offers its last dispatch
    /// saw, counted per reason none of them could take a task
    /// (offers_seen, expired, price, memory, engine, record, excluded, busy).
    pub no_match: Option<NoMatch>,
}

pub(crate) enum Completion {
    /// The answers of one request to a provider.
    Tasks {
        request: RequestId,
        peer: PeerId,
        done: Vec<(Attempt, TaskDone)>,
    },
    /// The requester's own run of a task whose results disagreed.
    Local {
        job: JobId,
        task: u64,
        result: Result<Box<Checked>, String>,
    },
    Assembled {
        job: JobId,
        /// The result's path (none when the tasks wrote nothing) and checksum.
        result: Result<(Option<PathBuf>, Option<u64>), String>,
    },
}

/// A result, checked for its signature and binding, its outputs fetched
/// into the blob store: what the core decides on, and what the shell
/// keeps until its task is settled.
pub(crate) struct Checked {
    reported: scheduler::Reported,
    kept: Kept,
}

/// What the shell keeps of a result the core holds: the outputs, for the
/// results table when it is accepted, and the signed result, as evidence
/// when it is contradicted.
struct Kept {
    outputs: Vec<OutputFile>,
    signed: Option<SignedResult>,
}

pub(crate) enum TaskDone {
    Ok(Box<Checked>),
    /// This attempt gave no result; another provider may succeed.
    Failed(Failure),
    /// The provider cheated or garbled its answer: caught.
    Rejected(String),
}

/// What the shell holds of a job beside the core: its file, module and
/// inputs (to build assignments), where its result goes, its clock.
struct JobShell {
    job: Arc<Job>,
    module: BlobHash,
    program: String,
    inputs: Vec<(String, BlobHash)>,
    dir: PathBuf,
    started: Instant,
    finished: Option<Instant>,
    result: Option<PathBuf>,
    checksum: Option<u64>,
    /// A job that had ended before this node started: not in the core,
    /// listed as the database recorded it.
    recorded: Option<JobStatus>,
}

/// A result kept, and whose it is (None: the requester's own run).
type KeptFrom = (Option<PeerId>, Kept);

/// A request whose attempts are committed, waiting to go out.
struct PlannedSend {
    request: RequestId,
    peer: PeerId,
    assignments: Vec<TaskAssignment>,
    timeout: Duration,
}

pub(crate) struct Requester {
    data_dir: PathBuf,
    db: store::Db,
    blobs: Arc<BlobStore>,
    net: NetHandle,
    internal: mpsc::Sender<Internal>,
    metrics: Arc<Metrics>,
    core: Scheduler<PeerId>,
    /// The core's counters at the last step: metrics take the change.
    counters: Counters,
    jobs: HashMap<JobId, JobShell>,
    /// Job ids, oldest first: the order `list` shows and eviction takes.
    order: VecDeque<JobId>,
    /// The results the core holds, by job and task: (None: the requester's
    /// own run). Bounded by the executions out (the core's credit) and
    /// emptied when a task settles or its job ends.
    kept: HashMap<(JobId, u64), Vec<KeptFrom>>,
    /// When each request out was sent, for the task latency.
    sent_at: HashMap<RequestId, Instant>,
    /// Requests committed, sent at the next [`Requester::flush`].
    outbox: Vec<PlannedSend>,
    /// Inputs waiting for the core (a step's carrying out may cause one).
    inbox: VecDeque<Input<PeerId>>,
    /// The sandboxes for the requester's own runs, made on first need
    /// (plain, NaN-canonical).
    local_sandboxes: [Option<Arc<Sandbox>>; 2],
    /// The hash of each built-in workload submitted (as many as `guests` has).
    builtin_modules: HashMap<String, BlobHash>,
    /// Providers whose exclusion from a running job has been logged (the
    /// core excludes; the log says so once). Emptied when the job ends.
    exclusions_logged: HashSet<(JobId, PeerId)>,
    /// A submission's row, until the commit of the step that starts it
    /// (`Write::JobStarted`): one commit for the job and its first attempts.
    unstarted: HashMap<JobId, store::JobRecord>,
    /// The last commit's error, for a submission that could not be recorded.
    unrecorded: Option<String>,
    /// The ledger, when the node pays for its jobs.
    pay: Option<crate::pay::Pay>,
}

impl Requester {
    pub fn new(
        data_dir: PathBuf,
        db: store::Db,
        blobs: Arc<BlobStore>,
        net: NetHandle,
        internal: mpsc::Sender<Internal>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, NodeError> {
        let mut records = Vec::new();
        for (peer, r) in db.reputations()? {
            if let Ok(peer) = peer.parse::<PeerId>() {
                records.push((
                    peer,
                    Record {
                        verified: r.verified,
                        disagreed: r.disagreed,
                        timed_out: r.timed_out,
                        streak: r.streak,
                    },
                ));
            }
        }
        let core = Scheduler::new(Knobs::default(), records);
        let mut requester = Requester {
            data_dir,
            db,
            blobs,
            net,
            internal,
            metrics,
            counters: core.counters(),
            core,
            jobs: HashMap::new(),
            order: VecDeque::new(),
            kept: HashMap::new(),
            sent_at: HashMap::new(),
            outbox: Vec::new(),
            inbox: VecDeque::new(),
            local_sandboxes: [None, None],
            builtin_modules: HashMap::new(),
            exclusions_logged: HashSet::new(),
            unstarted: HashMap::new(),
            unrecorded: None,
            pay: None,
        };
        requester.resume()?;
        Ok(requester)
    }

    /// Pays from now on, and settles every ended job whose escrow is still
    /// open (the node stopped before it was settled; settling again pays
    /// nothing twice).
    pub fn set_pay(&mut self, pay: crate::pay::Pay) {
        self.pay = Some(pay);
        let ended: Vec<JobId> = self
            .order
            .iter()
            .filter(|id| self.status(&id.0).is_some_and(|s| s.state.has_ended()))
            .cloned()
            .collect();
        for id in ended {
            self.settle(&id);
        }
    }

    /// Hands an ended job with a budget to the pay actor: one claim per
    /// provider per accepted result, as the database holds them, then the
    /// release of what is left.
    fn settle(&self, id: &JobId) {
        let Some(pay) = &self.pay else {
            return;
        };
        let Some(shell) = self.jobs.get(id) else {
            return;
        };
        let r = &shell.job.requirements;
        let (Some(_), Some(price)) = (r.budget, r.price_per_gfuel_max) else {
            return;
        };
        let settled = match self.db.settled_tasks(&id.0) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(target: "plexus::pay", job = %id, "cannot read the settled tasks to pay: {e}");
                return;
            }
        };
        let mut claims = Vec::new();
        for t in &settled {
            for (peer, fuel) in &t.payees {
                match peer
                    .parse::<PeerId>()
                    .ok()
                    .as_ref()
                    .and_then(crate::pay::account_of_peer)
                {
                    Some(provider) => claims.push(crate::pay::ClaimOf {
                        task: t.task,
                        provider,
                        fuel: *fuel,
                    }),
                    None => {
                        tracing::warn!(target: "plexus::pay", job = %id, task = t.task, "provider {peer} has no ed25519 key to be paid at")
                    }
                }
            }
        }
        if let Err(e) = pay.settle(id.clone(), price, claims) {
            tracing::error!(target: "plexus::pay", job = %id, "{e}");
        }
    }

    /// Takes up every job that was running when the node stopped, from its
    /// persisted writes alone: settled tasks keep their accepted results
    /// (never run again), executions that were out are dispatched anew
    /// under fresh attempt numbers. Ended jobs are listed as they ended.
    fn resume(&mut self) -> Result<(), NodeError> {
        for record in self.db.recent_jobs(JOBS_MAX as u64)? {
            let id = JobId(record.id.clone());
            if record.end.is_some() {
                match self.recorded_job(record) {
                    Ok(shell) => self.hold(id, shell),
                    Err(e) => {
                        tracing::debug!(target: "plexus::job", job = %id, "a finished job is not listed: {e}")
                    }
                }
                continue;
            }
            if let Err(e) = self.restore_job(record) {
                tracing::error!(target: "plexus::job", job = %id, "cannot resume the job: {e}");
                self.jobs.remove(&id);
                self.order.retain(|j| *j != id);
                self.db.end_job(
                    &id.0,
                    &store::JobEnd {
                        state: JobPhase::Failed.as_str().into(),
                        error: Some(format!("cannot resume: {e}")),
                        result: None,
                        checksum: None,
                        finished_at_ms: now_ms(),
                    },
                )?;
            }
        }
        Ok(())
    }

    fn restore_job(&mut self, r: store::JobRecord) -> Result<(), String> {
        let job = Job::parse(&r.name, &r.job_toml).map_err(|e| e.to_string())?;
        if job.task_count() != r.tasks {
            return Err(format!(
                "the job file now expands to {} tasks, not {}",
                job.task_count(),
                r.tasks
            ));
        }
        if let Some(gone) = std::iter::once(&r.module)
            .chain(r.inputs.iter().map(|(_, h)| h))
            .find(|h| !self.blobs.contains(h))
        {
            return Err(format!("blob {gone} is gone from the store"));
        }
        let id = JobId(r.id.clone());
        let db = &self.db;
        let text = |e: store::StoreError| e.to_string();
        // Executions out when the node stopped will never be answered.
        db.abandon_open_attempts(&r.id, "the requester restarted")
            .map_err(text)?;
        // Attempt numbers go on from the highest used.
        let attempts_used = db.last_attempts(&r.id).map_err(text)?;
        let retries = self.recorded_retries(&r.id)?;
        let mut settled = Vec::new();
        for t in db.settled_tasks(&r.id).map_err(text)? {
            // An output lost from the store (a disk cleaned by hand) means
            // the task is simply run again.
            if !t.outputs.iter().all(|o| self.blobs.contains(&o.hash)) {
                db.reopen_task(&r.id, t.task).map_err(text)?;
                continue;
            }
            // A verified job's result of unknown method stands on reputation.
            let method = Method::from_name(&t.method)
                .or(job.verification.enabled.then_some(Method::Reputation));
            settled.push(scheduler::SettledTask {
                task: t.task,
                fuel: t.fuel,
                method,
                payees: parse_payees(&t.payees),
            });
        }
        let shell = JobShell::new(job, r.module, r.program, r.inputs, self.job_dir(&id));
        let spec = spec_of(&id, &shell)?;
        let elapsed = Duration::from_millis(now_ms().saturating_sub(r.submitted_at_ms));
        let started = Instant::now()
            .checked_sub(elapsed)
            .unwrap_or_else(Instant::now);
        let tasks = settled.len();
        self.hold(id.clone(), JobShell { started, ..shell });
        self.step(Input::Restore {
            job: id.clone(),
            spec,
            restored: scheduler::Restored {
                settled,
                attempts_used,
                retries,
            },
        });
        tracing::info!(target: "plexus::job", job = %id, settled = tasks, tasks = r.tasks, "job resumed after a restart");
        Ok(())
    }

    /// An ended job as the database recorded it, for listing.
    fn recorded_job(&self, r: store::JobRecord) -> Result<JobShell, String> {
        let job = Job::parse(&r.name, &r.job_toml).map_err(|e| e.to_string())?;
        let end = r.end.clone().ok_or("the job has not ended")?;
        let settled = self.db.settled_tasks(&r.id).map_err(|e| e.to_string())?;
        let executions: u64 = (self.db.last_attempts(&r.id).map_err(|e| e.to_string())?)
            .iter()
            .map(|(_, a)| u64::from(*a))
            .sum();
        let mut shares: std::collections::BTreeMap<String, ProviderShare> = Default::default();
        let mut summary = Summary::<String> {
            executions,
            ..Summary::default()
        };
        for t in &settled {
            match Method::from_name(&t.method) {
                Some(Method::Replicas) => summary.by_replicas += 1,
                Some(Method::SpotCheck) => summary.by_spot_check += 1,
                Some(Method::GroundTruth) => summary.by_ground_truth += 1,
                Some(Method::Reputation) | None => summary.on_reputation += 1,
            }
            for (peer, fuel) in &t.payees {
                let share = shares.entry(peer.clone()).or_insert_with(|| ProviderShare {
                    peer_id: peer.clone(),
                    tasks_done: 0,
                    in_flight: 0,
                    fuel: 0,
                    busy_ms: 0,
                });
                share.tasks_done += 1;
                share.fuel += fuel;
            }
        }
        let v = job.verification;
        let status = JobStatus {
            id: r.id.clone(),
            name: job.name.clone(),
            // An end is never running: a row that says so failed to resume.
            state: JobPhase::parse(&end.state)
                .filter(|p| p.has_ended())
                .unwrap_or(JobPhase::Failed),
            tasks_total: r.tasks,
            tasks_done: settled.len() as u64,
            tasks_in_flight: 0,
            retries: self.recorded_retries(&r.id)?,
            fuel: settled.iter().map(|t| t.fuel).sum(),
            budget: job.requirements.budget.map(|b| b.0),
            committed: {
                let price = u128::from(job.requirements.price_per_gfuel_max.unwrap_or(0));
                let nano: u128 = shares.values().map(|s| u128::from(s.fuel) * price).sum();
                u64::try_from(nano.div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
            },
            providers: shares.into_values().collect(),
            verification: VerificationStatus {
                enabled: v.enabled,
                floor: v.floor,
                replicas: v.replicas,
                summary,
                bound: None,
            },
            result: end.result.clone(),
            checksum: end.checksum,
            error: end.error.clone(),
            elapsed_s: end.finished_at_ms.saturating_sub(r.submitted_at_ms) as f64 / 1000.0,
            no_match: None,
        };
        let mut shell = JobShell::new(
            job,
            r.module,
            r.program,
            r.inputs,
            self.job_dir(&JobId(r.id)),
        );
        shell.recorded = Some(status);
        Ok(shell)
    }

    /// The attempts of a job that ended as a retry, by the database.
    fn recorded_retries(&self, job: &str) -> Result<u64, String> {
        let ends = self.db.attempt_ends(job).map_err(|e| e.to_string())?;
        Ok(ends
            .iter()
            .filter(|(end, _)| scheduler::AttemptEnd::recorded_counts_as_retry(end))
            .map(|(_, n)| n)
            .sum())
    }

    fn job_dir(&self, id: &JobId) -> PathBuf {
        self.data_dir.join("jobs").join(&id.0)
    }

    fn hold(&mut self, id: JobId, shell: JobShell) {
        if self.jobs.insert(id.clone(), shell).is_none() {
            self.order.push_back(id);
        }
    }

    /// Makes room for a job: the oldest ended ones leave memory, a batch
    /// of them at once; an error when every job kept is still running.
    fn make_room(&mut self) -> Result<(), NodeError> {
        if self.jobs.len() < JOBS_MAX {
            return Ok(());
        }
        let mut evict = JOBS_EVICTED_AT_ONCE;
        let mut kept = VecDeque::with_capacity(self.order.len());
        for id in std::mem::take(&mut self.order) {
            let ended = self.has_ended(&id.0) == Some(true);
            if ended && evict > 0 {
                evict -= 1;
                self.jobs.remove(&id);
                self.core.forget(&id);
            } else {
                kept.push_back(id);
            }
        }
        self.order = kept;
        if evict == JOBS_EVICTED_AT_ONCE {
            return Err(NodeError::Job(format!(
                "this node runs {JOBS_MAX} jobs already (JOBS_MAX)"
            )));
        }
        Ok(())
    }

    /// A submission checked, its module and inputs stored and its id
    /// chosen, with nothing of it recorded or sent yet: the node locks its
    /// budget in escrow between this and [`Requester::start`].
    pub fn prepare(&mut self, s: JobSubmission) -> Result<Prepared, NodeError> {
        self.make_room()?;
        let job =
            Job::parse(&s.job_file, &s.job_toml).map_err(|e| NodeError::Job(e.to_string()))?;
        let base = PathBuf::from(&s.base_dir);
        let (program, module) = match &job.module {
            ModuleSource::Builtin(name) => {
                let bytes = guests::builtin(name)
                    .ok_or_else(|| NodeError::Job(format!("no built-in workload {name:?}")))?;
                // Hashed once per process: a one-task job took 10 µs to hash its module again.
                let hash = match self.builtin_modules.get(name) {
                    Some(hash) if self.blobs.contains(hash) => *hash,
                    _ => {
                        let hash = self.blobs.put_bytes(bytes)?;
                        self.builtin_modules.insert(name.clone(), hash);
                        hash
                    }
                };
                (name.clone(), hash)
            }
            ModuleSource::Path(p) => {
                let path = base.join(p);
                let hash = self
                    .blobs
                    .put_file(&path)
                    .map_err(|e| NodeError::Job(format!("{}: `module`: {e}", s.job_file)))?;
                let name = path
                    .file_stem()
                    .map_or("module".into(), |n| n.to_string_lossy().into_owned());
                (name, hash)
            }
        };
        let mut inputs = Vec::new();
        for (name, path) in &job.inputs {
            let hash = self
                .blobs
                .put_file(&base.join(path))
                .map_err(|e| NodeError::Job(format!("{}: input {name:?}: {e}", s.job_file)))?;
            inputs.push((name.clone(), hash));
        }
        let seed = format!(
            "{}:{:?}:{}",
            s.job_toml,
            std::time::SystemTime::now(),
            self.jobs.len()
        );
        let id = JobId(BlobHash::of(seed.as_bytes()).to_hex()[..16].to_owned());
        let n = job.task_count();
        let shell = JobShell::new(
            job,
            module,
            program.clone(),
            inputs.clone(),
            self.job_dir(&id),
        );
        let spec =
            spec_of(&id, &shell).map_err(|e| NodeError::Job(format!("{}: {e}", s.job_file)))?;
        let record = store::JobRecord {
            id: id.0.clone(),
            name: shell.job.name.clone(),
            job_toml: s.job_toml.clone(),
            base_dir: s.base_dir.clone(),
            tasks: n,
            module,
            program,
            inputs,
            submitted_at_ms: now_ms(),
            end: None,
        };
        Ok(Prepared {
            id,
            shell,
            spec,
            record,
            tasks: n,
        })
    }

    /// Starts a prepared job: recorded and its first tasks sent, in one
    /// step of the core.
    pub fn start(&mut self, p: Prepared) -> Result<String, NodeError> {
        let Prepared {
            id,
            shell,
            spec,
            record,
            tasks: n,
        } = p;
        // Written by the core's `JobStarted`, in the commit of the step
        // that sends its first tasks, before the submission is acknowledged.
        self.unstarted.insert(id.clone(), record);
        let name = shell.job.name.clone();
        self.hold(id.clone(), shell);
        self.step(Input::Submit {
            job: id.clone(),
            spec,
        });
        if self.unstarted.remove(&id).is_some() {
            // Not even the job's own row could be written: it was never
            // submitted, and nothing of it is kept.
            self.core.forget(&id);
            self.jobs.remove(&id);
            self.order.retain(|j| *j != id);
            let error = self.unrecorded.take().unwrap_or_default();
            return Err(NodeError::Job(format!("cannot record the job: {error}")));
        }
        tracing::info!(target: "plexus::job", job = %id, name = %name, tasks = n, "job submitted");
        self.metrics
            .tasks
            .get_or_create(&crate::metrics::StateLabel { state: "submitted" })
            .inc_by(n);
        Ok(id.0)
    }

    // ---- the step: input in, actions carried out ------------------------

    /// Gives the core one input, and carries out what it decides (and
    /// whatever input that carrying out gives back, in order).
    fn step(&mut self, input: Input<PeerId>) {
        self.inbox.push_back(input);
        while let Some(input) = self.inbox.pop_front() {
            let actions = self.core.step(now_ms(), input);
            self.execute(actions);
        }
        self.count();
    }

    /// Persist before send, in one place: every write of the step is
    /// committed in one transaction, and only then are its requests
    /// queued for sending. A failed commit sends nothing: the core hears
    /// which requests never left and which jobs lost writes
    /// ([`Input::Unrecorded`]), and those jobs fail naming the error.
    fn execute(&mut self, actions: Vec<Action<PeerId>>) {
        let mut writes = Vec::new();
        let mut rest = Vec::with_capacity(actions.len());
        for action in actions {
            match action {
                Action::Persist(w) => writes.push(w),
                other => rest.push(other),
            }
        }
        let committed = self.commit(&writes);
        if let Err(error) = &committed {
            let mut jobs: Vec<JobId> = writes.iter().filter_map(job_of).cloned().collect();
            let mut requests = Vec::new();
            for a in &rest {
                if let Action::Send { request, job, .. } = a {
                    requests.push(*request);
                    jobs.push(job.clone());
                }
            }
            jobs.sort();
            jobs.dedup();
            // A submission whose first attempts could not be recorded is
            // still recorded, alone, so that it stays listed, failed, saying
            // why (the core fails it next).
            for w in &writes {
                if let Write::JobStarted { job } = w
                    && let Some(record) = self.unstarted.get(job)
                    && self.db.insert_job(record).is_ok()
                {
                    self.unstarted.remove(job);
                }
            }
            self.unrecorded = Some(error.clone());
            tracing::error!(target: "plexus::job", jobs = ?jobs, "cannot record a step, so nothing of it is sent: {error}");
            // Each round fails the jobs it names, so this ends; a round
            // that names none (a record of reputation) has nothing to undo.
            if !jobs.is_empty() || !requests.is_empty() {
                self.inbox.push_back(Input::Unrecorded {
                    jobs,
                    requests,
                    error: error.clone(),
                });
            }
        } else {
            self.after_commit(&writes);
        }
        for action in rest {
            match action {
                Action::Send {
                    request,
                    peer,
                    job,
                    attempts,
                    timeout_ms,
                } => {
                    if committed.is_ok() {
                        self.plan_send(request, peer, &job, &attempts, timeout_ms);
                    }
                }
                Action::Cancel {
                    peer,
                    job,
                    attempts,
                } => {
                    if !attempts.is_empty() {
                        self.log_exclusion(&job, peer, "an attempt that timed out");
                    }
                    let attempts = attempts.iter().map(|a| (a.task, a.attempt)).collect();
                    send_cancel(&self.net, peer, job.0, attempts);
                }
                Action::RunLocally { job, task } => self.run_locally(job, task),
                Action::Assemble { job } => self.assemble(job),
                Action::Persist(_) => {} // committed above
            }
        }
    }

    /// The writes of one step in one transaction: all of them or none.
    fn commit(&self, writes: &[Write<PeerId>]) -> Result<(), String> {
        if writes.is_empty() {
            return Ok(());
        }
        self.db.begin().map_err(|e| e.to_string())?;
        for w in writes {
            if let Err(e) = self.write(w) {
                let _ = self.db.rollback();
                return Err(e);
            }
        }
        self.db.commit().map_err(|e| e.to_string())
    }

    /// One write, in the database.
    fn write(&self, w: &Write<PeerId>) -> Result<(), String> {
        let db = &self.db;
        let done = match w {
            // A submission's row (a restored job has one already).
            Write::JobStarted { job } => match self.unstarted.get(job) {
                Some(record) => db.insert_job(record),
                None => Ok(()),
            },
            Write::Attempt {
                job,
                attempt,
                peer,
                sent_at_ms,
            } => db.insert_attempt(
                &job.0,
                attempt.task,
                attempt.attempt,
                &peer.to_string(),
                *sent_at_ms,
            ),
            Write::AttemptEnded { job, attempt, end } => {
                db.end_attempt(&job.0, attempt.task, attempt.attempt, &end.to_string())
            }
            Write::Settled {
                job,
                task,
                fuel,
                method,
                from,
                payees,
            } => {
                let outputs = self
                    .kept_result(job, *task, *from)
                    .map(|k| k.outputs.clone())
                    .ok_or_else(|| format!("task {task}: the accepted result is not held"))?;
                db.settle_task(
                    &job.0,
                    &store::SettledTask {
                        task: *task,
                        fuel: *fuel,
                        outputs,
                        method: method
                            .map_or_else(|| "Unverified".to_owned(), |m| format!("{m:?}")),
                        payees: payees.iter().map(|(p, f)| (p.to_string(), *f)).collect(),
                    },
                )
            }
            Write::Reopened { job, task } => db.reopen_task(&job.0, *task),
            Write::Evidence { job, task, peer } => {
                match self
                    .kept_result(job, *task, Some(*peer))
                    .and_then(|k| k.signed.as_ref())
                {
                    Some(signed) => db.insert_evidence(
                        &job.0,
                        *task,
                        &peer.to_string(),
                        &signed.body,
                        &signed.signature,
                        now_ms(),
                    ),
                    None => Ok(()),
                }
            }
            Write::Record { peer, record } => db.set_reputation(
                &peer.to_string(),
                &store::Reputation {
                    verified: record.verified,
                    disagreed: record.disagreed,
                    timed_out: record.timed_out,
                    streak: record.streak,
                },
            ),
            Write::JobEnded { job, phase, error } => {
                let shell = self.jobs.get(job);
                db.end_job(
                    &job.0,
                    &store::JobEnd {
                        state: phase.as_str().into(),
                        error: error.clone(),
                        result: shell
                            .and_then(|s| s.result.as_ref())
                            .map(|p| p.display().to_string()),
                        checksum: shell.and_then(|s| s.checksum),
                        finished_at_ms: now_ms(),
                    },
                )
            }
        };
        done.map_err(|e| e.to_string())
    }

    /// What a committed step changes in the shell: results no longer
    /// needed leave, ends are timed, and what happened is logged.
    fn after_commit(&mut self, writes: &[Write<PeerId>]) {
        for w in writes {
            match w {
                Write::Settled { job, task, .. } => {
                    self.kept.remove(&(job.clone(), *task));
                }
                Write::Reopened { job, task } => {
                    tracing::warn!(target: "plexus::job", job = %job, task, "task reopened: one who vouched for it was caught");
                }
                Write::Evidence { job, task, peer } => {
                    tracing::warn!(target: "plexus::job", job = %job, task, "provider {peer} caught: its result was contradicted; excluded, its results re-verified");
                }
                Write::AttemptEnded { job, attempt, end } => match end {
                    scheduler::AttemptEnd::Failed(failure) => {
                        tracing::info!(target: "plexus::job", job = %job, task = attempt.task, attempt = attempt.attempt, "retrying: {failure}");
                    }
                    scheduler::AttemptEnd::Rejected(reason) => {
                        tracing::warn!(target: "plexus::job", job = %job, task = attempt.task, "answer rejected, its provider excluded from the job: {reason}");
                    }
                    _ => {}
                },
                Write::JobEnded { job, phase, error } => {
                    // Its end is on disk: its settled tasks are final.
                    self.settle(job);
                    self.kept.retain(|(j, _), _| j != job);
                    self.exclusions_logged.retain(|(j, _)| j != job);
                    if let Some(shell) = self.jobs.get_mut(job) {
                        shell.finished.get_or_insert_with(Instant::now);
                    }
                    match error {
                        Some(e) => {
                            tracing::warn!(target: "plexus::job", job = %job, "job {phase}: {e}")
                        }
                        None => tracing::info!(target: "plexus::job", job = %job, "job {phase}"),
                    }
                }
                Write::JobStarted { job } => {
                    self.unstarted.remove(job);
                }
                Write::Attempt { .. } | Write::Record { .. } => {}
            }
        }
    }

    /// Metrics take the change in the core's counters.
    fn count(&mut self) {
        let now = self.core.counters();
        let was = std::mem::replace(&mut self.counters, now);
        let m = &self.metrics;
        let by = |state: &'static str, n: u64| {
            if n > 0 {
                m.tasks
                    .get_or_create(&crate::metrics::StateLabel { state })
                    .inc_by(n);
            }
        };
        let dispatched = now.dispatched - was.dispatched;
        by("dispatched", dispatched);
        by("speculated", now.speculated - was.speculated);
        by("retried", now.retried - was.retried);
        by("rejected", now.rejected - was.rejected);
        by("cancelled", now.surplus_cancelled - was.surplus_cancelled);
        by("settled", now.settled - was.settled);
        m.fuel_accepted
            .inc_by(now.fuel_accepted - was.fuel_accepted);
        let verified = |outcome: &'static str, n: u64| {
            if n > 0 {
                m.verification
                    .get_or_create(&crate::metrics::OutcomeLabel { outcome })
                    .inc_by(n);
            }
        };
        for (i, outcome) in ["replicas", "spot_check", "ground_truth", "reputation"]
            .into_iter()
            .enumerate()
        {
            verified(outcome, now.accepted_by[i] - was.accepted_by[i]);
        }
        verified(
            "ground_truth_run",
            now.ground_truth_runs - was.ground_truth_runs,
        );
        verified("reopened", now.reopened - was.reopened);
        verified("caught", now.caught - was.caught);
        if dispatched > 0 {
            // The core sums the waits; each execution of the step is
            // observed at their mean.
            let waited_s =
                (now.queued_ms_total - was.queued_ms_total) as f64 / dispatched as f64 / 1000.0;
            for _ in 0..dispatched.min(types::limits::BATCH_TASKS_MAX as u64) {
                m.dispatch_latency.observe(waited_s);
            }
        }
    }

    // ---- events from the node -------------------------------------------

    /// A connected provider's offer (new, or replacing its last).
    pub fn on_offer(
        &mut self,
        peer: PeerId,
        offer: Offer,
        rtt: Option<Duration>,
        network: Option<String>,
    ) {
        self.step(Input::Offer {
            peer,
            offer,
            rtt_us: rtt.map(|d| d.as_micros() as u64),
            network,
        });
    }

    /// A provider disconnected: its executions out are lost, its offer gone.
    pub fn on_disconnect(&mut self, peer: PeerId) {
        if self.core.in_flight(&peer) > 0 {
            tracing::info!(target: "plexus::job", %peer, "provider gone: its tasks are re-queued");
        }
        self.step(Input::PeerGone { peer });
    }

    /// Time passed: deadlines, backoffs, stragglers, expiries, explanations.
    pub fn tick(&mut self) {
        self.step(Input::Tick);
    }

    pub fn on_completion(&mut self, completion: Completion) {
        match completion {
            Completion::Tasks {
                request,
                peer,
                done,
            } => {
                let sent = self.sent_at.remove(&request);
                let Some(job) = self.core.request_job(request).cloned() else {
                    return; // given up on already: a late answer is ignored
                };
                let mut answers = Vec::with_capacity(done.len());
                let mut failed = None;
                for (attempt, d) in done {
                    let answer = match d {
                        TaskDone::Ok(checked) => {
                            if let Some(at) = sent {
                                Metrics::observe(&self.metrics.task_latency, at.elapsed());
                            }
                            self.keep(&job, attempt.task, Some(peer), checked.kept);
                            Answer::Result(checked.reported)
                        }
                        TaskDone::Failed(failure) => {
                            failed = Some(failure.to_string());
                            Answer::Failed(failure)
                        }
                        TaskDone::Rejected(reason) => Answer::Rejected { reason },
                    };
                    answers.push((attempt, answer));
                }
                self.step(Input::Answers {
                    request,
                    peer,
                    answers,
                });
                if let Some(reason) = failed {
                    let why = format!("failed attempts, the last: {reason}");
                    self.log_exclusion(&job, peer, &why);
                }
            }
            Completion::Local { job, task, result } => {
                let result = result.map(|checked| {
                    self.keep(&job, task, None, checked.kept);
                    checked.reported
                });
                self.step(Input::Local { job, task, result });
            }
            Completion::Assembled { job, result } => {
                let result = result.map(|(path, checksum)| {
                    if let Some(shell) = self.jobs.get_mut(&job) {
                        shell.result = path;
                        shell.checksum = checksum;
                    }
                });
                self.step(Input::Assembled { job, result });
            }
        }
    }

    /// Logs, once, that the core has left `peer` out of a running job.
    fn log_exclusion(&mut self, job: &JobId, peer: PeerId, why: &str) {
        let excluded = self
            .core
            .job(job)
            .is_some_and(|v| v.phase() == JobPhase::Running && v.is_excluded(&peer));
        if excluded && self.exclusions_logged.insert((job.clone(), peer)) {
            tracing::warn!(target: "plexus::job", job = %job, "provider {peer} excluded from the job after {why}");
        }
    }

    /// Holds a result the core is about to hear of (replacing an earlier
    /// one of the same provider for the task).
    fn keep(&mut self, job: &JobId, task: u64, from: Option<PeerId>, kept: Kept) {
        let held = self.kept.entry((job.clone(), task)).or_default();
        held.retain(|(p, _)| *p != from);
        held.push((from, kept));
    }

    fn kept_result(&self, job: &JobId, task: u64, from: Option<PeerId>) -> Option<&Kept> {
        self.kept
            .get(&(job.clone(), task))?
            .iter()
            .find(|(p, _)| *p == from)
            .map(|(_, k)| k)
    }

    // ---- what the API reads ---------------------------------------------

    pub fn status(&self, id: &str) -> Option<JobStatus> {
        let id = JobId(id.to_owned());
        let shell = self.jobs.get(&id)?;
        if let Some(recorded) = &shell.recorded {
            return Some(recorded.clone());
        }
        let view = self.core.job(&id)?;
        Some(status_of(&id, shell, &view))
    }

    /// Whether the job has ended (completed, failed or cancelled); None if
    /// this node does not hold it.
    pub fn has_ended(&self, id: &str) -> Option<bool> {
        let id = JobId(id.to_owned());
        let shell = self.jobs.get(&id)?;
        if shell.recorded.is_some() {
            return Some(true);
        }
        Some(self.core.job(&id).is_none_or(|v| v.phase().has_ended()))
    }

    pub fn list(&self) -> Vec<JobStatus> {
        self.order
            .iter()
            .filter_map(|id| self.status(&id.0))
            .collect()
    }

    /// What verification has recorded of a provider.
    pub fn record(&self, peer: &PeerId) -> Record {
        self.core.record(peer)
    }

    /// Stops a job: nothing more is sent, results still out are ignored,
    /// providers stop what they hold of it.
    pub fn cancel(&mut self, id: &str) -> Result<JobStatus, NodeError> {
        let status = self
            .status(id)
            .ok_or_else(|| NodeError::UnknownJob(id.to_owned()))?;
        if status.state != JobPhase::Running {
            return Err(NodeError::Conflict(format!(
                "job {id} is {} and cannot be cancelled",
                status.state
            )));
        }
        self.metrics
            .tasks
            .get_or_create(&crate::metrics::StateLabel { state: "cancelled" })
            .inc_by(status.tasks_total - status.tasks_done);
        self.step(Input::Cancel {
            job: JobId(id.to_owned()),
        });
        self.status(id)
            .ok_or_else(|| NodeError::UnknownJob(id.to_owned()))
    }

    /// A page of a job's tasks: where each one stands.
    pub fn tasks(&self, id: &str, from: u64, limit: u64) -> Option<Vec<TaskInfo>> {
        let id = JobId(id.to_owned());
        let shell = self.jobs.get(&id)?;
        let total = shell.job.task_count();
        let end = from.saturating_add(limit.min(TASKS_PAGE_MAX)).min(total);
        let range = from.min(end)..end;
        if let Some(view) = self.core.job(&id).filter(|_| shell.recorded.is_none()) {
            return Some(
                range
                    .filter_map(|index| {
                        let t = view.task(index)?;
                        let state = if t.settled {
                            "settled"
                        } else if !t.running_on.is_empty() {
                            "running"
                        } else {
                            "pending"
                        };
                        let method = match t.method {
                            Some(m) => Some(format!("{m:?}")),
                            None => t.settled.then(|| "Unverified".to_owned()),
                        };
                        Some(TaskInfo {
                            index,
                            state: state.into(),
                            running_on: t.running_on.iter().map(|p| p.to_string()).collect(),
                            attempts: t.attempts,
                            method,
                        })
                    })
                    .collect(),
            );
        }
        // An ended job from before this start: as the database has it.
        let settled: HashMap<u64, String> = (self.db.settled_tasks(&id.0).ok()?)
            .into_iter()
            .map(|t| (t.task, t.method))
            .collect();
        let attempts: HashMap<u64, u32> = self.db.last_attempts(&id.0).ok()?.into_iter().collect();
        Some(
            range
                .map(|index| TaskInfo {
                    index,
                    state: if settled.contains_key(&index) {
                        "settled"
                    } else {
                        "pending"
                    }
                    .into(),
                    running_on: Vec::new(),
                    attempts: attempts.get(&index).copied().unwrap_or(0),
                    method: settled.get(&index).cloned(),
                })
                .collect(),
        )
    }

    /// The settled task's file the job assembles (a tile), if any.
    pub fn task_output(&self, id: &str, index: u64) -> Result<PathBuf, NodeError> {
        let shell = self
            .jobs
            .get(&JobId(id.to_owned()))
            .ok_or_else(|| NodeError::UnknownJob(id.to_owned()))?;
        if shell.job.assemble.kind != types::job::AssembleKind::TilesPng {
            return Err(NodeError::Conflict(format!(
                "job {id} does not assemble tiles"
            )));
        }
        let settled = self.db.settled_task(id, index)?.ok_or_else(|| {
            NodeError::Conflict(format!(
                "task {index} of job {id} has no accepted result yet"
            ))
        })?;
        let output = (settled.outputs.iter())
            .find(|o| o.name == shell.job.assemble.file)
            .ok_or_else(|| {
                NodeError::Conflict(format!(
                    "task {index} of job {id} has no `{}`",
                    shell.job.assemble.file
                ))
            })?;
        Ok(self.blobs.path(&output.hash))
    }

    // ---- carrying out ---------------------------------------------------

    /// A committed request, queued for [`Requester::flush`].
    fn plan_send(
        &mut self,
        request: RequestId,
        peer: PeerId,
        job: &JobId,
        attempts: &[Attempt],
        timeout_ms: u64,
    ) {
        let Some(shell) = self.jobs.get(job) else {
            return;
        };
        if self.outbox.len() >= OUTBOX_MAX {
            // The core times the request out at its deadline.
            tracing::error!(target: "plexus::job", job = %job, "{OUTBOX_MAX} requests wait to be sent (OUTBOX_MAX): request {request:?} dropped");
            return;
        }
        let assignments = attempts
            .iter()
            .map(|a| assignment(job, shell, a.task, a.attempt))
            .collect();
        self.outbox.push(PlannedSend {
            request,
            peer,
            assignments,
            timeout: Duration::from_millis(timeout_ms),
        });
    }

    /// Sends each committed request on a task of its own; its answers come
    /// back to the node as one completion. The node calls it after every
    /// event (after the reply, for a submission: the first tasks go out
    /// before the API's handler takes its turn).
    pub fn flush(&mut self) {
        for PlannedSend {
            request,
            peer,
            assignments,
            timeout,
        } in self.outbox.drain(..)
        {
            self.sent_at.insert(request, Instant::now());
            let (net, blobs, internal, metrics) = (
                self.net.clone(),
                self.blobs.clone(),
                self.internal.clone(),
                self.metrics.clone(),
            );
            tokio::spawn(async move {
                let keys: Vec<Attempt> = assignments
                    .iter()
                    .map(|a| Attempt {
                        task: a.task_index,
                        attempt: a.attempt,
                    })
                    .collect();
                let answers = run_remote(&net, &blobs, &metrics, peer, assignments, timeout).await;
                let done = keys.into_iter().zip(answers).collect();
                let _ = internal
                    .send(Internal::Requester(Completion::Tasks {
                        request,
                        peer,
                        done,
                    }))
                    .await;
            });
        }
    }

    /// Every task is settled: the outputs (blobs, named by the results
    /// table) are put together off the node's task.
    fn assemble(&mut self, id: JobId) {
        let Some(shell) = self.jobs.get(&id) else {
            return;
        };
        let outputs: Result<HashMap<u64, Vec<OutputFile>>, String> = self
            .db
            .settled_tasks(&id.0)
            .map(|tasks| tasks.into_iter().map(|t| (t.task, t.outputs)).collect())
            .map_err(|e| e.to_string());
        // Nothing to put together (tasks that printed nothing, no assembly):
        // the job ends here, without a trip through a blocking thread.
        let nothing_written = shell.job.assemble.kind == types::job::AssembleKind::None
            && outputs.as_ref().is_ok_and(|tasks| {
                tasks
                    .values()
                    .flatten()
                    .all(|o| o.name == sandbox::STDOUT_FILE && o.size_bytes == 0)
            });
        if nothing_written {
            self.inbox.push_back(Input::Assembled {
                job: id,
                result: Ok(()),
            });
            return;
        }
        let (spec, dir, internal, blobs) = (
            shell.job.clone(),
            shell.dir.clone(),
            self.internal.clone(),
            self.blobs.clone(),
        );
        tokio::spawn(async move {
            let result = tokio::task::spawn_blocking(move || {
                let outputs = outputs?;
                let out = dir.join("result");
                std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
                let files = |i: u64| match outputs.get(&i) {
                    Some(files) => Ok(files
                        .iter()
                        .map(|o| (o.name.clone(), blobs.path(&o.hash)))
                        .collect()),
                    None => Err("no accepted result recorded".to_owned()),
                };
                assemble::assemble_job(&spec, files, &out)
                    .map(|a| (Some(a.path), a.checksum))
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            let _ = internal
                .send(Internal::Requester(Completion::Assembled {
                    job: id,
                    result,
                }))
                .await;
        });
    }

    fn local_sandbox(&mut self, nan_canonical: bool) -> Result<Arc<Sandbox>, String> {
        let slot = &mut self.local_sandboxes[usize::from(nan_canonical)];
        if let Some(s) = slot {
            return Ok(s.clone());
        }
        let made = Arc::new(
            Sandbox::new(SandboxConfig {
                cache_dir: Some(self.data_dir.join("cache/modules")),
                parallel_compilation: false,
                nan_canonicalization: nan_canonical,
                ..SandboxConfig::default()
            })
            .map_err(|e| e.to_string())?,
        );
        *slot = Some(made.clone());
        Ok(made)
    }

    /// The ground truth: the requester runs the task in its own sandbox.
    fn run_locally(&mut self, id: JobId, task: u64) {
        let Some(nan_canonical) = self.jobs.get(&id).map(|s| s.job.canonicalize_nans) else {
            return;
        };
        let sandbox = match self.local_sandbox(nan_canonical) {
            Ok(s) => s,
            Err(e) => {
                self.inbox.push_back(Input::Local {
                    job: id,
                    task,
                    result: Err(format!("the requester's sandbox: {e}")),
                });
                return;
            }
        };
        let Some(shell) = self.jobs.get(&id) else {
            return;
        };
        tracing::info!(target: "plexus::job", job = %id, task, "results disagree: the requester runs the task itself");
        // Attempt 0 is the requester's own.
        let assignment = assignment(&id, shell, task, 0);
        let (blobs, internal) = (self.blobs.clone(), self.internal.clone());
        let work_dir = self.data_dir.join("work-local");
        tokio::spawn(async move {
            let result = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&work_dir).map_err(|e| e.to_string())?;
                let body = provider::execute(&sandbox, &blobs, &assignment, &work_dir)?;
                if let Outcome::Trapped {
                    trap: Trap::Deadline { .. },
                } = body.outcome
                {
                    return Err(format!("{}", body.outcome));
                }
                Ok(Box::new(Checked {
                    reported: scheduler::Reported {
                        claim: Claim::of(
                            &body.engine,
                            &body.outcome,
                            body.fuel_used,
                            &body.outputs,
                            &body.stderr_tail,
                        ),
                        fuel: body.fuel_used.unwrap_or(0),
                        run_ms: body.run_ms,
                        answer_bytes: 0,
                        failure: failure_of(task, &body.outcome, &body.stderr_tail),
                    },
                    kept: Kept {
                        outputs: body.outputs,
                        signed: None,
                    },
                }))
            })
            .await
            .unwrap_or_else(|e| Err(format!("panicked: {e}")));
            let _ = internal
                .send(Internal::Requester(Completion::Local {
                    job: id,
                    task,
                    result,
                }))
                .await;
        });
    }
}

impl JobShell {
    fn new(
        job: Job,
        module: BlobHash,
        program: String,
        inputs: Vec<(String, BlobHash)>,
        dir: PathBuf,
    ) -> JobShell {
        JobShell {
            job: Arc::new(job),
            module,
            program,
            inputs,
            dir,
            started: Instant::now(),
            finished: None,
            result: None,
            checksum: None,
            recorded: None,
        }
    }
}

/// What the core needs to know of a job. Spot checks are drawn from the
/// OS's randomness: no provider can predict which of its results are checked.
fn spec_of(id: &JobId, shell: &JobShell) -> Result<JobSpec, String> {
    let job = &shell.job;
    let verification = if job.verification.enabled {
        let policy = Policy {
            floor: job.verification.floor,
            replicas: job.verification.replicas,
            ..Policy::default()
        };
        policy.validate().map_err(|e| e.to_string())?;
        Some(policy)
    } else {
        None
    };
    let draw_seed = {
        use rand::TryRngCore;
        rand::rngs::OsRng
            .try_next_u64()
            .map_err(|e| format!("no randomness from the OS: {e}"))?
    };
    Ok(JobSpec {
        tasks: job.task_count(),
        requirements: job.requirements.clone(),
        limits: job.limits,
        verification,
        distinct_networks: job.verification.distinct_networks,
        draw_seed,
        assignment_bytes: assignment(id, shell, 0, 0).size_estimate(),
    })
}

fn assignment(id: &JobId, shell: &JobShell, index: u64, attempt: u32) -> TaskAssignment {
    let job = &shell.job;
    let task = job.task(index);
    TaskAssignment {
        job_id: id.0.clone(),
        task_index: index,
        attempt,
        module: shell.module,
        program: shell.program.clone(),
        inputs: shell.inputs.clone(),
        args: task.args,
        env: task.env,
        seed: task.seed,
        limits: job.limits,
        entry: job.entry.clone(),
        canonicalize_nans: job.canonicalize_nans,
    }
}

/// How a result failed (a trap, an exit code), which fails the job if it
/// is the one accepted; None for a success.
fn failure_of(task: u64, outcome: &Outcome, stderr_tail: &[u8]) -> Option<String> {
    (!outcome.is_success()).then(|| types::outcome::describe_failure(task, outcome, stderr_tail))
}

/// The job a write belongs to (None: a provider's record).
fn job_of(w: &Write<PeerId>) -> Option<&JobId> {
    match w {
        Write::JobStarted { job }
        | Write::Attempt { job, .. }
        | Write::AttemptEnded { job, .. }
        | Write::Settled { job, .. }
        | Write::Reopened { job, .. }
        | Write::Evidence { job, .. }
        | Write::JobEnded { job, .. } => Some(job),
        Write::Record { .. } => None,
    }
}

fn parse_payees(payees: &[(String, u64)]) -> Vec<(PeerId, u64)> {
    payees
        .iter()
        .filter_map(|(p, fuel)| Some((p.parse::<PeerId>().ok()?, *fuel)))
        .collect()
}

fn verification_of(shell: &JobShell, view: &scheduler::JobView<'_, PeerId>) -> VerificationStatus {
    let v = shell.job.verification;
    let Some(s) = view.summary() else {
        return VerificationStatus {
            enabled: false,
            floor: v.floor,
            replicas: v.replicas,
            summary: Summary {
                on_reputation: view.tasks_done(),
                executions: view.executions(),
                ..Summary::default()
            },
            bound: None,
        };
    };
    let providers = view.shares().count() as u64;
    let cheaters = (providers as f64 * ASSUMED_CHEATER_SHARE).round() as u64;
    let replicas = u64::from(v.replicas);
    let per_task = verify::coalition_bound(providers, cheaters, replicas);
    let bound = CoalitionBound {
        assumed_cheater_share: ASSUMED_CHEATER_SHARE,
        providers,
        cheaters,
        replicas,
        per_replicated_task: per_task,
        replicated_tasks: s.replicated_tasks,
        expected_wrong_at_most: per_task * s.replicated_tasks as f64,
    };
    VerificationStatus {
        enabled: true,
        floor: v.floor,
        replicas: v.replicas,
        summary: s.map_providers(|p| p.to_string()),
        bound: Some(bound),
    }
}

fn status_of(id: &JobId, shell: &JobShell, view: &scheduler::JobView<'_, PeerId>) -> JobStatus {
    JobStatus {
        id: id.0.clone(),
        name: shell.job.name.clone(),
        state: view.phase(),
        tasks_total: view.tasks_total(),
        tasks_done: view.tasks_done(),
        tasks_in_flight: view.in_flight(),
        retries: view.retries(),
        fuel: view.fuel(),
        budget: shell.job.requirements.budget.map(|b| b.0),
        committed: u64::try_from(view.committed_credits()).unwrap_or(u64::MAX),
        providers: view
            .shares()
            .map(|(p, s)| ProviderShare {
                peer_id: p.to_string(),
                tasks_done: s.tasks_done,
                in_flight: s.in_flight,
                fuel: s.fuel,
                busy_ms: s.busy_ms,
            })
            .collect(),
        verification: verification_of(shell, view),
        result: shell.result.as_ref().map(|p| p.display().to_string()),
        checksum: shell.checksum,
        error: view.error().map(str::to_owned),
        elapsed_s: shell
            .finished
            .unwrap_or_else(Instant::now)
            .duration_since(shell.started)
            .as_secs_f64(),
        no_match: view.no_match(),
    }
}

/// How long a cancel may wait for the provider's answer; it is a courtesy
/// (the requester has already stopped listening), so nothing waits on it.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// Tells `peer` to stop `attempts` of a job (all of them when empty).
fn send_cancel(net: &NetHandle, peer: PeerId, job_id: String, attempts: Vec<(u64, u32)>) {
    let net = net.clone();
    tokio::spawn(async move {
        for chunk in attempts
            .chunks(wire::CANCEL_ATTEMPTS_MAX)
            .map(<[_]>::to_vec)
            .chain(attempts.is_empty().then(Vec::new))
        {
            let request = TaskRequest::Cancel {
                job_id: job_id.clone(),
                attempts: chunk,
            };
            let sent = tokio::time::timeout(CANCEL_TIMEOUT, net.send_task(peer, request)).await;
            if let Ok(Ok(TaskResponse::Cancelled { count })) = sent {
                tracing::debug!(target: "plexus::job", job = %job_id, %peer, "{count} attempts cancelled");
            }
        }
    });
}

/// Sends a batch of tasks (one request, or a plain one for a single
/// task), and checks each answer: its signed result against what was
/// asked, its outputs fetched into the blob store.
async fn run_remote(
    net: &NetHandle,
    blobs: &Arc<BlobStore>,
    metrics: &Metrics,
    peer: PeerId,
    assignments: Vec<TaskAssignment>,
    timeout: Duration,
) -> Vec<TaskDone> {
    let all = |done: &dyn Fn() -> TaskDone| assignments.iter().map(|_| done()).collect();
    let request = match assignments.as_slice() {
        [one] => TaskRequest::Run(one.clone()),
        _ => TaskRequest::RunBatch(assignments.clone()),
    };
    // A provider that takes a task and never answers costs at most one
    // attempt timeout, then the task goes elsewhere.
    let response = match tokio::time::timeout(timeout, net.send_task(peer, request)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let reason = e.to_string();
            return all(&|| {
                TaskDone::Failed(Failure::Error {
                    reason: reason.clone(),
                })
            });
        }
        Err(_) => return all(&|| TaskDone::Failed(Failure::TimedOut)),
    };
    let answers = match response {
        TaskResponse::Batch(answers) if assignments.len() > 1 => answers,
        // A refusal of the whole request is back-pressure, not a fault.
        TaskResponse::Refused { reason } => {
            return all(&|| {
                TaskDone::Failed(Failure::Refused {
                    reason: reason.clone(),
                })
            });
        }
        answer if assignments.len() == 1 => vec![answer],
        _ => {
            return all(&|| {
                TaskDone::Rejected(format!("{peer} answered a batch with a single answer"))
            });
        }
    };
    if answers.len() != assignments.len() {
        let reason = format!(
            "{peer} answered {} of a batch of {} tasks",
            answers.len(),
            assignments.len()
        );
        return all(&|| TaskDone::Rejected(reason.clone()));
    }
    let mut done = Vec::with_capacity(answers.len());
    for (expected, answer) in assignments.iter().zip(answers) {
        done.push(check_answer(net, blobs, metrics, peer, expected, answer).await);
    }
    done
}

/// One task's answer: the signed result checked against the assignment,
/// its inline outputs stored, the others fetched.
async fn check_answer(
    net: &NetHandle,
    blobs: &Arc<BlobStore>,
    metrics: &Metrics,
    peer: PeerId,
    expected: &TaskAssignment,
    response: TaskResponse,
) -> TaskDone {
    let retry = |reason: String| TaskDone::Failed(Failure::Error { reason });
    let signed = match response {
        TaskResponse::Done(signed, inline) => {
            // Inline outputs go to the store like fetched blobs: by hash,
            // refused when the bytes do not match.
            for output in inline {
                if blobs.contains(&output.hash) {
                    continue;
                }
                // The store's writer checks the bytes against the hash,
                // as for a fetched blob.
                let stored = blobs.writer().and_then(|mut w| {
                    w.write(&output.bytes)?;
                    w.finish(&output.hash)
                });
                match stored {
                    Ok(()) => {}
                    Err(e @ store::StoreError::HashMismatch { .. }) => {
                        return TaskDone::Rejected(format!("inline output from {peer}: {e}"));
                    }
                    Err(e) => return retry(format!("store an inline output: {e}")),
                }
            }
            signed
        }
        // A refusal is back-pressure (busy, limits), not a fault.
        TaskResponse::Refused { reason } => {
            return TaskDone::Failed(Failure::Refused { reason });
        }
        TaskResponse::Failed { reason } => {
            return retry(format!("provider could not run it: {reason}"));
        }
        TaskResponse::Cancelled { .. } | TaskResponse::Batch(_) => {
            return TaskDone::Rejected(format!(
                "{peer} answered a task with another kind of answer"
            ));
        }
    };
    let body = match signed.verify(&peer) {
        Ok(b) => b,
        Err(e) => return TaskDone::Rejected(format!("result from {peer}: {e}")),
    };
    if let Err(e) = wire::check_binding(expected, &body) {
        return TaskDone::Rejected(format!("from {peer}: {e}"));
    }
    // The wall clock is the one thing a result may not be compared on.
    if let Outcome::Trapped {
        trap: Trap::Deadline { .. },
    } = body.outcome
    {
        return retry(format!("{peer}: {}", body.outcome));
    }
    for output in &body.outputs {
        if !types::job::is_file_name(output.name.split('/').next_back().unwrap_or(""))
            || output.name.contains("..")
        {
            return TaskDone::Rejected(format!("output name {:?} from {peer}", output.name));
        }
        match blobs::fetch(net, blobs, metrics, peer, output.hash).await {
            Ok(()) => {}
            Err(blobs::FetchError::Mismatch(e)) => {
                return TaskDone::Rejected(format!("output {}: {e}", output.name));
            }
            Err(e) => return retry(format!("output {}: {e}", output.name)),
        }
    }
    let claim = Claim::of(
        &body.engine,
        &body.outcome,
        body.fuel_used,
        &body.outputs,
        &body.stderr_tail,
    );
    let answer_bytes = body.size_estimate();
    TaskDone::Ok(Box::new(Checked {
        reported: scheduler::Reported {
            claim,
            fuel: body.fuel_used.unwrap_or(0),
            run_ms: body.run_ms,
            answer_bytes,
            failure: failure_of(expected.task_index, &body.outcome, &body.stderr_tail),
        },
        kept: Kept {
            outputs: body.outputs,
            signed: Some(signed),
        },
    }))
}
