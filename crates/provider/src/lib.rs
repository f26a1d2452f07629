//! The provider's core: which requests it takes, in what order they get a
//! slot, what a cancel stops, what it records, and when it publishes its
//! offer. Pure: time arrives as `now_ms`, nothing is read or written here;
//! the node (and `sim`) carry out the [`Action`]s it returns.
//!
//! A request (one task, or a batch of them) lives through four stages:
//! **admitted** (the node fetches its module and inputs by hash),
//! **waiting** for a slot, **running** on one slot, and **done** (answered;
//! its runs recorded). A request takes one slot whatever its number of
//! tasks. Waiting requests get a slot **round robin across requesters**, not
//! in arrival order: a requester that sends many requests waits its turn
//! behind one that sends few, so no requester crowds out the others.
//!
//! Admission bounds what a provider holds: all requests together
//! (`slots + queued_max`), and each requester's unanswered ones
//! (`slots + queued_per_requester_max`: its credit window of slots + 1 and
//! one to spare). A task asking for more memory than the provider allows is
//! refused before anything is fetched.
//!
//! The ways a provider may lie ([`Strategy`]) are here too, as one concept:
//! the adversary build of the node and the simulation's providers draw
//! from the same definitions.

mod strategy;
#[cfg(test)]
mod tests;

pub use strategy::{Forgery, Strategy, draw_percent};

use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use types::limits::BATCH_TASKS_MAX;
use types::offer::{OFFER_TTL_MS, Offer};
use types::{Attempt, JobId, RequestId};

/// Requests accepted beyond the free slots, waiting for one (the requesters'
/// prefetch).
pub const QUEUED_TASKS_MAX: u32 = 4;
/// Requests one requester may hold here beyond the slots (a bound the
/// requester keeps too: its credit window is at most slots +
/// `PREFETCH_PER_PROVIDER_MAX`, and one more covers an answer on its way).
pub use types::limits::QUEUED_PER_REQUESTER_MAX;
/// What a task stopped by its requester answers.
pub const CANCELLED: &str = "cancelled by the requester";
/// How often the offer is published while nothing changes.
pub const OFFER_INTERVAL_MS: u64 = 2_000;

/// What a provider is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Knobs {
    /// Requests run at once.
    pub slots: u32,
    /// See [`QUEUED_TASKS_MAX`].
    pub queued_max: u32,
    /// See [`QUEUED_PER_REQUESTER_MAX`].
    pub queued_per_requester_max: u32,
    /// The most memory one task may ask for.
    pub task_memory_bytes_max: u64,
    pub offer_interval_ms: u64,
}

impl Knobs {
    /// The default bounds for a provider of `slots` slots.
    pub fn new(slots: u32, task_memory_bytes_max: u64) -> Knobs {
        Knobs {
            slots: slots.max(1),
            queued_max: QUEUED_TASKS_MAX,
            queued_per_requester_max: QUEUED_PER_REQUESTER_MAX,
            task_memory_bytes_max,
            offer_interval_ms: OFFER_INTERVAL_MS,
        }
    }

    fn accepted_max(&self) -> u32 {
        self.slots.saturating_add(self.queued_max)
    }

    fn per_requester_max(&self) -> u32 {
        self.slots.saturating_add(self.queued_per_requester_max)
    }
}

/// A task as admission sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub job: JobId,
    pub attempt: Attempt,
    pub memory_bytes_max: u64,
}

/// What ran, for the record of what this provider is owed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    pub job: JobId,
    pub attempt: Attempt,
    pub fuel: u64,
    /// The outcome as the record shows it.
    pub outcome: String,
}

