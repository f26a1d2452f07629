//! Pay: the requester's side of the ledger. A node started with a ledger
//! runs the solo chain (`chain`, its one embedded validator) and pays from
//! its own account, the ledger account of its identity key:
//!
//! - a job with a budget (`[requirements] budget`) locks it in escrow at
//!   `price_per_gfuel_max` before anything of it is sent; a requester that
//!   lacks the funds has the submission refused;
//! - when the job has ended (its end committed first), every provider
//!   whose result was accepted for a task is paid by one claim of that
//!   task, sent in blocks' worth, and then the rest of the escrow is
//!   released. A settled task can be reopened until the job ends (a
//!   provider who vouched for it caught), so claims wait for the end: a
//!   claim cannot be taken back.
//!
//! One actor owns the account's nonce and sends one command at a time, so
//! its transactions reach the chain in nonce order. Settling is
//! idempotent: a claim paid already is refused by the ledger, a released
//! escrow is skipped, so a node that stopped mid-way settles again at its
//! next start.
//!
//! A claim pays the job's `price_per_gfuel_max`, which the escrow holds,
//! not yet the price of each provider's own offer: the scheduler does not
//! carry the agreed price to the settled task's payees yet.

use crate::NodeError;
use chain::{ChainHandle, Receipt};
use ed25519_dalek::SigningKey;
use ledger::{AccountId, BLOCK_TXS_MAX, Credits, Effect, SignedTx, Tx};
use net::{Keypair, PeerId};
use tokio::sync::{mpsc, oneshot};
use types::JobId;

/// Commands that may wait for the pay actor.
pub const PAY_COMMANDS_MAX: usize = 1_024;
/// Blocks an escrow stays locked before anyone may release it, if the
/// requester never does: about a day of heartbeats (`BLOCK_HEARTBEAT_MS`).
pub const ESCROW_BLOCKS: u64 = 20_000;
/// The chain of a node's own ledger.
pub const CHAIN_ID: &str = "plexus-solo";

/// A node's ledger: the solo chain, and what its genesis gives the node.
#[derive(Clone, Debug)]
pub struct PayConfig {
    /// Credits the genesis gives the node's own account (a local network's
    /// faucet; a public network's genesis would come from a file).
    pub mint: Credits,
}

/// The ledger account of a libp2p ed25519 identity, and its signing key.
pub fn signing_key(keypair: &Keypair) -> Result<SigningKey, NodeError> {
    let ed = keypair
        .clone()
        .try_into_ed25519()
        .map_err(|_| NodeError::Job("the node's identity is not an ed25519 key".into()))?;
    let secret: [u8; 32] = ed
        .secret()
        .as_ref()
        .try_into()
        .map_err(|_| NodeError::Job("an ed25519 secret not of 32 bytes".into()))?;
    Ok(SigningKey::from_bytes(&secret))
}

/// The ledger account of a peer: its ed25519 public key, read out of its
/// peer id.
pub fn account_of_peer(peer: &PeerId) -> Option<AccountId> {
    net::ed25519_public_key(peer).map(AccountId)
}

/// One claim: a provider's accepted result for a task, at `fuel`.
#[derive(Clone, Debug)]
pub struct ClaimOf {
    pub task: u64,
    pub provider: AccountId,
    pub fuel: u64,
}

/// What settling a job did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    pub claims_paid: u64,
    pub claims_refused: u64,
    pub paid: Credits,
    pub refunded: Credits,
}

enum Command {
    Lock {
        job: JobId,
        amount: Credits,
        price_per_gfuel: u64,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    Settle {
        job: JobId,
        price_per_gfuel: u64,
        claims: Vec<ClaimOf>,
    },
}

/// The way to the pay actor; cheap to clone.
#[derive(Clone)]
pub struct Pay {
    commands: mpsc::Sender<Command>,
    pub chain: ChainHandle,
    pub account: AccountId,
}

impl Pay {
    pub fn spawn(chain: ChainHandle, key: SigningKey) -> Pay {
        let (commands, rx) = mpsc::channel(PAY_COMMANDS_MAX);
        let account = AccountId::of(&key);
        tokio::spawn(run(chain.clone(), key, rx));
        Pay {
            commands,
            chain,
            account,
        }
    }

