//! One job as the core holds it: a table of its tasks (one small struct
//! each, not parallel vectors), its queue, its executions out, the results
//! waiting for their task to be settled, and what it learnt of its tasks'
//! run times.

use crate::{Knobs, Reported};
use market::{Needs, NoMatch};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use types::{Attempt, JobPhase, RequestId};
use verify::{JobVerifier, Method, Summary};

/// One task of a job.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TaskState {
    pub settled: bool,
    /// Fuel of its accepted result.
    pub fuel: u64,
    /// Attempt numbers used so far: each is used once, across restarts too.
    pub attempts: u32,
    /// Attempts that ended without a result (failures counted).
    pub failed: u32,
    /// Attempts lost with their provider (a disconnection, a refusal).
    pub lost: u32,
    /// A failed task waits until then before its next attempt (backoff).
    pub not_before_ms: u64,
    /// Given a speculative copy (once per task).
    pub speculated: bool,
}

/// An execution out with a provider.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Out<P> {
    pub peer: P,
    /// The request that carried it (a batch's attempts share one).
    pub request: RequestId,
    pub sent_at_ms: u64,
    /// Its provider's price when it was sent: the price agreed for it.
    pub price_per_gfuel: u64,
}

/// A provider's part in a job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Share {
    /// Its results that were accepted (alone or as an agreeing replica).
    pub tasks_done: u64,
    pub in_flight: u64,
    /// Fuel of its accepted results: what it is owed for this job.
    pub fuel: u64,
    /// Time its sandboxes spent running this job's tasks.
    pub busy_ms: u64,
}

pub(crate) struct JobCore<P> {
    pub spec: crate::JobSpec,
    pub phase: JobPhase,
    pub error: Option<String>,
    pub tasks: Vec<TaskState>,
    /// Why each task's failed attempts failed (a few per task).
    pub failure_reasons: HashMap<u64, Vec<String>>,
    /// Executions wanted now, with when they were queued (a task may
    /// appear once per replica wanted).
    pub pending: VecDeque<(u64, u64)>,
    /// Executions wanted once their task's backoff ends: (not before, task,
    /// queued at). Kept apart so that no provider's turn scans past them.
    pub backoff: BinaryHeap<Reverse<(u64, u64, u64)>>,
    pub running: HashMap<Attempt, Out<P>>,
    /// (sent at, attempt) of every execution sent; entries of executions no
    /// longer out are dropped when they reach the top.
    pub stragglers: BinaryHeap<Reverse<(u64, Attempt)>>,
    /// Results waiting for their task to be settled, per task.
    pub reported: HashMap<u64, Vec<(P, Reported)>>,
    /// The requester's own runs, waiting to be applied.
    pub local: HashMap<u64, Reported>,
    pub verifier: Option<JobVerifier<P>>,
    /// The job's own draws (where its replicas go), from its seed.
    pub rng: ChaCha8Rng,
    /// The last execution times (send to answer), for the median.
    pub durations: VecDeque<u64>,
    /// The straggler threshold from `durations`, while they are unchanged.
    pub straggler_after_ms: Option<u64>,
    /// Mean run time of a task so far (providers' figures, smoothed).
    pub task_ms: Option<f64>,
    /// The longest run time seen lately (slowly forgotten).
    pub task_ms_longest: f64,
    pub answer_bytes_max: u64,
    pub done: u64,
    pub retries: u64,
    pub fuel: u64,
    pub shares: BTreeMap<P, Share>,
    /// Providers left out of this job (caught, or failing its tasks).
    pub excluded: HashSet<P>,
    pub failures: HashMap<P, u32>,
    /// Why no offer took its tasks at the last tick, while none did.
    pub no_match: Option<NoMatch>,
    pub submitted_at_ms: u64,
    /// What the job may have to pay, in nanocredits (fuel × price per Gfuel):
    /// the worst case of each execution out, the cost of each result come
    /// back, and after a restart its settled tasks at its highest price. A
    /// budget bounds it; only results can be paid, so pay never exceeds it.
    pub committed_nano: u128,
}

/// Nanocredits that `fuel` costs at `price_per_gfuel` (credits per 10⁹ fuel).
pub(crate) fn cost_nano(fuel: u64, price_per_gfuel: u64) -> u128 {
    u128::from(fuel) * u128::from(price_per_gfuel)
}

