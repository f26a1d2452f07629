use super::*;
use proptest::prelude::*;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n.wrapping_add(1); 32])
}

fn id(n: u8) -> AccountId {
    AccountId::of(&key(n))
}

fn job(name: &str) -> JobId {
    JobId(name.into())
}

/// A ledger with the accounts given, and a helper that signs with the right
/// nonce and applies one block of one transaction.
struct Chain {
    state: State,
}

impl Chain {
    fn new(allocations: &[(u8, u64)]) -> Chain {
        let allocations: Vec<(AccountId, Credits)> = allocations
            .iter()
            .map(|&(n, c)| (id(n), Credits(c)))
            .collect();
        Chain {
            state: State::genesis(&allocations).expect("genesis"),
        }
    }

    fn signed(&self, by: u8, tx: Tx) -> SignedTx {
        let nonce = self.state.next_nonce(&id(by));
        SignedTx::sign(&key(by), nonce, tx).expect("signs")
    }

    fn block(&mut self, txs: Vec<SignedTx>) -> Vec<Result<Effect, LedgerError>> {
        let block = Block {
            height: self.state.height + 1,
            txs,
        };
        let receipts = self.state.apply_block(&block).expect("a valid block");
        self.state.check_supply().expect("supply holds");
        receipts
    }

    fn run(&mut self, by: u8, tx: Tx) -> Result<Effect, LedgerError> {
        let signed = self.signed(by, tx);
        self.block(vec![signed]).remove(0)
    }

    fn lock(&mut self, by: u8, name: &str, amount: u64, price: u64) {
        let expires_at = self.state.height + 100;
        let tx = Tx::EscrowLock {
            job: job(name),
            amount: Credits(amount),
            price_per_gfuel: price,
            expires_at,
        };
        self.run(by, tx).expect("locked");
    }

    fn claim(
        &mut self,
        by: u8,
        name: &str,
        task: u64,
        provider: u8,
        fuel: u64,
    ) -> Result<Effect, LedgerError> {
        let price_per_gfuel = self
            .state
            .escrows
            .get(&job(name))
            .map_or(1, |e| e.price_per_gfuel);
        let tx = Tx::Claim {
            job: job(name),
            task,
            provider: id(provider),
            fuel,
            price_per_gfuel,
        };
        self.run(by, tx)
    }
}

const GFUEL: u64 = 1_000_000_000;

#[test]
fn pay_is_fuel_times_price_rounded_down_once() {
    assert_eq!(pay_for(GFUEL, 3), Credits(3));
    assert_eq!(pay_for(GFUEL - 1, 3), Credits(2), "2.999… rounds down");
    assert_eq!(pay_for(1, 1), Credits(0));
    assert_eq!(pay_for(u64::MAX, u64::MAX), Credits(u64::MAX), "saturates");
}

#[test]
fn small_tasks_are_rounded_once_per_provider_not_once_per_claim() {
    let mut c = Chain::new(&[(0, 1_000)]);
    c.lock(0, "j", 100, 3);
    // Ten claims of a third of a Gfuel at 3 per Gfuel: 0.999999999 credits
    // each, 0 if rounded per claim; 9.99999999 together, so 9.
    let third = GFUEL / 3;
    assert_eq!(pay_for(third, 3), Credits(0));
    let mut paid = 0;
    for task in 0..10 {
        if let Ok(Effect::Paid { amount, .. }) = c.claim(0, "j", task, 1, third) {
            paid += amount.0;
        }
    }
    assert_eq!(paid, 9);
    for task in 10..20 {
        c.claim(0, "j", task, 2, GFUEL / 10).expect("paid");
    }
    assert_eq!(
        c.state.balance(&id(2)),
        Credits(3),
        "3.0 in all, 0 per claim"
    );
}

