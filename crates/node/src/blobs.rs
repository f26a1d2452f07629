//! Blobs over the network: a whole blob on one stream (the request, then
//! its size and bytes, written to the store and refused unless they hash to
//! what was asked for), with chunk requests as the fallback; and serving
//! both.

use net::wire::{BLOB_CHUNK_BYTES_MAX, BlobRequest, BlobResponse};
use net::{InboundId, NetHandle, PeerId};
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use store::BlobStore;
use types::BlobHash;

/// Why a fetch failed: a peer that sent bytes not matching the hash lied.
#[derive(Debug)]
pub enum FetchError {
    Mismatch(String),
    Other(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Mismatch(m) | FetchError::Other(m) => f.write_str(m),
        }
    }
}

/// Serves a chunk; `corrupt` (test builds only) flips its first byte.
pub fn serve(
    net: &NetHandle,
    blobs: &Arc<BlobStore>,
    metrics: &Arc<crate::Metrics>,
    from: PeerId,
    id: InboundId,
    request: BlobRequest,
    corrupt: bool,
) {
    let (net, metrics) = (net.clone(), metrics.clone());
    let path = blobs.path(&request.hash);
    tokio::spawn(async move {
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<BlobResponse> {
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(BlobResponse::NotFound);
                }
                Err(e) => return Err(e),
            };
            let total_bytes = file.metadata()?.len();
            let offset = request.offset.min(total_bytes);
            file.seek(SeekFrom::Start(offset))?;
            let len = (total_bytes - offset).min(BLOB_CHUNK_BYTES_MAX) as usize;
            let mut bytes = vec![0u8; len];
            file.read_exact(&mut bytes)?;
            if corrupt && let Some(first) = bytes.first_mut() {
                *first ^= 0xff;
            }
            Ok(BlobResponse::Chunk { total_bytes, bytes })
        })
        .await;
        let response = match read {
            Ok(Ok(r)) => {
                if let BlobResponse::Chunk { bytes, .. } = &r {
                    metrics.blob("out", bytes.len() as u64);
                }
                r
            }
            _ => {
                tracing::warn!(target: "plexus::blob", %from, "could not read blob {}", request.hash);
                BlobResponse::NotFound
            }
        };
        let _ = net.respond_blob(id, response).await;
    });
}

/// Blob streams this node serves at once; more are closed unanswered.
pub const BLOB_STREAMS_SERVED_MAX: usize = 32;
/// The longest wait for the next bytes of a blob stream, either way.
const BLOB_STREAM_IDLE: std::time::Duration = std::time::Duration::from_secs(30);
/// Bytes moved per read or write on a blob stream.
const STREAM_BUFFER_BYTES: usize = 1 << 20;
use net::wire::blob_stream;

/// Serves the blob streams other peers open: each one request, answered
/// with the blob's size and its bytes from the offset on (the framing is
/// `net::wire::blob_stream`'s).
pub async fn serve_streams(
    mut incoming: net::IncomingStreams,
    net: NetHandle,
    blobs: Arc<BlobStore>,
    metrics: Arc<crate::Metrics>,
    corrupt: bool,
) {
    use futures::StreamExt;
    let slots = Arc::new(tokio::sync::Semaphore::new(BLOB_STREAMS_SERVED_MAX));
    while let Some((peer, stream)) = incoming.next().await {
        if !net.allow_blob_request(peer) {
            tracing::warn!(target: "plexus::blob", %peer, "blob stream refused: {}", net::BlobRate::reason());
            continue; // dropped: the stream closes
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(target: "plexus::blob", %peer, "blob stream refused: {BLOB_STREAMS_SERVED_MAX} (BLOB_STREAMS_SERVED_MAX) already served");
            continue; // dropped: the stream closes
        };
        let (blobs, metrics) = (blobs.clone(), metrics.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_stream(stream, &blobs, &metrics, corrupt).await {
                tracing::debug!(target: "plexus::blob", %peer, "blob stream ended: {e}");
            }
            drop(permit);
        });
    }
}

async fn serve_stream(
    mut stream: net::Stream,
    blobs: &BlobStore,
    metrics: &crate::Metrics,
    corrupt: bool,
) -> std::io::Result<()> {
    use futures::{AsyncReadExt, AsyncWriteExt};
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt};
    let idle = |e| std::io::Error::new(std::io::ErrorKind::TimedOut, e);
    let mut len = [0u8; 4];
    tokio::time::timeout(BLOB_STREAM_IDLE, stream.read_exact(&mut len))
        .await
        .map_err(idle)??;
    let len = blob_stream::request_len(len).map_err(std::io::Error::other)?;
    let mut request = vec![0u8; len];
    tokio::time::timeout(BLOB_STREAM_IDLE, stream.read_exact(&mut request))
        .await
        .map_err(idle)??;
    let request: BlobRequest = net::wire::decode(&request).map_err(std::io::Error::other)?;
    let mut file = match tokio::fs::File::open(blobs.path(&request.hash)).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            stream.write_all(&blob_stream::answer_header(None)).await?;
            return stream.close().await;
        }
        Err(e) => return Err(e),
    };
    let total_bytes = file.metadata().await?.len();
    let offset = request.offset.min(total_bytes);
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    stream
        .write_all(&blob_stream::answer_header(Some(total_bytes)))
        .await?;
    let mut buf = vec![0u8; STREAM_BUFFER_BYTES];
    let mut first = true;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if corrupt && first {
            buf[0] ^= 0xff;
        }
        first = false;
        tokio::time::timeout(BLOB_STREAM_IDLE, stream.write_all(&buf[..n]))
            .await
            .map_err(idle)??;
        metrics.blob("out", n as u64);
    }
    stream.close().await
}

