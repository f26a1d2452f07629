use super::*;
use ed25519_dalek::SigningKey;
use ledger::{AccountId, Credits, Effect, SignedTx, State, Tx};
use std::io::BufRead;
use types::JobId;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n.wrapping_add(7); 32])
}

fn id(n: u8) -> AccountId {
    AccountId::of(&key(n))
}

const VALIDATOR: u8 = 0;
const REQUESTER: u8 = 1;

fn genesis() -> Genesis {
    Genesis {
        chain_id: "plexus-test".into(),
        allocations: vec![(id(REQUESTER), Credits(1_000_000)), (id(2), Credits(50))],
        validators: vec![id(VALIDATOR)],
    }
}

fn open(dir: &std::path::Path) -> Solo {
    Solo::open(&dir.join("chain.db"), genesis(), key(VALIDATOR)).expect("opens")
}

fn signed(state: &State, by: u8, nonce_ahead: u64, tx: Tx) -> Verified {
    let nonce = state.next_nonce(&id(by)) + nonce_ahead;
    Verified::check(SignedTx::sign(&key(by), nonce, tx).expect("signs")).expect("verifies")
}

fn lock(job: &str, amount: u64) -> Tx {
    Tx::EscrowLock {
        job: JobId(job.into()),
        amount: Credits(amount),
        price_per_gfuel: 10,
        expires_at: 1_000_000,
    }
}

fn claim(job: &str, task: u64, provider: u8) -> Tx {
    Tx::Claim {
        job: JobId(job.into()),
        task,
        provider: id(provider),
        fuel: 1_000_000_000,
        price_per_gfuel: 10,
    }
}

/// Locks a job's escrow (10 credits a task and 100 to spare) and claims
/// `tasks` tasks for providers 3..6, one block of claims per ten.
fn pay_a_job(solo: &mut Solo, job: &str, tasks: u64) {
    let tx = signed(solo.state(), REQUESTER, 0, lock(job, 10 * tasks + 100));
    solo.submit(tx).expect("admitted");
    solo.make_block(1).expect("block");
    for chunk in (0..tasks).collect::<Vec<_>>().chunks(10) {
        for (i, task) in chunk.iter().enumerate() {
            let provider = 3 + (*task % 3) as u8;
            let tx = signed(
                solo.state(),
                REQUESTER,
                i as u64,
                claim(job, *task, provider),
            );
            solo.submit(tx).expect("admitted");
        }
        let made = solo.make_block(2).expect("block");
        for (_, receipt) in &made.receipts {
            assert!(
                matches!(receipt, Receipt::Applied(Effect::Paid { .. })),
                "{receipt:?}"
            );
        }
    }
}

/// Every block stored, applied again from the genesis on a fresh state,
/// gives each header's app_hash: the chain on disk is its own proof.
fn replay(solo: &Solo) -> State {
    let mut state = State::genesis(&genesis().allocations).expect("genesis");
    let mut prev = BlockHash::default();
    for h in 1..=solo.state().height {
        let (block, receipts) = solo.store().block(h).expect("reads").expect("stored");
        assert_eq!(block.header.prev, prev, "block {h} names its parent");
        block
            .commit
            .verify(&block.header.hash().expect("hash"), &[id(VALIDATOR)])
            .expect("signed by the validator");
        let again: Vec<Receipt> = state
            .apply_block(&block.ledger_block())
            .expect("applies")
            .into_iter()
            .map(Receipt::from)
            .collect();
        assert_eq!(again, receipts, "block {h}'s receipts");
        assert_eq!(
            state.app_hash(),
            block.header.app_hash,
            "block {h}'s app_hash"
        );
        prev = block.header.hash().expect("hash");
    }
    state
}

#[test]
fn blocks_and_the_state_survive_a_reopen_and_replay_to_the_same_hashes() {
    let dir = tempfile::tempdir().expect("dir");
    let mut solo = open(dir.path());
    pay_a_job(&mut solo, "j1", 35);
    let before = solo.state().clone();
    assert_eq!(
        before.balance(&id(3)),
        Credits(12 * 10),
        "tasks 0,3,..,33 paid 10 each"
    );
    drop(solo);
    let solo = open(dir.path());
    assert_eq!(*solo.state(), before, "the state read back is the state");
    assert_eq!(replay(&solo), before);
}

