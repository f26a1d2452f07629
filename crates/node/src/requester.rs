//! The requester side: jobs, their tasks, dispatch under a credit window per
//! provider (its slots plus a little prefetch, so faster providers take more),
//! re-queueing on failure or disconnect, result checking, output collection
//! and assembly.

use crate::{Internal, NodeError, blobs};
use net::wire::{Offer, TaskAssignment, TaskRequest, TaskResponse};
use net::{NetHandle, PeerId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::BlobStore;
use tokio::sync::mpsc;
use types::{BlobHash, Job, ModuleSource, Outcome};

/// Tasks sent to a provider beyond its slots, so it never waits for work.
const PREFETCH_PER_PROVIDER: u32 = 1;
/// Attempts per task before the job fails.
const ATTEMPTS_MAX: u32 = 5;
/// Time an attempt may take beyond the task's own deadline (blob fetches, queueing).
const ATTEMPT_MARGIN: Duration = Duration::from_secs(30);
/// Failed attempts a provider may have in one job before it is left out of it.
const FAILURES_BEFORE_EXCLUSION: u32 = 3;
/// Jobs kept by one node (finished ones included).
const JOBS_MAX: usize = 1024;

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
    pub tasks_done: u64,
    pub in_flight: u64,
    pub fuel: u64,
    /// Time its sandboxes spent running this job's tasks.
    pub busy_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: String,
    pub name: String,
    /// running, assembling, completed or failed.
    pub state: String,
    pub tasks_total: u64,
    pub tasks_done: u64,
    pub tasks_in_flight: u64,
    pub retries: u64,
    pub fuel: u64,
    pub providers: Vec<ProviderShare>,
    pub result: Option<String>,
    pub checksum: Option<u64>,
    pub error: Option<String>,
    pub elapsed_s: f64,
}

pub(crate) enum Completion {
    Task {
        job: String,
        index: u64,
        attempt: u32,
        peer: PeerId,
        done: TaskDone,
    },
    Assembled {
        job: String,
        result: Result<(PathBuf, Option<u64>), String>,
    },
}

pub(crate) enum TaskDone {
    Ok {
        fuel: u64,
        run_ms: u64,
    },
    /// The task itself failed (deterministically): the job fails.
    Failed(String),
    /// This attempt failed; another provider may succeed.
    Retry(String),
    /// The provider cheated or garbled its result: retry elsewhere, and
    /// stop using it for this job.
    Rejected(String),
}

#[derive(Clone, Copy, PartialEq)]
enum Slot {
    Pending,
    InFlight { peer: PeerId },
    Done,
}

#[derive(PartialEq)]
enum State {
    Running,
    Assembling,
    Completed,
    Failed,
}

struct JobState {
    id: String,
    job: Arc<Job>,
    module: BlobHash,
    program: String,
    inputs: Vec<(String, BlobHash)>,
    slots: Vec<Slot>,
    attempts: Vec<u32>,
    pending: VecDeque<u64>,
    done: u64,
    retries: u64,
    fuel: u64,
    shares: BTreeMap<PeerId, ProviderShare>,
    excluded: HashSet<PeerId>,
    /// Failed attempts per provider; past FAILURES_BEFORE_EXCLUSION it gets no more of this job.
    failures: HashMap<PeerId, u32>,
    state: State,
    /// Whether its end is written to the database.
    recorded: bool,
    result: Option<PathBuf>,
    checksum: Option<u64>,
    error: Option<String>,
    started: Instant,
    finished: Option<Instant>,
    dir: PathBuf,
}

pub(crate) struct Requester {
    data_dir: PathBuf,
    db: store::Db,
    blobs: Arc<BlobStore>,
    net: NetHandle,
    internal: mpsc::Sender<Internal>,
    jobs: Vec<JobState>,
    next_job: usize,
}

impl Requester {
    pub fn new(
        data_dir: PathBuf,
        db: store::Db,
        blobs: Arc<BlobStore>,
        net: NetHandle,
        internal: mpsc::Sender<Internal>,
    ) -> Self {
        Requester {
            data_dir,
            db,
            blobs,
            net,
            internal,
            jobs: Vec::new(),
            next_job: 0,
        }
    }

