//! Stragglers: a provider throttled 10× must not hold a job's end hostage:
//! its executions still out at the end are copied to idle providers. The
//! time it saves is measured by running this test alone (BENCHMARKS.md).
//!
//! Needs the test-only build:
//! `cargo test --release -p cli --features adversary --test it stragglers`.
#![cfg(feature = "adversary")]

use crate::Env;
use crate::network::{NodeProcess, big_mandelbrot_job, submit_and_follow, unverified, wait_until};
use std::time::Duration;

#[test]
fn a_provider_throttled_ten_times_has_its_stragglers_copied_to_idle_providers() {
    let env = Env::new();
    // Dispatch and speculation alone: replicas would add their own waits.
    let job = unverified(&env, &big_mandelbrot_job(&env));
    let requester = NodeProcess::requester(&env);
    let _fast: Vec<NodeProcess> = (0..2)
        .map(|i| NodeProcess::provider(&env, &format!("fast{i}"), &requester, &[]))
        .collect();
    wait_until("two offers", Duration::from_secs(30), || {
        requester.offers() >= 2
    });
    let calm = submit_and_follow(&env, &requester, &job, |_| {});
    assert_eq!(calm["state"], "completed", "{calm}");

    let _slow = NodeProcess::provider(&env, "slow", &requester, &["--throttle", "10"]);
    wait_until("three offers", Duration::from_secs(30), || {
        requester.offers() >= 3
    });
    let with_slow = submit_and_follow(&env, &requester, &job, |_| {});
    assert_eq!(with_slow["state"], "completed", "{with_slow}");
    assert_eq!(with_slow["checksum"], calm["checksum"]);
    let (calm_s, slow_s) = (
        calm["elapsed_s"].as_f64().expect("time"),
        with_slow["elapsed_s"].as_f64().expect("time"),
    );
    // The ratio is a figure for BENCHMARKS.md (run this test alone), not an
    // assertion: tests share the machine with other tests.
    eprintln!(
        "64 tiles: {calm_s:.2} s on 2 providers, {slow_s:.2} s with a third 10× slower ({:.2}×)",
        slow_s / calm_s
    );
    // Copies of the slow provider's executions ran elsewhere.
    let metrics = ureq::get(&format!("{}/metrics", requester.api))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("text");
    let speculated = metrics
        .lines()
        .find(|l| l.starts_with("plexus_tasks_total{state=\"speculated\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(speculated >= 1.0, "no straggler was copied:\n{metrics}");
}
