//! Providers that take tasks and never answer, and providers shared by
//! two requesters at once.

use crate::Env;
use crate::network::{NodeProcess, submit_and_follow, unverified, wait_until};
use std::time::Duration;

/// Needs the test-only build: `cargo test --release -p cli --features adversary --test it silent`.
#[cfg(feature = "adversary")]
#[test]
fn a_silent_provider_costs_each_task_at_most_one_deadline_before_it_is_routed_around() {
    let env = Env::new();
    let job = unverified(&env, &crate::render_job(&env, "silent", 640, 360, 1));
    // A 5 s deadline: an attempt is given up 5 s + ATTEMPT_MARGIN after it was sent.
    let text = std::fs::read_to_string(&job).expect("job") + "[limits]\ntimeout_secs = 5\n";
    let job = env.write("silent-limited.toml", &text);
    let mut requester = NodeProcess::requester(&env);
    let honest: Vec<NodeProcess> = (0..2)
        .map(|i| NodeProcess::provider(&env, &format!("honest{i}"), &requester, &[]))
        .collect();
    let silent = NodeProcess::provider(&env, "silent", &requester, &["--misbehave", "silent"]);
    wait_until("three offers", Duration::from_secs(30), || {
        requester.offers() >= 3
    });
    let status = submit_and_follow(&env, &requester, &job, |_| {});
    assert_eq!(status["state"], "completed", "{status}");
    let id = status["id"].as_str().expect("id");
    let db = store::Db::open(&requester.dir.join("plexus.db")).expect("database");
    let attempts = db.attempts(id).expect("attempts");
    let waited: Vec<u64> = attempts
        .iter()
        .filter(|a| a.peer == silent.peer_id)
        .map(|a| a.task)
        .collect();
    assert!(!waited.is_empty(), "the silent provider was given tasks");
    for task in &waited {
        let timeouts = attempts
            .iter()
            .filter(|a| {
                a.task == *task && a.ended.as_deref().is_some_and(|e| e.contains("no answer"))
            })
            .count();
        // Speculation may settle it elsewhere before the deadline comes.
        assert!(timeouts <= 1, "task {task} waited out {timeouts} deadlines");
    }
    // Its whole credit window, at most, went unanswered; then it was left out.
    assert!(
        waited.len() <= 2,
        "tasks held by the silent provider: {waited:?}"
    );
    let timed_out = attempts
        .iter()
        .filter(|a| a.ended.as_deref().is_some_and(|e| e.contains("no answer")))
        .count();
    eprintln!(
        "silent provider: {} tasks held, {timed_out} attempts timed out; job {:.1} s",
        waited.len(),
        status["elapsed_s"].as_f64().unwrap_or(0.0)
    );
    // The ended job, listed after a restart from the database alone, keeps
    // its count of retries.
    let id = id.to_owned();
    drop(requester);
    requester = NodeProcess::requester(&env);
    let listed = requester.get(&format!("/api/jobs/{id}"));
    assert_eq!(listed["state"], "completed", "{listed}");
    assert_eq!(listed["retries"], status["retries"], "{listed}");
    drop(honest);
}

