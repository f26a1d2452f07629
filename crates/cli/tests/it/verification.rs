//! Verification with real processes: providers that lie in each of the
//! ways the `adversary` build knows, and a requester that must end every
//! job with the honest output anyway.
//!
//! Needs the test-only build:
//! `cargo test --release -p cli --features adversary --test it verification`.
#![cfg(feature = "adversary")]

use crate::Env;
use crate::network::{NodeProcess, fetch_result, submit_and_follow, tasks_done, wait_until};
use serde_json::Value;
use std::time::Duration;

/// A Mandelbrot image cut into `per_side`² small tiles.
fn tiles_job(env: &Env, name: &str, size: u32, per_side: u32, extra: &str) -> String {
    env.write(
        &format!("{name}.toml"),
        &format!(
            r#"
name = "{name}"
module = "builtin:mandelbrot"
args = ["--size", "{size}", "--per-side", "{per_side}", "--tile", "{{tile}}", "--max-iter", "200"]
[tasks]
tile = {{ start = 0, end = {tiles} }}
[assemble]
kind = "tiles-png"
output = "mandel.png"
{extra}
"#,
            tiles = per_side * per_side
        ),
    )
}

fn excluded(status: &Value) -> Vec<String> {
    let mut peers: Vec<String> = status["verification"]["excluded"]
        .as_array()
        .expect("excluded")
        .iter()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect();
    peers.sort();
    peers
}

fn ids(nodes: &[NodeProcess]) -> Vec<String> {
    let mut peers: Vec<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();
    peers.sort();
    peers
}

fn count(status: &Value, field: &str) -> u64 {
    status["verification"][field].as_u64().unwrap_or(0)
}

fn network(
    env: &Env,
    honest: usize,
    cheat: &[&str],
) -> (NodeProcess, Vec<NodeProcess>, Vec<NodeProcess>) {
    let requester = NodeProcess::requester(env);
    let honest: Vec<NodeProcess> = (0..honest)
        .map(|i| NodeProcess::provider(env, &format!("honest{i}"), &requester, &[]))
        .collect();
    let cheaters: Vec<NodeProcess> = cheat
        .iter()
        .enumerate()
        .map(|(i, mode)| {
            NodeProcess::provider(
                env,
                &format!("cheater{i}"),
                &requester,
                &["--misbehave", mode],
            )
        })
        .collect();
    let all = honest.len() + cheaters.len();
    wait_until("every offer", Duration::from_secs(60), || {
        requester.offers() >= all
    });
    (requester, honest, cheaters)
}

#[test]
fn cheaters_among_twelve_providers_are_all_caught_and_never_change_the_output() {
    let env = Env::new();
    // 2,025 tiles of 40×40 pixels.
    let job = tiles_job(&env, "tiles", 1800, 45, "");
    let local = env.run_job(&job, &env.path("local"), &[]);
    let (requester, _honest, cheaters) = network(&env, 10, &["wrong:100", "wrong:100"]);

    // 20% of the providers cheat on every task.
    let status = submit_and_follow(&env, &requester, &job, |_| {});
    assert_eq!(status["state"], "completed", "{status}");
    eprintln!(
        "2,025 tasks on 12 providers, 2 cheating: {} s, {} executions",
        status["elapsed_s"], status["verification"]["executions"]
    );
    assert_eq!(status["checksum"], local["checksum"], "the honest output");
    assert_eq!(
        excluded(&status),
        ids(&cheaters),
        "every cheater, and only them: {status}"
    );
    for c in &cheaters {
        assert_eq!(
            tasks_done(&status, &c.peer_id),
            0,
            "no result of a cheater accepted"
        );
    }
    assert!(count(&status, "disagreements") >= 2);
    // Each disagreement is settled by the requester's own run; both
    // cheaters may hold replicas of one task, and one run catches both
    // (that both were caught is the exclusion asserted above).
    assert!(count(&status, "by_ground_truth") >= 1, "{status}");
    assert!(count(&status, "ground_truth_runs") >= 1, "{status}");
    let verified = [
        "by_replicas",
        "by_spot_check",
        "by_ground_truth",
        "on_reputation",
    ]
    .iter()
    .map(|f| count(&status, f))
    .sum::<u64>();
    assert_eq!(verified, 2025, "every task is accounted for once");
    let bound = &status["verification"]["bound"];
    assert_eq!(bound["providers"], 12, "{status}");
    assert!(bound["per_replicated_task"].as_f64().unwrap_or(1.0) < 0.05);

    // The same requester keeps the record: the caught ones get nothing more.
    let again = submit_and_follow(&env, &requester, &job, |_| {});
    assert_eq!(again["checksum"], local["checksum"]);
    for c in &cheaters {
        assert!(
            again["providers"]
                .as_array()
                .expect("providers")
                .iter()
                .all(|p| p["peer_id"] != c.peer_id.as_str()),
            "a caught provider's offers are ignored: {again}"
        );
    }
}

