use super::Strategy;
use super::*;
use proptest::prelude::{Just, any, prop_assert, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as _;

fn knobs(slots: u32) -> Knobs {
    Knobs::new(slots, 1 << 30)
}

fn terms() -> Terms {
    Terms {
        cores: 2,
        memory_bytes: 8 << 30,
        price_per_gfuel: 3,
        fuel_per_sec: 1_000_000_000,
        engine: "e".into(),
    }
}

fn core(slots: u32) -> Core<char> {
    Core::new(knobs(slots), terms(), Strategy::Honest, Totals::default())
}

fn task(job: &str, task: u64) -> Task {
    Task {
        job: JobId(job.into()),
        attempt: Attempt { task, attempt: 0 },
        memory_bytes_max: 1 << 20,
    }
}

/// Steps a request from `from` through admission and fetching; its id.
fn admit(c: &mut Core<char>, from: char, tasks: Vec<Task>) -> Result<RequestId, Refusal> {
    let actions = c.step(0, Input::Request { from, tasks });
    match actions.as_slice() {
        [Action::Admit { request }] => Ok(*request),
        [Action::Refuse(why)] => Err(why.clone()),
        other => panic!("unexpected {other:?}"),
    }
}

fn fetched(c: &mut Core<char>, request: RequestId) -> Vec<Action<char>> {
    c.step(
        0,
        Input::Fetched {
            request,
            result: Ok(()),
        },
    )
}

fn started(actions: &[Action<char>]) -> Vec<RequestId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { request, .. } => Some(*request),
            _ => None,
        })
        .collect()
}

#[test]
fn a_request_runs_once_fetched_and_alone_when_nothing_else_runs() {
    let mut c = core(2);
    let r = admit(&mut c, 'a', vec![task("j", 0)]).expect("admitted");
    assert_eq!(c.slots_free(), 1, "an admitted request holds a slot");
    let actions = fetched(&mut c, r);
    assert_eq!(
        actions,
        vec![Action::Start {
            request: r,
            alone: true
        }]
    );
    let r2 = admit(&mut c, 'b', vec![task("k", 0)]).expect("admitted");
    assert_eq!(
        fetched(&mut c, r2),
        vec![Action::Start {
            request: r2,
            alone: false
        }]
    );
    c.check().expect("consistent");
}

#[test]
fn refusals_name_their_bound() {
    let mut c = core(1);
    assert_eq!(
        admit(&mut c, 'a', vec![]),
        Err(Refusal::BatchSize { tasks: 0 })
    );
    let many: Vec<Task> = (0..=BATCH_TASKS_MAX as u64).map(|t| task("j", t)).collect();
    assert_eq!(
        admit(&mut c, 'a', many),
        Err(Refusal::BatchSize {
            tasks: BATCH_TASKS_MAX + 1
        })
    );
    let mut big = task("j", 0);
    big.memory_bytes_max = 2 << 30;
    let refused = admit(&mut c, 'a', vec![big]).expect_err("too big");
    assert_eq!(
        refused,
        Refusal::Memory {
            asked_bytes: 2 << 30,
            allowed_bytes: 1 << 30
        }
    );
    assert!(
        refused
            .to_string()
            .contains("this provider allows 1073741824")
    );
    // One requester: slots + QUEUED_PER_REQUESTER_MAX, then refused.
    for t in 0..u64::from(1 + QUEUED_PER_REQUESTER_MAX) {
        admit(&mut c, 'a', vec![task("j", t)]).expect("within its share");
    }
    assert_eq!(
        admit(&mut c, 'a', vec![task("j", 9)]),
        Err(Refusal::BusyForYou { held: 3 })
    );
    // Others fill the rest: slots + QUEUED_TASKS_MAX in all.
    admit(&mut c, 'b', vec![task("k", 0)]).expect("room");
    admit(&mut c, 'b', vec![task("k", 1)]).expect("room");
    assert_eq!(
        admit(&mut c, 'c', vec![task("l", 0)]),
        Err(Refusal::Busy { accepted: 5 })
    );
    c.check().expect("consistent");
}

