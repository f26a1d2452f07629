//! Nothing lost: a requester killed with SIGKILL at any moment takes its
//! job up again on restart, without running a settled task again.

use crate::Env;
use crate::network::{NodeProcess, fetch_named_result, unverified, wait_until};
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// A small xorshift: the kill points differ from run to run, and the seed
/// printed on failure replays them.
struct Draw(u64);

impl Draw {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn job_status(requester: &NodeProcess, id: &str) -> Value {
    match ureq::get(&format!("{}/api/jobs/{id}", requester.api)).call() {
        Ok(mut response) => response.body_mut().read_json().expect("JSON"),
        Err(e) => panic!(
            "job {id}: {e}; the requester's log:\n{}",
            std::fs::read_to_string(requester.dir.join("stderr.log")).unwrap_or_default()
        ),
    }
}

fn submit(env: &Env, requester: &NodeProcess, job: &str) -> String {
    let output = env.plexus(&["job", "submit", job, "--api", &requester.api]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn wait_for_end(requester: &NodeProcess, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let status = job_status(requester, id);
        if status["state"] != "running" && status["state"] != "assembling" {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "job did not finish: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn requester_resumes_after_sigkill_at_ten_random_points() {
    let env = Env::new();
    // 200 tiles of 80×60 (20 × 10), verification off: every accepted
    // result is paid once, so payments must equal tasks.
    let job = unverified(&env, &crate::render_job(&env, "resume", 1600, 600, 1));
    let local = env.run_job(&job, &env.path("local"), &[]);
    assert_eq!(local["tasks"], 200);
    let local_png = std::fs::read(env.path("local/resume.png")).expect("local png");

    let (p2p, api) = (free_port(), free_port());
    let listen = format!("/ip4/127.0.0.1/tcp/{p2p}");
    let api = format!("127.0.0.1:{api}");
    let requester_args = ["--listen", &listen, "--no-mdns", "--api", &api];
    let mut requester = NodeProcess::start(&env, "requester", &requester_args);
    let providers: Vec<NodeProcess> = (0..2)
        .map(|i| NodeProcess::provider(&env, &format!("p{i}"), &requester, &[]))
        .collect();
    wait_until("two offers", Duration::from_secs(30), || {
        requester.offers() >= 2
    });

    // An undisturbed run sets the scale of the kill points.
    let calm = Instant::now();
    let id = submit(&env, &requester, &job);
    let status = wait_for_end(&requester, &id);
    assert_eq!(status["state"], "completed", "{status}");
    let calm = calm.elapsed();
    let seed = now_ms() | 1;
    eprintln!("calm run {calm:?}; kill points drawn with seed {seed}");
    let mut draw = Draw(seed);

    let db_path = env.dir.path().join("requester/plexus.db");
    for round in 0..10 {
        let id = submit(&env, &requester, &job);
        // Later runs are faster (modules cached): draw within 60% of the
        // first, so most kills land mid-job.
        let kill_after = Duration::from_millis(draw.below(calm.as_millis() as u64 * 6 / 10));
        std::thread::sleep(kill_after);
        drop(requester); // SIGKILL
        let killed_at_ms = now_ms();
        let (settled_before, state) = {
            let db = store::Db::open(&db_path).expect("the requester's database");
            let settled: Vec<u64> = db
                .settled_tasks(&id)
                .expect("results")
                .iter()
                .map(|t| t.task)
                .collect();
            (settled, db.job_state(&id).expect("state"))
        };
        requester = NodeProcess::start(&env, "requester", &requester_args);
        let status = wait_for_end(&requester, &id);
        eprintln!(
            "round {round}: killed after {kill_after:?} ({} settled, job {}), then {} after the restart",
            settled_before.len(),
            state.as_deref().unwrap_or("?"),
            status["state"]
        );
        assert_eq!(status["state"], "completed", "round {round}: {status}");
        assert_eq!(
            fetch_named_result(&env, &requester, &id, &format!("net{round}"), "resume"),
            local_png,
            "round {round}: byte-identical to the undisturbed run"
        );
        let paid: u64 = status["providers"]
            .as_array()
            .expect("providers")
            .iter()
            .map(|p| p["tasks_done"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(
            paid, 200,
            "round {round}: one paid execution per task: {status}"
        );
        let db = store::Db::open(&db_path).expect("the requester's database");
        assert_eq!(db.settled_tasks(&id).expect("results").len(), 200);
        let rerun: Vec<u64> = db
            .tasks_attempted_since(&id, killed_at_ms)
            .expect("attempts")
            .into_iter()
            .filter(|t| settled_before.contains(t))
            .collect();
        assert!(
            rerun.is_empty(),
            "round {round}: tasks settled before the kill were sent again: {rerun:?}"
        );
    }
    drop(providers);
}

/// Persist before send: an attempt the requester cannot write is never
/// sent. A second connection makes the requester's database refuse every
/// new attempt row (as a full disk or a failing file would), and the job
/// that follows fails naming the refusal, while its provider runs nothing.
#[test]
fn a_requester_that_cannot_record_an_attempt_sends_nothing_and_says_why() {
    let env = Env::new();
    let requester = NodeProcess::requester(&env);
    let provider = NodeProcess::provider(&env, "p1", &requester, &[]);
    wait_until("the provider's offer", Duration::from_secs(30), || {
        requester.offers() == 1
    });
    let refuse = rusqlite::Connection::open(requester.dir.join("plexus.db")).expect("open the db");
    refuse
        .busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    refuse
        .execute_batch(
            "CREATE TRIGGER refuse_attempts BEFORE INSERT ON attempts
             BEGIN SELECT RAISE(ABORT, 'attempts refused by the test'); END;",
        )
        .expect("the trigger");

    let id = requester.submit(&crate::small_render_job(&env));
    let status = wait_for_end(&requester, &id);
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot record the attempts")
            && error.contains("attempts refused by the test"),
        "{status}"
    );
    assert_eq!(status["tasks_in_flight"], 0, "{status}");
    // Given time to have run something, the provider ran nothing.
    std::thread::sleep(Duration::from_secs(2));
    let info = provider.get("/api/node");
    assert_eq!(info["provider"]["tasks_run"], 0, "{info}");
    let runs: i64 = rusqlite::Connection::open(provider.dir.join("plexus.db"))
        .and_then(|db| db.query_row("SELECT COUNT(*) FROM runs", [], |row| row.get(0)))
        .expect("the provider's runs");
    assert_eq!(runs, 0);
    let attempts: i64 = refuse
        .query_row("SELECT COUNT(*) FROM attempts", [], |row| row.get(0))
        .expect("the requester's attempts");
    assert_eq!(attempts, 0);
}