    pub fn submit(&mut self, s: JobSubmission) -> Result<String, NodeError> {
        if self.jobs.len() >= JOBS_MAX {
            return Err(NodeError::Job(format!(
                "this node holds {JOBS_MAX} jobs already (JOBS_MAX)"
            )));
        }
        let job =
            Job::parse(&s.job_file, &s.job_toml).map_err(|e| NodeError::Job(e.to_string()))?;
        let base = PathBuf::from(&s.base_dir);
        let (program, module) = match &job.module {
            ModuleSource::Builtin(name) => {
                let bytes = guests::builtin(name)
                    .ok_or_else(|| NodeError::Job(format!("no built-in workload {name:?}")))?;
                (name.clone(), self.blobs.put_bytes(bytes)?)
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
        let dir = self.data_dir.join("jobs").join(&id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| NodeError::Job(format!("create {}: {e}", dir.display())))?;
        // Written before the submission is acknowledged.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.db
            .insert_job(&id, &job.name, &s.job_toml, &s.base_dir, n, now_ms)?;
        tracing::info!(target: "plexus::job", job = %id, name = %job.name, tasks = n, "job submitted");
        self.jobs.push(JobState {
            id: id.clone(),
            job: Arc::new(job),
            module,
            program,
            inputs,
            slots: vec![Slot::Pending; n as usize],
            attempts: vec![0; n as usize],
            pending: (0..n).collect(),
            done: 0,
            retries: 0,
            fuel: 0,
            shares: BTreeMap::new(),
            excluded: HashSet::new(),
            failures: HashMap::new(),
            state: State::Running,
            recorded: false,
            result: None,
            checksum: None,
            error: None,
            started: Instant::now(),
            finished: None,
            dir,
        });
        Ok(id)
    }

    pub fn status(&self, id: &str) -> Option<JobStatus> {
        self.jobs.iter().find(|j| j.id == id).map(status_of)
    }

    pub fn list(&self) -> Vec<JobStatus> {
        self.jobs.iter().map(status_of).collect()
    }

    /// Hands pending tasks to providers with credit left, cheapest and
    /// fastest first, jobs in turn.
    pub fn dispatch(&mut self, offers: &[(PeerId, Offer, Option<Duration>)]) {
        let mut ranked: Vec<&(PeerId, Offer, Option<Duration>)> = offers.iter().collect();
        ranked.sort_by_key(|(peer, o, rtt)| {
            (
                o.price_per_gfuel,
                std::cmp::Reverse(o.fuel_per_sec),
                rtt.unwrap_or(Duration::MAX),
                *peer,
            )
        });
        // Per-provider counts kept by each job, so dispatch costs jobs × providers, not tasks.
        let mut in_flight: HashMap<PeerId, u32> = HashMap::new();
        for job in self.jobs.iter().filter(|j| j.state == State::Running) {
            for (peer, share) in &job.shares {
                *in_flight.entry(*peer).or_default() += share.in_flight as u32;
            }
        }
        let running: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| self.jobs[i].state == State::Running)
            .collect();
        if running.is_empty() {
            return;
        }
        for (peer, offer, _) in ranked {
            let credit = offer.slots_total + PREFETCH_PER_PROVIDER;
            let mut idle_rounds = 0;
            while in_flight.get(peer).copied().unwrap_or(0) < credit && idle_rounds < running.len()
            {
                let j = running[self.next_job % running.len()];
                self.next_job = self.next_job.wrapping_add(1);
                if self.jobs[j].excluded.contains(peer) {
                    idle_rounds += 1;
                    continue;
                }
                let Some(index) = self.jobs[j].pending.pop_front() else {
                    idle_rounds += 1;
                    continue;
                };
                idle_rounds = 0;
                *in_flight.entry(*peer).or_default() += 1;
                self.send(j, index, *peer);
            }
        }
    }

    fn send(&mut self, j: usize, index: u64, peer: PeerId) {
        let job = &mut self.jobs[j];
        job.attempts[index as usize] += 1;
        let attempt = job.attempts[index as usize];
        job.slots[index as usize] = Slot::InFlight { peer };
        job.shares
            .entry(peer)
            .or_insert_with(|| ProviderShare {
                peer_id: peer.to_string(),
                tasks_done: 0,
                in_flight: 0,
                fuel: 0,
                busy_ms: 0,
            })
            .in_flight += 1;
        let task = job.job.task(index);
        let assignment = TaskAssignment {
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
        };
        let (net, blobs, internal) = (self.net.clone(), self.blobs.clone(), self.internal.clone());
        let task_dir = job.dir.join("tasks").join(index.to_string());
        let job_id = job.id.clone();
        tokio::spawn(async move {
            let done = run_remote(&net, &blobs, peer, assignment, &task_dir).await;
            let _ = internal
                .send(Internal::Requester(Completion::Task {
                    job: job_id,
                    index,
                    attempt,
                    peer,
                    done,
                }))
                .await;
        });
    }

    pub fn on_disconnect(&mut self, peer: PeerId) {
        for job in &mut self.jobs {
            if job.state != State::Running {
                continue;
            }
            for index in 0..job.slots.len() {
                if job.slots[index] == (Slot::InFlight { peer }) {
                    requeue(job, index as u64, &peer);
                    tracing::info!(target: "plexus::job", job = %job.id, task = index, %peer, "provider gone: task re-queued");
                }
            }
        }
    }

    pub fn on_completion(&mut self, completion: Completion) {
        let id = match &completion {
            Completion::Task { job, .. } | Completion::Assembled { job, .. } => job.clone(),
        };
        self.apply(completion);
        if let Some(job) = self.jobs.iter_mut().find(|j| j.id == id)
            && matches!(job.state, State::Completed | State::Failed)
            && !job.recorded
        {
            let state = if job.state == State::Completed {
                "completed"
            } else {
                "failed"
            };
            match self.db.set_job_state(&id, state, job.error.as_deref()) {
                Ok(()) => job.recorded = true,
                Err(e) => {
                    tracing::error!(target: "plexus::job", job = %id, "cannot record the job's end: {e}")
                }
            }
        }
    }

    fn apply(&mut self, completion: Completion) {
        match completion {
            Completion::Task {
                job,
                index,
                attempt,
                peer,
                done,
            } => self.on_task(&job, index, attempt, peer, done),
            Completion::Assembled { job, result } => {
                let Some(job) = self.jobs.iter_mut().find(|j| j.id == job) else {
                    return;
                };
                job.finished = Some(Instant::now());
                match result {
                    Ok((path, checksum)) => {
                        job.state = State::Completed;
                        job.result = Some(path);
                        job.checksum = checksum;
                        tracing::info!(target: "plexus::job", job = %job.id, "job completed");
                    }
                    Err(e) => fail(job, format!("assemble: {e}")),
                }
            }
        }
    }

    fn on_task(&mut self, id: &str, index: u64, attempt: u32, peer: PeerId, done: TaskDone) {
        let Some(job) = self.jobs.iter_mut().find(|j| j.id == id) else {
            return;
        };
        let i = index as usize;
        // A late answer to an attempt already re-queued is ignored.
        if job.state != State::Running
            || job.attempts[i] != attempt
            || job.slots[i] != (Slot::InFlight { peer })
        {
            return;
        }
        match done {
            TaskDone::Ok { fuel, run_ms } => {
                job.slots[i] = Slot::Done;
                job.done += 1;
                job.fuel += fuel;
                if let Some(s) = job.shares.get_mut(&peer) {
                    s.in_flight = s.in_flight.saturating_sub(1);
                    s.tasks_done += 1;
                    s.fuel += fuel;
                    s.busy_ms += run_ms;
                }
                if job.done == job.slots.len() as u64 {
                    job.state = State::Assembling;
                    let (spec, dir, internal, job_id) = (
                        job.job.clone(),
                        job.dir.clone(),
                        self.internal.clone(),
                        job.id.clone(),
                    );
                    tokio::spawn(async move {
                        let result = tokio::task::spawn_blocking(move || {
                            let out = dir.join("result");
                            std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
                            assemble::assemble_job(
                                &spec,
                                |i| dir.join("tasks").join(i.to_string()),
                                &out,
                            )
                            .map(|a| (a.path, a.checksum))
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
            }
            TaskDone::Failed(reason) => fail(job, format!("task {index} {reason}")),
            TaskDone::Retry(reason) | TaskDone::Rejected(reason)
                if job.attempts[i] >= ATTEMPTS_MAX =>
            {
                fail(
                    job,
                    format!("task {index} failed {ATTEMPTS_MAX} attempts, the last: {reason}"),
                )
            }
            TaskDone::Retry(reason) => {
                tracing::info!(target: "plexus::job", job = %job.id, task = index, %peer, "retrying: {reason}");
                let failures = job.failures.entry(peer).or_default();
                *failures += 1;
                if *failures >= FAILURES_BEFORE_EXCLUSION && job.excluded.insert(peer) {
                    tracing::warn!(target: "plexus::job", job = %job.id, "provider {peer} excluded from the job after {FAILURES_BEFORE_EXCLUSION} failed attempts, the last: {reason}");
                }
                requeue(job, index, &peer);
            }
            TaskDone::Rejected(reason) => {
                tracing::warn!(target: "plexus::job", job = %job.id, task = index, "provider {peer} excluded from the job, its result rejected: {reason}");
                job.excluded.insert(peer);
                requeue(job, index, &peer);
            }
        }
    }
}

fn requeue(job: &mut JobState, index: u64, peer: &PeerId) {
    job.slots[index as usize] = Slot::Pending;
    job.pending.push_front(index);
    job.retries += 1;
    if let Some(s) = job.shares.get_mut(peer) {
        s.in_flight = s.in_flight.saturating_sub(1);
    }
}

fn fail(job: &mut JobState, error: String) {
    tracing::warn!(target: "plexus::job", job = %job.id, "job failed: {error}");
    job.state = State::Failed;
    job.error = Some(error);
    job.finished.get_or_insert_with(Instant::now);
}

fn status_of(j: &JobState) -> JobStatus {
    let state = match j.state {
        State::Running => "running",
        State::Assembling => "assembling",
        State::Completed => "completed",
        State::Failed => "failed",
    };
    let in_flight = j
        .slots
        .iter()
        .filter(|s| matches!(s, Slot::InFlight { .. }))
        .count() as u64;
    JobStatus {
        id: j.id.clone(),
        name: j.job.name.clone(),
        state: state.into(),
        tasks_total: j.slots.len() as u64,
        tasks_done: j.done,
        tasks_in_flight: in_flight,
        retries: j.retries,
        fuel: j.fuel,
        providers: j.shares.values().cloned().collect(),
        result: j.result.as_ref().map(|p| p.display().to_string()),
        checksum: j.checksum,
        error: j.error.clone(),
        elapsed_s: j
            .finished
            .unwrap_or_else(Instant::now)
            .duration_since(j.started)
            .as_secs_f64(),
    }
}

/// Sends one task, checks the signed result against what was asked, and
/// fetches its outputs into `task_dir`.
async fn run_remote(
    net: &NetHandle,
    blobs: &Arc<BlobStore>,
    peer: PeerId,
    assignment: TaskAssignment,
    task_dir: &Path,
) -> TaskDone {
    let expected = assignment.clone();
    // A provider that takes a task and never answers costs at most its
    // deadline plus a margin for fetching blobs, then the task goes elsewhere.
    let deadline = Duration::from_millis(assignment.limits.deadline_ms) + ATTEMPT_MARGIN;
    let response =
        match tokio::time::timeout(deadline, net.send_task(peer, TaskRequest::Run(assignment)))
            .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return TaskDone::Retry(e.to_string()),
            Err(_) => {
                return TaskDone::Retry(format!(
                    "no answer from {peer} within {} s",
                    deadline.as_secs()
                ));
            }
        };
    let signed = match response {
        TaskResponse::Done(signed) => signed,
        TaskResponse::Refused { reason } => return TaskDone::Retry(format!("refused: {reason}")),
        TaskResponse::Failed { reason } => {
            return TaskDone::Retry(format!("provider could not run it: {reason}"));
        }
    };
    let body = match signed.verify(&peer) {
        Ok(b) => b,
        Err(e) => return TaskDone::Rejected(format!("result from {peer}: {e}")),
    };
    let binds = body.job_id == expected.job_id
        && body.task_index == expected.task_index
        && body.attempt == expected.attempt
        && body.module == expected.module
        && body.inputs == expected.inputs
        && body.seed == expected.seed
        && body.limits == expected.limits;
    if !binds {
        return TaskDone::Rejected(format!("result from {peer} is for another task or attempt"));
    }
    if body.outcome != (Outcome::Exited { code: 0 }) {
        let tail = String::from_utf8_lossy(&body.stderr_tail);
        let last = tail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_owned();
        let detail = if last.is_empty() {
            String::new()
        } else {
            format!(" (stderr: {last})")
        };
        return TaskDone::Failed(format!("{}{detail}", body.outcome));
    }
    let _ = std::fs::remove_dir_all(task_dir);
    if let Err(e) = std::fs::create_dir_all(task_dir) {
        return TaskDone::Retry(format!("create {}: {e}", task_dir.display()));
    }
    for output in &body.outputs {
        if !types::job::is_file_name(output.name.split('/').next_back().unwrap_or(""))
            || output.name.contains("..")
        {
            return TaskDone::Rejected(format!("output name {:?} from {peer}", output.name));
        }
        match blobs::fetch(net, blobs, peer, output.hash).await {
            Ok(()) => {}
            Err(blobs::FetchError::Mismatch(e)) => {
                return TaskDone::Rejected(format!("output {}: {e}", output.name));
            }
            Err(e) => return TaskDone::Retry(format!("output {}: {e}", output.name)),
        }
        let target = task_dir.join(&output.name);
        if let Some(parent) = target.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let source = blobs.path(&output.hash);
        if std::fs::hard_link(&source, &target).is_err()
            && let Err(e) = std::fs::copy(&source, &target)
        {
            return TaskDone::Retry(format!("output {}: {e}", output.name));
        }
    }
    TaskDone::Ok {
        fuel: body.fuel_used.unwrap_or(0),
        run_ms: body.run_ms,
    }
}
