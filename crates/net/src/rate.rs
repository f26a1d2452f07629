//! A per-peer rate limit of our own (rust-libp2p has none): a token bucket
//! per peer, refilled with time. Pure but for the `Instant` the caller
//! passes, so it is tested without sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// One peer's bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Requests per second per peer, with a burst; at most `peers_max` peers are
/// remembered (past it the quietest half is forgotten, which only ever
/// gives a peer a fresh burst, never less).
#[derive(Debug)]
pub struct RateLimit<P> {
    per_sec: f64,
    burst: f64,
    peers_max: usize,
    buckets: HashMap<P, Bucket>,
}

impl<P: Eq + Hash + Copy> RateLimit<P> {
    pub fn new(per_sec: u32, burst: u32, peers_max: usize) -> Self {
        RateLimit {
            per_sec: f64::from(per_sec),
            burst: f64::from(burst.max(1)),
            peers_max: peers_max.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Whether `peer` may make one more request at `now`; if so it is counted.
    pub fn allow(&mut self, peer: P, now: Instant) -> bool {
        if self.buckets.len() >= self.peers_max && !self.buckets.contains_key(&peer) {
            let mut fullest: Vec<(P, f64)> =
                self.buckets.iter().map(|(p, b)| (*p, b.tokens)).collect();
            fullest.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (p, _) in fullest.into_iter().take(self.peers_max / 2 + 1) {
                self.buckets.remove(&p);
            }
        }
        let (per_sec, burst) = (self.per_sec, self.burst);
        let bucket = self.buckets.entry(peer).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The limit on one node's blob requests, chunks and streams together
/// (`BLOB_REQUESTS_PER_PEER_PER_SEC`), shared by the swarm task (chunk
/// requests) and the node's stream server through [`crate::NetHandle`].
pub struct BlobRate {
    limit: std::sync::Mutex<RateLimit<libp2p::PeerId>>,
    refused: std::sync::atomic::AtomicU64,
}

impl BlobRate {
    pub(crate) fn new() -> Self {
        use types::limits::*;
        BlobRate {
            limit: std::sync::Mutex::new(RateLimit::new(
                BLOB_REQUESTS_PER_PEER_PER_SEC,
                BLOB_REQUESTS_BURST_PER_PEER,
                RATE_LIMITED_PEERS_MAX,
            )),
            refused: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether `peer` may make one more blob request now; a refusal is counted.
    pub(crate) fn allow(&self, peer: libp2p::PeerId) -> bool {
        let allowed = self
            .limit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .allow(peer, Instant::now());
        if !allowed {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        allowed
    }

    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The reason a refused request is given.
    pub fn reason() -> String {
        format!(
            "rate limit: {} blob requests a second per peer (BLOB_REQUESTS_PER_PEER_PER_SEC)",
            types::limits::BLOB_REQUESTS_PER_PEER_PER_SEC
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_peer_gets_its_burst_then_its_rate_and_others_are_not_slowed() {
        let mut limit = RateLimit::new(10, 5, 100);
        let t0 = Instant::now();
        let allowed = (0..8).filter(|_| limit.allow(1u8, t0)).count();
        assert_eq!(allowed, 5, "the burst, then refusals");
        assert!(limit.allow(2u8, t0), "another peer has its own bucket");
        // 10 per second: one more every 100 ms.
        assert!(!limit.allow(1, t0 + Duration::from_millis(50)));
        assert!(limit.allow(1, t0 + Duration::from_millis(160)));
        assert!(!limit.allow(1, t0 + Duration::from_millis(170)));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..8).filter(|_| limit.allow(1, later)).count(), 5);
    }

    #[test]
    fn the_peers_remembered_stay_within_their_bound() {
        let mut limit = RateLimit::new(10, 5, 4);
        let t0 = Instant::now();
        for peer in 0..100u32 {
            assert!(limit.allow(peer, t0));
            assert!(limit.buckets.len() <= 4);
        }
    }

    #[test]
    fn blob_requests_past_the_burst_are_refused_counted_and_given_the_bound_by_name() {
        use types::limits::BLOB_REQUESTS_BURST_PER_PEER;
        let rate = BlobRate::new();
        let flood = libp2p::PeerId::random();
        let allowed = (0..BLOB_REQUESTS_BURST_PER_PEER + 100)
            .filter(|_| rate.allow(flood))
            .count() as u32;
        // The refill over the loop's few milliseconds may admit a handful more.
        assert!(
            (BLOB_REQUESTS_BURST_PER_PEER..BLOB_REQUESTS_BURST_PER_PEER + 100).contains(&allowed),
            "{allowed}"
        );
        assert_eq!(
            rate.refused(),
            u64::from(BLOB_REQUESTS_BURST_PER_PEER + 100 - allowed)
        );
        assert!(
            rate.allow(libp2p::PeerId::random()),
            "another peer is not slowed"
        );
        assert!(BlobRate::reason().contains("BLOB_REQUESTS_PER_PEER_PER_SEC"));
    }
}
