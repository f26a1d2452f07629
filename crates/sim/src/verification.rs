//! A seeded simulation of the verification policy alone: many providers,
//! some of them cheating by one [`Strategy`] (the same concept, and the
//! same draws of which tasks to lie on, as the node's adversary build and
//! the simulation of the whole core), one job of many tasks. It runs the
//! same [`JobVerifier`] the node runs, without the scheduler, the market or
//! a network, and measures what the policy lets through and what it costs:
//! the model `DESIGN.md`'s figures come from, which the simulation of the
//! whole core ([`crate::run`]) reproduces over the real scheduler.
//!
//! The model: tasks are dispatched in order; each execution goes to a
//! provider drawn uniformly from those the verifier allows (a network of
//! equal providers); the replicas the verifier asks for in the same step go
//! out at once, so a coalition sees who holds a task together, and results
//! come back before the next task starts.

use provider::Forgery;
pub use provider::Strategy;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use verify::{Action, Claim, JobVerifier, Policy, coalition_bound};

/// Providers one simulation may have.
pub const SIM_PROVIDERS_MAX: u32 = 100_000;
/// Tasks one simulation may have.
pub const SIM_TASKS_MAX: u64 = 10_000_000;
/// Tasks per point of the cost curve.
pub const CURVE_WINDOW: u64 = 500;

const ENGINE: &str = "sim";

