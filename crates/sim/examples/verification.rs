//! Runs the verification policy alone under every cheating strategy and
//! prints what it lets through and what it costs (the figures in
//! BENCHMARKS.md).
//!
//!     cargo run --release -p sim --example verification

use sim::verification::{SimConfig, Strategy, simulate};
use verify::Policy;

const SEEDS: [u64; 5] = [1, 2, 3, 4, 5];

fn main() -> Result<(), sim::verification::SimError> {
    let base = SimConfig {
        providers: 100,
        tasks: 10_000,
        cheater_share: 0.2,
        strategy: Strategy::Honest,
        policy: Policy::default(),
        seed: 0,
    };
    let floor = |f: f64| Policy {
        floor: f,
        ..Policy::default()
    };
    let intermittent = Strategy::Intermittent {
        after: u64::from(Policy::default().ramp),
        percent: 5,
    };
    let collude = |percent| Strategy::Collude { after: 0, percent };
    let cases = [
        ("honest", Strategy::Honest, Policy::default()),
        (
            "wrong:50",
            Strategy::Wrong { percent: 50 },
            Policy::default(),
        ),
        (
            "wrong:10",
            Strategy::Wrong { percent: 10 },
            Policy::default(),
        ),
        ("collude:50", collude(50), Policy::default()),
        ("collude:10", collude(10), Policy::default()),
        ("intermittent 5%, floor 0.1", intermittent, floor(0.1)),
        ("intermittent 5%, floor 0.2", intermittent, floor(0.2)),
        ("intermittent 5%, floor 1", intermittent, floor(1.0)),
        (
            "selective coalition",
            Strategy::Selective,
            Policy::default(),
        ),
    ];
    println!(
        "100 providers, 10,000 tasks, 20% cheaters, seeds {SEEDS:?}; per seed, comma-separated"
    );
    println!(
        "{:<28} {:>18} {:>32} {:>16} {:>6} {:>6}",
        "strategy",
        "wrong in output",
        "extra executions per task",
        "cheaters out",
        "honest",
        "bound"
    );
    for (name, strategy, policy) in cases {
        let mut wrong = Vec::new();
        let mut extra = Vec::new();
        let mut out = Vec::new();
        let mut honest_out = 0;
        let mut bound = 0.0;
        for seed in SEEDS {
            let r = simulate(&SimConfig {
                strategy,
                policy,
                seed,
                ..base
            })?;
            wrong.push(r.wrong_in_output.to_string());
            extra.push(format!("{:.3}", r.extra_per_task));
            out.push(r.cheaters_excluded.to_string());
            honest_out += r.honest_excluded;
            bound += r.coalition_bound;
        }
        let bound = if strategy == Strategy::Selective {
            format!("{:.1}", bound / SEEDS.len() as f64)
        } else {
            "-".into()
        };
        println!(
            "{:<28} {:>18} {:>32} {:>16} {:>6} {:>6}",
            name,
            wrong.join(","),
            extra.join(","),
            out.join(","),
            honest_out,
            bound
        );
    }
    println!(
        "(cheaters out: of 20 per seed; honest: honest providers excluded over all seeds; \
         bound: C(c,k)/C(N,k) summed over the replicated tasks, mean of the seeds)"
    );
    let honest = simulate(&SimConfig { seed: 1, ..base })?;
    println!(
        "\neveryone honest (seed 1): extra executions per task after the first 500 tasks: {:.3}",
        honest.extra_per_task_after_first_window
    );
    println!("the curve, per window of 500 tasks:");
    for (i, extra) in honest.curve.iter().enumerate() {
        println!(
            "  tasks {:>5}-{:<5} {:.3}",
            i * 500,
            (i + 1) * 500 - 1,
            extra
        );
    }
    Ok(())
}