#[test]
fn cheaters_on_a_tenth_of_tasks_get_no_wrong_result_accepted_in_ten_runs() {
    let env = Env::new();
    let job = tiles_job(&env, "tiles", 1800, 45, "");
    let local = env.run_job(&job, &env.path("local"), &[]);
    let (requester, _honest, cheaters) = network(&env, 10, &["wrong:10", "wrong:10"]);
    let mut caught_in = Vec::new();
    for run in 0..10 {
        let status = submit_and_follow(&env, &requester, &job, |_| {});
        assert_eq!(status["state"], "completed", "run {run}: {status}");
        assert_eq!(
            status["checksum"], local["checksum"],
            "run {run}: a wrong result was accepted: {status}"
        );
        caught_in.push(excluded(&status).len());
        assert!(
            excluded(&status).iter().all(|p| ids(&cheaters).contains(p)),
            "no honest provider excluded: {status}"
        );
    }
    eprintln!("cheaters caught per run: {caught_in:?}");
}

#[test]
fn colluders_outnumbering_an_honest_provider_are_overruled_by_the_requesters_own_run() {
    let env = Env::new();
    // Every task on all three providers.
    let job = tiles_job(&env, "collusion", 1020, 6, "[verification]\nreplicas = 3");
    let local = env.run_job(&job, &env.path("local"), &[]);
    // The colluders agree honestly on their first four tasks, then lie together.
    let (requester, honest, colluders) = network(&env, 1, &["collude:4:100", "collude:4:100"]);
    let status = submit_and_follow(&env, &requester, &job, |_| {});
    assert_eq!(status["state"], "completed", "{status}");
    // 1. Their output is never accepted: the job's output is the honest one.
    assert_eq!(status["checksum"], local["checksum"], "{status}");
    assert_eq!(
        fetch_result(&env, &requester, &status, "net"),
        std::fs::read(env.path("local/mandel.png")).expect("local png")
    );
    // 2. Two against one is no majority: the requester ran the task itself.
    assert!(count(&status, "disagreements") >= 1, "{status}");
    assert!(count(&status, "by_ground_truth") >= 1, "{status}");
    let log = std::fs::read_to_string(env.dir.path().join("requester/stderr.log"))
        .expect("requester log");
    // 3. Both colluders are excluded, the honest provider is not.
    assert_eq!(excluded(&status), ids(&colluders), "{status}");
    assert!(!excluded(&status).contains(&honest[0].peer_id));
    for c in &colluders {
        assert!(
            log.lines()
                .any(|l| l.contains(&c.peer_id) && l.contains("caught")),
            "the requester logs catching {}:\n{log}",
            c.peer_id
        );
    }
    // 4. What they vouched for before was verified again: nothing they
    // touched stands on their word (only the honest provider and the
    // requester remain, so the requester settled it).
    assert!(count(&status, "reverified") >= 1, "{status}");
    assert_eq!(
        count(&status, "by_replicas") + count(&status, "by_spot_check"),
        0,
        "every task they agreed on was re-verified: {status}"
    );
    assert!(log.contains("task reopened"));
    // 5. Their contradicted, signed results are kept as evidence.
    let db = store::Db::open(&env.dir.path().join("requester/plexus.db")).expect("db");
    let id = status["id"].as_str().expect("id");
    let evidence = db.evidence(id).expect("evidence");
    for c in &colluders {
        assert!(
            evidence.iter().any(|(peer, _)| *peer == c.peer_id),
            "evidence against {}: {evidence:?}",
            c.peer_id
        );
    }
}

#[test]
fn claiming_unused_fuel_or_replaying_a_result_is_caught() {
    let env = Env::new();
    // 1,024 tasks.
    let job = tiles_job(&env, "fuel", 1024, 32, "");
    let local = env.run_job(&job, &env.path("local"), &[]);
    let (requester, _honest, liars) = network(&env, 3, &["fuel", "replay"]);
    let status = submit_and_follow(&env, &requester, &job, |_| {});
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(status["checksum"], local["checksum"]);
    // Fuel is deterministic: the job pays exactly what the work cost.
    assert_eq!(status["fuel"], local["fuel"], "{status}");
    assert_eq!(excluded(&status), ids(&liars), "{status}");
    let fuel_liar = &liars[0];
    assert_eq!(
        tasks_done(&status, &fuel_liar.peer_id),
        0,
        "none of the fuel liar's results accepted"
    );
    let log = std::fs::read_to_string(env.dir.path().join("requester/stderr.log"))
        .expect("requester log");
    assert!(
        log.lines()
            .any(|l| l.contains(&liars[1].peer_id) && l.contains("bound to another")),
        "the replay is refused for its binding:\n{log}"
    );
}

#[test]
fn replicas_never_share_an_address_range_when_the_job_asks() {
    let env = Env::new();
    let job = tiles_job(
        &env,
        "apart",
        1024,
        4,
        "[verification]\ndistinct_networks = true",
    );
    let local = env.run_job(&job, &env.path("local"), &[]);
    // Both providers connect from 127.0.0.0/24: no task may go to both.
    let (requester, honest, _) = network(&env, 2, &[]);
    let status = submit_and_follow(&env, &requester, &job, |_| {});
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(status["checksum"], local["checksum"]);
    assert!(
        count(&status, "executions") <= 16,
        "never a second provider of the same range: {status}"
    );
    assert!(
        count(&status, "by_ground_truth") >= 1,
        "replicas the network cannot place are the requester's to run: {status}"
    );
    assert!(honest.iter().all(|h| tasks_done(&status, &h.peer_id) <= 16));
}
