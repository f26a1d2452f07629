//! Running one task: build its WASI context, instantiate, call the entry
//! point under its limits, classify how it ended, and collect its outputs.

use crate::engine::{EPOCH_TICK_MS, Metering};
use crate::imports::{LimitHit, MemoryLimiter, SeededRandom, TaskState, VirtualClock};
use crate::{LoadedModule, Sandbox, SandboxError};
use serde::Serialize;
use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use types::limits::{self, TaskLimits};
use types::outcome::{Outcome, OutputFile, Trap};
use types::{BlobHash, Fuel};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

/// The output file that holds the guest's stdout.
pub const STDOUT_FILE: &str = "stdout";
/// Output directories nest no deeper than this.
const OUTPUT_DEPTH_MAX: usize = 16;

/// What to run: everything a task is, bar the module.
pub struct TaskRun<'a> {
    /// argv[0], as the guest sees it.
    pub program: &'a str,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    /// Staged inputs, mounted read-only at `/in`.
    pub inputs: Option<&'a InputDir>,
    /// An empty directory, mounted at `/out`; it holds the outputs afterwards.
    pub output_dir: &'a Path,
    pub seed: u64,
    pub limits: TaskLimits,
    /// The exported function to call; `_start` when None.
    pub entry: Option<&'a str>,
    /// Define imports the sandbox lacks as functions that trap when called,
    /// instead of refusing the module.
    pub allow_missing_imports: bool,
    /// Outputs that fit this many bytes together come back in memory
    /// ([`TaskReport::held`]), and such a stdout is never written to the
    /// output directory: a provider sends small outputs with the result and
    /// need not touch the disk for them. 0: every output is a file.
    pub hold_bytes_max: u64,
}

/// An output's bytes, kept in memory (see [`TaskRun::hold_bytes_max`]).
#[derive(Clone, Debug)]
pub struct HeldOutput {
    pub hash: BlobHash,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TaskReport {
    pub outcome: Outcome,
    /// None when the sandbox runs unmetered.
    pub fuel_used: Option<Fuel>,
    /// Sorted by name; `stdout` among them.
    pub outputs: Vec<OutputFile>,
    /// The last bytes the guest wrote to stderr (at most the task's tail limit).
    #[serde(serialize_with = "lossy")]
    pub stderr_tail: Vec<u8>,
    pub stderr_bytes_total: u64,
    /// Wall time of instantiation and execution (not compilation).
    pub run_ms: u64,
    /// The outputs held in memory (their files stay in the output
    /// directory, except a held stdout, which has none).
    #[serde(skip)]
    pub held: Vec<HeldOutput>,
}

fn lossy<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}

/// Inputs staged in one directory under the names the job chose; shared by
/// every task of a job and removed when dropped.
pub struct InputDir {
    dir: tempfile::TempDir,
}

