//! Blocks, receipts and the ledger's state in SQLite, `synchronous=FULL`
//! (money survives power loss, not only a crash): a block and the state it
//! leads to in one transaction.
//!
//! The state is kept as rows, not as one blob, so that a block writes only
//! what it may change ([`ledger::State::touched`]): its accounts, its
//! escrows without their claims, one row per new claim, one per new slash.
//! A restart reads the rows back into a [`State`] and checks it against the
//! last header's `app_hash`, so a store that lost or bent a row is found at
//! once rather than trusted.

use crate::block::{cbor, from_cbor};
use crate::{BlockHash, ChainError, Genesis, Header, Receipt, SignedBlock};
use ledger::{Account, AccountId, Credits, Effect, Escrow, Height, State, Touched, Tx, TxId};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;
use types::JobId;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    hash BLOB NOT NULL,
    block BLOB NOT NULL,
    receipts BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS txs (
    id BLOB PRIMARY KEY,
    height INTEGER NOT NULL,
    idx INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS accounts (id BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS escrows (job TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS claims (
    job TEXT NOT NULL,
    task INTEGER NOT NULL,
    provider BLOB NOT NULL,
    PRIMARY KEY (job, task, provider)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS slashed (
    provider BLOB NOT NULL,
    job TEXT NOT NULL,
    task INTEGER NOT NULL,
    PRIMARY KEY (provider, job, task)
) WITHOUT ROWID;
";

/// The state's own totals, one row.
#[derive(Serialize, Deserialize)]
struct Totals {
    height: Height,
    minted: Credits,
    burned: Credits,
}

/// An escrow as stored: its claims are rows of their own.
#[derive(Serialize, Deserialize)]
struct EscrowRow {
    owner: AccountId,
    locked: Credits,
    left: Credits,
    price_per_gfuel: u64,
    expires_at: Height,
    released: bool,
    earned: Vec<(AccountId, u128)>,
}

fn db(context: &'static str) -> impl FnOnce(rusqlite::Error) -> ChainError {
    move |source| ChainError::Db { context, source }
}

/// SQLite integers are signed: a task number or height beyond i64 is kept
/// as its two's-complement bits and read back the same way.
fn int(x: u64) -> i64 {
    x as i64
}

pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (or creates) the chain's database. A new one starts at
    /// `genesis`; an existing one must hold the same genesis. Returns the
    /// state after the last stored block and that block's header.
    pub fn open(
        path: &Path,
        genesis: &Genesis,
    ) -> Result<(Store, State, Option<Header>), ChainError> {
        genesis.check()?;
        let conn = Connection::open(path).map_err(db("open"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db("enable WAL"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db("set synchronous=FULL"))?;
        let synchronous: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .map_err(db("read synchronous"))?;
        if synchronous != 2 {
            return Err(ChainError::Corrupt(format!(
                "synchronous is {synchronous}, not FULL (2)"
            )));
        }
        conn.execute_batch(SCHEMA)
            .map_err(db("create the tables"))?;
        let mut store = Store { conn };
        let stored: Option<Vec<u8>> = store
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'genesis'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db("read the genesis"))?;
        match stored {
            None => {
                let state = State::genesis(&genesis.allocations)?;
                let tx = store.conn.transaction().map_err(db("begin"))?;
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('genesis', ?1)",
                    [cbor(genesis, "the genesis")?],
                )
                .map_err(db("write the genesis"))?;
                write_totals(&tx, &state)?;
                for (id, account) in &state.accounts {
                    write_account(&tx, id, Some(account))?;
                }
                tx.commit().map_err(db("commit the genesis"))?;
                Ok((store, state, None))
            }
            Some(bytes) => {
                let found: Genesis = from_cbor(&bytes, "the stored genesis")?;
                if found != *genesis {
                    return Err(ChainError::OtherChain {
                        path: path.display().to_string(),
                        found: found.chain_id,
                        expected: genesis.chain_id.clone(),
                    });
                }
                let state = store.load_state()?;
                let last = store.last_header()?;
                check_against(&state, last.as_ref())?;
                Ok((store, state, last))
            }
        }
    }

    /// Writes a block, its receipts and what it changed in `state` (the
    /// state after it), all in one transaction: on return, a restart finds
    /// them; on an error, none of it.
    pub fn commit(
        &mut self,
        block: &SignedBlock,
        ids: &[TxId],
        receipts: &[Receipt],
        state: &State,
        touched: &Touched,
    ) -> Result<(), ChainError> {
        let hash = block.header.hash()?;
        let tx = self.conn.transaction().map_err(db("begin"))?;
        tx.execute(
            "INSERT INTO blocks (height, hash, block, receipts) VALUES (?1, ?2, ?3, ?4)",
            params![
                int(block.header.height),
                hash.0.as_slice(),
                cbor(block, "a block")?,
                cbor(receipts, "receipts")?
            ],
        )
        .map_err(db("write the block"))?;
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO txs (id, height, idx) VALUES (?1, ?2, ?3)")
                .map_err(db("prepare"))?;
            for (idx, id) in ids.iter().enumerate() {
                insert
                    .execute(params![
                        id.0.as_slice(),
                        int(block.header.height),
                        idx as i64
                    ])
                    .map_err(db("write a transaction's place"))?;
            }
            let mut claim = tx
                .prepare_cached("INSERT INTO claims (job, task, provider) VALUES (?1, ?2, ?3)")
                .map_err(db("prepare"))?;
            let mut slash = tx
                .prepare_cached("INSERT INTO slashed (provider, job, task) VALUES (?1, ?2, ?3)")
                .map_err(db("prepare"))?;
            for (signed, receipt) in block.txs.iter().zip(receipts) {
                match (&signed.tx, receipt) {
                    (
                        Tx::Claim {
                            job,
                            task,
                            provider,
                            ..
                        },
                        Receipt::Applied(Effect::Paid { .. }),
                    ) => {
                        claim
                            .execute(params![job.0, int(*task), provider.0.as_slice()])
                            .map_err(db("write a claim"))?;
                    }
                    (Tx::Slash { evidence }, Receipt::Applied(Effect::Slashed { .. })) => {
                        slash
                            .execute(params![
                                evidence.provider.0.as_slice(),
                                evidence.job.0,
                                int(evidence.task)
                            ])
                            .map_err(db("write a slash"))?;
                    }
                    _ => {}
                }
            }
        }
        for id in &touched.accounts {
            write_account(&tx, id, state.accounts.get(id))?;
        }
        for job in &touched.escrows {
            write_escrow(&tx, job, state.escrows.get(job))?;
        }
        write_totals(&tx, state)?;
        tx.commit().map_err(db("commit the block"))
    }

    /// The state as the stored rows hold it.
    pub fn load_state(&self) -> Result<State, ChainError> {
        let totals: Vec<u8> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'totals'", [], |r| {
                r.get(0)
            })
            .map_err(db("read the totals"))?;
        let totals: Totals = from_cbor(&totals, "the totals")?;
        let mut state = State::genesis(&[])?;
        state.height = totals.height;
        state.minted = totals.minted;
        state.burned = totals.burned;
        let mut rows = self
            .conn
            .prepare("SELECT id, value FROM accounts")
            .map_err(db("prepare"))?;
        let mut q = rows.query([]).map_err(db("read the accounts"))?;
        while let Some(row) = q.next().map_err(db("read an account"))? {
            let id: Vec<u8> = row.get(0).map_err(db("read an account"))?;
            let value: Vec<u8> = row.get(1).map_err(db("read an account"))?;
            let account: Account = from_cbor(&value, "an account")?;
            state.accounts.insert(account_id(&id)?, account);
        }
        let mut rows = self
            .conn
            .prepare("SELECT job, value FROM escrows")
            .map_err(db("prepare"))?;
        let mut q = rows.query([]).map_err(db("read the escrows"))?;
        while let Some(row) = q.next().map_err(db("read an escrow"))? {
            let job: String = row.get(0).map_err(db("read an escrow"))?;
            let value: Vec<u8> = row.get(1).map_err(db("read an escrow"))?;
            let r: EscrowRow = from_cbor(&value, "an escrow")?;
            state.escrows.insert(
                JobId(job),
                Escrow {
                    owner: r.owner,
                    locked: r.locked,
                    left: r.left,
                    price_per_gfuel: r.price_per_gfuel,
                    expires_at: r.expires_at,
                    released: r.released,
                    claimed: BTreeSet::new(),
                    earned: r.earned.into_iter().collect(),
                },
            );
        }
        let mut rows = self
            .conn
            .prepare("SELECT job, task, provider FROM claims")
            .map_err(db("prepare"))?;
        let mut q = rows.query([]).map_err(db("read the claims"))?;
        while let Some(row) = q.next().map_err(db("read a claim"))? {
            let job: String = row.get(0).map_err(db("read a claim"))?;
            let task: i64 = row.get(1).map_err(db("read a claim"))?;
            let provider: Vec<u8> = row.get(2).map_err(db("read a claim"))?;
            let escrow = state.escrows.get_mut(&JobId(job.clone())).ok_or_else(|| {
                ChainError::Corrupt(format!("a claim of job {job}, which has no escrow"))
            })?;
            escrow.claimed.insert((task as u64, account_id(&provider)?));
        }
        let mut rows = self
            .conn
            .prepare("SELECT provider, job, task FROM slashed")
            .map_err(db("prepare"))?;
        let mut q = rows.query([]).map_err(db("read the slashes"))?;
        while let Some(row) = q.next().map_err(db("read a slash"))? {
            let provider: Vec<u8> = row.get(0).map_err(db("read a slash"))?;
            let job: String = row.get(1).map_err(db("read a slash"))?;
            let task: i64 = row.get(2).map_err(db("read a slash"))?;
            state
                .slashed
                .insert((account_id(&provider)?, JobId(job), task as u64));
        }
        Ok(state)
    }

    pub fn last_header(&self) -> Result<Option<Header>, ChainError> {
        let bytes: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT block FROM blocks ORDER BY height DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(db("read the last block"))?;
        bytes
            .map(|b| from_cbor::<SignedBlock>(&b, "the last block").map(|b| b.header))
            .transpose()
    }

    pub fn block(&self, height: Height) -> Result<Option<(SignedBlock, Vec<Receipt>)>, ChainError> {
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT block, receipts FROM blocks WHERE height = ?1",
                [int(height)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db("read a block"))?;
        row.map(|(b, r)| Ok((from_cbor(&b, "a block")?, from_cbor(&r, "receipts")?)))
            .transpose()
    }

    pub fn block_hash(&self, height: Height) -> Result<Option<BlockHash>, ChainError> {
        let hash: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT hash FROM blocks WHERE height = ?1",
                [int(height)],
                |r| r.get(0),
            )
            .optional()
            .map_err(db("read a block's hash"))?;
        hash.map(|h| {
            <[u8; 32]>::try_from(h.as_slice())
                .map(BlockHash)
                .map_err(|_| ChainError::Corrupt(format!("the hash of block {height}")))
        })
        .transpose()
    }

    /// Where a transaction was put: its block's height and its index there.
    pub fn find_tx(&self, id: &TxId) -> Result<Option<(Height, u32)>, ChainError> {
        self.conn
            .query_row(
                "SELECT height, idx FROM txs WHERE id = ?1",
                [id.0.as_slice()],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u32)),
            )
            .optional()
            .map_err(db("find a transaction"))
    }
}

