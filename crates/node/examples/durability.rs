//! What durability costs: a requester and a provider (2 slots) in one
//! process over loopback libp2p run 2,000 `noop` tasks (verification off),
//! once with the database on disk (WAL, synchronous=NORMAL: every dispatch,
//! attempt end and accepted result written before it counts) and once in
//! memory; three rounds each, alternating. Prints tasks/s and the ratio.
//!
//!     cargo run --release -p node --example durability

use std::time::{Duration, Instant};

const TASKS: u64 = 2_000;
const ROUNDS: usize = 3;

async fn start(
    dir: &std::path::Path,
    in_memory: bool,
    provider: Option<&node::StartedNode>,
) -> node::StartedNode {
    let bootstrap = provider
        .map(|p| {
            let addr = p.listen.first().expect("a listen address").clone();
            vec![addr.with(node::Protocol::P2p(p.peer_id))]
        })
        .unwrap_or_default();
    node::start(node::NodeConfig {
        data_dir: dir.to_path_buf(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
        bootstrap,
        mdns: false,
        provider: provider.is_none().then(|| node::ProviderConfig {
            slots: 2,
            ..node::ProviderConfig::default()
        }),
        in_memory_database: in_memory,
        pay: None,
    })
    .await
    .expect("the node starts")
}

async fn tasks_per_s(in_memory: bool) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = start(&dir.path().join("provider"), in_memory, None).await;
    let requester = start(&dir.path().join("requester"), in_memory, Some(&provider)).await;
    while !requester
        .handle
        .peers()
        .await
        .expect("peers")
        .iter()
        .any(|p| p.offer.is_some())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let job = format!(
        "name = \"noop\"\nmodule = \"builtin:noop\"\n[tasks]\ni = {{ start = 0, end = {TASKS} }}\n[verification]\nmode = \"none\"\n"
    );
    let started = Instant::now();
    let id = requester
        .handle
        .submit(node::JobSubmission {
            job_file: "noop.toml".into(),
            job_toml: job,
            base_dir: ".".into(),
        })
        .await
        .expect("submitted");
    loop {
        let status = requester.handle.status(id.clone()).await.expect("status");
        match status.state {
            types::JobPhase::Completed => break,
            p if !p.has_ended() => tokio::time::sleep(Duration::from_millis(5)).await,
            other => panic!("job {other}: {:?}", status.error),
        }
    }
    TASKS as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One measurement on a runtime of its own, so the nodes of one do not
/// linger into the next.
fn measure(in_memory: bool) -> f64 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let figure = runtime.block_on(tasks_per_s(in_memory));
    runtime.shutdown_timeout(Duration::from_secs(1));
    figure
}

fn main() {
    let (mut on_disk, mut in_memory) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        on_disk.push(measure(false));
        in_memory.push(measure(true));
        eprintln!(
            "round {round}: on disk {:.0} tasks/s, in memory {:.0} tasks/s",
            on_disk[round], in_memory[round]
        );
    }
    let (disk, memory) = (median(on_disk), median(in_memory));
    println!(
        "| database | noop tasks/s (median of {ROUNDS}, {TASKS} tasks, 1 provider × 2 slots) |"
    );
    println!("| --- | --- |");
    println!("| SQLite file, WAL, synchronous=NORMAL | {disk:.0} |");
    println!("| SQLite in memory | {memory:.0} |");
    println!("| durable ÷ in memory | {:.2} |", disk / memory);
}
