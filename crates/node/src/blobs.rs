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
pub(crate) enum FetchError {
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
pub(crate) fn serve(
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

/// Fetches a blob from `peer` unless the store has it already.
pub(crate) async fn fetch(
    net: &NetHandle,
    blobs: &Arc<BlobStore>,
    metrics: &crate::Metrics,
    peer: PeerId,
    hash: BlobHash,
) -> Result<(), FetchError> {
    use FetchError::Other;
    if blobs.contains(&hash) {
        return Ok(());
    }
    let mut writer = blobs.writer().map_err(|e| Other(e.to_string()))?;
    let mut offset = 0u64;
    loop {
        let response = net
            .fetch_blob_chunk(peer, BlobRequest { hash, offset })
            .await
            .map_err(|e| Other(e.to_string()))?;
        let (total_bytes, bytes) = match response {
            BlobResponse::Chunk { total_bytes, bytes } => (total_bytes, bytes),
            BlobResponse::NotFound => {
                return Err(Other(format!("{peer} does not have blob {hash}")));
            }
        };
        if total_bytes > store::BLOB_BYTES_MAX || bytes.len() as u64 > BLOB_CHUNK_BYTES_MAX {
            return Err(FetchError::Mismatch(format!(
                "{peer} sent an oversized blob {hash}"
            )));
        }
        if bytes.is_empty() && offset < total_bytes {
            return Err(Other(format!("{peer} sent an empty chunk of blob {hash}")));
        }
        writer.write(&bytes).map_err(|e| Other(e.to_string()))?;
        metrics.blob("in", bytes.len() as u64);
        offset += bytes.len() as u64;
        if offset >= total_bytes {
            break;
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