#[test]
fn a_claim_pays_its_provider_once_from_the_escrow_and_release_refunds_the_rest() {
    let mut c = Chain::new(&[(0, 1_000)]);
    c.lock(0, "j", 100, 2);
    assert_eq!(c.state.balance(&id(0)), Credits(900));
    assert_eq!(
        c.claim(0, "j", 7, 1, 5 * GFUEL),
        Ok(Effect::Paid {
            provider: id(1),
            amount: Credits(10)
        })
    );
    assert_eq!(c.state.balance(&id(1)), Credits(10));
    assert_eq!(
        c.claim(0, "j", 7, 1, 5 * GFUEL),
        Err(LedgerError::Claimed {
            job: job("j"),
            task: 7
        })
    );
    // Another replica of the same task is paid too, at its own price.
    let replica = Tx::Claim {
        job: job("j"),
        task: 7,
        provider: id(2),
        fuel: 5 * GFUEL,
        price_per_gfuel: 1,
    };
    assert_eq!(
        c.run(0, replica),
        Ok(Effect::Paid {
            provider: id(2),
            amount: Credits(5)
        })
    );
    let dear = Tx::Claim {
        job: job("j"),
        task: 8,
        provider: id(1),
        fuel: GFUEL,
        price_per_gfuel: 3,
    };
    assert_eq!(
        c.run(0, dear),
        Err(LedgerError::PriceAbove { price: 3, max: 2 })
    );
    // Only the owner accepts work.
    assert_eq!(
        c.claim(1, "j", 8, 1, GFUEL),
        Err(LedgerError::NotOwner(job("j")))
    );
    // Beyond what is left: refused, never overdrawn.
    assert_eq!(
        c.claim(0, "j", 9, 1, 50 * GFUEL),
        Err(LedgerError::BeyondEscrow {
            job: job("j"),
            claim: Credits(100),
            left: Credits(85)
        })
    );
    assert_eq!(
        c.run(0, Tx::EscrowRelease { job: job("j") }),
        Ok(Effect::Refunded {
            amount: Credits(85)
        })
    );
    assert_eq!(c.state.balance(&id(0)), Credits(985));
    assert_eq!(
        c.claim(0, "j", 10, 1, GFUEL),
        Err(LedgerError::Released(job("j")))
    );
    // A job's id serves one escrow, ever.
    let again = Tx::EscrowLock {
        job: job("j"),
        amount: Credits(1),
        price_per_gfuel: 1,
        expires_at: 1_000,
    };
    assert_eq!(c.run(0, again), Err(LedgerError::EscrowExists(job("j"))));
}

#[test]
fn an_expired_escrow_takes_no_claims_and_anyone_may_release_it_to_its_owner() {
    let mut c = Chain::new(&[(0, 100), (2, 0)]);
    let tx = Tx::EscrowLock {
        job: job("j"),
        amount: Credits(50),
        price_per_gfuel: 1,
        expires_at: 3,
    };
    c.run(0, tx).expect("locked at height 1");
    // Height 2: a stranger may not release it yet.
    assert_eq!(
        c.run(2, Tx::EscrowRelease { job: job("j") }),
        Err(LedgerError::NotOwner(job("j")))
    );
    c.block(vec![]); // height 3
    assert_eq!(
        c.claim(0, "j", 1, 1, GFUEL),
        Err(LedgerError::Expired {
            job: job("j"),
            at: 3
        })
    );
    assert_eq!(
        c.run(2, Tx::EscrowRelease { job: job("j") }),
        Ok(Effect::Refunded {
            amount: Credits(50)
        })
    );
    assert_eq!(c.state.balance(&id(0)), Credits(100));
}

#[test]
fn a_refused_transaction_changes_nothing_but_uses_its_nonce() {
    let mut c = Chain::new(&[(0, 10)]);
    let before = c.state.clone();
    let overdrawn = c.signed(
        0,
        Tx::Transfer {
            to: id(1),
            amount: Credits(11),
        },
    );
    let unstake = SignedTx::sign(&key(0), 1, Tx::Unstake { amount: Credits(1) }).expect("signs");
    let receipts = c.block(vec![
        overdrawn,
        unstake,
        c.signed(3, Tx::Unstake { amount: Credits(1) }),
    ]);
    assert!(receipts.iter().all(Result::is_err), "{receipts:?}");
    assert!(
        matches!(receipts[1], Err(LedgerError::InsufficientStake { .. })),
        "{receipts:?}"
    );
    // Both of account 0's refusals used their nonces (so a later
    // transaction of its own, signed with the next, still applies); the
    // stranger with no account is given none.
    let mut expected = before;
    expected.height = 1;
    expected.accounts.get_mut(&id(0)).expect("account").nonce = 2;
    assert_eq!(c.state, expected);
    assert!(c.state.account(&id(3)).is_none());
    // A signature over another nonce, or by someone else, is refused.
    let mut forged = c.signed(
        0,
        Tx::Transfer {
            to: id(1),
            amount: Credits(1),
        },
    );
    forged.signer = id(1);
    let replay = c.signed(
        0,
        Tx::Transfer {
            to: id(1),
            amount: Credits(1),
        },
    );
    let receipts = c.block(vec![forged, replay.clone(), replay]);
    assert_eq!(receipts[0], Err(LedgerError::BadSignature));
    assert_eq!(receipts[1], Ok(Effect::Moved));
    assert_eq!(
        receipts[2],
        Err(LedgerError::Nonce {
            got: 2,
            expected: 3
        })
    );
}

