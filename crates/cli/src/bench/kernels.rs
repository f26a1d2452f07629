//! B3: the guest kernels built natively and for wasm32-wasip1 from the same
//! Rust (`workloads/`), timed side by side. Native: the release binary run
//! as a process (cargo builds it for this host). WASM: the built-in module
//! in this binary's sandbox, compiled beforehand, with the metering Plexus
//! ships (fuel, and the epoch deadline), and again with fuel off (epoch
//! only) for the comparison DESIGN.md asks for. Best of `reps` each (five:
//! the machines are noisy), the three sides taken in turns.

use super::Row;
use anyhow::{Context, bail};
use sandbox::{InputDir, Metering, Sandbox, SandboxConfig, TaskRun};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Kernel {
    name: &'static str,
    what: String,
    args: Vec<String>,
    /// An input file the kernel reads, as (host path, name under /in).
    input: Option<(PathBuf, &'static str)>,
    /// Where the native build writes the output the WASM run writes to
    /// `/out/NAME` (compared byte for byte), if it writes one.
    out_file: Option<&'static str>,
    /// Whether the two builds must agree bit for bit (floats through libm
    /// may not: native links the host's, WASM its own).
    compare: bool,
}

fn kernels(workloads: &Path, smoke: bool) -> Vec<Kernel> {
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let scene = workloads.join("../examples/scenes/demo.gltf");
    let (mandel, render, blur, sha) = if smoke {
        (
            s(&["--size", "256", "--per-side", "1", "--tile", "0"]),
            s(&[
                "--width",
                "64",
                "--height",
                "36",
                "--x",
                "0",
                "--y",
                "0",
                "--tile-width",
                "64",
                "--tile-height",
                "36",
                "--spp",
                "1",
                "--max-depth",
                "2",
            ]),
            s(&["--width", "256", "--height", "256", "--passes", "2"]),
            s(&["--mib", "1"]),
        )
    } else {
        (
            s(&["--per-side", "1", "--tile", "0"]),
            s(&[
                "--width",
                "1280",
                "--height",
                "720",
                "--x",
                "480",
                "--y",
                "270",
                "--tile-width",
                "320",
                "--tile-height",
                "180",
                "--spp",
                "4",
                "--max-depth",
                "6",
            ]),
            s(&["--width", "3840", "--height", "2160", "--passes", "4"]),
            s(&["--mib", "64"]),
        )
    };
    let mut render_args = s(&["--scene", "/in/scene.gltf"]);
    render_args.extend(render);
    vec![
        Kernel {
            name: "mandelbrot",
            what: "mandelbrot 1024², 1000 iterations".into(),
            args: mandel,
            input: None,
            out_file: Some("tile"),
            compare: true,
        },
        Kernel {
            name: "render",
            what: "render: path-traced 320×180 tile, 4 spp".into(),
            args: render_args,
            input: Some((scene, "scene.gltf")),
            out_file: Some("tile"),
            compare: false,
        },
        Kernel {
            name: "blur",
            what: "3×3 Gaussian blur of a 4K RGBA image, 4 passes".into(),
            args: blur,
            input: None,
            out_file: None,
            compare: true,
        },
        Kernel {
            name: "sha256",
            what: "SHA-256 of 64 MiB (portable sha2 on both)".into(),
            args: sha,
            input: None,
            out_file: None,
            compare: true,
        },
    ]
}

/// Builds the native kernels, runs both sides, and returns B3's rows.
pub(super) fn run(workloads: &Path, root: &Path, smoke: bool) -> anyhow::Result<Vec<Row>> {
    let reps = if smoke { 1 } else { 5 };
    let native_dir = build_native(workloads)?;
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    let fuel = Sandbox::new(SandboxConfig::default())?;
    let epoch_only = Sandbox::new(SandboxConfig {
        metering: Metering::Off,
        ..SandboxConfig::default()
    })?;
    for k in kernels(workloads, smoke) {
        eprintln!("B3: {}", k.name);
        let scratch = tempfile::tempdir_in(root).context("create a scratch directory")?;
        // The three sides in turns, best of `reps` each: a slow moment of a
        // shared machine (one suite run measured the blur 1.45× with its five
        // WASM runs after the five native ones, 1.06× in turns) then falls
        // on every side alike.
        let (mut native, mut wasm, mut unmetered) = (Duration::MAX, Duration::MAX, Duration::MAX);
        let (mut native_stdout, mut wasm_stdout) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let (took, stdout) = time_native(&native_dir, &k, scratch.path())?;
            (native, native_stdout) = (native.min(took), stdout);
            let (took, stdout) = time_wasm(&fuel, &k, scratch.path())?;
            (wasm, wasm_stdout) = (wasm.min(took), stdout);
            unmetered = unmetered.min(time_wasm(&epoch_only, &k, scratch.path())?.0);
        }
        if k.compare && native_stdout != wasm_stdout {
            bail!(
                "B3 {}: native and WASM disagree: {:?} against {:?}",
                k.name,
                String::from_utf8_lossy(&native_stdout),
                String::from_utf8_lossy(&wasm_stdout)
            );
        }
        if k.compare
            && let Some(file) = k.out_file
        {
            let a = std::fs::read(scratch.path().join("native-out"))?;
            let b = std::fs::read(scratch.path().join("wasm-out").join(file))?;
            if a != b {
                bail!("B3 {}: native and WASM wrote different {file}", k.name);
            }
        }
        let ratio = wasm.as_secs_f64() / native.as_secs_f64();
        ratios.push(ratio);
        rows.push(Row {
            id: "B3",
            workload: format!("{} — WASM with fuel (as shipped)", k.what),
            metric: "ms".into(),
            plexus: Some(ms(wasm)),
            against: Some(ms(native)),
            against_what: "native, same source".into(),
            target: "≤ 1.60× (worst)".into(),
            ratio: Some(ratio),
            met: Some(ratio <= 1.6),
        });
        let ratio_unmetered = unmetered.as_secs_f64() / native.as_secs_f64();
        rows.push(Row {
            id: "B3",
            workload: format!("{} — WASM, epoch deadline only (no fuel)", k.what),
            metric: "ms".into(),
            plexus: Some(ms(unmetered)),
            against: Some(ms(native)),
            against_what: "native, same source".into(),
            target: "reported".into(),
            ratio: Some(ratio_unmetered),
            met: None,
        });
    }
    let geomean = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
    rows.push(Row {
        id: "B3",
        workload: "the four kernels, WASM with fuel ÷ native".into(),
        metric: "geometric mean".into(),
        plexus: Some(geomean),
        against: None,
        against_what: String::new(),
        target: "≤ 1.25×".into(),
        ratio: Some(geomean),
        met: Some(geomean <= 1.25),
    });
    Ok(rows)
}

