use super::*;
use proptest::prelude::*;
use types::limits::MIB;

fn offer(price: u64, task_memory_mib: u64, engine: &str) -> Offer {
    Offer {
        cores: 4,
        memory_bytes: 8 << 30,
        task_memory_bytes_max: task_memory_mib * MIB,
        slots_total: 2,
        slots_free: 2,
        price_per_gfuel: price,
        fuel_per_sec: 1_000_000_000,
        engine: engine.into(),
        expires_at_ms: 100_000,
    }
}

fn check(
    requirements: Requirements,
    task_memory_mib: u64,
    o: &Offer,
    verified: u64,
) -> Result<(), Mismatch> {
    Needs {
        requirements: &requirements,
        task_memory_bytes: task_memory_mib * MIB,
    }
    .check(o, verified)
}

#[test]
fn each_requirement_names_its_own_reason() {
    let cheap = offer(10, 1024, "e1");
    let any = Requirements::default;
    // (requirements, task memory MiB, verified record, expected)
    let table: Vec<(Requirements, u64, u64, Result<(), Mismatch>)> = vec![
        (any(), 512, 0, Ok(())),
        (
            Requirements {
                price_per_gfuel_max: Some(10),
                ..any()
            },
            512,
            0,
            Ok(()),
        ),
        (
            Requirements {
                price_per_gfuel_max: Some(9),
                ..any()
            },
            512,
            0,
            Err(Mismatch::Price),
        ),
        (any(), 1024, 0, Ok(())),
        (any(), 1025, 0, Err(Mismatch::Memory)),
        (
            Requirements {
                memory_bytes_min: Some(2048 * MIB),
                ..any()
            },
            512,
            0,
            Err(Mismatch::Memory),
        ),
        (
            Requirements {
                engine: Some("e1".into()),
                ..any()
            },
            512,
            0,
            Ok(()),
        ),
        (
            Requirements {
                engine: Some("e2".into()),
                ..any()
            },
            512,
            0,
            Err(Mismatch::Engine),
        ),
        (
            Requirements {
                verified_min: Some(3),
                ..any()
            },
            512,
            2,
            Err(Mismatch::Record),
        ),
        (
            Requirements {
                verified_min: Some(3),
                ..any()
            },
            512,
            3,
            Ok(()),
        ),
        // Price is reported before memory: the first reason counts.
        (
            Requirements {
                price_per_gfuel_max: Some(1),
                ..any()
            },
            4096,
            0,
            Err(Mismatch::Price),
        ),
    ];
    for (i, (requirements, memory, verified, expected)) in table.into_iter().enumerate() {
        assert_eq!(
            check(requirements, memory, &cheap, verified),
            expected,
            "row {i}"
        );
    }
}

#[test]
fn an_offer_lives_to_its_own_expiry_plus_the_skew_but_never_past_its_ttl_from_arrival() {
    let mut o = offer(1, 1024, "e");
    o.expires_at_ms = 50_000;
    assert_eq!(live_until_ms(&o, 0), 50_000 + OFFER_CLOCK_SKEW_MS_MAX);
    // A provider whose clock runs far ahead cannot keep its offer alive.
    o.expires_at_ms = 10_000_000;
    assert_eq!(
        live_until_ms(&o, 1_000),
        1_000 + OFFER_TTL_MS + OFFER_CLOCK_SKEW_MS_MAX
    );
    // One far behind ours has sent an offer that is over already.
    o.expires_at_ms = 0;
    assert!(live_until_ms(&o, 60_000) < 60_000);
}

#[test]
fn no_match_reads_as_counts_per_reason() {
    let mut n = NoMatch::default();
    assert_eq!(n.to_string(), "0 offers seen");
    n.count(Err(Mismatch::Price));
    assert_eq!(n.to_string(), "1 offer seen: 1 price");
    n.count(Err(Mismatch::Price));
    n.count(Err(Mismatch::Memory));
    n.count(Ok(()));
    assert_eq!(n.to_string(), "4 offers seen: 2 price, 1 memory");
    assert_eq!(n.matched(), 1);
    let json = serde_json::to_value(n).expect("json");
    assert_eq!(json["price"], 2);
    assert_eq!(json["offers_seen"], 4);
}