#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    pub providers: u32,
    pub tasks: u64,
    pub cheater_share: f64,
    pub strategy: Strategy,
    pub policy: Policy,
    pub seed: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SimReport {
    /// Tasks whose accepted result is not the honest one.
    pub wrong_in_output: u64,
    /// (executions + the requester's own runs) / tasks - 1.
    pub extra_per_task: f64,
    /// The same, over the tasks after the first [`CURVE_WINDOW`].
    pub extra_per_task_after_first_window: f64,
    pub cheaters: u64,
    pub cheaters_excluded: u64,
    pub honest_excluded: u64,
    pub ground_truth_runs: u64,
    pub disagreements: u64,
    pub reverified: u64,
    /// Expected wrong results a selective coalition passes, summed over the
    /// replicated rounds: C(c,k)/C(N,k) each.
    pub coalition_bound: f64,
    /// Extra executions per task in each window of [`CURVE_WINDOW`] tasks.
    pub curve: Vec<f64>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SimError {
    #[error("{0} providers: between 2 and {SIM_PROVIDERS_MAX} (SIM_PROVIDERS_MAX)")]
    Providers(u32),
    #[error("{0} tasks: between 1 and {SIM_TASKS_MAX} (SIM_TASKS_MAX)")]
    Tasks(u64),
    #[error("cheater share {0} is not between 0 and 1")]
    Share(f64),
    #[error("{0}: not a lie about results, which is all this model has")]
    Strategy(Strategy),
    #[error(transparent)]
    Policy(#[from] verify::VerifyError),
}

fn honest(task: u64) -> Claim {
    let mut digest = [0; 32];
    digest[..8].copy_from_slice(&task.to_le_bytes());
    Claim {
        engine: ENGINE.into(),
        digest,
    }
}

/// A wrong claim; `author` tells one cheater's forgery from another's
/// (colluders share author 0).
fn forged(task: u64, author: u64) -> Claim {
    let mut claim = honest(task);
    claim.digest[8] = 1;
    claim.digest[9..17].copy_from_slice(&author.to_le_bytes());
    claim
}

pub fn simulate(config: &SimConfig) -> Result<SimReport, SimError> {
    if !(2..=SIM_PROVIDERS_MAX).contains(&config.providers) {
        return Err(SimError::Providers(config.providers));
    }
    if !(1..=SIM_TASKS_MAX).contains(&config.tasks) {
        return Err(SimError::Tasks(config.tasks));
    }
    if !(0.0..=1.0).contains(&config.cheater_share) {
        return Err(SimError::Share(config.cheater_share));
    }
    config.policy.validate()?;
    if matches!(
        config.strategy,
        Strategy::Replay
            | Strategy::Silent
            | Strategy::Slow { .. }
            | Strategy::BadSignature
            | Strategy::BadOutput
            | Strategy::Oversized
    ) {
        return Err(SimError::Strategy(config.strategy));
    }
    // What the cheaters' draws are salted with (the node's: the job's id).
    let salt = format!("verification:{}", config.seed);
    let n = config.providers;
    let cheaters = if config.strategy == Strategy::Honest {
        0
    } else {
        (f64::from(n) * config.cheater_share).round() as u32
    };
    // Providers 0..cheaters cheat; draws are uniform, so which ones is immaterial.
    let is_cheater = |p: u32| p < cheaters;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut verifier = JobVerifier::<u32>::new(
        config.tasks,
        config.policy,
        config.seed ^ 0x9e37_79b9_7f4a_7c15,
    );
    let mut executed = vec![0_u64; n as usize];
    let mut accepted: Vec<Option<Claim>> = vec![None; config.tasks as usize];
    let mut report = SimReport {
        cheaters: u64::from(cheaters),
        ..SimReport::default()
    };
    let mut work_at_window_start = 0_u64;
    let mut work_after_first_window = 0_u64;

    for task in 0..config.tasks {
        let mut runs = vec![task];
        let mut local = Vec::new();
        while !runs.is_empty() || !local.is_empty() {
            // One step: place every run asked for, then let each holder answer.
            let mut placed: Vec<(u64, u32)> = Vec::new();
            let mut actions = Vec::new();
            while let Some(t) = runs.pop() {
                let eligible: Vec<u32> = (0..n).filter(|p| verifier.may_run(t, p)).collect();
                if eligible.is_empty() {
                    actions.extend(verifier.on_no_provider(t));
                    continue;
                }
                let p = eligible[rng.random_range(0..eligible.len())];
                placed.push((t, p));
                for a in verifier.on_dispatch(t, p) {
                    match a {
                        Action::Run { task } => runs.push(task),
                        other => actions.push(other),
                    }
                }
            }
            let active = (0..n).filter(|p| !verifier.is_excluded(p)).count() as u64;
            let active_cheaters = (0..cheaters).filter(|p| !verifier.is_excluded(p)).count() as u64;
            for &(t, p) in &placed {
                let holders: Vec<u32> = placed
                    .iter()
                    .filter(|(u, _)| *u == t)
                    .map(|(_, q)| *q)
                    .collect();
                if config.strategy == Strategy::Selective && holders.len() >= 2 && holders[0] == p {
                    report.coalition_bound +=
                        coalition_bound(active, active_cheaters, holders.len() as u64);
                }
                executed[p as usize] += 1;
                let claim = if !is_cheater(p) {
                    honest(t)
                } else {
                    match config.strategy {
                        Strategy::Selective => {
                            if holders.len() >= 2 && holders.iter().all(|&q| is_cheater(q)) {
                                forged(t, 0)
                            } else {
                                honest(t)
                            }
                        }
                        // The fuel is part of what replicas compare.
                        Strategy::FuelLie => forged(t, u64::from(p) + 1),
                        lie => match lie.forgery(executed[p as usize], &p.to_string(), &salt, t) {
                            Some(Forgery::Own) => forged(t, u64::from(p) + 1),
                            Some(Forgery::Shared) => forged(t, 0),
                            None => honest(t),
                        },
                    }
                };
                actions.extend(verifier.on_result(t, p, claim));
            }
            for t in local.drain(..) {
                actions.extend(verifier.on_ground_truth(t, honest(t)));
            }
            // Follow-ups go out in the next step.
            let mut queue = actions;
            while let Some(a) = queue.pop() {
                match a {
                    Action::Run { task } => runs.push(task),
                    Action::RunLocally { task } => local.push(task),
                    Action::Accept { task, claim, .. } => accepted[task as usize] = Some(claim),
                    Action::Reopen { task } => accepted[task as usize] = None,
                    Action::Exclude { .. } | Action::Record { .. } => {}
                }
            }
        }
        if (task + 1) % CURVE_WINDOW == 0 || task + 1 == config.tasks {
            let summary = verifier.summary();
            let work = summary.executions + summary.ground_truth_runs;
            let window = (task % CURVE_WINDOW) + 1;
            report
                .curve
                .push((work - work_at_window_start) as f64 / window as f64 - 1.0);
            if task + 1 > CURVE_WINDOW {
                work_after_first_window += work - work_at_window_start;
            }
            work_at_window_start = work;
        }
    }

    let summary = verifier.summary();
    debug_assert!(verifier.is_complete());
    report.wrong_in_output = (0..config.tasks)
        .filter(|&t| accepted[t as usize].as_ref() != Some(&honest(t)))
        .count() as u64;
    report.extra_per_task =
        (summary.executions + summary.ground_truth_runs) as f64 / config.tasks as f64 - 1.0;
    if config.tasks > CURVE_WINDOW {
        report.extra_per_task_after_first_window =
            work_after_first_window as f64 / (config.tasks - CURVE_WINDOW) as f64 - 1.0;
    }
    report.cheaters_excluded = summary.excluded.iter().filter(|&&p| is_cheater(p)).count() as u64;
    report.honest_excluded = summary.excluded.iter().filter(|&&p| !is_cheater(p)).count() as u64;
    report.ground_truth_runs = summary.ground_truth_runs;
    report.disagreements = summary.disagreements;
    report.reverified = summary.reverified;
    Ok(report)
}
