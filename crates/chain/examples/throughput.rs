//! How many claims per second the solo sequencer takes, and how long a
//! claim waits for its block (its time to finality: with one validator a
//! stored block is final).
//!
//! `cargo run --release -p chain --example throughput [CLAIMS]`
//!
//! One requester sends CLAIMS claims (default 50,000; one per task, for
//! 1,000 providers) as fast as the chain takes them: signed beforehand, as
//! its node signs each as its task is verified; each send verifies the
//! signature in the sender's task; blocks are made every 200 ms or when a
//! block's worth waits, each stored with `synchronous=FULL`.

use chain::{Genesis, Receipt, SIGNER_TXS_MAX, Solo, spawn_solo};
use ed25519_dalek::SigningKey;
use ledger::{AccountId, Credits, Effect, SignedTx, Tx};
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};
use types::JobId;

const SEND_BATCH: usize = 1_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let claims: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 50_000,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(claims))
}

async fn run(claims: u64) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let validator = SigningKey::from_bytes(&[1; 32]);
    let requester = SigningKey::from_bytes(&[2; 32]);
    let genesis = Genesis {
        chain_id: "bench".into(),
        allocations: vec![(AccountId::of(&requester), Credits(u64::MAX / 2))],
        validators: vec![AccountId::of(&validator)],
    };
    let chain = spawn_solo(Solo::open(
        &dir.path().join("chain.db"),
        genesis,
        validator,
    )?)?;
    let job = JobId("bench".into());
    let lock = Tx::EscrowLock {
        job: job.clone(),
        amount: Credits(claims * 100),
        price_per_gfuel: 10,
        expires_at: 1_000_000,
    };
    chain.submit(SignedTx::sign(&requester, 0, lock)?).await?;

    let providers: Vec<AccountId> = (0..1_000u32)
        .map(|i| {
            let mut seed = [3u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            AccountId::of(&SigningKey::from_bytes(&seed))
        })
        .collect();
    let signing = Instant::now();
    let txs: Vec<SignedTx> = (0..claims)
        .map(|task| {
            let tx = Tx::Claim {
                job: job.clone(),
                task,
                provider: providers[(task % 1_000) as usize],
                fuel: 1_000_000_000,
                price_per_gfuel: 10,
            };
            SignedTx::sign(&requester, 1 + task, tx)
        })
        .collect::<Result<_, _>>()?;
    let signing = signing.elapsed();

    let start = Instant::now();
    let mut out: VecDeque<(Instant, chain::Pending)> = VecDeque::new();
    let mut waits: Vec<Duration> = Vec::with_capacity(claims as usize);
    let mut heights = BTreeSet::new();
    let mut paid = 0u64;
    let mut settle = |sent: Instant, included: chain::Included| {
        waits.push(sent.elapsed());
        heights.insert(included.1.height);
        if matches!(included.1.receipt, Receipt::Applied(Effect::Paid { .. })) {
            paid += 1;
        }
    };
    // Sent a thousand at a time, their signatures verified in one batch,
    // as a requester's node sends the claims of its verified tasks.
    let mut txs = txs.into_iter().peekable();
    while txs.peek().is_some() {
        let batch: Vec<SignedTx> = txs.by_ref().take(SEND_BATCH).collect();
        // One signer may have SIGNER_TXS_MAX waiting: past that, wait for
        // the oldest before sending more.
        while out.len() + batch.len() > SIGNER_TXS_MAX {
            let Some((sent, p)) = out.pop_front() else {
                break;
            };
            settle(sent, p.included().await?);
        }
        let now = Instant::now();
        for p in chain.send_batch(batch).await {
            out.push_back((now, p?));
        }
    }
    while let Some((sent, p)) = out.pop_front() {
        settle(sent, p.included().await?);
    }
    let elapsed = start.elapsed();

    // Time to finality under a load the chain keeps up with: 50 claims
    // every 10 ms (5,000 claims/s) for two seconds.
    // Each claim's wait is taken when its answer comes, by a task of its
    // own, so the sender's pace does not bend it.
    let mut paced = Vec::new();
    let mut nonce = 1 + claims;
    for round in 0..200u64 {
        let batch: Vec<SignedTx> = (0..50u64)
            .map(|i| {
                let tx = Tx::Claim {
                    job: job.clone(),
                    task: claims + round * 50 + i,
                    provider: providers[i as usize],
                    fuel: 1_000_000_000,
                    price_per_gfuel: 10,
                };
                nonce += 1;
                SignedTx::sign(&requester, nonce - 1, tx)
            })
            .collect::<Result<_, _>>()?;
        let now = Instant::now();
        for p in chain.send_batch(batch).await {
            let p = p?;
            paced.push(tokio::spawn(async move {
                p.included().await.map(|_| now.elapsed())
            }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut paced_waits = Vec::with_capacity(paced.len());
    for wait in paced {
        paced_waits.push(wait.await??);
    }
    paced_waits.sort();
    let paced_p50 = paced_waits[paced_waits.len() / 2].as_secs_f64() * 1e3;
    waits.sort();
    let pct = |q: f64| waits[((waits.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    let db_bytes: u64 = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "solo sequencer: {claims} claims in {:.2} s = {:.0} claims/s; {paid} paid; {} blocks \
         ({:.0} claims a block); wait for the block at that load p50 {:.0} ms, p99 {:.0} ms; \
         time to finality at 5,000 claims/s p50 {paced_p50:.0} ms; \
         requester signing {:.0} claims/s; database {:.1} MiB",
        elapsed.as_secs_f64(),
        claims as f64 / elapsed.as_secs_f64(),
        heights.len(),
        claims as f64 / heights.len().max(1) as f64,
        pct(0.5),
        pct(0.99),
        claims as f64 / signing.as_secs_f64(),
        db_bytes as f64 / (1 << 20) as f64,
    );
    if paid != claims {
        return Err(format!("{paid} of {claims} claims paid").into());
    }
    Ok(())
}
