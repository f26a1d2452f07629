//! The ledger: a deterministic state machine of accounts, stakes, escrows,
//! claims and slashes, driven by signed transactions in blocks. Pure: no
//! I/O, no clock (time is the block height), no floats, ordered maps only,
//! so every validator that applies the same blocks holds the same state and
//! the same [`State::app_hash`].
//!
//! **Money is conserved.** After every block, Σ balances + Σ escrows +
//! Σ stakes + Σ unbonding = minted − burned ([`State::check_supply`]).
//! Credits move between those places and leave only when a slash burns
//! them.
//!
//! **Pay is for verified work, from funds locked first.** A requester locks
//! a job's budget in escrow ([`Tx::EscrowLock`]) before its work starts;
//! each verified result is one [`Tx::Claim`], signed by the requester (its
//! acceptance), paying its provider [`pay_for`]`(fuel, price)`; what is left
//! goes back with [`Tx::EscrowRelease`] after the job, or to anyone's
//! asking after the escrow's expiry. A claim beyond what is left in the
//! escrow is **refused, never overdrawn** (Akash's escrow pays what it can
//! and closes the account overdrawn; here the requester's budget is a hard
//! bound, and the provider learns at once that a claim was not paid).
//!
//! **A lie costs stake.** Two results for one task signed by the same
//! provider with different outputs ([`Evidence`]) slash
//! [`SLASH_PERCENT`] of its stake, bonded and unbonding; the reporter gets
//! [`REPORTER_PERCENT`] of that and the rest is burned. Each task slashes a
//! provider once.

#[cfg(test)]
mod tests;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
pub use types::Credits;
use types::JobId;

/// A block's position in the chain; the ledger's only clock.
pub type Height = u64;

/// Blocks between an unstake and the credits' return to the balance: a
/// provider cannot escape a slash for what it did just before leaving.
pub const UNBONDING_BLOCKS: u64 = 1_000;
/// The share of a provider's stake (bonded and unbonding) a slash takes.
pub const SLASH_PERCENT: u64 = 50;
/// The share of a slash that goes to its reporter; the rest is burned.
pub const REPORTER_PERCENT: u64 = 50;
/// Transactions one block may hold.
pub const BLOCK_TXS_MAX: usize = 10_000;
/// Jobs that may have escrow at once per owner account, so that one account
/// cannot grow the state without bound.
pub const ESCROWS_PER_OWNER_MAX: usize = 1_024;
/// The longest a job id may be.
pub const JOB_ID_BYTES_MAX: usize = 128;

const FUEL_PER_GFUEL: u128 = 1_000_000_000;
const TX_DOMAIN: &[u8] = b"plexus ledger tx v1";
const RESULT_DOMAIN: &[u8] = b"plexus ledger result v1";

/// What work earns: fuel × price per billion fuel ÷ 10⁹, **rounded down**
/// to whole credits — the ledger's one rounding, made **once per provider
/// per escrow**, not per claim: an escrow keeps each provider's earnings
/// exact (in billionths of a credit) and each claim pays what the rounded
/// total has grown by, so a provider of many small tasks loses less than
/// one credit per job, not up to one per task. Computed in 128 bits; a
/// total beyond `u64` credits saturates (no escrow holds that much).
pub fn pay_for(fuel: u64, price_per_gfuel: u64) -> Credits {
    whole_credits(u128::from(fuel) * u128::from(price_per_gfuel))
}

fn whole_credits(nanocredits: u128) -> Credits {
    Credits(u64::try_from(nanocredits / FUEL_PER_GFUEL).unwrap_or(u64::MAX))
}

/// An account: an ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AccountId(pub [u8; 32]);

impl AccountId {
    pub fn of(key: &SigningKey) -> AccountId {
        AccountId(key.verifying_key().to_bytes())
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// One provider's result for one task, signed by it: the digest is what
/// replicas compare (the verification claim).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDigest {
    pub digest: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub signature: [u8; 64],
}

impl SignedDigest {
    pub fn sign(key: &SigningKey, job: &JobId, task: u64, digest: [u8; 32]) -> SignedDigest {
        let signature = key.sign(&result_message(job, task, &digest)).to_bytes();
        SignedDigest { digest, signature }
    }
}

/// Signed evidence that a provider lied: two different results for one
/// task, both under its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub provider: AccountId,
    pub job: JobId,
    pub task: u64,
    pub first: SignedDigest,
    pub second: SignedDigest,
}