/// Fetches a blob from `peer` on one stream into the store; `None` when
/// the peer offers no blob stream (the caller falls back to chunks).
async fn fetch_on_stream(
    net: &NetHandle,
    blobs: &Arc<BlobStore>,
    metrics: &crate::Metrics,
    peer: PeerId,
    hash: BlobHash,
) -> Option<Result<(), FetchError>> {
    use FetchError::Other;
    use futures::{AsyncReadExt, AsyncWriteExt};
    let mut stream = net.open_blob_stream(peer).await.ok()?;
    // Up to the size, any failure means "no stream here": the server may
    // have dropped it unanswered (its accept queue full under load, or over
    // BLOB_STREAMS_SERVED_MAX), and the chunk requests still work.
    let header = async {
        let frame = blob_stream::request_frame(&BlobRequest { hash, offset: 0 }).ok()?;
        stream.write_all(&frame).await.ok()?;
        stream.flush().await.ok()?;
        let mut size = [0u8; 8];
        tokio::time::timeout(BLOB_STREAM_IDLE, stream.read_exact(&mut size))
            .await
            .ok()?
            .ok()?;
        Some(size)
    };
    let Some(header) = header.await else {
        tracing::debug!(target: "plexus::blob", %peer, "no answer on a blob stream for {hash}: fetching it in chunks");
        return None;
    };
    let fetched = async {
        let idle = |_| {
            Other(format!(
                "blob {hash} from {peer}: no bytes for {BLOB_STREAM_IDLE:?}"
            ))
        };
        let io = |e: std::io::Error| Other(format!("blob {hash} from {peer}: {e}"));
        let total_bytes = match blob_stream::decode_answer(header, store::BLOB_BYTES_MAX) {
            Ok(blob_stream::Answer::Size(size)) => size,
            Ok(blob_stream::Answer::NotFound) => {
                return Err(Other(format!("{peer} does not have blob {hash}")));
            }
            Err(e) => {
                return Err(FetchError::Mismatch(format!(
                    "{peer} offered blob {hash}: {e} (BLOB_BYTES_MAX)"
                )));
            }
        };
        let mut writer = blobs.writer().map_err(|e| Other(e.to_string()))?;
        let mut buf = vec![0u8; STREAM_BUFFER_BYTES];
        let mut left = total_bytes;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = tokio::time::timeout(BLOB_STREAM_IDLE, stream.read(&mut buf[..want]))
                .await
                .map_err(idle)?
                .map_err(io)?;
            if n == 0 {
                return Err(Other(format!(
                    "{peer} closed blob {hash} {left} bytes short"
                )));
            }
            writer.write(&buf[..n]).map_err(|e| Other(e.to_string()))?;
            metrics.blob("in", n as u64);
            left -= n as u64;
        }
        finish(writer, &hash, peer)
    };
    Some(fetched.await)
}

/// Chunk requests one fetch keeps in flight: enough to fill a fast link
/// (one at a time, each chunk waits for a round trip), and a bound on the
/// memory a fetch holds (this many chunks).
pub const FETCH_CHUNKS_IN_FLIGHT: usize = 8;

/// Fetches a blob from `peer` unless the store has it already: on one
/// stream, or, where the peer has no blob streams, by chunks: the first
/// says the size, the others are asked for several at a time and written
/// in order; every chunk must be exactly as long as its place.
pub async fn fetch(
    net: &NetHandle,
    blobs: &Arc<BlobStore>,
    metrics: &crate::Metrics,
    peer: PeerId,
    hash: BlobHash,
) -> Result<(), FetchError> {
    if blobs.contains(&hash) {
        return Ok(());
    }
    if let Some(fetched) = fetch_on_stream(net, blobs, metrics, peer, hash).await {
        return fetched;
    }
    fetch_in_chunks(net, blobs, metrics, peer, hash).await
}