#[test]
fn stake_unbonds_after_its_delay_and_a_proven_lie_slashes_it_once() {
    let mut c = Chain::new(&[(0, 100), (1, 1_000)]);
    c.run(
        1,
        Tx::Stake {
            amount: Credits(800),
        },
    )
    .expect("staked");
    c.run(
        1,
        Tx::Unstake {
            amount: Credits(200),
        },
    )
    .expect("unbonding from height 2");
    let unbond_at = 2 + UNBONDING_BLOCKS;
    let digest = |b: u8| [b; 32];
    let evidence = |first: u8, second: u8| Evidence {
        provider: id(1),
        job: job("j"),
        task: 4,
        first: SignedDigest::sign(&key(1), &job("j"), 4, digest(first)),
        second: SignedDigest::sign(&key(1), &job("j"), 4, digest(second)),
    };
    assert_eq!(
        c.run(
            0,
            Tx::Slash {
                evidence: evidence(1, 1)
            }
        ),
        Err(LedgerError::Evidence("the two results agree"))
    );
    let mut not_its = evidence(1, 2);
    not_its.second = SignedDigest::sign(&key(2), &job("j"), 4, digest(2));
    assert!(matches!(
        c.run(0, Tx::Slash { evidence: not_its }),
        Err(LedgerError::Evidence(_))
    ));
    // Half of 600 bonded + 200 unbonding: 400, half of it to the reporter.
    assert_eq!(
        c.run(
            0,
            Tx::Slash {
                evidence: evidence(1, 2)
            }
        ),
        Ok(Effect::Slashed {
            amount: Credits(400),
            to_reporter: Credits(200)
        })
    );
    let provider = c.state.account(&id(1)).expect("exists").clone();
    assert_eq!(provider.stake, Credits(200));
    assert_eq!(provider.unbonding, vec![(unbond_at, Credits(200))]);
    assert_eq!(c.state.balance(&id(0)), Credits(300));
    assert_eq!(c.state.burned, Credits(200));
    assert_eq!(
        c.run(
            0,
            Tx::Slash {
                evidence: evidence(1, 2)
            }
        ),
        Err(LedgerError::SlashedAlready {
            job: job("j"),
            task: 4
        })
    );
    while c.state.height < unbond_at {
        c.block(vec![]);
    }
    assert_eq!(c.state.balance(&id(1)), Credits(400));
    assert!(
        c.state
            .account(&id(1))
            .expect("exists")
            .unbonding
            .is_empty()
    );
}

#[test]
fn a_block_out_of_order_or_too_large_is_refused_whole() {
    let mut c = Chain::new(&[(0, 10)]);
    let skip = Block {
        height: 2,
        txs: vec![],
    };
    assert_eq!(
        c.state.apply_block(&skip),
        Err(LedgerError::Height {
            got: 2,
            expected: 1
        })
    );
    let tx = c.signed(0, Tx::Stake { amount: Credits(1) });
    let huge = Block {
        height: 1,
        txs: vec![tx; BLOCK_TXS_MAX + 1],
    };
    assert_eq!(
        c.state.apply_block(&huge),
        Err(LedgerError::BlockTooLarge(BLOCK_TXS_MAX + 1))
    );
    assert_eq!(c.state.height, 0);
}

