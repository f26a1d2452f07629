//! The core's decisions, checked as data: inputs in, actions out. Providers
//! are `u32`s.

use super::*;
use proptest::prelude::*;
use types::limits::MIB;

fn offer(price: u64, slots: u32) -> Offer {
    Offer {
        cores: slots,
        memory_bytes: 8 << 30,
        task_memory_bytes_max: 1 << 30,
        slots_total: slots,
        slots_free: slots,
        price_per_gfuel: price,
        fuel_per_sec: 1_000_000_000,
        engine: "e".into(),
        expires_at_ms: 1 << 40,
    }
}

fn spec(tasks: u64, verified: bool) -> JobSpec {
    JobSpec {
        tasks,
        requirements: Requirements::default(),
        limits: TaskLimits {
            memory_bytes_max: 64 * MIB,
            deadline_ms: 10_000,
            fuel: Some(1_000_000),
            ..TaskLimits::default()
        },
        verification: verified.then(Policy::default),
        distinct_networks: false,
        draw_seed: 7,
        assignment_bytes: 300,
    }
}

fn job() -> JobId {
    JobId("j-1".into())
}

fn result_of(task: u64) -> Answer {
    Answer::Result(Reported {
        claim: Claim {
            engine: "e".into(),
            digest: [task as u8; 32],
        },
        fuel: 10 + task,
        run_ms: 1,
        answer_bytes: 100,
        failure: None,
    })
}

/// A core with these (price, slots) offers from providers 1, 2, ...
fn core_with(offers: &[(u64, u32)]) -> Scheduler<u32> {
    let mut s = Scheduler::new(Knobs::default(), []);
    for (i, &(price, slots)) in offers.iter().enumerate() {
        s.step(
            0,
            Input::Offer {
                peer: i as u32 + 1,
                offer: offer(price, slots),
                rtt_us: None,
                network: None,
            },
        );
    }
    s
}

/// Submits the job of `tasks` tasks at `now_ms`.
fn submit(s: &mut Scheduler<u32>, now_ms: u64, tasks: u64, verified: bool) -> Vec<Action<u32>> {
    s.step(
        now_ms,
        Input::Submit {
            job: job(),
            spec: spec(tasks, verified),
        },
    )
}

fn sends(actions: &[Action<u32>]) -> Vec<(RequestId, u32, Vec<Attempt>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                request,
                peer,
                attempts,
                ..
            } => Some((*request, *peer, attempts.clone())),
            _ => None,
        })
        .collect()
}

fn writes(actions: &[Action<u32>]) -> Vec<&Write<u32>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Persist(w) => Some(w),
            _ => None,
        })
        .collect()
}

#[test]
fn a_job_goes_to_the_cheapest_provider_and_each_attempt_is_written_before_its_send() {
    let mut s = core_with(&[(5, 1), (2, 1)]);
    let actions = submit(&mut s, 10, 4, false);
    let out = sends(&actions);
    // Credit: one slot and one prefetch each, the cheaper first.
    let peers: Vec<u32> = out.iter().map(|(_, p, _)| *p).collect();
    assert_eq!(peers, vec![2, 2, 1, 1]);
    for (request, _, attempts) in &out {
        let send_at = actions
            .iter()
            .position(|a| matches!(a, Action::Send { request: r, .. } if r == request))
            .expect("present");
        for a in attempts {
            let written_at = actions.iter().position(
                |x| matches!(x, Action::Persist(Write::Attempt { attempt, .. }) if attempt == a),
            );
            assert!(
                written_at.is_some_and(|w| w < send_at),
                "{a:?} written before its send"
            );
        }
    }
    assert_eq!(s.in_flight(&2), 2);
}

#[test]
fn a_settled_job_assembles_and_completes() {
    let mut s = core_with(&[(1, 4)]);
    let actions = submit(&mut s, 0, 2, false);
    let out = sends(&actions);
    assert_eq!(out.len(), 2);
    let mut all = Vec::new();
    for (request, peer, attempts) in out {
        all.extend(s.step(
            5,
            Input::Answers {
                request,
                peer,
                answers: attempts.iter().map(|a| (*a, result_of(a.task))).collect(),
            },
        ));
    }
    let settled: Vec<u64> = writes(&all)
        .iter()
        .filter_map(|w| match w {
            Write::Settled { task, payees, .. } => {
                assert_eq!(payees, &vec![(1, 10 + task)]);
                Some(*task)
            }
            _ => None,
        })
        .collect();
    assert_eq!(settled, vec![0, 1]);
    assert!(all.contains(&Action::Assemble { job: job() }));
    let view = s.job(&job()).expect("present");
    assert_eq!(
        (view.phase(), view.fuel(), view.tasks_done()),
        (JobPhase::Assembling, 21, 2)
    );
    let end = s.step(
        9,
        Input::Assembled {
            job: job(),
            result: Ok(()),
        },
    );
    assert_eq!(
        writes(&end),
        vec![&Write::JobEnded {
            job: job(),
            phase: JobPhase::Completed,
            error: None
        }]
    );
    assert_eq!(s.in_flight(&1), 0);
}