/// [`fetch`] by chunk requests, several in flight.
async fn fetch_in_chunks(
    net: &NetHandle,
    blobs: &Arc<BlobStore>,
    metrics: &crate::Metrics,
    peer: PeerId,
    hash: BlobHash,
) -> Result<(), FetchError> {
    use FetchError::Other;
    use futures::StreamExt;
    let mut writer = blobs.writer().map_err(|e| Other(e.to_string()))?;
    let chunk = |offset: u64| {
        let net = net.clone();
        async move {
            let response = net
                .fetch_blob_chunk(peer, BlobRequest { hash, offset })
                .await
                .map_err(|e| Other(e.to_string()))?;
            match response {
                BlobResponse::Chunk { total_bytes, bytes } => Ok((offset, total_bytes, bytes)),
                BlobResponse::NotFound => Err(Other(format!("{peer} does not have blob {hash}"))),
                BlobResponse::Refused { reason } => {
                    Err(Other(format!("{peer} refused blob {hash}: {reason}")))
                }
            }
        }
    };
    let (_, total_bytes, first) = chunk(0).await?;
    if total_bytes > store::BLOB_BYTES_MAX {
        return Err(FetchError::Mismatch(format!(
            "{peer} sent an oversized blob {hash}"
        )));
    }
    let mut in_flight = futures::stream::FuturesOrdered::new();
    // The first chunk covers the start; the others are asked for from here.
    let mut next = BLOB_CHUNK_BYTES_MAX.min(total_bytes);
    let mut pending = Some(Ok((0, total_bytes, first)));
    loop {
        let (offset, total, bytes) = match pending.take() {
            Some(r) => r?,
            None => match in_flight.next().await {
                Some(r) => r?,
                None => break,
            },
        };
        let expected = (total_bytes - offset).min(BLOB_CHUNK_BYTES_MAX);
        if total != total_bytes || bytes.len() as u64 != expected {
            return Err(FetchError::Mismatch(format!(
                "{peer} sent a chunk of blob {hash} at {offset} of {} bytes, expected {expected}",
                bytes.len()
            )));
        }
        writer.write(&bytes).map_err(|e| Other(e.to_string()))?;
        metrics.blob("in", bytes.len() as u64);
        while next < total_bytes && in_flight.len() < FETCH_CHUNKS_IN_FLIGHT {
            in_flight.push_back(chunk(next));
            next += BLOB_CHUNK_BYTES_MAX;
        }
    }
    finish(writer, &hash, peer)
}

/// Commits a fetched blob to the store; bytes that do not hash to what was
/// asked for are the sender's lie, refused and not kept.
fn finish(writer: store::BlobWriter<'_>, hash: &BlobHash, peer: PeerId) -> Result<(), FetchError> {
    writer.finish(hash).map_err(|e| {
        tracing::warn!(target: "plexus::blob", %peer, "rejected blob: {e}");
        match e {
            store::StoreError::HashMismatch { .. } => FetchError::Mismatch(e.to_string()),
            other => FetchError::Other(other.to_string()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use net::{Keypair, NetConfig};

    /// Two network actors on loopback, the first serving its store's
    /// streams: (fetcher, server, server's store, fetcher's store, their
    /// directory). The server's actor runs while its handle lives.
    #[allow(clippy::type_complexity)]
    async fn pair(
        corrupt: bool,
    ) -> (
        NetHandle,
        NetHandle,
        Arc<BlobStore>,
        Arc<BlobStore>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let serving = Arc::new(BlobStore::open(dir.path().join("a")).expect("store"));
        let fetching = Arc::new(BlobStore::open(dir.path().join("b")).expect("store"));
        let config = || NetConfig {
            keypair: Keypair::generate_ed25519(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
            bootstrap: Vec::new(),
            mdns: false,
        };
        let (a, mut a_events, addrs) = net::spawn(config()).await.expect("net a");
        let (b, mut b_events, _) = net::spawn(config()).await.expect("net b");
        let metrics = Arc::new(crate::Metrics::new());
        tokio::spawn(serve_streams(
            a.accept_blob_streams().expect("accept"),
            a.clone(),
            serving.clone(),
            metrics,
            corrupt,
        ));
        tokio::spawn(async move { while a_events.recv().await.is_some() {} });
        b.dial(addrs[0].clone()).await.expect("dial");
        while let Some(event) = b_events.recv().await {
            if matches!(event, net::Event::Connected(p) if p == a.local_peer_id) {
                break;
            }
        }
        tokio::spawn(async move { while b_events.recv().await.is_some() {} });
        (b, a, serving, fetching, dir)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blob_crosses_on_one_stream_byte_for_byte_and_a_corrupt_one_is_refused() {
        let bytes: Vec<u8> = (0..3 * STREAM_BUFFER_BYTES + 12_345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let metrics = crate::Metrics::new();

        let (net, server, serving, fetching, _dir) = pair(false).await;
        let server = server.local_peer_id;
        let hash = serving.put_bytes(&bytes).expect("put");
        fetch(&net, &fetching, &metrics, server, hash)
            .await
            .expect("fetched");
        assert_eq!(std::fs::read(fetching.path(&hash)).expect("read"), bytes);
        let missing = BlobHash::of(b"nobody has this");
        assert!(matches!(
            fetch(&net, &fetching, &metrics, server, missing).await,
            Err(FetchError::Other(_))
        ));

        let (net, server, serving, fetching, _dir) = pair(true).await;
        let server = server.local_peer_id;
        let hash = serving.put_bytes(&bytes).expect("put");
        assert!(matches!(
            fetch(&net, &fetching, &metrics, server, hash).await,
            Err(FetchError::Mismatch(_))
        ));
        assert!(
            !fetching.contains(&hash),
            "nothing of a refused blob is kept"
        );
    }
}
