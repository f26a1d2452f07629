//! The market, pure: which offers may take a job's tasks, in which order,
//! and, for the offers that may not, why.
//!
//! No I/O, no clock (time arrives as `now_ms`), no threads. The requester's
//! node asks it once per dispatch; a job that no offer can serve shows the
//! counts per reason ("3 offers seen: 2 price, 1 memory") instead of
//! waiting in silence, and a task is never sent to a provider that would
//! have to refuse it.

use serde::{Deserialize, Serialize};
use std::fmt;
use types::offer::{OFFER_CLOCK_SKEW_MS_MAX, OFFER_TTL_MS};
use types::{Offer, Requirements};

mod book;
#[cfg(test)]
mod tests;

pub use book::{BOOK_OFFERS_MAX, Book, Listing};

/// Where an offer stands in the order of dispatch ([`rank_key`]).
pub type RankKey<P> = (u64, bool, std::cmp::Reverse<u64>, u64, P);

/// Why an offer cannot take a job's tasks now. The first reason that
/// applies, in this order, is the one counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mismatch {
    /// Its offer expired (by its own `expires_at_ms`, within the skew allowed).
    Expired,
    /// It asks more per billion fuel than the job pays.
    Price,
    /// It allows a task less memory than the job's tasks need.
    Memory,
    /// It runs another engine identity than the job asks for.
    Engine,
    /// Its verified record is shorter than the job asks for.
    Record,
    /// The job left it out (caught cheating, or failing its tasks).
    Excluded,
    /// It meets the job but has no credit left for more requests.
    Busy,
}

impl Mismatch {
    pub const ALL: [Mismatch; 7] = [
        Mismatch::Expired,
        Mismatch::Price,
        Mismatch::Memory,
        Mismatch::Engine,
        Mismatch::Record,
        Mismatch::Excluded,
        Mismatch::Busy,
    ];

    /// The one name of each reason, in the API and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Mismatch::Expired => "expired",
            Mismatch::Price => "price",
            Mismatch::Memory => "memory",
            Mismatch::Engine => "engine",
            Mismatch::Record => "record",
            Mismatch::Excluded => "excluded",
            Mismatch::Busy => "busy",
        }
    }
}

/// What a job needs of an offer: its requirements, and the memory its
/// tasks' limits ask for.
#[derive(Clone, Copy, Debug)]
pub struct Needs<'a> {
    pub requirements: &'a Requirements,
    /// Each task's memory limit (`limits.memory_mib`).
    pub task_memory_bytes: u64,
}

impl Needs<'_> {
    /// The task memory a provider must allow.
    pub fn memory_bytes(&self) -> u64 {
        self.task_memory_bytes
            .max(self.requirements.memory_bytes_min.unwrap_or(0))
    }

    /// Whether `offer` meets the job, by the offer alone and the provider's
    /// verified record; exclusion and credit are the caller's to add.
    pub fn check(&self, offer: &Offer, verified: u64) -> Result<(), Mismatch> {
        match self.shortfalls(offer, verified).next() {
            Some(m) => Err(m),
            None => Ok(()),
        }
    }

    /// Every requirement `offer` falls short of, in [`Mismatch`] order
    /// (`check` names the first): what `plexus peers --job` shows of each
    /// provider.
    pub fn unmet(&self, offer: &Offer, verified: u64) -> Vec<Mismatch> {
        self.shortfalls(offer, verified).collect()
    }

    /// The requirements `offer` falls short of, in [`Mismatch`] order; four
    /// comparisons and no allocation (dispatch asks once per offer turn).
    fn shortfalls(&self, offer: &Offer, verified: u64) -> impl Iterator<Item = Mismatch> {
        let r = self.requirements;
        [
            (
                Mismatch::Price,
                r.price_per_gfuel_max
                    .is_some_and(|max| offer.price_per_gfuel > max),
            ),
            (
                Mismatch::Memory,
                offer.task_memory_bytes_max < self.memory_bytes(),
            ),
            (
                Mismatch::Engine,
                r.engine.as_ref().is_some_and(|e| *e != offer.engine),
            ),
            (
                Mismatch::Record,
                r.verified_min.is_some_and(|min| verified < min),
            ),
        ]
        .into_iter()
        .filter_map(|(m, short)| short.then_some(m))
    }
}

/// Until when an offer received at `received_at_ms` counts, by our clock:
/// its own expiry, but never more than its time to live after it arrived
/// (a provider's clock ahead of ours cannot keep an offer alive), plus
/// the skew we allow between clocks (one a little behind ours does not
/// lose its offers early).
pub fn live_until_ms(offer: &Offer, received_at_ms: u64) -> u64 {
    offer
        .expires_at_ms
        .min(received_at_ms.saturating_add(OFFER_TTL_MS))
        .saturating_add(OFFER_CLOCK_SKEW_MS_MAX)
}

/// The offers a job saw at one dispatch, counted per reason they could not
/// take its tasks. One field per [`Mismatch`], so the API shows
/// `{"offers_seen": 3, "price": 2, "memory": 1, ...}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoMatch {
    /// Every offer looked at, matched or not.
    pub offers_seen: u64,
    pub expired: u64,
    pub price: u64,
    pub memory: u64,
    pub engine: u64,
    pub record: u64,
    pub excluded: u64,
    pub busy: u64,
}

impl NoMatch {
    /// One more offer seen, and why it could not take the job (Ok: it could).
    pub fn count(&mut self, outcome: Result<(), Mismatch>) {
        self.offers_seen += 1;
        if let Err(m) = outcome {
            *self.slot(m) += 1;
        }
    }

    /// Offers that fell short for reason `m`.
    pub fn of(&self, m: Mismatch) -> u64 {
        let mut copy = *self;
        *copy.slot(m)
    }

    fn slot(&mut self, m: Mismatch) -> &mut u64 {
        match m {
            Mismatch::Expired => &mut self.expired,
            Mismatch::Price => &mut self.price,
            Mismatch::Memory => &mut self.memory,
            Mismatch::Engine => &mut self.engine,
            Mismatch::Record => &mut self.record,
            Mismatch::Excluded => &mut self.excluded,
            Mismatch::Busy => &mut self.busy,
        }
    }

    /// Offers that could have taken the job.
    pub fn matched(&self) -> u64 {
        let short: u64 = Mismatch::ALL.iter().map(|&m| self.of(m)).sum();
        self.offers_seen - short
    }
}

impl fmt::Display for NoMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.offers_seen == 1 { "" } else { "s" };
        write!(f, "{} offer{plural} seen", self.offers_seen)?;
        let mut sep = ": ";
        for m in Mismatch::ALL {
            let n = self.of(m);
            if n > 0 {
                write!(f, "{sep}{n} {}", m.as_str())?;
                sep = ", ";
            }
        }
        Ok(())
    }
}

/// The order in which dispatch offers work to providers: cheapest first,
/// then the reliable before the unreliable, the faster, the closer; the
/// peer last so that the order is total and the same on every run.
pub fn rank_key<P: Ord + Copy>(
    offer: &Offer,
    unreliable: bool,
    rtt_us: Option<u64>,
    peer: P,
) -> RankKey<P> {
    (
        offer.price_per_gfuel,
        unreliable,
        std::cmp::Reverse(offer.fuel_per_sec),
        rtt_us.unwrap_or(u64::MAX),
        peer,
    )
}