#[test]
fn every_reason_has_one_distinct_name() {
    let names: std::collections::BTreeSet<_> = Mismatch::ALL.iter().map(|m| m.as_str()).collect();
    assert_eq!(names.len(), Mismatch::ALL.len());
}

#[test]
fn ranking_puts_the_cheap_then_the_reliable_then_the_fast_then_the_close_first() {
    let mut fast = offer(5, 1024, "e");
    fast.fuel_per_sec = 2_000_000_000;
    let slow = offer(5, 1024, "e");
    let cheap = offer(1, 1024, "e");
    let mut keys = [
        rank_key(&slow, false, Some(100), 1),
        rank_key(&fast, true, Some(100), 2),
        rank_key(&fast, false, None, 3),
        rank_key(&fast, false, Some(900), 4),
        rank_key(&cheap, true, None, 5),
    ];
    keys.sort();
    let order: Vec<u8> = keys.iter().map(|k| k.4).collect();
    assert_eq!(order, [5, 4, 3, 1, 2]);
}

fn any_mismatch() -> impl Strategy<Value = Result<(), Mismatch>> {
    prop_oneof![
        Just(Ok(())),
        (0..Mismatch::ALL.len()).prop_map(|i| Err(Mismatch::ALL[i])),
    ]
}

proptest! {
    /// The counts add up: every offer seen is matched or short for one reason.
    #[test]
    fn no_match_counts_add_up(outcomes in proptest::collection::vec(any_mismatch(), 0..200)) {
        let mut n = NoMatch::default();
        for &o in &outcomes {
            n.count(o);
        }
        let short: u64 = Mismatch::ALL.iter().map(|&m| n.of(m)).sum();
        prop_assert_eq!(n.offers_seen, outcomes.len() as u64);
        prop_assert_eq!(n.matched() + short, n.offers_seen);
        prop_assert_eq!(n.matched(), outcomes.iter().filter(|o| o.is_ok()).count() as u64);
    }

    /// Asking less never loses an offer: a higher price cap, less memory, a
    /// shorter record keep every match.
    #[test]
    fn loosening_a_requirement_keeps_every_match(
        price in 0u64..1000, cap in 0u64..1000, extra in 0u64..1000,
        offered_mib in 0u64..4096, asked_mib in 0u64..4096, less_mib in 0u64..4096,
        verified in 0u64..100, min in 0u64..100,
    ) {
        let o = offer(price, offered_mib, "e");
        let strict = Requirements {
            price_per_gfuel_max: Some(cap),
            verified_min: Some(min),
            ..Requirements::default()
        };
        let loose = Requirements {
            price_per_gfuel_max: Some(cap.saturating_add(extra)),
            verified_min: Some(min.saturating_sub(extra)),
            ..Requirements::default()
        };
        if check(strict, asked_mib, &o, verified).is_ok() {
            prop_assert!(check(loose, asked_mib.saturating_sub(less_mib), &o, verified).is_ok());
        }
    }
}

fn priced(price: u64, expires_at_ms: u64) -> Offer {
    Offer {
        expires_at_ms,
        ..offer(price, 512, "e")
    }
}

#[test]
fn the_book_ranks_live_offers_and_replaces_a_providers_last() {
    let mut book = Book::default();
    assert!(book.offer(0, 1u32, priced(5, 50_000), None, None));
    assert!(book.offer(0, 2u32, priced(3, 50_000), None, None));
    let order: Vec<u32> = book.ranked().map(|k| k.4).collect();
    assert_eq!(order, vec![2, 1]);
    // A new offer replaces the last: one listing per provider.
    assert!(book.offer(10, 1u32, priced(1, 50_000), None, None));
    let order: Vec<u32> = book.ranked().map(|k| k.4).collect();
    assert_eq!((order, book.len(), book.slots_live()), (vec![1, 2], 2, 4));
    book.set_unreliable(1, true);
    assert_eq!(
        book.ranked().next().map(|k| k.4),
        Some(1),
        "price still first"
    );
    assert!(book.withdraw(2).is_some());
    assert_eq!(
        (book.len(), book.live_count(), book.slots_live()),
        (1, 1, 2)
    );
}

