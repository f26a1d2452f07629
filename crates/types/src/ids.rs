//! Identifiers and units.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The BLAKE3 hash of a blob (a module, an input, an output): its name in
/// every store and on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash(pub [u8; 32]);

impl BlobHash {
    pub fn of(bytes: &[u8]) -> BlobHash {
        BlobHash(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 lower- or upper-case hex digits.
    pub fn from_hex(text: &str) -> Option<BlobHash> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(BlobHash(out))
    }
}

impl From<blake3::Hash> for BlobHash {
    fn from(h: blake3::Hash) -> Self {
        BlobHash(*h.as_bytes())
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({})", &self.to_hex()[..16])
    }
}

impl Serialize for BlobHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for BlobHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        BlobHash::from_hex(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// Units of compute: about one WebAssembly instruction. The unit of metering
/// and of billing, the same on every machine.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Fuel(pub u64);

impl std::ops::Add for Fuel {
    type Output = Fuel;
    fn add(self, o: Fuel) -> Fuel {
        Fuel(self.0.saturating_add(o.0))
    }
}

impl std::iter::Sum for Fuel {
    fn sum<I: Iterator<Item = Fuel>>(iter: I) -> Fuel {
        iter.fold(Fuel(0), |a, b| a + b)
    }
}

impl fmt::Display for Fuel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0 as f64;
        if v >= 1e9 {
            write!(f, "{:.2} Gfuel", v / 1e9)
        } else if v >= 1e6 {
            write!(f, "{:.2} Mfuel", v / 1e6)
        } else {
            write!(f, "{} fuel", self.0)
        }
    }
}

/// The network's money: whole credits, never fractions (the ledger's
/// arithmetic is on integers; its one rounding is stated in `ledger`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Credits(pub u64);

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} credits", self.0)
    }
}

/// One request a requester sent (a task or a batch of them), named by a
/// counter of the requester's, never by a time: two requests sent in the
/// same instant are still two, and a simulated clock can drive the code
/// that tells them apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

impl RequestId {
    /// Used as a counter: this id, and the counter moved on to the next.
    pub fn take_next(&mut self) -> RequestId {
        let id = *self;
        self.0 += 1;
        id
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_hash_round_trips_through_hex() {
        let h = BlobHash::of(b"plexus");
        assert_eq!(BlobHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(BlobHash::from_hex("zz"), None);
        assert_eq!(BlobHash::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn request_ids_are_counted_and_never_repeat() {
        let mut counter = RequestId::default();
        let a = counter.take_next();
        let b = counter.take_next();
        assert_ne!(a, b);
        assert_eq!((a, b, counter), (RequestId(0), RequestId(1), RequestId(2)));
    }
}
