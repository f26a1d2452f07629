//! A deterministic simulation of the requester's real core: one
//! [`scheduler::Scheduler`] (with the real `market` book and `verify`
//! verifier inside it), many providers with a model of execution and a
//! strategy each, a network with latency, loss, duplication, reordering,
//! partitions and churn, and requester crashes with restore **from the
//! persisted writes alone**, all on one seeded event heap.
//!
//! The shell here is the simulation's own `execute`: it commits a step's
//! writes to a model of the disk and only then delivers its sends, as the
//! node must; `skip_commit_check` re-introduces the old defect (sends go out
//! although their commit failed) so that a test can show the checker fails.
//!
//! After every step the invariants are checked ([`Violation`]): every send
//! was preceded by its persisted attempt; no provider holds more requests
//! than its credit; no attempt number is reused, across restarts too; every
//! result accepted by replicas is unanimous among the providers not caught,
//! and one accepted by ground truth is the honest one; the job's fuel is
//! the fuel of its settled tasks; nothing is settled twice; the no-match
//! counts cover every offer; and the job ends while honest providers are
//! reachable. A seed replays the same trace: the run prints a trace hash.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scheduler::{
    Action, Answer, Input, JobSpec, Knobs, Reported, Restored, Scheduler, SettledTask, Write,
};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use types::{Attempt, Failure, JobId, JobPhase, Offer, RequestId, Requirements, TaskLimits};
use verify::{Claim, Method, Policy, Record};

/// Providers one simulation may have.
pub const SIM_PROVIDERS_MAX: u32 = 100_000;
/// Tasks one simulation may have (the job file's own bound).
pub const SIM_TASKS_MAX: u64 = types::limits::TASKS_PER_JOB_MAX;
/// Simulated time a run may take before it counts as stuck.
pub const SIM_TIME_MS_MAX: u64 = 24 * 3_600_000;
/// How often the shell ticks the core (the node ticks as often).
pub const TICK_MS: u64 = 100;
/// How often a provider publishes its offer again (its time to live is
/// `types::offer::OFFER_TTL_MS`).
pub const REPUBLISH_MS: u64 = 20_000;

const ENGINE: &str = "sim";

/// How a provider behaves. One concept for the adversaries of the
/// simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Honest,
    /// Wrong on half of its tasks, each wrong output its own.
    AlwaysWrong,
    /// The coalition agrees, by task, on a tenth of the tasks to cheat on,
    /// and returns the same wrong output on them.
    Colluding,
    /// Honest for its first ten executions, then wrong on 5% of tasks.
    Intermittent,
    /// The right output, but it claims twice the fuel it used.
    FuelLiar,
    /// Answers with a result of another task (the shell's binding check
    /// rejects it).
    Replayer,
    /// Takes tasks and never answers.
    Silent,
    /// Honest, ten times slower than its benchmark says.
    Slow,
}

impl Strategy {
    pub const ALL: [Strategy; 8] = [
        Strategy::Honest,
        Strategy::AlwaysWrong,
        Strategy::Colluding,
        Strategy::Intermittent,
        Strategy::FuelLiar,
        Strategy::Replayer,
        Strategy::Silent,
        Strategy::Slow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Honest => "honest",
            Strategy::AlwaysWrong => "always_wrong",
            Strategy::Colluding => "colluding",
            Strategy::Intermittent => "intermittent",
            Strategy::FuelLiar => "fuel_liar",
            Strategy::Replayer => "replayer",
            Strategy::Silent => "silent",
            Strategy::Slow => "slow",
        }
    }

    pub fn parse(name: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether it returns wrong results (the others are honest, if unhelpful).
    pub fn cheats(self) -> bool {
        matches!(
            self,
            Strategy::AlwaysWrong
                | Strategy::Colluding
                | Strategy::Intermittent
                | Strategy::FuelLiar
                | Strategy::Replayer
        )
    }
}

/// The share of providers of each strategy (the rest are honest).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mix(pub Vec<(Strategy, f64)>);

impl Default for Mix {
    /// 70% honest; slow 5%, silent 3%, always wrong 5%, colluding 5%,
    /// intermittent 5%, fuel liars 4%, replayers 3%.
    fn default() -> Self {
        Mix(vec![
            (Strategy::Slow, 0.05),
            (Strategy::Silent, 0.03),
            (Strategy::AlwaysWrong, 0.05),
            (Strategy::Colluding, 0.05),
            (Strategy::Intermittent, 0.05),
            (Strategy::FuelLiar, 0.04),
            (Strategy::Replayer, 0.03),
        ])
    }
}

impl Mix {
    pub fn honest() -> Mix {
        Mix(Vec::new())
    }