    /// Locks `amount` for `job` and answers once the block holding it is
    /// stored: refused (with the ledger's reason) when the funds lack.
    pub async fn lock(
        &self,
        job: JobId,
        amount: Credits,
        price_per_gfuel: u64,
    ) -> Result<(), NodeError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Lock {
                job,
                amount,
                price_per_gfuel,
                reply,
            })
            .await
            .map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)?
    }

    /// Queues the job's claims and the release of its escrow. Full: an
    /// error, and the job is settled at the node's next start.
    pub fn settle(
        &self,
        job: JobId,
        price_per_gfuel: u64,
        claims: Vec<ClaimOf>,
    ) -> Result<(), NodeError> {
        self.commands
            .try_send(Command::Settle {
                job,
                price_per_gfuel,
                claims,
            })
            .map_err(|_| {
                NodeError::Job(format!(
                    "{PAY_COMMANDS_MAX} settlements wait already (PAY_COMMANDS_MAX)"
                ))
            })
    }
}

async fn run(chain: ChainHandle, key: SigningKey, mut rx: mpsc::Receiver<Command>) {
    let me = AccountId::of(&key);
    while let Some(command) = rx.recv().await {
        match command {
            Command::Lock {
                job,
                amount,
                price_per_gfuel,
                reply,
            } => {
                let _ = reply.send(lock(&chain, &key, me, job, amount, price_per_gfuel).await);
            }
            Command::Settle {
                job,
                price_per_gfuel,
                claims,
            } => match settle(&chain, &key, me, &job, price_per_gfuel, claims).await {
                Ok(s) => tracing::info!(
                    target: "plexus::pay",
                    job = %job,
                    "paid {} to providers in {} claims ({} refused), {} refunded",
                    s.paid, s.claims_paid, s.claims_refused, s.refunded
                ),
                Err(e) => tracing::error!(target: "plexus::pay", job = %job, "not settled: {e}"),
            },
        }
    }
}

fn chain_error(e: chain::ChainError) -> NodeError {
    NodeError::Job(format!("ledger: {e}"))
}

/// The account's next nonce, from the chain: nothing of this actor's is
/// waiting when a command starts, so the chain's count is the truth.
async fn next_nonce(chain: &ChainHandle, me: AccountId) -> Result<u64, NodeError> {
    let (_, account) = chain.account(me).await.map_err(chain_error)?;
    Ok(account.map_or(0, |a| a.nonce))
}

async fn lock(
    chain: &ChainHandle,
    key: &SigningKey,
    me: AccountId,
    job: JobId,
    amount: Credits,
    price_per_gfuel: u64,
) -> Result<(), NodeError> {
    let (height, account) = chain.account(me).await.map_err(chain_error)?;
    let have = account.as_ref().map_or(Credits(0), |a| a.balance);
    if have < amount {
        return Err(NodeError::Job(format!(
            "the budget of {} credits cannot be locked: this node's account holds {} \
             (account {}); lower requirements.budget or fund the account",
            amount.0,
            have.0,
            hex(&me.0)
        )));
    }
    let nonce = account.map_or(0, |a| a.nonce);
    let tx = Tx::EscrowLock {
        job: job.clone(),
        amount,
        price_per_gfuel,
        expires_at: height + ESCROW_BLOCKS,
    };
    let tx = SignedTx::sign(key, nonce, tx).map_err(|e| NodeError::Job(e.to_string()))?;
    let (_, place) = chain.submit(tx).await.map_err(chain_error)?;
    match place.receipt {
        Receipt::Applied(_) => {
            tracing::info!(target: "plexus::pay", job = %job, "locked {} credits in escrow at block {}", amount.0, place.height);
            Ok(())
        }
        Receipt::Refused(reason) => Err(NodeError::Job(format!(
            "the budget cannot be locked in escrow: {reason}"
        ))),
    }
}

