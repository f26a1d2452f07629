//! B5: a 256 MiB blob from a provider's store to a requester's, through
//! the node's own network actor and blob protocol (`node::blobs`: one
//! stream per blob, hash-checked, written to the store), against one bare
//! libp2p stream on the same transport (`net::baseline`), in the same run.

use super::Row;
use anyhow::Context;
use net::baseline::{self, Transport};
use net::{Event, Keypair, NetConfig, PeerId};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::BlobStore;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn run(root: &Path, smoke: bool) -> anyhow::Result<Vec<Row>> {
    let bytes: u64 = if smoke { 8 << 20 } else { 256 << 20 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start a runtime")?;
    let mut rows = Vec::new();
    for transport in [Transport::Tcp, Transport::Quic] {
        eprintln!("B5: {} MiB over {transport:?}", bytes >> 20);
        let dir = tempfile::tempdir_in(root)?;
        let ours = runtime.block_on(blob_fetch(transport, bytes, dir.path()))?;
        let bare = runtime.block_on(baseline::bare_stream(transport, bytes))?;
        let gbit = |d: Duration| bytes as f64 * 8.0 / d.as_secs_f64() / 1e9;
        let ratio = gbit(ours) / gbit(bare);
        rows.push(Row {
            id: "B5",
            workload: format!(
                "{} MiB blob, provider to requester, {transport:?} on loopback",
                bytes >> 20
            ),
            metric: "Gbit/s".into(),
            plexus: Some(gbit(ours)),
            against: Some(gbit(bare)),
            against_what: "a bare libp2p stream, same transport".into(),
            target: "≥ 0.9× (reported)".into(),
            ratio: Some(ratio),
            met: Some(ratio >= 0.9),
        });
    }
    Ok(rows)
}

/// Two network actors as the node runs them; the provider serves its store,
/// the requester fetches the blob. The time of the fetch, verified and stored.
async fn blob_fetch(transport: Transport, bytes: u64, dir: &Path) -> anyhow::Result<Duration> {
    let provider_store = Arc::new(BlobStore::open(dir.join("provider"))?);
    let requester_store = Arc::new(BlobStore::open(dir.join("requester"))?);
    let hash = {
        use std::io::Write;
        let source = dir.join("blob");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&source)?);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..bytes / chunk.len() as u64 {
            for word in chunk.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes());
            }
            file.write_all(&chunk)?;
        }
        file.flush()?;
        drop(file);
        let hash = provider_store.put_file(&source)?;
        std::fs::remove_file(&source)?;
        hash
    };
    let config = || NetConfig {
        keypair: Keypair::generate_ed25519(),
        listen: vec![transport.loopback()],
        bootstrap: Vec::new(),
        mdns: false,
    };
    let (provider, mut provider_events, addrs) = net::spawn(config()).await?;
    let (requester, mut requester_events, _) = net::spawn(config()).await?;
    let metrics = Arc::new(node::Metrics::new());
    let provider_id: PeerId = provider.local_peer_id;
    tokio::spawn(node::blobs::serve_streams(
        provider.accept_blob_streams()?,
        provider.clone(),
        provider_store.clone(),
        metrics.clone(),
        false,
    ));
    {
        let (net, blobs, metrics) = (provider.clone(), provider_store.clone(), metrics.clone());
        tokio::spawn(async move {
            while let Some(event) = provider_events.recv().await {
                if let Event::BlobRequested { from, id, request } = event {
                    node::blobs::serve(&net, &blobs, &metrics, from, id, request, false);
                }
            }
        });
    }
    let address = addrs
        .first()
        .context("the provider listens nowhere")?
        .clone();
    requester.dial(address).await?;
    tokio::time::timeout(CONNECT_TIMEOUT, async {
        while let Some(event) = requester_events.recv().await {
            if matches!(event, Event::Connected(peer) if peer == provider_id) {
                return;
            }
        }
    })
    .await
    .context("the benchmark's nodes did not connect")?;
    // The requester's events must keep flowing, or its actor would wait.
    tokio::spawn(async move { while requester_events.recv().await.is_some() {} });
    let started = Instant::now();
    node::blobs::fetch(&requester, &requester_store, &metrics, provider_id, hash)
        .await
        .map_err(|e| anyhow::anyhow!("fetch the blob: {e}"))?;
    Ok(started.elapsed())
}