#[test]
fn a_job_no_offer_can_serve_is_never_sent_a_task_and_says_why() {
    let mut s = core_with(&[(50, 1), (60, 1), (1, 1)]);
    // Provider 3 is cheap but allows a task too little memory.
    s.step(
        0,
        Input::Offer {
            peer: 3,
            offer: Offer {
                task_memory_bytes_max: 16 * MIB,
                ..offer(1, 1)
            },
            rtt_us: None,
            network: None,
        },
    );
    let mut spec = spec(3, false);
    spec.requirements.price_per_gfuel_max = Some(10);
    let actions = s.step(0, Input::Submit { job: job(), spec });
    assert!(sends(&actions).is_empty());
    let seen = s
        .job(&job())
        .expect("present")
        .no_match()
        .expect("explained");
    assert_eq!(
        (seen.offers_seen, seen.price, seen.memory, seen.matched()),
        (3, 2, 1, 0)
    );
    assert_eq!(seen.to_string(), "3 offers seen: 2 price, 1 memory");
    // Offers that expire are counted as such.
    s.step(u64::MAX / 2, Input::Tick);
    let seen = s.job(&job()).expect("present").no_match().expect("present");
    assert_eq!(seen.expired, 3);
}

#[test]
fn a_failed_attempt_backs_off_then_goes_again_and_the_job_fails_after_attempts_max() {
    // Enough providers that exclusion (after a few failures each) leaves one.
    let mut s = core_with(&[(1, 1); 5]);
    let mut now = 0;
    let mut actions = submit(&mut s, now, 1, false);
    let knobs = *s.knobs();
    for n in 1..=knobs.attempts_max {
        let (request, peer, attempts) = sends(&actions).pop().expect("sent again");
        assert_eq!(attempts[0].attempt, n, "attempt numbers are used once");
        actions = s.step(
            now,
            Input::Answers {
                request,
                peer,
                answers: vec![(
                    attempts[0],
                    Answer::Failed(Failure::Error {
                        reason: "no blob".into(),
                    }),
                )],
            },
        );
        if n == knobs.attempts_max {
            break;
        }
        assert!(sends(&actions).is_empty(), "not before its backoff");
        now += knobs.backoff_ms(n) - 1;
        assert!(sends(&s.step(now, Input::Tick)).is_empty());
        now += 1;
        actions = s.step(now, Input::Tick);
    }
    let view = s.job(&job()).expect("present");
    assert_eq!(view.phase(), JobPhase::Failed);
    let error = view.error().expect("present");
    assert!(
        error.starts_with("task 0 failed 5 attempts: 1) "),
        "{error}"
    );
    assert_eq!(error.matches("no blob").count(), 5, "{error}");
}

#[test]
fn a_request_past_its_deadline_is_cancelled_and_its_task_goes_elsewhere() {
    let mut s = core_with(&[(1, 1), (2, 1)]);
    let actions = submit(&mut s, 0, 1, false);
    let (_, first, attempts) = sends(&actions).pop().expect("present");
    assert_eq!(first, 1);
    let timeout = s
        .knobs()
        .attempt_timeout_ms(&spec(1, false).limits, 1_000_000_000);
    assert!(sends(&s.step(timeout - 1, Input::Tick)).is_empty());
    let actions = s.step(timeout, Input::Tick);
    assert!(actions.contains(&Action::Cancel {
        peer: 1,
        job: job(),
        attempts: attempts.clone()
    }));
    let backoff = s.knobs().backoff_ms(1);
    let again = sends(&s.step(timeout + backoff, Input::Tick));
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].1, again[0].2[0].attempt),
        (2, 2),
        "excluded: the other provider, the next attempt"
    );
    assert_eq!(s.in_flight(&1), 0);
}