/// What the core is told.
#[derive(Clone, Debug)]
pub enum Input<R> {
    /// A requester asks for these tasks to be run (one request, one slot).
    Request {
        from: R,
        tasks: Vec<Task>,
    },
    /// The requester stops these attempts of its job (every attempt of the
    /// job when none is named).
    Cancel {
        from: R,
        job: JobId,
        attempts: Vec<Attempt>,
    },
    /// The module and inputs of an admitted request are here (or could not
    /// be fetched: the request is answered with the reason and ends).
    Fetched {
        request: RequestId,
        result: Result<(), String>,
    },
    /// A request was answered: each run that produced a result.
    Done {
        request: RequestId,
        ran: Vec<Ran>,
    },
    /// A requester connected: it should hear the offer soon.
    RequesterCame,
    /// A requester is gone (disconnected) and will never read its answers:
    /// its tasks here stop. Should it come back, it sends them again.
    RequesterGone {
        from: R,
    },
    Tick,
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Refusal {
    /// Not 1 to [`BATCH_TASKS_MAX`] tasks.
    BatchSize { tasks: usize },
    /// Every slot and queue place is taken.
    Busy { accepted: u32 },
    /// This requester holds as many unanswered requests as one may.
    BusyForYou { held: u32 },
    /// A task asks for more memory than this provider allows.
    Memory {
        asked_bytes: u64,
        allowed_bytes: u64,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BatchSize { tasks } => write!(
                f,
                "a batch of {tasks} tasks (1 to BATCH_TASKS_MAX = {BATCH_TASKS_MAX})"
            ),
            Refusal::Busy { accepted } => write!(f, "busy: {accepted} requests accepted"),
            Refusal::BusyForYou { held } => write!(
                f,
                "busy: {held} of your requests accepted, the most one requester may hold here"
            ),
            Refusal::Memory {
                asked_bytes,
                allowed_bytes,
            } => write!(
                f,
                "task asks for {asked_bytes} bytes of memory, this provider allows {allowed_bytes}"
            ),
        }
    }
}

/// What the core wants recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write<R> {
    /// A run that answered with a result, done at `finished_at_ms`.
    Run {
        requester: R,
        ran: Ran,
        finished_at_ms: u64,
    },
}

/// What the core decides; the shell carries it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<R> {
    /// Answer the request just stepped: refused.
    Refuse(Refusal),
    /// The request just stepped is taken under this id: fetch what its
    /// tasks need, then step [`Input::Fetched`].
    Admit {
        request: RequestId,
    },
    /// Run this request on a slot; `alone` when nothing else runs here.
    Start {
        request: RequestId,
        alone: bool,
    },
    /// Answer this request with why it failed, without running it.
    Fail {
        request: RequestId,
        reason: String,
    },
    /// Stop these attempts of a request (they answer "cancelled").
    Stop {
        request: RequestId,
        attempts: Vec<Attempt>,
    },
    /// Answer the cancel just stepped: this many tasks were still held.
    Cancelled {
        count: u32,
    },
    /// Record, in one transaction with the step's other writes.
    Persist(Write<R>),
    Publish(Offer),
}

/// What a provider tells about itself in its offer, apart from what the
/// core keeps (free slots, expiry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terms {
    pub cores: u32,
    pub memory_bytes: u64,
    pub price_per_gfuel: u64,
    pub fuel_per_sec: u64,
    pub engine: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Admitted,
    Waiting,
    Running,
}

#[derive(Clone, Debug)]
struct Held<R> {
    from: R,
    tasks: Vec<(JobId, Attempt, bool)>,
    stage: Stage,
    /// Counted in its requester's share: until answered, or until every
    /// task of it is stopped (the requester counts it free once it
    /// cancelled it; it is answered at once).
    counted: bool,
}

/// What the provider has done, for its status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub tasks_run: u64,
    pub fuel_used: u64,
}

/// The provider's core. `R` names a requester (a `PeerId` in the node, a
/// number in the simulation).
#[derive(Clone, Debug)]
pub struct Core<R> {
    knobs: Knobs,
    terms: Terms,
    strategy: Strategy,
    requests: BTreeMap<RequestId, Held<R>>,
    /// Unanswered requests per requester.
    held_by: BTreeMap<R, u32>,
    /// Waiting requests per requester, in arrival order, and the
    /// requesters with any, in turn order.
    waiting: BTreeMap<R, VecDeque<RequestId>>,
    turns: VecDeque<R>,
    running: u32,
    next_request: RequestId,
    next_offer_ms: u64,
    totals: Totals,
}

impl<R: Copy + Ord + Hash + fmt::Debug> Core<R> {
    /// A provider with these bounds and terms, and the totals of what it
    /// ran before (from its records).
    pub fn new(knobs: Knobs, terms: Terms, strategy: Strategy, totals: Totals) -> Core<R> {
        Core {
            knobs,
            terms,
            strategy,
            requests: BTreeMap::new(),
            held_by: BTreeMap::new(),
            waiting: BTreeMap::new(),
            turns: VecDeque::new(),
            running: 0,
            next_request: RequestId(0),
            next_offer_ms: 0,
            totals,
        }
    }

    pub fn knobs(&self) -> &Knobs {
        &self.knobs
    }

