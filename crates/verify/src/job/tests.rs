use super::*;

fn claim(digest: u8) -> Claim {
    Claim {
        engine: "e".into(),
        digest: [digest; 32],
    }
}

fn runs(actions: &[Action<char>]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Run { .. }))
        .count()
}

fn accepted(actions: &[Action<char>]) -> Option<(Option<char>, Method, Claim)> {
    actions.iter().find_map(|a| match a {
        Action::Accept {
            from,
            method,
            claim,
            ..
        } => Some((*from, *method, claim.clone())),
        _ => None,
    })
}

fn excluded(actions: &[Action<char>]) -> Vec<char> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Exclude { provider, .. } => Some(*provider),
            _ => None,
        })
        .collect()
}

fn trusted(v: &mut JobVerifier<char>, providers: &str) {
    for p in providers.chars() {
        v.set_record(
            p,
            Record {
                verified: 1000,
                streak: 1000,
                ..Record::default()
            },
        );
    }
}

#[test]
fn a_new_providers_result_is_replicated_and_accepted_when_both_agree() {
    let mut v = JobVerifier::new(1, Policy::default(), 1);
    let first = v.on_dispatch(0, 'a');
    assert_eq!(runs(&first), 1, "one replica asked for");
    assert!(!v.may_run(0, &'a'), "never the same provider twice");
    assert!(v.may_run(0, &'b'));
    assert!(v.on_dispatch(0, 'b').is_empty());
    assert!(v.on_result(0, 'a', claim(1)).is_empty(), "waits for b");
    let done = v.on_result(0, 'b', claim(1));
    assert_eq!(
        accepted(&done),
        Some((Some('a'), Method::Replicas, claim(1)))
    );
    assert!(v.is_complete());
    assert_eq!(v.record(&'a').verified, 1);
    assert_eq!(v.record(&'b').streak, 1);
}

#[test]
fn a_trusted_provider_is_accepted_on_reputation_unless_drawn() {
    let policy = Policy {
        floor: 0.0,
        ..Policy::default()
    };
    let mut v = JobVerifier::new(1, policy, 1);
    trusted(&mut v, "a");
    assert!(v.on_dispatch(0, 'a').is_empty(), "no replica at rate 0");
    let done = v.on_result(0, 'a', claim(7));
    assert_eq!(accepted(&done).map(|a| a.1), Some(Method::Reputation));

    // At the floor, about that share is spot-checked.
    let mut v = JobVerifier::new(10_000, Policy::default(), 2);
    trusted(&mut v, "a");
    let checked = (0..10_000)
        .filter(|&t| runs(&v.on_dispatch(t, 'a')) > 0)
        .count();
    assert!(
        (800..1200).contains(&checked),
        "{checked} of 10,000 checked at 0.1"
    );
}

#[test]
fn a_disagreement_escalates_and_the_ground_truth_decides() {
    let mut v = JobVerifier::new(1, Policy::default(), 1);
    v.on_dispatch(0, 'a');
    v.on_dispatch(0, 'b');
    v.on_result(0, 'a', claim(1));
    let escalated = v.on_result(0, 'b', claim(2));
    assert_eq!(runs(&escalated), 1, "one more replica, elsewhere");
    assert!(accepted(&escalated).is_none(), "no vote");
    v.on_dispatch(0, 'c');
    let local = v.on_result(0, 'c', claim(1));
    assert_eq!(
        local,
        vec![Action::RunLocally { task: 0 }],
        "2 against 1 is not enough"
    );
    let settled = v.on_ground_truth(0, claim(1));
    assert_eq!(
        accepted(&settled),
        Some((None, Method::GroundTruth, claim(1)))
    );
    assert_eq!(excluded(&settled), vec!['b']);
    assert!(v.is_excluded(&'b') && !v.is_excluded(&'a') && !v.is_excluded(&'c'));
    assert_eq!(v.record(&'b').disagreed, 1);
    assert_eq!(v.record(&'a').verified, 1);
}

#[test]
fn colluders_outnumbering_an_honest_provider_are_caught_by_the_requesters_own_run() {
    let policy = Policy {
        replicas: 3,
        ..Policy::default()
    };
    let mut v = JobVerifier::new(2, policy, 1);
    // Task 0: the colluders agree alone, before anyone knows.
    assert_eq!(runs(&v.on_dispatch(0, 'x')), 2);
    v.on_dispatch(0, 'y');
    v.on_dispatch(0, 'h');
    v.on_result(0, 'x', claim(1));
    v.on_result(0, 'y', claim(1));
    let first = v.on_result(0, 'h', claim(1));
    assert!(accepted(&first).is_some());
    // Task 1: two colluders against one honest provider.
    v.on_dispatch(1, 'x');
    v.on_dispatch(1, 'y');
    v.on_dispatch(1, 'h');
    v.on_result(1, 'x', claim(66));
    v.on_result(1, 'y', claim(66));
    let escalated = v.on_result(1, 'h', claim(2));
    assert_eq!(runs(&escalated), 1);
    assert!(accepted(&escalated).is_none());
    // Three providers in all: nobody unrelated is left.
    let local = v.on_no_provider(1);
    assert_eq!(local, vec![Action::RunLocally { task: 1 }]);
    let settled = v.on_ground_truth(1, claim(2));
    assert_eq!(
        accepted(&settled),
        Some((None, Method::GroundTruth, claim(2)))
    );
    assert_eq!(excluded(&settled), vec!['x', 'y']);
    // Task 0, which they vouched for, is verified again.
    assert!(settled.contains(&Action::Reopen { task: 0 }));
    assert!(!v.is_complete());
    assert!(!v.may_run(0, &'h'), "h ran it already");
    let starved = v.on_no_provider(0);
    assert_eq!(starved, vec![Action::RunLocally { task: 0 }]);
    let again = v.on_ground_truth(0, claim(1));
    assert_eq!(accepted(&again).map(|a| a.1), Some(Method::GroundTruth));
    assert!(v.is_complete());
    let summary = v.summary();
    assert_eq!(summary.by_ground_truth, 2);
    assert_eq!(summary.reverified, 1);
    assert_eq!(summary.excluded, vec!['x', 'y']);
}

