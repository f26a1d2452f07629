//! `cargo run --release -p sim -- --providers 10000 --tasks 1000000`: runs
//! the requester's real core under a seeded network of providers and prints
//! its figures, the trace hash and every invariant that failed (with the one
//! line that replays the seed).

use anyhow::{Context, bail};
use clap::Parser;
use sim::{Faults, Mix, SimConfig};

#[derive(Parser)]
#[command(
    about = "A deterministic simulation of the requester's core",
    after_help = "Examples:\n  cargo run --release -p sim -- --providers 10000 --tasks 1000000\n  cargo run --release -p sim -- --providers 100 --tasks 10000 --seeds 200 --random-knobs --commit-failure\n  cargo run --release -p sim -- --mix collude:10=0.2 --no-churn --json"
)]
struct Args {
    #[arg(long, default_value_t = 100)]
    providers: u32,
    #[arg(long, default_value_t = 10_000)]
    tasks: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seeds to run, from --seed on.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Strategies and their shares, `strategy=share,...` (the rest honest),
    /// each as `plexus node --misbehave` reads it: wrong:PERCENT,
    /// collude:[AFTER:]PERCENT, intermittent:AFTER:PERCENT, fuel, replay,
    /// silent, slow:FACTOR, bad-signature, bad-output, oversized, selective.
    /// Default: the mix of DESIGN's adversaries.
    #[arg(long)]
    mix: Option<String>,
    /// One-way latency range per provider, `LO..HI`.
    #[arg(long, default_value = "1..50")]
    latency_ms: String,
    #[arg(long, default_value_t = 0.001)]
    loss: f64,
    #[arg(long, default_value_t = 0.001)]
    duplication: f64,
    #[arg(long, default_value_t = 1)]
    crashes: u32,
    #[arg(long)]
    no_partitions: bool,
    #[arg(long)]
    no_churn: bool,
    /// One commit of the requester's writes fails (its job must fail, sending nothing).
    #[arg(long)]
    commit_failure: bool,
    #[arg(long)]
    no_verify: bool,
    /// Knobs drawn per seed instead of the defaults.
    #[arg(long)]
    random_knobs: bool,
    /// Every provider alike (one slot, one speed, one price), as in
    /// `verify`'s simulation.
    #[arg(long)]
    uniform: bool,
    /// Test only: send although the commit failed (the checker must catch it).
    #[arg(long)]
    skip_commit_check: bool,
    /// Pay on the real ledger: the job's budget locked in escrow, a claim
    /// per accepted result when the job ends, the rest released; the
    /// supply and each provider's pay checked.
    #[arg(long)]
    ledger: bool,
    /// One JSON report per line instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let (lo, hi) = a
        .latency_ms
        .split_once("..")
        .and_then(|(lo, hi)| Some((lo.parse().ok()?, hi.parse().ok()?)))
        .with_context(|| format!("--latency-ms {:?} is not LO..HI", a.latency_ms))?;
    let mix = match &a.mix {
        Some(m) => Mix::parse(m)?,
        None => Mix::default(),
    };
    let mut failed = Vec::new();
    for seed in a.seed..a.seed.saturating_add(a.seeds) {
        let cfg = SimConfig {
            providers: a.providers,
            tasks: a.tasks,
            seed,
            mix: mix.clone(),
            faults: Faults {
                latency_ms: (lo, hi),
                loss: a.loss,
                duplication: a.duplication,
                partitions: !a.no_partitions,
                churn: !a.no_churn,
                crashes: a.crashes,
                commit_failure: a.commit_failure,
            },
            verify: !a.no_verify,
            random_knobs: a.random_knobs,
            uniform: a.uniform,
            skip_commit_check: a.skip_commit_check,
            ledger: a.ledger,
        };
        let r = sim::run(cfg)?;
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "seed {:>4}  {} providers × {} tasks: {}{}  {} events in {:.2} s ({:.0} events/s, {:.1} s simulated)  trace {}",
                r.seed,
                r.providers,
                r.tasks,
                r.phase,
                r.error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default(),
                r.events,
                r.wall_ms as f64 / 1000.0,
                r.events_per_sec,
                r.sim_time_ms as f64 / 1000.0,
                r.trace_hash,
            );
            if let Some(p) = &r.payments {
                println!(
                    "           paid {} credits in {} claims ({} blocks), {} refunded; to cheating providers {}",
                    p.paid, p.claims, p.blocks, p.refunded, p.paid_to_cheaters
                );
            }
            println!(
                "           wrong in output {}  extra executions per task {:.3}  cheaters out {}/{}  honest out {}  ground truth {}  speculated {}  timed out {}  refused {}  crashes {}",
                r.wrong_in_output,
                r.extra_per_task,
                r.cheaters_excluded,
                r.cheaters,
                r.honest_excluded,
                r.ground_truth_runs,
                r.speculated,
                r.timed_out,
                r.refused,
                r.crashes,
            );
        }
        for v in &r.violations {
            eprintln!(
                "seed {seed}: invariant {:?} broken at {} ms (step {}): {}",
                v.invariant, v.at_ms, v.step, v.detail
            );
        }
        if !r.violations.is_empty() {
            eprintln!("replay: {}", r.replay);
            failed.push(seed);
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} seeds broke an invariant: {failed:?}",
            failed.len(),
            a.seeds
        );
    }
    Ok(())
}
