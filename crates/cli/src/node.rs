//! `plexus node`: a long-running node: network, provider (with --provide),
//! requester, and the HTTP API on loopback.

use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::Path;

/// Tasks one provider runs at once: each holds an instance of the sandbox's
/// pool, and the start-up benchmark one more.
const SLOTS_MAX: u32 = sandbox::INSTANCES_MAX - 1;
/// Threads that may run the node's async work (`--async-threads`).
const ASYNC_THREADS_MAX: usize = 64;

#[derive(Args)]
#[command(
    about = "Run a node: join the network, serve the API, and with --provide sell this machine's time",
    after_help = "Examples:\n  plexus node --provide\n  plexus node --listen /ip4/0.0.0.0/tcp/4001 --api 127.0.0.1:7700\n  plexus node --provide --bootstrap /ip4/192.0.2.7/tcp/4001/p2p/12D3KooW..."
)]
pub struct NodeArgs {
    /// Addresses to listen on (multiaddrs)
    #[arg(long, value_name = "MULTIADDR", default_values_t = ["/ip4/0.0.0.0/tcp/0".to_string(), "/ip4/0.0.0.0/udp/0/quic-v1".to_string()])]
    listen: Vec<String>,
    /// A peer to join the network through (repeatable)
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// Offer this machine's time to the network
    #[arg(long)]
    provide: bool,
    /// Tasks run at once when providing [default: the number of cores]
    #[arg(long, value_name = "N")]
    slots: Option<u32>,
    /// Price in credits per billion fuel when providing
    #[arg(long, default_value_t = 100)]
    price: u64,
    /// The most memory one task may use here, in MiB
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    task_memory: u64,
    /// Where the HTTP API and dashboard listen; off loopback, clients must
    /// send the token in DATA_DIR/api.token (`PLEXUS_API_TOKEN` for the CLI)
    #[arg(long, default_value = "127.0.0.1:7700")]
    api: SocketAddr,
    /// Run the ledger here (one embedded validator, DATA_DIR/chain.db) and
    /// pay for jobs that set `requirements.budget`: the budget is locked in
    /// escrow at submission, each accepted result paid when the job ends
    #[arg(long)]
    ledger: bool,
    /// Credits the ledger's genesis gives this node's account (with
    /// --ledger; a local network's faucet, fixed when the chain is made)
    #[arg(
        long,
        value_name = "CREDITS",
        default_value_t = 1_000_000,
        requires = "ledger"
    )]
    mint: u64,
    /// Do not discover peers on the LAN by mDNS
    #[arg(long)]
    no_mdns: bool,
    /// Threads for the network, the API and the node's bookkeeping; tasks
    /// run on threads of their own. One is fastest for short tasks: on two
    /// cores a second one cost 10–15% more CPU per task in wake-ups
    /// (BENCHMARKS.md); raise it for a requester checking thousands of
    /// results a second on a many-core machine.
    #[arg(long, value_name = "N", default_value_t = 1)]
    async_threads: usize,
    /// TEST ONLY (the `adversary` build): run every task N times slower
    /// (the same as --misbehave slow:N)
    #[cfg(feature = "adversary")]
    #[arg(long, value_name = "N", conflicts_with = "misbehave")]
    throttle: Option<u32>,
    /// TEST ONLY (the `adversary` build): a provider strategy: bad-signature,
    /// bad-output, oversized, wrong:PERCENT, collude:[AFTER:]PERCENT,
    /// intermittent:AFTER:PERCENT, fuel, replay, silent (takes tasks, never
    /// answers) or slow:FACTOR
    #[cfg(feature = "adversary")]
    #[arg(long, value_name = "MODE")]
    misbehave: Option<String>,
}

pub fn node(a: NodeArgs, data_dir: &Path) -> anyhow::Result<u8> {
    // Off this machine, the API asks for the token kept in the data dir.
    let token = if a.api.ip().is_loopback() {
        None
    } else {
        Some(node::api_token(data_dir)?)
    };
    let parse = |list: &[String], flag: &str| -> anyhow::Result<Vec<net::Multiaddr>> {
        list.iter()
            .map(|s| {
                s.parse()
                    .with_context(|| format!("--{flag} {s:?} is not a multiaddr"))
            })
            .collect()
    };
    #[cfg(feature = "adversary")]
    let strategy = match (a.misbehave.as_deref(), a.throttle) {
        (Some(mode), _) => mode
            .parse::<node::Strategy>()
            .map_err(|e| anyhow::anyhow!("--misbehave {mode:?}: {e}"))?,
        (None, Some(factor)) => node::Strategy::Slow {
            factor: factor.max(1),
        },
        (None, None) => node::Strategy::Honest,
    };
    if let Some(slots) = a.slots
        && slots > SLOTS_MAX
    {
        anyhow::bail!(
            "--slots {slots}: at most {SLOTS_MAX} (SLOTS_MAX: the sandbox's instance pool, less one for its benchmark)"
        );
    }
    let config = node::NodeConfig {
        data_dir: data_dir.to_path_buf(),
        listen: parse(&a.listen, "listen")?,
        bootstrap: parse(&a.bootstrap, "bootstrap")?,
        mdns: !a.no_mdns,
        provider: a.provide.then(|| node::ProviderConfig {
            slots: a
                .slots
                .unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
                })
                .clamp(1, SLOTS_MAX),
            price_per_gfuel: a.price,
            task_memory_bytes_max: a.task_memory.saturating_mul(types::limits::MIB),
            #[cfg(feature = "adversary")]
            strategy,
        }),
        in_memory_database: false,
        pay: a.ledger.then_some(node::pay::PayConfig {
            mint: types::Credits(a.mint),
        }),
    };
    if !(1..=ASYNC_THREADS_MAX).contains(&a.async_threads) {
        anyhow::bail!(
            "--async-threads {} is out of range: 1 to {ASYNC_THREADS_MAX} (ASYNC_THREADS_MAX)",
            a.async_threads
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.async_threads)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async move {
        let started = node::start(config).await?;
        let api = api::serve(started.handle.clone(), a.api, token.clone()).await?;
        println!("peer id   {}", started.peer_id);
        for addr in &started.listen {
            println!("listening {addr}/p2p/{}", started.peer_id);
        }
        println!("api       http://{api}");
        println!("dashboard http://{api}/");
        if token.is_some() {
            println!(
                "token     clients off this machine send `Authorization: Bearer` with {}",
                data_dir.join("api.token").display()
            );
        }
        if let Some(pay) = started.handle.ledger() {
            println!("account   {}", node::pay::hex(&pay.account.0));
        }
        if a.provide {
            println!("providing: this node sells its time; Ctrl-C stops it");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tokio::signal::ctrl_c().await.context("wait for Ctrl-C")?;
        Ok::<u8, anyhow::Error>(0)
    })
}
