//! The requester's core: which executions go to which provider and when,
//! under a credit window per provider; batching; retries with backoff;
//! exclusion; speculative copies of stragglers; verification (through
//! `verify`) and settlement; the end of a job.
//!
//! *Invariant:* pure. No I/O, no clock, no threads, no global randomness:
//! time arrives as `now_ms` with each [`Input`], randomness as seeds in the
//! input, and every decision leaves as an [`Action`]. The shell (the node,
//! or the simulation) commits every [`Action::Persist`] of one step in one
//! transaction **and only then** carries out the step's sends; when the
//! commit fails it sends nothing and tells the core ([`Input::Unrecorded`]).
//! A restart rebuilds the core from the persisted writes alone
//! ([`Input::Restore`]).
//!
//! *Cost:* one result costs O(log offers): live offers are indexed by rank
//! in `market::Book`, the providers with credit left in an idle set beside
//! it, attempts by request, stragglers in a heap per job, request deadlines
//! in a heap. Only explanations of a waiting job and the search for an
//! execution no provider may take pass over every offer, on a tick.

mod job;
mod knobs;
#[cfg(test)]
mod tests;

pub use job::{JobView, Share, TaskStanding};
pub use knobs::Knobs;

use job::{JobCore, Out};
use market::{Book, Mismatch, NoMatch, RankKey};
use rand::Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use types::{Attempt, Failure, JobId, JobPhase, Offer, Requirements, TaskLimits};
use verify::{Claim, JobVerifier, Method, Policy, Record};

/// Jobs one core holds at once, ended ones included until the shell
/// forgets them ([`Scheduler::forget`]).
pub const JOBS_MAX: usize = 1024;
/// Stragglers looked at for one idle provider: the oldest that it may take.
const STRAGGLERS_SCAN_MAX: usize = 8;
/// A replica is drawn among the providers' turns only when more than this
/// many offers are live; with fewer, the next that may run it takes it.
const REPLICA_SPREAD_MIN: usize = 4;
/// Idle providers looked at for a free slot for one straggler's copy.
const TAKERS_SCAN_MAX: usize = 64;
/// Failure reasons kept per task, for the job's error when it gives up.
const FAILURE_REASONS_KEPT: usize = 8;

/// What the core needs to know of a job (the rest, module and inputs, is
/// the shell's).
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    pub tasks: u64,
    pub requirements: Requirements,
    pub limits: TaskLimits,
    /// None: every result accepted as it comes (`verify = "none"`).
    pub verification: Option<Policy>,
    /// Replicas of one task never go to providers of one address range.
    pub distinct_networks: bool,
    /// Drives the spot-check draws; the node takes it from the OS, so
    /// providers cannot predict which results are checked.
    pub draw_seed: u64,
    /// About the encoded size of one task's assignment, for the batch budget.
    pub assignment_bytes: u64,
}

/// A result, checked by the shell (signature, binding, outputs fetched),
/// reduced to what the core decides on.
#[derive(Clone, Debug, PartialEq)]
pub struct Reported {
    pub claim: Claim,
    pub fuel: u64,
    /// Time its sandbox ran, by the provider's figure: shapes batches only.
    pub run_ms: u64,
    /// Its share of a batch's answer, as the provider estimates it.
    pub answer_bytes: u64,
    /// None: the task succeeded. Some: how it failed (a trap, an exit
    /// code), which fails the job if this result is the one accepted.
    pub failure: Option<String>,
}

/// How one attempt of a request ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Result(Reported),
    Failed(Failure),
    /// Not a result at all (a bad signature, a result bound to another
    /// task, outputs that do not match their hashes): the provider is caught.
    Rejected {
        reason: String,
    },
}

/// A task settled before a restart, as the writes recorded it.
#[derive(Clone, Debug, PartialEq)]
pub struct SettledTask<P> {
    pub task: u64,
    pub fuel: u64,
    /// None: accepted unverified.
    pub method: Option<Method>,
    pub payees: Vec<(P, u64)>,
}

/// What a restart finds of a job in the persisted writes.
#[derive(Clone, Debug, PartialEq)]
pub struct Restored<P> {
    pub settled: Vec<SettledTask<P>>,
    /// The highest attempt number recorded per task (sent or not answered):
    /// the next attempt of each takes the next number.
    pub attempts_used: Vec<(u64, u32)>,
    /// Attempts that ended without a result counting as a retry
    /// ([`AttemptEnd::counts_as_retry`]), so the job's count goes on.
    pub retries: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Input<P> {
    Submit {
        job: JobId,
        spec: JobSpec,
    },
    /// A job taken up again after a restart, from its persisted writes.
    Restore {
        job: JobId,
        spec: JobSpec,
        restored: Restored<P>,
    },
    /// A provider's offer (new or replacing its last).
    Offer {
        peer: P,
        offer: Offer,
        rtt_us: Option<u64>,
        network: Option<String>,
    },
    /// The answers to one request, in any order, any subset.
    Answers {
        request: RequestId,
        peer: P,
        answers: Vec<(Attempt, Answer)>,
    },
    /// The requester's own run of a task whose results disagreed.
    Local {
        job: JobId,
        task: u64,
        result: Result<Reported, String>,
    },
    /// A provider disconnected: its attempts are lost, its offer withdrawn.
    PeerGone {
        peer: P,
    },
    Cancel {
        job: JobId,
    },
    Assembled {
        job: JobId,
        result: Result<(), String>,
    },
    /// The shell could not commit the writes of a step: these requests were
    /// not sent and these jobs cannot go on as if they were recorded.
    Unrecorded {
        jobs: Vec<JobId>,
        requests: Vec<RequestId>,
        error: String,
    },
    /// Time passed: deadlines, backoffs, stragglers, expiries, explanations.
    Tick,
}

pub use types::RequestId;

/// What one attempt's end is recorded as.
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptEnd {
    Result,
    Failed(Failure),
    Rejected(String),
    /// Its task was settled by another execution first.
    Surplus,
    /// Its job ended (cancelled or failed) while it was out.
    JobEnded,
}

impl AttemptEnd {
    /// Whether the job counts this end as a retry (a failure or a rejected
    /// answer; not a surplus copy, nor a cancel with its job).
    pub fn counts_as_retry(&self) -> bool {
        matches!(self, AttemptEnd::Failed(_) | AttemptEnd::Rejected(_))
    }