    /// `name=share,name=share`, e.g. `colluding=0.2`.
    pub fn parse(text: &str) -> Result<Mix, SimError> {
        let mut mix = Vec::new();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (name, share) = part
                .split_once('=')
                .ok_or_else(|| SimError::Mix(format!("{part:?} is not name=share")))?;
            let strategy = Strategy::parse(name)
                .ok_or_else(|| SimError::Mix(format!("no strategy {name:?}")))?;
            let share: f64 = share
                .parse()
                .map_err(|_| SimError::Mix(format!("{share:?} is not a share")))?;
            mix.push((strategy, share));
        }
        let total: f64 = mix.iter().map(|(_, s)| s).sum();
        if !(0.0..=1.0).contains(&total) || mix.iter().any(|(_, s)| *s < 0.0) {
            return Err(SimError::Mix(format!(
                "shares sum to {total}, not within 0..=1"
            )));
        }
        Ok(Mix(mix))
    }
}

/// Faults of the network and the requester.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Faults {
    /// One-way latency per provider, drawn in this range, plus up to 20% jitter.
    pub latency_ms: (u64, u64),
    /// Chance that an answer is lost (its request times out).
    pub loss: f64,
    /// Chance that an answer arrives twice.
    pub duplication: f64,
    /// Partitions: now and then a tenth of the providers is cut off a while.
    pub partitions: bool,
    /// Churn: providers leave (disconnect) and come back.
    pub churn: bool,
    /// Requester crashes, each followed by a restore from the writes.
    pub crashes: u32,
    /// One commit of the requester's writes fails, at a random step.
    pub commit_failure: bool,
}

impl Faults {
    pub fn none() -> Faults {
        Faults {
            latency_ms: (1, 1),
            loss: 0.0,
            duplication: 0.0,
            partitions: false,
            churn: false,
            crashes: 0,
            commit_failure: false,
        }
    }
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency_ms: (1, 50),
            loss: 0.001,
            duplication: 0.001,
            partitions: true,
            churn: true,
            crashes: 1,
            commit_failure: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimConfig {
    pub providers: u32,
    pub tasks: u64,
    pub seed: u64,
    pub mix: Mix,
    pub faults: Faults,
    pub verify: bool,
    /// Knobs drawn per seed instead of the defaults.
    pub random_knobs: bool,
    /// Every provider alike (one slot, one speed, one price), as in
    /// `verify`'s own simulation, so that its figures can be compared.
    pub uniform: bool,
    /// Test only: deliver a step's sends even when its commit failed (the
    /// defect the invariants must catch).
    pub skip_commit_check: bool,
}

impl SimConfig {
    pub fn new(providers: u32, tasks: u64, seed: u64) -> SimConfig {
        SimConfig {
            providers,
            tasks,
            seed,
            mix: Mix::default(),
            faults: Faults::default(),
            verify: true,
            random_knobs: false,
            uniform: false,
            skip_commit_check: false,
        }
    }

