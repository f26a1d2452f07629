//! The `plexus` binary end to end: real processes, real files.

mod dashboard;
mod durability;
mod faults;
mod hosts;
mod market;
mod network;
mod pay;
mod stragglers;
mod verification;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn plexus(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_plexus"))
            .args(args)
            .env("PLEXUS_DATA_DIR", self.dir.path().join("data"))
            .current_dir(repo())
            .output()
            .expect("run plexus")
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    /// Runs a job with --json; returns the summary.
    fn run_job(&self, job: &str, out: &str, extra: &[&str]) -> Value {
        let mut args = vec!["run", job, "--out", out, "--json", "--quiet"];
        args.extend_from_slice(extra);
        let output = self.plexus(&args);
        assert!(
            output.status.success(),
            "plexus run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("--json prints JSON")
    }
}

/// A small version of the demo render, for the determinism checks.
fn small_render_job(env: &Env) -> String {
    render_job(env, "small", 320, 180, 2)
}

/// The demo scene at `width`×`height` in tiles of 80×60.
fn render_job(env: &Env, name: &str, width: u32, height: u32, spp: u32) -> String {
    let scene = repo().join("examples/scenes/demo.gltf");
    env.write(
        &format!("{name}.toml"),
        &format!(
            r#"
name = "{name}"
module = "builtin:render"
args = ["--scene", "/in/scene.gltf", "--width", "{width}", "--height", "{height}", "--x", "{{x}}", "--y", "{{y}}",
        "--tile-width", "80", "--tile-height", "60", "--spp", "{spp}", "--max-depth", "4"]
[inputs]
"scene.gltf" = {scene:?}
[tasks]
y = {{ start = 0, end = {height}, step = 60 }}
x = {{ start = 0, end = {width}, step = 80 }}
[assemble]
kind = "tiles-png"
output = "{name}.png"
"#
        ),
    )
}

/// Mean luminance spread and neighbour differences of an RGB image.
fn image_stats(path: &str) -> (u32, u32, f64, f64) {
    let img = image::open(path).expect("the PNG decodes").to_rgb8();
    let (w, h) = img.dimensions();
    let luma: Vec<f64> = img
        .pixels()
        .map(|p| 0.2126 * p[0] as f64 + 0.7152 * p[1] as f64 + 0.0722 * p[2] as f64)
        .collect();
    let mean = luma.iter().sum::<f64>() / luma.len() as f64;
    let std_dev = (luma.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / luma.len() as f64).sqrt();
    let mut diff = 0.0;
    let mut n = 0.0;
    for y in 0..h as usize {
        for x in 1..w as usize {
            diff += (luma[y * w as usize + x] - luma[y * w as usize + x - 1]).abs();
            n += 1.0;
        }
    }
    (w, h, std_dev, diff / n)
}

fn demo_processes() -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("plexus-demo-") {
            count += 1;
        }
    }
    count
}

