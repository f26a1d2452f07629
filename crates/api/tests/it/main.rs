//! The HTTP API against real nodes (a requester and a provider, in this
//! process, over loopback libp2p): every route, the OpenAPI document, the
//! event stream, metrics, and the errors a client meets.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct TestNet {
    runtime: tokio::runtime::Runtime,
    _dirs: Vec<tempfile::TempDir>,
    requester: node::NodeHandle,
    /// Held: a node whose every handle is dropped shuts down.
    _provider: node::NodeHandle,
    provider_peer: String,
    base: String,
}

fn start_node(
    runtime: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    bootstrap: Vec<node::Multiaddr>,
    provide: bool,
) -> node::StartedNode {
    runtime
        .block_on(node::start(node::NodeConfig {
            data_dir: dir.to_path_buf(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
            bootstrap,
            mdns: false,
            provider: provide.then(node::ProviderConfig::default),
            in_memory_database: false,
            // The requester runs a ledger, so its routes answer for real.
            pay: (!provide).then_some(node::pay::PayConfig {
                mint: types::Credits(1_000),
            }),
        }))
        .expect("the node starts")
}

impl TestNet {
    fn start(api: SocketAddr, token: Option<String>) -> TestNet {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("PLEXUS_LOG")
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dirs: Vec<tempfile::TempDir> =
            (0..2).map(|_| tempfile::tempdir().expect("dir")).collect();
        let requester = start_node(&runtime, dirs[0].path(), vec![], false);
        let address = format!("{}/p2p/{}", requester.listen[0], requester.peer_id);
        let provider = start_node(
            &runtime,
            dirs[1].path(),
            vec![address.parse().expect("bootstrap")],
            true,
        );
        let bound = runtime
            .block_on(api::serve(requester.handle.clone(), api, token))
            .expect("the API binds");
        let net = TestNet {
            runtime,
            _dirs: dirs,
            requester: requester.handle,
            _provider: provider.handle,
            provider_peer: provider.peer_id.to_string(),
            base: format!("http://127.0.0.1:{}", bound.port()),
        };
        let started = Instant::now();
        while !net
            .runtime
            .block_on(net.requester.peers())
            .expect("peers")
            .iter()
            .any(|p| p.offer.is_some())
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no offer arrived"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        net
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// (status, body as text) of a request.
fn call(method: &str, url: &str, body: Option<&str>, token: Option<&str>) -> (u16, String) {
    try_call(method, url, body, token).expect("the API answers")
}

fn try_call(
    method: &str,
    url: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Result<(u16, String), ureq::Error> {
    let agent = agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut response = match (method, body) {
        ("GET", _) => {
            let mut r = agent.get(url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        (_, body) => {
            let mut r = agent.post(url).header("Content-Type", "application/json");
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.send(body.unwrap_or(""))
        }
    }?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap_or_default();
    Ok((status, text))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A 4xx whose body is a JSON error with a message.
fn assert_json_error(status: u16, text: &str, expected_status: u16, mentions: &str) {
    assert_eq!(status, expected_status, "{text}");
    let body = json(text);
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "error {message:?} should mention {mentions:?}"
    );
}

fn submission(name: &str, tiles_per_side: u32, extra: &str) -> String {
    let toml = format!(
        "name = \"{name}\"\nmodule = \"builtin:mandelbrot\"\n\
         args = [\"--size\", \"256\", \"--per-side\", \"{tiles_per_side}\", \"--tile\", \"{{tile}}\"]\n\
         [tasks]\ntile = {{ start = 0, end = {} }}\n\
         [assemble]\nkind = \"tiles-png\"\noutput = \"m.png\"\n{extra}",
        tiles_per_side * tiles_per_side
    );
    serde_json::json!({ "job_file": "m.toml", "job_toml": toml, "base_dir": "/nonexistent" })
        .to_string()
}

#[test]
fn every_route_answers_and_bad_requests_get_a_json_4xx() {
    let net = TestNet::start("127.0.0.1:0".parse().expect("addr"), None);
    let url = |path: &str| format!("{}{path}", net.base);

    // The OpenAPI document parses and lists every route the CLI and the dashboard use.
    let (status, text) = call("GET", &url("/api/openapi.json"), None, None);
    assert_eq!(status, 200);
    let doc = json(&text);
    assert!(
        doc["openapi"].as_str().unwrap_or("").starts_with("3."),
        "{doc}"
    );
    for (path, method) in [
        ("/api/jobs", "get"),
        ("/api/jobs", "post"),
        ("/api/jobs/{id}", "get"),
        ("/api/jobs/{id}/cancel", "post"),
        ("/api/jobs/{id}/tasks", "get"),
        ("/api/jobs/{id}/tasks/{index}/tile", "get"),
        ("/api/jobs/{id}/result", "get"),
        ("/api/jobs/{id}/events", "get"),
        ("/api/peers", "get"),
        ("/api/node", "get"),
        ("/api/ledger", "get"),
        ("/api/ledger/accounts/{account}", "get"),
        ("/api/ledger/escrows/{job}", "get"),
        ("/api/ledger/blocks", "get"),
        ("/api/ledger/txs/{id}", "get"),
        ("/metrics", "get"),
    ] {
        let operation = &doc["paths"][path][method];
        assert!(
            operation["responses"]
                .as_object()
                .is_some_and(|r| !r.is_empty()),
            "{method} {path} is documented with its responses"
        );
    }
    for schema in [
        "JobStatus",
        "TaskInfo",
        "PeerInfo",
        "NodeInfo",
        "ErrorBody",
        "JobSubmission",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }

    // Bad requests: each a 4xx with a JSON message.
    let (s, t) = call("POST", &url("/api/jobs"), Some("{not json"), None);
    assert_json_error(s, &t, 400, "JSON");
    let (s, t) = call(
        "POST",
        &url("/api/jobs"),
        Some("{\"job_file\": \"x\"}"),
        None,
    );
    assert_json_error(s, &t, 422, "job_toml");
    // The server answers 413 and closes before reading the whole body, so a
    // client still writing may see its pipe broken instead of the answer
    // (a race in the transport, not the API): a few tries, and every answer
    // that arrives must be the JSON 413.
    let oversized = format!("{{\"job_file\": \"{}\"}}", "x".repeat(3 << 20));
    let mut answered = 0;
    for _ in 0..10 {
        if let Ok((s, t)) = try_call("POST", &url("/api/jobs"), Some(&oversized), None) {
            assert_json_error(s, &t, 413, "REQUEST_BODY_BYTES_MAX");
            answered += 1;
        }
    }
    eprintln!("oversized: {answered} of 10 answered");
    assert!(answered > 0, "no answer to an oversized body in 10 tries");
    let bad_toml =
        serde_json::json!({"job_file": "bad.toml", "job_toml": "name = 3", "base_dir": "/"});
    let (s, t) = call("POST", &url("/api/jobs"), Some(&bad_toml.to_string()), None);
    assert_json_error(s, &t, 400, "bad.toml:1");
    for path in [
        "/api/jobs/nope",
        "/api/jobs/nope/tasks",
        "/api/jobs/nope/tasks/0/tile",
        "/api/jobs/nope/result",
        "/api/jobs/nope/events",
    ] {
        let (s, t) = call("GET", &url(path), None, None);
        assert_json_error(s, &t, 404, "nope");
    }
    let (s, t) = call("POST", &url("/api/jobs/nope/cancel"), None, None);
    assert_json_error(s, &t, 404, "nope");
    // The ledger: the node's own account, and bad or unknown names of
    // accounts, escrows and transactions.
    let (s, t) = call("GET", &url("/api/ledger"), None, None);
    assert_eq!(s, 200, "{t}");
    assert_eq!(json(&t)["balance"], 1_000, "the genesis's mint: {t}");
    let (s, t) = call(
        "GET",
        &url(&format!("/api/ledger/accounts/{}", net.provider_peer)),
        None,
        None,
    );
    assert_eq!((s, json(&t)["balance"].as_u64()), (200, Some(0)), "{t}");
    let (s, t) = call("GET", &url("/api/ledger/accounts/nope"), None, None);
    assert_json_error(s, &t, 400, "neither a peer id nor 64 hex digits");
    let (s, t) = call("GET", &url("/api/ledger/escrows/nope"), None, None);
    assert_json_error(s, &t, 404, "no escrow");
    let (s, t) = call("GET", &url("/api/ledger/txs/nope"), None, None);
    assert_json_error(s, &t, 400, "64 hex digits");
    let (s, t) = call(
        "GET",
        &url(&format!("/api/ledger/txs/{}", "0".repeat(64))),
        None,
        None,
    );
    assert_json_error(s, &t, 404, "transaction");
    let (s, t) = call(
        "GET",
        &url("/api/ledger/blocks?from=1&count=1000"),
        None,
        None,
    );
    assert_eq!(s, 200, "{t}");
    assert!(json(&t).as_array().is_some_and(|b| b.len() <= 100), "{t}");
    let (s, t) = call("GET", &url("/api/ledger/blocks?from=x"), None, None);
    assert_json_error(s, &t, 400, "from");
    let (s, t) = call("GET", &url("/api/no/such/route"), None, None);
    assert_json_error(s, &t, 404, "openapi");

    // A real job, followed through its event stream.
    let (s, t) = call(
        "POST",
        &url("/api/jobs"),
        Some(&submission("m", 4, "")),
        None,
    );
    assert_eq!(s, 201, "{t}");
    let id = json(&t)["id"].as_str().expect("id").to_owned();
    let mut events = agent()
        .get(&url(&format!("/api/jobs/{id}/events")))
        .call()
        .expect("events");
    assert_eq!(events.status().as_u16(), 200);
    let mut last = Value::Null;
    let mut seen = 0;
    for line in BufReader::new(events.body_mut().as_reader()).lines() {
        let line = line.expect("a line of the stream");
        if let Some(data) = line.strip_prefix("data: ") {
            last = json(data);
            seen += 1;
        }
    }
    assert!(seen >= 2, "progress came as several events");
    assert_eq!(
        last["state"], "completed",
        "the stream ends with the end: {last}"
    );

    let (s, t) = call("GET", &url(&format!("/api/jobs/{id}")), None, None);
    assert_eq!(s, 200);
    assert_eq!(json(&t)["tasks_done"], 16);
    let (s, t) = call("GET", &url("/api/jobs"), None, None);
    assert_eq!((s, json(&t).as_array().map(Vec::len)), (200, Some(1)));
    let (s, t) = call(
        "GET",
        &url(&format!("/api/jobs/{id}/tasks?limit=100")),
        None,
        None,
    );
    assert_eq!(s, 200);
    let tasks = json(&t);
    assert_eq!(tasks.as_array().map(Vec::len), Some(16));
    assert!(
        tasks
            .as_array()
            .expect("tasks")
            .iter()
            .all(|t| t["state"] == "settled")
    );
    let (s, t) = call(
        "GET",
        &url(&format!("/api/jobs/{id}/tasks?limit=99999")),
        None,
        None,
    );
    assert_json_error(s, &t, 400, "TASKS_PAGE_MAX");
    let (s, t) = call(
        "GET",
        &url(&format!("/api/jobs/{id}/tasks?from=x")),
        None,
        None,
    );
    assert_json_error(s, &t, 400, "from");
    let tile = agent()
        .get(&url(&format!("/api/jobs/{id}/tasks/5/tile")))
        .call()
        .expect("tile");
    assert_eq!(tile.status().as_u16(), 200);
    let header = |k: &str| {
        tile.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("content-type").as_deref(), Some("image/png"));
    assert_eq!(
        header("x-tile-x").as_deref(),
        Some("64"),
        "tile 5 of 4×4 at (64, 64)"
    );
    assert_eq!(header("x-tile-y").as_deref(), Some("64"));
    assert_eq!(header("x-image-width").as_deref(), Some("256"));
    let mut result = agent()
        .get(&url(&format!("/api/jobs/{id}/result")))
        .call()
        .expect("result");
    assert_eq!(result.status().as_u16(), 200);
    let png = result.body_mut().read_to_vec().expect("bytes");
    assert!(png.starts_with(b"\x89PNG"), "the assembled image");
    let (s, t) = call("POST", &url(&format!("/api/jobs/{id}/cancel")), None, None);
    assert_json_error(s, &t, 409, "completed");

    // Cancel a running job.
    let (_, t) = call(
        "POST",
        &url("/api/jobs"),
        Some(&submission("big", 64, "")),
        None,
    );
    let big = json(&t)["id"].as_str().expect("id").to_owned();
    let (s, t) = call("POST", &url(&format!("/api/jobs/{big}/cancel")), None, None);
    assert_eq!(s, 200, "{t}");
    assert_eq!(json(&t)["state"], "cancelled");
    let (s, t) = call("GET", &url(&format!("/api/jobs/{big}/result")), None, None);
    assert_json_error(s, &t, 409, "cancelled");

    let (s, t) = call("GET", &url("/api/peers"), None, None);
    assert_eq!(s, 200);
    assert!(
        json(&t)
            .as_array()
            .expect("peers")
            .iter()
            .any(|p| p["peer_id"] == net.provider_peer.as_str() && p["verified"].as_u64() > Some(0)),
        "the provider, with its verified results: {t}"
    );
    let (s, t) = call("GET", &url("/api/node"), None, None);
    assert_eq!(s, 200);
    assert!(json(&t)["peer_id"].is_string());
    let (s, t) = call("GET", &url("/"), None, None);
    assert_eq!(s, 200);
    assert!(t.contains("<title>Plexus node</title>") && t.contains("EventSource"));

    // Metrics parse as Prometheus text, and count the job's tasks.
    let (s, t) = call("GET", &url("/metrics"), None, None);
    assert_eq!(s, 200);
    let lines = t.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let value = |name: &str, label: (&str, &str)| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or(0.0)
    };
    // The first job's 16, and whatever of the big one settled before its
    // cancel (a task can: the provider starts it the moment it arrives).
    let (_, big_status) = call("GET", &url(&format!("/api/jobs/{big}")), None, None);
    let big_done = json(&big_status)["tasks_done"]
        .as_u64()
        .expect("tasks_done");
    assert_eq!(
        value("plexus_tasks_total", ("state", "settled")),
        16.0 + big_done as f64,
        "{t}"
    );
    assert_eq!(
        value("plexus_tasks_total", ("state", "submitted")),
        16.0 + 64.0 * 64.0
    );
    assert!(value("plexus_tasks_total", ("state", "dispatched")) >= 16.0);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "plexus_fuel_accepted_total")
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric.starts_with("plexus_task_latency_seconds"))
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "plexus_peers_connected")
    );
    // Nothing was refused on a quiet loopback network, and it says so.
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "plexus_connections_denied"
                && matches!(s.value, prometheus_parse::Value::Gauge(v) if v == 0.0))
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "plexus_requests_rate_limited"
                && matches!(s.value, prometheus_parse::Value::Gauge(v) if v == 0.0))
    );
}