/// What a transaction asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tx {
    Transfer {
        to: AccountId,
        amount: Credits,
    },
    /// Balance to stake (a provider's bond).
    Stake {
        amount: Credits,
    },
    /// Stake to the balance, after [`UNBONDING_BLOCKS`].
    Unstake {
        amount: Credits,
    },
    /// Locks a job's budget: claims pay from it at most this price.
    EscrowLock {
        job: JobId,
        amount: Credits,
        price_per_gfuel: u64,
        expires_at: Height,
    },
    /// The escrow's owner accepts `provider`'s verified result for a task
    /// (each replica that agreed is paid), at the price agreed with it (at
    /// most the escrow's).
    Claim {
        job: JobId,
        task: u64,
        provider: AccountId,
        fuel: u64,
        price_per_gfuel: u64,
    },
    /// What is left goes back to the owner: by the owner at any time, by
    /// anyone once the escrow has expired.
    EscrowRelease {
        job: JobId,
    },
    Slash {
        evidence: Evidence,
    },
}

/// A transaction as sent: its signer, the signer's next nonce, and the
/// signature over both and the transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTx {
    pub signer: AccountId,
    pub nonce: u64,
    pub tx: Tx,
    #[serde(with = "serde_bytes")]
    pub signature: [u8; 64],
}

impl SignedTx {
    pub fn sign(key: &SigningKey, nonce: u64, tx: Tx) -> Result<SignedTx, LedgerError> {
        let signer = AccountId::of(key);
        let message = tx_message(&signer, nonce, &tx)?;
        Ok(SignedTx {
            signer,
            nonce,
            tx,
            signature: key.sign(&message).to_bytes(),
        })
    }
}

impl SignedTx {
    /// Whether the signature verifies for its signer, nonce and
    /// transaction: what a mempool checks before it holds a transaction
    /// (applying checks it again, for a block from anyone).
    pub fn verify(&self) -> Result<(), LedgerError> {
        let message = tx_message(&self.signer, self.nonce, &self.tx)?;
        verify(&self.signer, &message, &self.signature)
    }

    /// The transaction's id: the BLAKE3 hash of its CBOR encoding, the
    /// signature included.
    pub fn id(&self) -> Result<TxId, LedgerError> {
        let mut bytes = Vec::with_capacity(192);
        ciborium::into_writer(self, &mut bytes).map_err(|e| LedgerError::Encode(e.to_string()))?;
        Ok(TxId(*blake3::hash(&bytes).as_bytes()))
    }
}

/// A transaction's id ([`SignedTx::id`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxId(pub [u8; 32]);

impl fmt::Debug for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The entries of the state a block may change ([`State::touched`]), so
/// that a store writes those and no others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    pub accounts: BTreeSet<AccountId>,
    pub escrows: BTreeSet<JobId>,
}

/// Transactions in order, at one height.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub height: Height,
    pub txs: Vec<SignedTx>,
}

/// What applying one transaction did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    Moved,
    Paid {
        provider: AccountId,
        amount: Credits,
    },
    Refunded {
        amount: Credits,
    },
    Slashed {
        amount: Credits,
        to_reporter: Credits,
    },
}