/// A state read back must be the one the last header promised.
pub(crate) fn check_against(state: &State, last: Option<&Header>) -> Result<(), ChainError> {
    state
        .check_supply()
        .map_err(|e| ChainError::Corrupt(e.to_string()))?;
    let height = last.map_or(0, |h| h.height);
    if state.height != height {
        return Err(ChainError::Corrupt(format!(
            "the state is at height {} but the last block at {height}",
            state.height
        )));
    }
    if let Some(h) = last
        && state.app_hash() != h.app_hash
    {
        return Err(ChainError::Corrupt(format!(
            "the stored state does not hash to block {}'s app_hash",
            h.height
        )));
    }
    Ok(())
}

fn account_id(bytes: &[u8]) -> Result<AccountId, ChainError> {
    <[u8; 32]>::try_from(bytes)
        .map(AccountId)
        .map_err(|_| ChainError::Corrupt(format!("an account id of {} bytes", bytes.len())))
}

fn write_totals(tx: &rusqlite::Transaction<'_>, state: &State) -> Result<(), ChainError> {
    let totals = Totals {
        height: state.height,
        minted: state.minted,
        burned: state.burned,
    };
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('totals', ?1)",
        [cbor(&totals, "the totals")?],
    )
    .map_err(db("write the totals"))?;
    Ok(())
}

