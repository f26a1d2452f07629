//! Claims per second through the ledger's state machine alone: one
//! requester's escrow, 100,000 claims of verified tasks by 100 providers,
//! signed beforehand, applied in blocks of 1,000 (each signature checked,
//! the supply checked after every block). The solo validator's ceiling,
//! before storage and the network.
//!
//!     cargo run --release -p ledger --example claims

use ed25519_dalek::SigningKey;
use ledger::{AccountId, Block, Credits, SignedTx, State, Tx};
use std::time::Instant;
use types::JobId;

const CLAIMS: u64 = 100_000;
const BLOCK: usize = 1_000;

fn main() -> Result<(), ledger::LedgerError> {
    let requester = SigningKey::from_bytes(&[7; 32]);
    let providers: Vec<AccountId> = (0..100u8)
        .map(|n| AccountId::of(&SigningKey::from_bytes(&[n.wrapping_add(100); 32])))
        .collect();
    let mut state = State::genesis(&[(AccountId::of(&requester), Credits(10_000_000_000))])?;
    let job = JobId("bench".into());
    let lock = SignedTx::sign(
        &requester,
        0,
        Tx::EscrowLock {
            job: job.clone(),
            amount: Credits(1_000_000_000),
            price_per_gfuel: 3,
            expires_at: 1_000_000,
        },
    )?;
    state.apply_block(&Block {
        height: 1,
        txs: vec![lock],
    })?;
    let signing = Instant::now();
    let claims: Vec<SignedTx> = (0..CLAIMS)
        .map(|task| {
            let tx = Tx::Claim {
                job: job.clone(),
                task,
                provider: providers[(task % 100) as usize],
                fuel: 100_000_000 + task,
                price_per_gfuel: 3,
            };
            SignedTx::sign(&requester, task + 1, tx)
        })
        .collect::<Result<_, _>>()?;
    let signed_s = signing.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut paid = 0u64;
    for (n, chunk) in claims.chunks(BLOCK).enumerate() {
        let block = Block {
            height: 2 + n as u64,
            txs: chunk.to_vec(),
        };
        paid += state
            .apply_block(&block)?
            .iter()
            .filter(|r| r.is_ok())
            .count() as u64;
        state.check_supply()?;
    }
    let secs = started.elapsed().as_secs_f64();
    let hashing = Instant::now();
    let hash = state.app_hash();
    println!(
        "{paid} of {CLAIMS} claims paid in {secs:.3} s: {:.0} claims/s applied (blocks of {BLOCK}, signatures checked); signing them took {signed_s:.3} s; app_hash {:02x}{:02x}{:02x}{:02x}… in {:.1} ms",
        paid as f64 / secs,
        hash[0],
        hash[1],
        hash[2],
        hash[3],
        hashing.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