    /// The one line that replays this run.
    pub fn replay_command(&self) -> String {
        let mix: Vec<String> = self
            .mix
            .0
            .iter()
            .map(|(s, share)| format!("{}={share}", s.name()))
            .collect();
        let f = &self.faults;
        format!(
            "cargo run --release -p sim -- --providers {} --tasks {} --seed {} --mix '{}' --latency-ms {}..{} --loss {} --duplication {} --crashes {}{}{}{}{}{}{}{}",
            self.providers,
            self.tasks,
            self.seed,
            mix.join(","),
            f.latency_ms.0,
            f.latency_ms.1,
            f.loss,
            f.duplication,
            f.crashes,
            if f.partitions { "" } else { " --no-partitions" },
            if f.churn { "" } else { " --no-churn" },
            if f.commit_failure {
                " --commit-failure"
            } else {
                ""
            },
            if self.verify { "" } else { " --no-verify" },
            if self.random_knobs {
                " --random-knobs"
            } else {
                ""
            },
            if self.uniform { " --uniform" } else { "" },
            if self.skip_commit_check {
                " --skip-commit-check"
            } else {
                ""
            },
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("bad --mix: {0}")]
    Mix(String),
    #[error("{what} {value} is over its bound {max}")]
    TooLarge {
        what: &'static str,
        value: u64,
        max: u64,
    },
}

/// An invariant that failed, with when and what.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    pub at_ms: u64,
    pub step: u64,
    pub invariant: &'static str,
    pub detail: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub seed: u64,
    pub providers: u32,
    pub tasks: u64,
    pub phase: String,
    pub error: Option<String>,
    pub steps: u64,
    pub events: u64,
    pub sim_time_ms: u64,
    pub wall_ms: u64,
    pub events_per_sec: f64,
    pub trace_hash: String,
    /// Settled tasks whose accepted result is not the honest one.
    pub wrong_in_output: u64,
    /// (executions + ground-truth runs) / tasks - 1.
    pub extra_per_task: f64,
    pub cheaters: u64,
    pub cheaters_excluded: u64,
    pub honest_excluded: u64,
    pub ground_truth_runs: u64,
    pub speculated: u64,
    pub timed_out: u64,
    pub crashes: u32,
    pub commit_failed: bool,
    pub violations: Vec<Violation>,
    pub replay: String,
}

/// A provider as the simulation models it.
struct Provider {
    strategy: Strategy,
    slots: u32,
    /// What its offer says.
    fuel_per_sec: u64,
    price_per_gfuel: u64,
    latency_ms: u64,
    up: bool,
    /// Bumped when it goes down: its work in progress is lost.
    incarnation: u32,
    cut_until_ms: u64,
    running: u32,
    queue: VecDeque<Work>,
    executed: u64,
}

/// A request as a provider holds it.
#[derive(Clone, Debug)]
struct Work {
    request: RequestId,
    attempts: Vec<Attempt>,
}

#[derive(Debug)]
enum Event {
    /// A request reaches its provider.
    Deliver {
        peer: u32,
        work: Work,
    },
    /// A provider finished a request.
    Finished {
        peer: u32,
        incarnation: u32,
        work: Work,
    },
    /// Answers reach the requester.
    Answer {
        peer: u32,
        request: RequestId,
        answers: Vec<(Attempt, Answer)>,
    },
    Local {
        epoch: u32,
        task: u64,
    },
    Assembled {
        epoch: u32,
    },
    Tick,
    Republish {
        peer: u32,
    },
    Down {
        peer: u32,
    },
    Up {
        peer: u32,
    },
    Partition,
    Heal,
    Crash,
}

/// The requester's disk, as the writes left it.
#[derive(Default)]
struct Disk {
    attempts: HashSet<Attempt>,
    max_attempt: HashMap<u64, u32>,
    settled: HashMap<u64, SettledTask<u32>>,
    fuel_settled: u64,
    records: HashMap<u32, Record>,
    ended: Option<(JobPhase, Option<String>)>,
}

struct World {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    knobs: Knobs,
    core: Scheduler<u32>,
    epoch: u32,
    providers: Vec<Provider>,
    heap: BinaryHeap<Reverse<(u64, u64, usize)>>,
    /// Events by slot (the heap holds slots, so events need no ordering).
    events: Vec<Option<Event>>,
    free: Vec<usize>,
    seq: u64,
    now_ms: u64,
    disk: Disk,
    /// Attempts out as the core last said (sent, not ended).
    live: HashMap<Attempt, u32>,
    /// Per task, the answers the core took since it was last settled:
    /// (provider, the answer's claim id).
    claims: HashMap<u64, Vec<(u32, u64)>>,
    /// Per settled task, whether its accepted result is wrong.
    wrong: HashMap<u64, bool>,
    commit_fail_at_step: Option<u64>,
    commit_failed: bool,
    crashes: u32,
    steps: u64,
    events_run: u64,
    trace: u64,
    violations: Vec<Violation>,
    ground_truth_runs: u64,
    speculated: u64,
    timed_out: u64,
    executions: u64,
}

fn job() -> JobId {
    JobId("j-sim".into())
}

fn mix64(mut x: u64) -> u64 {
    // SplitMix64's finaliser: a cheap, well-spread hash of a number.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The honest fuel of a task: 10 to 200 million (5-400 ms on a provider).
fn task_fuel(seed: u64, task: u64) -> u64 {
    10_000_000 + mix64(seed ^ task.wrapping_mul(0x2545_f491_4f6c_dd1d)) % 190_000_000
}

fn honest_claim_id(seed: u64, task: u64) -> u64 {
    mix64(seed ^ 0x5eed ^ task.rotate_left(17))
}

fn claim_of(id: u64) -> Claim {
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&id.to_le_bytes());
    Claim {
        engine: ENGINE.into(),
        digest,
    }
}

fn claim_id(claim: &Claim) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&claim.digest[..8]);
    u64::from_le_bytes(b)
}

pub fn spec(cfg: &SimConfig, draw_seed: u64) -> JobSpec {
    JobSpec {
        tasks: cfg.tasks,
        requirements: Requirements::default(),
        limits: TaskLimits {
            fuel: Some(1_000_000_000),
            deadline_ms: 30_000,
            ..TaskLimits::default()
        },
        verification: cfg.verify.then(Policy::default),
        distinct_networks: false,
        draw_seed,
        assignment_bytes: 300,
    }
}

