//! `plexus demo`: a whole local network — a requester and three providers as
//! separate processes on loopback, with fresh data dirs — renders the demo
//! scene end to end, then stops everything it started (also on Ctrl-C).

use crate::client::Client;
use crate::job;
use anyhow::{Context, bail};
use clap::Args;
use node::PeerInfo;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The demo's job and scene travel inside the binary, so it runs from anywhere.
const DEMO_JOB: &str = include_str!("../../../examples/render.toml");
const DEMO_SCENE: &str = include_str!("../../../examples/scenes/demo.gltf");
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Credits the demo's ledger gives the requester at genesis.
const DEMO_MINT: u64 = 10_000_000;
/// How long the demo waits for the job's claims and refund to be on the
/// ledger after the job ends (a few blocks of 200 ms).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args)]
#[command(
    about = "Start a local network (a requester and 3 providers) and render the demo scene on it"
)]
pub struct DemoArgs {
    /// Where the rendered image goes
    #[arg(long, default_value = "demo-output")]
    out: PathBuf,
    /// How many provider processes to start
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    providers: u16,
    /// Print the dashboard's address and keep the network running after the
    /// job, until Ctrl-C, so it can be looked at
    #[arg(long)]
    open: bool,
}

/// Every process the demo started; killed when dropped.
#[derive(Clone, Default)]
pub(crate) struct Processes(Arc<Mutex<Vec<Child>>>);

impl Processes {
    pub(crate) fn push(&self, child: Child) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(child);
    }
    pub(crate) fn stop_all(&self) {
        let mut children = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for child in children.iter_mut() {
            let _ = child.kill();
        }
        for child in children.iter_mut() {
            let _ = child.wait();
        }
        children.clear();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        if Arc::strong_count(&self.0) == 1 {
            self.stop_all();
        }
    }
}

pub fn demo(a: DemoArgs) -> anyhow::Result<u8> {
    let processes = Processes::default();
    let on_signal = processes.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Ctrl-C stops every process the demo started, then exits.
    std::thread::spawn(move || {
        runtime.block_on(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nstopping the demo network");
                on_signal.stop_all();
                std::process::exit(130);
            }
        })
    });
    let result = run(&a, &processes);
    processes.stop_all();
    result
}