/// Akash's escrow settlement vectors (`x/escrow/keeper/keeper_settle_test.go`:
/// an account of `balance`, payments at `rates` per block, settled after
/// `blocks`), each payment's due per block made one claim here. Where the
/// escrow runs short, Akash pays the whole blocks it can and marks the
/// account overdrawn; Plexus pays each claim that fits and refuses the
/// others (`BeyondEscrow`). Its remainder distributions (weighted and
/// even shares of what is left to the payees of an overdrawn account) have
/// no counterpart: what is left goes back to the requester.
#[test]
fn akash_escrow_settlement_vectors_and_where_plexus_departs() {
    struct Vector {
        name: &'static str,
        blocks: u64,
        balance: u64,
        rates: [u64; 2],
        akash_paid: [u64; 2],
        akash_left: u64,
        akash_overdrawn: bool,
        /// Plexus's result where it differs, with why.
        plexus: Option<([u64; 2], u64)>,
    }
    let vectors = [
        Vector {
            name: "plenty left",
            blocks: 5,
            balance: 100,
            rates: [1, 2],
            akash_paid: [5, 10],
            akash_left: 85,
            akash_overdrawn: false,
            plexus: None,
        },
        Vector {
            name: "use it all",
            blocks: 5,
            balance: 100,
            rates: [10, 10],
            akash_paid: [50, 50],
            akash_left: 0,
            akash_overdrawn: false,
            plexus: None,
        },
        Vector {
            name: "ruh roh",
            blocks: 6,
            balance: 100,
            rates: [10, 10],
            akash_paid: [50, 50],
            akash_left: 0,
            akash_overdrawn: true,
            plexus: None,
        },
        // Akash pays whole blocks only (4 of them) and keeps 10; Plexus
        // pays the fifth block's first claim, which fits, and refuses the
        // second.
        Vector {
            name: "some left",
            blocks: 6,
            balance: 90,
            rates: [10, 10],
            akash_paid: [40, 40],
            akash_left: 10,
            akash_overdrawn: true,
            plexus: Some(([50, 40], 0)),
        },
    ];
    for v in vectors {
        let mut c = Chain::new(&[(0, 1_000)]);
        // Price 1 per Gfuel: a claim of r Gfuel pays r credits.
        c.lock(0, v.name, v.balance, 1);
        let mut paid = [0u64; 2];
        let mut refused = false;
        let mut task = 0;
        for _ in 0..v.blocks {
            // Each payment's due for the block is one claim, in order.
            for (payee, rate) in v.rates.iter().enumerate() {
                task += 1;
                match c.claim(0, v.name, task, 1 + payee as u8, rate * GFUEL) {
                    Ok(Effect::Paid { amount, .. }) => paid[payee] += amount.0,
                    Err(LedgerError::BeyondEscrow { .. }) => refused = true,
                    other => panic!("{}: {other:?}", v.name),
                }
            }
        }
        let left = c.state.escrows[&job(v.name)].left.0;
        let (want_paid, want_left) = v.plexus.unwrap_or((v.akash_paid, v.akash_left));
        assert_eq!(paid, want_paid, "{}", v.name);
        assert_eq!(left, want_left, "{}", v.name);
        assert_eq!(
            refused, v.akash_overdrawn,
            "{}: refused iff overdrawn",
            v.name
        );
    }
}

#[derive(Clone, Debug)]
enum Op {
    Transfer(u8, u8, u64),
    Stake(u8, u64),
    Unstake(u8, u64),
    Lock(u8, u8, u64, u64),
    Claim(u8, u8, u64, u8, u64),
    Release(u8, u8),
    Slash(u8, u8, u64),
    BadNonce(u8),
    EndBlock,
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0u8..4;
    prop_oneof![
        (who.clone(), who.clone(), 0u64..300).prop_map(|(a, b, n)| Op::Transfer(a, b, n)),
        (who.clone(), 0u64..300).prop_map(|(a, n)| Op::Stake(a, n)),
        (who.clone(), 0u64..300).prop_map(|(a, n)| Op::Unstake(a, n)),
        (who.clone(), 0u8..3, 0u64..300, 0u64..5).prop_map(|(a, j, n, p)| Op::Lock(a, j, n, p)),
        (
            who.clone(),
            0u8..3,
            0u64..20,
            who.clone(),
            0u64..(50 * GFUEL)
        )
            .prop_map(|(a, j, t, p, f)| Op::Claim(a, j, t, p, f)),
        (who.clone(), 0u8..3).prop_map(|(a, j)| Op::Release(a, j)),
        (who.clone(), who.clone(), 0u64..5).prop_map(|(a, p, t)| Op::Slash(a, p, t)),
        who.prop_map(Op::BadNonce),
        Just(Op::EndBlock),
    ]
}

