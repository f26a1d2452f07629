//! Faults across hosts: nodes in network namespaces of their own (made and
//! removed by each test through `testkit`), a requester cut off from every
//! provider, and providers that churn — killed, cut off, restarted,
//! rejoined — while a job runs. Needs root, as CI has.

use crate::Env;
use crate::network::{NodeProcess, unverified, wait_until};
use serde_json::Value;
use std::time::{Duration, Instant};
use testkit::{Host, Lab};

const P2P_PORT: u16 = 4001;

fn listen_on(host: &Host) -> String {
    format!("/ip4/{}/tcp/{P2P_PORT}", host.address)
}

fn requester_on(env: &Env, lab: &Lab, host: &Host) -> NodeProcess {
    NodeProcess::start_on(env, lab, host, &["--listen", &listen_on(host)])
}

fn provider_on(env: &Env, lab: &Lab, host: &Host, requester: &str) -> NodeProcess {
    let listen = listen_on(host);
    let args = [
        "--listen",
        listen.as_str(),
        "--provide",
        "--slots",
        "1",
        "--bootstrap",
        requester,
    ];
    NodeProcess::start_on(env, lab, host, &args)
}

/// A requester host and provider hosts with a one-slot provider each, every
/// offer seen. Fields drop in order: the processes before the lab.
struct Network {
    providers: Vec<NodeProcess>,
    hosts: Vec<Host>,
    requester: NodeProcess,
    requester_host: Host,
    lab: Lab,
}

fn network(env: &Env, provider_count: usize) -> Network {
    let mut lab = Lab::new().expect("a lab of network namespaces (needs root)");
    let requester_host = lab.add_host("requester").expect("host");
    let requester = requester_on(env, &lab, &requester_host);
    let hosts: Vec<Host> = (0..provider_count)
        .map(|i| lab.add_host(&format!("p{i}")).expect("host"))
        .collect();
    let providers: Vec<NodeProcess> = hosts
        .iter()
        .map(|h| provider_on(env, &lab, h, &requester.tcp))
        .collect();
    wait_until(
        &format!("{provider_count} offers"),
        Duration::from_secs(30),
        || requester.offers() >= provider_count,
    );
    Network {
        providers,
        hosts,
        requester,
        requester_host,
        lab,
    }
}