fn run(a: &DemoArgs, processes: &Processes) -> anyhow::Result<u8> {
    let root = tempfile::Builder::new()
        .prefix("plexus-demo-")
        .tempdir()
        .context("create a temporary directory")?;
    let job_dir = root.path().join("job");
    std::fs::create_dir_all(job_dir.join("scenes"))?;
    std::fs::write(job_dir.join("render.toml"), DEMO_JOB)?;
    std::fs::write(job_dir.join("scenes/demo.gltf"), DEMO_SCENE)?;

    let provider_count = a.providers as usize;
    eprintln!("starting a requester and {provider_count} providers on loopback");
    // The requester runs the ledger (one embedded validator) and pays from
    // what its genesis gives it.
    let requester = start_node(
        processes,
        &root.path().join("requester"),
        &["--ledger", "--mint", &DEMO_MINT.to_string()],
    )?;
    let bootstrap = requester.tcp_addr.clone();
    let mut providers = Vec::new();
    for i in 0..provider_count {
        let data = root.path().join(format!("provider-{i}"));
        providers.push(start_node(
            processes,
            &data,
            &["--provide", "--slots", "1", "--bootstrap", &bootstrap],
        )?);
    }
    let client = Client::new(&requester.api);
    let started = Instant::now();
    loop {
        let peers: Vec<PeerInfo> = client.get("/api/peers")?;
        let offering = peers
            .iter()
            .filter(|p| p.connected && p.offer.is_some())
            .count();
        if offering >= provider_count {
            break;
        }
        if started.elapsed() > STARTUP_TIMEOUT {
            bail!(
                "only {offering} of {provider_count} providers offered their time within {} s",
                STARTUP_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "network up in {:.1} s: {} providers offering",
        started.elapsed().as_secs_f64(),
        provider_count
    );

    eprintln!("dashboard {}/", requester.api);
    let id = job::submit(&client, &job_dir.join("render.toml"))?;
    eprintln!("submitted the render job {id}");
    let status = job::follow(&client, &id, true)?;
    if status.state != types::JobPhase::Completed {
        bail!(
            "the demo job {}: {}",
            status.state,
            status.error.unwrap_or_default()
        );
    }
    let path = job::results(&client, &status, &a.out)?;
    println!(
        "rendered  {} ({} tasks in {:.1} s)",
        path.display(),
        status.tasks_total,
        status.elapsed_s
    );
    for p in &status.providers {
        let name = providers
            .iter()
            .position(|n| n.peer_id == p.peer_id)
            .map_or("?".into(), |i| format!("provider {i}"));
        println!(
            "  {name} (…{}): {:>3} tasks, {:>16} fuel, {:>6.1} s in the sandbox",
            job::short(&p.peer_id),
            p.tasks_done,
            p.fuel,
            p.busy_ms as f64 / 1000.0
        );
    }
    job::print_verification(&status.verification);
    print_pay(&client, &id, &providers)?;
    println!();
    println!("To start a real network across machines:");
    println!("  on one machine:  plexus node --listen /ip4/0.0.0.0/tcp/4001");
    println!(
        "  on the others:   plexus node --provide --bootstrap /ip4/FIRST_MACHINE_IP/tcp/4001/p2p/PEER_ID"
    );
    println!("  then submit:     plexus job submit examples/render.toml --wait");
    if a.open {
        println!();
        println!(
            "dashboard {}/  (the network keeps running; Ctrl-C stops it)",
            requester.api
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        loop {
            std::thread::park();
        }
    }
    Ok(0)
}

/// What each provider earned for the job and what the requester paid, from
/// the ledger once the job's escrow is released; the two must add up.
fn print_pay(client: &Client, job: &str, providers: &[StartedNode]) -> anyhow::Result<()> {
    let started = Instant::now();
    let escrow = loop {
        let e: node::pay::EscrowView = client.get(&format!("/api/ledger/escrows/{job}"))?;
        if e.released {
            break e;
        }
        if started.elapsed() > SETTLE_TIMEOUT {
            bail!(
                "the job's escrow was not settled within {} s: {} claims paid so far",
                SETTLE_TIMEOUT.as_secs(),
                e.claims
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let requester: node::pay::AccountView = client.get("/api/ledger")?;
    println!(
        "paid      on the ledger (block {}), {} claims at {} credits per Gfuel:",
        requester.height, escrow.claims, escrow.price_per_gfuel
    );
    let mut earned_total = 0;
    for (i, p) in providers.iter().enumerate() {
        let account: node::pay::AccountView =
            client.get(&format!("/api/ledger/accounts/{}", p.peer_id))?;
        let earned = escrow
            .earned
            .iter()
            .find(|(a, _)| *a == account.account)
            .map_or(0, |(_, c)| *c);
        earned_total += earned;
        println!(
            "  provider {i} (…{}): earned {earned:>7} credits, balance {}",
            job::short(&p.peer_id),
            account.balance
        );
    }
    let paid = DEMO_MINT - requester.balance;
    println!(
        "  requester: paid {paid} credits ({} locked, {} refunded), balance {}",
        escrow.locked, escrow.refunded, requester.balance
    );
    if earned_total != paid || escrow.paid != paid || escrow.paid + escrow.refunded != escrow.locked
    {
        bail!(
            "the books do not add up: providers earned {earned_total}, the requester paid {paid}, \
             the escrow paid {} and refunded {} of {}",
            escrow.paid,
            escrow.refunded,
            escrow.locked
        );
    }
    Ok(())
}

pub(crate) struct StartedNode {
    pub peer_id: String,
    pub tcp_addr: String,
    pub api: String,
}

/// Starts `plexus node` as a child process on loopback and waits until it
/// prints its addresses.
pub(crate) fn start_node(
    processes: &Processes,
    data_dir: &Path,
    extra: &[&str],
) -> anyhow::Result<StartedNode> {
    std::fs::create_dir_all(data_dir)?;
    let stdout_path = data_dir.join("stdout.log");
    let stdout = std::fs::File::create(&stdout_path)?;
    let stderr = std::fs::File::create(data_dir.join("stderr.log"))?;
    let exe = std::env::current_exe().context("find the plexus binary")?;
    let child = Command::new(exe)
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "node",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
            "--no-mdns",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .context("start a node process")?;
    processes.push(child);
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&stdout_path).unwrap_or_default();
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
        };
        if let (Some(peer_id), Some(tcp_addr), Some(api)) =
            (field("peer id"), field("listening"), field("api"))
        {
            return Ok(StartedNode {
                peer_id,
                tcp_addr,
                api,
            });
        }
        if started.elapsed() > STARTUP_TIMEOUT {
            let log = std::fs::read_to_string(data_dir.join("stderr.log")).unwrap_or_default();
            bail!(
                "a node did not start within {} s: {}",
                STARTUP_TIMEOUT.as_secs(),
                log.lines().last().unwrap_or("")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
