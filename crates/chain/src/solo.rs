//! The solo sequencer: one embedded validator, the default. [`Solo`] is its
//! core over the store (take from the mempool, apply, sign, store);
//! [`spawn_solo`] runs it on a thread of its own behind a [`ChainHandle`],
//! so that SQLite's waits for the disk never block the node's async tasks.

use crate::block::{receipts_root, txs_root};
use crate::{
    BLOCK_HEARTBEAT_MS, BLOCK_INTERVAL_MS, BLOCKS_PER_QUERY_MAX, BlockHash, COMMANDS_MAX,
    ChainError, Commit, Genesis, Header, Mempool, Receipt, SignedBlock, Store, Verified,
};
use ed25519_dalek::SigningKey;
use ledger::{Account, AccountId, BLOCK_TXS_MAX, Block, Escrow, Height, SignedTx, State, TxId};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use types::JobId;

/// A block just made and stored, and what each of its transactions did.
#[derive(Clone, Debug)]
pub struct Made {
    pub header: Header,
    pub hash: BlockHash,
    pub receipts: Vec<(TxId, Receipt)>,
}

/// Where a transaction went, and what it did there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxPlace {
    pub height: Height,
    pub index: u32,
    pub receipt: Receipt,
}

/// A block as stored, with its receipts.
pub type StoredBlock = (SignedBlock, Vec<Receipt>);

/// A submitted transaction's answer: its block is on disk.
pub type Included = (TxId, TxPlace);

pub struct Solo {
    store: Store,
    state: State,
    mempool: Mempool,
    key: SigningKey,
    genesis: Genesis,
    prev: BlockHash,
    /// Transactions the mempool dropped (their nonce was used meanwhile),
    /// for the actor to tell their senders.
    dropped: Vec<TxId>,
}

impl Solo {
    /// Opens the chain at `path` (created at `genesis` when new) as its one
    /// validator, which `key` must be.
    pub fn open(path: &Path, genesis: Genesis, key: SigningKey) -> Result<Solo, ChainError> {
        if genesis.validators != [AccountId::of(&key)] {
            return Err(ChainError::Corrupt(
                "the solo sequencer must be the genesis's one validator".into(),
            ));
        }
        let (store, state, last) = Store::open(path, &genesis)?;
        let prev = match &last {
            Some(h) => h.hash()?,
            None => BlockHash::default(),
        };
        Ok(Solo {
            store,
            state,
            mempool: Mempool::default(),
            key,
            genesis,
            prev,
            dropped: Vec::new(),
        })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn waiting(&self) -> usize {
        self.mempool.len()
    }

    fn mempool_holds(&self, id: &TxId) -> bool {
        self.mempool.holds(id)
    }

    /// The transactions dropped since the last call, never to apply.
    pub fn take_dropped(&mut self) -> Vec<TxId> {
        std::mem::take(&mut self.dropped)
    }

    /// Admits a transaction to the mempool; one that has had its block
    /// already (applied or refused there) is refused here, so that no
    /// transaction is in two blocks.
    pub fn submit(&mut self, tx: Verified) -> Result<TxId, ChainError> {
        if let Some((height, _)) = self.store.find_tx(&tx.id())? {
            return Err(ChainError::InBlock {
                id: tx.id(),
                height,
            });
        }
        self.mempool.admit(&self.state, tx)
    }

    /// Makes the next block of up to [`BLOCK_TXS_MAX`] waiting
    /// transactions (none makes an empty one), signs it and stores it with
    /// the state after it. When the store fails, the block is dropped, its
    /// transactions with it, and the state is read back from the store, so
    /// memory never runs ahead of the disk.
    pub fn make_block(&mut self, time_ms: u64) -> Result<Made, ChainError> {
        let (taken, dropped) = self.mempool.take(&self.state, BLOCK_TXS_MAX);
        self.dropped.extend(dropped);
        let ids: Vec<TxId> = taken.iter().map(Verified::id).collect();
        let block = Block {
            height: self.state.height + 1,
            txs: taken.into_iter().map(|v| v.tx().clone()).collect(),
        };
        let touched = self.state.touched(&block);
        let receipts: Vec<Receipt> = self
            .state
            .apply_block(&block)?
            .into_iter()
            .map(Receipt::from)
            .collect();
        let header = Header {
            chain_id: self.genesis.chain_id.clone(),
            height: block.height,
            prev: self.prev,
            time_ms,
            txs_root: txs_root(&ids),
            app_hash: self.state.app_hash(),
            receipts_root: receipts_root(&receipts)?,
            proposer: AccountId::of(&self.key),
        };
        let hash = header.hash()?;
        let signed = SignedBlock {
            commit: Commit::sign(&self.key, &hash),
            header,
            txs: block.txs,
        };
        if let Err(e) = self
            .store
            .commit(&signed, &ids, &receipts, &self.state, &touched)
        {
            tracing::error!(target: "plexus::chain", height = signed.header.height, "block not stored: {e}");
            self.state = self.store.load_state()?;
            return Err(ChainError::NotStored(e.to_string()));
        }
        self.prev = hash;
        Ok(Made {
            header: signed.header,
            hash,
            receipts: ids.into_iter().zip(receipts).collect(),
        })
    }

    /// Where a transaction went, from the store (so also after a restart).
    pub fn find_tx(&self, id: &TxId) -> Result<Option<TxPlace>, ChainError> {
        let Some((height, index)) = self.store.find_tx(id)? else {
            return Ok(None);
        };
        let (_, receipts) = self
            .store
            .block(height)?
            .ok_or(ChainError::NoBlock(height))?;
        let receipt = receipts.get(index as usize).cloned().ok_or_else(|| {
            ChainError::Corrupt(format!("transaction {id} past the end of block {height}"))
        })?;
        Ok(Some(TxPlace {
            height,
            index,
            receipt,
        }))
    }
}

enum Command {
    Submit {
        tx: Box<Verified>,
        reply: oneshot::Sender<Result<Included, ChainError>>,
    },
    Account {
        id: AccountId,
        reply: oneshot::Sender<(Height, Option<Account>)>,
    },
    Escrow {
        job: JobId,
        reply: oneshot::Sender<Option<Escrow>>,
    },
    Blocks {
        from: Height,
        count: usize,
        reply: oneshot::Sender<Result<Vec<StoredBlock>, ChainError>>,
    },
    FindTx {
        id: TxId,
        reply: oneshot::Sender<Result<Option<TxPlace>, ChainError>>,
    },
}

/// The way to a running chain; cheap to clone.
#[derive(Clone)]
pub struct ChainHandle {
    commands: mpsc::Sender<Command>,
}

/// A submission on its way: [`Pending::included`] answers once its block
/// is stored.
pub struct Pending {
    id: TxId,
    reply: oneshot::Receiver<Result<Included, ChainError>>,
}

impl Pending {
    pub fn id(&self) -> TxId {
        self.id
    }