/// A non-loopback address of this machine, making one (a dummy link) if
/// it has none.
fn off_loopback_ip() -> String {
    let list = || {
        let out = std::process::Command::new("ip")
            .args(["-o", "-4", "addr", "show", "scope", "global"])
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|cidr| cidr.split('/').next())
            .map(str::to_owned)
    };
    if let Some(ip) = list() {
        return ip;
    }
    for args in [
        &["link", "add", "plexus-test0", "type", "dummy"][..],
        &["addr", "add", "10.231.0.1/32", "dev", "plexus-test0"],
        &["link", "set", "plexus-test0", "up"],
    ] {
        let _ = std::process::Command::new("ip").args(args).status();
    }
    list().expect("a non-loopback address (or root to make one)")
}

#[test]
fn a_request_from_off_the_machine_needs_the_token() {
    let token = "0123456789abcdef0123456789abcdef".to_owned();
    let net = TestNet::start("0.0.0.0:0".parse().expect("addr"), Some(token.clone()));
    let port = net.base.rsplit(':').next().expect("port");
    let remote = format!("http://{}:{port}/api/jobs", off_loopback_ip());
    let (s, t) = call("GET", &remote, None, None);
    assert_json_error(s, &t, 401, "Authorization: Bearer");
    let (s, t) = call(
        "GET",
        &remote,
        None,
        Some("wrong-token-wrong-token-wrong-tok"),
    );
    assert_json_error(s, &t, 401, "api.token");
    let (s, t) = call("GET", &remote, None, Some(&token));
    assert_eq!(s, 200, "{t}");
    // This machine's own clients need none.
    let (s, _) = call("GET", &format!("{}/api/jobs", net.base), None, None);
    assert_eq!(s, 200);
}

