//! The web dashboard in a real browser (Debian's chromium, driven through
//! chromedriver by fantoccini) while a render job runs on three providers:
//! the job, its progress to 100%, the picture filling in tile by tile, and
//! the providers in the network table. Saves a screenshot under target/.

use crate::network::{NodeProcess, wait_until};
use crate::{Env, render_job};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn browser_present() -> bool {
    std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists()
}

/// Installs Debian's chromium and its driver if this machine lacks them
/// (the test sets up what it needs; `.ci/run` installs them beforehand).
fn ensure_browser() {
    if browser_present() {
        return;
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = ["install", "-y", "-q", "chromium", "chromium-driver"];
    if !apt(&install) {
        apt(&["update", "-q"]);
        apt(&install);
    }
    assert!(
        browser_present(),
        "the browser test needs Debian's chromium and chromium-driver, and could not install them (run as root, or `apt-get install chromium chromium-driver`)"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn text(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn script(client: &Client, js: &str) -> Value {
    client.execute(js, vec![]).await.unwrap_or(Value::Null)
}

#[test]
fn the_dashboard_shows_a_render_job_filling_in_and_the_providers() {
    ensure_browser();
    let env = Env::new();
    // 48 tiles: long enough to watch it fill in.
    let job = render_job(&env, "dashboard-render", 640, 360, 4);
    let requester = NodeProcess::requester(&env);
    let providers: Vec<NodeProcess> = (0..3)
        .map(|i| NodeProcess::provider(&env, &format!("p{i}"), &requester, &[]))
        .collect();
    wait_until("three offers", Duration::from_secs(30), || {
        requester.offers() >= 3
    });

    let port = free_port();
    let _driver = Driver(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    // fantoccini speaks plain HTTP to chromedriver here, but its TLS stack
    // wants a process-wide crypto provider chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let profile = env.dir.path().join("chromium-profile");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1400,1100",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }),
        );
        let started = Instant::now();
        let client = loop {
            match ClientBuilder::rustls()
                .expect("tls")
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) if started.elapsed() < Duration::from_secs(20) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("chromedriver: {e}"),
            }
        };
        client.goto(&format!("{}/", requester.api)).await.expect("open the dashboard");
        // The network table lists the three providers.
        let started = Instant::now();
        loop {
            let rows = script(&client, "return document.querySelectorAll('#peers tbody tr[data-provider]').length").await;
            if rows.as_u64() == Some(3) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "providers in the table: {rows}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let listed = script(&client, "return [...document.querySelectorAll('#peers tbody tr')].map(r => r.dataset.peer)").await;
        for p in &providers {
            assert!(
                listed.as_array().is_some_and(|l| l.iter().any(|v| v == p.peer_id.as_str())),
                "{} listed in {listed}",
                p.peer_id
            );
        }

        let submitted = env.plexus(&["job", "submit", &job, "--api", &requester.api]);
        assert!(submitted.status.success(), "{}", String::from_utf8_lossy(&submitted.stderr));
        let id = String::from_utf8_lossy(&submitted.stdout).trim().to_owned();

        // Progress rises to 100% while the picture fills in.
        let started = Instant::now();
        loop {
            let state = text(&client, "#job-state").await;
            let tiles = script(&client, "return Number(document.getElementById('picture').dataset.tiles)").await;
            if state == "completed" && tiles.as_u64() == Some(48) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "the dashboard did not show the job completing: {state}, {tiles} tiles"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(text(&client, "#progress").await, "100%");
        assert_eq!(text(&client, "#job-id").await, id, "the job submitted is the one shown");
        assert_eq!(text(&client, "#job-name").await, "dashboard-render");
        // What the page showed on the way, as it recorded it.
        let shown = script(&client, "return window.plexusShown").await;
        let series = |key: &str| -> Vec<u64> {
            shown[key].as_array().map_or(vec![], |a| a.iter().filter_map(Value::as_u64).collect())
        };
        let progress = series("progress");
        let tiles = series("tiles");
        assert!(progress.windows(2).all(|w| w[0] <= w[1]), "progress never falls: {progress:?}");
        assert!(progress.len() >= 4, "progress rose in steps: {progress:?}");
        assert_eq!(progress.last(), Some(&100));
        assert_eq!(tiles, (1..=48).collect::<Vec<u64>>(), "tiles appeared one by one");
        // The picture is drawn, not blank.
        let lit = script(
            &client,
            "const c = document.getElementById('picture'); \
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
             let lit = 0; for (let i = 0; i < d.length; i += 4) if (d[i] + d[i+1] + d[i+2] > 30) lit++; \
             return [c.width, c.height, lit];",
        )
        .await;
        assert_eq!(lit[0], 640);
        assert_eq!(lit[1], 360);
        assert!(lit[2].as_u64() > Some(640 * 360 / 4), "most of the picture is lit: {lit}");
        let shares = script(&client, "return document.querySelectorAll('#shares tbody tr').length").await;
        assert_eq!(shares.as_u64(), Some(3), "the job's providers");
        let verified = text(&client, "#verification").await;
        assert!(verified.contains("by replicas"), "{verified}");

        let png = client.screenshot().await.expect("screenshot");
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
        std::fs::write(&path, &png).expect("save the screenshot");
        eprintln!("screenshot: {}", path.display());
        let _ = client.close().await;
    });
}
