//! The transactions waiting for a block. Pure: the caller passes the
//! ledger's state in.

use crate::{ChainError, MEMPOOL_TXS_MAX, SIGNER_TXS_MAX};
use ledger::{AccountId, SignedTx, State, TxId};
use std::collections::{HashMap, HashSet, VecDeque};

/// A transaction whose signature has verified, and its id: the only kind
/// the mempool takes. Verifying is the costly part of admission (an
/// ed25519 check), so it is done where the transaction arrives, in the
/// caller's task, and the sequencer's one thread never waits on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    id: TxId,
    tx: SignedTx,
}

impl Verified {
    pub fn check(tx: SignedTx) -> Result<Verified, ChainError> {
        tx.verify()?;
        Ok(Verified { id: tx.id()?, tx })
    }

    /// Many at once, by batch verification ([`ledger::verify_txs`]).
    pub fn check_all(txs: Vec<SignedTx>) -> Vec<Result<Verified, ChainError>> {
        let signatures = ledger::verify_txs(&txs);
        txs.into_iter()
            .zip(signatures)
            .map(|(tx, ok)| {
                ok?;
                Ok(Verified { id: tx.id()?, tx })
            })
            .collect()
    }

    /// For tests of the mempool's bounds, which need many transactions
    /// fast: the signature is taken on trust.
    #[cfg(test)]
    pub(crate) fn unchecked_for_tests(tx: SignedTx) -> Verified {
        Verified {
            id: tx.id().expect("encodes"),
            tx,
        }
    }

    pub fn id(&self) -> TxId {
        self.id
    }

    pub fn tx(&self) -> &SignedTx {
        &self.tx
    }
}

/// Waiting transactions, at most [`MEMPOOL_TXS_MAX`] and at most
/// [`SIGNER_TXS_MAX`] of one signer; none twice, and none whose signer's
/// nonce is used on the chain or taken by another waiting transaction.
/// They leave first come first served, but each signer's in the order of
/// its nonces: one that arrives before the nonce it follows waits for it,
/// so a block never holds a transaction its signer's earlier one would
/// make fail.
#[derive(Debug, Default)]
pub struct Mempool {
    waiting: HashMap<(AccountId, u64), Verified>,
    arrival: VecDeque<(AccountId, u64)>,
    ids: HashSet<TxId>,
    per_signer: HashMap<AccountId, usize>,
}

impl Mempool {
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn holds(&self, id: &TxId) -> bool {
        self.ids.contains(id)
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn admit(&mut self, state: &State, tx: Verified) -> Result<TxId, ChainError> {
        if self.ids.contains(&tx.id) {
            return Err(ChainError::Duplicate(tx.id));
        }
        let key = (tx.tx.signer, tx.tx.nonce);
        let next = state.next_nonce(&key.0);
        if key.1 < next {
            return Err(ChainError::NonceUsed { nonce: key.1, next });
        }
        if self.waiting.contains_key(&key) {
            return Err(ChainError::NonceTaken(key.1));
        }
        let mine = self.per_signer.get(&key.0).copied().unwrap_or(0);
        if mine >= SIGNER_TXS_MAX {
            return Err(ChainError::SignerFull { held: mine });
        }
        if self.waiting.len() >= MEMPOOL_TXS_MAX {
            return Err(ChainError::MempoolFull {
                held: self.waiting.len(),
            });
        }
        *self.per_signer.entry(key.0).or_default() += 1;
        let id = tx.id;
        self.ids.insert(id);
        self.waiting.insert(key, tx);
        self.arrival.push_back(key);
        Ok(id)
    }

    fn remove(&mut self, key: &(AccountId, u64)) -> Option<Verified> {
        let v = self.waiting.remove(key)?;
        self.ids.remove(&v.id);
        if let Some(n) = self.per_signer.get_mut(&key.0) {
            *n -= 1;
            if *n == 0 {
                self.per_signer.remove(&key.0);
            }
        }
        Some(v)
    }

    /// Up to `max` transactions for the next block on `state`: in the order
    /// they came, except that each signer's go in nonce order from its next
    /// nonce, and one whose nonce is not reached yet stays. Also returns
    /// the ones that can never apply (their nonce was used meanwhile),
    /// dropped.
    pub fn take(&mut self, state: &State, max: usize) -> (Vec<Verified>, Vec<TxId>) {
        let mut next: HashMap<AccountId, u64> = HashMap::new();
        let mut taken = Vec::new();
        let mut dropped = Vec::new();
        let mut stay = VecDeque::with_capacity(self.arrival.len());
        let arrival = std::mem::take(&mut self.arrival);
        for key in arrival {
            if !self.waiting.contains_key(&key) {
                continue; // taken already, after the nonce it follows
            }
            if taken.len() >= max {
                stay.push_back(key);
                continue;
            }
            let n = next
                .entry(key.0)
                .or_insert_with(|| state.next_nonce(&key.0));
            if key.1 < *n {
                if let Some(v) = self.remove(&key) {
                    dropped.push(v.id);
                }
            } else if key.1 > *n {
                stay.push_back(key);
            } else {
                while taken.len() < max {
                    let Some(v) = self.remove(&(key.0, *n)) else {
                        break;
                    };
                    taken.push(v);
                    *n += 1;
                }
            }
        }
        stay.retain(|key| self.waiting.contains_key(key));
        self.arrival = stay;
        (taken, dropped)
    }
}