/// Turns ops into blocks of signed transactions (nonces as the state
/// would have them if every transaction's nonce were used: a refused one
/// uses its own, but a bad nonce uses none and leaves the later nonces of
/// its signer in the block too high, and those are refused too).
fn blocks(start: &State, ops: &[Op]) -> Vec<Block> {
    let mut nonces: BTreeMap<AccountId, u64> = BTreeMap::new();
    let mut state = start.clone();
    let mut out = Vec::new();
    let mut txs = Vec::new();
    let mut flush =
        |txs: &mut Vec<SignedTx>, state: &mut State, nonces: &mut BTreeMap<AccountId, u64>| {
            let block = Block {
                height: state.height + 1,
                txs: std::mem::take(txs),
            };
            state.apply_block(&block).expect("valid block");
            nonces.clear();
            out.push(block);
        };
    for op in ops {
        let (by, tx) = match op.clone() {
            Op::Transfer(a, b, n) => (
                a,
                Tx::Transfer {
                    to: id(b),
                    amount: Credits(n),
                },
            ),
            Op::Stake(a, n) => (a, Tx::Stake { amount: Credits(n) }),
            Op::Unstake(a, n) => (a, Tx::Unstake { amount: Credits(n) }),
            Op::Lock(a, j, n, p) => (
                a,
                Tx::EscrowLock {
                    job: job(&format!("j{j}")),
                    amount: Credits(n),
                    price_per_gfuel: p,
                    expires_at: state.height + 1 + u64::from(j) * 3,
                },
            ),
            Op::Claim(a, j, t, p, f) => (
                a,
                Tx::Claim {
                    job: job(&format!("j{j}")),
                    task: t,
                    provider: id(p),
                    fuel: f,
                    price_per_gfuel: u64::from(p),
                },
            ),
            Op::Release(a, j) => (
                a,
                Tx::EscrowRelease {
                    job: job(&format!("j{j}")),
                },
            ),
            Op::Slash(a, p, t) => (
                a,
                Tx::Slash {
                    evidence: Evidence {
                        provider: id(p),
                        job: job("j0"),
                        task: t,
                        first: SignedDigest::sign(&key(p), &job("j0"), t, [1; 32]),
                        second: SignedDigest::sign(&key(p), &job("j0"), t, [2; 32]),
                    },
                },
            ),
            Op::BadNonce(a) => (a, Tx::Stake { amount: Credits(1) }),
            Op::EndBlock => {
                flush(&mut txs, &mut state, &mut nonces);
                continue;
            }
        };
        let next = nonces
            .entry(id(by))
            .or_insert_with(|| state.next_nonce(&id(by)));
        let nonce = if matches!(op, Op::BadNonce(_)) {
            *next + 7
        } else {
            *next
        };
        *next += 1;
        txs.push(SignedTx::sign(&key(by), nonce, tx).expect("signs"));
    }
    flush(&mut txs, &mut state, &mut nonces);
    out
}