/// Whole credits of a nanocredit amount, rounded up (for messages).
pub(crate) fn credits_ceil(nano: u128) -> u128 {
    nano.div_ceil(1_000_000_000)
}

impl<P: Copy + Ord + Hash> JobCore<P> {
    pub fn new(spec: crate::JobSpec, verifier: Option<JobVerifier<P>>, now_ms: u64) -> Self {
        let n = spec.tasks as usize;
        JobCore {
            rng: ChaCha8Rng::seed_from_u64(spec.draw_seed ^ 0x7265_706c_6963_6173),
            spec,
            phase: JobPhase::Running,
            error: None,
            tasks: vec![TaskState::default(); n],
            failure_reasons: HashMap::new(),
            pending: VecDeque::new(),
            backoff: BinaryHeap::new(),
            running: HashMap::new(),
            stragglers: BinaryHeap::new(),
            reported: HashMap::new(),
            local: HashMap::new(),
            verifier,
            durations: VecDeque::new(),
            straggler_after_ms: None,
            task_ms: None,
            task_ms_longest: 0.0,
            answer_bytes_max: 0,
            done: 0,
            retries: 0,
            fuel: 0,
            shares: BTreeMap::new(),
            excluded: HashSet::new(),
            failures: HashMap::new(),
            no_match: None,
            submitted_at_ms: now_ms,
            committed_nano: 0,
        }
    }

    /// The job's budget in nanocredits, if it has one.
    pub fn budget_nano(&self) -> Option<u128> {
        let budget = self.spec.requirements.budget?;
        Some(u128::from(budget.0) * 1_000_000_000)
    }

    /// The most one execution may cost at `price_per_gfuel`: its fuel limit's
    /// worth (0 unmetered, which a job with a budget never is).
    pub fn worst_nano(&self, price_per_gfuel: u64) -> u128 {
        cost_nano(self.spec.limits.fuel.unwrap_or(0), price_per_gfuel)
    }

    /// How many more executions the budget lets go out at `price_per_gfuel`.
    pub fn budget_room(&self, price_per_gfuel: u64) -> usize {
        let Some(budget) = self.budget_nano() else {
            return usize::MAX;
        };
        let worst = self.worst_nano(price_per_gfuel);
        let left = budget.saturating_sub(self.committed_nano);
        match left.checked_div(worst) {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => usize::MAX,
        }
    }

    /// An execution went out: its worst case is committed.
    pub fn commit_out(&mut self, out: &Out<P>) {
        self.committed_nano += self.worst_nano(out.price_per_gfuel);
    }

    /// An execution is no longer out: taken from those running, its worst
    /// case released (the one way an execution leaves `running`).
    pub fn take_out(&mut self, attempt: &Attempt) -> Option<Out<P>> {
        let out = self.running.remove(attempt)?;
        let worst = self.worst_nano(out.price_per_gfuel);
        self.committed_nano = self.committed_nano.saturating_sub(worst);
        Some(out)
    }

    /// A result came back: its cost (its fuel, at most the limit, at the
    /// price agreed) is committed, whether or not it is the one paid.
    pub fn commit_result(&mut self, out: &Out<P>, fuel: u64) {
        let fuel = fuel.min(self.spec.limits.fuel.unwrap_or(0));
        self.committed_nano += cost_nano(fuel, out.price_per_gfuel);
    }