#[test]
fn a_caught_providers_lone_results_are_reopened_and_run_twice_elsewhere() {
    let mut v = JobVerifier::new(2, Policy::default(), 1);
    trusted(&mut v, "ab");
    let policy_floor_zero = Policy {
        floor: 0.0,
        ..Policy::default()
    };
    let mut v2 = JobVerifier::new(2, policy_floor_zero, 1);
    trusted(&mut v2, "ab");
    v = v2;
    v.on_dispatch(0, 'a');
    assert!(accepted(&v.on_result(0, 'a', claim(9))).is_some());
    // Task 1 is checked by force: a has a result the ground truth contradicts.
    v.on_dispatch(1, 'a');
    v.on_dispatch(1, 'b');
    let _ = v.on_no_provider(1);
    v.on_result(1, 'a', claim(5));
    v.on_result(1, 'b', claim(6));
    let settled = v.on_ground_truth(1, claim(6));
    assert_eq!(excluded(&settled), vec!['a']);
    assert!(settled.contains(&Action::Reopen { task: 0 }));
    assert_eq!(
        settled
            .iter()
            .filter(|a| **a == Action::Run { task: 0 })
            .count(),
        2,
        "two fresh executions"
    );
    assert!(!v.may_run(0, &'a'));
}

#[test]
fn a_late_result_from_a_caught_provider_is_void() {
    let mut v = JobVerifier::new(2, Policy::default(), 1);
    v.on_dispatch(0, 'a');
    v.on_dispatch(0, 'b');
    v.on_dispatch(1, 'b');
    v.on_dispatch(1, 'c');
    v.on_result(0, 'a', claim(1));
    v.on_result(0, 'b', claim(2));
    v.on_dispatch(0, 'c');
    v.on_result(0, 'c', claim(1));
    let settled = v.on_ground_truth(0, claim(1));
    assert_eq!(excluded(&settled), vec!['b']);
    // b's answer to task 1 arrives after it was caught: c's alone is not enough.
    let after = v.on_result(1, 'b', claim(3));
    assert_eq!(runs(&after), 1, "a replacement for the void result");
    v.on_result(1, 'c', claim(3));
    v.on_dispatch(1, 'a');
    let done = v.on_result(1, 'a', claim(3));
    assert_eq!(accepted(&done).map(|a| a.0), Some(Some('c')));
}

#[test]
fn results_of_different_engines_are_never_taken_for_a_disagreement() {
    let mut v = JobVerifier::new(1, Policy::default(), 1);
    v.on_dispatch(0, 'a');
    v.on_dispatch(0, 'b');
    v.on_result(0, 'a', claim(1));
    let other = Claim {
        engine: "other".into(),
        digest: [2; 32],
    };
    let more = v.on_result(0, 'b', other);
    assert_eq!(runs(&more), 1, "another replica of a's engine is needed");
    assert!(excluded(&more).is_empty());
    v.on_dispatch(0, 'c');
    let done = v.on_result(0, 'c', claim(1));
    assert_eq!(accepted(&done).map(|a| a.2), Some(claim(1)));
    assert!(v.summary().excluded.is_empty());
}

#[test]
fn a_failed_attempt_is_run_again_and_a_timeout_is_recorded() {
    let mut v = JobVerifier::new(1, Policy::default(), 1);
    v.on_dispatch(0, 'a');
    v.on_dispatch(0, 'b');
    let again = v.on_failure(0, 'b', true);
    assert_eq!(runs(&again), 1);
    assert_eq!(v.record(&'b').timed_out, 1);
    assert!(v.may_run(0, &'b'), "a failure is not a result");
}