proptest! {
    // Each case signs and checks a few hundred ed25519 signatures.
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever is asked, in whatever order: money is conserved after every
    /// block, nothing is paid twice, and two ledgers that apply the same
    /// blocks hold the same state hash at every height.
    #[test]
    fn random_blocks_conserve_money_and_replay_to_the_same_hash(
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let genesis = State::genesis(&[
            (id(0), Credits(1_000)),
            (id(1), Credits(500)),
            (id(2), Credits(0)),
            (id(3), Credits(250)),
        ]).expect("genesis");
        let chain = blocks(&genesis, &ops);
        let (mut a, mut b) = (genesis.clone(), genesis.clone());
        // A copy that takes from `a` only what `touched` names, as a store
        // that writes those entries does: it must stay equal to `a`.
        let mut mirror = genesis;
        for block in &chain {
            let touched = a.touched(block);
            let ra = a.apply_block(block).expect("valid");
            for id in &touched.accounts {
                match a.accounts.get(id) {
                    Some(account) => mirror.accounts.insert(*id, account.clone()),
                    None => mirror.accounts.remove(id),
                };
            }
            for job in &touched.escrows {
                match a.escrows.get(job) {
                    Some(escrow) => mirror.escrows.insert(job.clone(), escrow.clone()),
                    None => mirror.escrows.remove(job),
                };
            }
            mirror.height = a.height;
            mirror.minted = a.minted;
            mirror.burned = a.burned;
            mirror.slashed = a.slashed.clone();
            prop_assert!(mirror == a, "a block changed an entry `touched` does not name");
            let rb = b.apply_block(block).expect("valid");
            prop_assert_eq!(ra, rb);
            if let Err(e) = a.check_supply() {
                prop_assert!(false, "{}", e);
            }
            prop_assert_eq!(a.app_hash(), b.app_hash());
            for e in a.escrows.values() {
                prop_assert!(e.left <= e.locked);
            }
        }
        prop_assert_eq!(a.minted, Credits(1_750));
    }

    /// A change to any one transaction of a chain changes the final hash or
    /// is refused: the hash covers what the transactions did.
    #[test]
    fn the_hash_tells_two_different_histories_apart(
        ops in proptest::collection::vec(op(), 1..60),
        extra in 1u64..100,
    ) {
        let genesis = State::genesis(&[(id(0), Credits(1_000)), (id(1), Credits(500))]).expect("genesis");
        let chain = blocks(&genesis, &ops);
        let mut a = genesis.clone();
        for block in &chain {
            a.apply_block(block).expect("valid");
        }
        let mut b = a.clone();
        let nonce = b.next_nonce(&id(0));
        let tx = SignedTx::sign(&key(0), nonce, Tx::Transfer { to: id(1), amount: Credits(extra) }).expect("signs");
        let block = Block { height: b.height + 1, txs: vec![tx] };
        let receipts = b.apply_block(&block).expect("valid");
        a.apply_block(&Block { height: a.height + 1, txs: vec![] }).expect("valid");
        if receipts[0].is_ok() {
            prop_assert_ne!(a.app_hash(), b.app_hash());
        } else {
            prop_assert_eq!(a.app_hash(), b.app_hash());
        }
    }
}

/// The block at which an unstake matures changes the account with no
/// transaction of its own: `touched` names it then, and not before.
#[test]
fn unbonding_that_matures_touches_its_account() {
    let mut chain = Chain::new(&[(0, 100)]);
    chain
        .run(
            0,
            Tx::Stake {
                amount: Credits(40),
            },
        )
        .expect("staked");
    chain
        .run(
            0,
            Tx::Unstake {
                amount: Credits(40),
            },
        )
        .expect("unstaking");
    let returns_at = chain.state.height + UNBONDING_BLOCKS;
    while chain.state.height + 1 < returns_at {
        let empty = Block {
            height: chain.state.height + 1,
            txs: Vec::new(),
        };
        assert!(chain.state.touched(&empty).accounts.is_empty());
        chain.block(Vec::new());
    }
    let maturing = Block {
        height: returns_at,
        txs: Vec::new(),
    };
    assert_eq!(
        chain.state.touched(&maturing).accounts,
        BTreeSet::from([id(0)])
    );
    chain.block(Vec::new());
    assert_eq!(chain.state.balance(&id(0)), Credits(100));
}

#[test]
fn a_transaction_verifies_and_its_id_changes_with_any_field() {
    let chain = Chain::new(&[(0, 100)]);
    let tx = chain.signed(
        0,
        Tx::Transfer {
            to: id(1),
            amount: Credits(5),
        },
    );
    tx.verify().expect("verifies");
    let mut other = tx.clone();
    other.nonce += 1;
    assert_eq!(other.verify(), Err(LedgerError::BadSignature));
    assert_ne!(tx.id().expect("id"), other.id().expect("id"));
    assert_eq!(tx.id().expect("id"), tx.clone().id().expect("id"));
}
