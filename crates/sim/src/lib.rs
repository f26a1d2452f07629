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

pub mod verification;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scheduler::{
    Action, Answer, Input, JobSpec, Knobs, Reported, Restored, Scheduler, SettledTask, Write,
};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
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

/// How a provider behaves: the one concept the node's adversary build
/// uses too (`plexus node --misbehave MODE` takes the same text).
pub use provider::Strategy;

/// The share of providers of each strategy (the rest are honest).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mix(pub Vec<(Strategy, f64)>);

impl Default for Mix {
    /// 70% honest; slow (10×) 5%, silent 3%, wrong on half their tasks
    /// 5%, colluding on a tenth 5%, intermittent (after 10 tasks, on 5%)
    /// 5%, fuel liars 4%, replayers 3%.
    fn default() -> Self {
        Mix(vec![
            (Strategy::Slow { factor: 10 }, 0.05),
            (Strategy::Silent, 0.03),
            (Strategy::Wrong { percent: 50 }, 0.05),
            (
                Strategy::Collude {
                    after: 0,
                    percent: 10,
                },
                0.05,
            ),
            (
                Strategy::Intermittent {
                    after: 10,
                    percent: 5,
                },
                0.05,
            ),
            (Strategy::FuelLie, 0.04),
            (Strategy::Replay, 0.03),
        ])
    }
}

impl Mix {
    pub fn honest() -> Mix {
        Mix(Vec::new())
    }