impl InputDir {
    /// Hard-links (or, across file systems, copies) each file as `/in/NAME`.
    pub fn stage(parent: &Path, inputs: &[(String, PathBuf)]) -> Result<InputDir, SandboxError> {
        if inputs.len() > limits::INPUTS_PER_JOB_MAX {
            return Err(SandboxError::InvalidInput {
                name: String::new(),
                message: format!(
                    "more than {} inputs (INPUTS_PER_JOB_MAX)",
                    limits::INPUTS_PER_JOB_MAX
                ),
            });
        }
        std::fs::create_dir_all(parent)
            .map_err(|e| SandboxError::io(format!("create {}", parent.display()), e))?;
        let dir = tempfile::Builder::new()
            .prefix("in-")
            .tempdir_in(parent)
            .map_err(|e| {
                SandboxError::io(
                    format!("create an input directory in {}", parent.display()),
                    e,
                )
            })?;
        for (name, source) in inputs {
            let invalid = |message: String| SandboxError::InvalidInput {
                name: name.clone(),
                message,
            };
            if !types::job::is_file_name(name) {
                return Err(invalid("not a plain file name".into()));
            }
            let meta = std::fs::metadata(source)
                .map_err(|e| invalid(format!("{}: {e}", source.display())))?;
            if !meta.is_file() {
                return Err(invalid(format!(
                    "{} is not a regular file",
                    source.display()
                )));
            }
            let target = dir.path().join(name);
            if target.exists() {
                return Err(invalid("given twice".into()));
            }
            if std::fs::hard_link(source, &target).is_err() {
                std::fs::copy(source, &target)
                    .map_err(|e| invalid(format!("copy {}: {e}", source.display())))?;
            }
        }
        Ok(InputDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Sandbox {
    /// Runs one task to completion. Limits hit and guest faults are an
    /// [`Outcome`]; errors are for a task that could not be started.
    pub fn run(&self, module: &LoadedModule, task: &TaskRun) -> Result<TaskReport, SandboxError> {
        self.run_cancellable(module, task, None)
    }

    /// [`Sandbox::run`], stopped with [`Trap::Cancelled`] soon (within an
    /// epoch tick) after `cancel` is set: a requester that no longer wants
    /// the result frees the slot at once.
    pub fn run_cancellable(
        &self,
        module: &LoadedModule,
        task: &TaskRun,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<TaskReport, SandboxError> {
        // On a thread of a tokio runtime's blocking pool, or of none; never
        // on an async worker thread (see `run_async`).
        crate::block_on(self.run_async(module, task, cancel, None))
    }

    /// [`Sandbox::run_cancellable`] as a future, for a caller on an async
    /// thread. With `yield_every_fuel` (and fuel metering), the guest
    /// yields every that much fuel: a caller that started a task on its own
    /// thread to save a hand-off can move the rest of a long one elsewhere.
    /// Yielding changes neither the fuel counted nor the outputs.
    pub async fn run_async(
        &self,
        module: &LoadedModule,
        task: &TaskRun<'_>,
        cancel: Option<Arc<AtomicBool>>,
        yield_every_fuel: Option<u64>,
    ) -> Result<TaskReport, SandboxError> {
        let l = task.limits;
        if l.memory_bytes_max > limits::TASK_MEMORY_BYTES_MAX {
            return Err(SandboxError::Engine(format!(
                "memory limit {} exceeds TASK_MEMORY_BYTES_MAX ({})",
                l.memory_bytes_max,
                limits::TASK_MEMORY_BYTES_MAX
            )));
        }
        prepare_output_dir(task.output_dir)?;

        let clock_ns = Arc::new(AtomicU64::new(0));
        let mut argv = Vec::with_capacity(task.args.len() + 1);
        argv.push(task.program.to_owned());
        argv.extend(task.args.iter().cloned());
        let mut builder = WasiCtxBuilder::new();
        builder
            .args(&argv)
            .envs(task.env)
            .wall_clock(VirtualClock(clock_ns.clone()))
            .monotonic_clock(VirtualClock(clock_ns.clone()))
            .secure_random(SeededRandom::new(task.seed, "secure"))
            .insecure_random(SeededRandom::new(task.seed, "insecure"))
            .insecure_random_seed(task.seed as u128)
            // File calls run where the task runs, not on tokio's blocking
            // pool: the task is on a thread of its own already, or short.
            .allow_blocking_current_thread(true);
        if let Some(inputs) = task.inputs {
            builder
                .preopened_dir(inputs.path(), "/in", FsPerms::ReadOnly)
                .map_err(|e| SandboxError::Engine(format!("preopen /in: {e:#}")))?;
        }
        builder
            .preopened_dir(task.output_dir, "/out", FsPerms::ReadWrite)
            .map_err(|e| SandboxError::Engine(format!("preopen /out: {e:#}")))?;

        let state = TaskState {
            wasi: builder.build_p1(),
            limiter: MemoryLimiter {
                memory_bytes_max: l.memory_bytes_max,
                hit: false,
            },
            stdout: Vec::new(),
            stderr_tail: VecDeque::new(),
            stderr_tail_bytes_max: l.stderr_tail_bytes_max.min(limits::STDERR_TAIL_BYTES_MAX),
            stderr_bytes_total: 0,
            output_bytes_charged: 0,
            output_bytes_max: l.output_bytes_max,
            clock_ns,
            trampoline_parts: None,
            originals: None,
            limit_hit: None,
        };
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let fuel_limit = match self.metering {
            Metering::Fuel => {
                let fuel = l.fuel.unwrap_or(u64::MAX);
                store
                    .set_fuel(fuel)
                    .map_err(|e| SandboxError::Engine(e.to_string()))?;
                if let Some(every) = yield_every_fuel {
                    store
                        .fuel_async_yield_interval(Some(every))
                        .map_err(|e| SandboxError::Engine(e.to_string()))?;
                }
                Some(fuel)
            }
            Metering::Off => None,
        };
        match cancel {
            None => {
                store.set_epoch_deadline(l.deadline_ms.div_ceil(EPOCH_TICK_MS).max(1));
                store.epoch_deadline_trap();
            }
            Some(cancel) => {
                // Looked at on every tick: the cancel flag, then the deadline
                // by the wall clock (the epoch counts the same time).
                let deadline = Instant::now() + std::time::Duration::from_millis(l.deadline_ms);
                store.set_epoch_deadline(1);
                store.epoch_deadline_callback(move |_| {
                    if cancel.load(Ordering::Relaxed) {
                        return Err(wasmtime::Error::new(LimitHit::Cancelled));
                    }
                    if Instant::now() >= deadline {
                        return Err(wasmtime::Error::new(wasmtime::Trap::Interrupt));
                    }
                    Ok(wasmtime::UpdateDeadline::Continue(1))
                });
            }
        }
        let parts = self.imports.trampoline_parts(&mut store);
        store.data_mut().trampoline_parts = Some(parts);

        let mut linker_with_traps;
        let mut linker = &self.imports.guest;
        for import in module.module.imports() {
            if linker.get_by_import(&mut store, &import).is_none() {
                if !task.allow_missing_imports {
                    return Err(SandboxError::MissingImport {
                        module: import.module().into(),
                        name: import.name().into(),
                    });
                }
                linker_with_traps = linker.clone();
                linker_with_traps
                    .define_unknown_imports_as_traps(&module.module)
                    .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
                linker = &linker_with_traps;
                break;
            }
        }
        let entry = task.entry.unwrap_or("_start");
        if module
            .module
            .get_export(entry)
            .and_then(|e| e.func().cloned())
            .is_none()
        {
            return Err(SandboxError::MissingEntry(entry.into()));
        }

        let started = Instant::now();
        let result = match linker.instantiate_async(&mut store, &module.module).await {
            Ok(instance) => match instance.get_typed_func::<(), ()>(&mut store, entry) {
                Ok(func) => func.call_async(&mut store, ()).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let run_ms = started.elapsed().as_millis() as u64;

        let mut outcome = match result {
            Ok(()) => Outcome::Exited { code: 0 },
            Err(e) => classify(&e, store.data(), fuel_limit, l.deadline_ms),
        };
        let fuel_used = fuel_limit.map(|limit| Fuel(limit - store.get_fuel().unwrap_or(0)));
        let state = store.into_data();
        let stderr_tail: Vec<u8> = state.stderr_tail.into_iter().collect();
        let (outputs, held) = match collect_outputs(
            task.output_dir,
            state.stdout,
            l.output_bytes_max,
            task.hold_bytes_max,
        ) {
            Ok(collected) => collected,
            Err(trap) => {
                if matches!(outcome, Outcome::Exited { .. }) {
                    outcome = Outcome::Trapped { trap };
                }
                (Vec::new(), Vec::new())
            }
        };
        Ok(TaskReport {
            outcome,
            fuel_used,
            outputs,
            stderr_tail,
            stderr_bytes_total: state.stderr_bytes_total,
            run_ms,
            held,
        })
    }
}

fn classify(
    error: &wasmtime::Error,
    state: &TaskState,
    fuel_limit: Option<u64>,
    deadline_ms: u64,
) -> Outcome {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Outcome::Exited { code: exit.0 };
    }
    let hit = error
        .downcast_ref::<LimitHit>()
        .copied()
        .or(state.limit_hit)
        .or(state.limiter.hit.then_some(LimitHit::Memory {
            limit_bytes: state.limiter.memory_bytes_max,
        }));
    let trap = match (hit, error.downcast_ref::<wasmtime::Trap>()) {
        (Some(LimitHit::Output { limit_bytes }), _) => Trap::OutputTooLarge { limit_bytes },
        (Some(LimitHit::Memory { limit_bytes }), _) => Trap::OutOfMemory { limit_bytes },
        (Some(LimitHit::Cancelled), _) => Trap::Cancelled,
        (None, Some(wasmtime::Trap::OutOfFuel)) => Trap::OutOfFuel {
            fuel_limit: fuel_limit.unwrap_or(0),
        },
        (None, Some(wasmtime::Trap::Interrupt)) => Trap::Deadline { deadline_ms },
        (None, Some(wasmtime::Trap::StackOverflow)) => Trap::StackOverflow,
        (None, Some(t)) => Trap::Guest {
            message: t.to_string(),
        },
        (None, None) => Trap::Guest {
            message: format!("{error:#}"),
        },
    };
    Outcome::Trapped { trap }
}

fn prepare_output_dir(dir: &Path) -> Result<(), SandboxError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| SandboxError::io(format!("create {}", dir.display()), e))?;
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| SandboxError::io(format!("read {}", dir.display()), e))?;
    if entries.next().is_some() {
        return Err(SandboxError::io(
            format!("output directory {}", dir.display()),
            std::io::Error::other("is not empty"),
        ));
    }
    Ok(())
}

/// Walks the output directory without following links, checks the limits
/// (files, total bytes, depth), and hashes every file and stdout. Outputs
/// that fit `hold_bytes_max` together are read into memory (a held stdout
/// is not written); the others are files (stdout as `STDOUT_FILE`).
fn collect_outputs(
    dir: &Path,
    stdout: Vec<u8>,
    output_bytes_max: u64,
    hold_bytes_max: u64,
) -> Result<(Vec<OutputFile>, Vec<HeldOutput>), Trap> {
    let invalid = |message: String| Trap::InvalidOutput { message };
    let mut files: Vec<(String, PathBuf, u64)> = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), String::new(), 0usize)];
    let mut total = stdout.len() as u64;
    while let Some((path, prefix, depth)) = pending.pop() {
        let entries =
            std::fs::read_dir(&path).map_err(|e| invalid(format!("read {prefix}: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| invalid(e.to_string()))?;
            let name = entry
                .file_name()
                .into_string()
                .map_err(|n| invalid(format!("file name {n:?} is not UTF-8")))?;
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let meta =
                std::fs::symlink_metadata(entry.path()).map_err(|e| invalid(e.to_string()))?;
            if meta.is_dir() {
                if depth + 1 > OUTPUT_DEPTH_MAX {
                    return Err(invalid(format!(
                        "{rel}: directories nest deeper than {OUTPUT_DEPTH_MAX}"
                    )));
                }
                pending.push((entry.path(), rel, depth + 1));
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
                if total > output_bytes_max {
                    return Err(Trap::OutputTooLarge {
                        limit_bytes: output_bytes_max,
                    });
                }
                files.push((rel, entry.path(), meta.len()));
            } else {
                return Err(invalid(format!("{rel} is not a regular file or directory")));
            }
            if files.len() + pending.len() >= limits::OUTPUT_FILES_MAX {
                return Err(invalid(format!(
                    "more than {} output files (OUTPUT_FILES_MAX)",
                    limits::OUTPUT_FILES_MAX
                )));
            }
        }
    }
    if files.iter().any(|f| f.0 == STDOUT_FILE) {
        return Err(invalid(format!(
            "`{STDOUT_FILE}` is reserved for the guest's standard output"
        )));
    }
    let mut outputs = Vec::with_capacity(files.len() + 1);
    let mut held = Vec::new();
    let mut hold_budget = hold_bytes_max;
    let stdout_bytes = stdout.len() as u64;
    let stdout_hash = BlobHash::of(&stdout);
    outputs.push(OutputFile {
        name: STDOUT_FILE.into(),
        size_bytes: stdout_bytes,
        hash: stdout_hash,
    });
    if stdout_bytes <= hold_budget {
        hold_budget -= stdout_bytes;
        held.push(HeldOutput {
            hash: stdout_hash,
            bytes: stdout,
        });
    } else {
        std::fs::write(dir.join(STDOUT_FILE), &stdout)
            .map_err(|e| invalid(format!("write stdout: {e}")))?;
    }
    // Smallest first, so that as many as possible are held.
    files.sort_by_key(|f| f.2);
    for (name, path, size_bytes) in files {
        let hash = if size_bytes <= hold_budget {
            let bytes = std::fs::read(&path).map_err(|e| invalid(format!("read {name}: {e}")))?;
            if bytes.len() as u64 != size_bytes {
                return Err(invalid(format!("{name} changed while being read")));
            }
            hold_budget -= size_bytes;
            let hash = BlobHash::of(&bytes);
            held.push(HeldOutput { hash, bytes });
            hash
        } else {
            hash_file(&path).map_err(|e| invalid(format!("read {name}: {e}")))?
        };
        outputs.push(OutputFile {
            name,
            size_bytes,
            hash,
        });
    }
    outputs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((outputs, held))
}

pub(crate) fn hash_file(path: &Path) -> std::io::Result<BlobHash> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}