#[test]
fn a_transaction_stored_but_never_answered_is_refused_when_sent_again_and_found_in_its_block() {
    let dir = tempfile::tempdir().expect("dir");
    let mut solo = open(dir.path());
    pay_a_job(&mut solo, "j1", 1);
    let tx = signed(solo.state(), REQUESTER, 0, claim("j1", 1, 4));
    let tx_id = tx.id();
    solo.submit(tx.clone()).expect("admitted");
    solo.make_block(3).expect("stored");
    // Killed here, before the submitter heard: it sends again after the
    // restart.
    drop(solo);
    let mut solo = open(dir.path());
    let paid = solo.state().balance(&id(4));
    assert!(matches!(solo.submit(tx), Err(ChainError::InBlock { id, .. }) if id == tx_id));
    let place = solo.find_tx(&tx_id).expect("reads").expect("found");
    assert_eq!(place.height, solo.state().height);
    assert!(
        matches!(place.receipt, Receipt::Applied(Effect::Paid { amount, .. }) if amount == Credits(10))
    );
    solo.make_block(4).expect("an empty block");
    assert_eq!(solo.state().balance(&id(4)), paid, "paid once");

    // A transaction the ledger refused used no nonce, but it had its block:
    // sent again, it is refused at the door, never put in a second one.
    let mut too_dear = claim("j1", 2, 4);
    if let Tx::Claim {
        price_per_gfuel, ..
    } = &mut too_dear
    {
        *price_per_gfuel = 11;
    }
    let too_dear = signed(solo.state(), REQUESTER, 0, too_dear);
    solo.submit(too_dear.clone()).expect("admitted");
    let made = solo.make_block(5).expect("stored");
    assert!(matches!(&made.receipts[0].1, Receipt::Refused(r) if r.contains("above")));
    let err = solo.submit(too_dear).expect_err("refused");
    assert!(
        matches!(err, ChainError::InBlock { height, .. } if height == made.header.height),
        "{err}"
    );
    // The same claim at the agreed price, under the nonce still free, goes in.
    let agreed = signed(solo.state(), REQUESTER, 0, claim("j1", 2, 4));
    solo.submit(agreed).expect("admitted");
    let made = solo.make_block(6).expect("stored");
    assert!(matches!(
        made.receipts[0].1,
        Receipt::Applied(Effect::Paid { .. })
    ));
}

#[test]
fn the_mempool_holds_no_transaction_twice_no_used_or_taken_nonce_and_no_more_than_its_bound() {
    let dir = tempfile::tempdir().expect("dir");
    let mut solo = open(dir.path());
    let a = signed(
        solo.state(),
        2,
        0,
        Tx::Transfer {
            to: id(3),
            amount: Credits(1),
        },
    );
    solo.submit(a.clone()).expect("admitted");
    assert!(matches!(solo.submit(a), Err(ChainError::Duplicate(_))));
    let same_nonce = signed(
        solo.state(),
        2,
        0,
        Tx::Transfer {
            to: id(4),
            amount: Credits(1),
        },
    );
    assert!(matches!(
        solo.submit(same_nonce.clone()),
        Err(ChainError::NonceTaken(0))
    ));
    solo.make_block(1).expect("block");
    assert!(matches!(
        solo.submit(same_nonce),
        Err(ChainError::NonceUsed { nonce: 0, next: 1 })
    ));
    let bad = SignedTx {
        nonce: 9,
        ..SignedTx::sign(&key(2), 1, Tx::Stake { amount: Credits(1) }).expect("signs")
    };
    assert!(matches!(
        Verified::check(bad),
        Err(ChainError::Refused(ledger::LedgerError::BadSignature))
    ));

    let mut pool = Mempool::default();
    let state = State::genesis(&[]).expect("genesis");
    // Built by hand (not `Verified::check`) to fill the pool quickly: the
    // bounds are what is tested here.
    let stake = |by: u8, nonce: u64| {
        Verified::unchecked_for_tests(
            SignedTx::sign(&key(by), nonce, Tx::Stake { amount: Credits(1) }).expect("signs"),
        )
    };
    let signers = (MEMPOOL_TXS_MAX / SIGNER_TXS_MAX) as u8;
    for by in 0..signers {
        for nonce in 0..SIGNER_TXS_MAX as u64 {
            pool.admit(&state, stake(9 + by, nonce)).expect("room");
        }
        let err = pool
            .admit(&state, stake(9 + by, SIGNER_TXS_MAX as u64))
            .expect_err("this signer's share is full");
        assert!(err.to_string().contains("SIGNER_TXS_MAX"), "{err}");
    }
    let err = pool.admit(&state, stake(100, 0)).expect_err("full");
    assert!(err.to_string().contains("MEMPOOL_TXS_MAX"), "{err}");
    let (taken, dropped) = pool.take(&state, ledger::BLOCK_TXS_MAX);
    assert_eq!((taken.len(), dropped.len()), (ledger::BLOCK_TXS_MAX, 0));
    assert_eq!(pool.len(), MEMPOOL_TXS_MAX - ledger::BLOCK_TXS_MAX);
    pool.admit(&state, stake(100, 0)).expect("room again");
}

