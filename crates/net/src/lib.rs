//! The network: one libp2p swarm (TCP with Noise and Yamux, QUIC; identify,
//! ping, mDNS, gossipsub for offers, a stream per peer pair for tasks
//! (`tasks.rs`), request-response and streams for blobs),
//! owned by one task and reached through a cloneable [`NetHandle`] over a
//! bounded channel, as in rust-libp2p's file-sharing example.
//!
//! Every message has a size limit; a message over it is dropped by the codec
//! and logged. Results are signed with the node's key (see [`wire`]).

mod actor;
pub mod baseline;
#[cfg(test)]
mod fuzz;
mod rate;
mod tasks;
pub mod wire;

pub use actor::{Event, InboundId, NetConfig, NetHandle, spawn};
pub use libp2p::identity::Keypair;
pub use libp2p::multiaddr::Protocol;
pub use libp2p::{Multiaddr, PeerId, Stream};
pub use libp2p_stream::IncomingStreams;
pub use rate::{BlobRate, RateLimit};
pub use tasks::{TASK_INBOUND_PENDING_MAX, TASK_STREAM_PENDING_MAX};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("listen on {addr}: {message}")]
    Listen { addr: String, message: String },
    #[error("bootstrap address {addr}: {message}")]
    Bootstrap { addr: String, message: String },
    #[error("network setup: {0}")]
    Setup(String),
    #[error("the network task has stopped")]
    Stopped,
    #[error("request to {peer} failed: {message}")]
    Request { peer: String, message: String },
    #[error("encode: {0}")]
    Encode(String),
}

/// The ed25519 public key an ed25519 peer id carries (such ids hold the
/// key itself, not its hash); None for other kinds of key.
pub fn ed25519_public_key(peer: &PeerId) -> Option<[u8; 32]> {
    let mh = peer.as_ref();
    // The identity multihash (code 0) of the protobuf-encoded key.
    if mh.code() != 0 {
        return None;
    }
    let key = libp2p::identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    Some(key.try_into_ed25519().ok()?.to_bytes())
}

#[cfg(test)]
mod key_tests {
    #[test]
    fn an_ed25519_peer_id_gives_back_its_public_key() {
        let key = crate::Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let ed = key.try_into_ed25519().expect("ed25519");
        assert_eq!(
            crate::ed25519_public_key(&peer),
            Some(ed.public().to_bytes())
        );
    }
}