fn write_account(
    tx: &rusqlite::Transaction<'_>,
    id: &AccountId,
    account: Option<&Account>,
) -> Result<(), ChainError> {
    match account {
        Some(a) => {
            let value = cbor(a, "an account")?;
            tx.prepare_cached("INSERT OR REPLACE INTO accounts (id, value) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![id.0.as_slice(), value]))
                .map_err(db("write an account"))?
        }
        None => tx
            .prepare_cached("DELETE FROM accounts WHERE id = ?1")
            .and_then(|mut s| s.execute([id.0.as_slice()]))
            .map_err(db("drop an account"))?,
    };
    Ok(())
}

fn write_escrow(
    tx: &rusqlite::Transaction<'_>,
    job: &JobId,
    escrow: Option<&Escrow>,
) -> Result<(), ChainError> {
    match escrow {
        Some(e) => {
            let row = EscrowRow {
                owner: e.owner,
                locked: e.locked,
                left: e.left,
                price_per_gfuel: e.price_per_gfuel,
                expires_at: e.expires_at,
                released: e.released,
                earned: e.earned.iter().map(|(p, n)| (*p, *n)).collect(),
            };
            let value = cbor(&row, "an escrow")?;
            tx.prepare_cached("INSERT OR REPLACE INTO escrows (job, value) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![job.0, value]))
                .map_err(db("write an escrow"))?
        }
        None => tx
            .prepare_cached("DELETE FROM escrows WHERE job = ?1")
            .and_then(|mut s| s.execute([&job.0]))
            .map_err(db("drop an escrow"))?,
    };
    Ok(())
}