impl World {
    fn new(cfg: SimConfig) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let knobs = if cfg.random_knobs {
            Knobs::randomised(&mut rng)
        } else {
            Knobs::default()
        };
        let mut providers = Vec::with_capacity(cfg.providers as usize);
        for _ in 0..cfg.providers {
            let mut roll: f64 = rng.random();
            let mut strategy = Strategy::Honest;
            for &(s, share) in &cfg.mix.0 {
                if roll < share {
                    strategy = s;
                    break;
                }
                roll -= share;
            }
            let (lo, hi) = cfg.faults.latency_ms;
            let (slots, fuel_per_sec, price_per_gfuel) = if cfg.uniform {
                (1, 1_000_000_000, 1)
            } else {
                (
                    rng.random_range(1..=16),
                    rng.random_range(500_000_000..=2_000_000_000),
                    rng.random_range(1..=10),
                )
            };
            providers.push(Provider {
                strategy,
                slots,
                fuel_per_sec,
                price_per_gfuel,
                latency_ms: rng.random_range(lo..=hi.max(lo)),
                up: true,
                incarnation: 0,
                cut_until_ms: 0,
                running: 0,
                queue: VecDeque::new(),
                executed: 0,
            });
        }
        let commit_fail_at_step = cfg
            .faults
            .commit_failure
            // Early enough that the job still sends: a step has at least
            // one answer per task behind it.
            .then(|| rng.random_range(1..=(cfg.tasks / 2).max(1)));
        World {
            knobs,
            core: Scheduler::new(knobs, []),
            epoch: 0,
            providers,
            heap: BinaryHeap::new(),
            events: Vec::new(),
            free: Vec::new(),
            seq: 0,
            now_ms: 0,
            disk: Disk::default(),
            live: HashMap::new(),
            claims: HashMap::new(),
            wrong: HashMap::new(),
            commit_fail_at_step,
            commit_failed: false,
            crashes: 0,
            steps: 0,
            events_run: 0,
            trace: cfg.seed,
            violations: Vec::new(),
            ground_truth_runs: 0,
            speculated: 0,
            timed_out: 0,
            executions: 0,
            rng,
            cfg,
        }
    }

    fn at(&mut self, at_ms: u64, event: Event) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.events[slot] = Some(event);
                slot
            }
            None => {
                self.events.push(Some(event));
                self.events.len() - 1
            }
        };
        self.seq += 1;
        self.heap.push(Reverse((at_ms, self.seq, slot)));
    }

    fn trace(&mut self, x: u64) {
        self.trace = mix64(self.trace ^ x);
    }

    fn violation(&mut self, invariant: &'static str, detail: String) {
        // The first few tell the story; a run with a broken invariant stops.
        if self.violations.len() < 16 {
            self.violations.push(Violation {
                at_ms: self.now_ms,
                step: self.steps,
                invariant,
                detail,
            });
        }
    }

    fn offer_of(&self, peer: u32) -> Offer {
        let p = &self.providers[peer as usize];
        Offer {
            cores: p.slots,
            memory_bytes: 16 << 30,
            task_memory_bytes_max: 4 << 30,
            slots_total: p.slots,
            slots_free: p.slots,
            price_per_gfuel: p.price_per_gfuel,
            fuel_per_sec: p.fuel_per_sec,
            engine: ENGINE.into(),
            expires_at_ms: self.now_ms + types::offer::OFFER_TTL_MS,
        }
    }

    fn offer_input(&self, peer: u32) -> Input<u32> {
        Input::Offer {
            peer,
            offer: self.offer_of(peer),
            rtt_us: Some(self.providers[peer as usize].latency_ms * 2_000),
            network: None,
        }
    }

    fn latency(&mut self, peer: u32) -> u64 {
        let base = self.providers[peer as usize].latency_ms;
        base + self.rng.random_range(0..=base / 5)
    }

    fn reachable(&self, peer: u32) -> bool {
        let p = &self.providers[peer as usize];
        p.up && p.cut_until_ms <= self.now_ms
    }

    // ---- the shell -------------------------------------------------------

    /// One step of the core and the execution of its actions: commit every
    /// write, then (only if the commit held) send.
    fn step(&mut self, input: Input<u32>) {
        self.steps += 1;
        let actions = self.core.step(self.now_ms, input);
        let fail_commit = self.commit_fail_at_step.is_some_and(|s| self.steps >= s)
            && !self.commit_failed
            && actions.iter().any(|a| matches!(a, Action::Send { .. }));
        let mut touched = Vec::new();
        if fail_commit {
            self.commit_failed = true;
            touched.push(job());
        } else {
            for a in &actions {
                if let Action::Persist(w) = a {
                    self.commit(w);
                }
            }
        }
        let mut unsent = Vec::new();
        for a in actions {
            self.observe(&a);
            match a {
                Action::Persist(_) => {}
                Action::Send {
                    request,
                    peer,
                    attempts,
                    ..
                } => {
                    if fail_commit && !self.cfg.skip_commit_check {
                        unsent.push(request);
                        continue;
                    }
                    self.check_sent(peer, &attempts);
                    self.executions += attempts.len() as u64;
                    self.trace(request.0 ^ u64::from(peer) << 32);
                    if self.reachable(peer) {
                        let at = self.now_ms + self.latency(peer);
                        self.at(
                            at,
                            Event::Deliver {
                                peer,
                                work: Work { request, attempts },
                            },
                        );
                    }
                }
                Action::Cancel { peer, attempts, .. } => {
                    // Providers drop what is queued of it; what runs, runs.
                    let p = &mut self.providers[peer as usize];
                    p.queue.retain(|w| {
                        !(attempts.is_empty() || w.attempts.iter().all(|a| attempts.contains(a)))
                    });
                }
                Action::RunLocally { task, .. } => {
                    self.ground_truth_runs += 1;
                    let epoch = self.epoch;
                    self.at(self.now_ms + 50, Event::Local { epoch, task });
                }
                Action::Assemble { .. } => {
                    let epoch = self.epoch;
                    self.at(self.now_ms + 1, Event::Assembled { epoch });
                }
            }
        }
        if fail_commit && !self.cfg.skip_commit_check {
            self.step(Input::Unrecorded {
                jobs: touched,
                requests: unsent,
                error: "the simulated disk refused the commit".into(),
            });
        }
        self.check_after_step();
    }

    /// A write, made durable; the invariants that writes must keep.
    fn commit(&mut self, w: &Write<u32>) {
        match w {
            Write::Attempt { attempt, .. } => {
                if !self.disk.attempts.insert(*attempt) {
                    self.violation("attempt reused", format!("{attempt:?} was written before"));
                }
                let max = self.disk.max_attempt.entry(attempt.task).or_default();
                *max = (*max).max(attempt.attempt);
            }
            Write::Settled {
                task,
                fuel,
                method,
                payees,
                ..
            } => {
                let settled = SettledTask {
                    task: *task,
                    fuel: *fuel,
                    method: *method,
                    payees: payees.clone(),
                };
                if self.disk.settled.insert(*task, settled).is_some() {
                    self.violation("settled twice", format!("task {task}"));
                } else {
                    self.disk.fuel_settled += fuel;
                }
            }
            Write::Reopened { task, .. } => {
                if let Some(s) = self.disk.settled.remove(task) {
                    self.disk.fuel_settled -= s.fuel;
                }
            }
            Write::Record { peer, record } => {
                self.disk.records.insert(*peer, *record);
            }
            Write::JobEnded { phase, error, .. } => {
                self.disk.ended = Some((*phase, error.clone()));
            }
            Write::JobStarted { .. } | Write::AttemptEnded { .. } | Write::Evidence { .. } => {}
        }
    }

    /// What the checker learns from an action, committed or not.
    fn observe(&mut self, a: &Action<u32>) {
        match a {
            Action::Send { peer, attempts, .. } => {
                for at in attempts {
                    self.live.insert(*at, *peer);
                }
            }
            Action::Persist(Write::AttemptEnded { attempt, end, .. }) => {
                self.live.remove(attempt);
                if matches!(end, scheduler::AttemptEnd::Failed(Failure::TimedOut)) {
                    self.timed_out += 1;
                }
            }
            Action::Persist(Write::Settled {
                task, method, from, ..
            }) => {
                self.trace(task ^ 0xabcd);
                let honest = honest_claim_id(self.cfg.seed, *task);
                let claims = self.claims.remove(task).unwrap_or_default();
                let accepted = match from {
                    Some(p) => claims.iter().find(|(q, _)| q == p).map(|(_, c)| *c),
                    None => Some(honest),
                };
                let Some(accepted) = accepted else {
                    self.violation("accepted unseen", format!("task {task} from {from:?}"));
                    return;
                };
                if matches!(method, Some(Method::Replicas | Method::SpotCheck)) {
                    let view = self.core.job(&job());
                    let dissent = claims.iter().find(|(p, c)| {
                        *c != accepted && view.as_ref().is_some_and(|v| !v.is_excluded(p))
                    });
                    if let Some((p, _)) = dissent {
                        self.violation(
                            "unanimity",
                            format!("task {task} accepted by {method:?} while {p} disagreed"),
                        );
                    }
                }
                if *method == Some(Method::GroundTruth) && accepted != honest {
                    self.violation("ground truth", format!("task {task}"));
                }
                self.wrong.insert(*task, accepted != honest);
            }
            Action::Persist(Write::Reopened { task, .. }) => {
                self.wrong.remove(task);
            }
            _ => {}
        }
    }

    /// Every attempt of a send must be on disk before it leaves, and the
    /// provider must not hold more requests than its credit.
    fn check_sent(&mut self, peer: u32, attempts: &[Attempt]) {
        for a in attempts {
            if !self.disk.attempts.contains(a) {
                self.violation(
                    "persist before send",
                    format!("{a:?} sent to {peer} but not on disk"),
                );
            }
        }
        let (held, credit) = (self.core.in_flight(&peer), self.core.credit(&peer));
        if held > credit {
            self.violation(
                "credit",
                format!("{peer} holds {held} requests, credit {credit}"),
            );
        }
    }

    fn check_after_step(&mut self) {
        let Some((fuel, no_match)) = self.core.job(&job()).map(|v| (v.fuel(), v.no_match())) else {
            return;
        };
        if fuel != self.disk.fuel_settled && !self.commit_failed {
            let detail = format!(
                "job fuel {fuel} but settled tasks hold {}",
                self.disk.fuel_settled
            );
            self.violation("fuel", detail);
        }
        if let Some(seen) = no_match {
            let listed = self.core.book().len() as u64;
            if seen.offers_seen != listed || seen.matched() != 0 {
                let detail = format!("{seen} of {listed} offers listed");
                self.violation("no-match counts", detail);
            }
        }
    }

    // ---- providers -------------------------------------------------------

    fn start(&mut self, peer: u32, work: Work) {
        let p = &mut self.providers[peer as usize];
        if p.running >= p.slots {
            p.queue.push_back(work);
            return;
        }
        p.running += 1;
        let speed = match p.strategy {
            Strategy::Slow => p.fuel_per_sec / 10,
            _ => p.fuel_per_sec,
        };
        let fuel: u64 = work
            .attempts
            .iter()
            .map(|a| task_fuel(self.cfg.seed, a.task))
            .sum();
        let run_ms = (fuel * 1000 / speed.max(1)).max(1);
        let incarnation = p.incarnation;
        self.at(
            self.now_ms + run_ms,
            Event::Finished {
                peer,
                incarnation,
                work,
            },
        );
    }

    /// What a provider answers for one attempt, by its strategy.
    fn answer(&mut self, peer: u32, attempt: Attempt) -> Answer {
        let seed = self.cfg.seed;
        let p = &mut self.providers[peer as usize];
        p.executed += 1;
        let task = attempt.task;
        let fuel = task_fuel(seed, task);
        let honest = honest_claim_id(seed, task);
        let own_wrong = mix64(honest ^ u64::from(peer) << 20 ^ 0x0bad);
        let (claim, fuel) = match p.strategy {
            Strategy::Honest | Strategy::Slow | Strategy::Silent => (honest, fuel),
            Strategy::AlwaysWrong if mix64(task ^ u64::from(peer)).is_multiple_of(2) => {
                (own_wrong, fuel)
            }
            Strategy::Colluding if mix64(task ^ seed ^ 0xc011).is_multiple_of(10) => {
                (mix64(honest ^ 0xc011), fuel)
            }
            Strategy::Intermittent
                if p.executed > 10 && mix64(task ^ u64::from(peer) ^ 7).is_multiple_of(20) =>
            {
                (own_wrong, fuel)
            }
            // The fuel is part of what replicas compare.
            Strategy::FuelLiar => (mix64(honest ^ (fuel * 2)), fuel * 2),
            Strategy::Replayer => {
                return Answer::Rejected {
                    reason: "the result is bound to another task".into(),
                };
            }
            _ => (honest, fuel),
        };
        Answer::Result(Reported {
            claim: claim_of(claim),
            fuel,
            run_ms: fuel * 1000 / p.fuel_per_sec.max(1),
            answer_bytes: 200,
            failure: None,
        })
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Deliver { peer, work } => {
                if !self.reachable(peer) {
                    return; // lost on the way: the request times out
                }
                if self.providers[peer as usize].strategy == Strategy::Silent {
                    return;
                }
                self.start(peer, work);
            }
            Event::Finished {
                peer,
                incarnation,
                work,
            } => {
                let p = &mut self.providers[peer as usize];
                if p.incarnation != incarnation {
                    return;
                }
                p.running -= 1;
                if let Some(next) = p.queue.pop_front() {
                    self.start(peer, next);
                }
                let answers: Vec<(Attempt, Answer)> = work
                    .attempts
                    .iter()
                    .map(|&a| (a, self.answer(peer, a)))
                    .collect();
                if !self.reachable(peer) || self.rng.random::<f64>() < self.cfg.faults.loss {
                    return;
                }
                let copies = if self.rng.random::<f64>() < self.cfg.faults.duplication {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let at = self.now_ms + self.latency(peer);
                    let answers = answers.clone();
                    self.at(
                        at,
                        Event::Answer {
                            peer,
                            request: work.request,
                            answers,
                        },
                    );
                }
            }
            Event::Answer {
                peer,
                request,
                answers,
            } => {
                // The answers the core will take: those of attempts still out.
                for (a, answer) in &answers {
                    if self.live.get(a) == Some(&peer)
                        && let Answer::Result(r) = answer
                    {
                        self.claims
                            .entry(a.task)
                            .or_default()
                            .push((peer, claim_id(&r.claim)));
                    }
                }
                self.step(Input::Answers {
                    request,
                    peer,
                    answers,
                });
            }
            Event::Local { epoch, task } => {
                if epoch != self.epoch {
                    return;
                }
                let honest = honest_claim_id(self.cfg.seed, task);
                let fuel = task_fuel(self.cfg.seed, task);
                let result = Ok(Reported {
                    claim: claim_of(honest),
                    fuel,
                    run_ms: 1,
                    answer_bytes: 0,
                    failure: None,
                });
                self.step(Input::Local {
                    job: job(),
                    task,
                    result,
                });
            }
            Event::Assembled { epoch } => {
                if epoch == self.epoch {
                    self.step(Input::Assembled {
                        job: job(),
                        result: Ok(()),
                    });
                }
            }
            Event::Tick => {
                self.step(Input::Tick);
                if self.running() {
                    self.at(self.now_ms + TICK_MS, Event::Tick);
                }
            }
            Event::Republish { peer } => {
                if self.providers[peer as usize].up {
                    let input = self.offer_input(peer);
                    self.step(input);
                }
                if self.running() {
                    self.at(self.now_ms + REPUBLISH_MS, Event::Republish { peer });
                }
            }
            Event::Down { peer } => {
                let p = &mut self.providers[peer as usize];
                if !p.up {
                    return;
                }
                p.up = false;
                p.incarnation += 1;
                p.running = 0;
                p.queue.clear();
                self.step(Input::PeerGone { peer });
                let back = self.now_ms + self.rng.random_range(1_000..30_000);
                self.at(back, Event::Up { peer });
            }
            Event::Up { peer } => {
                self.providers[peer as usize].up = true;
                let input = self.offer_input(peer);
                self.step(input);
            }
            Event::Partition => {
                let n = self.providers.len() as u32;
                let until = self.now_ms + self.rng.random_range(2_000..20_000);
                for _ in 0..n / 10 {
                    let peer = self.rng.random_range(0..n);
                    self.providers[peer as usize].cut_until_ms = until;
                }
                self.at(until, Event::Heal);
            }
            Event::Heal => {}
            Event::Crash => self.crash_and_restore(),
        }
    }

    fn running(&self) -> bool {
        self.disk.ended.is_none()
    }

    /// The requester dies; a new one is built from the writes alone, and
    /// hears the providers' offers again.
    fn crash_and_restore(&mut self) {
        if !self.running() {
            return;
        }
        self.crashes += 1;
        self.epoch += 1;
        self.speculated += self.core.counters().speculated;
        self.live.clear();
        self.claims.clear();
        self.core = Scheduler::new(self.knobs, self.disk.records.clone());
        let mut settled: Vec<SettledTask<u32>> = self.disk.settled.values().cloned().collect();
        settled.sort_by_key(|s| s.task);
        let mut attempts_used: Vec<(u64, u32)> = self
            .disk
            .max_attempt
            .iter()
            .map(|(t, a)| (*t, *a))
            .collect();
        attempts_used.sort_unstable();
        for peer in 0..self.providers.len() as u32 {
            if self.providers[peer as usize].up {
                let input = self.offer_input(peer);
                self.step(input);
            }
        }
        let draw_seed = self.rng.random();
        let spec = spec(&self.cfg, draw_seed);
        self.step(Input::Restore {
            job: job(),
            spec,
            restored: Restored {
                settled,
                attempts_used,
            },
        });
    }

    fn run(&mut self) {
        for peer in 0..self.providers.len() as u32 {
            let input = self.offer_input(peer);
            self.step(input);
            let first = self.rng.random_range(1..REPUBLISH_MS);
            self.at(first, Event::Republish { peer });
        }
        let spec = spec(&self.cfg, self.rng.random());
        self.step(Input::Submit { job: job(), spec });
        self.at(TICK_MS, Event::Tick);
        // The job's length is unknown beforehand: faults are spread over an
        // estimate of it (all slots busy, the mean task's run time).
        let slots: u64 = self.providers.iter().map(|p| u64::from(p.slots)).sum();
        let estimate_ms = (self.cfg.tasks * 150 / slots.max(1)).max(2_000);
        let n = self.providers.len() as u32;
        if self.cfg.faults.churn && n > 0 {
            for _ in 0..(n / 20).max(1) {
                let at = self.rng.random_range(0..estimate_ms);
                let peer = self.rng.random_range(0..n);
                self.at(at, Event::Down { peer });
            }
        }
        if self.cfg.faults.partitions {
            for _ in 0..2 {
                let at = self.rng.random_range(0..estimate_ms);
                self.at(at, Event::Partition);
            }
        }
        for _ in 0..self.cfg.faults.crashes {
            let at = self.rng.random_range(0..estimate_ms);
            self.at(at, Event::Crash);
        }
        while let Some(Reverse((at, _, slot))) = self.heap.pop() {
            if !self.running() || !self.violations.is_empty() {
                break;
            }
            if at > SIM_TIME_MS_MAX {
                self.violation(
                    "liveness",
                    format!("the job did not end in {SIM_TIME_MS_MAX} ms"),
                );
                break;
            }
            self.now_ms = at;
            let event = self.events[slot].take().expect("each slot is popped once");
            self.free.push(slot);
            self.events_run += 1;
            self.on_event(event);
        }
        match &self.disk.ended {
            Some((JobPhase::Completed, _)) => {}
            Some((JobPhase::Failed, Some(e)))
                if self.commit_failed && e.contains("cannot record") => {}
            other => {
                if self.violations.is_empty() {
                    self.violation("liveness", format!("the job ended as {other:?}"));
                }
            }
        }
    }
}

