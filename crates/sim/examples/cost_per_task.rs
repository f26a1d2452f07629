//! The requester's CPU per settled task against the number of live offers:
//! the real `scheduler` (with `market`'s book and `verify` inside) driven
//! as fast as it goes, every request answered at once in the order sent,
//! with 10, 1,000 and 10,000 offers of 4 slots each. Prints µs per settled
//! task and the growth from 10 to 10,000 offers (goal: ≤ 2×).
//!
//! `cargo run --release -p sim --example cost_per_task`

use scheduler::{Action, Answer, Input, Knobs, Reported, Scheduler};
use std::collections::VecDeque;
use std::time::Instant;
use types::{JobId, Offer};
use verify::Claim;

const TASKS: u64 = 200_000;

fn offer() -> Offer {
    Offer {
        cores: 4,
        memory_bytes: 16 << 30,
        task_memory_bytes_max: 4 << 30,
        slots_total: 4,
        slots_free: 4,
        price_per_gfuel: 1,
        fuel_per_sec: 1_000_000_000,
        engine: "sim".into(),
        expires_at_ms: u64::MAX / 4,
    }
}

/// µs of core time per settled task (the providers' republished offers
/// included: they are part of what a requester handles), and executions
/// per task.
fn run(offers: u32, verified: bool) -> (f64, f64) {
    // Providers with a long verified record, at every size alike: the
    // verification work per task is then the floor's everywhere, and what
    // changes from 10 to 10,000 offers is the cost of the offers alone.
    let record = verify::Record {
        verified: 1_000,
        streak: 1_000,
        ..verify::Record::default()
    };
    let mut s: Scheduler<u32> = Scheduler::new(Knobs::default(), (0..offers).map(|p| (p, record)));
    for peer in 0..offers {
        s.step(
            0,
            Input::Offer {
                peer,
                offer: offer(),
                rtt_us: Some(u64::from(peer % 97) * 10),
                network: None,
            },
        );
    }
    let job = JobId("j".into());
    let spec = sim::spec(&sim::SimConfig::new(offers, TASKS, 1), 7);
    let spec = scheduler::JobSpec {
        verification: verified.then(verify::Policy::default),
        ..spec
    };
    let started = Instant::now();
    let mut out = VecDeque::new();
    let mut now = 0u64;
    let queue = |actions: Vec<Action<u32>>, out: &mut VecDeque<_>| {
        for a in actions {
            if let Action::Send {
                request,
                peer,
                attempts,
                ..
            } = a
            {
                out.push_back((request, peer, attempts));
            }
        }
    };
    queue(
        s.step(
            now,
            Input::Submit {
                job: job.clone(),
                spec,
            },
        ),
        &mut out,
    );
    let mut answered = 0u64;
    while let Some((request, peer, attempts)) = out.pop_front() {
        // The clock: 20 answers a millisecond, so that no request outlives
        // its deadline while 50,000 wait their turn in the queue.
        answered += 1;
        let tick = answered.is_multiple_of(20);
        now += u64::from(tick);
        let answers = attempts
            .iter()
            .map(|a| {
                let mut digest = [0u8; 32];
                digest[..8].copy_from_slice(&a.task.to_le_bytes());
                let r = Reported {
                    claim: Claim {
                        engine: "sim".into(),
                        digest,
                    },
                    fuel: 1_000,
                    run_ms: 10,
                    answer_bytes: 200,
                    failure: None,
                };
                (*a, Answer::Result(r))
            })
            .collect();
        queue(
            s.step(
                now,
                Input::Answers {
                    request,
                    peer,
                    answers,
                },
            ),
            &mut out,
        );
        if tick && now.is_multiple_of(100) {
            queue(s.step(now, Input::Tick), &mut out);
        }
        // Offers live a minute: the providers publish theirs again.
        if tick && now.is_multiple_of(20_000) {
            for peer in 0..offers {
                let input = Input::Offer {
                    peer,
                    offer: Offer {
                        expires_at_ms: now + types::offer::OFFER_TTL_MS,
                        ..offer()
                    },
                    rtt_us: Some(u64::from(peer % 97) * 10),
                    network: None,
                };
                queue(s.step(now, input), &mut out);
            }
        }
    }
    let view = s.job(&job).expect("the job");
    assert_eq!(view.tasks_done(), TASKS, "every task settled");
    let us = started.elapsed().as_secs_f64() * 1e6 / TASKS as f64;
    (us, view.executions() as f64 / TASKS as f64)
}

fn main() {
    for verified in [false, true] {
        let at: Vec<(u32, (f64, f64))> = [10, 1_000, 10_000]
            .into_iter()
            .map(|n| (n, run(n, verified)))
            .collect();
        let line: Vec<String> = at
            .iter()
            .map(|(n, (us, runs))| format!("{n} offers {us:.2} µs ({runs:.2} executions)"))
            .collect();
        println!(
            "verification {}: {} per settled task; 10,000 / 10 offers = {:.2}×",
            if verified { "on " } else { "off" },
            line.join(", "),
            at[2].1.0 / at[0].1.0
        );
    }
}
