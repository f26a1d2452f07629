//! Blobs over the network: serving chunks of stored blobs, and fetching a
//! blob chunk by chunk from a peer into the store, refused unless its bytes
//! hash to what was asked for.

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

/// Chunk requests one fetch keeps in flight: enough to fill a fast link
/// (one at a time, each chunk waits for a round trip), and a bound on the
/// memory a fetch holds (this many chunks).
pub const FETCH_CHUNKS_IN_FLIGHT: usize = 8;

/// Fetches a blob from `peer` unless the store has it already: the first
/// chunk says its size, the others are asked for several at a time and
/// written in order; every chunk must be exactly as long as its place.
pub async fn fetch(
    net: &NetHandle,
    blobs: &Arc<BlobStore>,
    metrics: &crate::Metrics,
    peer: PeerId,
    hash: BlobHash,
) -> Result<(), FetchError> {
    use FetchError::Other;
    use futures::StreamExt;
    if blobs.contains(&hash) {
        return Ok(());
    }
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
    writer.finish(&hash).map_err(|e| {
        tracing::warn!(target: "plexus::blob", %peer, "rejected blob: {e}");
        match e {
            store::StoreError::HashMismatch { .. } => FetchError::Mismatch(e.to_string()),
            other => Other(other.to_string()),
        }
    })
}
