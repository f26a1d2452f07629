//! `plexus run`: run every task of a job on this machine, as many sandboxes
//! as cores, then assemble the result.

use crate::local;
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sandbox::{InputDir, LoadedModule, Sandbox, TaskReport, TaskRun};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;
use types::{Fuel, Job, ModuleSource};

/// Finished tasks waiting for the main thread; workers block beyond this.
const RESULTS_QUEUE_MAX: usize = 64;
/// Failed tasks listed in the error; the rest are counted.
const FAILURES_SHOWN_MAX: usize = 5;

#[derive(Args)]
#[command(
    about = "Run every task of a job on this machine and assemble the result",
    after_help = "Examples:\n  plexus run examples/render.toml --out out/\n  plexus run examples/mandelbrot.toml --out out/ --jobs 1 --json"
)]
pub struct RunArgs {
    /// The job file (TOML)
    job: PathBuf,
    /// Where the assembled result goes
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Sandboxes running at once [default: the number of cores]
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
    /// Hide the progress bar
    #[arg(long)]
    quiet: bool,
}

struct Finished {
    index: u64,
    result: Result<TaskReport, sandbox::SandboxError>,
}

pub fn run(a: RunArgs, data_dir: &Path) -> anyhow::Result<u8> {
    let (shown, text) = local::read_job_file(&a.job)?;
    let job = Job::parse(&shown, &text)?;
    let base = a.job.parent().map(Path::to_path_buf).unwrap_or_default();
    let module_spec = match &job.module {
        ModuleSource::Builtin(name) => format!("builtin:{name}"),
        ModuleSource::Path(p) => p.clone(),
    };
    let (program, module_bytes) =
        local::module_bytes(&module_spec, &base).with_context(|| format!("{shown}: `module`"))?;
    let workers = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let workers = workers.min(job.task_count() as usize).max(1);

    // Inputs become content-addressed blobs, staged once for every task.
    let blobs = store::BlobStore::open(data_dir.join("blobs"))?;
    let mut inputs = Vec::new();
    for (name, path) in &job.inputs {
        let source = base.join(path);
        let hash = blobs
            .put_file(&source)
            .with_context(|| format!("{shown}: input {name:?}"))?;
        inputs.push((name.clone(), blobs.path(&hash)));
    }
    let work = data_dir.join("work");
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let staged = if inputs.is_empty() {
        None
    } else {
        Some(InputDir::stage(&work, &inputs)?)
    };
    let scratch = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&work)
        .context("create a scratch directory")?;

    let sandbox = local::sandbox(data_dir, job.limits.fuel.is_some(), job.canonicalize_nans)?;
    let module = sandbox.load(&module_bytes)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("create {}", a.out.display()))?;

    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(job.task_count())
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:32}] {pos}/{len} tasks  {elapsed} (eta {eta})",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(job.name.clone());

    let started = Instant::now();
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let ctx = WorkerCtx {
        sandbox: &sandbox,
        module: &module,
        job: &job,
        program: &program,
        inputs: staged.as_ref(),
        scratch: scratch.path(),
        next: &next,
        stop: &stop,
    };
    let mut total_fuel = Fuel(0);
    let mut failures: Vec<String> = Vec::new();
    let mut finished = 0u64;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Finished>(RESULTS_QUEUE_MAX);
        for _ in 0..workers {
            let tx = tx.clone();
            let ctx = &ctx;
            scope.spawn(move || ctx.work(tx));
        }
        drop(tx);
        for done in rx {
            finished += 1;
            bar.inc(1);
            match done.result {
                Ok(report) => {
                    total_fuel = total_fuel + report.fuel_used.unwrap_or_default();
                    if !report.outcome.is_success() {
                        failures.push(types::outcome::describe_failure(
                            done.index,
                            &report.outcome,
                            &report.stderr_tail,
                        ));
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    failures.push(format!("task {}: {e}", done.index));
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }
    });
    let wall = started.elapsed();
    bar.finish_and_clear();

    if !failures.is_empty() {
        let more = failures.len().saturating_sub(FAILURES_SHOWN_MAX);
        let mut message = failures
            .iter()
            .take(FAILURES_SHOWN_MAX)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if more > 0 {
            message.push_str(&format!("; and {more} more"));
        }
        eprintln!(
            "error: job {:?} failed after {finished} of {} tasks: {message}",
            job.name,
            job.task_count()
        );
        return Ok(crate::EXIT_TASK_FAILED);
    }

    let result = assemble::assemble_job(
        &job,
        |i| assemble::files_in(&task_dir(scratch.path(), i)),
        &a.out,
    )?;
    let secs = wall.as_secs_f64().max(1e-9);
    let summary = serde_json::json!({
        "job": job.name,
        "tasks": job.task_count(),
        "workers": workers,
        "fuel": total_fuel.0,
        "metered": job.limits.fuel.is_some(),
        "wall_s": secs,
        "tasks_per_s": job.task_count() as f64 / secs,
        "engine": sandbox.engine_identity(),
        "module": module.hash,
        "result": result.path,
        "checksum": result.checksum,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("job       {}", job.name);
        println!("tasks     {} on {workers} sandboxes", job.task_count());
        if job.limits.fuel.is_some() {
            println!("fuel      {} ({total_fuel})", total_fuel.0);
        }
        println!(
            "wall time {secs:.2} s ({:.1} tasks/s)",
            job.task_count() as f64 / secs
        );
        println!("result    {}", result.path.display());
        if let Some(c) = result.checksum {
            println!("checksum  {c} (sum of samples)");
        }
    }
    Ok(0)
}

struct WorkerCtx<'a> {
    sandbox: &'a Sandbox,
    module: &'a LoadedModule,
    job: &'a Job,
    program: &'a str,
    inputs: Option<&'a InputDir>,
    scratch: &'a Path,
    next: &'a AtomicU64,
    stop: &'a AtomicBool,
}

impl WorkerCtx<'_> {
    fn work(&self, results: mpsc::SyncSender<Finished>) {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            if index >= self.job.task_count() {
                return;
            }
            let task = self.job.task(index);
            let output_dir = task_dir(self.scratch, index);
            let result = self.sandbox.run(
                self.module,
                &TaskRun {
                    program: self.program,
                    args: &task.args,
                    env: &task.env,
                    inputs: self.inputs,
                    output_dir: &output_dir,
                    seed: task.seed,
                    limits: self.job.limits,
                    entry: self.job.entry.as_deref(),
                    allow_missing_imports: false,
                    hold_bytes_max: 0,
                },
            );
            if results.send(Finished { index, result }).is_err() {
                return;
            }
        }
    }
}

fn task_dir(scratch: &Path, index: u64) -> PathBuf {
    scratch.join("tasks").join(index.to_string())
}
