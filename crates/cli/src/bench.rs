//! `plexus bench`: the benchmark suite. Starts its own requester and
//! providers as processes on loopback, runs each benchmark, runs the peers'
//! scripts (`shared/bench/peers`) where a Python with Ray or Dask is given,
//! and prints one table: workload, metric, Plexus's figure, the peer's in the
//! same run, the target, the ratio and whether the target is met.
//!
//! B1, B2 and B4 run on requester and provider processes; B3 (kernels), B5
//! (blob transfer) and B6 (gossip) run in this process, on the node's own
//! sandbox and network actor.

mod gossip;
mod kernels;
mod transfer;

use crate::client::Client;
use crate::demo::{Processes, StartedNode, start_node};
use anyhow::{Context, bail};
use clap::Args;
use node::{JobStatus, JobSubmission, PeerInfo};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The Mandelbrot of shared/bench: the sum of its iteration counts.
const MANDEL_CHECKSUM: u64 = 181_208_237;
const OFFER_TIMEOUT: Duration = Duration::from_secs(60);
/// A pause after the peers' scripts before our own benchmarks start.
const PEERS_SETTLE: Duration = Duration::from_secs(15);
/// Rounds of B1's one-task latency, each right after a run of Ray's own
/// latency loop (when Ray is there); each side's figure is the median of its
/// rounds. The machine's speed drifts over minutes (within one hour, one
/// binary's p50 moved between 0.69 and 1.08 ms and Ray's between 1.8 and
/// 2.5 ms), so two figures taken minutes apart compare the minutes more than
/// the code.
const LATENCY_ROUNDS: usize = 3;
/// No-op tasks of the throughput part of the Ray runs made for B1's latency
/// rounds (their figure is not used; fewer keeps a round short).
const RAY_ROUND_NOOP_TASKS: u64 = 1000;
/// Longest one benchmark job may take before the suite gives up on it (the
/// longest a node waits for a job before answering its submission).
const JOB_TIMEOUT: Duration = Duration::from_secs(api::SUBMIT_WAIT_S_MAX);

#[derive(Args)]
#[command(
    about = "Run the benchmark suite on this machine and print figures against Ray and Dask",
    after_help = "Examples:\n  plexus bench\n  plexus bench --python /tmp/benchvenv/bin/python --peers ../shared/bench/peers\n  plexus bench --smoke --json"
)]
pub struct BenchArgs {
    /// Small sizes, for a quick check that every benchmark still runs
    #[arg(long)]
    smoke: bool,
    /// Print the rows as JSON
    #[arg(long)]
    json: bool,
    /// A Python with Ray and/or Dask installed, for the peers' figures
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Where the peers' scripts are
    #[arg(long, value_name = "DIR", default_value = "../shared/bench/peers")]
    peers: PathBuf,
    /// Run only these benchmarks (B1 to B6, comma-separated)
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// The guest workloads' sources, built natively for B3 (needs cargo)
    #[arg(long, value_name = "DIR", default_value = "workloads")]
    workloads: PathBuf,
}

/// One line of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub id: &'static str,
    pub workload: String,
    pub metric: String,
    pub plexus: Option<f64>,
    /// The figure it is compared with, measured in this run.
    pub against: Option<f64>,
    pub against_what: String,
    pub target: String,
    /// plexus ÷ against, or against ÷ plexus, so that higher is better.
    pub ratio: Option<f64>,
    pub met: Option<bool>,
}

struct Sizes {
    noop_tasks: u64,
    latency_samples: usize,
    /// Tiles per side of the B2 jobs.
    mandel_per_side: &'static [u32],
    /// Measured runs of B1's throughput (the median counts; the peers' REPS).
    reps: usize,
    /// Measured runs of each B2 job and of its direct run.
    fan_out_reps: usize,
    latency_rounds: usize,
}