#[test]
fn a_provider_gone_loses_its_attempts_to_the_queue_and_a_late_answer_is_ignored() {
    let mut s = core_with(&[(1, 1), (2, 1)]);
    let actions = submit(&mut s, 0, 1, false);
    let (request, peer, attempts) = sends(&actions).pop().expect("present");
    s.step(1, Input::PeerGone { peer });
    assert_eq!(s.in_flight(&peer), 0);
    let late = s.step(
        2,
        Input::Answers {
            request,
            peer,
            answers: vec![(attempts[0], result_of(0))],
        },
    );
    assert!(
        writes(&late)
            .iter()
            .all(|w| !matches!(w, Write::Settled { .. }))
    );
    let again = sends(&s.step(1 + s.knobs().retry_backoff_ms, Input::Tick));
    assert_eq!(again[0].1, 2);
}

#[test]
fn a_step_whose_writes_fail_sends_nothing_more_and_fails_its_job() {
    let mut s = core_with(&[(1, 2)]);
    let actions = submit(&mut s, 0, 4, false);
    let requests: Vec<RequestId> = sends(&actions).iter().map(|(r, _, _)| *r).collect();
    let after = s.step(
        0,
        Input::Unrecorded {
            jobs: vec![],
            requests,
            error: "disk full".into(),
        },
    );
    assert!(sends(&after).is_empty());
    let view = s.job(&job()).expect("present");
    assert_eq!(view.phase(), JobPhase::Failed);
    assert_eq!(
        view.error(),
        Some("cannot record the attempts it sends: disk full")
    );
    assert_eq!((view.in_flight(), s.in_flight(&1)), (0, 0));
}

#[test]
fn a_new_providers_result_is_replicated_and_agreeing_replicas_are_both_paid() {
    let mut s = core_with(&[(1, 1), (2, 1)]);
    let actions = submit(&mut s, 0, 1, true);
    let out = sends(&actions);
    let peers: Vec<u32> = out.iter().map(|(_, p, _)| *p).collect();
    assert_eq!(peers, vec![1, 2], "two replicas on two providers");
    let mut all = Vec::new();
    for (request, peer, attempts) in out {
        all.extend(s.step(
            1,
            Input::Answers {
                request,
                peer,
                answers: vec![(attempts[0], result_of(0))],
            },
        ));
    }
    let settled = writes(&all)
        .into_iter()
        .find(|w| matches!(w, Write::Settled { .. }))
        .cloned();
    assert_eq!(
        settled,
        Some(Write::Settled {
            job: job(),
            task: 0,
            fuel: 10,
            method: Some(Method::Replicas),
            from: Some(1),
            payees: vec![(1, 10), (2, 10)],
        })
    );
}

#[test]
fn a_restored_job_keeps_its_settled_tasks_and_numbers_attempts_after_the_last() {
    let mut s = core_with(&[(1, 1)]);
    let restored = Restored {
        settled: vec![SettledTask {
            task: 0,
            fuel: 10,
            method: None,
            payees: vec![(1, 10)],
        }],
        attempts_used: vec![(0, 1), (1, 3)],
        retries: 2,
    };
    let actions = s.step(
        0,
        Input::Restore {
            job: job(),
            spec: spec(2, false),
            restored,
        },
    );
    let out = sends(&actions);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].2,
        vec![Attempt {
            task: 1,
            attempt: 4
        }]
    );
    let view = s.job(&job()).expect("present");
    assert_eq!((view.tasks_done(), view.fuel(), view.retries()), (1, 10, 2));
}

#[test]
fn a_straggler_gets_one_copy_on_an_idle_provider_and_the_first_result_wins() {
    let mut s = core_with(&[(1, 1), (2, 1)]);
    let mut knobs = *s.knobs();
    knobs.prefetch_per_provider = 0;
    s.knobs = knobs;
    let actions = submit(&mut s, 0, 3, false);
    let out = sends(&actions);
    assert_eq!(out.len(), 2);
    // Provider 2 answers fast and takes the third task; provider 1 stalls.
    let (r2, _, a2) = out
        .iter()
        .find(|(_, p, _)| *p == 2)
        .cloned()
        .expect("present");
    let next = s.step(
        10,
        Input::Answers {
            request: r2,
            peer: 2,
            answers: vec![(a2[0], result_of(a2[0].task))],
        },
    );
    let (r3, _, a3) = sends(&next).pop().expect("present");
    let none = s.step(
        20,
        Input::Answers {
            request: r3,
            peer: 2,
            answers: vec![(a3[0], result_of(a3[0].task))],
        },
    );
    assert!(sends(&none).is_empty(), "not due yet");
    let after = knobs.speculate_after_min_ms;
    let copy = sends(&s.step(after + 1, Input::Tick));
    let (r1, _, a1) = out
        .iter()
        .find(|(_, p, _)| *p == 1)
        .cloned()
        .expect("present");
    assert_eq!(copy.len(), 1);
    assert_eq!((copy[0].1, copy[0].2[0].task), (2, a1[0].task));
    let (rc, _, ac) = copy[0].clone();
    let won = s.step(
        after + 2,
        Input::Answers {
            request: rc,
            peer: 2,
            answers: vec![(ac[0], result_of(ac[0].task))],
        },
    );
    assert!(won.contains(&Action::Cancel {
        peer: 1,
        job: job(),
        attempts: a1.clone()
    }));
    // The stalled one's late answer changes nothing.
    let late = s.step(
        after + 3,
        Input::Answers {
            request: r1,
            peer: 1,
            answers: vec![(a1[0], result_of(a1[0].task))],
        },
    );
    assert!(
        writes(&late)
            .iter()
            .all(|w| !matches!(w, Write::Settled { .. }))
    );
    assert_eq!(s.job(&job()).expect("present").tasks_done(), 3);
}