/// Follows a job to its end; `during` sees each status on the way.
fn follow(node: &NodeProcess, id: &str, limit: Duration, mut during: impl FnMut(&Value)) -> Value {
    let started = Instant::now();
    loop {
        let status = node.get(&format!("/api/jobs/{id}"));
        during(&status);
        if status["state"] != "running" && status["state"] != "assembling" {
            return status;
        }
        assert!(
            started.elapsed() < limit,
            "job {id} did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn paid_tasks(status: &Value) -> u64 {
    status["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .map(|p| p["tasks_done"].as_u64().unwrap_or(0))
        .sum()
}

fn result_bytes(status: &Value) -> Vec<u8> {
    std::fs::read(status["result"].as_str().expect("a result path")).expect("the result file")
}

#[test]
fn a_requester_cut_off_from_every_provider_for_20_s_finishes_once_the_network_heals() {
    let env = Env::new();
    let job = unverified(&env, &crate::render_job(&env, "partition", 1600, 600, 1));
    env.run_job(&job, &env.path("local"), &[]);
    let local = std::fs::read(env.path("local/partition.png")).expect("local png");

    // Bound lab first, so it is dropped last, after the processes.
    let Network {
        lab,
        requester_host,
        requester,
        providers,
        ..
    } = network(&env, 3);

    let id = requester.submit(&job);
    let mut done_at_cut = 0;
    wait_until("20 tasks done", Duration::from_secs(60), || {
        done_at_cut = requester.get(&format!("/api/jobs/{id}"))["tasks_done"]
            .as_u64()
            .unwrap_or(0);
        done_at_cut >= 20
    });
    lab.cut_off(&requester_host).expect("cut off");
    let cut = Instant::now();
    // Every provider notices the requester gone (its pings go unanswered)
    // while the partition lasts.
    let requester_id = requester.peer_id.clone();
    let gone = |p: &NodeProcess| {
        p.get("/api/peers").as_array().is_some_and(|peers| {
            !peers
                .iter()
                .any(|peer| peer["peer_id"] == requester_id.as_str() && peer["connected"] == true)
        })
    };
    wait_until(
        "providers see the requester gone",
        Duration::from_secs(15),
        || providers.iter().all(gone),
    );
    std::thread::sleep(Duration::from_secs(20).saturating_sub(cut.elapsed()));
    lab.rejoin(&requester_host).expect("rejoin");
    let healed = Instant::now();
    let status = follow(&requester, &id, Duration::from_secs(180), |_| {});
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(
        result_bytes(&status),
        local,
        "byte-identical to the local run"
    );
    assert_eq!(paid_tasks(&status), 200, "no task counted twice: {status}");
    eprintln!(
        "partition: cut at {done_at_cut} of 200 tasks for 20 s; finished {:.1} s after healing, {} retries",
        healed.elapsed().as_secs_f64(),
        status["retries"]
    );
    drop(providers);
}

/// How one provider left during the churn.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Gone {
    Killed,
    CutOff,
}

/// Seconds from each departure to the next attempt of every task the
/// departed provider held: how long its loss kept its work waiting.
fn loss_to_rerun_s(
    db: &store::Db,
    job: &str,
    departures: &[(u64, String, Gone)],
    how: Gone,
) -> Vec<f64> {
    let attempts = db.attempts(job).expect("attempts");
    let mut delays = Vec::new();
    for (at_ms, peer, kind) in departures.iter().filter(|d| d.2 == how) {
        let _ = kind;
        // Held at the departure and never answered: timed out or lost, or
        // overtaken by a straggler's copy elsewhere (on a fast machine the
        // copy often settles before the attempt's deadline).
        for held in attempts.iter().filter(|a| {
            a.peer == *peer
                && a.sent_at_ms <= *at_ms
                && a.ended.as_deref().is_some_and(|e| {
                    e.starts_with("no result") || e.starts_with("cancelled: settled elsewhere")
                })
        }) {
            // Held at the departure: no later attempt of it went out before.
            let next = attempts
                .iter()
                .filter(|a| a.task == held.task && a.attempt > held.attempt)
                .map(|a| a.sent_at_ms)
                .min();
            if let Some(next) = next
                && next > *at_ms
                && !attempts.iter().any(|a| {
                    a.task == held.task && a.attempt > held.attempt && a.sent_at_ms <= *at_ms
                })
            {
                delays.push((next - at_ms) as f64 / 1000.0);
            }
        }
    }
    delays.sort_by(f64::total_cmp);
    delays
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

#[test]
fn a_job_survives_providers_churning_every_two_seconds_across_hosts() {
    let env = Env::new();
    // 500 tiles of 80×60 (25 × 20), verified as by default.
    let job = crate::render_job(&env, "churn", 2000, 1200, 2);
    env.run_job(&job, &env.path("local"), &[]);
    let local = std::fs::read(env.path("local/churn.png")).expect("local png");

    let Network {
        lab,
        requester,
        hosts,
        providers,
        ..
    } = network(&env, 6);
    let peer_ids: Vec<String> = providers.iter().map(|p| p.peer_id.clone()).collect();
    let mut providers: Vec<Option<NodeProcess>> = providers.into_iter().map(Some).collect();

    // A first run builds the providers' records and module caches; the
    // second is the calm run the churn is compared with.
    let warm = requester.submit(&job);
    follow(&requester, &warm, Duration::from_secs(300), |_| {});
    let calm_started = Instant::now();
    let calm_id = requester.submit(&job);
    let calm = follow(&requester, &calm_id, Duration::from_secs(300), |_| {});
    let calm_s = calm_started.elapsed().as_secs_f64();
    assert_eq!(calm["state"], "completed", "{calm}");
    assert_eq!(result_bytes(&calm), local);

    // Every 2 s (or sooner, below) one provider goes (killed or cut off)
    // and, once two are gone, one comes back (restarted or rejoined): a
    // third gone at a time.
    let mut draw = now_ms() | 1;
    let mut next = move |n: usize| {
        draw ^= draw << 13;
        draw ^= draw >> 7;
        draw ^= draw << 17;
        (draw % n as u64) as usize
    };
    let mut gone: Vec<(usize, Gone)> = Vec::new();
    let mut departures: Vec<(u64, String, Gone)> = Vec::new();
    let mut events = 0;
    let started = Instant::now();
    let id = requester.submit(&job);
    let mut last_churn = Instant::now();
    // Every 2 s, or every sixth of the calm run where that is shorter
    // (a quiet machine renders the job in a few seconds), so the churn
    // always spans the job.
    let interval = Duration::from_secs(2).min(Duration::from_secs_f64((calm_s / 6.0).max(0.3)));
    let status = follow(&requester, &id, Duration::from_secs(600), |_| {
        if last_churn.elapsed() < interval {
            return;
        }
        last_churn = Instant::now();
        let up: Vec<usize> = (0..6).filter(|i| !gone.iter().any(|g| g.0 == *i)).collect();
        let victim = up[next(up.len())];
        let how = if next(2) == 0 {
            Gone::Killed
        } else {
            Gone::CutOff
        };
        match how {
            Gone::Killed => providers[victim] = None, // SIGKILL
            Gone::CutOff => lab.cut_off(&hosts[victim]).expect("cut off"),
        }
        departures.push((now_ms(), peer_ids[victim].clone(), how));
        gone.push((victim, how));
        events += 1;
        if gone.len() > 2 {
            let (back, how) = gone.remove(next(gone.len() - 1));
            match how {
                Gone::Killed => {
                    providers[back] = Some(provider_on(&env, &lab, &hosts[back], &requester.tcp));
                }
                Gone::CutOff => lab.rejoin(&hosts[back]).expect("rejoin"),
            }
        }
    });
    let churn_s = started.elapsed().as_secs_f64();
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(
        result_bytes(&status),
        local,
        "identical output despite the churn"
    );
    assert!(
        events >= 3,
        "the churn ran during the job ({events} departures)"
    );
    let db = store::Db::open(&requester.dir.join("plexus.db")).expect("database");
    let killed = loss_to_rerun_s(&db, &id, &departures, Gone::Killed);
    let cut = loss_to_rerun_s(&db, &id, &departures, Gone::CutOff);
    let median = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
    eprintln!(
        "churn: calm {calm_s:.1} s, churning {churn_s:.1} s ({:.2}×), {events} departures, {} retries; \
         loss to rerun: killed median {:.2} s max {:.2} s (n={}), cut off median {:.2} s max {:.2} s (n={})",
        churn_s / calm_s,
        status["retries"],
        median(&killed),
        killed.last().copied().unwrap_or(f64::NAN),
        killed.len(),
        median(&cut),
        cut.last().copied().unwrap_or(f64::NAN),
        cut.len(),
    );
    drop(providers);
}

#[test]
fn a_provider_cut_off_mid_job_has_its_tasks_sent_elsewhere() {
    let env = Env::new();
    let job = unverified(&env, &crate::render_job(&env, "cut", 1600, 600, 2));
    let Network {
        lab,
        requester,
        hosts,
        providers,
        ..
    } = network(&env, 2);
    let id = requester.submit(&job);
    wait_until("the job under way", Duration::from_secs(60), || {
        requester.get(&format!("/api/jobs/{id}"))["tasks_done"]
            .as_u64()
            .unwrap_or(0)
            >= 20
    });
    lab.cut_off(&hosts[0]).expect("cut off");
    let departures = vec![(now_ms(), providers[0].peer_id.clone(), Gone::CutOff)];
    let status = follow(&requester, &id, Duration::from_secs(180), |_| {});
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(paid_tasks(&status), 200, "{status}");
    let db = store::Db::open(&requester.dir.join("plexus.db")).expect("database");
    let delays = loss_to_rerun_s(&db, &id, &departures, Gone::CutOff);
    assert!(!delays.is_empty(), "the tasks it held were sent elsewhere");
    eprintln!(
        "a provider cut off: its {} tasks sent elsewhere after {:?} s",
        delays.len(),
        delays
    );
}