#[test]
fn a_claim_changes_with_every_field_a_provider_reports() {
    use types::{BlobHash, Outcome, OutputFile};
    let out = |name: &str, size| OutputFile {
        name: name.into(),
        size_bytes: size,
        hash: BlobHash::of(name.as_bytes()),
    };
    let ok = Outcome::Exited { code: 0 };
    let base = Claim::of("e", &ok, Some(10), &[out("a", 1)], b"");
    assert_eq!(base, Claim::of("e", &ok, Some(10), &[out("a", 1)], b""));
    for other in [
        Claim::of(
            "e",
            &Outcome::Exited { code: 1 },
            Some(10),
            &[out("a", 1)],
            b"",
        ),
        Claim::of("e", &ok, Some(11), &[out("a", 1)], b""),
        Claim::of("e", &ok, None, &[out("a", 1)], b""),
        Claim::of("e", &ok, Some(10), &[out("b", 1)], b""),
        Claim::of("e", &ok, Some(10), &[out("a", 2)], b""),
        Claim::of("e", &ok, Some(10), &[], b""),
        Claim::of("e", &ok, Some(10), &[out("a", 1)], b"x"),
    ] {
        assert_ne!(other.digest, base.digest, "{other:?}");
    }
    assert_ne!(Claim::of("f", &ok, Some(10), &[out("a", 1)], b""), base);
}

#[test]
fn a_provider_that_misbehaves_is_caught_and_its_task_run_elsewhere() {
    let mut v = JobVerifier::new(2, Policy::default(), 1);
    v.on_dispatch(0, 'a');
    v.on_dispatch(0, 'b');
    v.on_result(0, 'a', claim(1));
    let after = v.on_misbehaviour(0, 'b');
    assert_eq!(excluded(&after), vec!['b']);
    assert_eq!(runs(&after), 1, "b's replica replaced");
    assert!(v.needs_run(0));
    assert!(v.needs_run(1), "a fresh task needs its first run");
    v.on_dispatch(0, 'c');
    assert!(!v.needs_run(0), "all wanted executions are out");
    let done = v.on_result(0, 'c', claim(1));
    assert!(accepted(&done).is_some());
    assert!(!v.needs_run(0));
}

#[test]
fn a_speculative_copy_settles_a_straggler_and_the_late_result_is_ignored() {
    let mut v = JobVerifier::new(1, Policy::default(), 1);
    v.on_dispatch(0, 'a');
    v.on_dispatch(0, 'b');
    v.on_result(0, 'a', claim(1));
    // b is slow: a copy goes to c, which never held the task.
    assert!(v.may_speculate(0));
    assert!(v.may_run(0, &'c') && !v.may_run(0, &'b'));
    assert!(
        v.on_dispatch(0, 'c').is_empty(),
        "a copy asks for nothing more"
    );
    let done = v.on_result(0, 'c', claim(1));
    assert_eq!(
        accepted(&done).map(|a| a.1),
        Some(Method::Replicas),
        "no wait for b"
    );
    assert!(!v.may_speculate(0));
    assert!(
        v.on_result(0, 'b', claim(1)).is_empty(),
        "the straggler's answer is ignored"
    );
    assert_eq!(v.record(&'b').verified, 0);
    assert_eq!(v.summary().executions, 3);
}

#[test]
fn a_task_accepted_before_a_restart_stays_settled_until_a_voucher_is_caught() {
    let mut v = JobVerifier::new(3, Policy::default(), 1);
    v.restore_accepted(0, Method::Replicas, vec!['a', 'b']);
    v.restore_accepted(1, Method::GroundTruth, vec!['a']);
    v.restore_accepted(1, Method::GroundTruth, vec!['a']);
    assert_eq!(v.accepted(0), Some(Method::Replicas));
    assert!(!v.needs_run(0) && !v.needs_run(1) && v.needs_run(2));
    assert!(!v.may_run(0, &'a'), "a voucher is never given it again");
    assert!(!v.is_complete());
    v.on_dispatch(2, 'a');
    let caught = v.on_misbehaviour(2, 'a');
    assert_eq!(excluded(&caught), vec!['a']);
    assert!(caught.contains(&Action::Reopen { task: 0 }));
    assert!(
        !caught.contains(&Action::Reopen { task: 1 }),
        "the requester's own run stands"
    );
    assert_eq!(Method::from_name("SpotCheck"), Some(Method::SpotCheck));
    assert_eq!(Method::from_name("spot"), None);
}

#[test]
fn a_trapped_claim_hashes_the_traps_code_and_data_not_its_message() {
    // Pinned: a change to the trap's Display text must leave this as it is.
    let trapped = Outcome::Trapped {
        trap: types::Trap::OutOfFuel { fuel_limit: 1000 },
    };
    let claim = Claim::of("e", &trapped, Some(1000), &[], b"");
    let mut h = blake3::Hasher::new_derive_key("plexus result claim v2");
    for field in [
        &b"trapped"[..],
        b"out_of_fuel",
        &1000u64.to_le_bytes(),
        &1000u64.to_le_bytes(),
        &0u64.to_le_bytes(),
        b"",
    ] {
        h.update(&(field.len() as u64).to_le_bytes());
        h.update(field);
    }
    assert_eq!(claim.digest, *h.finalize().as_bytes());
    let other = Outcome::Trapped {
        trap: types::Trap::OutOfFuel { fuel_limit: 1001 },
    };
    assert_ne!(claim, Claim::of("e", &other, Some(1000), &[], b""));
}
