//! Matching that explains itself: a job no offer can serve says why, per
//! reason, within 2 s of submission, and no provider is sent a task it
//! would have to refuse.

use crate::Env;
use crate::network::{NodeProcess, wait_until};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The job's status once `check` holds of it, within `limit` of now.
fn status_when(
    requester: &NodeProcess,
    id: &str,
    limit: Duration,
    check: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        let status = requester.get(&format!("/api/jobs/{id}"));
        if check(&status) {
            return (status, started.elapsed());
        }
        assert!(started.elapsed() < limit, "after {limit:?}: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_job_no_offer_can_serve_says_why_within_two_seconds_and_is_sent_nothing() {
    let env = Env::new();
    let requester = NodeProcess::requester(&env);
    // Price 100 per Gfuel (the default), tasks up to 1 GiB (the default).
    let provider = NodeProcess::provider(&env, "p1", &requester, &[]);
    wait_until("the provider's offer", Duration::from_secs(30), || {
        requester.offers() == 1
    });
    let base = std::fs::read_to_string(crate::small_render_job(&env)).expect("job");
    let too_cheap = env.write(
        "too-cheap.toml",
        &format!("{base}[requirements]\nprice_per_gfuel_max = 99\n"),
    );
    let too_big = env.write(
        "too-big.toml",
        &base.replace("[tasks]", "[limits]\nmemory_mib = 2048\n[tasks]"),
    );

    let cheap = requester.submit(&too_cheap);
    let (status, after) = status_when(&requester, &cheap, Duration::from_secs(2), |s| {
        !s["no_match"].is_null()
    });
    assert_eq!(status["no_match"]["offers_seen"], 1, "{status}");
    assert_eq!(status["no_match"]["price"], 1, "{status}");
    assert_eq!(status["state"], "running", "{status}");
    println!("no match by price shown {after:?} after submission");
    let shown = env.plexus(&["job", "status", &cheap, "--api", &requester.api]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("no match: 1 offer seen: 1 price"),
        "{text}{}",
        String::from_utf8_lossy(&shown.stderr)
    );

    let big = requester.submit(&too_big);
    let (status, _) = status_when(&requester, &big, Duration::from_secs(2), |s| {
        !s["no_match"].is_null()
    });
    assert_eq!(status["no_match"]["memory"], 1, "{status}");

    // Given time to have been sent something, neither job was.
    std::thread::sleep(Duration::from_secs(2));
    for id in [&cheap, &big] {
        let status = requester.get(&format!("/api/jobs/{id}"));
        assert_eq!(status["tasks_in_flight"], 0, "{status}");
        assert_eq!(status["retries"], 0, "{status}");
        let tasks = requester.get(&format!("/api/jobs/{id}/tasks"));
        assert!(
            tasks
                .as_array()
                .expect("tasks")
                .iter()
                .all(|t| t["attempts"] == 0),
            "{tasks}"
        );
    }
    let info = provider.get("/api/node");
    assert_eq!(info["provider"]["tasks_run"], 0, "{info}");

    // `plexus peers --job` says which requirements each provider misses.
    let shown = env.plexus(&["peers", "--job", &too_cheap, "--api", &requester.api]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&provider.peer_id) && l.ends_with("no: price")),
        "{text}{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let shown = env.plexus(&[
        "peers",
        "--job",
        &too_big,
        "--json",
        "--api",
        &requester.api,
    ]);
    let fits: Value = serde_json::from_slice(&shown.stdout).expect("peers as JSON");
    assert_eq!(fits[0]["peer_id"], provider.peer_id.as_str(), "{fits}");
    assert_eq!(fits[0]["unmet"], serde_json::json!(["memory"]), "{fits}");
    let base_job = env.write("fits.toml", &base);
    let shown = env.plexus(&["peers", "--job", &base_job, "--api", &requester.api]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&provider.peer_id) && l.ends_with("yes")),
        "{text}"
    );

    // A provider that meets the job arrives: the reason goes, the job runs.
    let _cheaper = NodeProcess::provider(&env, "p2", &requester, &["--price", "50"]);
    let (status, _) = status_when(&requester, &cheap, Duration::from_secs(60), |s| {
        s["state"] == "completed"
    });
    assert!(status["no_match"].is_null(), "{status}");
}