    /// `strategy=share,strategy=share`, each strategy as `plexus node
    /// --misbehave` reads it, e.g. `collude:10=0.2,slow:10=0.05`.
    pub fn parse(text: &str) -> Result<Mix, SimError> {
        let mut mix = Vec::new();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (name, share) = part
                .split_once('=')
                .ok_or_else(|| SimError::Mix(format!("{part:?} is not name=share")))?;
            let strategy: Strategy = name
                .parse()
                .map_err(|e| SimError::Mix(format!("{name:?}: {e}")))?;
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
    /// Pay on the real ledger ([`ledger::State`]): see [`Payments`].
    pub ledger: bool,
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
            ledger: false,
        }
    }

    /// The one line that replays this run.
    pub fn replay_command(&self) -> String {
        let mix: Vec<String> = self
            .mix
            .0
            .iter()
            .map(|(s, share)| format!("{s}={share}"))
            .collect();
        let f = &self.faults;
        format!(
            "cargo run --release -p sim -- --providers {} --tasks {} --seed {} --mix '{}' --latency-ms {}..{} --loss {} --duplication {} --crashes {}{}{}{}{}{}{}{}{}",
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
            if self.ledger { " --ledger" } else { "" },
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
    /// Requests providers refused (busy, or over a bound of theirs).
    pub refused: u64,
    /// With `ledger`: what the job paid.
    pub payments: Option<Payments>,
    pub crashes: u32,
    pub commit_failed: bool,
    pub violations: Vec<Violation>,
    pub replay: String,
}

/// A provider as the simulation models it: the real provider core
/// (admission, the fair queue for slots, cancels, its offer) and a model
/// of execution.
struct Provider {
    strategy: Strategy,
    core: provider::Core<u32>,
    /// The requests its core holds, by the core's id.
    work: HashMap<RequestId, Work>,
    slots: u32,
    /// What its offer says.
    fuel_per_sec: u64,
    price_per_gfuel: u64,
    latency_ms: u64,
    up: bool,
    /// Bumped when it goes down: its work in progress is lost.
    incarnation: u32,
    cut_until_ms: u64,
    executed: u64,
}

/// The same failure for every attempt of a request.
fn all_failed(attempts: &[Attempt], failure: &Failure) -> Vec<(Attempt, Answer)> {
    attempts
        .iter()
        .map(|&a| (a, Answer::Failed(failure.clone())))
        .collect()
}

/// The one requester, as providers name it.
const REQUESTER: u32 = 0;

/// A provider's core, new (at start, and after it went down).
fn provider_core(
    strategy: Strategy,
    slots: u32,
    fuel_per_sec: u64,
    price: u64,
) -> provider::Core<u32> {
    let terms = provider::Terms {
        cores: slots,
        memory_bytes: 16 << 30,
        price_per_gfuel: price,
        fuel_per_sec,
        engine: ENGINE.into(),
    };
    provider::Core::new(
        provider::Knobs::new(slots, 4 << 30),
        terms,
        strategy,
        provider::Totals::default(),
    )
}

/// A request as a provider holds it: the requester's id for it, and its
/// attempts with whether each was stopped.
#[derive(Clone, Debug)]
struct Work {
    request: RequestId,
    attempts: Vec<Attempt>,
    stopped: Vec<Attempt>,
}

#[derive(Debug)]
enum Event {
    /// A request reaches its provider (unless the requester that sent it,
    /// of this epoch, has crashed since: its connections died with it).
    Deliver {
        epoch: u32,
        peer: u32,
        request: RequestId,
        attempts: Vec<Attempt>,
    },
    /// A cancel reaches its provider.
    Cancel {
        epoch: u32,
        peer: u32,
        attempts: Vec<Attempt>,
    },
    /// A provider finished a request (its core's id for it).
    Finished {
        peer: u32,
        incarnation: u32,
        request: RequestId,
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
    /// Attempts ended that count as a retry.
    retries: u64,
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
    /// The job's budget (with `--ledger`), read once.
    budget: Option<types::Credits>,
    crashes: u32,
    steps: u64,
    events_run: u64,
    trace: u64,
    violations: Vec<Violation>,
    ground_truth_runs: u64,
    speculated: u64,
    timed_out: u64,
    refused: u64,
    payments: Option<Payments>,
    executions: u64,
    /// What providers' draws of tasks to lie on are salted with (the
    /// node's are salted with the job's id).
    draw_salt: String,
    /// With `ledger`: the chain's state and the requester's key.
    ledger: Option<(ledger::State, ed25519_dalek::SigningKey)>,
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
    // Paying on the ledger, the job's budget is its escrow: the core must
    // never commit more than it holds (every claim accepted proves it).
    let requirements = if cfg.ledger {
        Requirements {
            price_per_gfuel_max: Some(PRICE_MAX),
            budget: Some(types::Credits(cfg.tasks.max(1) * BUDGET_PER_TASK)),
            ..Requirements::default()
        }
    } else {
        Requirements::default()
    };
    JobSpec {
        tasks: cfg.tasks,
        requirements,
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
                core: provider_core(strategy, slots, fuel_per_sec, price_per_gfuel),
                work: HashMap::new(),
                slots,
                fuel_per_sec,
                price_per_gfuel,
                latency_ms: rng.random_range(lo..=hi.max(lo)),
                up: true,
                incarnation: 0,
                cut_until_ms: 0,
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
            budget: spec(&cfg, 0).requirements.budget,
            crashes: 0,
            steps: 0,
            events_run: 0,
            trace: cfg.seed,
            violations: Vec::new(),
            ground_truth_runs: 0,
            speculated: 0,
            timed_out: 0,
            refused: 0,
            payments: None,
            executions: 0,
            draw_salt: format!("j-sim:{}", cfg.seed),
            ledger: None,
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
        self.providers[peer as usize].core.offer(self.now_ms)
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
                        let epoch = self.epoch;
                        self.at(
                            at,
                            Event::Deliver {
                                epoch,
                                peer,
                                request,
                                attempts,
                            },
                        );
                    }
                }
                Action::Cancel { peer, attempts, .. } => {
                    if self.reachable(peer) {
                        let at = self.now_ms + self.latency(peer);
                        let epoch = self.epoch;
                        self.at(
                            at,
                            Event::Cancel {
                                epoch,
                                peer,
                                attempts,
                            },
                        );
                    }
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
                if self.cfg.ledger {
                    self.pay();
                }
            }
            Write::AttemptEnded { end, .. } => {
                if end.counts_as_retry() {
                    self.disk.retries += 1;
                }
            }
            Write::JobStarted { .. } | Write::Evidence { .. } => {}
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
        let Some((fuel, no_match, retries, committed)) = self
            .core
            .job(&job())
            .map(|v| (v.fuel(), v.no_match(), v.retries(), v.committed_credits()))
        else {
            return;
        };
        if let Some(budget) = self.budget
            && committed > u128::from(budget.0)
        {
            let detail = format!("{committed} credits committed, the budget is {budget}");
            self.violation("budget", detail);
        }
        if retries != self.disk.retries && !self.commit_failed {
            let detail = format!("job counts {retries} but {} recorded", self.disk.retries);
            self.violation("retries", detail);
        }
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

    /// One step of a provider's core and what the simulation does with
    /// its actions; `asked` is the request the step answers.
    fn provider_step(
        &mut self,
        peer: u32,
        input: provider::Input<u32>,
        asked: Option<(RequestId, &[Attempt])>,
    ) {
        let actions = self.providers[peer as usize].core.step(self.now_ms, input);
        for action in actions {
            match action {
                provider::Action::Refuse(why) => {
                    self.refused += 1;
                    if let Some((request, attempts)) = asked {
                        let failure = Failure::Refused {
                            reason: why.to_string(),
                        };
                        self.answer_back(peer, request, all_failed(attempts, &failure));
                    }
                }
                provider::Action::Admit { request: id } => {
                    if let Some((request, attempts)) = asked {
                        let work = Work {
                            request,
                            attempts: attempts.to_vec(),
                            stopped: Vec::new(),
                        };
                        self.providers[peer as usize].work.insert(id, work);
                        // Modules and inputs are here at once.
                        let fetched = provider::Input::Fetched {
                            request: id,
                            result: Ok(()),
                        };
                        self.provider_step(peer, fetched, None);
                    }
                }
                provider::Action::Start { request, .. } => self.start(peer, request),
                provider::Action::Stop { request, attempts } => {
                    let p = &mut self.providers[peer as usize];
                    if let Some(w) = p.work.get_mut(&request) {
                        w.stopped.extend(attempts);
                        // The sandbox stops a run when all of it is
                        // cancelled: it is answered at once.
                        if w.attempts.iter().all(|a| w.stopped.contains(a)) {
                            let incarnation = p.incarnation;
                            let at = self.now_ms + 1;
                            self.at(
                                at,
                                Event::Finished {
                                    peer,
                                    incarnation,
                                    request,
                                },
                            );
                        }
                    }
                }
                provider::Action::Fail { request, reason } => {
                    if let Some(w) = self.providers[peer as usize].work.remove(&request) {
                        let failure = Failure::Error { reason };
                        self.answer_back(peer, w.request, all_failed(&w.attempts, &failure));
                    }
                }
                provider::Action::Cancelled { .. }
                | provider::Action::Persist(_)
                | provider::Action::Publish(_) => {}
            }
        }
        if let Err(e) = self.providers[peer as usize].core.check() {
            self.violation("provider core", format!("provider {peer}: {e}"));
        }
    }

    /// A request on a slot: it finishes after the fuel of its attempts not
    /// stopped, at the provider's real speed.
    fn start(&mut self, peer: u32, request: RequestId) {
        let seed = self.cfg.seed;
        let p = &self.providers[peer as usize];
        let Some(work) = p.work.get(&request) else {
            return;
        };
        let speed = p.fuel_per_sec / u64::from(p.strategy.slowdown());
        let fuel: u64 = work
            .attempts
            .iter()
            .filter(|a| !work.stopped.contains(a))
            .map(|a| task_fuel(seed, a.task))
            .sum();
        let run_ms = (fuel * 1000 / speed.max(1)).max(1);
        let incarnation = p.incarnation;
        self.at(
            self.now_ms + run_ms,
            Event::Finished {
                peer,
                incarnation,
                request,
            },
        );
    }

    /// Answers on their way back, through the network's faults.
    fn answer_back(&mut self, peer: u32, request: RequestId, answers: Vec<(Attempt, Answer)>) {
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
                    request,
                    answers,
                },
            );
        }
    }

    /// What a provider answers for one attempt, by its strategy.
    fn answer(&mut self, peer: u32, attempt: Attempt) -> Answer {
        let seed = self.cfg.seed;
        let task = attempt.task;
        let fuel = task_fuel(seed, task);
        let honest = honest_claim_id(seed, task);
        let own_wrong = mix64(honest ^ u64::from(peer) << 20 ^ 0x0bad);
        let shared_wrong = mix64(honest ^ 0xc011);
        let p = &mut self.providers[peer as usize];
        p.executed += 1;
        let (strategy, executed) = (p.strategy, p.executed);
        let rejected = |reason: &str| Answer::Rejected {
            reason: reason.into(),
        };
        let (claim, fuel) = match strategy {
            // The fuel is part of what replicas compare.
            Strategy::FuelLie => (mix64(honest ^ (fuel * 2)), fuel * 2),
            // The shell's checks reject these before the core sees them.
            Strategy::Replay => return rejected("the result is bound to another task"),
            Strategy::BadSignature => return rejected("the result's signature does not verify"),
            Strategy::BadOutput => return rejected("an output does not match its hash"),
            Strategy::Oversized => return rejected("the answer is over the message limit"),
            Strategy::Selective => {
                // Every replica still out is the coalition's: it lies.
                let holders: Vec<u32> = (0..=attempt.attempt + 8)
                    .filter_map(|n| self.live.get(&Attempt { task, attempt: n }).copied())
                    .collect();
                let all_ours = holders.len() >= 2
                    && holders
                        .iter()
                        .all(|&q| self.providers[q as usize].strategy == Strategy::Selective);
                (if all_ours { shared_wrong } else { honest }, fuel)
            }
            Strategy::Wrong { .. } | Strategy::Collude { .. } | Strategy::Intermittent { .. } => {
                match strategy.forgery(executed, &peer.to_string(), &self.draw_salt, task) {
                    Some(provider::Forgery::Own) => (own_wrong, fuel),
                    Some(provider::Forgery::Shared) => (shared_wrong, fuel),
                    None => (honest, fuel),
                }
            }
            Strategy::Honest | Strategy::Silent | Strategy::Slow { .. } => (honest, fuel),
        };
        let speed = self.providers[peer as usize].fuel_per_sec.max(1);
        Answer::Result(Reported {
            claim: claim_of(claim),
            fuel,
            run_ms: fuel * 1000 / speed,
            answer_bytes: 200,
            failure: None,
        })
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Deliver {
                epoch,
                peer,
                request,
                attempts,
            } => {
                if !self.reachable(peer) || epoch != self.epoch {
                    return; // lost on the way: the request times out
                }
                let tasks = attempts
                    .iter()
                    .map(|&attempt| provider::Task {
                        job: job(),
                        attempt,
                        memory_bytes_max: TaskLimits::default().memory_bytes_max,
                    })
                    .collect();
                let input = provider::Input::Request {
                    from: REQUESTER,
                    tasks,
                };
                self.provider_step(peer, input, Some((request, &attempts)));
            }
            Event::Cancel {
                epoch,
                peer,
                attempts,
            } => {
                if self.reachable(peer) && epoch == self.epoch {
                    let input = provider::Input::Cancel {
                        from: REQUESTER,
                        job: job(),
                        attempts,
                    };
                    self.provider_step(peer, input, None);
                }
            }
            Event::Finished {
                peer,
                incarnation,
                request,
            } => {
                let p = &mut self.providers[peer as usize];
                if p.incarnation != incarnation {
                    return;
                }
                let Some(work) = p.work.remove(&request) else {
                    return;
                };
                let mut answers = Vec::with_capacity(work.attempts.len());
                let mut ran = Vec::new();
                for &a in &work.attempts {
                    if work.stopped.contains(&a) {
                        let failure = Failure::Error {
                            reason: provider::CANCELLED.into(),
                        };
                        answers.push((a, Answer::Failed(failure)));
                        continue;
                    }
                    let answer = self.answer(peer, a);
                    if let Answer::Result(r) = &answer {
                        ran.push(provider::Ran {
                            job: job(),
                            attempt: a,
                            fuel: r.fuel,
                            outcome: "exited 0".into(),
                        });
                    }
                    answers.push((a, answer));
                }
                self.provider_step(peer, provider::Input::Done { request, ran }, None);
                self.answer_back(peer, work.request, answers);
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
                    // The provider's own clock: its core's tick.
                    self.provider_step(peer, provider::Input::Tick, None);
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
                // Everything it held is lost with it.
                p.core = provider_core(p.strategy, p.slots, p.fuel_per_sec, p.price_per_gfuel);
                p.work.clear();
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
        // Its connections die with it: every provider stops its tasks.
        for peer in 0..self.providers.len() as u32 {
            if self.providers[peer as usize].up {
                let gone = provider::Input::RequesterGone { from: REQUESTER };
                self.provider_step(peer, gone, None);
            }
        }
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
                retries: self.disk.retries,
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
        if self.cfg.ledger {
            self.open_ledger();
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

/// What a job paid on the ledger, and how it was checked: its budget
/// locked in escrow at the start; when it ended, one claim per accepted
/// result (each payee of each settled task, at its offer's price), in
/// blocks of up to `ledger::BLOCK_TXS_MAX`, the supply checked after each;
/// then the rest released. Claims wait for the job's end because a
/// settled task can still be reopened (a caught provider's testimony is
/// void), and a claim cannot be taken back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Payments {
    pub claims: u64,
    pub blocks: u64,
    pub paid: u64,
    pub refunded: u64,
    /// Of it, paid to providers whose strategy cheats, for the results of
    /// theirs that were accepted (most of them honest ones).
    pub paid_to_cheaters: u64,
}

/// Credits the requester starts with, and locks per task of its job.
const REQUESTER_CREDITS_PER_TASK: u64 = 20;
const BUDGET_PER_TASK: u64 = 10;
/// The dearest price a simulated provider asks (its offers draw 1..=10).
const PRICE_MAX: u64 = 10;

fn signing_key(seed: u64, who: u64) -> ed25519_dalek::SigningKey {
    let mut h = blake3::Hasher::new_derive_key("plexus sim key v1");
    h.update(&seed.to_le_bytes());
    h.update(&who.to_le_bytes());
    ed25519_dalek::SigningKey::from_bytes(h.finalize().as_bytes())
}

impl World {
    /// Lays out the ledger at the start: the requester's funds, the job's
    /// escrow.
    fn open_ledger(&mut self) {
        let requester = signing_key(self.cfg.seed, u64::MAX);
        let funds = ledger::Credits(self.cfg.tasks.max(1) * REQUESTER_CREDITS_PER_TASK);
        let state = ledger::State::genesis(&[(ledger::AccountId::of(&requester), funds)]);
        let lock = ledger::Tx::EscrowLock {
            job: job(),
            amount: ledger::Credits(self.cfg.tasks.max(1) * BUDGET_PER_TASK),
            price_per_gfuel: PRICE_MAX,
            expires_at: u64::MAX,
        };
        let opened = state.and_then(|mut state| {
            let tx = ledger::SignedTx::sign(&requester, 0, lock)?;
            let receipts = state.apply_block(&ledger::Block {
                height: 1,
                txs: vec![tx],
            })?;
            receipts
                .into_iter()
                .next()
                .unwrap_or(Ok(ledger::Effect::Moved))?;
            Ok(state)
        });
        match opened {
            Ok(state) => self.ledger = Some((state, requester)),
            Err(e) => self.violation("ledger", format!("cannot lock the budget: {e}")),
        }
    }

    /// The job ended: its accepted results are paid, the rest refunded.
    fn pay(&mut self) {
        let Some((mut state, requester)) = self.ledger.take() else {
            return;
        };
        let requester_id = ledger::AccountId::of(&requester);
        let mut settled: Vec<&SettledTask<u32>> = self.disk.settled.values().collect();
        settled.sort_by_key(|s| s.task);
        let mut ids: HashMap<u32, ledger::AccountId> = HashMap::new();
        // Each provider's earnings, exact (billionths of a credit), and
        // whether it cheats.
        let mut expected: HashMap<ledger::AccountId, (u128, bool)> = HashMap::new();
        let mut txs = Vec::new();
        let mut nonce = state.next_nonce(&requester_id);
        let mut report = Payments::default();
        let mut signing_failed = None;
        for s in settled {
            for &(peer, fuel) in &s.payees {
                let id = *ids.entry(peer).or_insert_with(|| {
                    ledger::AccountId::of(&signing_key(self.cfg.seed, u64::from(peer)))
                });
                let p = &self.providers[peer as usize];
                let earned = expected.entry(id).or_insert((0, p.strategy.cheats()));
                earned.0 += u128::from(fuel) * u128::from(p.price_per_gfuel);
                let tx = ledger::Tx::Claim {
                    job: job(),
                    task: s.task,
                    provider: id,
                    fuel,
                    price_per_gfuel: p.price_per_gfuel,
                };
                match ledger::SignedTx::sign(&requester, nonce, tx) {
                    Ok(tx) => txs.push(tx),
                    Err(e) => signing_failed = Some(e),
                }
                nonce += 1;
            }
        }
        report.claims = txs.len() as u64;
        if let Ok(release) =
            ledger::SignedTx::sign(&requester, nonce, ledger::Tx::EscrowRelease { job: job() })
        {
            txs.push(release);
        }
        if let Some(e) = signing_failed {
            self.violation("ledger", format!("cannot sign a claim: {e}"));
        }
        for chunk in txs.chunks(ledger::BLOCK_TXS_MAX) {
            let block = ledger::Block {
                height: state.height + 1,
                txs: chunk.to_vec(),
            };
            report.blocks += 1;
            match state.apply_block(&block) {
                Ok(receipts) => {
                    for r in receipts {
                        match r {
                            Ok(ledger::Effect::Paid { amount, .. }) => report.paid += amount.0,
                            Ok(ledger::Effect::Refunded { amount }) => report.refunded += amount.0,
                            Ok(_) => {}
                            Err(e) => self.violation("ledger", format!("a claim refused: {e}")),
                        }
                    }
                }
                Err(e) => self.violation("ledger", format!("a block refused: {e}")),
            }
            if let Err(e) = state.check_supply() {
                self.violation("ledger supply", e.to_string());
            }
        }
        let mut earners: Vec<_> = expected.into_iter().collect();
        earners.sort_by_key(|(id, _)| *id);
        for (id, (nanocredits, cheats)) in earners {
            // Rounded down once per provider and job (`ledger::pay_for`).
            let want = u64::try_from(nanocredits / 1_000_000_000).unwrap_or(u64::MAX);
            if cheats {
                report.paid_to_cheaters += want;
            }
            let got = state.balance(&id).0;
            if got != want {
                self.violation("ledger pay", format!("{id:?} holds {got}, earned {want}"));
            }
        }
        let left = state.balance(&requester_id).0;
        let start = self.cfg.tasks.max(1) * REQUESTER_CREDITS_PER_TASK;
        if left + report.paid != start {
            self.violation(
                "ledger pay",
                format!(
                    "the requester holds {left} after paying {} of {start}",
                    report.paid
                ),
            );
        }
        self.payments = Some(report);
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
        refused: w.refused,
        payments: w.payments,
        crashes: w.crashes,
        commit_failed: w.commit_failed,
        violations: w.violations,
        replay,
    })
}