    /// The same, of an end recorded as its text (`Display`): the one place
    /// that text is read back, beside the one that writes it.
    pub fn recorded_counts_as_retry(recorded: &str) -> bool {
        recorded.starts_with(NO_RESULT) || recorded.starts_with(REJECTED)
    }
}

const NO_RESULT: &str = "no result: ";
const REJECTED: &str = "rejected: ";

impl std::fmt::Display for AttemptEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptEnd::Result => write!(f, "result"),
            AttemptEnd::Failed(failure) => write!(f, "{NO_RESULT}{failure}"),
            AttemptEnd::Rejected(reason) => write!(f, "{REJECTED}{reason}"),
            AttemptEnd::Surplus => write!(f, "cancelled: settled elsewhere"),
            AttemptEnd::JobEnded => write!(f, "cancelled with its job"),
        }
    }
}

/// A write the shell must make durable before any send of the same step.
#[derive(Clone, Debug, PartialEq)]
pub enum Write<P> {
    /// The job, before anything of it is sent (the shell has stored its file).
    JobStarted {
        job: JobId,
    },
    Attempt {
        job: JobId,
        attempt: Attempt,
        peer: P,
        sent_at_ms: u64,
    },
    AttemptEnded {
        job: JobId,
        attempt: Attempt,
        end: AttemptEnd,
    },
    /// The task's accepted result: `from`'s (None: the requester's own run),
    /// paying every provider whose result agreed.
    Settled {
        job: JobId,
        task: u64,
        fuel: u64,
        method: Option<Method>,
        from: Option<P>,
        payees: Vec<(P, u64)>,
    },
    /// A settled task is void (one who vouched for it was caught).
    Reopened {
        job: JobId,
        task: u64,
    },
    /// Keep `peer`'s signed result for `task` as evidence: it was contradicted.
    Evidence {
        job: JobId,
        task: u64,
        peer: P,
    },
    Record {
        peer: P,
        record: Record,
    },
    JobEnded {
        job: JobId,
        phase: JobPhase,
        error: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action<P> {
    Persist(Write<P>),
    /// One request: these attempts of one job to one provider, run one after
    /// the other on one slot; answered by [`Input::Answers`] or given up on
    /// at its deadline.
    Send {
        request: RequestId,
        peer: P,
        job: JobId,
        attempts: Vec<Attempt>,
        timeout_ms: u64,
    },
    /// Tell `peer` to stop these attempts of `job` (all of them when empty).
    Cancel {
        peer: P,
        job: JobId,
        attempts: Vec<Attempt>,
    },
    /// The results disagree: the requester runs the task itself; answered
    /// by [`Input::Local`].
    RunLocally {
        job: JobId,
        task: u64,
    },
    /// Every task is settled: put the outputs together; answered by
    /// [`Input::Assembled`].
    Assemble {
        job: JobId,
    },
}

/// Counts of what the core did, for metrics (the shell reads the change).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub dispatched: u64,
    pub speculated: u64,
    pub retried: u64,
    pub rejected: u64,
    pub surplus_cancelled: u64,
    pub settled: u64,
    pub fuel_accepted: u64,
    pub ground_truth_runs: u64,
    pub reopened: u64,
    pub caught: u64,
    pub timed_out: u64,
    /// By method: replicas, spot check, ground truth, reputation.
    pub accepted_by: [u64; 4],
    /// Sum over dispatched executions of the time they waited queued.
    pub queued_ms_total: u64,
}

/// How a provider's turn at one job went.
enum Turn {
    Sent,
    /// The job will never give it work (excluded, or its offer falls short).
    Unfit,
    /// Nothing it may take now (queued work waits or must go elsewhere).
    NoWork,
}

/// One request out.
#[derive(Clone, Debug)]
struct Request<P> {
    peer: P,
    job: JobId,
    /// Its attempts still out (not settled elsewhere, not ended).
    outstanding: u32,
    attempts: Vec<Attempt>,
    deadline_ms: u64,
}

pub struct Scheduler<P> {
    knobs: Knobs,
    jobs: BTreeMap<JobId, JobCore<P>>,
    /// Running jobs, taken in turn by each provider's credit.
    running: Vec<JobId>,
    next_job: usize,
    book: Book<P>,
    /// Live, not caught, with credit left: best first.
    idle: BTreeSet<RankKey<P>>,
    /// Providers no running job will take (see `dispatch`); back in `idle`
    /// when their offer or the running jobs change.
    parked: HashSet<P>,
    records: HashMap<P, Record>,
    requests: HashMap<RequestId, Request<P>>,
    deadlines: BinaryHeap<Reverse<(u64, RequestId)>>,
    /// Requests out per provider: a request counts while any of its
    /// attempts is out.
    in_flight: HashMap<P, u32>,
    next_request: RequestId,
    counters: Counters,
    /// Actions of the step being taken.
    out: Vec<Action<P>>,
    /// The time of the step being taken.
    now_ms: u64,
}

/// A provider whose attempts time out more than once per ten verified
/// results (past a little slack for a new one) comes after the reliable
/// ones at the same price.
pub fn is_unreliable(record: &Record) -> bool {
    record.timed_out * 10 > record.verified + 10
}

fn is_caught(record: Option<&Record>) -> bool {
    record.is_some_and(|r| r.disagreed > 0)
}

impl<P: Copy + Ord + Hash + Debug> Scheduler<P> {
    /// A core with the providers' records as the shell remembers them.
    pub fn new(knobs: Knobs, records: impl IntoIterator<Item = (P, Record)>) -> Self {
        Scheduler {
            knobs,
            jobs: BTreeMap::new(),
            running: Vec::new(),
            next_job: 0,
            book: Book::default(),
            idle: BTreeSet::new(),
            parked: HashSet::new(),
            records: records.into_iter().collect(),
            requests: HashMap::new(),
            deadlines: BinaryHeap::new(),
            in_flight: HashMap::new(),
            next_request: RequestId::default(),
            counters: Counters::default(),
            out: Vec::new(),
            now_ms: 0,
        }
    }

    pub fn knobs(&self) -> &Knobs {
        &self.knobs
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn job(&self, job: &JobId) -> Option<JobView<'_, P>> {
        self.jobs.get(job).map(|core| JobView { core })
    }

    pub fn jobs(&self) -> impl Iterator<Item = JobView<'_, P>> {
        self.jobs.values().map(|core| JobView { core })
    }

    pub fn book(&self) -> &Book<P> {
        &self.book
    }

    pub fn record(&self, peer: &P) -> Record {
        self.records.get(peer).copied().unwrap_or_default()
    }

