//! `plexus exec`: run one module in the sandbox, as a provider would.

use crate::local;
use anyhow::{Context, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use types::TaskLimits;
use types::limits::MIB;

#[derive(Args)]
#[command(
    about = "Run one WASI module in the sandbox and report its outcome, fuel, outputs and stderr",
    after_help = "Examples:\n  plexus exec builtin:mandelbrot --out tile/ -- --per-side 8 --tile 27\n  plexus exec hello.wat --json\n  plexus exec app.wasm --input data.csv:input.csv --env MODE=fast -- /in/input.csv\n\nExit code: 0 when the task exits 0, 1 when it exits otherwise or traps, 2 on an error."
)]
pub struct ExecArgs {
    /// A .wasm or .wat file, or builtin:NAME (render, mandelbrot, noop, probe)
    module: String,
    /// Fuel limit (about one WASM instruction each)
    #[arg(long, default_value_t = types::limits::TASK_FUEL_DEFAULT)]
    fuel: u64,
    /// Run without fuel metering (to measure its cost); no fuel is reported
    #[arg(long)]
    no_fuel: bool,
    /// Linear memory limit in MiB
    #[arg(long, value_name = "MIB", default_value_t = types::limits::TASK_MEMORY_BYTES_DEFAULT / MIB)]
    memory: u64,
    /// Wall-clock limit in seconds
    #[arg(long, value_name = "SECS", default_value_t = types::limits::TASK_DEADLINE_MS_DEFAULT / 1000)]
    timeout: u64,
    /// Limit on all outputs together (stdout included), in MiB
    #[arg(long, value_name = "MIB", default_value_t = types::limits::TASK_OUTPUT_BYTES_DEFAULT / MIB)]
    output_limit: u64,
    /// A file to mount read-only as /in/NAME (NAME defaults to the file's name)
    #[arg(long, value_name = "PATH[:NAME]")]
    input: Vec<String>,
    /// An environment variable for the guest (nothing of the host's is passed)
    #[arg(long, value_name = "K=V")]
    env: Vec<String>,
    /// Keep the outputs here (must be empty or absent); otherwise they are discarded
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Seed of the guest's random source
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Exported function to call instead of _start
    #[arg(long, value_name = "NAME")]
    entry: Option<String>,
    /// Define imports the sandbox lacks as traps instead of refusing the module
    #[arg(long)]
    allow_missing_imports: bool,
    /// Canonicalise NaNs, so float results match across CPU architectures (slower)
    #[arg(long)]
    canonicalize_nans: bool,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
    /// Arguments for the guest
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn exec(a: ExecArgs, data_dir: &Path) -> anyhow::Result<u8> {
    let cwd = std::env::current_dir().context("current directory")?;
    let (program, bytes) = local::module_bytes(&a.module, &cwd)?;
    let env = a
        .env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("--env {kv:?}: expected K=V"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let inputs = a
        .input
        .iter()
        .map(|spec| {
            // PATH[:NAME]; a path containing ':' needs the explicit name.
            let (path, name) = match spec.rsplit_once(':') {
                Some((p, n)) if !p.is_empty() && !n.contains('/') => {
                    (PathBuf::from(p), n.to_owned())
                }
                _ => {
                    let p = PathBuf::from(spec);
                    let n = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    (p, n)
                }
            };
            Ok((name, path))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if a.memory == 0 || a.timeout == 0 || a.output_limit == 0 {
        bail!("--memory, --timeout and --output-limit must be positive");
    }
    let limits = TaskLimits {
        fuel: (!a.no_fuel).then_some(a.fuel),
        memory_bytes_max: a.memory.saturating_mul(MIB),
        deadline_ms: a.timeout.saturating_mul(1000),
        output_bytes_max: a.output_limit.saturating_mul(MIB),
        stderr_tail_bytes_max: types::limits::STDERR_TAIL_BYTES_MAX,
    };

    let sandbox = local::sandbox(data_dir, !a.no_fuel, a.canonicalize_nans)?;
    let module = sandbox.load(&bytes)?;
    let work = data_dir.join("work");
    let staged = if inputs.is_empty() {
        None
    } else {
        Some(sandbox::InputDir::stage(&work, &inputs)?)
    };
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("exec-")
        .tempdir_in(&work)
        .context("create a scratch directory")?;
    let out_dir = a.out.clone().unwrap_or_else(|| scratch.path().join("out"));
    let report = sandbox.run(
        &module,
        &sandbox::TaskRun {
            program: &program,
            args: &a.args,
            env: &env,
            inputs: staged.as_ref(),
            output_dir: &out_dir,
            seed: a.seed,
            limits,
            entry: a.entry.as_deref(),
            allow_missing_imports: a.allow_missing_imports,
            hold_bytes_max: 0,
        },
    )?;

    if a.json {
        let value = serde_json::json!({
            "module": module.hash,
            "engine": sandbox.engine_identity(),
            "compile_ms": module.compile_ms,
            "module_cached": module.cached,
            "out_dir": a.out,
            "report": report,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("outcome   {}", report.outcome);
        match report.fuel_used {
            Some(f) => println!("fuel      {} ({})", f.0, f),
            None => println!("fuel      not metered"),
        }
        let compile = if module.cached {
            "module cached".to_owned()
        } else {
            format!("compiled in {} ms", module.compile_ms)
        };
        println!("time      {} ms ({compile})", report.run_ms);
        println!(
            "outputs   {}",
            if a.out.is_some() {
                out_dir.display().to_string()
            } else {
                "(discarded; --out DIR keeps them)".into()
            }
        );
        for o in &report.outputs {
            println!(
                "  {:<24} {:>10} bytes  blake3 {}",
                o.name, o.size_bytes, o.hash
            );
        }
        if report.stderr_bytes_total > 0 {
            println!(
                "stderr    last {} of {} bytes:",
                report.stderr_tail.len(),
                report.stderr_bytes_total
            );
            for line in String::from_utf8_lossy(&report.stderr_tail).lines() {
                println!("  | {line}");
            }
        }
    }
    Ok(if report.outcome.is_success() {
        0
    } else {
        crate::EXIT_TASK_FAILED
    })
}
