//! One job's verification state: a small state machine per task, the
//! providers' records as this job sees them, and who was caught.

use crate::{Policy, Record};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use types::{Outcome, OutputFile};

/// Executions of one task, over all its rounds, before the requester stops
/// asking providers and runs it itself. Bounds the work a task can cost when
/// results keep coming from engines that cannot be compared.
pub const EXECUTIONS_PER_TASK_MAX: usize = 16;

/// What a result says, reduced to what replicas must agree on. `digest`
/// covers the outcome, the fuel used and every output's name and hash; only
/// claims of the same `engine` identity are compared.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Claim {
    pub engine: String,
    pub digest: [u8; 32],
}

impl Claim {
    /// The claim of a result: everything deterministic a provider reports.
    /// Length-prefixed fields, so no two different results hash alike.
    pub fn of(
        engine: &str,
        outcome: &Outcome,
        fuel_used: Option<u64>,
        outputs: &[OutputFile],
        stderr_tail: &[u8],
    ) -> Claim {
        let mut h = blake3::Hasher::new_derive_key("plexus result claim v2");
        let mut field = |bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        // Stable codes and data, never display text: rewording a message
        // must not change what replicas agree on.
        match outcome {
            Outcome::Exited { code } => {
                field(b"exited");
                field(&code.to_le_bytes());
            }
            Outcome::Trapped { trap } => {
                let (code, data) = trap.code();
                field(b"trapped");
                field(code.as_bytes());
                field(&data);
            }
        }
        match fuel_used {
            Some(fuel) => field(&fuel.to_le_bytes()),
            None => field(b"unmetered"),
        }
        field(&(outputs.len() as u64).to_le_bytes());
        for output in outputs {
            field(output.name.as_bytes());
            field(&output.size_bytes.to_le_bytes());
            field(&output.hash.0);
        }
        field(stderr_tail);
        Claim {
            engine: engine.to_owned(),
            digest: *h.finalize().as_bytes(),
        }
    }
}

/// How a task's accepted result was established.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    /// Replicated because a provider had no record yet (or to re-verify
    /// a caught provider's testimony), and the replicas agreed.
    Replicas,
    /// Replicated by a random draw at a trusted provider's rate, and agreed.
    SpotCheck,
    /// The results disagreed and the requester's own run decided.
    GroundTruth,
    /// Run once, by a provider trusted enough not to be drawn for a check.
    Reputation,
}

impl Method {
    /// The method named as `{:?}` prints it (how the node stores it).
    pub fn from_name(name: &str) -> Option<Method> {
        [
            Method::Replicas,
            Method::SpotCheck,
            Method::GroundTruth,
            Method::Reputation,
        ]
        .into_iter()
        .find(|m| format!("{m:?}") == name)
    }
}

/// What the verifier asks its caller to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action<P> {
    /// Run the task once more, on a provider for which
    /// [`JobVerifier::may_run`] holds; report with `on_dispatch`.
    Run { task: u64 },
    /// The results disagree: the requester runs the task itself and reports
    /// with [`JobVerifier::on_ground_truth`].
    RunLocally { task: u64 },
    /// The task is settled: keep the outputs of `from` (`None`: the
    /// requester's own run).
    Accept {
        task: u64,
        claim: Claim,
        from: Option<P>,
        method: Method,
    },
    /// A result accepted earlier is void (one who vouched for it was
    /// caught): forget its outputs; it is being verified again.
    Reopen { task: u64 },
    /// `provider`'s result for `task` was contradicted by the ground truth:
    /// keep its signed result as evidence, give it no more of the job and
    /// ignore its offers.
    Exclude { provider: P, task: u64 },
    /// A provider's record changed: persist it.
    Record { provider: P, record: Record },
}

/// Per job: how its results were established and what was found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary<P> {
    pub by_replicas: u64,
    pub by_spot_check: u64,
    pub by_ground_truth: u64,
    pub on_reputation: u64,
    /// Tasks whose results disagreed.
    pub disagreements: u64,
    /// Accepted tasks reopened because one who vouched for them was caught.
    pub reverified: u64,
    /// Executions handed to providers (all replicas, failures included).
    pub executions: u64,
    /// Tasks the requester ran itself.
    pub ground_truth_runs: u64,
    /// Tasks whose first round went to more than one provider at once: the
    /// ones a selective coalition could pass only by holding every replica.
    pub replicated_tasks: u64,
    pub excluded: Vec<P>,
}