    /// The job of a request still out (None: answered, or given up on).
    pub fn request_job(&self, request: RequestId) -> Option<&JobId> {
        self.requests.get(&request).map(|r| &r.job)
    }

    /// Requests out to `peer` now.
    pub fn in_flight(&self, peer: &P) -> u32 {
        self.in_flight.get(peer).copied().unwrap_or(0)
    }

    /// The most requests `peer` may have out: its slots and the prefetch.
    pub fn credit(&self, peer: &P) -> u32 {
        self.book
            .get(peer)
            .map_or(0, |l| l.offer.slots_total + self.knobs.prefetch())
    }

    /// Providers with credit left that some running job may use, and
    /// those parked (no running job takes them).
    pub fn idle_and_parked(&self) -> (usize, usize) {
        (self.idle.len(), self.parked.len())
    }

    /// Providers with requests out.
    pub fn busy_providers(&self) -> impl Iterator<Item = (&P, &u32)> {
        self.in_flight.iter()
    }

    /// Whether any job is running.
    pub fn has_running_jobs(&self) -> bool {
        !self.running.is_empty()
    }

    /// Drops an ended job from memory (the shell keeps its record).
    pub fn forget(&mut self, job: &JobId) -> bool {
        if self.jobs.get(job).is_some_and(|j| j.phase.has_ended()) {
            self.jobs.remove(job);
            return true;
        }
        false
    }

    /// One step: the input at `now_ms`, and the actions it leads to.
    pub fn step(&mut self, now_ms: u64, input: Input<P>) -> Vec<Action<P>> {
        self.now_ms = now_ms;
        let tick = matches!(
            input,
            Input::Tick | Input::Submit { .. } | Input::Restore { .. }
        );
        match input {
            Input::Submit { job, spec } => self.on_submit(
                now_ms,
                job,
                spec,
                Restored {
                    settled: Vec::new(),
                    attempts_used: Vec::new(),
                    retries: 0,
                },
            ),
            Input::Restore {
                job,
                spec,
                restored,
            } => self.on_submit(now_ms, job, spec, restored),
            Input::Offer {
                peer,
                offer,
                rtt_us,
                network,
            } => self.on_offer(now_ms, peer, offer, rtt_us, network),
            Input::Answers {
                request,
                peer,
                answers,
            } => self.on_answers(now_ms, request, peer, answers),
            Input::Local { job, task, result } => self.on_local(now_ms, &job, task, result),
            Input::PeerGone { peer } => self.on_peer_gone(now_ms, peer),
            Input::Cancel { job } => self.end_job(&job, JobPhase::Cancelled, None),
            Input::Assembled { job, result } => self.on_assembled(&job, result),
            Input::Unrecorded {
                jobs,
                requests,
                error,
            } => self.on_unrecorded(now_ms, jobs, requests, &error),
            Input::Tick => self.on_tick(now_ms),
        }
        self.dispatch(now_ms);
        if tick {
            self.explain_and_starve(now_ms);
        }
        std::mem::take(&mut self.out)
    }

    fn persist(&mut self, write: Write<P>) {
        self.out.push(Action::Persist(write));
    }

    // ---- inputs -------------------------------------------------------

    fn on_submit(&mut self, now_ms: u64, id: JobId, spec: JobSpec, restored: Restored<P>) {
        if self.jobs.contains_key(&id) {
            return;
        }
        if self.jobs.len() >= JOBS_MAX {
            // The shell keeps JOBS_MAX too and forgets ended jobs first; a
            // core that is still full refuses the job, recording its end,
            // and holds nothing of it (so the bound holds).
            self.persist(Write::JobEnded {
                job: id,
                phase: JobPhase::Failed,
                error: Some(format!("the requester holds {JOBS_MAX} jobs (JOBS_MAX)")),
            });
            return;
        }
        let verifier = spec
            .verification
            .map(|policy| JobVerifier::new(spec.tasks, policy, spec.draw_seed));
        let mut core = JobCore::new(spec, verifier, now_ms);
        core.retries = restored.retries;
        for (task, used) in restored.attempts_used {
            if let Some(t) = core.tasks.get_mut(task as usize) {
                t.attempts = t.attempts.max(used);
            }
        }
        for s in restored.settled {
            let Some(t) = core.tasks.get_mut(s.task as usize) else {
                continue;
            };
            if t.settled {
                continue;
            }
            t.settled = true;
            t.fuel = s.fuel;
            core.done += 1;
            core.fuel += s.fuel;
            // What it cost is bounded by the job's highest price.
            let price_max = core.spec.requirements.price_per_gfuel_max.unwrap_or(0);
            for (peer, fuel) in &s.payees {
                core.committed_nano += job::cost_nano(*fuel, price_max);
                let share = core.share(*peer);
                share.tasks_done += 1;
                share.fuel += fuel;
            }
            if let (Some(v), Some(method)) = (&mut core.verifier, s.method) {
                v.restore_accepted(s.task, method, s.payees.iter().map(|(p, _)| *p).collect());
            }
        }
        core.pending = (0..core.tasks.len() as u64)
            .filter(|&i| !core.tasks[i as usize].settled)
            .map(|i| (i, now_ms))
            .collect();
        let complete = core.is_complete();
        self.jobs.insert(id.clone(), core);
        self.persist(Write::JobStarted { job: id.clone() });
        // A new job may take the providers the others would not.
        for peer in std::mem::take(&mut self.parked) {
            self.index_idle(now_ms, peer);
        }
        if complete {
            self.assemble(&id);
        } else {
            self.running.push(id);
        }
    }

    fn on_offer(
        &mut self,
        now_ms: u64,
        peer: P,
        offer: Offer,
        rtt_us: Option<u64>,
        network: Option<String>,
    ) {
        self.unindex_idle(peer);
        self.parked.remove(&peer);
        if !self.book.offer(now_ms, peer, offer, rtt_us, network) {
            return;
        }
        let unreliable = is_unreliable(&self.record(&peer));
        self.book.set_unreliable(peer, unreliable);
        self.index_idle(now_ms, peer);
    }