/// Runs one simulation.
pub fn run(cfg: SimConfig) -> Result<Report, SimError> {
    if cfg.providers > SIM_PROVIDERS_MAX {
        return Err(SimError::TooLarge {
            what: "providers",
            value: u64::from(cfg.providers),
            max: u64::from(SIM_PROVIDERS_MAX),
        });
    }
    if cfg.tasks > SIM_TASKS_MAX {
        return Err(SimError::TooLarge {
            what: "tasks",
            value: cfg.tasks,
            max: SIM_TASKS_MAX,
        });
    }
    let started = std::time::Instant::now();
    let replay = cfg.replay_command();
    let mut w = World::new(cfg);
    w.run();
    let wall_ms = started.elapsed().as_millis() as u64;
    let view = w.core.job(&job());
    let (cheaters, cheaters_excluded, honest_excluded) = {
        let mut c = (0, 0, 0);
        for (i, p) in w.providers.iter().enumerate() {
            let excluded = view.as_ref().is_some_and(|v| v.is_excluded(&(i as u32)))
                || w.disk
                    .records
                    .get(&(i as u32))
                    .is_some_and(|r| r.disagreed > 0);
            if p.strategy.cheats() {
                c.0 += 1;
                c.1 += u64::from(excluded);
            } else if p.strategy == Strategy::Honest
                && w.disk
                    .records
                    .get(&(i as u32))
                    .is_some_and(|r| r.disagreed > 0)
            {
                c.2 += 1;
            }
        }
        c
    };
    let (phase, error) = match &w.disk.ended {
        Some((p, e)) => (p.as_str().to_owned(), e.clone()),
        None => ("running".to_owned(), None),
    };
    let tasks = w.cfg.tasks.max(1);
    Ok(Report {
        seed: w.cfg.seed,
        providers: w.cfg.providers,
        tasks: w.cfg.tasks,
        phase,
        error,
        steps: w.steps,
        events: w.events_run,
        sim_time_ms: w.now_ms,
        wall_ms,
        events_per_sec: w.events_run as f64 / (wall_ms.max(1) as f64 / 1000.0),
        trace_hash: format!("{:016x}", w.trace),
        wrong_in_output: w.wrong.values().filter(|&&wrong| wrong).count() as u64,
        extra_per_task: (w.executions + w.ground_truth_runs) as f64 / tasks as f64 - 1.0,
        cheaters,
        cheaters_excluded,
        honest_excluded,
        ground_truth_runs: w.ground_truth_runs,
        speculated: w.speculated + w.core.counters().speculated,
        timed_out: w.timed_out,
        crashes: w.crashes,
        commit_failed: w.commit_failed,
        violations: w.violations,
        replay,
    })
}