impl<P> Summary<P> {
    /// The same summary naming providers another way (peer ids as text, say).
    pub fn map_providers<Q>(self, f: impl FnMut(P) -> Q) -> Summary<Q> {
        Summary {
            by_replicas: self.by_replicas,
            by_spot_check: self.by_spot_check,
            by_ground_truth: self.by_ground_truth,
            on_reputation: self.on_reputation,
            disagreements: self.disagreements,
            reverified: self.reverified,
            executions: self.executions,
            ground_truth_runs: self.ground_truth_runs,
            replicated_tasks: self.replicated_tasks,
            excluded: self.excluded.into_iter().map(f).collect(),
        }
    }
}

impl<P> Default for Summary<P> {
    fn default() -> Self {
        Summary {
            by_replicas: 0,
            by_spot_check: 0,
            by_ground_truth: 0,
            on_reputation: 0,
            disagreements: 0,
            reverified: 0,
            executions: 0,
            ground_truth_runs: 0,
            replicated_tasks: 0,
            excluded: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    /// Never dispatched.
    Fresh,
    /// Gathering results for the current round.
    Checking,
    /// Results disagreed; more replicas run, then the ground truth.
    Escalated,
    /// Waiting for the requester's own run.
    GroundTruth,
    Accepted,
}

#[derive(Debug)]
struct TaskCheck<P> {
    stage: Stage,
    /// How the first round was decided, reported on acceptance.
    first_round: Method,
    /// Executions wanted in the current round (results and running).
    wanted: usize,
    /// Results of one engine that must agree before the task is accepted.
    agree: usize,
    running: Vec<P>,
    results: Vec<(P, Claim)>,
    /// Everyone who returned a result for it, void or not: never given it again.
    ran: Vec<P>,
    accepted: Option<Method>,
    /// No provider may run it any more: the requester must.
    starved: bool,
}

pub struct JobVerifier<P> {
    policy: Policy,
    rng: ChaCha8Rng,
    tasks: Vec<TaskCheck<P>>,
    records: BTreeMap<P, Record>,
    excluded: BTreeSet<P>,
    /// For each provider, the accepted tasks it vouched for (voided if it is caught).
    vouched: BTreeMap<P, Vec<u64>>,
    summary: Summary<P>,
    open: u64,
}

impl<P: Clone + Ord> JobVerifier<P> {
    /// `seed` drives the spot-check draws; the node takes it from the OS,
    /// so providers cannot predict which results are checked.
    pub fn new(tasks: u64, policy: Policy, seed: u64) -> Self {
        JobVerifier {
            policy,
            rng: ChaCha8Rng::seed_from_u64(seed),
            tasks: (0..tasks)
                .map(|_| TaskCheck {
                    stage: Stage::Fresh,
                    first_round: Method::Reputation,
                    wanted: 0,
                    agree: 0,
                    running: Vec::new(),
                    results: Vec::new(),
                    ran: Vec::new(),
                    accepted: None,
                    starved: false,
                })
                .collect(),
            records: BTreeMap::new(),
            excluded: BTreeSet::new(),
            vouched: BTreeMap::new(),
            summary: Summary::default(),
            open: tasks,
        }
    }

    /// Takes up a task accepted before the requester restarted: settled by
    /// `method` on the testimony of `vouchers`, who are never given it again
    /// and whose catching later voids it like any other.
    pub fn restore_accepted(&mut self, task: u64, method: Method, vouchers: Vec<P>) {
        let Some(t) = self.tasks.get_mut(task as usize) else {
            return;
        };
        if t.stage == Stage::Accepted {
            return;
        }
        t.stage = Stage::Accepted;
        t.accepted = Some(method);
        t.first_round = method;
        for provider in &vouchers {
            self.vouched.entry(provider.clone()).or_default().push(task);
        }
        t.ran = vouchers;
        self.open -= 1;
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Seeds a provider's record from what the node remembers of it.
    pub fn set_record(&mut self, provider: P, record: Record) {
        self.records.insert(provider, record);
    }

    pub fn record(&self, provider: &P) -> Record {
        self.records.get(provider).copied().unwrap_or_default()
    }

    pub fn is_excluded(&self, provider: &P) -> bool {
        self.excluded.contains(provider)
    }

    /// Whether `provider` may run `task` now: not caught, and never given
    /// this task before (replicas of one task go to different providers).
    pub fn may_run(&self, task: u64, provider: &P) -> bool {
        let Some(t) = self.tasks.get(task as usize) else {
            return false;
        };
        !self.excluded.contains(provider)
            && !t.ran.contains(provider)
            && !t.running.contains(provider)
    }

    /// Providers that ran or are running `task` (for the caller's own
    /// placement rules, such as distinct address ranges).
    pub fn holders(&self, task: u64) -> impl Iterator<Item = &P> {
        self.tasks
            .get(task as usize)
            .into_iter()
            .flat_map(|t| t.ran.iter().chain(&t.running))
    }

    /// Every task has an accepted result.
    pub fn is_complete(&self) -> bool {
        self.open == 0
    }

    /// The accepted method of a task, if settled.
    pub fn accepted(&self, task: u64) -> Option<Method> {
        self.tasks.get(task as usize).and_then(|t| t.accepted)
    }

    pub fn summary(&self) -> Summary<P> {
        let mut s = self.summary.clone();
        for t in &self.tasks {
            match t.accepted {
                Some(Method::Replicas) => s.by_replicas += 1,
                Some(Method::SpotCheck) => s.by_spot_check += 1,
                Some(Method::GroundTruth) => s.by_ground_truth += 1,
                Some(Method::Reputation) => s.on_reputation += 1,
                None => {}
            }
        }
        s.excluded = self.excluded.iter().cloned().collect();
        s
    }

    /// `task` was handed to `provider`. On a task's first dispatch this
    /// draws whether it is replicated, at the provider's rate.
    pub fn on_dispatch(&mut self, task: u64, provider: P) -> Vec<Action<P>> {
        let rate = self.record(&provider).replication_rate(&self.policy);
        let Some(t) = self.tasks.get_mut(task as usize) else {
            return Vec::new();
        };
        self.summary.executions += 1;
        t.running.push(provider);
        if t.stage != Stage::Fresh {
            return Vec::new();
        }
        let (wanted, first_round) = if rate >= 1.0 {
            (usize::from(self.policy.replicas), Method::Replicas)
        } else if self.rng.random::<f64>() < rate {
            (usize::from(self.policy.replicas), Method::SpotCheck)
        } else {
            (1, Method::Reputation)
        };
        if wanted > 1 {
            self.summary.replicated_tasks += 1;
        }
        t.stage = Stage::Checking;
        t.wanted = wanted;
        t.agree = wanted;
        t.first_round = first_round;
        (1..wanted).map(|_| Action::Run { task }).collect()
    }

    /// A signed result, already checked to be bound to this task and attempt.
    pub fn on_result(&mut self, task: u64, provider: P, claim: Claim) -> Vec<Action<P>> {
        let Some(t) = self.tasks.get_mut(task as usize) else {
            return Vec::new();
        };
        let Some(at) = t.running.iter().position(|p| *p == provider) else {
            return Vec::new();
        };
        t.running.swap_remove(at);
        t.ran.push(provider.clone());
        if t.stage != Stage::Accepted && !self.excluded.contains(&provider) {
            t.results.push((provider, claim));
        }
        self.evaluate(task)
    }

    /// An attempt ended without a result (refused, failed, no answer).
    /// The provider may be given the task again later.
    pub fn on_failure(&mut self, task: u64, provider: P, timed_out: bool) -> Vec<Action<P>> {
        let Some(t) = self.tasks.get_mut(task as usize) else {
            return Vec::new();
        };
        let Some(at) = t.running.iter().position(|p| *p == provider) else {
            return Vec::new();
        };
        t.running.swap_remove(at);
        let mut actions = Vec::new();
        if timed_out {
            let record = self.records.entry(provider.clone()).or_default();
            record.timed_out += 1;
            actions.push(Action::Record {
                provider,
                record: *record,
            });
        }
        actions.extend(self.evaluate(task));
        actions
    }

    /// Whether `task` is still being checked with executions out, so that a
    /// speculative copy on another provider could settle it sooner.
    pub fn may_speculate(&self, task: u64) -> bool {
        self.tasks
            .get(task as usize)
            .is_some_and(|t| t.stage == Stage::Checking && !t.running.is_empty())
    }

    /// Whether `task` still wants an execution handed out (a queued request
    /// can go stale when the task is settled another way meanwhile).
    pub fn needs_run(&self, task: u64) -> bool {
        self.tasks
            .get(task as usize)
            .is_some_and(|t| match t.stage {
                Stage::Fresh => true,
                Stage::Checking | Stage::Escalated => {
                    !t.starved && t.results.len() + t.running.len() < t.wanted
                }
                Stage::GroundTruth | Stage::Accepted => false,
            })
    }

    /// `provider` answered `task` with something that is not a result at
    /// all (a bad signature, a result bound to another task, outputs that
    /// do not match their hashes): caught, as by a contradiction.
    pub fn on_misbehaviour(&mut self, task: u64, provider: P) -> Vec<Action<P>> {
        if let Some(t) = self.tasks.get_mut(task as usize)
            && let Some(at) = t.running.iter().position(|p| *p == provider)
        {
            t.running.swap_remove(at);
        }
        let mut actions = self.catch(provider, task);
        actions.extend(self.evaluate(task));
        actions
    }

    /// No provider can take `task` (every one ran it, is caught, or is
    /// ruled out by the caller's placement rules): the requester runs it.
    pub fn on_no_provider(&mut self, task: u64) -> Vec<Action<P>> {
        let Some(t) = self.tasks.get_mut(task as usize) else {
            return Vec::new();
        };
        if matches!(t.stage, Stage::Accepted | Stage::GroundTruth) {
            return Vec::new();
        }
        t.starved = true;
        self.evaluate(task)
    }

    /// The requester's own run of `task`: it decides, and every provider it
    /// contradicts is caught.
    pub fn on_ground_truth(&mut self, task: u64, truth: Claim) -> Vec<Action<P>> {
        let Some(t) = self.tasks.get_mut(task as usize) else {
            return Vec::new();
        };
        if t.stage != Stage::GroundTruth {
            return Vec::new();
        }
        t.stage = Stage::Accepted;
        t.accepted = Some(Method::GroundTruth);
        self.open -= 1;
        let results = std::mem::take(&mut t.results);
        let mut actions = vec![Action::Accept {
            task,
            claim: truth.clone(),
            from: None,
            method: Method::GroundTruth,
        }];
        for (provider, claim) in results {
            // Another engine's result is not evidence either way.
            if claim.engine != truth.engine {
                continue;
            }
            if claim.digest == truth.digest {
                actions.push(self.verified(provider, task));
            } else {
                actions.extend(self.catch(provider, task));
            }
        }
        actions
    }

    fn verified(&mut self, provider: P, task: u64) -> Action<P> {
        self.vouched.entry(provider.clone()).or_default().push(task);
        let record = self.records.entry(provider.clone()).or_default();
        record.verified += 1;
        record.streak += 1;
        Action::Record {
            provider,
            record: *record,
        }
    }

    fn catch(&mut self, provider: P, task: u64) -> Vec<Action<P>> {
        if !self.excluded.insert(provider.clone()) {
            return Vec::new();
        }
        let record = self.records.entry(provider.clone()).or_default();
        record.disagreed += 1;
        record.streak = 0;
        let mut actions = vec![
            Action::Exclude {
                provider: provider.clone(),
                task,
            },
            Action::Record {
                provider: provider.clone(),
                record: *record,
            },
        ];
        // Its testimony is void: everything it vouched for is verified again,
        // with at least one fresh execution on a provider that never ran it.
        for reopened in self.vouched.remove(&provider).unwrap_or_default() {
            let t = &mut self.tasks[reopened as usize];
            if t.accepted.is_none_or(|m| m == Method::GroundTruth) {
                continue;
            }
            t.accepted = None;
            t.stage = Stage::Checking;
            self.open += 1;
            self.summary.reverified += 1;
            actions.push(Action::Reopen { task: reopened });
            t.wanted = usize::from(self.policy.replicas).max(t.results.len());
            t.agree = usize::from(self.policy.replicas);
            t.first_round = Method::Replicas;
            actions.extend(self.evaluate(reopened));
        }
        // Tasks still being checked drop its results now.
        for open in 0..self.tasks.len() {
            let t = &self.tasks[open];
            if matches!(t.stage, Stage::Checking | Stage::Escalated)
                && t.results.iter().any(|(p, _)| *p == provider)
            {
                actions.extend(self.evaluate(open as u64));
            }
        }
        actions
    }

    /// Decides what a task needs next from its results so far.
    fn evaluate(&mut self, task: u64) -> Vec<Action<P>> {
        let policy = self.policy;
        let excluded = &self.excluded;
        let t = &mut self.tasks[task as usize];
        if matches!(t.stage, Stage::Fresh | Stage::GroundTruth | Stage::Accepted) {
            return Vec::new();
        }
        // A caught provider's results are void.
        let before = t.results.len();
        t.results.retain(|(p, _)| !excluded.contains(p));
        let voided = before - t.results.len();
        if t.accepted.is_none() && voided > 0 && t.stage == Stage::Checking {
            // Replace what was voided, on someone else.
            t.wanted = t.wanted.max(t.results.len() + t.running.len() + voided);
        }
        let mut actions = Vec::new();
        let disagree = disagreement(&t.results);
        if disagree && t.stage == Stage::Checking {
            self.summary.disagreements += 1;
            t.stage = Stage::Escalated;
            let escalation = usize::from(policy.escalation);
            t.wanted = t.results.len() + t.running.len() + escalation;
            actions.extend((0..escalation).map(|_| Action::Run { task }));
        }
        let executions = t.ran.len() + t.running.len();
        let wants_more = t.results.len() + t.running.len() < t.wanted;
        if t.starved || (wants_more && executions >= EXECUTIONS_PER_TASK_MAX) {
            actions.retain(|a| !matches!(a, Action::Run { .. }));
            if t.running.is_empty() {
                t.stage = Stage::GroundTruth;
                self.summary.ground_truth_runs += 1;
                actions.push(Action::RunLocally { task });
            }
            return actions;
        }
        if t.stage == Stage::Escalated {
            if t.running.is_empty() && !wants_more {
                if disagreement(&t.results) {
                    t.stage = Stage::GroundTruth;
                    self.summary.ground_truth_runs += 1;
                    actions.push(Action::RunLocally { task });
                    return actions;
                }
                // The dissenters were voided meanwhile: what is left agrees.
            } else {
                if wants_more && actions.is_empty() {
                    let missing = t.wanted - t.results.len() - t.running.len();
                    actions.extend((0..missing).map(|_| Action::Run { task }));
                }
                return actions;
            }
        }
        if wants_more {
            let missing = t.wanted - t.results.len() - t.running.len();
            actions.extend((0..missing).map(|_| Action::Run { task }));
            return actions;
        }
        // No result disagrees. Results of different engines are not
        // compared: the largest engine group must hold enough agreeing ones.
        // Once it does, executions still running (a speculative copy of a
        // straggler) are not waited for; their results are ignored.
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, (_, claim)) in t.results.iter().enumerate() {
            groups.entry(claim.engine.as_str()).or_default().push(i);
        }
        let group = groups
            .into_values()
            .max_by_key(|g| g.len())
            .unwrap_or_default();
        if group.len() < t.agree && !t.running.is_empty() {
            return actions;
        }
        if group.len() < t.agree {
            t.wanted += 1;
            actions.push(Action::Run { task });
            return actions;
        }
        let method = if group.len() < 2 {
            Method::Reputation
        } else if t.stage == Stage::Escalated || t.agree > usize::from(policy.replicas) {
            Method::Replicas
        } else {
            match t.first_round {
                Method::Reputation => Method::Replicas,
                m => m,
            }
        };
        let agreeing: Vec<(P, Claim)> = group.iter().map(|&i| t.results[i].clone()).collect();
        t.stage = Stage::Accepted;
        t.accepted = Some(method);
        t.results.clear();
        self.open -= 1;
        let (from, claim) = agreeing[0].clone();
        actions.push(Action::Accept {
            task,
            claim,
            from: Some(from),
            method,
        });
        for (provider, _) in agreeing {
            if method == Method::Reputation {
                self.vouched.entry(provider).or_default().push(task);
            } else {
                actions.push(self.verified(provider, task));
            }
        }
        actions
    }
}

/// Two results of one engine identity that differ: proof that someone is wrong.
fn disagreement<P>(results: &[(P, Claim)]) -> bool {
    results.iter().enumerate().any(|(i, (_, a))| {
        results[i + 1..]
            .iter()
            .any(|(_, b)| a.engine == b.engine && a.digest != b.digest)
    })
}

#[cfg(test)]
mod tests;