async fn settle(
    chain: &ChainHandle,
    key: &SigningKey,
    me: AccountId,
    job: &JobId,
    price_per_gfuel: u64,
    claims: Vec<ClaimOf>,
) -> Result<Settled, NodeError> {
    let mut out = Settled::default();
    match chain.escrow(job.clone()).await.map_err(chain_error)? {
        Some(e) if e.owner == me && !e.released => {}
        _ => return Ok(out),
    }
    let mut nonce = next_nonce(chain, me).await?;
    let sign = |nonce: u64, tx: Tx| {
        SignedTx::sign(key, nonce, tx).map_err(|e| NodeError::Job(e.to_string()))
    };
    for batch in claims.chunks(BLOCK_TXS_MAX) {
        let mut txs = Vec::with_capacity(batch.len());
        for c in batch {
            let tx = Tx::Claim {
                job: job.clone(),
                task: c.task,
                provider: c.provider,
                fuel: c.fuel,
                price_per_gfuel,
            };
            txs.push(sign(nonce, tx)?);
            nonce += 1;
        }
        let mut pending = Vec::with_capacity(txs.len());
        for sent in chain.send_batch(txs).await {
            // A refusal at the door (a full mempool) leaves the nonces
            // after it unused: stop here and count again from the chain.
            match sent {
                Ok(p) => pending.push(p),
                Err(e) => {
                    tracing::warn!(target: "plexus::pay", job = %job, "a claim not taken: {e}");
                    break;
                }
            }
        }
        let all = pending.len() == batch.len();
        for p in pending {
            let (_, place) = p.included().await.map_err(chain_error)?;
            match place.receipt {
                Receipt::Applied(Effect::Paid { amount, .. }) => {
                    out.claims_paid += 1;
                    out.paid = Credits(out.paid.0 + amount.0);
                }
                _ => out.claims_refused += 1,
            }
        }
        if !all {
            return Err(NodeError::Job(
                "the chain took only part of the claims; the job is settled again at the next start".into(),
            ));
        }
    }
    let release = sign(nonce, Tx::EscrowRelease { job: job.clone() })?;
    let (_, place) = chain.submit(release).await.map_err(chain_error)?;
    match place.receipt {
        Receipt::Applied(Effect::Refunded { amount }) => out.refunded = amount,
        Receipt::Applied(_) => {}
        Receipt::Refused(reason) => {
            return Err(NodeError::Job(format!("the escrow not released: {reason}")));
        }
    }
    Ok(out)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An account as the API shows it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AccountView {
    pub account: String,
    /// The height of the last block applied.
    pub height: u64,
    pub balance: u64,
    pub stake: u64,
    pub unbonding: u64,
    pub nonce: u64,
}

/// A job's escrow as the API shows it: what it locked, what each provider
/// was paid (`paid` is their sum), what is left or was refunded.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct EscrowView {
    pub job: String,
    pub owner: String,
    pub locked: u64,
    pub left: u64,
    pub price_per_gfuel: u64,
    pub expires_at: u64,
    pub released: bool,
    pub claims: u64,
    /// (provider account, credits paid), highest first.
    pub earned: Vec<(String, u64)>,
    pub paid: u64,
    /// Given back to the owner at release (0 while open).
    pub refunded: u64,
}

/// A block as the API shows it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BlockView {
    pub height: u64,
    pub hash: String,
    pub prev: String,
    pub time_ms: u64,
    pub app_hash: String,
    pub proposer: String,
    /// (transaction id, its kind, what it did).
    pub txs: Vec<(String, String, String)>,
}

/// A transaction's place as the API shows it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TxView {
    pub id: String,
    pub height: u64,
    pub index: u32,
    pub receipt: String,
}

/// Parses an account: 64 hex digits, or an ed25519 peer id.
pub fn parse_account(s: &str) -> Result<AccountId, NodeError> {
    if let Ok(peer) = s.parse::<PeerId>() {
        return account_of_peer(&peer)
            .ok_or_else(|| NodeError::Job(format!("peer {s} has no ed25519 key")));
    }
    parse_hex32(s)
        .map(AccountId)
        .ok_or_else(|| NodeError::Job(format!("{s:?} is neither a peer id nor 64 hex digits")))
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn receipt_text(r: &Receipt) -> String {
    match r {
        Receipt::Applied(Effect::Moved) => "applied".into(),
        Receipt::Applied(Effect::Paid { provider, amount }) => {
            format!("paid {} to {}", amount.0, hex(&provider.0))
        }
        Receipt::Applied(Effect::Refunded { amount }) => format!("refunded {}", amount.0),
        Receipt::Applied(Effect::Slashed {
            amount,
            to_reporter,
        }) => format!("slashed {} ({} to the reporter)", amount.0, to_reporter.0),
        Receipt::Refused(reason) => format!("refused: {reason}"),
    }
}

fn kind(tx: &Tx) -> &'static str {
    match tx {
        Tx::Transfer { .. } => "transfer",
        Tx::Stake { .. } => "stake",
        Tx::Unstake { .. } => "unstake",
        Tx::EscrowLock { .. } => "escrow-lock",
        Tx::Claim { .. } => "claim",
        Tx::EscrowRelease { .. } => "escrow-release",
        Tx::Slash { .. } => "slash",
    }
}