#[test]
fn each_signers_transactions_leave_the_mempool_in_nonce_order_and_a_gap_waits() {
    let mut pool = Mempool::default();
    let state = State::genesis(&[]).expect("genesis");
    let tx = |by: u8, nonce: u64| {
        Verified::check(
            SignedTx::sign(&key(by), nonce, Tx::Stake { amount: Credits(1) }).expect("signs"),
        )
        .expect("verifies")
    };
    for (by, nonce) in [(1, 2), (2, 0), (1, 1), (1, 0), (1, 5), (2, 1)] {
        pool.admit(&state, tx(by, nonce)).expect("admitted");
    }
    let (taken, _) = pool.take(&state, 100);
    let order: Vec<(AccountId, u64)> = taken
        .iter()
        .map(|v| (v.tx().signer, v.tx().nonce))
        .collect();
    assert_eq!(
        order,
        vec![(id(2), 0), (id(2), 1), (id(1), 0), (id(1), 1), (id(1), 2)],
        "signer 2 came first with the nonce it was at; signer 1 from 0 up; 5 waits for 3 and 4"
    );
    assert_eq!(pool.len(), 1);
    // A block's worth at most, cut inside a signer's run.
    let mut pool = Mempool::default();
    for nonce in 0..5 {
        pool.admit(&state, tx(3, nonce)).expect("admitted");
    }
    let (taken, _) = pool.take(&state, 3);
    assert_eq!(taken.len(), 3);
    let (rest, _) = pool.take(&state, 3);
    assert_eq!(
        rest.len(),
        0,
        "on the same state, nonce 3 is not reached yet"
    );
    assert_eq!(pool.len(), 2);
}

#[test]
fn a_state_row_changed_on_disk_is_found_at_the_next_open() {
    let dir = tempfile::tempdir().expect("dir");
    let mut solo = open(dir.path());
    pay_a_job(&mut solo, "j1", 3);
    drop(solo);
    let conn = rusqlite::Connection::open(dir.path().join("chain.db")).expect("open");
    let mut account = ledger::Account {
        balance: Credits(999),
        ..Default::default()
    };
    account.nonce = 0;
    let mut bytes = Vec::new();
    ciborium::into_writer(&account, &mut bytes).expect("encodes");
    conn.execute(
        "UPDATE accounts SET value = ?1 WHERE id = ?2",
        rusqlite::params![bytes, id(3).0.as_slice()],
    )
    .expect("tampered");
    drop(conn);
    let err = Solo::open(&dir.path().join("chain.db"), genesis(), key(VALIDATOR))
        .err()
        .expect("refused");
    assert!(matches!(err, ChainError::Corrupt(_)), "{err}");
}

#[test]
fn a_database_of_another_chain_or_a_validator_not_in_the_genesis_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    drop(open(dir.path()));
    let other = Genesis {
        chain_id: "other".into(),
        ..genesis()
    };
    let err = Solo::open(&dir.path().join("chain.db"), other, key(VALIDATOR))
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("belongs to chain plexus-test"),
        "{err}"
    );
    let err = Solo::open(&dir.path().join("chain.db"), genesis(), key(5))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("validator"), "{err}");
}

/// The child of the kill test: makes one block of one transfer after
/// another, printing each height once it is stored, until it is killed.
#[test]
fn child_making_blocks_until_killed() {
    let Ok(dir) = std::env::var("PLEXUS_CHAIN_TEST_CHILD") else {
        return;
    };
    let mut solo = open(std::path::Path::new(&dir));
    loop {
        let tx = signed(
            solo.state(),
            REQUESTER,
            0,
            Tx::Transfer {
                to: id(2),
                amount: Credits(1),
            },
        );
        solo.submit(tx).expect("admitted");
        let made = solo.make_block(0).expect("stored");
        println!("stored {}", made.header.height);
    }
}

