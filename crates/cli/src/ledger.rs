//! `plexus balance` and `plexus ledger`: the books of the local node's
//! ledger (its solo chain): accounts, escrows, blocks, transactions.

use crate::client::{Client, default_api};
use clap::{Args, Subcommand};
use node::pay::{AccountView, BlockView, EscrowView, TxView};

#[derive(Args)]
#[command(
    about = "Show an account's balance on the local node's ledger (the node's own by default)",
    after_help = "Examples:\n  plexus balance\n  plexus balance 12D3KooW...   (a provider, by its peer id)\n  plexus balance --json"
)]
pub struct BalanceArgs {
    /// An account: a peer id, or 64 hex digits [default: the node's own]
    account: Option<String>,
    #[arg(long, value_name = "URL", default_value_t = default_api())]
    api: String,
    #[arg(long)]
    json: bool,
}

pub fn balance(a: BalanceArgs) -> anyhow::Result<u8> {
    let client = Client::new(&a.api);
    let view: AccountView = match &a.account {
        Some(account) => client.get(&format!("/api/ledger/accounts/{account}"))?,
        None => client.get("/api/ledger")?,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(0);
    }
    println!("account   {}", view.account);
    println!("balance   {} credits", view.balance);
    if view.stake > 0 || view.unbonding > 0 {
        println!(
            "stake     {} credits ({} unbonding)",
            view.stake, view.unbonding
        );
    }
    println!("as of     block {}", view.height);
    Ok(0)
}

#[derive(Args)]
#[command(
    about = "Read the local node's ledger: blocks, transactions, a job's escrow",
    after_help = "Examples:\n  plexus ledger blocks --from 1 --count 10\n  plexus ledger tx 3f9a...\n  plexus ledger escrow 6c1d2e3f4a5b6c7d"
)]
pub struct LedgerArgs {
    #[command(subcommand)]
    what: What,
    #[arg(long, value_name = "URL", default_value_t = default_api(), global = true)]
    api: String,
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum What {
    /// Blocks from a height, with each transaction and what it did
    Blocks {
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// At most 100 (BLOCKS_PER_QUERY_MAX)
        #[arg(long, default_value_t = 20)]
        count: usize,
    },
    /// Where a transaction went and what it did
    Tx { id: String },
    /// A job's escrow: locked, paid to each provider, refunded
    Escrow { job: String },
}

pub fn ledger(a: LedgerArgs) -> anyhow::Result<u8> {
    let client = Client::new(&a.api);
    match a.what {
        What::Blocks { from, count } => {
            let blocks: Vec<BlockView> =
                client.get(&format!("/api/ledger/blocks?from={from}&count={count}"))?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&blocks)?);
                return Ok(0);
            }
            for b in &blocks {
                println!(
                    "block {:>6}  {}…  {} transactions  app_hash {}…",
                    b.height,
                    &b.hash[..16],
                    b.txs.len(),
                    &b.app_hash[..16]
                );
                for (id, kind, what) in &b.txs {
                    println!("  {}…  {kind:<14} {what}", &id[..16]);
                }
            }
        }
        What::Tx { id } => {
            let tx: TxView = client.get(&format!("/api/ledger/txs/{id}"))?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&tx)?);
            } else {
                println!("block {} index {}: {}", tx.height, tx.index, tx.receipt);
            }
        }
        What::Escrow { job } => {
            let e: EscrowView = client.get(&format!("/api/ledger/escrows/{job}"))?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&e)?);
                return Ok(0);
            }
            print_escrow(&e);
        }
    }
    Ok(0)
}

pub fn print_escrow(e: &EscrowView) {
    println!(
        "escrow of job {}: {} credits locked at {} per Gfuel, {} claims",
        e.job, e.locked, e.price_per_gfuel, e.claims
    );
    for (provider, credits) in &e.earned {
        println!("  provider {}…  earned {credits} credits", &provider[..16]);
    }
    if e.released {
        println!(
            "  paid {} credits to providers, {} refunded to the requester",
            e.paid, e.refunded
        );
    } else {
        println!(
            "  paid {} credits so far, {} left in escrow",
            e.paid, e.left
        );
    }
}