    pub fn needs(&self) -> Needs<'_> {
        Needs {
            requirements: &self.spec.requirements,
            task_memory_bytes: self.spec.limits.memory_bytes_max,
        }
    }

    pub fn share(&mut self, peer: P) -> &mut Share {
        self.shares.entry(peer).or_default()
    }

    /// Every task settled, and the verifier has nothing open.
    pub fn is_complete(&self) -> bool {
        self.done == self.tasks.len() as u64
            && self.verifier.as_ref().is_none_or(|v| v.is_complete())
    }

    /// Whether a provider's turn could find work here now (after [`JobCore::promote`]).
    pub fn may_hand_out(&self) -> bool {
        self.phase == JobPhase::Running && !self.pending.is_empty()
    }

    /// Executions wanted, waiting on a backoff or not.
    pub fn wanted(&self) -> usize {
        self.pending.len() + self.backoff.len()
    }

    /// Executions whose backoff has ended join the front of the queue.
    pub fn promote(&mut self, now_ms: u64) {
        while let Some(&Reverse((not_before, task, queued_ms))) = self.backoff.peek() {
            if not_before > now_ms {
                break;
            }
            self.backoff.pop();
            self.pending.push_front((task, queued_ms));
        }
    }

    /// Queues an execution of `task` at the front (retries and replicas
    /// go before fresh work): providers look at the job again.
    pub fn queue(&mut self, task: u64, now_ms: u64) {
        let not_before = self.tasks[task as usize].not_before_ms;
        if not_before > now_ms {
            self.backoff.push(Reverse((not_before, task, now_ms)));
        } else {
            self.pending.push_front((task, now_ms));
        }
    }

    pub fn report(&mut self, task: u64, peer: P, reported: Reported) {
        let results = self.reported.entry(task).or_default();
        match results.iter_mut().find(|(p, _)| *p == peer) {
            Some(slot) => slot.1 = reported,
            None => results.push((peer, reported)),
        }
    }

    /// `from`'s result for `task` (None: the requester's own run).
    pub fn result_of(&self, task: u64, from: Option<P>) -> Option<&Reported> {
        match from {
            Some(peer) => self
                .reported
                .get(&task)?
                .iter()
                .find(|(p, _)| *p == peer)
                .map(|(_, r)| r),
            None => self.local.get(&task),
        }
    }

    /// The providers' run times of one answer: they shape batches.
    /// Whole milliseconds: 0 is a task well under one.
    pub fn learn_run_times(&mut self, ran_ms: &[u64]) {
        let Some(&longest) = ran_ms.iter().max() else {
            return;
        };
        let as_ms = |ms: u64| if ms == 0 { 0.1 } else { ms as f64 + 0.5 };
        let mean = ran_ms.iter().map(|&ms| as_ms(ms)).sum::<f64>() / ran_ms.len() as f64;
        self.task_ms = Some(self.task_ms.map_or(mean, |m| 0.8 * m + 0.2 * mean));
        // The longest counts at once and is forgotten slowly.
        let longest = as_ms(longest);
        self.task_ms_longest = if longest >= self.task_ms_longest {
            longest
        } else {
            0.95 * self.task_ms_longest + 0.05 * longest
        };
    }

    pub fn remember_duration(&mut self, ms: u64, knobs: &Knobs) {
        if self.durations.len() >= knobs.durations_kept {
            self.durations.pop_front();
        }
        self.durations.push_back(ms);
        self.straggler_after_ms = None;
    }

    /// How long an execution may run before it counts as a straggler: a
    /// multiple of the job's median, once the job has one.
    pub fn straggler_after_ms(&mut self, knobs: &Knobs) -> Option<u64> {
        if self.durations.is_empty() {
            return None;
        }
        if self.straggler_after_ms.is_none() {
            let mut sorted: Vec<u64> = self.durations.iter().copied().collect();
            sorted.sort_unstable();
            let median = sorted[sorted.len() / 2];
            self.straggler_after_ms =
                Some((median * knobs.speculate_factor).max(knobs.speculate_after_min_ms));
        }
        self.straggler_after_ms
    }

    /// How many tasks one request carries: short tasks go several at once
    /// (about `batch_target_ms` of work per request), long ones alone; near
    /// a job's end, no more than an equal share of what is left per slot,
    /// so that no provider holds the tail while others idle.
    pub fn batch_size(&self, slots_live: u64, knobs: &Knobs) -> usize {
        let Some(task_ms) = self.task_ms else {
            return 1; // the first answers measure the job's tasks
        };
        // Tasks that may each take longer than a batch's worth go alone:
        // uneven tasks in one batch would hold one slot while another idles.
        if self.task_ms_longest > knobs.batch_target_ms {
            return 1;
        }
        let by_time = (knobs.batch_target_ms / task_ms.max(0.05)) as usize;
        let fair_share = (self.wanted() as u64)
            .div_ceil(slots_live.max(1) * knobs.batch_shares_per_slot)
            as usize;
        // A batch's answer must fit its bound: tasks with long stderr tails
        // or many outputs go fewer at a time.
        let by_bytes = (knobs.batch_bytes_budget / self.answer_bytes_max.max(1)) as usize;
        by_time
            .min(fair_share)
            .min(by_bytes)
            .clamp(1, knobs.batch_tasks_max.max(1))
    }

    /// Counts a failed attempt of `task`: its reason kept, the task backs
    /// off; past `attempts_max`, the job's failure naming the reasons.
    /// Attempts `lost` with no one at fault count against
    /// `lost_attempts_max` instead.
    pub fn count_failure(
        &mut self,
        task: u64,
        reason: &str,
        lost: bool,
        now_ms: u64,
        knobs: &Knobs,
    ) -> Option<String> {
        self.retries += 1;
        let t = &mut self.tasks[task as usize];
        if lost {
            t.lost += 1;
            if t.lost < knobs.lost_attempts_max {
                t.not_before_ms = now_ms + knobs.retry_backoff_ms;
                return None;
            }
        }
        t.failed += 1;
        let failed = t.failed;
        t.not_before_ms = now_ms + knobs.backoff_ms(failed);
        let reasons = self.failure_reasons.entry(task).or_default();
        if reasons.len() < crate::FAILURE_REASONS_KEPT {
            reasons.push(reason.to_owned());
        }
        if failed >= knobs.attempts_max {
            let all: Vec<String> = reasons
                .iter()
                .enumerate()
                .map(|(n, r)| format!("{}) {r}", n + 1))
                .collect();
            return Some(format!(
                "task {task} failed {} attempts: {}",
                knobs.attempts_max,
                all.join("; ")
            ));
        }
        None
    }
}