#[test]
fn the_demo_render_is_a_recognisable_picture_and_the_demo_network_renders_it_identically() {
    let env = Env::new();
    let out = env.path("out");
    let summary = env.run_job("examples/render.toml", &out, &[]);
    assert_eq!(summary["tasks"], 64);

    let demo_out = env.path("demo-output");
    let demo = env.plexus(&["demo", "--out", &demo_out]);
    let stdout = String::from_utf8_lossy(&demo.stdout);
    assert!(
        demo.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let local = std::fs::read(format!("{out}/render.png")).expect("local render");
    let network = std::fs::read(format!("{demo_out}/render.png")).expect("demo render");
    assert!(
        local == network,
        "the demo's image is byte-identical to the local run"
    );
    for i in 0..3 {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("provider {i} ")))
            .expect("a line per provider");
        let tasks: u64 = line
            .split(':')
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("task count");
        assert!(tasks >= 1, "provider {i} ran at least one task: {line}");
        // Paid on the ledger for it (the demo itself fails when what the
        // providers earned and what the requester paid do not add up).
        let earned: u64 = stdout
            .lines()
            .find_map(|l| {
                let rest = l.trim_start().strip_prefix(&format!("provider {i} "))?;
                rest.split("earned")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .expect("what each provider earned");
        assert!(earned >= 1, "provider {i} earned credits: {stdout}");
    }
    assert!(stdout.contains("requester: paid"), "{stdout}");
    assert_eq!(demo_processes(), 0, "the demo leaves no process behind");
    let (w, h, std_dev, edge) = image_stats(&format!("{out}/render.png"));
    assert_eq!((w, h), (1280, 720));
    // Reference run (2026-11-26): luminance spread 51.4, mean neighbour
    // difference 14.0 (path-tracing grain included). A flat image has no
    // spread; uniform noise has a neighbour difference above its spread
    // (85 against 74); a picture has a wide spread and small local steps.
    assert!(
        (35.0..70.0).contains(&std_dev),
        "luminance spread {std_dev}"
    );
    assert!((7.0..21.0).contains(&edge), "neighbour difference {edge}");
    assert!(
        edge / std_dev < 0.4,
        "smooth regions, not noise: {edge} / {std_dev}"
    );
}

#[test]
fn a_job_gives_identical_bytes_and_fuel_on_every_run_and_any_worker_count() {
    let env = Env::new();
    let job = small_render_job(&env);
    let runs: Vec<(Value, Vec<u8>)> = [("a", "2"), ("b", "1"), ("c", "2")]
        .iter()
        .map(|(name, jobs)| {
            let out = env.path(name);
            let summary = env.run_job(&job, &out, &["--jobs", jobs]);
            let png = std::fs::read(format!("{out}/small.png")).expect("png");
            (summary, png)
        })
        .collect();
    for (summary, png) in &runs[1..] {
        assert_eq!(png, &runs[0].1, "byte-identical PNG");
        assert_eq!(summary["fuel"], runs[0].0["fuel"], "identical total fuel");
        assert!(summary["fuel"].as_u64().expect("fuel") > 0);
    }
    assert_eq!(runs[1].0["workers"], 1);
    assert_eq!(runs[0].0["workers"], 2);
}

#[test]
fn the_benchmark_mandelbrot_has_the_reference_checksum() {
    let env = Env::new();
    let summary = env.run_job("examples/mandelbrot.toml", &env.path("m"), &[]);
    assert_eq!(summary["checksum"], 181_208_237u64);
    let img = image::open(env.path("m/mandelbrot.png"))
        .expect("png")
        .to_luma16();
    assert_eq!(img.dimensions(), (1024, 1024));
}

fn assert_one_line_error(output: &Output, expect: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "exit code 2: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    for e in expect {
        assert!(stderr.contains(e), "{e:?} in {stderr}");
    }
}

#[test]
fn bad_input_gets_a_one_line_error() {
    let env = Env::new();
    let out = env.path("out");
    let malformed = env.write(
        "malformed.toml",
        "name = \"x\"\nmodule = \"builtin:noop\"\n[tasks\n",
    );
    assert_one_line_error(
        &env.plexus(&["run", &malformed, "--out", &out]),
        &["malformed.toml:3:"],
    );

    let unknown = env.write(
        "unknown.toml",
        "name = \"x\"\nmodule = \"builtin:noop\"\ncolour = \"red\"\n",
    );
    assert_one_line_error(
        &env.plexus(&["run", &unknown, "--out", &out]),
        &["unknown.toml:3:", "colour"],
    );

    let missing = env.write("missing.toml", "name = \"x\"\nmodule = \"nowhere.wasm\"\n");
    assert_one_line_error(
        &env.plexus(&["run", &missing, "--out", &out]),
        &["nowhere.wasm", "No such file"],
    );

    let builtin = env.write("builtin.toml", "name = \"x\"\nmodule = \"builtin:nope\"\n");
    assert_one_line_error(
        &env.plexus(&["run", &builtin, "--out", &out]),
        &["no built-in workload \"nope\""],
    );

    let huge = env.write(
        "huge.toml",
        "name = \"x\"\nmodule = \"builtin:noop\"\n[tasks]\na = { start = 0, end = 1000000 }\nb = { start = 0, end = 1000000 }\n",
    );
    assert_one_line_error(
        &env.plexus(&["run", &huge, "--out", &out]),
        &["huge.toml:5:", "maximum of 1000000 tasks"],
    );

    let no_input = env.write(
        "noinput.toml",
        "name = \"x\"\nmodule = \"builtin:noop\"\n[inputs]\n\"a.txt\" = \"absent.txt\"\n",
    );
    assert_one_line_error(
        &env.plexus(&["run", &no_input, "--out", &out]),
        &["input \"a.txt\""],
    );

    assert_one_line_error(
        &env.plexus(&["run", &env.path("absent.toml"), "--out", &out]),
        &["absent.toml"],
    );
    assert_one_line_error(
        &env.plexus(&["exec", &env.path("absent.wasm")]),
        &["absent.wasm"],
    );
    assert_one_line_error(
        &env.plexus(&["node", "--async-threads", "0"]),
        &["--async-threads 0", "ASYNC_THREADS_MAX"],
    );
    assert_one_line_error(
        &env.plexus(&["node", "--provide", "--slots", "100000"]),
        &["--slots", "100000"],
    );
    let not_wasm = env.write("bad.wasm", "\0asm garbage");
    assert_one_line_error(
        &env.plexus(&["exec", &not_wasm]),
        &["invalid module", "failed to parse"],
    );
}

