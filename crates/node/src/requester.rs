//! The requester side: jobs, their tasks, dispatch under a credit window per
//! provider (its slots plus a little prefetch, so faster providers take more),
//! re-queueing on failure or disconnect, verification of results, output
//! collection and assembly.
//!
//! What to replicate, what to accept and whom to exclude is decided by the
//! pure `verify` crate; this file carries out its actions: it dispatches the
//! executions it asks for, runs a task itself when results disagree, keeps
//! the evidence, and persists each provider's record.

use crate::{Internal, Metrics, NodeError, blobs, now_ms, provider};
use market::{Mismatch, Needs, NoMatch};
use net::wire::{self, Offer, SignedResult, TaskAssignment, TaskRequest, TaskResponse};
use net::{NetHandle, PeerId};
use sandbox::{Sandbox, SandboxConfig};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::BlobStore;
use tokio::sync::mpsc;
use types::{BlobHash, Failure, Job, JobPhase, ModuleSource, Outcome, OutputFile, RequestId, Trap};
use verify::{Action, Claim, JobVerifier, Method, Policy, Record, Summary};

/// Requests sent to a provider beyond its slots, so it never waits for work.
const PREFETCH_PER_PROVIDER: u32 = 1;
/// About how much work one request carries: short tasks are batched up to
/// this (and BATCH_TASKS_MAX), by the job's run times so far. A request's
/// round trip costs about half a millisecond; a few milliseconds of work
/// make that small without making batches long.
const BATCH_TARGET: Duration = Duration::from_millis(5);
/// A batch takes at most 1/this of what is left per slot.
const BATCH_SHARES_PER_SLOT: usize = 4;
/// Attempts of one task that end without a result before the job fails.
const ATTEMPTS_MAX: u32 = 5;
/// Attempts of one task lost with their provider (a disconnection) before
/// they count as failures too.
const LOST_ATTEMPTS_MAX: u32 = 20;
/// Time an attempt may take beyond the task's own deadline (blob fetches, queueing).
const ATTEMPT_MARGIN: Duration = Duration::from_secs(30);
/// How much slower than its benchmark a provider may run a task (load,
/// a busier machine) before its attempt counts as lost.
const BENCHMARK_SLACK: f64 = 4.0;
/// A failed task waits this long before its next attempt, doubling with
/// each failure up to RETRY_BACKOFF_MAX.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Failed attempts a provider may have in one job before it is left out of it.
const FAILURES_BEFORE_EXCLUSION: u32 = 3;
/// Jobs kept by one node (finished ones included).
const JOBS_MAX: usize = 1024;
/// Finished jobs that leave memory at once when JOBS_MAX is reached (their
/// records stay in the database): one shift of the list per this many
/// submissions, not one per submission.
const JOBS_EVICTED_AT_ONCE: usize = JOBS_MAX / 4;
/// Queued executions one provider's turn looks through for one it may run:
/// a replica must skip the providers that already hold its task.
const PENDING_SCAN_MAX: usize = 64;
/// A job's straggler gets a copy on an idle provider once it has run this
/// many times the job's median execution, and at least SPECULATE_AFTER_MIN.
const SPECULATE_FACTOR: u32 = 2;
const SPECULATE_AFTER_MIN: Duration = Duration::from_millis(500);
/// Execution times a job remembers for its median.
const DURATIONS_KEPT: usize = 64;
/// Most tasks one page of `GET /api/jobs/{id}/tasks` lists.
pub const TASKS_PAGE_MAX: u64 = 10_000;
/// The cheater share assumed when `job status` states what a coalition
/// holding every replica of a task could pass.
const ASSUMED_CHEATER_SHARE: f64 = 0.2;

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobSubmission {
    /// The job file's name, for error messages.
    pub job_file: String,
    pub job_toml: String,
    /// Where the job file's relative paths start (module, inputs).
    pub base_dir: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
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

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerificationStatus {
    pub enabled: bool,
    pub floor: f64,
    pub replicas: u8,
    /// How each result was established (by_replicas, by_spot_check,
    /// by_ground_truth, on_reputation), what was found (disagreements,
    /// reverified, executions, ground_truth_runs, replicated_tasks) and the
    /// providers caught (excluded: their results void, their offers ignored).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub summary: Summary<String>,
    pub bound: Option<CoalitionBound>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobStatus {
    pub id: String,
    pub name: String,
    /// running, assembling, completed, failed or cancelled.
    #[schema(value_type = String)]
    pub state: JobPhase,
    pub tasks_total: u64,
    pub tasks_done: u64,
    pub tasks_in_flight: u64,
    pub retries: u64,
    /// Fuel of the accepted result of each task, summed: the job's work.
    pub fuel: u64,
    pub providers: Vec<ProviderShare>,
    pub verification: VerificationStatus,
    pub result: Option<String>,
    pub checksum: Option<u64>,
    pub error: Option<String>,
    pub elapsed_s: f64,
    /// While the job waits with nothing out: the offers its last dispatch
    /// saw, counted per reason none of them could take a task
    /// (offers_seen, expired, price, memory, engine, record, excluded, busy).
    #[schema(value_type = Option<Object>)]
    pub no_match: Option<NoMatch>,
}

pub(crate) enum Completion {
    /// The answers of one request to a provider: (task, attempt, answer).
    Tasks {
        job: String,
        peer: PeerId,
        done: Vec<(u64, u32, TaskDone)>,
    },
    /// The requester's own run of a task whose results disagreed.
    Local {
        job: String,
        index: u64,
        result: Result<Box<Reported>, String>,
    },
    Assembled {
        job: String,
        /// The result's path (none when the tasks wrote nothing) and checksum.
        result: Result<(Option<PathBuf>, Option<u64>), String>,
    },
}

/// A result, checked for its signature and binding, its outputs fetched
/// into the blob store.
pub(crate) struct Reported {
    claim: Claim,
    outcome: Outcome,
    outputs: Vec<OutputFile>,
    fuel: u64,
    run_ms: u64,
    stderr_tail: Vec<u8>,
    /// Its share of a batch's answer, as the provider estimates it
    /// (`ResultBody::size_estimate`); 0 for the requester's own runs.
    answer_bytes: u64,
    /// Kept until the task is settled: evidence if it is contradicted.
    signed: Option<SignedResult>,
}

pub(crate) enum TaskDone {
    Ok(Box<Reported>),
    /// This attempt gave no result; another provider may succeed.
    Failed(Failure),
    /// The provider cheated or garbled its answer: caught.
    Rejected(String),
}

struct JobState {
    id: String,
    job: Arc<Job>,
    module: BlobHash,
    program: String,
    inputs: Vec<(String, BlobHash)>,
    settled: Vec<bool>,
    /// Fuel of each settled task's accepted result.
    task_fuel: Vec<u64>,
    /// Executions handed out per task: each attempt number is used once.
    attempts: Vec<u32>,
    /// Attempts per task that ended without a result.
    failed: Vec<u32>,
    /// Attempts per task lost with their provider (it disconnected).
    lost: Vec<u32>,
    /// Why each failed attempt failed (at most ATTEMPTS_MAX per task).
    failure_reasons: HashMap<u64, Vec<String>>,
    /// Failed tasks wait until then before their next attempt (backoff).
    not_before: HashMap<u64, Instant>,
    /// Executions out: (task, attempt) → whom, in which request, since when.
    running: HashMap<(u64, u32), Out>,
    /// Executions wanted (a task index may appear once per replica wanted).
    pending: VecDeque<(u64, Instant)>,
    /// Results waiting for their task to be settled.
    reported: HashMap<(u64, PeerId), Reported>,
    /// Tasks given a speculative copy (one each).
    speculated: HashSet<u64>,
    /// The last execution times (send to checked result), for the median.
    durations: VecDeque<Duration>,
    /// Mean run time of a task in the sandbox so far (providers' figures,
    /// smoothed): how many go in one request. None until the first result.
    task_ms: Option<f64>,
    /// The longest run time seen lately (slowly forgotten).
    task_ms_longest: f64,
    /// The largest estimated size of one result in an answer so far.
    answer_bytes_max: u64,
    /// The requester's own runs, waiting to be applied.
    local: HashMap<u64, Reported>,
    verifier: Option<JobVerifier<PeerId>>,
    done: u64,
    retries: u64,
    fuel: u64,
    shares: BTreeMap<PeerId, ProviderShare>,
    /// Providers left out of this job after repeated failures.
    excluded: HashSet<PeerId>,
    /// Why no offer took its tasks at the last dispatch, while none did.
    no_match: Option<NoMatch>,
    failures: HashMap<PeerId, u32>,
    phase: JobPhase,
    /// Whether its end is written to the database.
    recorded: bool,
    result: Option<PathBuf>,
    checksum: Option<u64>,
    error: Option<String>,
    started: Instant,
    finished: Option<Instant>,
    dir: PathBuf,
}

impl JobState {
    /// Completed, failed or cancelled: nothing more will happen to it.
    fn has_ended(&self) -> bool {
        self.phase.has_ended()
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        id: String,
        job: Job,
        module: BlobHash,
        program: String,
        inputs: Vec<(String, BlobHash)>,
        verifier: Option<JobVerifier<PeerId>>,
        dir: PathBuf,
        started: Instant,
    ) -> JobState {
        let n = job.task_count() as usize;
        let now = Instant::now();
        JobState {
            id,
            job: Arc::new(job),
            module,
            program,
            inputs,
            settled: vec![false; n],
            task_fuel: vec![0; n],
            attempts: vec![0; n],
            failed: vec![0; n],
            lost: vec![0; n],
            failure_reasons: HashMap::new(),
            not_before: HashMap::new(),
            running: HashMap::new(),
            pending: (0..n as u64).map(|i| (i, now)).collect(),
            reported: HashMap::new(),
            speculated: HashSet::new(),
            durations: VecDeque::new(),
            task_ms: None,
            task_ms_longest: 0.0,
            answer_bytes_max: 0,
            local: HashMap::new(),
            verifier,
            done: 0,
            retries: 0,
            fuel: 0,
            shares: BTreeMap::new(),
            excluded: HashSet::new(),
            no_match: None,
            failures: HashMap::new(),
            phase: JobPhase::Running,
            recorded: false,
            result: None,
            checksum: None,
            error: None,
            started,
            finished: None,
            dir,
        }
    }

    /// What an offer must meet to take this job's tasks.
    fn needs(&self) -> Needs<'_> {
        Needs {
            requirements: &self.job.requirements,
            task_memory_bytes: self.job.limits.memory_bytes_max,
        }
    }

    fn share(&mut self, peer: PeerId) -> &mut ProviderShare {
        self.shares.entry(peer).or_insert_with(|| ProviderShare {
            peer_id: peer.to_string(),
            tasks_done: 0,
            in_flight: 0,
            fuel: 0,
            busy_ms: 0,
        })
    }
}

/// The job's verifier, when it asks for verification. Spot checks are
/// drawn from the OS's randomness: no provider can predict which of its
/// results are checked.
fn verifier_for(job: &Job) -> Result<Option<JobVerifier<PeerId>>, String> {
    if !job.verification.enabled {
        return Ok(None);
    }
    let policy = Policy {
        floor: job.verification.floor,
        replicas: job.verification.replicas,
        ..Policy::default()
    };
    policy.validate().map_err(|e| e.to_string())?;
    let draw_seed = {
        use rand::TryRngCore;
        rand::rngs::OsRng
            .try_next_u64()
            .map_err(|e| format!("no randomness from the OS: {e}"))?
    };
    Ok(Some(JobVerifier::new(job.task_count(), policy, draw_seed)))
}

/// A connected provider with an offer, as dispatch sees it.
pub(crate) struct Candidate {
    pub peer: PeerId,
    pub offer: Offer,
    /// By our clock (`market::live_until_ms`); an offer past it is seen
    /// and counted as expired, never given work.
    pub live_until_ms: u64,
    pub rtt: Option<Duration>,
    /// Its address range (IPv4 /24, IPv6 /48), when known.
    pub network: Option<String>,
}

pub(crate) struct Requester {
    data_dir: PathBuf,
    db: store::Db,
    blobs: Arc<BlobStore>,
    net: NetHandle,
    internal: mpsc::Sender<Internal>,
    jobs: Vec<JobState>,
    /// Where each job is in `jobs`: a lookup per API call and per result
    /// must not compare ids with a thousand jobs.
    job_index: HashMap<String, usize>,
    next_job: usize,
    /// Every provider's record, loaded from the database and kept in step.
    reputation: HashMap<PeerId, Record>,
    networks: HashMap<PeerId, String>,
    /// The sandboxes for the requester's own runs, made on first need
    /// (plain, NaN-canonical).
    local_sandboxes: [Option<Arc<Sandbox>>; 2],
    metrics: Arc<Metrics>,
    /// Requests dispatched while the writes are held ([`Requester::hold_writes`]),
    /// sent once their attempts are committed. At most one per provider
    /// and job per dispatch; emptied at every release.
    planned: Vec<PlannedSend>,
    /// The hash of each built-in workload submitted (as many as `guests` has).
    builtin_modules: HashMap<String, BlobHash>,
    /// Names the next request sent.
    next_request: RequestId,
}

/// An execution out with a provider.
#[derive(Clone, Copy)]
struct Out {
    peer: PeerId,
    /// The request that carried it (a batch's tasks share one).
    request: RequestId,
    sent_at: Instant,
}

/// A request to a provider whose attempts are recorded but not yet committed.
struct PlannedSend {
    job_id: String,
    peer: PeerId,
    assignments: Vec<TaskAssignment>,
    timeout: Duration,
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
        let mut reputation = HashMap::new();
        for (peer, r) in db.reputations()? {
            if let Ok(peer) = peer.parse::<PeerId>() {
                reputation.insert(
                    peer,
                    Record {
                        verified: r.verified,
                        disagreed: r.disagreed,
                        timed_out: r.timed_out,
                        streak: r.streak,
                    },
                );
            }
        }
        let mut requester = Requester {
            data_dir,
            db,
            blobs,
            net,
            internal,
            jobs: Vec::new(),
            job_index: HashMap::new(),
            next_job: 0,
            reputation,
            networks: HashMap::new(),
            local_sandboxes: [None, None],
            metrics,
            planned: Vec::new(),
            builtin_modules: HashMap::new(),
            next_request: RequestId::default(),
        };
        requester.resume()?;
        Ok(requester)
    }

    /// Takes up every job that was running when the node stopped: settled
    /// tasks keep their accepted results (never run again), executions that
    /// were out are dispatched anew, under fresh attempt numbers.
    fn resume(&mut self) -> Result<(), NodeError> {
        for record in self.db.recent_jobs(JOBS_MAX as u64)? {
            let id = record.id.clone();
            if record.end.is_some() {
                // Finished jobs are listed again, as they ended.
                if let Err(e) = self.resume_job(record) {
                    tracing::debug!(target: "plexus::job", job = %id, "a finished job is not listed: {e}");
                }
                continue;
            }
            match self.resume_job(record) {
                Ok(j) => {
                    let job = &self.jobs[j];
                    tracing::info!(target: "plexus::job", job = %id, settled = job.done, tasks = job.settled.len(), "job resumed after a restart");
                    if job.done == job.settled.len() as u64
                        && job.verifier.as_ref().is_none_or(|v| v.is_complete())
                    {
                        self.assemble(j);
                    }
                }
                Err(e) => {
                    tracing::error!(target: "plexus::job", job = %id, "cannot resume the job: {e}");
                    self.db.end_job(
                        &id,
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
        }
        Ok(())
    }

    fn resume_job(&mut self, r: store::JobRecord) -> Result<usize, String> {
        let job = Job::parse(&r.name, &r.job_toml).map_err(|e| e.to_string())?;
        if job.task_count() != r.tasks {
            return Err(format!(
                "the job file now expands to {} tasks, not {}",
                job.task_count(),
                r.tasks
            ));
        }
        // A job taken up again needs its module and inputs; a finished one
        // is only listed.
        if r.end.is_none()
            && let Some(gone) = std::iter::once(&r.module)
                .chain(r.inputs.iter().map(|(_, h)| h))
                .find(|h| !self.blobs.contains(h))
        {
            return Err(format!("blob {gone} is gone from the store"));
        }
        let mut verifier = verifier_for(&job)?;
        let elapsed = Duration::from_millis(now_ms().saturating_sub(r.submitted_at_ms));
        let started = Instant::now()
            .checked_sub(elapsed)
            .unwrap_or_else(Instant::now);
        let dir = self.data_dir.join("jobs").join(&r.id);
        let mut state = JobState::new(
            r.id.clone(),
            job,
            r.module,
            r.program,
            r.inputs,
            None,
            dir,
            started,
        );
        if let Some(end) = &r.end {
            // An end is never running: a row that says so failed to resume.
            state.phase = JobPhase::parse(&end.state)
                .filter(|p| p.has_ended())
                .unwrap_or(JobPhase::Failed);
            state.error = end.error.clone();
            state.result = end.result.as_ref().map(PathBuf::from);
            state.checksum = end.checksum;
            state.recorded = true;
            state.pending.clear();
            let ran_for =
                Duration::from_millis(end.finished_at_ms.saturating_sub(r.submitted_at_ms));
            state.finished = Some(state.started + ran_for);
        }
        if state.phase == JobPhase::Running {
            // Executions out when the node stopped will never be answered.
            state.retries = self
                .db
                .abandon_open_attempts(&r.id, "the requester restarted")
                .map_err(|e| e.to_string())?;
        }
        // Attempt numbers go on from the highest used (and count executions).
        for (task, attempt) in self.db.last_attempts(&r.id).map_err(|e| e.to_string())? {
            if let Some(a) = state.attempts.get_mut(task as usize) {
                *a = attempt;
            }
        }
        for t in self.db.settled_tasks(&r.id).map_err(|e| e.to_string())? {
            let i = t.task as usize;
            if i >= state.settled.len() || state.settled[i] {
                continue;
            }
            // An output lost from the store (a disk cleaned by hand) means
            // the task is simply run again.
            if state.phase == JobPhase::Running
                && !t.outputs.iter().all(|o| self.blobs.contains(&o.hash))
            {
                let _ = self.db.reopen_task(&r.id, t.task);
                continue;
            }
            let payees: Vec<(PeerId, u64)> = t
                .payees
                .iter()
                .filter_map(|(p, fuel)| Some((p.parse::<PeerId>().ok()?, *fuel)))
                .collect();
            if let Some(v) = &mut verifier {
                let method = verify::Method::from_name(&t.method).unwrap_or(Method::Reputation);
                v.restore_accepted(t.task, method, payees.iter().map(|(p, _)| *p).collect());
            }
            for (peer, fuel) in payees {
                let share = state.share(peer);
                share.tasks_done += 1;
                share.fuel += fuel;
            }
            state.settled[i] = true;
            state.task_fuel[i] = t.fuel;
            state.fuel += t.fuel;
            state.done += 1;
        }
        let settled = &state.settled;
        state.pending.retain(|(t, _)| !settled[*t as usize]);
        state.verifier = verifier;
        Ok(self.push_job(state))
    }

    fn push_job(&mut self, job: JobState) -> usize {
        self.job_index.insert(job.id.clone(), self.jobs.len());
        self.jobs.push(job);
        self.jobs.len() - 1
    }

    fn find_job(&self, id: &str) -> Option<usize> {
        self.job_index.get(id).copied()
    }

    /// Makes room for a job: the oldest finished ones leave memory, a batch
    /// of them at once; an error when every job kept is still running.
    fn make_room(&mut self) -> Result<(), NodeError> {
        if self.jobs.len() < JOBS_MAX {
            return Ok(());
        }
        let mut evict = JOBS_EVICTED_AT_ONCE;
        self.jobs.retain(|j| {
            let leaves = j.has_ended() && evict > 0;
            evict -= usize::from(leaves);
            !leaves
        });
        if evict == JOBS_EVICTED_AT_ONCE {
            return Err(NodeError::Job(format!(
                "this node runs {JOBS_MAX} jobs already (JOBS_MAX)"
            )));
        }
        self.job_index = (self.jobs.iter().enumerate())
            .map(|(i, j)| (j.id.clone(), i))
            .collect();
        Ok(())
    }

    pub fn submit(&mut self, s: JobSubmission) -> Result<String, NodeError> {
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
        let id = BlobHash::of(seed.as_bytes()).to_hex()[..16].to_owned();
        let n = job.task_count();
        // Made by the assembly, if the job leaves anything to assemble: three
        // directories cost a tenth of a one-task job's round trip.
        let dir = self.data_dir.join("jobs").join(&id);
        let verifier =
            verifier_for(&job).map_err(|e| NodeError::Job(format!("{}: {e}", s.job_file)))?;
        // Written before the submission is acknowledged.
        self.db.insert_job(&store::JobRecord {
            id: id.clone(),
            name: job.name.clone(),
            job_toml: s.job_toml.clone(),
            base_dir: s.base_dir.clone(),
            tasks: n,
            module,
            program: program.clone(),
            inputs: inputs.clone(),
            submitted_at_ms: now_ms(),
            end: None,
        })?;
        tracing::info!(target: "plexus::job", job = %id, name = %job.name, tasks = n, "job submitted");
        self.metrics
            .tasks
            .get_or_create(&crate::metrics::StateLabel { state: "submitted" })
            .inc_by(n);
        self.push_job(JobState::new(
            id.clone(),
            job,
            module,
            program,
            inputs,
            verifier,
            dir,
            Instant::now(),
        ));
        Ok(id)
    }

    pub fn status(&self, id: &str) -> Option<JobStatus> {
        self.find_job(id).map(|j| status_of(&self.jobs[j]))
    }

    /// Whether the job has ended (completed, failed or cancelled); None if
    /// this node does not hold it.
    pub fn has_ended(&self, id: &str) -> Option<bool> {
        self.find_job(id).map(|j| self.jobs[j].has_ended())
    }

    /// Gathers the writes that follow into one commit, up to
    /// [`Requester::release_writes`]: a submission with the attempts of
    /// its first tasks, or a result with the job's end and the next
    /// dispatch. The tasks dispatched meanwhile wait for that commit.
    /// False when no transaction could be opened: each write then commits
    /// on its own, and there is nothing to release.
    #[must_use]
    pub fn hold_writes(&mut self) -> bool {
        match self.db.begin() {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(target: "plexus::job", "cannot begin recording: {e}");
                false
            }
        }
    }

    /// Commits what [`Requester::hold_writes`] gathered, then sends the
    /// tasks dispatched meanwhile.
    pub fn release_writes(&mut self) -> Result<(), NodeError> {
        let committed = self.commit_writes();
        self.send_planned();
        committed
    }

    /// The commit of [`Requester::release_writes`] without its sends, for a
    /// caller that has something to do in between:
    /// [`Requester::send_planned`] sends them.
    /// A failed commit sends nothing: each request dispatched under the
    /// held writes is withdrawn, and its job fails naming the error.
    pub fn commit_writes(&mut self) -> Result<(), NodeError> {
        if let Err(e) = self.db.commit() {
            for planned in std::mem::take(&mut self.planned) {
                if let Some(j) = self.find_job(&planned.job_id) {
                    self.withdraw_unrecorded(
                        j,
                        planned.peer,
                        &planned.assignments,
                        &format!("{e}"),
                    );
                }
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// A request whose attempts could not be written: it is never sent
    /// (a provider must not hold an attempt the requester cannot show it
    /// gave out), its executions are no longer out, and the job fails with
    /// the error: it says why instead of carrying on without its records.
    fn withdraw_unrecorded(
        &mut self,
        j: usize,
        peer: PeerId,
        assignments: &[TaskAssignment],
        error: &str,
    ) {
        let job = &mut self.jobs[j];
        for a in assignments {
            if job.running.remove(&(a.task_index, a.attempt)).is_some()
                && let Some(s) = job.shares.get_mut(&peer)
            {
                s.in_flight = s.in_flight.saturating_sub(1);
            }
        }
        if !job.has_ended() {
            job.pending.clear();
            fail(job, format!("cannot record the attempts it sends: {error}"));
            // Where even this write fails, the job is taken up again at the
            // next start, as after a crash.
            match self.db.end_job(&job.id, &end_of(job)) {
                Ok(()) => job.recorded = true,
                Err(e) => {
                    tracing::error!(target: "plexus::job", job = %job.id, "cannot record the job's end: {e}")
                }
            }
        }
    }

    /// A job whose submission could not be recorded: failed here, and
    /// never acknowledged.
    pub fn fail_unrecorded(&mut self, id: &str, error: &NodeError) {
        if let Some(j) = self.find_job(id) {
            fail(&mut self.jobs[j], format!("cannot record the job: {error}"));
        }
    }

    pub fn list(&self) -> Vec<JobStatus> {
        self.jobs.iter().map(status_of).collect()
    }

    /// What verification has recorded of a provider.
    pub fn record(&self, peer: &PeerId) -> Record {
        self.reputation.get(peer).copied().unwrap_or_default()
    }

    /// Stops a job: nothing more is sent, results still out are ignored.
    pub fn cancel(&mut self, id: &str) -> Result<JobStatus, NodeError> {
        let j = self
            .find_job(id)
            .ok_or_else(|| NodeError::UnknownJob(id.to_owned()))?;
        let job = &mut self.jobs[j];
        if job.phase != JobPhase::Running {
            return Err(NodeError::Conflict(format!(
                "job {id} is {} and cannot be cancelled",
                status_of(job).state
            )));
        }
        job.phase = JobPhase::Cancelled;
        job.pending.clear();
        job.finished = Some(Instant::now());
        // Providers stop what they hold of it, queued or running.
        let held: Vec<((u64, u32), PeerId)> =
            job.running.drain().map(|(k, out)| (k, out.peer)).collect();
        for share in job.shares.values_mut() {
            share.in_flight = 0;
        }
        let mut peers: Vec<PeerId> = held.iter().map(|(_, p)| *p).collect();
        peers.sort();
        peers.dedup();
        for ((task, attempt), _) in &held {
            let _ = self
                .db
                .end_attempt(id, *task, *attempt, "cancelled with its job");
        }
        for peer in peers {
            send_cancel(&self.net, peer, id.to_owned(), Vec::new());
        }
        self.metrics
            .tasks
            .get_or_create(&crate::metrics::StateLabel { state: "cancelled" })
            .inc_by(job.settled.len() as u64 - job.done);
        self.db.end_job(id, &end_of(job))?;
        job.recorded = true;
        tracing::info!(target: "plexus::job", job = %id, "job cancelled");
        Ok(status_of(job))
    }

    /// A page of a job's tasks: where each one stands.
    pub fn tasks(&self, id: &str, from: u64, limit: u64) -> Option<Vec<TaskInfo>> {
        let job = &self.jobs[self.find_job(id)?];
        let mut running_on: HashMap<u64, Vec<String>> = HashMap::new();
        for ((index, _), out) in &job.running {
            running_on
                .entry(*index)
                .or_default()
                .push(out.peer.to_string());
        }
        let end = from
            .saturating_add(limit.min(TASKS_PAGE_MAX))
            .min(job.settled.len() as u64);
        Some(
            (from.min(end)..end)
                .map(|index| {
                    let i = index as usize;
                    let running = running_on.remove(&index).unwrap_or_default();
                    let state = if job.settled[i] {
                        "settled"
                    } else if !running.is_empty() {
                        "running"
                    } else {
                        "pending"
                    };
                    let method = match &job.verifier {
                        Some(v) => v.accepted(index).map(|m| format!("{m:?}")),
                        None => job.settled[i].then(|| "Unverified".to_owned()),
                    };
                    TaskInfo {
                        index,
                        state: state.into(),
                        running_on: running,
                        attempts: job.attempts[i],
                        method,
                    }
                })
                .collect(),
        )
    }

    /// The settled task's file the job assembles (a tile), if any.
    pub fn task_output(&self, id: &str, index: u64) -> Result<PathBuf, NodeError> {
        let job = &self.jobs[self
            .find_job(id)
            .ok_or_else(|| NodeError::UnknownJob(id.to_owned()))?];
        if !job.settled.get(index as usize).copied().unwrap_or(false) {
            return Err(NodeError::Conflict(format!(
                "task {index} of job {id} has no accepted result yet"
            )));
        }
        if job.job.assemble.kind != types::job::AssembleKind::TilesPng {
            return Err(NodeError::Conflict(format!(
                "job {id} does not assemble tiles"
            )));
        }
        let settled = self.db.settled_task(id, index)?;
        let output = settled
            .as_ref()
            .and_then(|t| t.outputs.iter().find(|o| o.name == job.job.assemble.file))
            .ok_or_else(|| {
                NodeError::Conflict(format!(
                    "task {index} of job {id} has no `{}`",
                    job.job.assemble.file
                ))
            })?;
        Ok(self.blobs.path(&output.hash))
    }

    /// A provider caught once is ignored from then on, in every job.
    fn is_caught(&self, peer: &PeerId) -> bool {
        self.reputation.get(peer).is_some_and(|r| r.disagreed > 0)
    }

    /// Whether any job is running: with none, dispatch has nothing to do.
    pub fn has_running_jobs(&self) -> bool {
        // Newest last: up to JOBS_MAX ended ones sit before a running one.
        self.jobs.iter().rev().any(|j| j.phase == JobPhase::Running)
    }

    /// Hands pending executions to providers with credit left, cheapest
    /// and fastest first, jobs in turn.
    pub fn dispatch(&mut self, candidates: &[Candidate]) {
        for c in candidates {
            if let Some(network) = &c.network {
                self.networks.insert(c.peer, network.clone());
            }
        }
        let now = now_ms();
        let mut ranked: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| now <= c.live_until_ms && !self.is_caught(&c.peer))
            .collect();
        ranked.sort_by_key(|c| {
            let record = self.reputation.get(&c.peer).copied().unwrap_or_default();
            let rtt_us = c.rtt.map(|d| d.as_micros() as u64);
            market::rank_key(&c.offer, is_unreliable(&record), rtt_us, c.peer)
        });
        let running: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| self.jobs[i].phase == JobPhase::Running)
            .collect();
        if running.is_empty() {
            return;
        }
        let slots_total: u32 = ranked.iter().map(|c| c.offer.slots_total).sum();
        // The credit window counts requests: each takes one slot there,
        // whatever its number of tasks. A request counts while any of its
        // tasks is out (its tasks share one RequestId, see `send_batch`):
        // one whose tasks were all settled elsewhere, or that its provider
        // holds without answering, no longer stops the provider's next.
        let mut in_flight: HashMap<PeerId, u32> = HashMap::new();
        let mut requests: HashSet<RequestId> = HashSet::new();
        for &j in &running {
            for out in self.jobs[j].running.values() {
                if requests.insert(out.request) {
                    *in_flight.entry(out.peer).or_default() += 1;
                }
            }
        }
        for c in &ranked {
            let credit = c.offer.slots_total + PREFETCH_PER_PROVIDER;
            let mut idle_rounds = 0;
            while in_flight.get(&c.peer).copied().unwrap_or(0) < credit
                && idle_rounds < running.len()
            {
                let j = running[self.next_job % running.len()];
                self.next_job = self.next_job.wrapping_add(1);
                if self.jobs[j].excluded.contains(&c.peer) || !self.meets(j, c) {
                    idle_rounds += 1;
                    continue;
                }
                let size = self.batch_size(j, slots_total);
                let mut batch = Vec::with_capacity(size);
                let mut bytes = 0;
                while batch.len() < size && bytes < wire::BATCH_BYTES_BUDGET {
                    let Some(index) = self.take_pending(j, c) else {
                        break;
                    };
                    bytes += Self::assignment(&self.jobs[j], index, 0).size_estimate();
                    batch.push(index);
                }
                if batch.is_empty() {
                    idle_rounds += 1;
                    continue;
                }
                idle_rounds = 0;
                *in_flight.entry(c.peer).or_default() += 1;
                self.send_batch(j, batch, c);
            }
        }
        self.speculate(&ranked, &running, &mut in_flight);
        // An execution no live provider may take (all hold the task, are
        // caught, or share its holders' network) falls to the requester.
        for j in running {
            let mut starved = Vec::new();
            let job = &self.jobs[j];
            for &(index, _) in job.pending.iter().take(PENDING_SCAN_MAX) {
                if job
                    .verifier
                    .as_ref()
                    .is_some_and(|v| v.needs_run(index) && v.holders(index).next().is_some())
                    && !ranked.iter().any(|c| {
                        !job.excluded.contains(&c.peer)
                            && self.meets(j, c)
                            && self.may_run(job, index, c)
                    })
                {
                    starved.push(index);
                }
            }
            for index in starved {
                let job = &mut self.jobs[j];
                job.pending.retain(|&(t, _)| t != index);
                let actions = job
                    .verifier
                    .as_mut()
                    .map(|v| v.on_no_provider(index))
                    .unwrap_or_default();
                self.apply(j, actions);
            }
        }
        self.explain_waiting(candidates, now, &in_flight);
    }

    /// Whether `c`'s offer meets job `j`'s requirements and its tasks' limits.
    fn meets(&self, j: usize, c: &Candidate) -> bool {
        self.check_needs(j, c).is_ok()
    }

    /// `market`'s verdict on `c`'s offer for job `j`, by its verified record here.
    fn check_needs(&self, j: usize, c: &Candidate) -> Result<(), Mismatch> {
        let verified = self.reputation.get(&c.peer).map_or(0, |r| r.verified);
        self.jobs[j].needs().check(&c.offer, verified)
    }

    /// A running job with work waiting and none out learns why: each offer
    /// seen, counted by the first reason it could not take a task. It is
    /// cleared as soon as one could.
    fn explain_waiting(
        &mut self,
        candidates: &[Candidate],
        now: u64,
        in_flight: &HashMap<PeerId, u32>,
    ) {
        for j in 0..self.jobs.len() {
            let job = &self.jobs[j];
            if job.phase != JobPhase::Running {
                continue;
            }
            let waiting = !job.pending.is_empty() && job.running.is_empty();
            let explained = waiting.then(|| {
                let mut seen = NoMatch::default();
                for c in candidates {
                    seen.count(self.why_not(j, c, now, in_flight));
                }
                seen
            });
            self.jobs[j].no_match = explained.filter(|seen| seen.matched() == 0);
        }
    }

    /// Why `c` cannot take a task of job `j` now, by the first reason.
    fn why_not(
        &self,
        j: usize,
        c: &Candidate,
        now: u64,
        in_flight: &HashMap<PeerId, u32>,
    ) -> Result<(), Mismatch> {
        let job = &self.jobs[j];
        if now > c.live_until_ms {
            return Err(Mismatch::Expired);
        }
        self.check_needs(j, c)?;
        if job.excluded.contains(&c.peer) || self.is_caught(&c.peer) {
            return Err(Mismatch::Excluded);
        }
        let credit = c.offer.slots_total + PREFETCH_PER_PROVIDER;
        if in_flight.get(&c.peer).copied().unwrap_or(0) >= credit {
            return Err(Mismatch::Busy);
        }
        Ok(())
    }

    /// Stragglers: once a job has nothing left to hand out, a provider with
    /// an idle slot takes a copy of the job's oldest execution still out, if
    /// it has run SPECULATE_FACTOR times the job's median. The first result
    /// to settle the task wins; the other is ignored.
    fn speculate(
        &mut self,
        ranked: &[&Candidate],
        running: &[usize],
        in_flight: &mut HashMap<PeerId, u32>,
    ) {
        for c in ranked {
            while in_flight.get(&c.peer).copied().unwrap_or(0) < c.offer.slots_total {
                let mut oldest: Option<(usize, u64, Instant)> = None;
                for &j in running {
                    let job = &self.jobs[j];
                    if job.phase != JobPhase::Running
                        || !job.pending.is_empty()
                        || job.excluded.contains(&c.peer)
                        || !self.meets(j, c)
                    {
                        continue;
                    }
                    let Some(after) = straggler_after(&job.durations) else {
                        continue;
                    };
                    for (&(index, _), &Out { peer, sent_at, .. }) in &job.running {
                        let eligible = peer != c.peer
                            && sent_at.elapsed() > after
                            && !job.speculated.contains(&index)
                            && !job.settled[index as usize]
                            && job.verifier.as_ref().is_none_or(|v| v.may_speculate(index))
                            && !job
                                .running
                                .iter()
                                .any(|(&(i, _), out)| i == index && out.peer == c.peer)
                            && self.may_run(job, index, c);
                        if eligible && oldest.is_none_or(|(_, _, at)| sent_at < at) {
                            oldest = Some((j, index, sent_at));
                        }
                    }
                }
                let Some((j, index, _)) = oldest else {
                    break;
                };
                self.jobs[j].speculated.insert(index);
                self.metrics.task("speculated");
                tracing::info!(target: "plexus::job", job = %self.jobs[j].id, task = index, provider = %c.peer, "straggler: a copy runs on an idle provider");
                *in_flight.entry(c.peer).or_default() += 1;
                self.send_batch(j, vec![index], c);
            }
        }
    }

    fn may_run(&self, job: &JobState, index: u64, c: &Candidate) -> bool {
        let Some(v) = &job.verifier else {
            return true;
        };
        if !v.may_run(index, &c.peer) {
            return false;
        }
        if !job.job.verification.distinct_networks {
            return true;
        }
        let Some(network) = &c.network else {
            return false;
        };
        !v.holders(index)
            .any(|holder| self.networks.get(holder) == Some(network))
    }

    /// The first queued execution of job `j` that `c` may run; stale
    /// requests (their task settled another way) are dropped on the way.
    fn take_pending(&mut self, j: usize, c: &Candidate) -> Option<u64> {
        let mut pos = 0;
        while pos < self.jobs[j].pending.len().min(PENDING_SCAN_MAX) {
            let (index, queued) = self.jobs[j].pending[pos];
            let job = &self.jobs[j];
            let stale = match &job.verifier {
                Some(v) => !v.needs_run(index),
                None => job.settled[index as usize],
            };
            if stale {
                self.jobs[j].pending.remove(pos);
                continue;
            }
            let waiting = job
                .not_before
                .get(&index)
                .is_some_and(|at| Instant::now() < *at);
            if !waiting && self.may_run(job, index, c) {
                self.metrics
                    .dispatch_latency
                    .observe(queued.elapsed().as_secs_f64());
                return self.jobs[j].pending.remove(pos).map(|(i, _)| i);
            }
            pos += 1;
        }
        None
    }

    fn assignment(job: &JobState, index: u64, attempt: u32) -> TaskAssignment {
        let task = job.job.task(index);
        TaskAssignment {
            job_id: job.id.clone(),
            task_index: index,
            attempt,
            module: job.module,
            program: job.program.clone(),
            inputs: job.inputs.clone(),
            args: task.args,
            env: task.env,
            seed: task.seed,
            limits: job.job.limits,
            entry: job.job.entry.clone(),
            canonicalize_nans: job.job.canonicalize_nans,
        }
    }

    /// How many tasks of job `j` one request carries: short tasks go
    /// several at once (about BATCH_TARGET of work per request), long ones
    /// alone; near a job's end, no more than an equal share of what is left
    /// per slot, so that no provider holds the tail while others idle.
    fn batch_size(&self, j: usize, slots_total: u32) -> usize {
        let job = &self.jobs[j];
        let target_ms = BATCH_TARGET.as_secs_f64() * 1000.0;
        let Some(task_ms) = job.task_ms else {
            return 1; // the first answers measure the job's tasks
        };
        // Tasks that may each take longer than a batch's worth go alone:
        // uneven tasks (a tile through the middle of a Mandelbrot) in one
        // batch would hold one slot while another idles.
        if job.task_ms_longest > target_ms {
            return 1;
        }
        let by_time = (target_ms / task_ms.max(0.05)) as usize;
        // Tasks in a batch run one after the other: a batch of uneven tasks
        // can hold much more than its share, so batches stay a small part
        // of what is left for each slot.
        let fair_share = job
            .pending
            .len()
            .div_ceil(slots_total.max(1) as usize * BATCH_SHARES_PER_SLOT);
        // A batch's answer must fit its bound (BATCH_BYTES_BUDGET): tasks
        // with long stderr tails or many outputs go fewer at a time, or
        // the provider would refuse the ones that do not fit, again and
        // again.
        let by_bytes = (wire::BATCH_BYTES_BUDGET / job.answer_bytes_max.max(1)) as usize;
        by_time
            .min(fair_share)
            .min(by_bytes)
            .clamp(1, wire::BATCH_TASKS_MAX)
    }

    /// Hands executions of job `j` to one provider in one request; each
    /// attempt is recorded before it is sent (one transaction for all).
    fn send_batch(&mut self, j: usize, indices: Vec<u64>, c: &Candidate) {
        let peer = c.peer;
        let record = self.reputation.get(&peer).copied();
        let job = &mut self.jobs[j];
        // One id for the request's tasks: dispatch counts a provider's
        // requests by it.
        let request = self.next_request.take_next();
        let now = Instant::now();
        let sent_at_ms = now_ms();
        let mut assignments = Vec::with_capacity(indices.len());
        let mut actions = Vec::new();
        let db = &self.db;
        // The request goes out only if every one of its attempts is on disk
        // (the replay defence and restore both need the attempt rows).
        let mut recorded = db.begin();
        let opened = recorded.is_ok();
        for index in indices {
            job.attempts[index as usize] += 1;
            let attempt = job.attempts[index as usize];
            job.running.insert(
                (index, attempt),
                Out {
                    peer,
                    request,
                    sent_at: now,
                },
            );
            self.metrics.task("dispatched");
            job.share(peer).in_flight += 1;
            // Attempt numbers survive a restart, so none is ever reused.
            if recorded.is_ok() {
                recorded =
                    db.insert_attempt(&job.id, index, attempt, &peer.to_string(), sent_at_ms);
            }
            assignments.push(Self::assignment(job, index, attempt));
            if let Some(v) = &mut job.verifier {
                if let Some(record) = record
                    && v.record(&peer) == Record::default()
                {
                    v.set_record(peer, record);
                }
                actions.extend(v.on_dispatch(index, peer));
            }
        }
        if opened {
            let committed = db.commit();
            recorded = recorded.and(committed);
        }
        if let Err(e) = recorded {
            // Nothing of it is sent, and the job does not carry on as if it were.
            self.withdraw_unrecorded(j, peer, &assignments, &format!("{e}"));
            return;
        }
        // Run one after the other on one slot: the batch may take the sum.
        let timeout = assignments
            .iter()
            .map(|a| attempt_timeout(&a.limits, c.offer.fuel_per_sec))
            .sum::<Duration>();
        self.planned.push(PlannedSend {
            job_id: job.id.clone(),
            peer,
            assignments,
            timeout,
        });
        // Outside held writes, the attempts above are committed already.
        if !self.db.in_transaction() {
            self.send_planned();
        }
        self.apply(j, actions);
    }

    /// Sends each planned request on a task of its own; its answers come
    /// back to the node as one completion.
    pub fn send_planned(&mut self) {
        for PlannedSend {
            job_id,
            peer,
            assignments,
            timeout,
        } in self.planned.drain(..)
        {
            let (net, blobs, internal, metrics) = (
                self.net.clone(),
                self.blobs.clone(),
                self.internal.clone(),
                self.metrics.clone(),
            );
            tokio::spawn(async move {
                let keys: Vec<(u64, u32)> = assignments
                    .iter()
                    .map(|a| (a.task_index, a.attempt))
                    .collect();
                let answers = run_remote(&net, &blobs, &metrics, peer, assignments, timeout).await;
                let done = keys
                    .into_iter()
                    .zip(answers)
                    .map(|((index, attempt), done)| (index, attempt, done))
                    .collect();
                let _ = internal
                    .send(Internal::Requester(Completion::Tasks {
                        job: job_id,
                        peer,
                        done,
                    }))
                    .await;
            });
        }
    }

    pub fn on_disconnect(&mut self, peer: PeerId) {
        for j in 0..self.jobs.len() {
            if self.jobs[j].phase != JobPhase::Running {
                continue;
            }
            let lost: Vec<(u64, u32)> = self.jobs[j]
                .running
                .iter()
                .filter(|(_, out)| out.peer == peer)
                .map(|(k, _)| *k)
                .collect();
            for (index, attempt) in lost {
                tracing::info!(target: "plexus::job", job = %self.jobs[j].id, task = index, %peer, "provider gone: task re-queued");
                self.on_task(j, index, attempt, peer, TaskDone::Failed(Failure::Lost));
            }
        }
    }

    pub fn on_completion(&mut self, completion: Completion) {
        let id = match &completion {
            Completion::Tasks { job, .. }
            | Completion::Local { job, .. }
            | Completion::Assembled { job, .. } => job.clone(),
        };
        let Some(j) = self.find_job(&id) else {
            return;
        };
        match completion {
            Completion::Tasks { peer, done, .. } => {
                let ran_ms: Vec<u64> = done
                    .iter()
                    .filter_map(|(_, _, d)| match d {
                        TaskDone::Ok(r) => Some(r.run_ms),
                        _ => None,
                    })
                    .collect();
                // The providers' own figures: they only shape batches. Whole
                // milliseconds: 0 is a task well under one.
                if let Some(&longest) = ran_ms.iter().max() {
                    let as_ms = |ms: u64| if ms == 0 { 0.1 } else { ms as f64 + 0.5 };
                    let mean =
                        ran_ms.iter().map(|&ms| as_ms(ms)).sum::<f64>() / ran_ms.len() as f64;
                    let job = &mut self.jobs[j];
                    job.task_ms = Some(job.task_ms.map_or(mean, |m| 0.8 * m + 0.2 * mean));
                    // The longest counts at once and is forgotten slowly.
                    let longest = as_ms(longest);
                    job.task_ms_longest = if longest >= job.task_ms_longest {
                        longest
                    } else {
                        0.95 * job.task_ms_longest + 0.05 * longest
                    };
                }
                // One transaction for the request's answers: attempts ended,
                // results settled.
                if let Err(e) = self.db.begin() {
                    tracing::error!(target: "plexus::job", job = %id, "cannot record results: {e}");
                }
                for (index, attempt, d) in done {
                    self.on_task(j, index, attempt, peer, d);
                }
                if let Err(e) = self.db.commit() {
                    tracing::error!(target: "plexus::job", job = %id, "cannot record results: {e}");
                }
            }
            Completion::Local { index, result, .. } => self.on_local(j, index, result),
            Completion::Assembled { result, .. } => {
                let job = &mut self.jobs[j];
                job.finished = Some(Instant::now());
                match result {
                    Ok((path, checksum)) => {
                        job.phase = JobPhase::Completed;
                        job.result = path;
                        job.checksum = checksum;
                        tracing::info!(target: "plexus::job", job = %job.id, "job completed");
                    }
                    Err(e) => fail(job, format!("assemble: {e}")),
                }
            }
        }
        let job = &mut self.jobs[j];
        if matches!(job.phase, JobPhase::Completed | JobPhase::Failed) && !job.recorded {
            match self.db.end_job(&id, &end_of(job)) {
                Ok(()) => job.recorded = true,
                Err(e) => {
                    tracing::error!(target: "plexus::job", job = %id, "cannot record the job's end: {e}")
                }
            }
        }
    }

    fn on_task(&mut self, j: usize, index: u64, attempt: u32, peer: PeerId, done: TaskDone) {
        let job = &mut self.jobs[j];
        // A late answer to an attempt already given up on is ignored.
        let Some(Out {
            peer: sent_to,
            sent_at,
            ..
        }) = job.running.get(&(index, attempt)).copied()
        else {
            return;
        };
        if sent_to != peer {
            return;
        }
        job.running.remove(&(index, attempt));
        let ended = match &done {
            TaskDone::Ok(_) => "result".to_owned(),
            TaskDone::Failed(failure) => format!("no result: {failure}"),
            TaskDone::Rejected(reason) => format!("rejected: {reason}"),
        };
        if let Err(e) = self.db.end_attempt(&job.id, index, attempt, &ended) {
            tracing::error!(target: "plexus::job", job = %job.id, task = index, "cannot record an attempt's end: {e}");
        }
        self.metrics
            .task_latency
            .observe(sent_at.elapsed().as_secs_f64());
        if matches!(done, TaskDone::Ok(_)) {
            if job.durations.len() == DURATIONS_KEPT {
                job.durations.pop_front();
            }
            job.durations.push_back(sent_at.elapsed());
        }
        if let Some(s) = job.shares.get_mut(&peer) {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
        if job.phase != JobPhase::Running {
            return;
        }
        match done {
            TaskDone::Ok(reported) => {
                if let Some(s) = job.shares.get_mut(&peer) {
                    s.busy_ms += reported.run_ms;
                }
                job.answer_bytes_max = job.answer_bytes_max.max(reported.answer_bytes);
                let Some(v) = &mut job.verifier else {
                    let fuel = reported.fuel;
                    return self.settle(j, index, *reported, vec![(peer, fuel)], "Unverified");
                };
                let actions = v.on_result(index, peer, reported.claim.clone());
                job.reported.insert((index, peer), *reported);
                self.apply(j, actions);
            }
            TaskDone::Failed(failure) => {
                let (timed_out, lost) = (failure == Failure::TimedOut, failure.is_lost());
                let reason = match &failure {
                    Failure::Lost => format!("{peer} disconnected"),
                    Failure::TimedOut => format!("no answer from {peer} in time"),
                    other => other.to_string(),
                };
                self.metrics.task("retried");
                if let Some(failure) = attempt_failed(job, index, &peer, &reason, lost) {
                    return fail(job, failure);
                }
                tracing::info!(target: "plexus::job", job = %job.id, task = index, %peer, "retrying: {reason}");
                // A provider that went away may come back (a restart, a
                // healed partition); only failures it answered count.
                // One that kept a task past its whole budget gets no more
                // of the job: each task costs at most one such wait.
                if timed_out && job.excluded.insert(peer) {
                    tracing::warn!(target: "plexus::job", job = %job.id, "provider {peer} excluded from the job: {reason}");
                }
                let failures = job.failures.entry(peer).or_default();
                *failures += u32::from(!lost);
                if *failures >= FAILURES_BEFORE_EXCLUSION && job.excluded.insert(peer) {
                    tracing::warn!(target: "plexus::job", job = %job.id, "provider {peer} excluded from the job after {FAILURES_BEFORE_EXCLUSION} failed attempts, the last: {reason}");
                }
                let actions = match &mut job.verifier {
                    Some(v) => v.on_failure(index, peer, timed_out),
                    None => {
                        job.pending.push_front((index, Instant::now()));
                        Vec::new()
                    }
                };
                self.apply(j, actions);
            }
            TaskDone::Rejected(reason) => {
                self.metrics.task("rejected");
                tracing::warn!(target: "plexus::job", job = %job.id, task = index, "provider {peer} excluded from the job, its answer rejected: {reason}");
                job.excluded.insert(peer);
                if let Some(failure) = attempt_failed(job, index, &peer, &reason, false) {
                    return fail(job, failure);
                }
                let actions = match &mut job.verifier {
                    Some(v) => v.on_misbehaviour(index, peer),
                    None => {
                        job.pending.push_front((index, Instant::now()));
                        Vec::new()
                    }
                };
                self.apply(j, actions);
            }
        }
    }

    fn on_local(&mut self, j: usize, index: u64, result: Result<Box<Reported>, String>) {
        let job = &mut self.jobs[j];
        if job.phase != JobPhase::Running {
            return;
        }
        match result {
            Ok(reported) => {
                let claim = reported.claim.clone();
                job.local.insert(index, *reported);
                let actions = match &mut job.verifier {
                    Some(v) => v.on_ground_truth(index, claim),
                    None => Vec::new(),
                };
                self.apply(j, actions);
            }
            Err(e) => fail(job, format!("the requester's own run of task {index}: {e}")),
        }
    }

    /// Carries out what the verifier decided. Exclusions go first, so the
    /// contradicted results are still at hand to keep as evidence.
    fn apply(&mut self, j: usize, actions: Vec<Action<PeerId>>) {
        let (exclusions, rest): (Vec<_>, Vec<_>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::Exclude { .. }));
        for action in exclusions.into_iter().chain(rest) {
            if self.jobs[j].phase != JobPhase::Running {
                return;
            }
            match action {
                Action::Run { task } => self.jobs[j].pending.push_front((task, Instant::now())),
                Action::RunLocally { task } => {
                    self.metrics.verified("ground_truth_run");
                    self.run_locally(j, task)
                }
                Action::Accept {
                    task,
                    claim,
                    from,
                    method,
                } => {
                    self.metrics.verified(match method {
                        Method::Replicas => "replicas",
                        Method::SpotCheck => "spot_check",
                        Method::GroundTruth => "ground_truth",
                        Method::Reputation => "reputation",
                    });
                    let job = &mut self.jobs[j];
                    let chosen = match from {
                        Some(peer) => job.reported.remove(&(task, peer)),
                        None => job.local.remove(&task),
                    };
                    let Some(chosen) = chosen else {
                        fail(job, format!("task {task}: the accepted result is missing"));
                        return;
                    };
                    // Every provider whose result agreed did the work: it is paid.
                    let mut paid: Vec<(PeerId, u64)> =
                        from.map(|p| (p, chosen.fuel)).into_iter().collect();
                    let same_task: Vec<(u64, PeerId)> = job
                        .reported
                        .keys()
                        .filter(|(t, _)| *t == task)
                        .copied()
                        .collect();
                    for key in same_task {
                        if let Some(r) = job.reported.remove(&key)
                            && r.claim == claim
                        {
                            paid.push((key.1, r.fuel));
                        }
                    }
                    self.settle(j, task, chosen, paid, &format!("{method:?}"));
                }
                Action::Reopen { task } => {
                    self.metrics.verified("reopened");
                    let job = &mut self.jobs[j];
                    let i = task as usize;
                    if let Err(e) = self.db.reopen_task(&job.id, task) {
                        tracing::error!(target: "plexus::job", job = %job.id, task, "cannot record the reopening: {e}");
                    }
                    if job.settled[i] {
                        job.settled[i] = false;
                        job.done -= 1;
                        job.fuel -= job.task_fuel[i];
                        job.task_fuel[i] = 0;
                    }
                    tracing::warn!(target: "plexus::job", job = %job.id, task, "task reopened: one who vouched for it was caught");
                }
                Action::Exclude { provider, task } => {
                    self.metrics.verified("caught");
                    let job = &mut self.jobs[j];
                    job.excluded.insert(provider);
                    tracing::warn!(target: "plexus::job", job = %job.id, task, "provider {provider} caught: its result was contradicted; excluded, its results re-verified");
                    if let Some(signed) = job
                        .reported
                        .get(&(task, provider))
                        .and_then(|r| r.signed.as_ref())
                        && let Err(e) = self.db.insert_evidence(
                            &job.id,
                            task,
                            &provider.to_string(),
                            &signed.body,
                            &signed.signature,
                            now_ms(),
                        )
                    {
                        tracing::error!(target: "plexus::job", job = %job.id, "cannot keep the evidence against {provider}: {e}");
                    }
                }
                Action::Record { provider, record } => {
                    self.reputation.insert(provider, record);
                    let stored = store::Reputation {
                        verified: record.verified,
                        disagreed: record.disagreed,
                        timed_out: record.timed_out,
                        streak: record.streak,
                    };
                    if let Err(e) = self.db.set_reputation(&provider.to_string(), &stored) {
                        tracing::error!(target: "plexus::job", "cannot record {provider}'s reputation: {e}");
                    }
                }
            }
        }
    }

    /// Makes `chosen` the task's result: its outputs go to the task's
    /// directory; a failed run fails the job.
    fn settle(
        &mut self,
        j: usize,
        index: u64,
        chosen: Reported,
        paid: Vec<(PeerId, u64)>,
        method: &str,
    ) {
        let job = &mut self.jobs[j];
        let i = index as usize;
        if job.settled[i] {
            return;
        }
        if !chosen.outcome.is_success() {
            let message =
                types::outcome::describe_failure(index, &chosen.outcome, &chosen.stderr_tail);
            return fail(job, message);
        }
        // Outputs stay in the blob store, named by the results table, until
        // assembly. Durable before it counts: a restart never runs a settled task again.
        let record = store::SettledTask {
            task: index,
            fuel: chosen.fuel,
            outputs: chosen.outputs.clone(),
            method: method.to_owned(),
            payees: paid.iter().map(|(p, f)| (p.to_string(), *f)).collect(),
        };
        if let Err(e) = self.db.settle_task(&job.id, &record) {
            return fail(job, format!("task {index}: {e}"));
        }
        for (peer, fuel) in paid {
            if let Some(s) = job.shares.get_mut(&peer) {
                s.tasks_done += 1;
                s.fuel += fuel;
            }
        }
        // Copies still out (a straggler's, a surplus replica) are not wanted.
        let surplus: Vec<(u32, PeerId)> = job
            .running
            .iter()
            .filter(|((t, _), _)| *t == index)
            .map(|((_, attempt), out)| (*attempt, out.peer))
            .collect();
        for (attempt, peer) in surplus {
            job.running.remove(&(index, attempt));
            if let Some(s) = job.shares.get_mut(&peer) {
                s.in_flight = s.in_flight.saturating_sub(1);
            }
            if let Some(v) = &mut job.verifier {
                // An accepted task asks nothing more of anyone.
                let _ = v.on_failure(index, peer, false);
            }
            let _ = self
                .db
                .end_attempt(&job.id, index, attempt, "cancelled: settled elsewhere");
            self.metrics.task("cancelled");
            send_cancel(&self.net, peer, job.id.clone(), vec![(index, attempt)]);
        }
        self.metrics.task("settled");
        self.metrics.fuel_accepted.inc_by(chosen.fuel);
        job.settled[i] = true;
        job.task_fuel[i] = chosen.fuel;
        job.fuel += chosen.fuel;
        job.done += 1;
        let complete = job.done == job.settled.len() as u64
            && job.verifier.as_ref().is_none_or(|v| v.is_complete());
        if complete {
            self.assemble(j);
        }
    }

    /// Every task is settled: the outputs (blobs, named by the results
    /// table) are put together off the node's task.
    fn assemble(&mut self, j: usize) {
        let job = &mut self.jobs[j];
        job.phase = JobPhase::Assembling;
        let outputs: Result<HashMap<u64, Vec<OutputFile>>, String> = self
            .db
            .settled_tasks(&job.id)
            .map(|tasks| tasks.into_iter().map(|t| (t.task, t.outputs)).collect())
            .map_err(|e| e.to_string());
        // Nothing to put together (tasks that printed nothing, no assembly):
        // the job ends here, without a trip through a blocking thread.
        let nothing_written = job.job.assemble.kind == types::job::AssembleKind::None
            && outputs.as_ref().is_ok_and(|tasks| {
                tasks
                    .values()
                    .flatten()
                    .all(|o| o.name == sandbox::STDOUT_FILE && o.size_bytes == 0)
            });
        if nothing_written {
            let job = job.id.clone();
            self.on_completion(Completion::Assembled {
                job,
                result: Ok((None, None)),
            });
            return;
        }
        let (spec, dir, internal, job_id, blobs) = (
            job.job.clone(),
            job.dir.clone(),
            self.internal.clone(),
            job.id.clone(),
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
                    job: job_id,
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
    fn run_locally(&mut self, j: usize, index: u64) {
        let sandbox = match self.local_sandbox(self.jobs[j].job.canonicalize_nans) {
            Ok(s) => s,
            Err(e) => return fail(&mut self.jobs[j], format!("the requester's sandbox: {e}")),
        };
        let job = &self.jobs[j];
        tracing::info!(target: "plexus::job", job = %job.id, task = index, "results disagree: the requester runs the task itself");
        // Attempt 0 is the requester's own.
        let assignment = Self::assignment(job, index, 0);
        let (blobs, internal, job_id) = (self.blobs.clone(), self.internal.clone(), job.id.clone());
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
                Ok(Box::new(Reported {
                    claim: Claim::of(
                        &body.engine,
                        &body.outcome,
                        body.fuel_used,
                        &body.outputs,
                        &body.stderr_tail,
                    ),
                    outcome: body.outcome,
                    outputs: body.outputs,
                    fuel: body.fuel_used.unwrap_or(0),
                    run_ms: body.run_ms,
                    stderr_tail: body.stderr_tail,
                    answer_bytes: 0,
                    signed: None,
                }))
            })
            .await
            .unwrap_or_else(|e| Err(format!("panicked: {e}")));
            let _ = internal
                .send(Internal::Requester(Completion::Local {
                    job: job_id,
                    index,
                    result,
                }))
                .await;
        });
    }
}

/// How long an execution may run before it counts as a straggler: a
/// multiple of the job's median, once the job has a median.
fn straggler_after(durations: &VecDeque<Duration>) -> Option<Duration> {
    if durations.is_empty() {
        return None;
    }
    let mut sorted: Vec<Duration> = durations.iter().copied().collect();
    sorted.sort();
    Some((sorted[sorted.len() / 2] * SPECULATE_FACTOR).max(SPECULATE_AFTER_MIN))
}

/// A provider whose attempts time out more than once per ten verified
/// results (past a little slack for a new one) comes after the reliable
/// ones at the same price.
fn is_unreliable(record: &Record) -> bool {
    record.timed_out * 10 > record.verified + 10
}

/// How long one attempt may take on a provider: the task's deadline, or,
/// when less, its whole fuel budget at BENCHMARK_SLACK times the provider's
/// benchmarked slowness; plus a margin for fetching blobs.
fn attempt_timeout(limits: &types::TaskLimits, fuel_per_sec: u64) -> Duration {
    let deadline = Duration::from_millis(limits.deadline_ms);
    let by_fuel = match limits.fuel {
        Some(fuel) if fuel_per_sec > 0 => {
            Duration::from_secs_f64(fuel as f64 / fuel_per_sec as f64 * BENCHMARK_SLACK)
        }
        _ => deadline,
    };
    deadline.min(by_fuel) + ATTEMPT_MARGIN
}

/// The wait before the next attempt of a task that failed `failed` times.
fn backoff(failed: u32) -> Duration {
    RETRY_BACKOFF
        .saturating_mul(1 << failed.saturating_sub(1).min(16))
        .min(RETRY_BACKOFF_MAX)
}

/// Counts a failed attempt: its reason is kept and the task backs off; past
/// ATTEMPTS_MAX, returns the job's failure naming every attempt's reason.
/// Attempts `lost` with their provider count against LOST_ATTEMPTS_MAX
/// instead: on a network of machines that come and go, a task may meet
/// several departures without being at fault.
fn attempt_failed(
    job: &mut JobState,
    index: u64,
    peer: &PeerId,
    reason: &str,
    lost: bool,
) -> Option<String> {
    let i = index as usize;
    job.retries += 1;
    if lost {
        job.lost[i] += 1;
        if job.lost[i] < LOST_ATTEMPTS_MAX {
            job.not_before.insert(index, Instant::now() + RETRY_BACKOFF);
            return None;
        }
    }
    job.failed[i] += 1;
    let reasons = job.failure_reasons.entry(index).or_default();
    if reasons.len() < ATTEMPTS_MAX as usize {
        reasons.push(format!("{peer}: {reason}"));
    }
    if job.failed[i] >= ATTEMPTS_MAX {
        let all: Vec<String> = reasons
            .iter()
            .enumerate()
            .map(|(n, r)| format!("{}) {r}", n + 1))
            .collect();
        return Some(format!(
            "task {index} failed {ATTEMPTS_MAX} attempts: {}",
            all.join("; ")
        ));
    }
    job.not_before
        .insert(index, Instant::now() + backoff(job.failed[i]));
    None
}

/// A finished job's end, as the database keeps it.
fn end_of(job: &JobState) -> store::JobEnd {
    store::JobEnd {
        state: job.phase.as_str().into(),
        error: job.error.clone(),
        result: job.result.as_ref().map(|p| p.display().to_string()),
        checksum: job.checksum,
        finished_at_ms: now_ms(),
    }
}

fn fail(job: &mut JobState, error: String) {
    tracing::warn!(target: "plexus::job", job = %job.id, "job failed: {error}");
    job.phase = JobPhase::Failed;
    job.error = Some(error);
    job.finished.get_or_insert_with(Instant::now);
}

fn verification_of(j: &JobState) -> VerificationStatus {
    let v = j.job.verification;
    let Some(verifier) = &j.verifier else {
        return VerificationStatus {
            enabled: false,
            floor: v.floor,
            replicas: v.replicas,
            summary: Summary {
                on_reputation: j.done,
                executions: j.attempts.iter().map(|&a| u64::from(a)).sum(),
                ..Summary::default()
            },
            bound: None,
        };
    };
    let s = verifier.summary();
    let providers = j.shares.len() as u64;
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

fn status_of(j: &JobState) -> JobStatus {
    JobStatus {
        id: j.id.clone(),
        name: j.job.name.clone(),
        state: j.phase,
        tasks_total: j.settled.len() as u64,
        tasks_done: j.done,
        tasks_in_flight: j.running.len() as u64,
        retries: j.retries,
        fuel: j.fuel,
        providers: j.shares.values().cloned().collect(),
        verification: verification_of(j),
        result: j.result.as_ref().map(|p| p.display().to_string()),
        checksum: j.checksum,
        error: j.error.clone(),
        elapsed_s: j
            .finished
            .unwrap_or_else(Instant::now)
            .duration_since(j.started)
            .as_secs_f64(),
        no_match: j.no_match,
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
    TaskDone::Ok(Box::new(Reported {
        claim,
        answer_bytes,
        outcome: body.outcome,
        outputs: body.outputs,
        fuel: body.fuel_used.unwrap_or(0),
        run_ms: body.run_ms,
        stderr_tail: body.stderr_tail,
        signed: Some(signed),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_may_take_its_fuel_budget_at_the_benchmarked_speed_or_the_deadline() {
        let limits = types::TaskLimits {
            fuel: Some(10_000_000_000),
            deadline_ms: 60_000,
            ..types::TaskLimits::default()
        };
        // 10 Gfuel at 5 Gfuel/s is 2 s; 4× slack is 8 s.
        assert_eq!(
            attempt_timeout(&limits, 5_000_000_000),
            Duration::from_secs(8) + ATTEMPT_MARGIN
        );
        // A slow provider is bounded by the task's deadline.
        assert_eq!(
            attempt_timeout(&limits, 1_000_000),
            Duration::from_secs(60) + ATTEMPT_MARGIN
        );
        let unmetered = types::TaskLimits {
            fuel: None,
            ..limits
        };
        assert_eq!(
            attempt_timeout(&unmetered, 5_000_000_000),
            Duration::from_secs(60) + ATTEMPT_MARGIN
        );
        assert_eq!(
            attempt_timeout(&limits, 0),
            Duration::from_secs(60) + ATTEMPT_MARGIN,
            "no benchmark"
        );
    }

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap() {
        assert_eq!(backoff(1), RETRY_BACKOFF);
        assert_eq!(backoff(2), RETRY_BACKOFF * 2);
        assert_eq!(backoff(4), RETRY_BACKOFF * 8);
        assert_eq!(backoff(40), RETRY_BACKOFF_MAX);
    }
}