#[test]
fn waiting_requests_take_slots_in_turn_across_requesters_not_in_arrival_order() {
    let mut c = core(1);
    let a: Vec<RequestId> = (0..3)
        .map(|t| admit(&mut c, 'a', vec![task("j", t)]).expect("admitted"))
        .collect();
    let b = admit(&mut c, 'b', vec![task("k", 0)]).expect("admitted");
    let mut order = Vec::new();
    for &r in a.iter().chain([&b]) {
        order.extend(started(&fetched(&mut c, r)));
    }
    // a0 runs; a1, a2 and b0 wait (in that arrival order).
    assert_eq!(order, vec![a[0]]);
    let mut running = a[0];
    for _ in 0..3 {
        let next = started(&c.step(
            1,
            Input::Done {
                request: running,
                ran: vec![],
            },
        ));
        assert_eq!(next.len(), 1);
        running = next[0];
        order.push(running);
        c.check().expect("consistent");
    }
    // b's turn comes before a's second waiting request.
    assert_eq!(order, vec![a[0], a[1], b, a[2]]);
}

#[test]
fn a_cancel_stops_only_the_named_attempts_of_its_requester_and_counts_them_once() {
    let mut c = core(2);
    let r = admit(&mut c, 'a', vec![task("j", 0), task("j", 1)]).expect("admitted");
    let other = admit(&mut c, 'b', vec![task("j", 0)]).expect("admitted");
    let cancel = |attempts: Vec<Attempt>| Input::Cancel {
        from: 'a',
        job: JobId("j".into()),
        attempts,
    };
    let first = Attempt {
        task: 1,
        attempt: 0,
    };
    assert_eq!(
        c.step(0, cancel(vec![first])),
        vec![
            Action::Stop {
                request: r,
                attempts: vec![first]
            },
            Action::Cancelled { count: 1 }
        ]
    );
    // Again: already stopped, not counted; the rest of the job is.
    let actions = c.step(0, cancel(vec![]));
    assert_eq!(actions.last(), Some(&Action::Cancelled { count: 1 }));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Stop { request, .. } if *request == other)),
        "b's task is not a's to cancel"
    );
    // All of it stopped before it started: it ends at once, answered.
    assert!(actions.contains(&Action::Fail {
        request: r,
        reason: CANCELLED.into()
    }));
    assert_eq!(c.held(), 1);
    // A requester gone stops everything it had here.
    let gone = c.step(0, Input::RequesterGone { from: 'b' });
    assert_eq!(
        gone,
        vec![
            Action::Stop {
                request: other,
                attempts: vec![Attempt {
                    task: 0,
                    attempt: 0
                }]
            },
            Action::Fail {
                request: other,
                reason: CANCELLED.into()
            }
        ]
    );
    assert_eq!(c.held(), 0);
    c.check().expect("consistent");
}

#[test]
fn a_running_request_stopped_whole_keeps_its_slot_but_not_its_requesters_share() {
    let mut c = core(1);
    let running = admit(&mut c, 'a', vec![task("j", 0)]).expect("admitted");
    fetched(&mut c, running);
    for t in 1..u64::from(1 + QUEUED_PER_REQUESTER_MAX) {
        let r = admit(&mut c, 'a', vec![task("j", t)]).expect("admitted");
        fetched(&mut c, r);
    }
    assert!(matches!(
        admit(&mut c, 'a', vec![task("j", 9)]),
        Err(Refusal::BusyForYou { .. })
    ));
    let only_first = vec![Attempt {
        task: 0,
        attempt: 0,
    }];
    c.step(
        0,
        Input::Cancel {
            from: 'a',
            job: JobId("j".into()),
            attempts: only_first,
        },
    );
    // The requester counts it free: so does the share, not the slot.
    let next = admit(&mut c, 'a', vec![task("j", 9)]).expect("its share has room");
    assert_eq!(started(&fetched(&mut c, next)), vec![]);
    assert_eq!(c.running(), 1);
    c.check().expect("consistent");
    let after = c.step(
        1,
        Input::Done {
            request: running,
            ran: vec![],
        },
    );
    assert_eq!(started(&after).len(), 1);
    c.check().expect("consistent");
}

