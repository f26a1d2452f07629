//! Nodes as real processes on loopback: discovery, a job across providers,
//! a provider killed mid-job, and the errors a user meets at start.

use crate::Env;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `plexus node` process, killed (SIGKILL) when dropped.
pub(crate) struct NodeProcess {
    child: Child,
    pub peer_id: String,
    pub tcp: String,
    pub api: String,
    pub dir: std::path::PathBuf,
    /// The API's bearer token, for a node whose API is off loopback.
    pub token: Option<String>,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeProcess {
    /// A node in `env`'s folder `name` (kept across restarts); its API on a
    /// free loopback port unless `args` name one with `--api`.
    pub(crate) fn start(env: &Env, name: &str, args: &[&str]) -> NodeProcess {
        NodeProcess::spawn(env, name, Command::new(env!("CARGO_BIN_EXE_plexus")), args)
    }

    /// A node on a lab host: its API on the host's address (port 7700),
    /// reached from the test with the node's token.
    pub(crate) fn start_on(
        env: &Env,
        lab: &testkit::Lab,
        host: &testkit::Host,
        args: &[&str],
    ) -> NodeProcess {
        let mut all = vec!["--no-mdns", "--api", "0.0.0.0:7700"];
        all.extend_from_slice(args);
        let command = lab.command(host, env!("CARGO_BIN_EXE_plexus"));
        let mut node = NodeProcess::spawn(env, &host.name, command, &all);
        node.api = format!("http://{}:7700", host.address);
        node.token = Some(
            std::fs::read_to_string(node.dir.join("api.token"))
                .expect("the node's API token")
                .trim()
                .to_owned(),
        );
        node
    }

    fn spawn(env: &Env, name: &str, mut command: Command, args: &[&str]) -> NodeProcess {
        let dir = env.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("node dir");
        let log = dir.join("stdout.log");
        let default_api: &[&str] = if args.contains(&"--api") {
            &[]
        } else {
            &["--api", "127.0.0.1:0"]
        };
        let child = command
            .arg("--data-dir")
            .arg(&dir)
            .arg("node")
            .args(default_api)
            .args(args)
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::create(dir.join("stderr.log")).expect("log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start plexus node");
        // Owned by the guard at once, so a failed start still kills it.
        let mut node = NodeProcess {
            child,
            peer_id: String::new(),
            tcp: String::new(),
            api: String::new(),
            dir: dir.clone(),
            token: None,
        };
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let field = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
            };
            if let (Some(peer_id), Some(tcp), Some(api)) =
                (field("peer id"), field("listening"), field("api"))
            {
                (node.peer_id, node.tcp, node.api) = (peer_id, tcp, api);
                return node;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "node {name} did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A requester: loopback only, no mDNS, so parallel tests stay apart.
    pub(crate) fn requester(env: &Env) -> NodeProcess {
        NodeProcess::start(
            env,
            "requester",
            &["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"],
        )
    }

    /// A one-slot provider joined to `requester` through bootstrap alone.
    pub(crate) fn provider(
        env: &Env,
        name: &str,
        requester: &NodeProcess,
        extra: &[&str],
    ) -> NodeProcess {
        let mut args = vec![
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
            "--provide",
            "--slots",
            "1",
        ];
        args.extend(["--bootstrap", &requester.tcp]);
        args.extend_from_slice(extra);
        NodeProcess::start(env, name, &args)
    }

    pub(crate) fn get(&self, path: &str) -> Value {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("{}{path}: {e}", self.api))
    }

    pub(crate) fn try_get(&self, path: &str) -> Result<Value, ureq::Error> {
        let mut request = ureq::get(&format!("{}{path}", self.api));
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        request.call()?.body_mut().read_json()
    }

    /// Submits a job file through the API (as `plexus job submit` does).
    pub(crate) fn submit(&self, job: &str) -> String {
        let body = serde_json::json!({
            "job_file": job,
            "job_toml": std::fs::read_to_string(job).expect("job file"),
            "base_dir": crate::repo().display().to_string(),
        });
        let mut request = ureq::post(&format!("{}/api/jobs", self.api));
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let answer: Value = request
            .send_json(&body)
            .expect("the job is accepted")
            .body_mut()
            .read_json()
            .expect("JSON");
        answer["id"].as_str().expect("a job id").to_owned()
    }

    pub(crate) fn connected_to(&self, other: &NodeProcess) -> bool {
        let peers = self.get("/api/peers");
        peers.as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["peer_id"] == other.peer_id.as_str() && p["connected"] == true)
        })
    }

    pub(crate) fn offers(&self) -> usize {
        let peers = self.get("/api/peers");
        peers.as_array().map_or(0, |ps| {
            ps.iter()
                .filter(|p| p["connected"] == true && !p["offer"].is_null())
                .count()
        })
    }
}