#[test]
fn offers_expire_by_their_own_time_within_the_skew_and_stay_listed() {
    let mut book = Book::default();
    book.offer(0, 1u32, priced(1, 10_000), None, None);
    book.offer(0, 2u32, priced(1, 40_000), None, None);
    let first_end = 10_000 + types::offer::OFFER_CLOCK_SKEW_MS_MAX;
    assert!(
        book.expire(first_end).is_empty(),
        "live until its end, inclusive"
    );
    assert_eq!(book.expire(first_end + 1), vec![1]);
    assert!(book.expire(first_end + 2).is_empty(), "each expiry once");
    assert!(!book.is_live(first_end + 1, &1) && book.is_live(first_end + 1, &2));
    assert_eq!((book.len(), book.live_count()), (2, 1));
    // Renewed before its old end: the old end's entry is stale, not an expiry.
    book.offer(20_000, 2u32, priced(1, 70_000), None, None);
    assert!(book.expire(45_001).is_empty());
    assert_eq!(book.live_count(), 1);
}

proptest! {
    /// Whatever arrives, the live index holds exactly the listings live
    /// now, and the slots summed are theirs.
    #[test]
    fn the_live_index_matches_the_listings(
        events in proptest::collection::vec((0u8..4, 0u32..8, 0u64..200_000, 1u32..16), 1..80)
    ) {
        let mut book = Book::default();
        let mut now = 0u64;
        for (kind, peer, t, slots) in events {
            now += t / 50;
            match kind {
                0 | 1 => {
                    let o = Offer { slots_total: slots, ..priced(u64::from(peer), now + t) };
                    book.offer(now, peer, o, None, None);
                }
                2 => { book.withdraw(peer); }
                _ => { book.expire(now); }
            }
            book.expire(now);
            let live: Vec<u32> = book.listings().filter(|(_, l)| now <= l.live_until_ms).map(|(p, _)| *p).collect();
            prop_assert_eq!(book.live_count(), live.len());
            let slots: u64 = book.listings().filter(|(_, l)| now <= l.live_until_ms).map(|(_, l)| u64::from(l.offer.slots_total)).sum();
            prop_assert_eq!(book.slots_live(), slots);
        }
    }
}

proptest! {
    /// `unmet` lists every requirement an offer falls short of, and its
    /// first is the reason `check` gives.
    #[test]
    fn unmet_lists_every_shortfall_and_starts_with_checks_reason(
        price in 1u64..200, memory_mib in 1u64..4096, engine in 0u8..2,
        price_max in proptest::option::of(1u64..200),
        memory_min_mib in proptest::option::of(1u64..4096),
        want_engine in proptest::option::of(0u8..2),
        verified in 0u64..20, verified_min in proptest::option::of(0u64..20),
        task_memory_mib in 1u64..4096,
    ) {
        let o = offer(price, memory_mib, &format!("e{engine}"));
        let requirements = Requirements {
            price_per_gfuel_max: price_max,
            memory_bytes_min: memory_min_mib.map(|m| m * MIB),
            engine: want_engine.map(|e| format!("e{e}")),
            verified_min,
            budget: None,
        };
        let needs = Needs { requirements: &requirements, task_memory_bytes: task_memory_mib * MIB };
        let unmet = needs.unmet(&o, verified);
        prop_assert_eq!(needs.check(&o, verified).err(), unmet.first().copied());
        prop_assert_eq!(unmet.contains(&Mismatch::Price), price_max.is_some_and(|m| price > m));
        prop_assert_eq!(
            unmet.contains(&Mismatch::Memory),
            memory_mib < task_memory_mib.max(memory_min_mib.unwrap_or(0))
        );
        prop_assert_eq!(unmet.contains(&Mismatch::Engine), want_engine.is_some_and(|e| e != engine));
        prop_assert_eq!(unmet.contains(&Mismatch::Record), verified_min.is_some_and(|m| verified < m));
    }
}