#[test]
fn a_core_holding_jobs_max_jobs_refuses_the_next_and_stays_within_its_bound() {
    let mut s = core_with(&[]);
    for n in 0..JOBS_MAX {
        let job = JobId(format!("j-{n}"));
        s.step(
            0,
            Input::Submit {
                job,
                spec: spec(1, false),
            },
        );
    }
    let refused = s.step(
        0,
        Input::Submit {
            job: JobId("one-more".into()),
            spec: spec(1, false),
        },
    );
    assert_eq!(
        writes(&refused),
        vec![&Write::JobEnded {
            job: JobId("one-more".into()),
            phase: JobPhase::Failed,
            error: Some(format!("the requester holds {JOBS_MAX} jobs (JOBS_MAX)")),
        }]
    );
    assert_eq!(s.jobs().count(), JOBS_MAX);
    assert!(s.job(&JobId("one-more".into())).is_none());
}

#[test]
fn knobs_back_off_exponentially_up_to_a_cap_and_time_an_attempt_by_fuel_or_deadline() {
    let k = Knobs::default();
    assert_eq!(
        (
            k.backoff_ms(1),
            k.backoff_ms(2),
            k.backoff_ms(3),
            k.backoff_ms(40)
        ),
        (100, 200, 400, 5_000)
    );
    let limits = TaskLimits {
        fuel: Some(2_000_000_000),
        deadline_ms: 60_000,
        ..TaskLimits::default()
    };
    // 2 s of fuel at 1 Gfuel/s, 4x slack: 8 s, under the deadline.
    assert_eq!(
        k.attempt_timeout_ms(&limits, 1_000_000_000),
        8_000 + k.attempt_margin_ms
    );
    assert_eq!(
        k.attempt_timeout_ms(&limits, 0),
        60_000 + k.attempt_margin_ms
    );
}

