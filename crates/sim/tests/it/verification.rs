//! The verification policy alone under a seeded simulation: 100
//! providers, 10,000 tasks, 20% cheaters, five seeds per strategy (issue 9's
//! acceptance).

use sim::verification::{SimConfig, SimReport, Strategy, simulate};
use verify::Policy;

const SEEDS: [u64; 5] = [1, 2, 3, 4, 5];

fn run(strategy: Strategy, policy: Policy) -> Vec<SimReport> {
    SEEDS
        .iter()
        .map(|&seed| {
            simulate(&SimConfig {
                providers: 100,
                tasks: 10_000,
                cheater_share: 0.2,
                strategy,
                policy,
                seed,
            })
            .expect("a valid simulation")
        })
        .collect()
}

fn with_floor(floor: f64) -> Policy {
    Policy {
        floor,
        ..Policy::default()
    }
}

fn intermittent() -> Strategy {
    Strategy::Intermittent {
        after: u64::from(Policy::default().ramp),
        percent: 5,
    }
}

#[test]
fn naive_and_colluding_cheaters_leave_no_wrong_result_and_are_all_excluded() {
    for strategy in [
        Strategy::Wrong { percent: 50 },
        Strategy::Collude {
            after: 0,
            percent: 50,
        },
    ] {
        for (seed, r) in SEEDS.iter().zip(run(strategy, Policy::default())) {
            assert_eq!(r.wrong_in_output, 0, "{strategy:?} seed {seed}: {r:?}");
            assert_eq!(r.cheaters_excluded, r.cheaters, "{strategy:?} seed {seed}");
            assert_eq!(r.honest_excluded, 0, "{strategy:?} seed {seed}");
        }
    }
}

/// A cheater that lies on one task in ten may, by the draw of which tasks,
/// tell no lie while all its work is replicated, and then meet a spot
/// check (10%) with an honest replica (80%) on none of its ~12 lies: about
/// 0.92^12 ≈ 37% of them stay uncaught through a job of 10,000 tasks, and
/// their lies pass. What passes is bounded as the intermittent cheaters'
/// at the same floor.
#[test]
fn rare_colluders_pass_no_more_than_intermittent_cheaters_at_the_floor() {
    let colluders = Strategy::Collude {
        after: 0,
        percent: 10,
    };
    let reports = run(colluders, Policy::default());
    let wrong: Vec<u64> = reports.iter().map(|r| r.wrong_in_output).collect();
    eprintln!("collude:10, wrong results per seed: {wrong:?}");
    assert!(wrong.iter().all(|&w| w <= 35), "{wrong:?}");
    for r in &reports {
        assert_eq!(r.honest_excluded, 0);
        assert!(r.cheaters_excluded + 2 >= r.cheaters, "{r:?}");
    }
}

#[test]
fn intermittent_cheaters_trade_cost_for_leakage_and_full_replication_leaves_none() {
    let leaked = |floor| -> Vec<u64> {
        run(intermittent(), with_floor(floor))
            .iter()
            .map(|r| {
                assert_eq!(r.honest_excluded, 0);
                r.wrong_in_output
            })
            .collect()
    };
    let at_01 = leaked(0.1);
    let at_02 = leaked(0.2);
    let full = leaked(1.0);
    eprintln!(
        "intermittent, wrong results per seed: floor 0.1 {at_01:?}, 0.2 {at_02:?}, 1.0 {full:?}"
    );
    // Per 10,000 tasks: at most 35 and 20. (The model drew a lie per
    // execution before the node's strategies became its own, and a lie per
    // task since, as the node does: a cheater asked again about a task it
    // lied on lies again. That moved floor 0.2's worst seed from 10 to 15.)
    assert!(at_01.iter().all(|&w| w <= 35), "floor 0.1: {at_01:?}");
    assert!(at_02.iter().all(|&w| w <= 20), "floor 0.2: {at_02:?}");
    assert!(
        at_02.iter().sum::<u64>() < at_01.iter().sum::<u64>(),
        "a higher floor leaks less"
    );
    assert_eq!(full, vec![0; SEEDS.len()]);
}

#[test]
fn a_selective_coalition_passes_what_the_analytic_bound_says_and_no_more() {
    let reports = run(Strategy::Selective, Policy::default());
    let measured: u64 = reports.iter().map(|r| r.wrong_in_output).sum();
    let bound: f64 = reports.iter().map(|r| r.coalition_bound).sum();
    eprintln!("selective coalition over 5 seeds: measured {measured}, bound {bound:.1}");
    assert!(bound > 100.0, "enough replicated tasks to compare: {bound}");
    let ratio = measured as f64 / bound;
    assert!(
        (0.75..=1.25).contains(&ratio),
        "measured {measured}, bound {bound:.1}"
    );
    for r in &reports {
        assert_eq!(r.honest_excluded, 0);
    }
}

#[test]
fn with_everyone_honest_replication_falls_to_about_the_floor() {
    for (seed, r) in SEEDS.iter().zip(run(Strategy::Honest, Policy::default())) {
        assert_eq!(r.wrong_in_output, 0);
        assert_eq!(r.honest_excluded, 0);
        assert_eq!(r.ground_truth_runs, 0, "nothing to settle");
        assert!(
            r.extra_per_task_after_first_window <= 0.15,
            "seed {seed}: {:.3} extra executions per task after 500 tasks",
            r.extra_per_task_after_first_window
        );
        assert!(
            r.extra_per_task_after_first_window >= 0.09,
            "the floor holds: {:.3}",
            r.extra_per_task_after_first_window
        );
        assert!(
            r.curve[0] > r.curve[r.curve.len() - 1],
            "the cost falls as records grow"
        );
    }
}

#[test]
fn a_bad_simulation_is_refused() {
    let config = SimConfig {
        providers: 1,
        tasks: 10,
        cheater_share: 0.2,
        strategy: Strategy::Honest,
        policy: Policy::default(),
        seed: 1,
    };
    assert!(simulate(&config).is_err());
    assert!(
        simulate(&SimConfig {
            providers: 10,
            tasks: 0,
            ..config
        })
        .is_err()
    );
    assert!(
        simulate(&SimConfig {
            providers: 10,
            cheater_share: 2.0,
            ..config
        })
        .is_err()
    );
    // Silence is not a lie about a result: the model has no clock for it.
    assert!(
        simulate(&SimConfig {
            providers: 10,
            strategy: Strategy::Silent,
            ..config
        })
        .is_err()
    );
}