    fn on_peer_gone(&mut self, now_ms: u64, peer: P) {
        self.unindex_idle(peer);
        self.book.withdraw(peer);
        let mut requests: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, r)| r.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        // In order: a seed replays the same actions (maps iterate at random).
        requests.sort_unstable();
        for request in requests {
            self.give_up_request(now_ms, request, Failure::Lost);
        }
    }

    fn on_answers(
        &mut self,
        now_ms: u64,
        request: RequestId,
        peer: P,
        answers: Vec<(Attempt, Answer)>,
    ) {
        let Some(r) = self.requests.get(&request) else {
            return; // given up on already: a late answer is ignored
        };
        if r.peer != peer {
            return;
        }
        let job_id = r.job.clone();
        // The providers' own run times shape batches.
        let ran: Vec<u64> = answers
            .iter()
            .filter_map(|(a, answer)| match answer {
                Answer::Result(rep) if r.attempts.contains(a) => Some(rep.run_ms),
                _ => None,
            })
            .collect();
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.learn_run_times(&ran);
        }
        for (attempt, answer) in answers {
            if !self
                .requests
                .get(&request)
                .is_some_and(|r| r.attempts.contains(&attempt))
            {
                continue; // not asked in this request: ignored
            }
            self.on_attempt(now_ms, &job_id, attempt, peer, request, answer);
        }
    }

    /// One attempt's answer.
    fn on_attempt(
        &mut self,
        now_ms: u64,
        job_id: &JobId,
        attempt: Attempt,
        peer: P,
        request: RequestId,
        answer: Answer,
    ) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        let Some(out) = job.running.get(&attempt).copied() else {
            return;
        };
        if out.peer != peer || out.request != request {
            return;
        }
        let end = match &answer {
            Answer::Result(_) => AttemptEnd::Result,
            Answer::Failed(f) => AttemptEnd::Failed(f.clone()),
            Answer::Rejected { reason } => AttemptEnd::Rejected(reason.clone()),
        };
        self.end_attempt(now_ms, job_id, attempt, end);
        let job = self.jobs.get_mut(job_id).expect("checked above");
        if job.phase != JobPhase::Running {
            return;
        }
        match answer {
            Answer::Result(reported) => {
                job.remember_duration(now_ms.saturating_sub(out.sent_at_ms), &self.knobs);
                let share = job.share(peer);
                share.busy_ms += reported.run_ms;
                job.answer_bytes_max = job.answer_bytes_max.max(reported.answer_bytes);
                job.commit_result(&out, reported.fuel);
                let (fuel, claim) = (reported.fuel, reported.claim.clone());
                job.report(attempt.task, peer, reported);
                let Some(v) = &mut job.verifier else {
                    return self.settle(job_id, attempt.task, Some(peer), vec![(peer, fuel)], None);
                };
                let actions = v.on_result(attempt.task, peer, claim);
                self.apply(now_ms, job_id, actions);
            }
            Answer::Failed(failure) => self.attempt_failed(now_ms, job_id, attempt, peer, failure),
            Answer::Rejected { reason } => {
                self.counters.rejected += 1;
                job.excluded.insert(peer);
                if let Some(error) =
                    job.count_failure(attempt.task, &reason, false, now_ms, &self.knobs)
                {
                    return self.fail(job_id, error);
                }
                let actions = match &mut job.verifier {
                    Some(v) => v.on_misbehaviour(attempt.task, peer),
                    None => {
                        job.queue(attempt.task, now_ms);
                        Vec::new()
                    }
                };
                self.apply(now_ms, job_id, actions);
            }
        }
    }

    fn attempt_failed(
        &mut self,
        now_ms: u64,
        job_id: &JobId,
        attempt: Attempt,
        peer: P,
        failure: Failure,
    ) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        self.counters.retried += 1;
        let (timed_out, lost) = (failure == Failure::TimedOut, failure.is_lost());
        let reason = format!("{peer:?}: {failure}");
        if let Some(error) = job.count_failure(attempt.task, &reason, lost, now_ms, &self.knobs) {
            return self.fail(job_id, error);
        }
        // A provider that went away may come back (a restart, a healed
        // partition); only failures it answered count. One that kept a task
        // past its whole budget gets no more of the job: each task costs at
        // most one such wait.
        if timed_out {
            self.counters.timed_out += 1;
            job.excluded.insert(peer);
        }
        let failures = job.failures.entry(peer).or_default();
        *failures += u32::from(!lost);
        if *failures >= self.knobs.failures_before_exclusion {
            job.excluded.insert(peer);
        }
        let actions = match &mut job.verifier {
            Some(v) => v.on_failure(attempt.task, peer, timed_out),
            None => {
                job.queue(attempt.task, now_ms);
                Vec::new()
            }
        };
        self.apply(now_ms, job_id, actions);
    }

    fn on_local(
        &mut self,
        now_ms: u64,
        job_id: &JobId,
        task: u64,
        result: Result<Reported, String>,
    ) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        if job.phase != JobPhase::Running {
            return;
        }
        match result {
            Ok(reported) => {
                let claim = reported.claim.clone();
                job.local.insert(task, reported);
                let actions = match &mut job.verifier {
                    Some(v) => v.on_ground_truth(task, claim),
                    None => Vec::new(),
                };
                self.apply(now_ms, job_id, actions);
            }
            Err(e) => self.fail(
                job_id,
                format!("the requester's own run of task {task}: {e}"),
            ),
        }
    }

    fn on_assembled(&mut self, job_id: &JobId, result: Result<(), String>) {
        if self
            .jobs
            .get(job_id)
            .is_none_or(|j| j.phase != JobPhase::Assembling)
        {
            return;
        }
        match result {
            Ok(()) => self.end_job(job_id, JobPhase::Completed, None),
            Err(e) => self.end_job(job_id, JobPhase::Failed, Some(format!("assemble: {e}"))),
        }
    }

    fn on_unrecorded(
        &mut self,
        now_ms: u64,
        jobs: Vec<JobId>,
        requests: Vec<RequestId>,
        error: &str,
    ) {
        let mut failed = jobs;
        for request in requests {
            let Some(r) = self.requests.get(&request) else {
                continue;
            };
            failed.push(r.job.clone());
            // Never sent: its attempts leave without an end of their own.
            let (peer, job_id, attempts) = (r.peer, r.job.clone(), r.attempts.clone());
            for a in attempts {
                if let Some(job) = self.jobs.get_mut(&job_id)
                    && job.take_out(&a).is_some()
                {
                    job.share(peer).in_flight = job.share(peer).in_flight.saturating_sub(1);
                    if let Some(v) = &mut job.verifier {
                        let _ = v.on_failure(a.task, peer, false);
                    }
                }
            }
            self.drop_request(now_ms, request);
        }
        failed.sort();
        failed.dedup();
        for job in failed {
            self.fail(
                &job,
                format!("cannot record the attempts it sends: {error}"),
            );
        }
    }

    fn on_tick(&mut self, now_ms: u64) {
        for peer in self.book.expire(now_ms) {
            self.unindex_idle(peer);
        }
        while let Some(&Reverse((deadline, request))) = self.deadlines.peek() {
            if deadline > now_ms {
                break;
            }
            self.deadlines.pop();
            if let Some(r) = self.requests.get(&request)
                && r.deadline_ms == deadline
            {
                let (peer, job, attempts) = (r.peer, r.job.clone(), r.attempts.clone());
                self.give_up_request(now_ms, request, Failure::TimedOut);
                self.out.push(Action::Cancel {
                    peer,
                    job,
                    attempts,
                });
            }
        }
    }

    // ---- bookkeeping of requests and credit --------------------------

    /// Whether `peer` may be offered work now: live, not caught, credit left.
    fn may_take(&self, now_ms: u64, peer: &P) -> bool {
        self.book.is_live(now_ms, peer)
            && !is_caught(self.records.get(peer))
            && self.in_flight(peer) < self.credit(peer)
    }

    fn index_idle(&mut self, now_ms: u64, peer: P) {
        if !self.parked.contains(&peer)
            && self.may_take(now_ms, &peer)
            && let Some(key) = self.book.key(peer)
        {
            self.idle.insert(key);
        }
    }

    fn unindex_idle(&mut self, peer: P) {
        if let Some(key) = self.book.key(peer) {
            self.idle.remove(&key);
        }
    }

    /// Every attempt still out of `request` ends with `failure`.
    fn give_up_request(&mut self, now_ms: u64, request: RequestId, failure: Failure) {
        let Some(r) = self.requests.get(&request) else {
            return;
        };
        let (peer, job_id, attempts) = (r.peer, r.job.clone(), r.attempts.clone());
        for a in attempts {
            let out = self
                .jobs
                .get(&job_id)
                .and_then(|j| j.running.get(&a))
                .copied();
            if out.is_some_and(|o| o.request == request) {
                self.end_attempt(now_ms, &job_id, a, AttemptEnd::Failed(failure.clone()));
                if self
                    .jobs
                    .get(&job_id)
                    .is_some_and(|j| j.phase == JobPhase::Running)
                {
                    self.attempt_failed(now_ms, &job_id, a, peer, failure.clone());
                }
            }
        }
        self.drop_request(now_ms, request);
    }

    /// An attempt is no longer out: its end recorded, its request's count
    /// down (the request leaves at zero, freeing the provider's credit).
    fn end_attempt(&mut self, now_ms: u64, job_id: &JobId, attempt: Attempt, end: AttemptEnd) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        let Some(out) = job.take_out(&attempt) else {
            return;
        };
        let share = job.share(out.peer);
        share.in_flight = share.in_flight.saturating_sub(1);
        self.persist(Write::AttemptEnded {
            job: job_id.clone(),
            attempt,
            end,
        });
        if let Some(r) = self.requests.get_mut(&out.request) {
            r.outstanding = r.outstanding.saturating_sub(1);
            if r.outstanding == 0 {
                self.drop_request(now_ms, out.request);
            }
        }
    }

    fn drop_request(&mut self, now_ms: u64, request: RequestId) {
        let Some(r) = self.requests.remove(&request) else {
            return;
        };
        let left = self.in_flight.get_mut(&r.peer).map(|n| {
            *n = n.saturating_sub(1);
            *n
        });
        if left == Some(0) {
            self.in_flight.remove(&r.peer);
        }
        self.index_idle(now_ms, r.peer);
    }

    // ---- dispatch ------------------------------------------------------

    /// Hands queued executions to providers with credit left, best first,
    /// running jobs in turn; then copies of stragglers to idle slots.
    fn dispatch(&mut self, now_ms: u64) {
        if self.running.is_empty() {
            return;
        }
        for j in &self.running {
            self.jobs.get_mut(j).expect("running").promote(now_ms);
        }
        let mut cursor: Option<RankKey<P>> = None;
        loop {
            if !self.running.iter().any(|j| self.jobs[j].may_hand_out()) {
                break;
            }
            let next = match &cursor {
                None => self.idle.iter().next().copied(),
                Some(after) => self
                    .idle
                    .range((
                        std::ops::Bound::Excluded(*after),
                        std::ops::Bound::Unbounded,
                    ))
                    .next()
                    .copied(),
            };
            let Some(key) = next else {
                break;
            };
            let peer = key.4;
            let (mut idle_rounds, mut unfit, mut sent) = (0, 0, false);
            while self.may_take(now_ms, &peer) && idle_rounds < self.running.len() {
                let j = self.next_job % self.running.len();
                self.next_job = self.next_job.wrapping_add(1);
                let job_id = self.running[j].clone();
                match self.send_batch_of(now_ms, &job_id, peer) {
                    Turn::Sent => {
                        (idle_rounds, unfit, sent) = (0, 0, true);
                    }
                    Turn::Unfit => {
                        idle_rounds += 1;
                        unfit += 1;
                    }
                    Turn::NoWork => idle_rounds += 1,
                }
            }
            // No running job will ever take its work (each excludes it or
            // needs more than it offers): it leaves the idle set until its
            // offer or the jobs change, so that no later step looks at it.
            if !sent && unfit == self.running.len() {
                self.idle.remove(&key);
                self.parked.insert(peer);
            }
            cursor = Some(key);
        }
        self.speculate(now_ms);
    }

    /// Whether `peer`'s offer meets job `job`'s requirements and limits.
    fn check_needs(&self, job: &JobCore<P>, peer: &P) -> Result<(), Mismatch> {
        let Some(listing) = self.book.get(peer) else {
            return Err(Mismatch::Expired);
        };
        let verified = self.records.get(peer).map_or(0, |r| r.verified);
        job.needs().check(&listing.offer, verified)
    }

    /// Whether `peer` may take tasks of `job` at all: not excluded from it,
    /// not caught, its offer meeting the job.
    fn may_serve(&self, job: &JobCore<P>, peer: &P) -> bool {
        !job.excluded.contains(peer)
            && !is_caught(self.records.get(peer))
            && self.check_needs(job, peer).is_ok()
    }

    /// Whether `peer` may run `task` of `job` by the verifier's placement
    /// rules (replicas on different providers, and networks if asked).
    fn may_run(&self, job: &JobCore<P>, task: u64, peer: &P) -> bool {
        let Some(v) = &job.verifier else {
            return true;
        };
        if !v.may_run(task, peer) {
            return false;
        }
        if !job.spec.distinct_networks {
            return true;
        }
        let network = |p: &P| self.book.get(p).and_then(|l| l.network.as_ref());
        let Some(mine) = network(peer) else {
            return false;
        };
        !v.holders(task).any(|holder| network(holder) == Some(mine))
    }

    /// Sends `peer` one batch of `job`'s queued executions; false when it
    /// may take none.
    fn send_batch_of(&mut self, now_ms: u64, job_id: &JobId, peer: P) -> Turn {
        let Some(job) = self.jobs.get(job_id) else {
            return Turn::Unfit;
        };
        if job.phase != JobPhase::Running
            || job.excluded.contains(&peer)
            || self.check_needs(job, &peer).is_err()
        {
            return Turn::Unfit;
        }
        let price_per_gfuel = self.book.get(&peer).map_or(0, |l| l.offer.price_per_gfuel);
        // The budget lets out only what it can pay in the worst case.
        let size = job
            .batch_size(self.book.slots_live(), &self.knobs)
            .min(job.budget_room(price_per_gfuel));
        let mut batch = Vec::with_capacity(size);
        let mut bytes = 0;
        while batch.len() < size && bytes < self.knobs.batch_bytes_budget {
            let Some(task) = self.take_pending(now_ms, job_id, &peer) else {
                break;
            };
            bytes += self.jobs[job_id].spec.assignment_bytes;
            batch.push(task);
        }
        if batch.is_empty() {
            return Turn::NoWork;
        }
        self.send(now_ms, job_id, peer, batch);
        Turn::Sent
    }

    /// The first queued execution of `job` that `peer` may run; stale ones
    /// (their task settled another way) are dropped on the way, and ones
    /// whose task has since begun a backoff move to the backoff heap.
    fn take_pending(&mut self, now_ms: u64, job_id: &JobId, peer: &P) -> Option<u64> {
        let scan = self.knobs.pending_scan_max;
        let mut pos = 0;
        loop {
            let job = &self.jobs[job_id];
            if pos >= job.pending.len().min(scan) {
                return None;
            }
            let (task, queued_ms) = job.pending[pos];
            let t = &job.tasks[task as usize];
            let stale = match &job.verifier {
                Some(v) => !v.needs_run(task),
                None => t.settled,
            };
            let waits = t.not_before_ms > now_ms;
            if stale || waits {
                let job = self.jobs.get_mut(job_id).expect("exists");
                job.pending.remove(pos);
                if waits && !stale {
                    job.queue(task, queued_ms.min(now_ms));
                }
                continue;
            }
            if self.may_run(job, task, peer) {
                // A replica goes to a provider drawn at random from those
                // whose turns come, not to the next in rank: equal offers
                // are ranked by peer id, and Sybils with neighbouring ids
                // would otherwise hold both replicas of each other's tasks.
                // (Only where there are others to draw from.)
                let replica = job
                    .verifier
                    .as_ref()
                    .is_some_and(|v| v.holders(task).next().is_some());
                let spread = self.book.live_count() > REPLICA_SPREAD_MIN;
                let chance = self.knobs.replica_take_chance;
                let job = self.jobs.get_mut(job_id).expect("exists");
                if replica && spread && !job.rng.random_bool(chance) {
                    pos += 1;
                    continue;
                }
                self.counters.queued_ms_total += now_ms.saturating_sub(queued_ms);
                return job.pending.remove(pos).map(|(t, _)| t);
            }
            pos += 1;
        }
    }

    /// Records and sends one request: its attempts get their numbers, the
    /// verifier hears of each dispatch, the credit is taken.
    fn send(&mut self, now_ms: u64, job_id: &JobId, peer: P, tasks: Vec<u64>) {
        let request = self.next_request.take_next();
        let record = self.records.get(&peer).copied();
        let (fuel_per_sec, price_per_gfuel) = self
            .book
            .get(&peer)
            .map_or((0, 0), |l| (l.offer.fuel_per_sec, l.offer.price_per_gfuel));
        let job = self.jobs.get_mut(job_id).expect("exists");
        let mut attempts = Vec::with_capacity(tasks.len());
        let mut verdicts = Vec::new();
        for task in tasks {
            let t = &mut job.tasks[task as usize];
            t.attempts += 1;
            let attempt = Attempt {
                task,
                attempt: t.attempts,
            };
            let out = Out {
                peer,
                request,
                sent_at_ms: now_ms,
                price_per_gfuel,
            };
            job.commit_out(&out);
            job.running.insert(attempt, out);
            job.stragglers.push(Reverse((now_ms, attempt)));
            job.share(peer).in_flight += 1;
            if let Some(v) = &mut job.verifier {
                if let Some(record) = record
                    && v.record(&peer) == Record::default()
                {
                    v.set_record(peer, record);
                }
                verdicts.extend(v.on_dispatch(task, peer));
            }
            attempts.push(attempt);
        }
        self.counters.dispatched += attempts.len() as u64;
        // Run one after the other on one slot: the batch may take the sum.
        let timeout_ms: u64 = attempts
            .iter()
            .map(|_| {
                self.knobs
                    .attempt_timeout_ms(&job.spec.limits, fuel_per_sec)
            })
            .sum();
        for &attempt in &attempts {
            self.out.push(Action::Persist(Write::Attempt {
                job: job_id.clone(),
                attempt,
                peer,
                sent_at_ms: now_ms,
            }));
        }
        let deadline_ms = now_ms + timeout_ms;
        self.requests.insert(
            request,
            Request {
                peer,
                job: job_id.clone(),
                outstanding: attempts.len() as u32,
                attempts: attempts.clone(),
                deadline_ms,
            },
        );
        self.deadlines.push(Reverse((deadline_ms, request)));
        *self.in_flight.entry(peer).or_default() += 1;
        if !self.may_take(now_ms, &peer) {
            self.unindex_idle(peer);
        }
        self.out.push(Action::Send {
            request,
            peer,
            job: job_id.clone(),
            attempts,
            timeout_ms,
        });
        self.apply(now_ms, job_id, verdicts);
    }

    /// Stragglers: once a job has nothing left to hand out, a provider with
    /// an idle slot (credit beyond the prefetch) takes a copy of the job's
    /// oldest execution still out, if it has run `speculate_factor` times
    /// the job's median. The first result to settle the task wins. A step
    /// looks at a few stragglers and a few providers for each, so its cost
    /// does not grow with the network.
    fn speculate(&mut self, now_ms: u64) {
        for j in 0..self.running.len() {
            let job_id = self.running[j].clone();
            let mut deferred = Vec::new();
            for _ in 0..STRAGGLERS_SCAN_MAX {
                let Some((entry, holder)) = self.due_straggler(now_ms, &job_id) else {
                    break;
                };
                let task = entry.0.1.task;
                let prefetch = self.knobs.prefetch();
                // The best idle provider with a free slot that may take it.
                let taker = self
                    .idle
                    .iter()
                    .take(TAKERS_SCAN_MAX)
                    .map(|k| k.4)
                    .find(|p| {
                        *p != holder
                            && self.in_flight(p) < self.credit(p).saturating_sub(prefetch)
                            && self.speculation_fits(&job_id, task, p)
                    });
                let job = self.jobs.get_mut(&job_id).expect("running");
                job.stragglers.pop();
                let Some(peer) = taker else {
                    deferred.push(entry); // none now; a later step looks again
                    continue;
                };
                job.tasks[task as usize].speculated = true;
                self.counters.speculated += 1;
                self.send(now_ms, &job_id, peer, vec![task]);
            }
            if let Some(job) = self.jobs.get_mut(&job_id) {
                job.stragglers.extend(deferred);
            }
        }
    }

    fn speculation_fits(&self, job_id: &JobId, task: u64, peer: &P) -> bool {
        let job = &self.jobs[job_id];
        !job.excluded.contains(peer)
            && self.check_needs(job, peer).is_ok()
            // The verifier knows every holder of a verified task; an
            // unverified one has only the straggler out (one copy per task),
            // whose holder the caller skips.
            && self.may_run(job, task, peer)
    }

    /// The job's oldest execution that is due a copy (its heap entry, left
    /// on top, and its holder), if the job has nothing queued; stale
    /// entries are dropped on the way.
    fn due_straggler(
        &mut self,
        now_ms: u64,
        job_id: &JobId,
    ) -> Option<(Reverse<(u64, Attempt)>, P)> {
        let knobs = self.knobs;
        let job = self.jobs.get_mut(job_id)?;
        if job.wanted() > 0 || job.phase != JobPhase::Running {
            return None;
        }
        let after = job.straggler_after_ms(&knobs)?;
        loop {
            let &Reverse((sent_at_ms, attempt)) = job.stragglers.peek()?;
            let live = job.running.get(&attempt).copied();
            let t = &job.tasks[attempt.task as usize];
            let eligible = live.is_some()
                && !t.settled
                && !t.speculated
                && job
                    .verifier
                    .as_ref()
                    .is_none_or(|v| v.may_speculate(attempt.task));
            match live {
                Some(out) if eligible => {
                    if now_ms.saturating_sub(sent_at_ms) <= after {
                        return None; // the oldest is not due: none is
                    }
                    return Some((Reverse((sent_at_ms, attempt)), out.peer));
                }
                _ => {
                    job.stragglers.pop();
                }
            }
        }
    }

    // ---- verification, settlement, the end ---------------------------

    /// Carries out what the verifier decided. Exclusions go first, so the
    /// contradicted results are still at hand to keep as evidence.
    fn apply(&mut self, now_ms: u64, job_id: &JobId, actions: Vec<verify::Action<P>>) {
        let (exclusions, rest): (Vec<_>, Vec<_>) = actions
            .into_iter()
            .partition(|a| matches!(a, verify::Action::Exclude { .. }));
        for action in exclusions.into_iter().chain(rest) {
            let Some(job) = self.jobs.get_mut(job_id) else {
                return;
            };
            if job.phase != JobPhase::Running {
                return;
            }
            match action {
                verify::Action::Run { task } => job.queue(task, now_ms),
                verify::Action::RunLocally { task } => {
                    self.counters.ground_truth_runs += 1;
                    self.out.push(Action::RunLocally {
                        job: job_id.clone(),
                        task,
                    });
                }
                verify::Action::Accept {
                    task,
                    claim,
                    from,
                    method,
                } => {
                    self.counters.accepted_by[match method {
                        Method::Replicas => 0,
                        Method::SpotCheck => 1,
                        Method::GroundTruth => 2,
                        Method::Reputation => 3,
                    }] += 1;
                    // Every provider whose result agreed did the work: it is paid.
                    let payees: Vec<(P, u64)> = job
                        .reported
                        .get(&task)
                        .into_iter()
                        .flatten()
                        .filter(|(_, r)| r.claim == claim)
                        .map(|(p, r)| (*p, r.fuel))
                        .collect();
                    self.settle(job_id, task, from, payees, Some(method));
                }
                verify::Action::Reopen { task } => {
                    self.counters.reopened += 1;
                    let t = &mut job.tasks[task as usize];
                    if t.settled {
                        t.settled = false;
                        job.done -= 1;
                        job.fuel -= t.fuel;
                        t.fuel = 0;
                    }
                    self.persist(Write::Reopened {
                        job: job_id.clone(),
                        task,
                    });
                }
                verify::Action::Exclude { provider, task } => {
                    self.counters.caught += 1;
                    job.excluded.insert(provider);
                    if job.result_of(task, Some(provider)).is_some() {
                        self.persist(Write::Evidence {
                            job: job_id.clone(),
                            task,
                            peer: provider,
                        });
                    }
                }
                verify::Action::Record { provider, record } => {
                    self.records.insert(provider, record);
                    self.unindex_idle(provider);
                    self.book.set_unreliable(provider, is_unreliable(&record));
                    self.index_idle(now_ms, provider);
                    self.persist(Write::Record {
                        peer: provider,
                        record,
                    });
                }
            }
        }
    }

    /// Makes `from`'s result (None: the requester's own) the task's: a
    /// failed run fails the job; copies still out are cancelled.
    fn settle(
        &mut self,
        job_id: &JobId,
        task: u64,
        from: Option<P>,
        payees: Vec<(P, u64)>,
        method: Option<Method>,
    ) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        let i = task as usize;
        if job.tasks[i].settled {
            return;
        }
        let Some(chosen) = job.result_of(task, from).cloned() else {
            return self.fail(
                job_id,
                format!("task {task}: the accepted result is missing"),
            );
        };
        if let Some(failure) = &chosen.failure {
            let failure = failure.clone();
            return self.fail(job_id, failure);
        }
        // Results of the task are no longer needed (the shell keeps the
        // chosen one's outputs by the Settled write).
        job.reported.remove(&task);
        job.local.remove(&task);
        for (peer, fuel) in &payees {
            let share = job.share(*peer);
            share.tasks_done += 1;
            share.fuel += fuel;
        }
        let t = &mut job.tasks[i];
        t.settled = true;
        t.fuel = chosen.fuel;
        job.fuel += chosen.fuel;
        job.done += 1;
        self.counters.settled += 1;
        self.counters.fuel_accepted += chosen.fuel;
        self.persist(Write::Settled {
            job: job_id.clone(),
            task,
            fuel: chosen.fuel,
            method,
            from,
            payees,
        });
        // Copies still out (a straggler's, a surplus replica) are not wanted.
        let job = self.jobs.get(job_id).expect("exists");
        // By the task's attempt numbers (a few), not by every execution out.
        let surplus: Vec<(Attempt, P)> = (1..=job.tasks[i].attempts)
            .map(|attempt| Attempt { task, attempt })
            .filter_map(|a| job.running.get(&a).map(|o| (a, o.peer)))
            .collect();
        for (attempt, peer) in surplus {
            self.counters.surplus_cancelled += 1;
            self.end_attempt(self.now_ms, job_id, attempt, AttemptEnd::Surplus);
            if let Some(v) = &mut self.jobs.get_mut(job_id).expect("exists").verifier {
                // An accepted task asks nothing more of anyone.
                let _ = v.on_failure(task, peer, false);
            }
            self.out.push(Action::Cancel {
                peer,
                job: job_id.clone(),
                attempts: vec![attempt],
            });
        }
        if self.jobs[job_id].is_complete() {
            self.assemble(job_id);
        }
    }

    fn assemble(&mut self, job_id: &JobId) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        job.phase = JobPhase::Assembling;
        job.pending.clear();
        job.backoff.clear();
        self.running.retain(|j| j != job_id);
        self.out.push(Action::Assemble {
            job: job_id.clone(),
        });
    }

    fn fail(&mut self, job_id: &JobId, error: String) {
        self.end_job(job_id, JobPhase::Failed, Some(error));
    }

    /// Ends a job that is running or assembling: nothing more is sent, the
    /// providers stop what they hold of it, the end is recorded.
    fn end_job(&mut self, job_id: &JobId, phase: JobPhase, error: Option<String>) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        if job.phase.has_ended() {
            return;
        }
        job.phase = phase;
        job.error = error.clone();
        job.pending.clear();
        job.backoff.clear();
        job.stragglers.clear();
        self.running.retain(|j| j != job_id);
        let mut held: Vec<(Attempt, P)> = job.running.iter().map(|(a, o)| (*a, o.peer)).collect();
        held.sort_unstable();
        let mut peers: Vec<P> = held.iter().map(|(_, p)| *p).collect();
        peers.sort();
        peers.dedup();
        for (attempt, _) in held {
            self.end_attempt(self.now_ms, job_id, attempt, AttemptEnd::JobEnded);
        }
        for peer in peers {
            self.out.push(Action::Cancel {
                peer,
                job: job_id.clone(),
                attempts: Vec::new(),
            });
        }
        self.persist(Write::JobEnded {
            job: job_id.clone(),
            phase,
            error,
        });
    }

    // ---- explanations and starvation (ticks) ---------------------------

    /// A running job with work queued and none out learns why: each offer
    /// seen, counted by the first reason it could not take a task. And an
    /// execution no live provider may take (all hold the task, are caught,
    /// or share its holders' network) falls to the requester.
    fn explain_and_starve(&mut self, now_ms: u64) {
        let mut spent = Vec::new();
        for j in 0..self.running.len() {
            let job_id = self.running[j].clone();
            let job = &self.jobs[&job_id];
            let waiting = job.wanted() > 0 && job.running.is_empty();
            // Nothing out and the cheapest offer it could take costs more
            // in the worst case than is left: the budget is spent.
            if waiting && let Some(budget) = job.budget_nano() {
                let cheapest = self.book.ranked().find(|k| self.may_serve(job, &k.4));
                if let Some(&(price, ..)) = cheapest
                    && job.budget_room(price) == 0
                {
                    spent.push((
                        job_id.clone(),
                        format!(
                            "budget spent: {} of {} credits committed; one more task may cost {} at the cheapest offer ({price} per Gfuel × its fuel limit); raise requirements.budget or lower limits.fuel",
                            job::credits_ceil(job.committed_nano),
                            job::credits_ceil(budget),
                            job::credits_ceil(job.worst_nano(price)),
                        ),
                    ));
                    continue;
                }
            }
            let explained = waiting.then(|| {
                let mut seen = NoMatch::default();
                for (peer, listing) in self.book.listings() {
                    seen.count(self.why_not(now_ms, job, peer, listing.live_until_ms));
                }
                seen
            });
            let no_match = explained.filter(|seen| seen.matched() == 0);
            let starved: Vec<u64> = if self.idle.is_empty() {
                Vec::new() // every provider is busy: what waits is only queued
            } else {
                job.pending
                    .iter()
                    .take(self.knobs.pending_scan_max)
                    .map(|&(task, _)| task)
                    .filter(|&task| {
                        job.verifier
                            .as_ref()
                            .is_some_and(|v| v.needs_run(task) && v.holders(task).next().is_some())
                            && !self
                                .book
                                .ranked()
                                .any(|k| self.may_serve(job, &k.4) && self.may_run(job, task, &k.4))
                    })
                    .collect()
            };
            let job = self.jobs.get_mut(&job_id).expect("running");
            job.no_match = no_match;
            for task in starved {
                let job = self.jobs.get_mut(&job_id).expect("running");
                job.pending.retain(|&(t, _)| t != task);
                let actions = job
                    .verifier
                    .as_mut()
                    .map(|v| v.on_no_provider(task))
                    .unwrap_or_default();
                self.apply(now_ms, &job_id, actions);
            }
        }
        for (job_id, error) in spent {
            self.fail(&job_id, error);
        }
    }

    /// Why `peer` cannot take a task of `job` now, by the first reason.
    fn why_not(
        &self,
        now_ms: u64,
        job: &JobCore<P>,
        peer: &P,
        live_until_ms: u64,
    ) -> Result<(), Mismatch> {
        if now_ms > live_until_ms {
            return Err(Mismatch::Expired);
        }
        self.check_needs(job, peer)?;
        if job.excluded.contains(peer) || is_caught(self.records.get(peer)) {
            return Err(Mismatch::Excluded);
        }
        if self.in_flight(peer) >= self.credit(peer) {
            return Err(Mismatch::Busy);
        }
        Ok(())
    }
}