    pub async fn included(self) -> Result<Included, ChainError> {
        self.reply.await.map_err(|_| ChainError::Stopped)?
    }
}

impl ChainHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ChainError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| ChainError::Stopped)?;
        answer.await.map_err(|_| ChainError::Stopped)
    }

    /// Verifies the signature here, in the caller's task, then hands the
    /// transaction to the sequencer; the answer comes once its block is
    /// stored. Refusals at the mempool (full, nonce used) come at once.
    pub async fn send(&self, tx: SignedTx) -> Result<Pending, ChainError> {
        self.send_verified(Verified::check(tx)?).await
    }

    /// [`ChainHandle::send`] for many, their signatures verified in one
    /// batch (what a requester's node does with a block's worth of claims).
    pub async fn send_batch(&self, txs: Vec<SignedTx>) -> Vec<Result<Pending, ChainError>> {
        let mut out = Vec::with_capacity(txs.len());
        for tx in Verified::check_all(txs) {
            out.push(match tx {
                Ok(tx) => self.send_verified(tx).await,
                Err(e) => Err(e),
            });
        }
        out
    }

    async fn send_verified(&self, tx: Verified) -> Result<Pending, ChainError> {
        let id = tx.id();
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Submit {
                tx: Box::new(tx),
                reply,
            })
            .await
            .map_err(|_| ChainError::Stopped)?;
        Ok(Pending { id, reply: answer })
    }

    pub async fn submit(&self, tx: SignedTx) -> Result<Included, ChainError> {
        self.send(tx).await?.included().await
    }

    /// An account as of the last block (the height is that block's).
    pub async fn account(&self, id: AccountId) -> Result<(Height, Option<Account>), ChainError> {
        self.ask(|reply| Command::Account { id, reply }).await
    }

    pub async fn escrow(&self, job: JobId) -> Result<Option<Escrow>, ChainError> {
        self.ask(|reply| Command::Escrow { job, reply }).await
    }

    /// Up to `count` blocks from height `from` (at most
    /// [`BLOCKS_PER_QUERY_MAX`]).
    pub async fn blocks(&self, from: Height, count: usize) -> Result<Vec<StoredBlock>, ChainError> {
        self.ask(|reply| Command::Blocks { from, count, reply })
            .await?
    }

    pub async fn find_tx(&self, id: TxId) -> Result<Option<TxPlace>, ChainError> {
        self.ask(|reply| Command::FindTx { id, reply }).await?
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs `solo` on a thread of its own (it waits on the disk) and returns
/// the handle to it; must be called inside a tokio runtime. The thread
/// ends when every handle is dropped.
pub fn spawn_solo(solo: Solo) -> Result<ChainHandle, ChainError> {
    let (commands, rx) = mpsc::channel(COMMANDS_MAX);
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("chain".into())
        .spawn(move || run(solo, rx, runtime))
        .map_err(|e| ChainError::NotStored(format!("cannot start the chain's thread: {e}")))?;
    Ok(ChainHandle { commands })
}

fn run(mut solo: Solo, mut rx: mpsc::Receiver<Command>, runtime: tokio::runtime::Handle) {
    let mut waiters: HashMap<TxId, oneshot::Sender<Result<Included, ChainError>>> = HashMap::new();
    let mut last_block = Instant::now();
    loop {
        let gap_ms = if solo.waiting() > 0 {
            BLOCK_INTERVAL_MS
        } else {
            BLOCK_HEARTBEAT_MS
        };
        let due = last_block + Duration::from_millis(gap_ms);
        let now = Instant::now();
        if now < due && solo.waiting() < BLOCK_TXS_MAX {
            let wait = due - now;
            let command = runtime.block_on(async { tokio::time::timeout(wait, rx.recv()).await });
            match command {
                Ok(None) => return,
                Ok(Some(c)) => {
                    handle(&mut solo, &mut waiters, c);
                    continue;
                }
                Err(_elapsed) => {}
            }
        }
        last_block = Instant::now();
        let made = solo.make_block(now_ms());
        for id in solo.take_dropped() {
            if let Some(w) = waiters.remove(&id) {
                let _ = w.send(Err(ChainError::Dropped(id)));
            }
        }
        match made {
            Ok(made) => {
                for (id, receipt) in made.receipts.into_iter().enumerate().map(|(i, (id, r))| {
                    (
                        id,
                        TxPlace {
                            height: made.header.height,
                            index: i as u32,
                            receipt: r,
                        },
                    )
                }) {
                    if let Some(w) = waiters.remove(&id) {
                        let _ = w.send(Ok((id, receipt)));
                    }
                }
            }
            Err(e) => {
                // The block's transactions are gone with it: their senders
                // are told, and may send again.
                tracing::error!(target: "plexus::chain", "no block: {e}");
                let reason = e.to_string();
                let dropped: Vec<TxId> = waiters.keys().copied().collect();
                for id in dropped {
                    if solo.mempool_holds(&id) {
                        continue;
                    }
                    if let Some(w) = waiters.remove(&id) {
                        let _ = w.send(Err(ChainError::NotStored(reason.clone())));
                    }
                }
            }
        }
    }
}

fn handle(
    solo: &mut Solo,
    waiters: &mut HashMap<TxId, oneshot::Sender<Result<Included, ChainError>>>,
    command: Command,
) {
    match command {
        Command::Submit { tx, reply } => match solo.submit(*tx) {
            Ok(id) => {
                waiters.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        },
        Command::Account { id, reply } => {
            let state = solo.state();
            let _ = reply.send((state.height, state.account(&id).cloned()));
        }
        Command::Escrow { job, reply } => {
            let _ = reply.send(solo.state().escrows.get(&job).cloned());
        }
        Command::Blocks { from, count, reply } => {
            let top = solo.state().height;
            let count = count.min(BLOCKS_PER_QUERY_MAX) as u64;
            let blocks = (from.max(1)..from.max(1).saturating_add(count))
                .take_while(|h| *h <= top)
                .map(|h| solo.store().block(h)?.ok_or(ChainError::NoBlock(h)))
                .collect();
            let _ = reply.send(blocks);
        }
        Command::FindTx { id, reply } => {
            let _ = reply.send(solo.find_tx(&id));
        }
    }
}