#[test]
fn two_requesters_sharing_three_providers_each_get_a_fair_share_of_slots() {
    let env = Env::new();
    let job = unverified(&env, &crate::render_job(&env, "shared", 960, 480, 2));
    let a = NodeProcess::start(
        &env,
        "requester-a",
        &["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"],
    );
    let b = NodeProcess::start(
        &env,
        "requester-b",
        &["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"],
    );
    let providers: Vec<NodeProcess> = (0..3)
        .map(|i| NodeProcess::provider(&env, &format!("p{i}"), &a, &["--bootstrap", &b.tcp]))
        .collect();
    wait_until(
        "three offers at each requester",
        Duration::from_secs(30),
        || a.offers() >= 3 && b.offers() >= 3,
    );
    // Submitted together; each followed to its end.
    let (sa, sb) = std::thread::scope(|s| {
        let ja = s.spawn(|| submit_and_follow(&env, &a, &job, |_| {}));
        let jb = s.spawn(|| submit_and_follow(&env, &b, &job, |_| {}));
        (ja.join().expect("a"), jb.join().expect("b"))
    });
    assert_eq!(sa["state"], "completed", "{sa}");
    assert_eq!(sb["state"], "completed", "{sb}");
    // The providers' own books: which requester each finished run was for,
    // and when. While both jobs ran, neither got under a third of the runs.
    let mut runs: Vec<(u64, String)> = Vec::new();
    for p in &providers {
        let db = store::Db::open(&p.dir.join("plexus.db")).expect("provider database");
        runs.extend(
            db.runs()
                .expect("runs")
                .into_iter()
                .map(|r| (r.finished_at_ms, r.requester)),
        );
    }
    let ended = |requester: &str| {
        runs.iter()
            .filter(|(_, r)| r == requester)
            .map(|(at, _)| *at)
            .max()
            .expect("runs for each requester")
    };
    let both_until = ended(&a.peer_id).min(ended(&b.peer_id));
    let (for_a, for_b) =
        runs.iter()
            .filter(|(at, _)| *at <= both_until)
            .fold((0u64, 0u64), |(x, y), (_, r)| {
                (
                    x + u64::from(*r == a.peer_id),
                    y + u64::from(*r == b.peer_id),
                )
            });
    let share_a = for_a as f64 / (for_a + for_b) as f64;
    eprintln!("while both ran: {for_a} runs for a, {for_b} for b (a's share {share_a:.2})");
    assert!(
        (1.0 / 3.0..=2.0 / 3.0).contains(&share_a),
        "a fair share each: {for_a} for a, {for_b} for b"
    );
}

#[test]
fn cancelling_a_job_stops_its_running_task_on_the_provider() {
    let env = Env::new();
    // One Mandelbrot tile of 6144²: about half a minute of work.
    let job = unverified(
        &env,
        &env.write(
            "long.toml",
            r#"
name = "long"
module = "builtin:mandelbrot"
args = ["--size", "6144", "--per-side", "1", "--tile", "0"]
[assemble]
kind = "tiles-png"
output = "long.png"
"#,
        ),
    );
    let requester = NodeProcess::requester(&env);
    let provider = NodeProcess::provider(&env, "p", &requester, &[]);
    wait_until("an offer", Duration::from_secs(30), || {
        requester.offers() >= 1
    });
    let submitted = env.plexus(&["job", "submit", &job, "--api", &requester.api]);
    assert!(submitted.status.success());
    let id = String::from_utf8_lossy(&submitted.stdout).trim().to_owned();
    let slots_free = || provider.get("/api/node")["provider"]["slots_free"].as_u64();
    wait_until(
        "the provider runs the task",
        Duration::from_secs(30),
        || slots_free() == Some(0),
    );
    std::thread::sleep(Duration::from_millis(500));
    let cancelled = env.plexus(&["job", "cancel", &id, "--api", &requester.api]);
    assert!(
        cancelled.status.success(),
        "{}",
        String::from_utf8_lossy(&cancelled.stderr)
    );
    let freed = wait_until(
        "the provider's slot is free again",
        Duration::from_secs(15),
        || slots_free() == Some(1),
    );
    eprintln!("slot freed {freed:?} after the cancel");
    let node = provider.get("/api/node");
    assert_eq!(
        node["provider"]["fuel_used"], 0,
        "nothing ran to the end: {node}"
    );
    let db = store::Db::open(&provider.dir.join("plexus.db")).expect("provider database");
    assert!(db.runs().expect("runs").is_empty(), "no run recorded");
    assert_eq!(
        requester.get(&format!("/api/jobs/{id}"))["state"],
        "cancelled"
    );
}