    pub fn terms(&self) -> &Terms {
        &self.terms
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Slots not taken by a request (running or waiting for one).
    pub fn slots_free(&self) -> u32 {
        self.knobs.slots.saturating_sub(self.requests.len() as u32)
    }

    pub fn running(&self) -> u32 {
        self.running
    }

    /// Requests held: admitted, waiting or running.
    pub fn held(&self) -> usize {
        self.requests.len()
    }

    /// The offer as it would be published at `now_ms`.
    pub fn offer(&self, now_ms: u64) -> Offer {
        Offer {
            cores: self.terms.cores,
            memory_bytes: self.terms.memory_bytes,
            task_memory_bytes_max: self.knobs.task_memory_bytes_max,
            slots_total: self.knobs.slots,
            slots_free: self.slots_free(),
            price_per_gfuel: self.terms.price_per_gfuel,
            fuel_per_sec: self.terms.fuel_per_sec,
            engine: self.terms.engine.clone(),
            expires_at_ms: now_ms.saturating_add(OFFER_TTL_MS),
        }
    }

    pub fn step(&mut self, now_ms: u64, input: Input<R>) -> Vec<Action<R>> {
        let mut out = Vec::new();
        match input {
            Input::Request { from, tasks } => self.on_request(from, tasks, &mut out),
            Input::Cancel {
                from,
                job,
                attempts,
            } => {
                let count = self.cancel(from, Some(&job), &attempts, &mut out);
                out.push(Action::Cancelled { count });
            }
            Input::Fetched { request, result } => {
                match (self.requests.get_mut(&request), result) {
                    (Some(held), Ok(())) if held.stage == Stage::Admitted => {
                        held.stage = Stage::Waiting;
                        let from = held.from;
                        let queue = self.waiting.entry(from).or_default();
                        if queue.is_empty() {
                            self.turns.push_back(from);
                        }
                        queue.push_back(request);
                    }
                    (Some(held), Err(reason)) if held.stage == Stage::Admitted => {
                        self.end(request);
                        out.push(Action::Fail { request, reason });
                    }
                    _ => {} // not ours, or not fetching: nothing to do
                }
            }
            Input::Done { request, ran } => {
                if let Some(held) = self.requests.get(&request)
                    && held.stage == Stage::Running
                {
                    let requester = held.from;
                    self.running -= 1;
                    self.end(request);
                    for ran in ran {
                        self.totals.tasks_run += 1;
                        self.totals.fuel_used = self.totals.fuel_used.saturating_add(ran.fuel);
                        out.push(Action::Persist(Write::Run {
                            requester,
                            ran,
                            finished_at_ms: now_ms,
                        }));
                    }
                }
            }
            Input::RequesterCame => self.next_offer_ms = now_ms,
            Input::RequesterGone { from } => {
                self.cancel(from, None, &[], &mut out);
            }
            Input::Tick => {
                if now_ms >= self.next_offer_ms {
                    self.next_offer_ms = now_ms.saturating_add(self.knobs.offer_interval_ms);
                    out.push(Action::Publish(self.offer(now_ms)));
                }
            }
        }
        self.start_waiting(&mut out);
        out
    }

    fn on_request(&mut self, from: R, tasks: Vec<Task>, out: &mut Vec<Action<R>>) {
        if tasks.is_empty() || tasks.len() > BATCH_TASKS_MAX {
            return out.push(Action::Refuse(Refusal::BatchSize { tasks: tasks.len() }));
        }
        let accepted = self.requests.len() as u32;
        if accepted >= self.knobs.accepted_max() {
            return out.push(Action::Refuse(Refusal::Busy { accepted }));
        }
        let held = self.held_by.get(&from).copied().unwrap_or(0);
        if held >= self.knobs.per_requester_max() {
            return out.push(Action::Refuse(Refusal::BusyForYou { held }));
        }
        if let Some(t) = tasks
            .iter()
            .find(|t| t.memory_bytes_max > self.knobs.task_memory_bytes_max)
        {
            return out.push(Action::Refuse(Refusal::Memory {
                asked_bytes: t.memory_bytes_max,
                allowed_bytes: self.knobs.task_memory_bytes_max,
            }));
        }
        if self.strategy == Strategy::Silent {
            // Taken and never answered: nothing is held, nothing is run.
            return;
        }
        let request = self.next_request.take_next();
        *self.held_by.entry(from).or_default() += 1;
        self.requests.insert(
            request,
            Held {
                from,
                tasks: tasks
                    .into_iter()
                    .map(|t| (t.job, t.attempt, false))
                    .collect(),
                stage: Stage::Admitted,
                counted: true,
            },
        );
        out.push(Action::Admit { request });
    }

    /// Stops `from`'s attempts named (all of the job's when none is named;
    /// every job's when no job is); how many were still held and not yet
    /// stopped.
    fn cancel(
        &mut self,
        from: R,
        job: Option<&JobId>,
        attempts: &[Attempt],
        out: &mut Vec<Action<R>>,
    ) -> u32 {
        let mut count = 0u32;
        let mut ended = Vec::new();
        let mut uncounted = Vec::new();
        for (&request, held) in self.requests.iter_mut().filter(|(_, h)| h.from == from) {
            let mut stopped = Vec::new();
            for (j, a, cancelled) in &mut held.tasks {
                let named =
                    job.is_none_or(|job| job == j) && (attempts.is_empty() || attempts.contains(a));
                if named && !*cancelled {
                    *cancelled = true;
                    stopped.push(*a);
                }
            }
            if !stopped.is_empty() {
                count += stopped.len() as u32;
                out.push(Action::Stop {
                    request,
                    attempts: stopped,
                });
                // Nothing of it left to run, and it has not started: it
                // ends now, so it holds neither a slot nor its requester's
                // share (the requester counts it free once cancelled).
                if held.tasks.iter().all(|(_, _, c)| *c) {
                    if held.stage == Stage::Running {
                        // Stopped mid-run: answered as soon as the sandbox
                        // stops; it keeps its slot until then.
                        if held.counted {
                            held.counted = false;
                            uncounted.push(held.from);
                        }
                    } else {
                        ended.push(request);
                    }
                }
            }
        }
        for from in uncounted {
            self.uncount(from);
        }
        for request in ended {
            self.end(request);
            out.push(Action::Fail {
                request,
                reason: CANCELLED.into(),
            });
        }
        count
    }

    /// Gives free slots to waiting requests, one requester's turn at a time.
    fn start_waiting(&mut self, out: &mut Vec<Action<R>>) {
        while self.running < self.knobs.slots {
            let Some(from) = self.turns.pop_front() else {
                return;
            };
            let Some(queue) = self.waiting.get_mut(&from) else {
                continue;
            };
            let Some(request) = queue.pop_front() else {
                self.waiting.remove(&from);
                continue;
            };
            if queue.is_empty() {
                self.waiting.remove(&from);
            } else {
                self.turns.push_back(from);
            }
            if let Some(held) = self.requests.get_mut(&request) {
                held.stage = Stage::Running;
                self.running += 1;
                out.push(Action::Start {
                    request,
                    alone: self.running == 1,
                });
            }
        }
    }

    /// A request leaves (answered, or failed or cancelled before it ran).
    fn end(&mut self, request: RequestId) {
        let Some(held) = self.requests.remove(&request) else {
            return;
        };
        if held.counted {
            self.uncount(held.from);
        }
        if held.stage == Stage::Waiting
            && let Some(queue) = self.waiting.get_mut(&held.from)
        {
            queue.retain(|r| *r != request);
            if queue.is_empty() {
                self.waiting.remove(&held.from);
                self.turns.retain(|r| *r != held.from);
            }
        }
    }

    fn uncount(&mut self, from: R) {
        if let Some(n) = self.held_by.get_mut(&from) {
            *n -= 1;
            if *n == 0 {
                self.held_by.remove(&from);
            }
        }
    }

    /// Checks the core's own bookkeeping (tests and the simulation call it
    /// after every step).
    pub fn check(&self) -> Result<(), String> {
        let running = self
            .requests
            .values()
            .filter(|h| h.stage == Stage::Running)
            .count() as u32;
        if running != self.running || running > self.knobs.slots {
            return Err(format!(
                "{running} requests running, {} counted, {} slots",
                self.running, self.knobs.slots
            ));
        }
        if self.requests.len() as u32 > self.knobs.accepted_max() {
            return Err(format!("{} requests held", self.requests.len()));
        }
        for (from, n) in &self.held_by {
            let actual = self
                .requests
                .values()
                .filter(|h| h.from == *from && h.counted)
                .count() as u32;
            if actual != *n || *n > self.knobs.per_requester_max() {
                return Err(format!("{from:?} holds {actual}, counted {n}"));
            }
        }
        let waiting: usize = self.waiting.values().map(VecDeque::len).sum();
        let stage_waiting = self
            .requests
            .values()
            .filter(|h| h.stage == Stage::Waiting)
            .count();
        if waiting != stage_waiting || self.turns.len() != self.waiting.len() {
            return Err(format!(
                "{waiting} queued, {stage_waiting} waiting, {} turns for {} requesters",
                self.turns.len(),
                self.waiting.len()
            ));
        }
        if waiting > 0 && self.running < self.knobs.slots {
            return Err("a request waits while a slot is free".into());
        }
        Ok(())
    }
}