/// Tasks a provider completed in a job, from the job's status.
pub(crate) fn tasks_done(status: &Value, peer: &str) -> u64 {
    provider_figure(status, peer, "tasks_done")
}

/// One of a provider's figures in a job's status (`tasks_done`, `fuel`).
fn provider_figure(status: &Value, peer: &str, figure: &str) -> u64 {
    status["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .find(|p| p["peer_id"] == peer)
        .and_then(|p| p[figure].as_u64())
        .unwrap_or(0)
}

pub(crate) fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

#[test]
fn two_nodes_find_each_other_through_bootstrap_alone() {
    let env = Env::new();
    let a = NodeProcess::start(
        &env,
        "a",
        &["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"],
    );
    let b = NodeProcess::start(
        &env,
        "b",
        &[
            "--listen",
            "/ip4/127.0.0.2/tcp/0",
            "--no-mdns",
            "--bootstrap",
            &a.tcp,
        ],
    );
    wait_until("b sees a", Duration::from_secs(5), || b.connected_to(&a));
    wait_until("a sees b", Duration::from_secs(5), || a.connected_to(&b));
}

#[test]
fn two_nodes_without_bootstrap_find_each_other_by_mdns() {
    let env = Env::new();
    let a = NodeProcess::start(&env, "a", &[]);
    let b = NodeProcess::start(&env, "b", &[]);
    wait_until("mDNS discovery", Duration::from_secs(5), || {
        b.connected_to(&a) && a.connected_to(&b)
    });
}

#[test]
fn a_busy_port_or_an_unreachable_bootstrap_is_a_one_line_error() {
    let env = Env::new();
    let a = NodeProcess::start(
        &env,
        "a",
        &["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"],
    );
    let port = a.tcp.split('/').nth(4).expect("port").to_owned();
    let busy = env.plexus(&[
        "node",
        "--no-mdns",
        "--api",
        "127.0.0.1:0",
        "--listen",
        &format!("/ip4/127.0.0.1/tcp/{port}"),
    ]);
    crate::assert_one_line_error(&busy, &["port in use"]);
    let api_port = a.api.rsplit(':').next().expect("api port").to_owned();
    let busy_api = env.plexus(&[
        "node",
        "--no-mdns",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--api",
        &format!("127.0.0.1:{api_port}"),
    ]);
    crate::assert_one_line_error(&busy_api, &["API address"]);
    let unreachable = env.plexus(&[
        "node",
        "--no-mdns",
        "--api",
        "127.0.0.1:0",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--bootstrap",
        "/ip4/127.0.0.1/tcp/1",
    ]);
    crate::assert_one_line_error(
        &unreachable,
        &["bootstrap address /ip4/127.0.0.1/tcp/1", "unreachable"],
    );
}

/// 64 Mandelbrot tiles of a 4096² image: enough work to kill a provider mid-job.
pub(crate) fn big_mandelbrot_job(env: &Env) -> String {
    env.write(
        "mandel.toml",
        r#"
name = "mandel-4096"
module = "builtin:mandelbrot"
args = ["--size", "4096", "--per-side", "8", "--tile", "{tile}"]
[tasks]
tile = { start = 0, end = 64 }
[assemble]
kind = "tiles-png"
output = "mandel.png"
"#,
    )
}

/// The same job with verification off (`mode = "none"`), for tests of
/// dispatch alone.
pub(crate) fn unverified(env: &Env, job: &str) -> String {
    let text = std::fs::read_to_string(job).expect("job") + "[verification]\nmode = \"none\"\n";
    env.write("unverified.toml", &text)
}

pub(crate) fn submit_and_follow(
    env: &Env,
    requester: &NodeProcess,
    job: &str,
    mut during: impl FnMut(&Value),
) -> Value {
    let output = env.plexus(&["job", "submit", job, "--api", &requester.api]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let started = Instant::now();
    loop {
        let status = requester.get(&format!("/api/jobs/{id}"));
        during(&status);
        if status["state"] == "completed" || status["state"] == "failed" {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "job did not finish: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn fetch_result(
    env: &Env,
    requester: &NodeProcess,
    status: &Value,
    dir: &str,
) -> Vec<u8> {
    let id = status["id"].as_str().expect("id");
    fetch_named_result(env, requester, id, dir, "mandel")
}

/// `plexus job results` of job `id` into `dir`; the bytes of `name`.png.
pub(crate) fn fetch_named_result(
    env: &Env,
    requester: &NodeProcess,
    id: &str,
    dir: &str,
    name: &str,
) -> Vec<u8> {
    let output = env.plexus(&[
        "job",
        "results",
        id,
        "--out",
        &env.path(dir),
        "--api",
        &requester.api,
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(env.path(&format!("{dir}/{name}.png"))).expect("result png")
}

#[test]
fn a_job_across_three_providers_matches_the_local_run_even_when_one_is_killed() {
    let env = Env::new();
    let job = big_mandelbrot_job(&env);
    let local = env.run_job(&job, &env.path("local"), &[]);
    let local_png = std::fs::read(env.path("local/mandel.png")).expect("local png");

    let requester = NodeProcess::requester(&env);
    let mut providers: Vec<Option<NodeProcess>> = (0..3)
        .map(|i| {
            Some(NodeProcess::provider(
                &env,
                &format!("p{i}"),
                &requester,
                &[],
            ))
        })
        .collect();
    wait_until("three offers", Duration::from_secs(30), || {
        requester.offers() >= 3
    });

    // Undisturbed.
    let status = submit_and_follow(&env, &requester, &job, |_| {});
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(status["checksum"], local["checksum"]);
    assert_eq!(
        fetch_result(&env, &requester, &status, "net1"),
        local_png,
        "byte-identical to the local run"
    );
    let busy = providers
        .iter()
        .flatten()
        .filter(|p| tasks_done(&status, &p.peer_id) > 0)
        .count();
    assert_eq!(busy, 3, "every provider ran tasks: {status}");

    // One provider killed with SIGKILL in the middle.
    let victim = providers[0].as_ref().expect("provider").peer_id.clone();
    let mut killed = false;
    let status = submit_and_follow(&env, &requester, &job, |s| {
        if !killed && s["tasks_done"].as_u64().unwrap_or(0) >= 12 {
            providers[0] = None; // dropped: SIGKILL
            killed = true;
        }
    });
    assert!(killed, "the job outlived the kill point");
    let db =
        store::Db::open(&env.dir.path().join("requester/plexus.db")).expect("the node's database");
    let states: Vec<String> = db
        .jobs()
        .expect("jobs")
        .into_iter()
        .map(|(_, _, state)| state)
        .collect();
    assert_eq!(states.len(), 2, "both jobs are recorded");
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(
        fetch_result(&env, &requester, &status, "net2"),
        local_png,
        "identical despite the kill"
    );
    // Accepted results count every agreeing replica: each task was accepted
    // from someone, and the survivors took over from the victim.
    let victim_done = tasks_done(&status, &victim);
    let others: u64 = providers
        .iter()
        .flatten()
        .map(|p| tasks_done(&status, &p.peer_id))
        .sum();
    assert!(others > 0 && others + victim_done >= 64, "{status}");
}

/// Needs the test-only build: `cargo test --release -p cli --features adversary --test it throttled`.
#[cfg(feature = "adversary")]
#[test]
fn a_throttled_provider_receives_clearly_less_work() {
    let env = Env::new();
    // Dispatch alone: with verification on, replicas and spot checks would
    // count toward each provider's accepted results too.
    let job = unverified(&env, &big_mandelbrot_job(&env));
    let requester = NodeProcess::requester(&env);
    let honest: Vec<NodeProcess> = (0..2)
        .map(|i| NodeProcess::provider(&env, &format!("honest{i}"), &requester, &[]))
        .collect();
    let slow = NodeProcess::provider(&env, "slow", &requester, &["--throttle", "3"]);
    wait_until("three offers", Duration::from_secs(30), || {
        requester.offers() >= 3
    });
    let status = submit_and_follow(&env, &requester, &job, |_| {});
    assert_eq!(status["state"], "completed", "{status}");
    // Work is counted in fuel: the Mandelbrot's tiles differ up to tenfold
    // in cost, and counted in tiles a throttled provider that drew cheap
    // ones came within 2/3 of the honest mean (16 against [20, 28]) while
    // doing a quarter of their work.
    let work = |peer: &str| provider_figure(&status, peer, "fuel");
    let slow_work = work(&slow.peer_id);
    eprintln!(
        "throttled 3×: {} tasks, {slow_work} fuel; honest: {:?}",
        tasks_done(&status, &slow.peer_id),
        honest
            .iter()
            .map(|h| (tasks_done(&status, &h.peer_id), work(&h.peer_id)))
            .collect::<Vec<_>>()
    );
    // Against the honest providers' mean: how two equal providers split
    // the work between them is the operating system's scheduling.
    let honest_mean = honest.iter().map(|h| work(&h.peer_id)).sum::<u64>() as f64 / 2.0;
    assert!(
        (slow_work as f64) < honest_mean * 2.0 / 3.0,
        "throttled {slow_work} fuel against an honest mean of {honest_mean}: {status}"
    );
}

/// Needs the test-only build: `cargo test --release -p cli --features adversary --test it bad_input`.
#[cfg(feature = "adversary")]
#[test]
fn bad_input_on_the_wire_is_rejected_and_the_job_goes_on_with_honest_providers() {
    let env = Env::new();
    // Verification off: with replicas, a liar's output may already be in the
    // requester's store from an honest replica, so its corrupt blobs would
    // never be fetched and its (correct) claim would be credited.
    let job = unverified(&env, &big_mandelbrot_job(&env));
    let local = env.run_job(&job, &env.path("local"), &[]);
    let requester = NodeProcess::requester(&env);
    let honest: Vec<NodeProcess> = (0..2)
        .map(|i| NodeProcess::provider(&env, &format!("honest{i}"), &requester, &[]))
        .collect();
    let liars: Vec<NodeProcess> = ["bad-signature", "bad-output", "oversized"]
        .iter()
        .map(|mode| NodeProcess::provider(&env, mode, &requester, &["--misbehave", mode]))
        .collect();
    wait_until("five offers", Duration::from_secs(30), || {
        requester.offers() >= 5
    });
    let status = submit_and_follow(&env, &requester, &job, |_| {});
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(
        status["checksum"], local["checksum"],
        "the result is the honest one"
    );
    let done = |peer: &str| tasks_done(&status, peer);
    for liar in &liars {
        assert_eq!(
            done(&liar.peer_id),
            0,
            "no result of a lying provider is accepted: {status}"
        );
    }
    assert!(honest.iter().map(|h| done(&h.peer_id)).sum::<u64>() >= 64);
    let log = std::fs::read_to_string(env.dir.path().join("requester/stderr.log"))
        .expect("requester log");
    for (liar, reason) in liars.iter().zip([
        "bad signature",
        "arrived with hash",
        "excluded from the job after",
    ]) {
        assert!(
            log.lines()
                .any(|l| l.contains(&liar.peer_id) && l.contains(reason)),
            "the requester logs why it refused {}: {reason:?} in\n{log}",
            liar.peer_id
        );
    }
}