impl Pay {
    pub async fn account_view(&self, id: AccountId) -> Result<AccountView, NodeError> {
        let (height, a) = self.chain.account(id).await.map_err(chain_error)?;
        let a = a.unwrap_or_default();
        Ok(AccountView {
            account: hex(&id.0),
            height,
            balance: a.balance.0,
            stake: a.stake.0,
            unbonding: a.unbonding.iter().map(|(_, c)| c.0).sum(),
            nonce: a.nonce,
        })
    }

    pub async fn escrow_view(&self, job: &str) -> Result<EscrowView, NodeError> {
        let e = self
            .chain
            .escrow(JobId(job.into()))
            .await
            .map_err(chain_error)?
            .ok_or_else(|| NodeError::UnknownJob(format!("{job} (no escrow on the ledger)")))?;
        let mut earned: Vec<(String, u64)> = e
            .earned
            .iter()
            .map(|(p, nano)| (hex(&p.0), whole(*nano)))
            .collect();
        earned.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let paid: u64 = earned.iter().map(|(_, c)| c).sum();
        Ok(EscrowView {
            job: job.into(),
            owner: hex(&e.owner.0),
            locked: e.locked.0,
            left: e.left.0,
            price_per_gfuel: e.price_per_gfuel,
            expires_at: e.expires_at,
            released: e.released,
            claims: e.claimed.len() as u64,
            earned,
            paid,
            refunded: if e.released {
                e.locked.0.saturating_sub(paid)
            } else {
                0
            },
        })
    }

    pub async fn blocks_view(&self, from: u64, count: usize) -> Result<Vec<BlockView>, NodeError> {
        let blocks = self.chain.blocks(from, count).await.map_err(chain_error)?;
        blocks
            .into_iter()
            .map(|(b, receipts)| {
                let txs = b
                    .txs
                    .iter()
                    .zip(&receipts)
                    .map(|(t, r)| {
                        let id = t.id().map_err(|e| NodeError::Job(e.to_string()))?;
                        Ok((id.to_string(), kind(&t.tx).to_owned(), receipt_text(r)))
                    })
                    .collect::<Result<_, NodeError>>()?;
                Ok(BlockView {
                    height: b.header.height,
                    hash: b
                        .header
                        .hash()
                        .map_err(|e| NodeError::Job(e.to_string()))?
                        .to_string(),
                    prev: b.header.prev.to_string(),
                    time_ms: b.header.time_ms,
                    app_hash: hex(&b.header.app_hash),
                    proposer: hex(&b.header.proposer.0),
                    txs,
                })
            })
            .collect()
    }

    pub async fn tx_view(&self, id: &str) -> Result<TxView, NodeError> {
        let tx_id = parse_hex32(id).map(ledger::TxId).ok_or_else(|| {
            NodeError::Job(format!("{id:?} is not a transaction id (64 hex digits)"))
        })?;
        let place = self
            .chain
            .find_tx(tx_id)
            .await
            .map_err(chain_error)?
            .ok_or_else(|| NodeError::UnknownJob(format!("transaction {id}")))?;
        Ok(TxView {
            id: id.into(),
            height: place.height,
            index: place.index,
            receipt: receipt_text(&place.receipt),
        })
    }
}

/// Whole credits of an exact amount (billionths), rounded down as the
/// ledger pays them.
fn whole(nanocredits: u128) -> u64 {
    u64::try_from(nanocredits / 1_000_000_000).unwrap_or(u64::MAX)
}