pub fn bench(a: BenchArgs) -> anyhow::Result<u8> {
    let sizes = if a.smoke {
        Sizes {
            noop_tasks: 200,
            latency_samples: 20,
            mandel_per_side: &[8],
            reps: 1,
            fan_out_reps: 1,
            latency_rounds: 1,
        }
    } else {
        Sizes {
            noop_tasks: 10_000,
            latency_samples: 1000,
            mandel_per_side: &[8, 64],
            reps: 3,
            fan_out_reps: 5,
            latency_rounds: LATENCY_ROUNDS,
        }
    };
    let ray = peer_figures(&a, "bench_ray.py", &sizes);
    let dask = peer_figures(&a, "bench_dask.py", &sizes);
    if ray.is_some() || dask.is_some() {
        // The peers' clusters leave the machine busy for a while after
        // their scripts end (memory handed back, their processes' exits):
        // measured, our one-task latency right after them was 20–30% worse.
        std::thread::sleep(PEERS_SETTLE);
    }
    let processes = Processes::default();
    let result = run(&a, &sizes, &processes, ray.as_ref(), dask.as_ref());
    processes.stop_all();
    let rows = result?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows);
    }
    Ok(0)
}

fn run(
    a: &BenchArgs,
    sizes: &Sizes,
    processes: &Processes,
    ray: Option<&serde_json::Value>,
    dask: Option<&serde_json::Value>,
) -> anyhow::Result<Vec<Row>> {
    let root = tempfile::Builder::new()
        .prefix("plexus-bench-")
        .tempdir()
        .context("create a temporary directory")?;
    let mut rows = Vec::new();

    let wanted = |id: &str| {
        a.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| o.eq_ignore_ascii_case(id)))
    };
    // Each benchmark's nodes stop when it ends: idle nodes still ping,
    // gossip and offer, and on two cores that shows in the next one's
    // latency.
    if wanted("B4") {
        rows.extend(cold_start(root.path(), processes)?);
        processes.stop_all();
    }
    // B1 and B2 on one provider with 2 slots, as the peers run 2 workers.
    if wanted("B1") || wanted("B2") {
        let (requester, _provider) = network(processes, root.path(), "b1", 2, true)?;
        let client = Client::new(&requester.api);
        if wanted("B1") {
            rows.extend(dispatch(a, root.path(), sizes, &client, ray, dask)?);
        }
        if wanted("B2") {
            rows.extend(fan_out(root.path(), sizes, &client, ray)?);
        }
        processes.stop_all();
    }
    if wanted("B3") {
        rows.extend(kernels::run(&a.workloads, root.path(), a.smoke)?);
    }
    if wanted("B5") {
        rows.extend(transfer::run(root.path(), a.smoke)?);
    }
    if wanted("B6") {
        rows.extend(gossip::run(a.smoke)?);
    }
    Ok(rows)
}

/// B4: fresh processes, one small tile of a module the provider never saw;
/// then the same tile again, everything cached.
fn cold_start(root: &Path, processes: &Processes) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    // B4 first, on fresh processes. The provider's start-up benchmark
    // compiles the built-in mandelbrot module, so the tile's module is the
    // same code with a custom section of its own: a hash, a transfer and a
    // compile the provider has never done.
    eprintln!("B4: cold start");
    let (requester, _provider) = network(processes, root, "cold", 1, false)?;
    let client = Client::new(&requester.api);
    let module = root.join("mandelbrot-b4.wasm");
    std::fs::write(&module, never_seen_module("mandelbrot")?)
        .with_context(|| format!("write {}", module.display()))?;
    let tile = job_file(
        root,
        "tile.toml",
        &format!(
            "name = \"tile\"\nmodule = {:?}\nargs = [\"--size\", \"256\", \"--per-side\", \"8\", \"--tile\", \"0\"]\n",
            module.display().to_string()
        ),
    )?;
    let (cold, status) = submit_and_wait(&client, &tile)?;
    let warm = submit_and_wait(&client, &tile)?.0;
    let sandbox_ms = status.providers.first().map_or(0, |p| p.busy_ms);
    rows.push(row(
        "B4",
        &format!(
            "cold start: one 32×32 mandel tile ({sandbox_ms} ms in the sandbox), module never seen by the provider"
        ),
        "ms to the verified result",
        Some(ms(cold)),
        None,
        "",
        "≤ 100 ms",
        ms(cold) <= 100.0,
    ));
    rows.push(row(
        "B4",
        "the same tile, module cached",
        "ms to the verified result",
        Some(ms(warm)),
        None,
        "",
        "≤ 10 ms",
        ms(warm) <= 10.0,
    ));

    Ok(rows)
}