/// Why a transaction is refused. A refused transaction changes nothing but
/// its signer's nonce: one whose signature and nonce check out uses the
/// nonce even when what it asks is refused (as a Cosmos chain's ante
/// handler does), so that a refusal in a block does not void the signer's
/// later transactions, signed with the nonces after it. A signer with no
/// account has nothing to lose and is given no account by a refusal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum LedgerError {
    #[error("the signature does not verify")]
    BadSignature,
    #[error("nonce {got}, expected {expected}")]
    Nonce { got: u64, expected: u64 },
    #[error("an amount of zero")]
    ZeroAmount,
    #[error("balance {have} < {need}")]
    Insufficient { have: Credits, need: Credits },
    #[error("stake {have} < {need}")]
    InsufficientStake { have: Credits, need: Credits },
    #[error("job {0} has had escrow already")]
    EscrowExists(JobId),
    #[error("no escrow for job {0}")]
    NoEscrow(JobId),
    #[error("the escrow of job {0} is released")]
    Released(JobId),
    #[error("the escrow of job {job} expired at height {at}")]
    Expired { job: JobId, at: Height },
    #[error("expiry {expires_at} is not after height {height}")]
    ExpiryPast { expires_at: Height, height: Height },
    #[error("only the owner of job {0}'s escrow may do that")]
    NotOwner(JobId),
    #[error("task {task} of job {job} is claimed for this provider already")]
    Claimed { job: JobId, task: u64 },
    #[error("a price of {price} per Gfuel above the escrow's {max}")]
    PriceAbove { price: u64, max: u64 },
    #[error("claim of {claim} beyond the {left} left in job {job}'s escrow")]
    BeyondEscrow {
        job: JobId,
        claim: Credits,
        left: Credits,
    },
    #[error("evidence that does not prove a lie: {0}")]
    Evidence(&'static str),
    #[error("the provider is slashed for task {task} of job {job} already")]
    SlashedAlready { job: JobId, task: u64 },
    #[error("the provider has no stake to slash")]
    NothingToSlash,
    #[error("{0} escrows open for this owner (ESCROWS_PER_OWNER_MAX)")]
    TooManyEscrows(usize),
    #[error("a job id of {0} bytes (JOB_ID_BYTES_MAX = {JOB_ID_BYTES_MAX})")]
    JobIdTooLong(usize),
    #[error("block at height {got}, expected {expected}")]
    Height { got: Height, expected: Height },
    #[error("a block of {0} transactions (BLOCK_TXS_MAX = {BLOCK_TXS_MAX})")]
    BlockTooLarge(usize),
    #[error("an amount beyond what the ledger can hold")]
    Overflow,
    #[error("cannot encode the transaction: {0}")]
    Encode(String),
    #[error("supply broken: {0}")]
    Supply(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub balance: Credits,
    /// The nonce its next transaction must carry.
    pub nonce: u64,
    pub stake: Credits,
    /// Stake on its way back: (height it returns at, amount), oldest first.
    pub unbonding: Vec<(Height, Credits)>,
}

impl Account {
    fn unbonding_total(&self) -> u64 {
        self.unbonding.iter().map(|(_, c)| c.0).sum()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escrow {
    pub owner: AccountId,
    pub locked: Credits,
    pub left: Credits,
    pub price_per_gfuel: u64,
    pub expires_at: Height,
    pub released: bool,
    /// (task, provider) paid, so none is paid twice.
    pub claimed: BTreeSet<(u64, AccountId)>,
    /// Each provider's earnings from this escrow, exact: Σ fuel × price
    /// (billionths of a credit). It has been paid `pay_for` of it, rounded
    /// down.
    pub earned: BTreeMap<AccountId, u128>,
}

/// The whole ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The height of the last block applied (0: genesis).
    pub height: Height,
    pub accounts: BTreeMap<AccountId, Account>,
    /// Every job that ever had escrow (a released one stays, so its id and
    /// its claims cannot be used again).
    pub escrows: BTreeMap<JobId, Escrow>,
    /// (provider, job, task) slashed already.
    pub slashed: BTreeSet<(AccountId, JobId, u64)>,
    pub minted: Credits,
    pub burned: Credits,
}

impl State {
    /// A ledger whose accounts start with these balances (all minted).
    pub fn genesis(allocations: &[(AccountId, Credits)]) -> Result<State, LedgerError> {
        let mut state = State {
            height: 0,
            accounts: BTreeMap::new(),
            escrows: BTreeMap::new(),
            slashed: BTreeSet::new(),
            minted: Credits(0),
            burned: Credits(0),
        };
        for (id, amount) in allocations {
            let account = state.accounts.entry(*id).or_default();
            account.balance = add(account.balance, *amount)?;
            state.minted = add(state.minted, *amount)?;
        }
        Ok(state)
    }

    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.accounts.get(id)
    }

    pub fn balance(&self, id: &AccountId) -> Credits {
        self.accounts.get(id).map_or(Credits(0), |a| a.balance)
    }

    /// The nonce `id`'s next transaction must carry.
    pub fn next_nonce(&self, id: &AccountId) -> u64 {
        self.accounts.get(id).map_or(0, |a| a.nonce)
    }

    /// Every account and escrow that applying `block` to this state may
    /// change, whether its transactions apply or are refused: signers,
    /// payees, the owners an escrow refunds, slashed providers and their
    /// reporters, the accounts whose unbonding matures at its height. (The
    /// height, minted and burned totals and the set of slashes are the
    /// state's own, outside these.) A superset is harmless; a missing entry
    /// would be lost by a store that writes only these, which the ledger's
    /// property test checks.
    pub fn touched(&self, block: &Block) -> Touched {
        let mut t = Touched::default();
        for (id, account) in &self.accounts {
            if account.unbonding.iter().any(|(at, _)| *at <= block.height) {
                t.accounts.insert(*id);
            }
        }
        for signed in &block.txs {
            t.accounts.insert(signed.signer);
            let job = match &signed.tx {
                Tx::Transfer { to, .. } => {
                    t.accounts.insert(*to);
                    None
                }
                Tx::Stake { .. } | Tx::Unstake { .. } => None,
                Tx::EscrowLock { job, .. } => Some(job),
                Tx::Claim { job, provider, .. } => {
                    t.accounts.insert(*provider);
                    Some(job)
                }
                Tx::EscrowRelease { job } => Some(job),
                Tx::Slash { evidence } => {
                    t.accounts.insert(evidence.provider);
                    None
                }
            };
            if let Some(job) = job {
                if let Some(escrow) = self.escrows.get(job) {
                    t.accounts.insert(escrow.owner);
                }
                t.escrows.insert(job.clone());
            }
        }
        t
    }

    /// Whether `tx` would apply on the state as it is (a mempool's check).
    pub fn check_tx(&self, tx: &SignedTx) -> Result<Effect, LedgerError> {
        tx.verify()?;
        self.clone().apply_tx(tx)
    }

    /// Applies a block: matured unbonding returns first, then each
    /// transaction in order; a refused one changes nothing and its receipt
    /// says why. The block itself is refused (nothing applied) when its
    /// height is not the next or it holds too many transactions.
    pub fn apply_block(
        &mut self,
        block: &Block,
    ) -> Result<Vec<Result<Effect, LedgerError>>, LedgerError> {
        let expected = self.height + 1;
        if block.height != expected {
            return Err(LedgerError::Height {
                got: block.height,
                expected,
            });
        }
        if block.txs.len() > BLOCK_TXS_MAX {
            return Err(LedgerError::BlockTooLarge(block.txs.len()));
        }
        self.height = block.height;
        for account in self.accounts.values_mut() {
            let due: u64 = account
                .unbonding
                .iter()
                .filter(|(at, _)| *at <= block.height)
                .map(|(_, c)| c.0)
                .sum();
            if due > 0 {
                account.unbonding.retain(|(at, _)| *at > block.height);
                // Within the supply, so it fits.
                account.balance = Credits(account.balance.0.saturating_add(due));
            }
        }
        let signatures = verify_txs(&block.txs);
        let receipts = block
            .txs
            .iter()
            .zip(signatures)
            .map(|(tx, signature)| {
                signature?;
                self.apply_tx(tx)
            })
            .collect();
        Ok(receipts)
    }

    /// One transaction whose signature has verified, all or nothing.
    fn apply_tx(&mut self, signed: &SignedTx) -> Result<Effect, LedgerError> {
        let expected = self.next_nonce(&signed.signer);
        if signed.nonce != expected {
            return Err(LedgerError::Nonce {
                got: signed.nonce,
                expected,
            });
        }
        // Every check of `effect` comes before its first change, so a
        // refusal returns with nothing changed but the nonce. (A credit
        // cannot overflow after a debit: every amount is within the
        // supply, a u64.)
        let effect = self.effect(&signed.signer, &signed.tx);
        if effect.is_ok() || self.accounts.contains_key(&signed.signer) {
            self.accounts.entry(signed.signer).or_default().nonce += 1;
        }
        effect
    }

    fn effect(&mut self, signer: &AccountId, tx: &Tx) -> Result<Effect, LedgerError> {
        let height = self.height;
        match tx {
            Tx::Transfer { to, amount } => {
                nonzero(*amount)?;
                self.debit(signer, *amount)?;
                self.credit(to, *amount)?;
                Ok(Effect::Moved)
            }
            Tx::Stake { amount } => {
                nonzero(*amount)?;
                self.debit(signer, *amount)?;
                let account = self.accounts.entry(*signer).or_default();
                account.stake = add(account.stake, *amount)?;
                Ok(Effect::Moved)
            }
            Tx::Unstake { amount } => {
                nonzero(*amount)?;
                let have = self.accounts.get(signer).map_or(Credits(0), |a| a.stake);
                if have < *amount {
                    return Err(LedgerError::InsufficientStake {
                        have,
                        need: *amount,
                    });
                }
                let account = self.accounts.entry(*signer).or_default();
                account.stake = Credits(account.stake.0 - amount.0);
                account
                    .unbonding
                    .push((height.saturating_add(UNBONDING_BLOCKS), *amount));
                Ok(Effect::Moved)
            }
            Tx::EscrowLock {
                job,
                amount,
                price_per_gfuel,
                expires_at,
            } => {
                nonzero(*amount)?;
                if job.0.len() > JOB_ID_BYTES_MAX {
                    return Err(LedgerError::JobIdTooLong(job.0.len()));
                }
                if self.escrows.contains_key(job) {
                    return Err(LedgerError::EscrowExists(job.clone()));
                }
                if *expires_at <= height {
                    return Err(LedgerError::ExpiryPast {
                        expires_at: *expires_at,
                        height,
                    });
                }
                let open = self
                    .escrows
                    .values()
                    .filter(|e| e.owner == *signer && !e.released)
                    .count();
                if open >= ESCROWS_PER_OWNER_MAX {
                    return Err(LedgerError::TooManyEscrows(open));
                }
                self.debit(signer, *amount)?;
                self.escrows.insert(
                    job.clone(),
                    Escrow {
                        owner: *signer,
                        locked: *amount,
                        left: *amount,
                        price_per_gfuel: *price_per_gfuel,
                        expires_at: *expires_at,
                        released: false,
                        claimed: BTreeSet::new(),
                        earned: BTreeMap::new(),
                    },
                );
                Ok(Effect::Moved)
            }
            Tx::Claim {
                job,
                task,
                provider,
                fuel,
                price_per_gfuel,
            } => {
                let escrow = self
                    .escrows
                    .get(job)
                    .ok_or_else(|| LedgerError::NoEscrow(job.clone()))?;
                if escrow.owner != *signer {
                    return Err(LedgerError::NotOwner(job.clone()));
                }
                if escrow.released {
                    return Err(LedgerError::Released(job.clone()));
                }
                if height > escrow.expires_at {
                    return Err(LedgerError::Expired {
                        job: job.clone(),
                        at: escrow.expires_at,
                    });
                }
                if escrow.claimed.contains(&(*task, *provider)) {
                    return Err(LedgerError::Claimed {
                        job: job.clone(),
                        task: *task,
                    });
                }
                if *price_per_gfuel > escrow.price_per_gfuel {
                    return Err(LedgerError::PriceAbove {
                        price: *price_per_gfuel,
                        max: escrow.price_per_gfuel,
                    });
                }
                let before = escrow.earned.get(provider).copied().unwrap_or(0);
                let after = before + u128::from(*fuel) * u128::from(*price_per_gfuel);
                let pay = Credits(whole_credits(after).0 - whole_credits(before).0);
                if pay > escrow.left {
                    return Err(LedgerError::BeyondEscrow {
                        job: job.clone(),
                        claim: pay,
                        left: escrow.left,
                    });
                }
                self.credit(provider, pay)?;
                let escrow = self.escrows.get_mut(job).expect("looked up above");
                escrow.left = Credits(escrow.left.0 - pay.0);
                escrow.claimed.insert((*task, *provider));
                escrow.earned.insert(*provider, after);
                Ok(Effect::Paid {
                    provider: *provider,
                    amount: pay,
                })
            }
            Tx::EscrowRelease { job } => {
                let escrow = self
                    .escrows
                    .get(job)
                    .ok_or_else(|| LedgerError::NoEscrow(job.clone()))?;
                if escrow.released {
                    return Err(LedgerError::Released(job.clone()));
                }
                if escrow.owner != *signer && height <= escrow.expires_at {
                    return Err(LedgerError::NotOwner(job.clone()));
                }
                let (owner, left) = (escrow.owner, escrow.left);
                self.credit(&owner, left)?;
                let escrow = self.escrows.get_mut(job).expect("looked up above");
                escrow.left = Credits(0);
                escrow.released = true;
                Ok(Effect::Refunded { amount: left })
            }
            Tx::Slash { evidence } => self.slash(signer, evidence),
        }
    }

    fn slash(&mut self, reporter: &AccountId, e: &Evidence) -> Result<Effect, LedgerError> {
        if e.first.digest == e.second.digest {
            return Err(LedgerError::Evidence("the two results agree"));
        }
        for signed in [&e.first, &e.second] {
            let message = result_message(&e.job, e.task, &signed.digest);
            verify(&e.provider, &message, &signed.signature)
                .map_err(|_| LedgerError::Evidence("a result is not signed by the provider"))?;
        }
        let key = (e.provider, e.job.clone(), e.task);
        if self.slashed.contains(&key) {
            return Err(LedgerError::SlashedAlready {
                job: e.job.clone(),
                task: e.task,
            });
        }
        let account = self
            .accounts
            .get_mut(&e.provider)
            .ok_or(LedgerError::NothingToSlash)?;
        let total = u128::from(account.stake.0) + u128::from(account.unbonding_total());
        let amount = u64::try_from(total * u128::from(SLASH_PERCENT) / 100)
            .map_err(|_| LedgerError::Overflow)?;
        if amount == 0 {
            return Err(LedgerError::NothingToSlash);
        }
        // From the bond first, then from what is unbonding, newest first.
        let mut due = amount;
        let from_stake = due.min(account.stake.0);
        account.stake = Credits(account.stake.0 - from_stake);
        due -= from_stake;
        for (_, c) in account.unbonding.iter_mut().rev() {
            let take = due.min(c.0);
            c.0 -= take;
            due -= take;
        }
        account.unbonding.retain(|(_, c)| c.0 > 0);
        let to_reporter = Credits(amount * REPORTER_PERCENT / 100);
        self.credit(reporter, to_reporter)?;
        self.burned = add(self.burned, Credits(amount - to_reporter.0))?;
        self.slashed.insert(key);
        Ok(Effect::Slashed {
            amount: Credits(amount),
            to_reporter,
        })
    }

    fn debit(&mut self, id: &AccountId, amount: Credits) -> Result<(), LedgerError> {
        let have = self.balance(id);
        if have < amount {
            return Err(LedgerError::Insufficient { have, need: amount });
        }
        self.accounts.entry(*id).or_default().balance = Credits(have.0 - amount.0);
        Ok(())
    }

    fn credit(&mut self, id: &AccountId, amount: Credits) -> Result<(), LedgerError> {
        if amount.0 == 0 {
            return Ok(());
        }
        let account = self.accounts.entry(*id).or_default();
        account.balance = add(account.balance, amount)?;
        Ok(())
    }

    /// Σ balances + Σ escrows + Σ stakes + Σ unbonding = minted − burned.
    pub fn check_supply(&self) -> Result<(), LedgerError> {
        let mut held: u128 = 0;
        for a in self.accounts.values() {
            held +=
                u128::from(a.balance.0) + u128::from(a.stake.0) + u128::from(a.unbonding_total());
        }
        for e in self.escrows.values() {
            held += u128::from(e.left.0);
        }
        let supply = u128::from(self.minted.0) - u128::from(self.burned.0);
        if held != supply {
            return Err(LedgerError::Supply(format!(
                "{held} held against a supply of {supply} (minted {}, burned {})",
                self.minted.0, self.burned.0
            )));
        }
        Ok(())
    }

    /// A hash of the whole state, the same on every validator that applied
    /// the same blocks: every field in a fixed order, maps in key order,
    /// each variable-length item length-prefixed.
    pub fn app_hash(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("plexus ledger state v1");
        let n = |h: &mut blake3::Hasher, x: u64| {
            h.update(&x.to_le_bytes());
        };
        n(&mut h, self.height);
        n(&mut h, self.minted.0);
        n(&mut h, self.burned.0);
        n(&mut h, self.accounts.len() as u64);
        for (id, a) in &self.accounts {
            h.update(&id.0);
            n(&mut h, a.balance.0);
            n(&mut h, a.nonce);
            n(&mut h, a.stake.0);
            n(&mut h, a.unbonding.len() as u64);
            for (at, c) in &a.unbonding {
                n(&mut h, *at);
                n(&mut h, c.0);
            }
        }
        n(&mut h, self.escrows.len() as u64);
        for (job, e) in &self.escrows {
            n(&mut h, job.0.len() as u64);
            h.update(job.0.as_bytes());
            h.update(&e.owner.0);
            n(&mut h, e.locked.0);
            n(&mut h, e.left.0);
            n(&mut h, e.price_per_gfuel);
            n(&mut h, e.expires_at);
            h.update(&[u8::from(e.released)]);
            n(&mut h, e.claimed.len() as u64);
            for (t, p) in &e.claimed {
                n(&mut h, *t);
                h.update(&p.0);
            }
            n(&mut h, e.earned.len() as u64);
            for (p, nano) in &e.earned {
                h.update(&p.0);
                h.update(&nano.to_le_bytes());
            }
        }
        n(&mut h, self.slashed.len() as u64);
        for (p, job, task) in &self.slashed {
            h.update(&p.0);
            n(&mut h, job.0.len() as u64);
            h.update(job.0.as_bytes());
            n(&mut h, *task);
        }
        *h.finalize().as_bytes()
    }
}

fn add(a: Credits, b: Credits) -> Result<Credits, LedgerError> {
    a.0.checked_add(b.0)
        .map(Credits)
        .ok_or(LedgerError::Overflow)
}

fn nonzero(amount: Credits) -> Result<(), LedgerError> {
    if amount.0 == 0 {
        Err(LedgerError::ZeroAmount)
    } else {
        Ok(())
    }
}

fn verify(signer: &AccountId, message: &[u8], signature: &[u8; 64]) -> Result<(), LedgerError> {
    let key = VerifyingKey::from_bytes(&signer.0).map_err(|_| LedgerError::BadSignature)?;
    key.verify(message, &Signature::from_bytes(signature))
        .map_err(|_| LedgerError::BadSignature)
}

/// Whether each transaction's signature verifies: all of them at once by
/// ed25519 batch verification (about twice the rate of one by one, and as
/// deterministic: its random weights come from a transcript of the
/// inputs), and one by one only when the batch fails, to find which.
/// (Batch verification is cofactored: a signer could make a signature of
/// its own that passes in a batch and fails alone. That changes no
/// outcome a forger could reach, and every validator decides alike, since
/// the outcome is a function of the block.)
pub fn verify_txs(txs: &[SignedTx]) -> Vec<Result<(), LedgerError>> {
    let one_by_one = |txs: &[SignedTx]| txs.iter().map(SignedTx::verify).collect();
    let mut messages = Vec::with_capacity(txs.len());
    let mut signatures = Vec::with_capacity(txs.len());
    let mut keys = Vec::with_capacity(txs.len());
    for t in txs {
        let (Ok(message), Ok(key)) = (
            tx_message(&t.signer, t.nonce, &t.tx),
            VerifyingKey::from_bytes(&t.signer.0),
        ) else {
            return one_by_one(txs);
        };
        messages.push(message);
        signatures.push(Signature::from_bytes(&t.signature));
        keys.push(key);
    }
    let messages: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    match ed25519_dalek::verify_batch(&messages, &signatures, &keys) {
        Ok(()) => vec![Ok(()); txs.len()],
        Err(_) => one_by_one(txs),
    }
}

/// What a transaction's signature covers: a domain, the signer, its nonce
/// and the transaction's CBOR encoding.
pub fn tx_message(signer: &AccountId, nonce: u64, tx: &Tx) -> Result<Vec<u8>, LedgerError> {
    let mut message = Vec::with_capacity(128);
    message.extend_from_slice(TX_DOMAIN);
    message.extend_from_slice(&signer.0);
    message.extend_from_slice(&nonce.to_le_bytes());
    ciborium::into_writer(tx, &mut message).map_err(|e| LedgerError::Encode(e.to_string()))?;
    Ok(message)
}

/// What a provider's result signature covers, for slashing evidence.
pub fn result_message(job: &JobId, task: u64, digest: &[u8; 32]) -> Vec<u8> {
    let mut message = Vec::with_capacity(RESULT_DOMAIN.len() + job.0.len() + 48);
    message.extend_from_slice(RESULT_DOMAIN);
    message.extend_from_slice(&(job.0.len() as u64).to_le_bytes());
    message.extend_from_slice(job.0.as_bytes());
    message.extend_from_slice(&task.to_le_bytes());
    message.extend_from_slice(digest);
    message
}
