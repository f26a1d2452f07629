//! B6: gossip over 50 nodes on loopback. Every node is the node's own
//! network actor (gossipsub, signed messages, identify, ping), joined to
//! a few earlier ones by bootstrap; offers are published at a fixed rate
//! from nodes in turn, and every node notes when each one arrived. Figures:
//! the time for an offer to reach all the others (p50, p99), and the share
//! of (offer, node) deliveries made.

use super::Row;
use anyhow::Context;
use net::wire::Offer;
use net::{Event, Keypair, NetConfig, NetHandle, PeerId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bootstrap peers each node dials among those started before it.
const LINKS_PER_NODE: usize = 4;
/// Time for the meshes to form (gossipsub's heartbeat is 500 ms).
const SETTLE: Duration = Duration::from_secs(5);
/// How long after the last offer stragglers may still arrive.
const DRAIN: Duration = Duration::from_secs(2);

type Arrivals = Arc<Mutex<HashMap<(PeerId, u32), Vec<Instant>>>>;

pub(super) fn run(smoke: bool) -> anyhow::Result<Vec<Row>> {
    let (nodes, rate_per_s, duration) = if smoke {
        (10, 100, Duration::from_secs(2))
    } else {
        (50, 100, Duration::from_secs(60))
    };
    eprintln!(
        "B6: {nodes} nodes, offers at {rate_per_s}/s for {} s",
        duration.as_secs()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start a runtime")?;
    let (sent, arrivals) = runtime.block_on(gossip(nodes, rate_per_s, duration))?;
    let mut reach_ms: Vec<f64> = Vec::with_capacity(sent.len());
    let mut delivered = 0usize;
    let arrivals = arrivals.lock().unwrap_or_else(|p| p.into_inner());
    for (key, at) in &sent {
        let times = arrivals.get(key).map(Vec::as_slice).unwrap_or(&[]);
        delivered += times.len();
        if times.len() == nodes - 1
            && let Some(last) = times.iter().max()
        {
            reach_ms.push(last.duration_since(*at).as_secs_f64() * 1000.0);
        }
    }
    reach_ms.sort_by(f64::total_cmp);
    let expected = sent.len() * (nodes - 1);
    let share = delivered as f64 / expected.max(1) as f64;
    let p50 = super::percentile(&reach_ms, 50.0);
    let p99 = super::percentile(&reach_ms, 99.0);
    let workload = format!(
        "{nodes} nodes, {} offers at {rate_per_s}/s, time to reach all nodes",
        sent.len()
    );
    Ok(vec![
        Row {
            id: "B6",
            workload: workload.clone(),
            metric: "p50 ms".into(),
            plexus: Some(p50),
            against: None,
            against_what: String::new(),
            target: "reported".into(),
            ratio: None,
            met: None,
        },
        Row {
            id: "B6",
            workload: workload.clone(),
            metric: "p99 ms".into(),
            plexus: Some(p99),
            against: None,
            against_what: String::new(),
            target: "≤ 50 ms (reported)".into(),
            ratio: None,
            met: Some(p99 <= 50.0),
        },
        Row {
            id: "B6",
            workload,
            metric: "share delivered".into(),
            plexus: Some(share),
            against: None,
            against_what: String::new(),
            target: "100% (reported)".into(),
            ratio: None,
            met: Some(delivered == expected),
        },
    ])
}

/// Starts the nodes, publishes, and returns what was sent (publisher,
/// sequence → when) and what arrived where.
async fn gossip(
    nodes: usize,
    rate_per_s: u64,
    duration: Duration,
) -> anyhow::Result<(Vec<((PeerId, u32), Instant)>, Arrivals)> {
    let arrivals: Arrivals = Arc::default();
    let mut handles: Vec<NetHandle> = Vec::with_capacity(nodes);
    let mut addresses: Vec<net::Multiaddr> = Vec::with_capacity(nodes);
    for i in 0..nodes {
        // Earlier nodes, spread out: the previous one and a few others.
        let bootstrap = (1..=LINKS_PER_NODE.min(i))
            .map(|k| {
                let j = (i - 1) - ((k - 1) * i / LINKS_PER_NODE);
                addresses[j.min(i - 1)].clone()
            })
            .collect();
        let (handle, mut events, listening) = net::spawn(NetConfig {
            keypair: Keypair::generate_ed25519(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            bootstrap,
            mdns: false,
        })
        .await
        .with_context(|| format!("start gossip node {i}"))?;
        let address: net::Multiaddr = listening
            .first()
            .context("a gossip node listens nowhere")?
            .clone()
            .with(net::Protocol::P2p(handle.local_peer_id));
        addresses.push(address);
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let Event::Offer { from, offer } = event {
                    let at = Instant::now();
                    arrivals
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry((from, offer.slots_free))
                        .or_default()
                        .push(at);
                }
            }
        });
        handles.push(handle);
    }
    tokio::time::sleep(SETTLE).await;
    let interval = Duration::from_secs_f64(1.0 / rate_per_s as f64);
    let count = (duration.as_secs_f64() * rate_per_s as f64) as u32;
    let mut sent = Vec::with_capacity(count as usize);
    let mut ticker = tokio::time::interval(interval);
    for seq in 0..count {
        ticker.tick().await;
        let publisher = &handles[seq as usize % nodes];
        let offer = Offer {
            cores: 2,
            memory_bytes: 1 << 30,
            task_memory_bytes_max: 1 << 30,
            slots_total: 1,
            slots_free: seq,
            price_per_gfuel: 1,
            fuel_per_sec: 1_000_000_000,
            engine: "bench".into(),
            expires_at_ms: now_ms() + net::wire::OFFER_TTL_MS,
        };
        sent.push(((publisher.local_peer_id, seq), Instant::now()));
        publisher
            .publish_offer(offer)
            .await
            .context("publish an offer")?;
    }
    tokio::time::sleep(DRAIN).await;
    Ok((sent, arrivals))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