/// One random event for the property below.
#[derive(Clone, Debug)]
enum Event {
    Offer {
        peer: u32,
        price: u64,
        slots: u32,
    },
    Gone {
        peer: u32,
    },
    /// Answer the oldest request out with results, failures or a rejection.
    Answer {
        kind: u8,
    },
    Tick {
        advance_ms: u64,
    },
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (1u32..6, 1u64..5, 1u32..4).prop_map(|(peer, price, slots)| Event::Offer {
            peer,
            price,
            slots
        }),
        (1u32..6).prop_map(|peer| Event::Gone { peer }),
        (0u8..4).prop_map(|kind| Event::Answer { kind }),
        (0u64..20_000).prop_map(|advance_ms| Event::Tick { advance_ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever happens: every send is preceded by the writes of its
    /// attempts in the same step, no provider holds more requests than its
    /// credit, no attempt number is used twice, nothing is settled twice
    /// without a reopening, and the job's fuel is that of its settled tasks.
    #[test]
    fn the_core_keeps_its_invariants_whatever_happens(
        events in proptest::collection::vec(event(), 1..120),
        verified in any::<bool>(),
    ) {
        let mut s: Scheduler<u32> = Scheduler::new(Knobs::default(), []);
        let mut now = 0u64;
        let mut out: Vec<(RequestId, u32, Vec<Attempt>)> = Vec::new();
        let mut used = std::collections::HashSet::new();
        let mut settled = std::collections::HashMap::new();
        let mut step = |s: &mut Scheduler<u32>, now: u64, input: Input<u32>, out: &mut Vec<(RequestId, u32, Vec<Attempt>)>| -> Result<(), TestCaseError> {
            let actions = s.step(now, input);
            let mut written = std::collections::HashSet::new();
            for a in &actions {
                match a {
                    Action::Persist(Write::Attempt { attempt, .. }) => {
                        prop_assert!(used.insert(*attempt), "attempt {:?} used twice", attempt);
                        written.insert(*attempt);
                    }
                    Action::Persist(Write::Settled { task, fuel, .. }) => {
                        prop_assert!(settled.insert(*task, *fuel).is_none(), "task {} settled twice", task);
                    }
                    Action::Persist(Write::Reopened { task, .. }) => { settled.remove(task); }
                    Action::Send { request, peer, attempts, .. } => {
                        for x in attempts {
                            prop_assert!(written.contains(x), "{:?} sent before it was written", x);
                        }
                        out.push((*request, *peer, attempts.clone()));
                    }
                    Action::RunLocally { .. } | Action::Assemble { .. } | Action::Cancel { .. } | Action::Persist(_) => {}
                }
            }
            // A provider sent work holds no more requests than its credit.
            for a in &actions {
                if let Action::Send { peer, .. } = a {
                    prop_assert!(s.in_flight(peer) <= s.credit(peer), "{} over its credit", peer);
                }
            }
            if let Some(view) = s.job(&job()) {
                prop_assert_eq!(view.fuel(), settled.values().sum::<u64>());
            }
            Ok(())
        };
        step(&mut s, now, Input::Submit { job: job(), spec: spec(12, verified) }, &mut out)?;
        for e in events {
            match e {
                Event::Offer { peer, price, slots } => {
                    step(&mut s, now, Input::Offer { peer, offer: offer(price, slots), rtt_us: None, network: None }, &mut out)?;
                }
                Event::Gone { peer } => step(&mut s, now, Input::PeerGone { peer }, &mut out)?,
                Event::Answer { kind } => {
                    if out.is_empty() { continue; }
                    let (request, peer, attempts) = out.remove(0);
                    let answers = attempts.iter().map(|a| (*a, match kind {
                        0 | 1 => result_of(a.task),
                        2 => Answer::Failed(Failure::Error { reason: "x".into() }),
                        _ => Answer::Failed(Failure::Refused { reason: "busy".into() }),
                    })).collect();
                    step(&mut s, now, Input::Answers { request, peer, answers }, &mut out)?;
                }
                Event::Tick { advance_ms } => {
                    now += advance_ms;
                    step(&mut s, now, Input::Tick, &mut out)?;
                }
            }
        }
    }
}

/// A result that used the task's whole fuel limit.
fn full_result(task: u64) -> Answer {
    match result_of(task) {
        Answer::Result(r) => Answer::Result(Reported {
            fuel: 1_000_000,
            ..r
        }),
        other => other,
    }
}

#[test]
fn a_budget_lets_out_only_what_it_can_pay_in_the_worst_case_and_the_job_fails_once_it_is_spent() {
    // One execution's worst case: 10⁶ fuel × 1000 per Gfuel = 1 credit.
    let mut s = core_with(&[(1000, 4)]);
    let mut spec = spec(10, false);
    spec.requirements.price_per_gfuel_max = Some(1000);
    spec.requirements.budget = Some(types::Credits(3));
    let actions = s.step(0, Input::Submit { job: job(), spec });
    let out = sends(&actions);
    let sent: usize = out.iter().map(|(_, _, a)| a.len()).sum();
    assert_eq!(sent, 3, "credit for 5, budget for 3: {out:?}");
    // A task that fails frees its worst case; one more goes out instead.
    let (request, peer, attempts) = out[0].clone();
    let failed = s.step(
        1,
        Input::Answers {
            request,
            peer,
            answers: vec![(
                attempts[0],
                Answer::Failed(Failure::Error { reason: "x".into() }),
            )],
        },
    );
    let again: usize = sends(&failed).iter().map(|(_, _, a)| a.len()).sum();
    assert_eq!(again, 1, "{failed:?}");
    // Every result costs its whole limit: three paid, none more sent.
    let mut all = out[1..].to_vec();
    all.extend(sends(&failed));
    for (request, peer, attempts) in all {
        let answers = attempts.iter().map(|a| (*a, full_result(a.task))).collect();
        let more = s.step(
            2,
            Input::Answers {
                request,
                peer,
                answers,
            },
        );
        assert!(sends(&more).is_empty(), "{more:?}");
    }
    let view = s.job(&job()).expect("present");
    assert_eq!((view.tasks_done(), view.committed_credits()), (3, 3));
    let ended = s.step(3, Input::Tick);
    let error = writes(&ended).iter().find_map(|w| match w {
        Write::JobEnded {
            phase: JobPhase::Failed,
            error,
            ..
        } => error.clone(),
        _ => None,
    });
    let error = error.expect("the job fails when its budget is spent");
    assert!(error.starts_with("budget spent: 3 of 3 credits"), "{error}");
}
