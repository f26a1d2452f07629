//! Pay on the ledger, as real processes on loopback: a requester that runs
//! the ledger (`--ledger`) locks a job's budget at submission, pays one
//! claim per accepted result when the job ends and gets the rest back; a
//! budget it cannot lock is refused before anything runs.

use crate::Env;
use crate::network::{NodeProcess, submit_and_follow, wait_until};
use serde_json::Value;
use std::time::Duration;

const MINT: u64 = 1_000_000;

fn ledger_requester(env: &Env) -> NodeProcess {
    NodeProcess::start(
        env,
        "requester",
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
            "--ledger",
            "--mint",
            &MINT.to_string(),
        ],
    )
}

/// 200 small Mandelbrot tiles, priced: at most 100 credits per Gfuel (the
/// providers' default price), `budget` credits in all.
fn priced_job(env: &Env, budget: u64) -> String {
    env.write(
        "priced.toml",
        &format!(
            r#"
name = "priced"
module = "builtin:mandelbrot"
args = ["--size", "1000", "--per-side", "20", "--tile", "{{tile}}"]
[tasks]
tile = {{ start = 0, end = 200 }}
[limits]
fuel = 2_000_000_000
[requirements]
price_per_gfuel_max = 100
budget = {budget}
"#
        ),
    )
}

#[test]
fn a_job_pays_one_claim_per_accepted_result_and_refunds_the_rest_and_the_books_add_up() {
    let env = Env::new();
    let requester = ledger_requester(&env);
    let providers: Vec<NodeProcess> = (0..2)
        .map(|i| NodeProcess::provider(&env, &format!("p{i}"), &requester, &[]))
        .collect();
    wait_until("two offers", Duration::from_secs(60), || {
        requester.offers() >= 2
    });
    let job = priced_job(&env, 500_000);
    let status = submit_and_follow(&env, &requester, &job, |_| {});
    assert_eq!(status["state"], "completed", "{status}");
    let id = status["id"].as_str().expect("id");

    let path = format!("/api/ledger/escrows/{id}");
    wait_until("the escrow released", Duration::from_secs(30), || {
        requester.get(&path)["released"] == true
    });
    let escrow = requester.get(&path);
    eprintln!("escrow after the job: {escrow}");
    // Every provider whose result was accepted for a task (alone or as an
    // agreeing replica) is one claim: the job's own count of them.
    let accepted: u64 = status["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .map(|p| p["tasks_done"].as_u64().expect("tasks_done"))
        .sum();
    assert!(
        accepted >= 200,
        "each of 200 tasks accepted at least once: {accepted}"
    );
    assert_eq!(escrow["claims"], accepted, "{escrow}");
    let (locked, paid, refunded) = (
        escrow["locked"].as_u64().expect("locked"),
        escrow["paid"].as_u64().expect("paid"),
        escrow["refunded"].as_u64().expect("refunded"),
    );
    assert_eq!(locked, 500_000);
    assert!(paid > 0 && paid + refunded == locked, "{escrow}");
    let own = requester.get("/api/ledger");
    assert_eq!(
        own["balance"],
        MINT - paid,
        "the requester paid what the escrow paid: {own}"
    );
    let mut earned_total = 0;
    for p in &providers {
        let account = requester.get(&format!("/api/ledger/accounts/{}", p.peer_id));
        let earned = escrow["earned"]
            .as_array()
            .expect("earned")
            .iter()
            .find(|e| e[0] == account["account"])
            .and_then(|e| e[1].as_u64())
            .unwrap_or(0);
        // fuel × price, rounded down once per provider and job.
        let fuel = status["providers"]
            .as_array()
            .expect("providers")
            .iter()
            .find(|s| s["peer_id"] == p.peer_id.as_str())
            .and_then(|s| s["fuel"].as_u64())
            .unwrap_or(0);
        assert_eq!(
            earned,
            (u128::from(fuel) * 100 / 1_000_000_000) as u64,
            "{escrow}"
        );
        assert_eq!(
            account["balance"], earned,
            "a provider's balance is what it earned"
        );
        earned_total += earned;
    }
    assert_eq!(earned_total, paid);
    assert_eq!(status["budget"], 500_000, "{status}");
    let committed = status["committed"].as_u64().expect("committed");
    // What the job counted against its budget covers what it paid (every
    // result come back counts, a surplus copy's too; only accepted ones
    // are paid).
    assert!(
        committed >= paid && committed <= 500_000,
        "committed {committed}, paid {paid}"
    );

    // The books through the CLI: the node's balance, the escrow, and the
    // blocks holding one claim transaction per accepted result.
    let out = env.plexus(&["balance", "--api", &requester.api]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("balance   {} credits", MINT - paid)),
        "{text}"
    );
    let out = env.plexus(&["ledger", "escrow", id, "--api", &requester.api]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{refunded} refunded")), "{text}");
    let mut claims = 0;
    let mut from = 1;
    loop {
        let blocks = requester.get(&format!("/api/ledger/blocks?from={from}&count=100"));
        let blocks = blocks.as_array().expect("blocks");
        if blocks.is_empty() {
            break;
        }
        for b in blocks {
            for tx in b["txs"].as_array().expect("txs") {
                if tx[1] == "claim" {
                    assert!(
                        tx[2].as_str().is_some_and(|r| r.starts_with("paid")),
                        "{tx}"
                    );
                    claims += 1;
                }
            }
        }
        from = blocks
            .last()
            .and_then(|b| b["height"].as_u64())
            .expect("height")
            + 1;
    }
    assert_eq!(
        claims, accepted,
        "one claim transaction per accepted result, none refused"
    );
}

#[test]
fn a_budget_the_requester_cannot_lock_is_refused_at_submission_and_nothing_runs() {
    let env = Env::new();
    let requester = ledger_requester(&env);
    let provider = NodeProcess::provider(&env, "p0", &requester, &[]);
    wait_until("an offer", Duration::from_secs(60), || {
        requester.offers() >= 1
    });
    let job = priced_job(&env, MINT + 1);
    let out = env.plexus(&["job", "submit", &job, "--api", &requester.api]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot be locked") && stderr.contains(&format!("holds {MINT}")),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let jobs: Value = requester.get("/api/jobs");
    assert_eq!(
        jobs.as_array().map(Vec::len),
        Some(0),
        "no job recorded: {jobs}"
    );
    let info = provider.get("/api/node");
    assert_eq!(
        info["provider"]["tasks_run"], 0,
        "nothing dispatched: {info}"
    );
    assert_eq!(
        requester.get("/api/ledger")["balance"],
        MINT,
        "nothing locked"
    );
}