/// `cargo build --release` of `workloads/` for this host; the folder of its binaries.
fn build_native(workloads: &Path) -> anyhow::Result<PathBuf> {
    let manifest = workloads.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "B3 needs the workloads' sources: no {} (run from the repository root, or give --workloads)",
            manifest.display()
        );
    }
    eprintln!("B3: building the native kernels (cargo build --release in workloads/)");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--manifest-path")
        .arg(&manifest)
        .args([
            "--bin",
            "mandelbrot",
            "--bin",
            "render",
            "--bin",
            "blur",
            "--bin",
            "sha256",
        ])
        // The host workspace's flags and target dir are not the guests'.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .context("run cargo to build the native kernels")?;
    if !status.success() {
        bail!("building the native kernels failed ({status})");
    }
    Ok(workloads.join("target/release"))
}

/// One run of the native kernel: its time and its stdout.
fn time_native(dir: &Path, k: &Kernel, scratch: &Path) -> anyhow::Result<(Duration, Vec<u8>)> {
    let mut args = k.args.clone();
    if let Some((host, name)) = &k.input {
        let inner = format!("/in/{name}");
        for a in &mut args {
            if *a == inner {
                *a = host.display().to_string();
            }
        }
    }
    if k.out_file.is_some() {
        args.push("--out".into());
        args.push(scratch.join("native-out").display().to_string());
    }
    let started = Instant::now();
    let out = Command::new(dir.join(k.name))
        .args(&args)
        .output()
        .with_context(|| format!("run the native {}", k.name))?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "native {}: {}",
            k.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((took, out.stdout))
}

/// One run of the kernel in `sandbox` (compiled beforehand): its time and its stdout.
fn time_wasm(sandbox: &Sandbox, k: &Kernel, scratch: &Path) -> anyhow::Result<(Duration, Vec<u8>)> {
    let bytes = guests::builtin(k.name).with_context(|| format!("{} is not built in", k.name))?;
    let module = sandbox.load(bytes)?;
    let inputs = match &k.input {
        Some((host, name)) => Some(InputDir::stage(
            &scratch.join("inputs"),
            &[(name.to_string(), host.clone())],
        )?),
        None => None,
    };
    let out = scratch.join("wasm-out");
    let _ = std::fs::remove_dir_all(&out);
    let started = Instant::now();
    let report = sandbox.run(
        &module,
        &TaskRun {
            program: k.name,
            args: &k.args,
            env: &[],
            inputs: inputs.as_ref(),
            output_dir: &out,
            seed: 0,
            limits: types::TaskLimits {
                fuel: Some(u64::MAX / 2),
                deadline_ms: 600_000,
                ..types::TaskLimits::default()
            },
            entry: None,
            allow_missing_imports: false,
            hold_bytes_max: 1 << 20,
        },
    )?;
    let took = started.elapsed();
    if !report.outcome.is_success() {
        bail!("WASM {}: {}", k.name, report.outcome);
    }
    let stdout_hash = report
        .outputs
        .iter()
        .find(|o| o.name == sandbox::STDOUT_FILE)
        .map(|o| o.hash);
    let stdout = report
        .held
        .into_iter()
        .find(|h| Some(h.hash) == stdout_hash)
        .map(|h| h.bytes)
        .unwrap_or_default();
    Ok((took, stdout))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