/// kill -9 of a validator at any point, the moment between a block's write
/// and its answer included: every block it said it stored is there, the
/// state read back is the replay of the stored blocks, and no transfer
/// applied twice (each block moved exactly one credit).
#[test]
fn a_validator_killed_at_any_point_loses_no_stored_block_and_applies_nothing_twice() {
    let dir = tempfile::tempdir().expect("dir");
    let exe = std::env::current_exe().expect("exe");
    for round in 0..3 {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "tests::child_making_blocks_until_killed",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("PLEXUS_CHAIN_TEST_CHILD", dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("child");
        let stdout = child.stdout.take().expect("stdout");
        let mut said = 0;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.expect("line");
            if let Some(h) = line.strip_prefix("stored ") {
                said = h.parse::<u64>().expect("height");
                if said >= 20 * (round + 1) {
                    break;
                }
            }
        }
        child.kill().expect("kill -9");
        child.wait().expect("reaped");
        let solo = open(dir.path());
        let height = solo.state().height;
        assert!(height >= said, "stored up to {said}, found {height}");
        assert_eq!(replay(&solo), *solo.state());
        assert_eq!(
            solo.state().balance(&id(2)),
            Credits(50 + height),
            "one credit per block"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actor_answers_each_submission_once_its_block_is_stored_and_pays_each_task_once() {
    let dir = tempfile::tempdir().expect("dir");
    let chain = spawn_solo(open(dir.path())).expect("spawned");
    let requester = key(REQUESTER);
    let locked = chain
        .submit(SignedTx::sign(&requester, 0, lock("j", 10_000)).expect("signs"))
        .await
        .expect("included");
    assert!(matches!(locked.1.receipt, Receipt::Applied(Effect::Moved)));
    let mut pending = Vec::new();
    for task in 0..500u64 {
        let tx = SignedTx::sign(&requester, 1 + task, claim("j", task, 3 + (task % 2) as u8))
            .expect("signs");
        pending.push(chain.send(tx).await.expect("admitted"));
    }
    // The same claim again under a new nonce is refused by the ledger.
    let again = SignedTx::sign(&requester, 501, claim("j", 0, 3)).expect("signs");
    let again = chain.submit(again).await.expect("included");
    let mut heights = std::collections::BTreeSet::new();
    for p in pending {
        let (_, place) = p.included().await.expect("included");
        assert!(
            matches!(place.receipt, Receipt::Applied(Effect::Paid { .. })),
            "{place:?}"
        );
        heights.insert(place.height);
    }
    assert!(
        matches!(&again.1.receipt, Receipt::Refused(r) if r.contains("claimed")),
        "{again:?}"
    );
    assert!(
        heights.len() < 500,
        "claims are batched into blocks: {} blocks",
        heights.len()
    );
    let (_, provider) = chain.account(id(3)).await.expect("answers");
    assert_eq!(provider.expect("paid").balance, Credits(250 * 10));
    let escrow = chain
        .escrow(JobId("j".into()))
        .await
        .expect("answers")
        .expect("escrow");
    assert_eq!(escrow.left, Credits(10_000 - 500 * 10));
    let blocks = chain.blocks(1, 1_000).await.expect("blocks");
    assert!(!blocks.is_empty() && blocks.len() <= BLOCKS_PER_QUERY_MAX);
    assert_eq!(blocks[0].0.header.height, 1);
    let found = chain
        .find_tx(locked.0)
        .await
        .expect("answers")
        .expect("found");
    assert_eq!(found, locked.1);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// What the store reads back (and BFT peers will send) decodes or
    /// fails cleanly, whatever the bytes: arbitrary ones, and a real
    /// block's encoding with bytes changed.
    #[test]
    fn any_bytes_decode_to_a_block_or_fail_cleanly(
        junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        flips in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 1..8),
    ) {
        let _ = block::from_cbor::<SignedBlock>(&junk, "junk");
        let _ = block::from_cbor::<Vec<Receipt>>(&junk, "junk");
        let dir = tempfile::tempdir().expect("dir");
        let mut solo = open(dir.path());
        let tx = signed(solo.state(), REQUESTER, 0, lock("j", 5));
        solo.submit(tx).expect("admitted");
        solo.make_block(1).expect("stored");
        let (b, _) = solo.store().block(1).expect("reads").expect("stored");
        let mut bytes = block::cbor(&b, "a block").expect("encodes");
        for (at, x) in flips {
            let n = bytes.len();
            bytes[at % n] ^= x | 1;
        }
        if let Ok(bent) = block::from_cbor::<SignedBlock>(&bytes, "bent") {
            // Whatever decodes, a bent header no longer matches its commit.
            if bent.header != b.header {
                let hash = bent.header.hash().expect("hash");
                proptest::prop_assert!(bent.commit.verify(&hash, &[id(VALIDATOR)]).is_err());
            }
        }
    }
}