/// Where one task stands, for the API's task list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskStanding<P> {
    pub settled: bool,
    pub running_on: Vec<P>,
    pub attempts: u32,
    /// How its accepted result was established (None: not settled, or
    /// settled unverified).
    pub method: Option<Method>,
}

/// A read-only look at one job.
pub struct JobView<'a, P> {
    pub(crate) core: &'a JobCore<P>,
}

impl<P: Copy + Ord + Hash> JobView<'_, P> {
    pub fn phase(&self) -> JobPhase {
        self.core.phase
    }
    pub fn error(&self) -> Option<&str> {
        self.core.error.as_deref()
    }
    pub fn tasks_total(&self) -> u64 {
        self.core.tasks.len() as u64
    }
    pub fn tasks_done(&self) -> u64 {
        self.core.done
    }
    pub fn in_flight(&self) -> u64 {
        self.core.running.len() as u64
    }
    pub fn pending(&self) -> u64 {
        self.core.wanted() as u64
    }
    /// What the job has committed to pay so far, in whole credits (rounded up).
    pub fn committed_credits(&self) -> u128 {
        credits_ceil(self.core.committed_nano)
    }

    pub fn retries(&self) -> u64 {
        self.core.retries
    }
    pub fn fuel(&self) -> u64 {
        self.core.fuel
    }
    pub fn shares(&self) -> impl Iterator<Item = (&P, &Share)> {
        self.core.shares.iter()
    }
    pub fn no_match(&self) -> Option<NoMatch> {
        self.core.no_match
    }
    pub fn submitted_at_ms(&self) -> u64 {
        self.core.submitted_at_ms
    }
    pub fn spec(&self) -> &crate::JobSpec {
        &self.core.spec
    }
    pub fn excluded(&self) -> impl Iterator<Item = &P> {
        self.core.excluded.iter()
    }
    pub fn is_excluded(&self, peer: &P) -> bool {
        self.core.excluded.contains(peer)
    }
    /// Executions handed out so far, over all tasks.
    pub fn executions(&self) -> u64 {
        self.core.tasks.iter().map(|t| u64::from(t.attempts)).sum()
    }
    pub fn summary(&self) -> Option<Summary<P>> {
        self.core.verifier.as_ref().map(|v| v.summary())
    }
    pub fn task(&self, task: u64) -> Option<TaskStanding<P>> {
        let t = self.core.tasks.get(task as usize)?;
        let mut running_on: Vec<P> = (1..=t.attempts)
            .filter_map(|attempt| self.core.running.get(&Attempt { task, attempt }))
            .map(|o| o.peer)
            .collect();
        running_on.sort();
        Some(TaskStanding {
            settled: t.settled,
            running_on,
            attempts: t.attempts,
            method: self.core.verifier.as_ref().and_then(|v| v.accepted(task)),
        })
    }
    /// Whether `task` is settled (its fuel then counts in [`JobView::fuel`]).
    pub fn is_settled(&self, task: u64) -> bool {
        self.core
            .tasks
            .get(task as usize)
            .is_some_and(|t| t.settled)
    }
}
