//! The ledger's chain: what orders the ledger's transactions into blocks,
//! signs them and keeps them. `ledger` decides what a block does; this
//! crate decides which transactions go into which block, and makes sure a
//! block, once acknowledged, survives a power cut.
//!
//! - [`Mempool`]: the transactions waiting for a block, bounded
//!   ([`MEMPOOL_TXS_MAX`], [`SIGNER_TXS_MAX`]); only a transaction whose
//!   signature verified ([`Verified`]) may wait, none whose nonce is used or
//!   taken, and each signer's leave in nonce order.
//! - [`SignedBlock`]: a header (chain, height, the previous block's hash,
//!   the transactions' root, the state's hash after them, the receipts'
//!   root) and its commit: the signatures of the validators over the
//!   header's hash. One signature for the solo sequencer, a quorum's for
//!   BFT: the same format both ways.
//! - [`Store`]: blocks, receipts and the ledger's state in SQLite with
//!   `synchronous=FULL`. A block and the state it leads to are written in
//!   **one transaction**, so a restart finds both or neither; only the
//!   entries a block may change are written ([`ledger::State::touched`]),
//!   so a block costs what it holds, not what the ledger holds.
//! - [`Solo`]: the default, one embedded validator. It makes a block at
//!   most every [`BLOCK_INTERVAL_MS`] while transactions wait, at once when
//!   a block's worth waits, and an empty one every [`BLOCK_HEARTBEAT_MS`]
//!   so that heights (the ledger's clock: escrow expiry, unbonding) go on
//!   passing. [`spawn_solo`] runs it as an actor behind a [`ChainHandle`],
//!   which answers a submission only once its block is on disk.
//!
//! **No transaction applies twice.** A transaction's nonce is used by the
//! block that holds it; once that block is stored, the same transaction
//! (or any other with that nonce) is refused at the mempool and by the
//! ledger. A validator killed after the write and before the answer leaves
//! the submitter to send again: it is told the transaction is in a block
//! ([`ChainHandle::find_tx`]), never paid twice.

mod block;
mod mempool;
mod solo;
mod store;
#[cfg(test)]
mod tests;

pub use block::{BlockHash, Commit, Genesis, Header, Receipt, SignedBlock};
pub use ledger;
pub use mempool::{Mempool, Verified};
pub use solo::{ChainHandle, Included, Made, Pending, Solo, StoredBlock, TxPlace, spawn_solo};
pub use store::Store;

use ledger::{Height, LedgerError, TxId};

/// Transactions that may wait for a block at once: four blocks' worth, so
/// a burst of claims waits in memory a second at most, and a flood is
/// refused with [`ChainError::MempoolFull`] instead of growing without
/// bound.
pub const MEMPOOL_TXS_MAX: usize = 4 * ledger::BLOCK_TXS_MAX;
/// Transactions of one signer that may wait at once: two blocks' worth, so
/// that one signer (a requester with many claims, or a flood) cannot take
/// the whole mempool.
pub const SIGNER_TXS_MAX: usize = 2 * ledger::BLOCK_TXS_MAX;
/// The shortest time between two blocks while transactions wait.
pub const BLOCK_INTERVAL_MS: u64 = 200;
/// The longest time between two blocks, waiting transactions or not.
pub const BLOCK_HEARTBEAT_MS: u64 = 5_000;
/// Blocks one query may return.
pub const BLOCKS_PER_QUERY_MAX: usize = 100;
/// Commands that may wait for the chain's actor.
pub const COMMANDS_MAX: usize = 1_024;
/// The longest a chain id may be.
pub const CHAIN_ID_BYTES_MAX: usize = 64;

const _: () = assert!(MEMPOOL_TXS_MAX >= SIGNER_TXS_MAX);
const _: () = assert!(SIGNER_TXS_MAX >= ledger::BLOCK_TXS_MAX);
const _: () = assert!(BLOCK_INTERVAL_MS < BLOCK_HEARTBEAT_MS);

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("the ledger refuses the transaction: {0}")]
    Refused(#[from] LedgerError),
    #[error("{held} transactions wait already (MEMPOOL_TXS_MAX = {MEMPOOL_TXS_MAX})")]
    MempoolFull { held: usize },
    #[error("{held} transactions of this signer wait already (SIGNER_TXS_MAX = {SIGNER_TXS_MAX})")]
    SignerFull { held: usize },
    #[error("transaction {0} waits for a block already")]
    Duplicate(TxId),
    #[error("transaction {id} is in block {height} already")]
    InBlock { id: TxId, height: Height },
    #[error("nonce {nonce} of this signer is used already (next: {next})")]
    NonceUsed { nonce: u64, next: u64 },
    #[error("a transaction with nonce {0} of this signer waits already")]
    NonceTaken(u64),
    #[error("a chain id of {0} bytes (CHAIN_ID_BYTES_MAX = {CHAIN_ID_BYTES_MAX})")]
    ChainIdTooLong(usize),
    #[error("the database at {path} belongs to chain {found}, not {expected}")]
    OtherChain {
        path: String,
        found: String,
        expected: String,
    },
    #[error("the stored chain is corrupt: {0}")]
    Corrupt(String),
    #[error("the database: {context}: {source}")]
    Db {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot encode {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    #[error("no block at height {0}")]
    NoBlock(Height),
    #[error("the block was not stored ({0}); its transactions are dropped, send them again")]
    NotStored(String),
    #[error("transaction {0} was dropped: its nonce was used by another")]
    Dropped(TxId),
    #[error("the chain has stopped")]
    Stopped,
}