#[test]
fn a_failing_task_fails_the_job_with_its_reason() {
    let env = Env::new();
    let job = env.write(
        "fail.toml",
        "name = \"fail\"\nmodule = \"builtin:probe\"\nargs = [\"exit\", \"{code}\"]\n[tasks]\ncode = [0, 9]\n",
    );
    let output = env.plexus(&["run", &job, "--out", &env.path("o"), "--quiet"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("task 1 exited with code 9"), "{stderr}");
}

#[test]
fn exec_reports_outcome_fuel_outputs_and_stderr_as_json() {
    let env = Env::new();
    let out = env.path("tile");
    let output = env.plexus(&[
        "exec",
        "builtin:mandelbrot",
        "--json",
        "--out",
        &out,
        "--",
        "--per-side",
        "8",
        "--tile",
        "27",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let v: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(v["report"]["outcome"]["kind"], "exited");
    assert_eq!(v["report"]["outcome"]["code"], 0);
    assert!(v["report"]["fuel_used"].as_u64().expect("fuel") > 1_000_000);
    let names: Vec<&str> = v["report"]["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert_eq!(names, ["stdout", "tile"]);
    assert!(Path::new(&out).join("tile").is_file());

    let output = env.plexus(&[
        "exec",
        "builtin:probe",
        "--fuel",
        "1000000",
        "--json",
        "--",
        "spin",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(v["report"]["outcome"]["trap"]["trap"], "out_of_fuel");

    let output = env.plexus(&["exec", "builtin:probe", "--json", "--", "stderr", "100"]);
    let v: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert!(
        v["report"]["stderr_tail"]
            .as_str()
            .expect("tail")
            .contains("line 1\n")
    );
}

#[test]
fn the_benchmark_suite_runs_at_small_sizes() {
    let env = Env::new();
    let workloads = concat!(env!("CARGO_MANIFEST_DIR"), "/../../workloads");
    let output = env.plexus(&["bench", "--smoke", "--json", "--workloads", workloads]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Value = serde_json::from_slice(&output.stdout).expect("JSON rows");
    let rows = rows.as_array().expect("an array of rows");
    for id in ["B1", "B2", "B3", "B4", "B5", "B6"] {
        let measured: Vec<&Value> = rows
            .iter()
            .filter(|r| r["id"] == id && r["plexus"].is_number())
            .collect();
        assert!(!measured.is_empty(), "{id} measured: {rows:?}");
        for r in measured {
            assert!(r["plexus"].as_f64().expect("figure") > 0.0, "{r}");
        }
    }
    // The B2 row compares against the kernel run directly, in the same run.
    let b2 = rows.iter().find(|r| r["id"] == "B2").expect("B2");
    assert!(b2["against"].as_f64().expect("direct run") > 0.0, "{b2}");
    assert!(b2["ratio"].as_f64().expect("ratio") > 0.0, "{b2}");
    // B3 and B5 compare with a yardstick measured in the same run: native
    // code, a bare libp2p stream.
    for id in ["B3", "B5"] {
        for r in rows
            .iter()
            .filter(|r| r["id"] == id && r["against"].is_number())
        {
            assert!(r["against"].as_f64().expect("yardstick") > 0.0, "{r}");
        }
    }
}
