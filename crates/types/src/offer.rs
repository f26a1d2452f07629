//! A provider's offer: what it sells, at what price, until when. The
//! requester's market matches jobs against it; the network carries it
//! signed (`net::wire::SignedOffer`).

use serde::{Deserialize, Serialize};

/// An offer is valid this long after it was made.
pub const OFFER_TTL_MS: u64 = 60_000;
/// How far a provider's clock may be behind ours before its offers lose
/// time: an offer counts until its own `expires_at_ms` plus this.
pub const OFFER_CLOCK_SKEW_MS_MAX: u64 = 5_000;

const _: () = assert!(OFFER_CLOCK_SKEW_MS_MAX < OFFER_TTL_MS);

/// A provider's standing offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub cores: u32,
    /// The machine's memory.
    pub memory_bytes: u64,
    /// The most memory one task may ask of this provider; a task that asks
    /// for more is refused, so the market does not send it.
    pub task_memory_bytes_max: u64,
    pub slots_total: u32,
    pub slots_free: u32,
    /// Credits per billion fuel.
    pub price_per_gfuel: u64,
    /// The node's benchmark: fuel per second on one slot.
    pub fuel_per_sec: u64,
    pub engine: String,
    /// By the provider's clock; the market allows a bounded skew.
    pub expires_at_ms: u64,
}