#[test]
fn a_failed_fetch_answers_and_frees_the_slot_and_done_records_each_run() {
    let mut c = core(1);
    let r = admit(&mut c, 'a', vec![task("j", 0)]).expect("admitted");
    let actions = c.step(
        0,
        Input::Fetched {
            request: r,
            result: Err("no such blob".into()),
        },
    );
    assert_eq!(
        actions,
        vec![Action::Fail {
            request: r,
            reason: "no such blob".into()
        }]
    );
    assert_eq!(c.slots_free(), 1);
    let r = admit(&mut c, 'a', vec![task("j", 0), task("j", 1)]).expect("admitted");
    fetched(&mut c, r);
    let ran = Ran {
        job: JobId("j".into()),
        attempt: Attempt {
            task: 0,
            attempt: 0,
        },
        fuel: 7,
        outcome: "exited 0".into(),
    };
    let actions = c.step(
        42,
        Input::Done {
            request: r,
            ran: vec![ran.clone()],
        },
    );
    assert_eq!(
        actions,
        vec![Action::Persist(Write::Run {
            requester: 'a',
            ran,
            finished_at_ms: 42
        })]
    );
    assert_eq!(
        c.totals(),
        Totals {
            tasks_run: 1,
            fuel_used: 7
        }
    );
    // A second Done for the same request is not counted twice.
    assert!(
        c.step(
            43,
            Input::Done {
                request: r,
                ran: vec![]
            }
        )
        .is_empty()
    );
}

#[test]
fn the_offer_goes_out_every_interval_and_soon_after_a_requester_comes() {
    let mut c = core(2);
    let publishes = |actions: Vec<Action<char>>| {
        actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Publish(o) => Some(o),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let first = publishes(c.step(10, Input::Tick));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].slots_free, 2);
    assert_eq!(first[0].expires_at_ms, 10 + OFFER_TTL_MS);
    assert_eq!(first[0].price_per_gfuel, 3);
    assert!(publishes(c.step(10 + OFFER_INTERVAL_MS - 1, Input::Tick)).is_empty());
    c.step(500, Input::RequesterCame);
    admit(&mut c, 'a', vec![task("j", 0)]).expect("admitted");
    let soon = publishes(c.step(600, Input::Tick));
    assert_eq!(soon.len(), 1);
    assert_eq!(soon[0].slots_free, 1);
}

#[test]
fn a_silent_provider_takes_requests_and_never_runs_them() {
    let mut c: Core<char> = Core::new(knobs(1), terms(), Strategy::Silent, Totals::default());
    assert!(
        c.step(
            0,
            Input::Request {
                from: 'a',
                tasks: vec![task("j", 0)],
            }
        )
        .is_empty()
    );
    assert_eq!(c.held(), 0);
}

#[test]
fn strategies_read_back_what_they_print_and_refuse_nonsense() {
    for s in [
        "honest",
        "wrong:50",
        "collude:0:10",
        "intermittent:10:5",
        "fuel",
        "replay",
        "silent",
        "slow:10",
        "bad-signature",
        "bad-output",
        "oversized",
        "selective",
    ] {
        let parsed: Strategy = s.parse().expect(s);
        assert_eq!(parsed.to_string(), s);
    }
    assert_eq!(
        "collude:30".parse::<Strategy>(),
        Ok(Strategy::Collude {
            after: 0,
            percent: 30
        })
    );
    for bad in [
        "wrong:101",
        "wrong",
        "slow:0",
        "intermittent:x:5",
        "cheat",
        "",
    ] {
        assert!(bad.parse::<Strategy>().is_err(), "{bad}");
    }
}

