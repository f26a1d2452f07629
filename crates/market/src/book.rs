//! The offer book: every provider's latest offer, by our clock, with an
//! index of the live ones in rank order and a heap of their expiries, so
//! that neither a result nor an expiry costs a pass over every offer.

use crate::{RankKey, live_until_ms, rank_key};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::hash::Hash;
use types::Offer;

/// Offers one book holds (one per provider); a new provider past it is
/// refused ([`Book::offer`] returns false) until an offer leaves.
pub const BOOK_OFFERS_MAX: usize = 100_000;

/// One provider's standing in the book.
#[derive(Clone, Debug)]
pub struct Listing {
    pub offer: Offer,
    /// By our clock ([`live_until_ms`]); past it the offer is expired: still
    /// listed (a waiting job counts it), never given work.
    pub live_until_ms: u64,
    pub rtt_us: Option<u64>,
    /// Its address range (IPv4 /24, IPv6 /48), when known.
    pub network: Option<String>,
    /// Ranked after the reliable ones at its price.
    pub unreliable: bool,
}

impl Listing {
    fn key<P: Ord + Copy>(&self, peer: P) -> RankKey<P> {
        rank_key(&self.offer, self.unreliable, self.rtt_us, peer)
    }
}

#[derive(Debug)]
pub struct Book<P> {
    listings: HashMap<P, Listing>,
    /// The live listings, best first.
    live: BTreeSet<RankKey<P>>,
    /// (live until, provider); stale entries (a replaced offer) are skipped.
    expiries: BinaryHeap<Reverse<(u64, P)>>,
    /// The slots of the live offers, summed.
    slots_live: u64,
}

impl<P: Ord + Copy + Hash> Default for Book<P> {
    fn default() -> Self {
        Book {
            listings: HashMap::new(),
            live: BTreeSet::new(),
            expiries: BinaryHeap::new(),
            slots_live: 0,
        }
    }
}

impl<P: Ord + Copy + Hash> Book<P> {
    /// Takes `peer`'s offer, received at `now_ms`, in place of its last.
    /// False when the book is full and `peer` is not in it.
    pub fn offer(
        &mut self,
        now_ms: u64,
        peer: P,
        offer: Offer,
        rtt_us: Option<u64>,
        network: Option<String>,
    ) -> bool {
        let unreliable = match self.listings.get(&peer) {
            Some(l) => l.unreliable,
            None if self.listings.len() >= BOOK_OFFERS_MAX => return false,
            None => false,
        };
        self.withdraw(peer);
        let listing = Listing {
            live_until_ms: live_until_ms(&offer, now_ms),
            offer,
            rtt_us,
            network,
            unreliable,
        };
        if now_ms <= listing.live_until_ms {
            self.live.insert(listing.key(peer));
            self.slots_live += u64::from(listing.offer.slots_total);
            self.expiries.push(Reverse((listing.live_until_ms, peer)));
        }
        self.listings.insert(peer, listing);
        true
    }

    /// `peer` left (disconnected, or withdrew its offer).
    pub fn withdraw(&mut self, peer: P) -> Option<Listing> {
        let listing = self.listings.remove(&peer)?;
        if self.live.remove(&listing.key(peer)) {
            self.slots_live -= u64::from(listing.offer.slots_total);
        }
        Some(listing)
    }

    /// Moves the offers whose time has passed out of the live index; each
    /// one expired is returned once.
    pub fn expire(&mut self, now_ms: u64) -> Vec<P> {
        let mut expired = Vec::new();
        while let Some(&Reverse((until, peer))) = self.expiries.peek() {
            if until >= now_ms {
                break;
            }
            self.expiries.pop();
            let Some(listing) = self.listings.get(&peer) else {
                continue;
            };
            // A replaced offer left a stale entry; its own is still queued.
            if listing.live_until_ms != until {
                continue;
            }
            if self.live.remove(&listing.key(peer)) {
                self.slots_live -= u64::from(listing.offer.slots_total);
                expired.push(peer);
            }
        }
        expired
    }

    /// Marks `peer` reliable or not (its record changed): it moves in rank.
    pub fn set_unreliable(&mut self, peer: P, unreliable: bool) {
        let Some(listing) = self.listings.get_mut(&peer) else {
            return;
        };
        if listing.unreliable == unreliable {
            return;
        }
        let was_live = self.live.remove(&listing.key(peer));
        listing.unreliable = unreliable;
        if was_live {
            self.live.insert(listing.key(peer));
        }
    }

    pub fn get(&self, peer: &P) -> Option<&Listing> {
        self.listings.get(peer)
    }

    pub fn is_live(&self, now_ms: u64, peer: &P) -> bool {
        self.listings
            .get(peer)
            .is_some_and(|l| now_ms <= l.live_until_ms)
    }

    /// Every listing, live or expired, in no order (for explanations).
    pub fn listings(&self) -> impl Iterator<Item = (&P, &Listing)> {
        self.listings.iter()
    }

    /// The live offers, best first.
    pub fn ranked(&self) -> impl Iterator<Item = &RankKey<P>> {
        self.live.iter()
    }

    pub fn len(&self) -> usize {
        self.listings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.listings.is_empty()
    }

    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// The slots of every live offer: how many tasks the network runs at once.
    pub fn slots_live(&self) -> u64 {
        self.slots_live
    }

    /// The rank key of `peer`'s listing (for indexes kept beside the book).
    pub fn key(&self, peer: P) -> Option<RankKey<P>> {
        self.listings.get(&peer).map(|l| l.key(peer))
    }
}