/// B1: throughput of many no-op tasks, and the latency of one at a time.
fn dispatch(
    a: &BenchArgs,
    root: &Path,
    sizes: &Sizes,
    client: &Client,
    ray: Option<&serde_json::Value>,
    dask: Option<&serde_json::Value>,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    eprintln!("B1: {} noop tasks", sizes.noop_tasks);
    // A fuel limit small enough that a budget of two credits a task covers
    // every execution at its worst (10⁷ fuel at 100 credits per Gfuel is
    // one credit).
    let base = format!(
        "name = \"noop\"\nmodule = \"builtin:noop\"\n[tasks]\ni = {{ start = 0, end = {} }}\n[limits]\nfuel = 10_000_000\n",
        sizes.noop_tasks
    );
    let noop = job_file(root, "noop.toml", &base)?;
    // The same job paid for on the requester's ledger: its budget locked at
    // submission, a claim per accepted result and the refund after its end.
    let paid = job_file(
        root,
        "noop-paid.toml",
        &format!(
            "{base}[requirements]\nprice_per_gfuel_max = 100\nbudget = {}\n",
            2 * sizes.noop_tasks
        ),
    )?;
    let _ = submit_and_wait(client, &noop)?; // warm: module cached, records built
    // The median of `reps` runs, as the peers' scripts report theirs (REPS),
    // pay off and on in turn, so both meet the machine alike.
    let mut walls = Vec::with_capacity(sizes.reps);
    let mut walls_paid = Vec::with_capacity(sizes.reps);
    let mut walls_settled = Vec::with_capacity(sizes.reps);
    for _ in 0..sizes.reps {
        walls.push(submit_and_wait(client, &noop)?.0);
        let (paid, settled) = paid_and_settled(client, &paid)?;
        walls_paid.push(paid);
        walls_settled.push(settled);
    }
    let wall = median(walls);
    let wall_paid = median(walls_paid);
    let wall_settled = median(walls_settled);
    rows.push(row_against(
        "B1",
        &format!(
            "{} noop tasks paid on the ledger, to the job's end (escrow locked first)",
            sizes.noop_tasks
        ),
        "tasks/s",
        sizes.noop_tasks as f64 / wall_paid.as_secs_f64(),
        Some(sizes.noop_tasks as f64 / wall.as_secs_f64()),
        "pay off",
        "≥ 0.9× pay off",
        Some(wall.as_secs_f64() / wall_paid.as_secs_f64()),
        |ratio| ratio >= 0.9,
    ));
    rows.push(row_against(
        "B1",
        &format!(
            "{} noop tasks paid on the ledger, until settled (a claim each, refund)",
            sizes.noop_tasks
        ),
        "tasks/s",
        sizes.noop_tasks as f64 / wall_settled.as_secs_f64(),
        Some(sizes.noop_tasks as f64 / wall.as_secs_f64()),
        "pay off",
        "reported",
        Some(wall.as_secs_f64() / wall_settled.as_secs_f64()),
        |_| true,
    ));
    let tasks_per_s = sizes.noop_tasks as f64 / wall.as_secs_f64();
    let ray_tput = ray.and_then(|r| r["noop_tasks_per_s_median"].as_f64());
    rows.push(row_against(
        "B1",
        &format!("{} noop tasks, 1 provider × 2 slots", sizes.noop_tasks),
        "tasks/s",
        tasks_per_s,
        ray_tput,
        "Ray",
        "≥ 2× Ray",
        ray_tput.map(|r| tasks_per_s / r),
        |ratio| ratio >= 2.0,
    ));
    let one = job_file(
        root,
        "one.toml",
        "name = \"one\"\nmodule = \"builtin:noop\"\n",
    )?;
    let one = crate::job::prepare(&one)?;
    let (mut ours_p50, mut ours_p99) = (Vec::new(), Vec::new());
    let (mut ray_p50, mut ray_p99) = (Vec::new(), Vec::new());
    for round in 1..=sizes.latency_rounds {
        if ray.is_some() {
            let ray_round = Sizes {
                noop_tasks: RAY_ROUND_NOOP_TASKS,
                latency_samples: sizes.latency_samples,
                mandel_per_side: &[],
                reps: 1,
                fan_out_reps: 0,
                latency_rounds: 1,
            };
            if let Some(r) = peer_figures(a, "bench_ray.py", &ray_round) {
                ray_p50.extend(r["latency_ms_p50"].as_f64());
                ray_p99.extend(r["latency_ms_p99"].as_f64());
            }
            std::thread::sleep(PEERS_SETTLE);
        }
        eprintln!(
            "B1: {} one-task jobs (round {round} of {})",
            sizes.latency_samples, sizes.latency_rounds
        );
        let mut latencies: Vec<f64> = Vec::with_capacity(sizes.latency_samples);
        for _ in 0..sizes.latency_samples {
            latencies.push(ms(submit_prepared(client, &one)?.0));
        }
        latencies.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
        ours_p50.push(p50);
        ours_p99.push(p99);
        eprintln!(
            "B1 round {round}: p50 {p50:.3} ms, p99 {p99:.3} ms; Ray's just before: {}",
            match (ray_p50.len() == round, ray_p50.last(), ray_p99.last()) {
                (true, Some(p50), Some(p99)) => format!("p50 {p50:.3} ms, p99 {p99:.3} ms"),
                _ => "none".into(),
            }
        );
    }
    // Rounds whose Ray run failed leave the first run's figure.
    if ray_p50.is_empty() {
        ray_p50.extend(ray.and_then(|r| r["latency_ms_p50"].as_f64()));
        ray_p99.extend(ray.and_then(|r| r["latency_ms_p99"].as_f64()));
    }
    let latency_workload = if sizes.latency_rounds > 1 && ray.is_some() {
        format!(
            "one noop task at a time, submit to result (median of {} rounds, each right after Ray's)",
            sizes.latency_rounds
        )
    } else {
        "one noop task at a time, submit to result".to_owned()
    };
    let (p50, p99) = (median_of(ours_p50), median_of(ours_p99));
    let (ray_p50, ray_p99) = (
        Some(ray_p50).filter(|v| !v.is_empty()).map(median_of),
        Some(ray_p99).filter(|v| !v.is_empty()).map(median_of),
    );
    rows.push(row_against(
        "B1",
        &latency_workload,
        "p50 ms",
        p50,
        ray_p50,
        "Ray",
        "≤ ½ Ray",
        ray_p50.map(|r| r / p50),
        |ratio| ratio >= 2.0,
    ));
    rows.push(row_against(
        "B1",
        &latency_workload,
        "p99 ms",
        p99,
        ray_p99,
        "Ray",
        "reported",
        ray_p99.map(|r| r / p99),
        |_| true,
    ));
    if let Some(dask) = dask {
        let d = dask["noop_tasks_per_s_median"].as_f64();
        rows.push(row_against(
            "B1",
            &format!("{} noop tasks, 1 provider × 2 slots", sizes.noop_tasks),
            "tasks/s",
            tasks_per_s,
            d,
            "Dask",
            "reported",
            d.map(|d| tasks_per_s / d),
            |_| true,
        ));
    }

    Ok(rows)
}