#[test]
fn forgeries_fall_on_their_share_and_colluders_lie_on_the_same_tasks() {
    let wrong = Strategy::Wrong { percent: 30 };
    let lies = (0..10_000)
        .filter(|&t| wrong.forgery(1, "p1", "j", t).is_some())
        .count();
    assert!((2_700..3_300).contains(&lies), "{lies} of 10,000");
    let collude = Strategy::Collude {
        after: 5,
        percent: 20,
    };
    for t in 0..1_000 {
        assert_eq!(
            collude.forgery(6, "p1", "j", t),
            collude.forgery(9, "p2", "j", t)
        );
        assert_eq!(
            collude.forgery(5, "p1", "j", t),
            None,
            "honest for its first 5"
        );
    }
    assert_eq!(Strategy::Honest.forgery(100, "p", "j", 1), None);
    assert_eq!(
        Strategy::Wrong { percent: 100 }.forgery(1, "p", "j", 1),
        Some(Forgery::Own)
    );
}

#[derive(Clone, Debug)]
enum Event {
    Request(u8, u8),
    Fetched(u8, bool),
    Done(u8),
    Cancel(u8),
    Gone(u8),
    Tick,
}

fn event() -> impl proptest::strategy::Strategy<Value = Event> {
    prop_oneof![
        (0u8..4, 1u8..4).prop_map(|(f, n)| Event::Request(f, n)),
        (any::<u8>(), any::<bool>()).prop_map(|(r, ok)| Event::Fetched(r, ok)),
        any::<u8>().prop_map(Event::Done),
        (0u8..4).prop_map(Event::Cancel),
        (0u8..4).prop_map(Event::Gone),
        Just(Event::Tick),
    ]
}

proptest! {
    /// Whatever arrives in whatever order: the bookkeeping holds, no slot is
    /// over-given, no request starts twice, and a request that waits never
    /// waits while a slot is free.
    #[test]
    fn any_sequence_of_inputs_keeps_the_bounds(
        slots in 1u32..4,
        events in proptest::collection::vec(event(), 1..200),
    ) {
        let mut c: Core<u8> = Core::new(knobs(slots), terms(), Strategy::Honest, Totals::default());
        let mut admitted: Vec<RequestId> = Vec::new();
        let mut started_once = std::collections::BTreeSet::new();
        let mut running = std::collections::BTreeSet::new();
        for (now, e) in events.into_iter().enumerate() {
            let pick = |i: u8| admitted.get(i as usize % admitted.len().max(1)).copied();
            let input = match e {
                Event::Request(from, n) => Input::Request {
                    from,
                    tasks: (0..u64::from(n)).map(|t| Task {
                        job: JobId("j".into()),
                        attempt: Attempt { task: t + now as u64 * 8, attempt: 0 },
                        memory_bytes_max: 1,
                    }).collect(),
                },
                Event::Fetched(i, ok) => match pick(i) {
                    Some(request) => Input::Fetched {
                        request,
                        result: if ok { Ok(()) } else { Err("gone".into()) },
                    },
                    None => Input::Tick,
                },
                Event::Done(i) => match running.iter().nth(i as usize % running.len().max(1)) {
                    Some(&request) => Input::Done { request, ran: vec![] },
                    None => Input::Tick,
                },
                Event::Cancel(from) => Input::Cancel { from, job: JobId("j".into()), attempts: vec![] },
                Event::Gone(from) => Input::RequesterGone { from },
                Event::Tick => Input::Tick,
            };
            if let Input::Done { request, .. } = &input {
                running.remove(request);
            }
            for a in c.step(now as u64, input) {
                match a {
                    Action::Admit { request } => admitted.push(request),
                    Action::Start { request, .. } => {
                        prop_assert!(started_once.insert(request), "started twice");
                        running.insert(request);
                    }
                    _ => {}
                }
            }
            prop_assert!(running.len() as u32 <= slots);
            prop_assert_eq!(running.len() as u32, c.running());
            if let Err(e) = c.check() {
                prop_assert!(false, "{}", e);
            }
        }
    }
}
