//! The block format, one for the solo sequencer and for BFT: a header, the
//! transactions, and a commit of validators' signatures over the header.

use crate::{CHAIN_ID_BYTES_MAX, ChainError};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use ledger::{AccountId, Block, Credits, Effect, Height, LedgerError, SignedTx, TxId};
use serde::{Deserialize, Serialize};
use std::fmt;

const HEADER_DOMAIN: &str = "plexus chain header v1";
const TXS_DOMAIN: &str = "plexus chain txs v1";
const RECEIPTS_DOMAIN: &str = "plexus chain receipts v1";

/// A header's hash, which the validators sign and the next header names.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlockHash(pub [u8; 32]);

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Where a chain starts: its name, the first balances, its validators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    pub chain_id: String,
    pub allocations: Vec<(AccountId, Credits)>,
    pub validators: Vec<AccountId>,
}

impl Genesis {
    pub fn check(&self) -> Result<(), ChainError> {
        if self.chain_id.len() > CHAIN_ID_BYTES_MAX {
            return Err(ChainError::ChainIdTooLong(self.chain_id.len()));
        }
        if self.validators.is_empty() {
            return Err(ChainError::Corrupt("a genesis with no validator".into()));
        }
        Ok(())
    }
}

/// What one transaction of a block did, as stored and shown: the ledger's
/// effect, or why it refused (a refused transaction changes nothing, its
/// nonce included).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Receipt {
    Applied(Effect),
    Refused(String),
}

impl From<Result<Effect, LedgerError>> for Receipt {
    fn from(r: Result<Effect, LedgerError>) -> Receipt {
        match r {
            Ok(effect) => Receipt::Applied(effect),
            Err(e) => Receipt::Refused(e.to_string()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub chain_id: String,
    pub height: Height,
    /// The previous block's hash; zeros for the first block.
    pub prev: BlockHash,
    /// The proposer's clock, for people reading the chain; the ledger never
    /// reads it (its clock is the height).
    pub time_ms: u64,
    pub txs_root: [u8; 32],
    /// The ledger's [`ledger::State::app_hash`] after this block.
    pub app_hash: [u8; 32],
    pub receipts_root: [u8; 32],
    pub proposer: AccountId,
}

impl Header {
    pub fn hash(&self) -> Result<BlockHash, ChainError> {
        let bytes = cbor(self, "a header")?;
        let mut h = blake3::Hasher::new_derive_key(HEADER_DOMAIN);
        h.update(&bytes);
        Ok(BlockHash(*h.finalize().as_bytes()))
    }
}

/// The validators' signatures over a header's hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub signatures: Vec<(AccountId, serde_bytes::ByteArray<64>)>,
}

impl Commit {
    pub fn sign(key: &SigningKey, hash: &BlockHash) -> Commit {
        let signature = key.sign(&hash.0).to_bytes();
        Commit {
            signatures: vec![(AccountId::of(key), serde_bytes::ByteArray::new(signature))],
        }
    }

    /// Whether every signature verifies and every one of `validators` has
    /// signed (the solo rule; BFT will ask for more than two thirds of the
    /// voting power).
    pub fn verify(&self, hash: &BlockHash, validators: &[AccountId]) -> Result<(), ChainError> {
        for (who, signature) in &self.signatures {
            let key = VerifyingKey::from_bytes(&who.0)
                .map_err(|_| ChainError::Corrupt(format!("a commit signer {who:?} is no key")))?;
            key.verify(&hash.0, &Signature::from_bytes(signature))
                .map_err(|_| ChainError::Corrupt(format!("{who:?}'s commit does not verify")))?;
        }
        for v in validators {
            if !self.signatures.iter().any(|(who, _)| who == v) {
                return Err(ChainError::Corrupt(format!(
                    "validator {v:?} has not signed"
                )));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBlock {
    pub header: Header,
    pub txs: Vec<SignedTx>,
    pub commit: Commit,
}

impl SignedBlock {
    /// The block as the ledger applies it.
    pub fn ledger_block(&self) -> Block {
        Block {
            height: self.header.height,
            txs: self.txs.clone(),
        }
    }
}

/// The root of a block's transactions: their ids in order.
pub fn txs_root(ids: &[TxId]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(TXS_DOMAIN);
    h.update(&(ids.len() as u64).to_le_bytes());
    for id in ids {
        h.update(&id.0);
    }
    *h.finalize().as_bytes()
}

/// The root of a block's receipts, in order.
pub fn receipts_root(receipts: &[Receipt]) -> Result<[u8; 32], ChainError> {
    let bytes = cbor(receipts, "receipts")?;
    let mut h = blake3::Hasher::new_derive_key(RECEIPTS_DOMAIN);
    h.update(&bytes);
    Ok(*h.finalize().as_bytes())
}

pub(crate) fn cbor<T: Serialize + ?Sized>(
    value: &T,
    what: &'static str,
) -> Result<Vec<u8>, ChainError> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).map_err(|e| ChainError::Encode {
        what,
        reason: e.to_string(),
    })?;
    Ok(bytes)
}

pub(crate) fn from_cbor<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, ChainError> {
    ciborium::from_reader(bytes).map_err(|e| ChainError::Corrupt(format!("{what}: {e}")))
}