/// B2: the benchmark Mandelbrot in 64 and 4,096 tiles, assembled, against
/// the same kernel run directly in 2 threads.
fn fan_out(
    root: &Path,
    sizes: &Sizes,
    client: &Client,
    ray: Option<&serde_json::Value>,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &per_side in sizes.mandel_per_side {
        let limit = if per_side <= 8 { 1.10 } else { 1.25 };
        let tiles = per_side * per_side;
        eprintln!("B2: mandel-{tiles}");
        let mandel = job_file(
            root,
            &format!("mandel-{tiles}.toml"),
            &format!(
                "name = \"mandel-{tiles}\"\nmodule = \"builtin:mandelbrot\"\nargs = [\"--per-side\", \"{per_side}\", \"--tile\", \"{{tile}}\"]\n\
                 [tasks]\ntile = {{ start = 0, end = {tiles} }}\n[limits]\nfuel = 10_000_000_000\n\
                 [assemble]\nkind = \"tiles-png\"\nfile = \"tile\"\noutput = \"mandel.png\"\n"
            ),
        )?;
        // Both sides the median of `fan_out_reps` runs, taken in turns, so
        // that a slow moment of a shared machine does not fall on one side
        // only (the direct run of mandel-64 alone moved 0.40–0.46 s).
        let out = root.join(format!("direct-{tiles}"));
        run_directly(&mandel, &out)?; // the module compiled and cached
        let (mut walls, mut directs) = (Vec::new(), Vec::new());
        for _ in 0..sizes.fan_out_reps {
            let (wall, status) = submit_and_wait(client, &mandel)?;
            if status.checksum != Some(MANDEL_CHECKSUM) {
                bail!(
                    "mandel-{tiles}: checksum {:?}, expected {MANDEL_CHECKSUM}",
                    status.checksum
                );
            }
            walls.push(wall);
            directs.push(run_directly(&mandel, &out)?);
        }
        let (wall, direct) = (median(walls), median(directs));
        let ratio = wall.as_secs_f64() / direct.as_secs_f64();
        rows.push(Row {
            id: "B2",
            workload: format!(
                "mandel-{tiles} (1024², {per_side}×{per_side} tiles), 2 provider slots, assembled"
            ),
            metric: "s submit to image".into(),
            plexus: Some(wall.as_secs_f64()),
            against: Some(direct.as_secs_f64()),
            against_what: "the same WASM kernel in 2 threads, same metering (plexus run --jobs 2)"
                .into(),
            target: format!("≤ {limit:.2}×"),
            ratio: Some(ratio),
            met: Some(ratio <= limit),
        });
        if tiles == 64
            && let Some(r) = ray.and_then(|r| r["mandel_64tiles_s_median"].as_f64())
        {
            rows.push(row_against(
                "B2",
                "mandel-64 against Ray (Python kernel)",
                "s",
                wall.as_secs_f64(),
                Some(r),
                "Ray",
                "reported",
                Some(r / wall.as_secs_f64()),
                |_| true,
            ));
        }
    }
    Ok(rows)
}