/// Fuzzing the API's bodies through the real server: valid submissions
/// mutated byte by byte (a fixed seed, printed) and arbitrary bytes, each
/// POSTed as a job. Every one is answered with JSON, accepted (201) or
/// refused as the client's fault (4xx), never a 5xx, and the node goes on
/// answering.
#[test]
fn mutated_and_arbitrary_bodies_are_answered_with_json_and_never_a_5xx() {
    let net = TestNet::start("127.0.0.1:0".parse().expect("addr"), None);
    let url = |p: &str| format!("{}{p}", net.base);
    let seed: u64 = 0x5eed_0fb0_d1e5;
    eprintln!("mutation seed {seed:#x}");
    let mut state = seed;
    let mut next = move || {
        // xorshift64*: a fixed, dependency-free sequence.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let valid = submission("fuzz", 2, "");
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..300 {
        let body: Vec<u8> = if case % 5 == 4 {
            (0..next() % 200).map(|_| next() as u8).collect()
        } else {
            let mut bytes = valid.clone().into_bytes();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % bytes.len().max(1);
                match next() % 3 {
                    0 if !bytes.is_empty() => bytes[at] = next() as u8,
                    1 => bytes.insert(at, next() as u8),
                    _ if !bytes.is_empty() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            bytes
        };
        let body = String::from_utf8_lossy(&body).into_owned();
        let path = if case % 7 == 6 {
            "/api/jobs?wait_s=x"
        } else {
            "/api/jobs"
        };
        let (status, text) = call("POST", &url(path), Some(&body), None);
        assert!(
            status == 201 || (400..500).contains(&status),
            "case {case} (seed {seed:#x}): {status} {text} for {body:?}"
        );
        let answer = json(&text);
        if status == 201 {
            accepted += 1;
            assert!(answer["id"].is_string(), "{answer}");
        } else {
            refused += 1;
            assert!(answer["error"].is_string(), "{answer}");
        }
    }
    eprintln!("{accepted} mutated submissions accepted, {refused} refused");
    assert!(
        refused > 0 && accepted > 0,
        "the mutations reach both sides"
    );
    let (status, _) = call("GET", &url("/api/jobs"), None, None);
    assert_eq!(status, 200, "the node goes on answering");
}