/// A requester and one provider with `slots`, on loopback, the provider's offer seen.
fn network(
    processes: &Processes,
    root: &Path,
    name: &str,
    slots: u32,
    ledger: bool,
) -> anyhow::Result<(StartedNode, StartedNode)> {
    // With a ledger, funds for every paid run (each locks its budget until
    // its refund).
    let with_ledger: &[&str] = if ledger {
        &["--ledger", "--mint", "1000000000000"]
    } else {
        &[]
    };
    let requester = start_node(
        processes,
        &root.join(format!("{name}-requester")),
        with_ledger,
    )?;
    let slots = slots.to_string();
    let provider = start_node(
        processes,
        &root.join(format!("{name}-provider")),
        &[
            "--provide",
            "--slots",
            &slots,
            "--bootstrap",
            &requester.tcp_addr,
        ],
    )?;
    let client = Client::new(&requester.api);
    let started = Instant::now();
    loop {
        let peers: Vec<PeerInfo> = client.get("/api/peers")?;
        if peers.iter().any(|p| p.connected && p.offer.is_some()) {
            return Ok((requester, provider));
        }
        if started.elapsed() > OFFER_TIMEOUT {
            bail!("the benchmark's provider offered nothing within {OFFER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A built-in module with a custom section naming this run appended: the
/// same code under a hash no node has seen (a wasm custom section changes
/// nothing a module does).
fn never_seen_module(name: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = guests::builtin(name)
        .with_context(|| format!("{name} is not built in"))?
        .to_vec();
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let section_name = b"plexus-bench";
    let mut section = vec![section_name.len() as u8];
    section.extend_from_slice(section_name);
    section.extend_from_slice(nonce.as_bytes());
    // Custom section: id 0, then its size as LEB128 (always < 128 here).
    bytes.push(0);
    bytes.push(section.len() as u8);
    bytes.extend_from_slice(&section);
    Ok(bytes)
}

/// A job file with verification off: the benchmarks measure dispatch, as
/// DESIGN.md allows for one's own machines.
fn job_file(root: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = root.join(name);
    std::fs::write(&path, format!("{text}[verification]\nmode = \"none\"\n"))
        .with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// Submits a job and waits for its end in the same request (the node
/// answers when the job has ended); the time from before the submission to
/// the answer.
fn submit_and_wait(client: &Client, job: &Path) -> anyhow::Result<(Duration, JobStatus)> {
    submit_prepared(client, &crate::job::prepare(job)?)
}

/// A paid job's time from its submission to its end, and until its escrow
/// is released (every claim paid and the rest refunded): what pay costs in
/// all; and no settling is left to slow the run after it.
fn paid_and_settled(client: &Client, job: &Path) -> anyhow::Result<(Duration, Duration)> {
    let started = Instant::now();
    let (wall, status) = submit_and_wait(client, job)?;
    loop {
        let e: node::pay::EscrowView = client.get(&format!("/api/ledger/escrows/{}", status.id))?;
        if e.released {
            return Ok((wall, started.elapsed()));
        }
        if started.elapsed() > JOB_TIMEOUT {
            bail!(
                "job {}'s escrow not settled after {JOB_TIMEOUT:?}",
                status.id
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// [`submit_and_wait`] for a job file read beforehand: what a client that
/// submits the same job again and again does (as Ray's benchmark defines
/// its remote function once).
fn submit_prepared(client: &Client, job: &JobSubmission) -> anyhow::Result<(Duration, JobStatus)> {
    let started = Instant::now();
    // A job that can never finish (its every provider excluded) must not
    // hang the suite: the node answers after JOB_TIMEOUT at the latest.
    let (id, status) = crate::job::submit_and_wait(client, job, Some(JOB_TIMEOUT))?;
    let wall = started.elapsed();
    let status = status.context("the node answered without the job's status")?;
    if status.state != types::JobPhase::Completed {
        bail!(
            "benchmark job {id} {} after {wall:?}: {}",
            status.state,
            status.error.unwrap_or_default()
        );
    }
    Ok((wall, status))
}

/// The job's WASM kernel run by this binary in 2 threads (`plexus run --jobs 2`).
fn run_directly(job: &Path, out: &Path) -> anyhow::Result<Duration> {
    let exe = std::env::current_exe().context("find the plexus binary")?;
    let started = Instant::now();
    let output = std::process::Command::new(&exe)
        .arg("run")
        .arg(job)
        .arg("--out")
        .arg(out)
        .args(["--jobs", "2", "--quiet"])
        .output()
        .context("run plexus run")?;
    let wall = started.elapsed();
    if !output.status.success() {
        bail!(
            "plexus run {}: {}",
            job.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(wall)
}

/// The median of a few figures (the upper one of an even count).
fn median_of(mut figures: Vec<f64>) -> f64 {
    figures.sort_by(f64::total_cmp);
    percentile(&figures, 50.0)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// The peers' figures from their script, when a Python is given and the
/// script runs (Ray or Dask may be missing: the rows then have no peer).
fn peer_figures(a: &BenchArgs, script: &str, sizes: &Sizes) -> Option<serde_json::Value> {
    let python = a.python.as_ref()?;
    let path = a.peers.join(script);
    eprintln!("running {} ...", path.display());
    let output = std::process::Command::new(python)
        .arg(&path)
        .env("NTASKS", sizes.noop_tasks.to_string())
        .env("NLAT", sizes.latency_samples.to_string())
        .env("REPS", sizes.reps.max(1).to_string())
        .output();
    match output {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let last = text.lines().last().unwrap_or("");
            serde_json::from_str(last).ok()
        }
        Ok(o) => {
            eprintln!(
                "{script}: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("failed")
            );
            None
        }
        Err(e) => {
            eprintln!("{script}: {e}");
            None
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[allow(clippy::too_many_arguments)]
fn row(
    id: &'static str,
    workload: &str,
    metric: &str,
    plexus: Option<f64>,
    against: Option<f64>,
    against_what: &str,
    target: &str,
    met: bool,
) -> Row {
    Row {
        id,
        workload: workload.into(),
        metric: metric.into(),
        plexus,
        against,
        against_what: against_what.into(),
        target: target.into(),
        ratio: None,
        met: Some(met),
    }
}

#[allow(clippy::too_many_arguments)]
fn row_against(
    id: &'static str,
    workload: &str,
    metric: &str,
    plexus: f64,
    against: Option<f64>,
    against_what: &str,
    target: &str,
    ratio: Option<f64>,
    meets: impl Fn(f64) -> bool,
) -> Row {
    Row {
        id,
        workload: workload.into(),
        metric: metric.into(),
        plexus: Some(plexus),
        against,
        against_what: if against.is_some() {
            against_what.into()
        } else {
            format!("{against_what} (not run: give --python)")
        },
        target: target.into(),
        ratio,
        met: ratio.map(meets),
    }
}

fn print_table(rows: &[Row]) {
    let figure = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.2}"));
    println!("| # | workload | metric | Plexus | against | figure | target | ratio | met |");
    println!("| --- | --- | --- | ---: | --- | ---: | --- | ---: | --- |");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.id,
            r.workload,
            r.metric,
            figure(r.plexus),
            r.against_what,
            figure(r.against),
            r.target,
            r.ratio.map_or("—".to_owned(), |v| format!("{v:.2}×")),
            match r.met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "—",
            }
        );
    }
}
