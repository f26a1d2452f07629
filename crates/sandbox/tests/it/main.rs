//! The sandbox's walls and guarantees, each proved against the real engine
//! and the `probe` guest (workloads/probe) or a small WAT module.

use sandbox::{
    InputDir, LoadedModule, Metering, Outcome, Sandbox, SandboxConfig, SandboxError, TaskReport,
    TaskRun, Trap,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use types::TaskLimits;

struct Harness {
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    runs: std::cell::Cell<u32>,
}

fn harness(config: SandboxConfig) -> Harness {
    Harness {
        sandbox: Sandbox::new(config).expect("engine"),
        dir: tempfile::tempdir().expect("tempdir"),
        runs: Default::default(),
    }
}

fn metered() -> Harness {
    harness(SandboxConfig::default())
}

fn probe(h: &Harness) -> LoadedModule {
    h.sandbox
        .load(guests::builtin("probe").expect("probe is built in"))
        .expect("probe loads")
}

fn limits() -> TaskLimits {
    TaskLimits {
        fuel: Some(10_000_000_000),
        memory_bytes_max: 64 << 20,
        deadline_ms: 20_000,
        output_bytes_max: 1 << 20,
        stderr_tail_bytes_max: 64 << 10,
    }
}

impl Harness {
    fn out_dir(&self) -> PathBuf {
        let n = self.runs.get();
        self.runs.set(n + 1);
        self.dir.path().join(format!("out{n}"))
    }

    fn run_with(
        &self,
        module: &LoadedModule,
        args: &[&str],
        limits: TaskLimits,
        inputs: Option<&InputDir>,
        seed: u64,
    ) -> (TaskReport, PathBuf) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = self.out_dir();
        let env = vec![("GIVEN".to_owned(), "yes".to_owned())];
        let report = self
            .sandbox
            .run(
                module,
                &TaskRun {
                    program: "probe",
                    args: &args,
                    env: &env,
                    inputs,
                    output_dir: &out,
                    seed,
                    limits,
                    entry: None,
                    allow_missing_imports: false,
                    hold_bytes_max: 0,
                },
            )
            .expect("the task starts");
        (report, out)
    }

    fn probe(&self, args: &[&str]) -> (TaskReport, String) {
        let module = probe(self);
        let (report, out) = self.run_with(&module, args, limits(), None, 1);
        let stdout = std::fs::read_to_string(out.join("stdout")).unwrap_or_default();
        (report, stdout)
    }

    fn assert_healthy(&self) {
        let (report, stdout) = self.probe(&["env"]);
        assert!(
            report.outcome.is_success(),
            "the next task is unaffected: {:?}",
            report.outcome
        );
        assert!(stdout.contains("env GIVEN=yes"), "{stdout}");
    }
}

fn trap(report: &TaskReport) -> &Trap {
    match &report.outcome {
        Outcome::Trapped { trap } => trap,
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn an_infinite_loop_stops_by_fuel() {
    let h = metered();
    let module = probe(&h);
    let (report, _) = h.run_with(
        &module,
        &["spin"],
        TaskLimits {
            fuel: Some(50_000_000),
            ..limits()
        },
        None,
        1,
    );
    assert_eq!(
        trap(&report),
        &Trap::OutOfFuel {
            fuel_limit: 50_000_000
        }
    );
    assert_eq!(report.fuel_used.map(|f| f.0), Some(50_000_000));
    h.assert_healthy();
}

#[test]
fn an_infinite_loop_stops_by_the_deadline_when_fuel_is_unlimited() {
    for h in [
        metered(),
        harness(SandboxConfig {
            metering: Metering::Off,
            ..SandboxConfig::default()
        }),
    ] {
        let module = probe(&h);
        let started = Instant::now();
        let (report, _) = h.run_with(
            &module,
            &["spin"],
            TaskLimits {
                fuel: None,
                deadline_ms: 300,
                ..limits()
            },
            None,
            1,
        );
        assert_eq!(trap(&report), &Trap::Deadline { deadline_ms: 300 });
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "stopped near its deadline"
        );
        h.assert_healthy();
    }
}

#[test]
fn memory_grow_beyond_the_limit_fails() {
    let h = metered();
    let (report, _) = h.probe(&["alloc", "200"]);
    assert_eq!(
        trap(&report),
        &Trap::OutOfMemory {
            limit_bytes: 64 << 20
        }
    );
    let wat =
        r#"(module (memory 1) (func (export "_start") (drop (memory.grow (i32.const 2000)))))"#;
    let module = h.sandbox.load(wat.as_bytes()).expect("wat compiles");
    let (report, _) = h.run_with(&module, &[], limits(), None, 1);
    assert_eq!(
        trap(&report),
        &Trap::OutOfMemory {
            limit_bytes: 64 << 20
        }
    );
    h.assert_healthy();
}

#[test]
fn deep_recursion_traps() {
    let h = metered();
    // Rust keeps its frames on a shadow stack in linear memory: overflowing
    // it runs off the bottom of memory, a guest trap.
    let (report, _) = h.probe(&["recurse", "100000000"]);
    assert!(
        matches!(trap(&report), Trap::Guest { message } if message.contains("out of bounds")),
        "{:?}",
        report.outcome
    );
    // The engine's own stack is bounded too.
    let wat = r#"(module (func $f (export "_start") (call $f)))"#;
    let module = h.sandbox.load(wat.as_bytes()).expect("wat");
    let (report, _) = h.run_with(&module, &[], limits(), None, 1);
    assert_eq!(trap(&report), &Trap::StackOverflow);
    h.assert_healthy();
}

#[test]
fn host_files_are_out_of_reach() {
    let h = metered();
    let secret = h.dir.path().join("input.txt");
    std::fs::write(&secret, "input bytes").expect("write input");
    let inputs = InputDir::stage(
        &h.dir.path().join("staging"),
        &[("data.txt".into(), secret.clone())],
    )
    .expect("stage");
    let module = probe(&h);
    for path in [
        "/etc/passwd",
        "/in/../../etc/passwd",
        "../etc/passwd",
        "/out/../../etc/passwd",
        "/proc/self/environ",
    ] {
        let (report, out) = h.run_with(&module, &["read", path], limits(), Some(&inputs), 1);
        let stdout = std::fs::read_to_string(out.join("stdout")).expect("stdout");
        assert_eq!(
            report.outcome,
            Outcome::Exited { code: 3 },
            "{path}: {stdout}"
        );
        assert!(stdout.starts_with("denied"), "{path}: {stdout}");
    }
    for path in ["/in/data.txt", "/in/new.txt", "/tmp/x", "/x"] {
        let (report, _) = h.run_with(&module, &["create", path], limits(), Some(&inputs), 1);
        assert_eq!(
            report.outcome,
            Outcome::Exited { code: 3 },
            "creating {path} must fail"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&secret).expect("read"),
        "input bytes",
        "the input is unchanged"
    );
    let (report, out) = h.run_with(
        &module,
        &["read", "/in/data.txt"],
        limits(),
        Some(&inputs),
        1,
    );
    assert!(report.outcome.is_success());
    assert_eq!(
        std::fs::read_to_string(out.join("stdout")).expect("stdout"),
        "ok 11\n"
    );
    h.assert_healthy();
}

#[test]
fn writing_more_than_the_output_limit_fails() {
    let h = metered();
    let (report, _) = h.probe(&["write-out", &(2 << 20).to_string()]);
    assert_eq!(
        trap(&report),
        &Trap::OutputTooLarge {
            limit_bytes: 1 << 20
        }
    );
    let (report, _) = h.probe(&["stdout", &(2 << 20).to_string()]);
    assert_eq!(
        trap(&report),
        &Trap::OutputTooLarge {
            limit_bytes: 1 << 20
        }
    );
    let (report, _) = h.probe(&["write-out", "100000"]);
    assert!(report.outcome.is_success());
    let big = report
        .outputs
        .iter()
        .find(|o| o.name == "big")
        .expect("the output is listed");
    assert_eq!(big.size_bytes, 100_000);
    assert_eq!(big.hash, types::BlobHash::of(&vec![7u8; 100_000]));
    h.assert_healthy();
}

#[test]
fn stderr_is_kept_as_a_bounded_tail() {
    let h = metered();
    let (report, _) = h.probe(&["stderr", "300000"]);
    assert!(report.outcome.is_success());
    assert_eq!(report.stderr_tail.len(), 64 << 10);
    assert!(report.stderr_bytes_total >= 300_000);
    let tail = String::from_utf8_lossy(&report.stderr_tail);
    let last = tail.lines().last().expect("a line");
    assert!(
        last.starts_with("line ") && last.len() > 9,
        "the tail holds the last lines: {last}"
    );
}

#[test]
fn clock_and_random_give_the_same_output_on_every_run() {
    let h = metered();
    let module = probe(&h);
    let runs: Vec<_> = (0..3)
        .map(|_| h.run_with(&module, &["clock-random"], limits(), None, 42))
        .collect();
    let first = std::fs::read_to_string(runs[0].1.join("stdout")).expect("stdout");
    assert!(
        first.starts_with("wall 1577836800"),
        "the virtual wall clock starts in 2020: {first}"
    );
    for (report, out) in &runs {
        assert_eq!(
            std::fs::read_to_string(out.join("stdout")).expect("stdout"),
            first
        );
        assert_eq!(report.fuel_used, runs[0].0.fuel_used);
        assert_eq!(report.outputs, runs[0].0.outputs);
    }
    let (_, other) = h.run_with(&module, &["clock-random"], limits(), None, 43);
    let other = std::fs::read_to_string(other.join("stdout")).expect("stdout");
    assert_ne!(
        other.lines().nth(1),
        first.lines().nth(1),
        "another seed draws other random bytes"
    );
}

#[test]
fn sleeping_advances_virtual_time_without_stalling_the_host() {
    let h = metered();
    let started = Instant::now();
    let (report, stdout) = h.probe(&["sleep", "3600"]);
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    assert_eq!(stdout.trim(), "slept 3600");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn inputs_are_read_only_under_in_with_fixed_metadata() {
    let h = metered();
    let source = h.dir.path().join("scene.bin");
    std::fs::write(&source, b"0123456789").expect("write");
    let inputs = InputDir::stage(
        &h.dir.path().join("staging"),
        &[("scene.bin".into(), source)],
    )
    .expect("stage");
    let module = probe(&h);
    let (report, out) = h.run_with(&module, &["cat", "scene.bin"], limits(), Some(&inputs), 1);
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    let stdout = std::fs::read_to_string(out.join("stdout")).expect("stdout");
    assert_eq!(
        stdout, "size 10 mtime Some(0)\n",
        "timestamps are fixed, not the host's"
    );
    let copy = report
        .outputs
        .iter()
        .find(|o| o.name == "scene.bin")
        .expect("copied to /out");
    assert_eq!(copy.hash, types::BlobHash::of(b"0123456789"));
}

#[test]
fn arguments_and_only_the_given_environment_are_visible() {
    let h = metered();
    let (report, stdout) = h.probe(&["env", "second"]);
    assert!(report.outcome.is_success());
    assert_eq!(
        stdout, "args [\"env\", \"second\"]\nenv GIVEN=yes\n",
        "nothing of the host's environment"
    );
}

#[test]
fn the_exit_code_is_reported_apart_from_a_trap() {
    let h = metered();
    let (report, _) = h.probe(&["exit", "7"]);
    assert_eq!(report.outcome, Outcome::Exited { code: 7 });
    let wat = r#"(module (func (export "_start") unreachable))"#;
    let module = h.sandbox.load(wat.as_bytes()).expect("wat");
    let (report, _) = h.run_with(&module, &[], limits(), None, 1);
    assert!(
        matches!(trap(&report), Trap::Guest { message } if message.contains("unreachable")),
        "{:?}",
        report.outcome
    );
}

#[test]
fn a_missing_import_is_refused_by_name_unless_allowed() {
    let h = metered();
    let wat = r#"(module (import "env" "mystery" (func)) (func (export "_start")))"#;
    let module = h.sandbox.load(wat.as_bytes()).expect("wat");
    let out = h.out_dir();
    let mut task = TaskRun {
        program: "m",
        args: &[],
        env: &[],
        inputs: None,
        output_dir: &out,
        seed: 0,
        limits: limits(),
        entry: None,
        allow_missing_imports: false,
        hold_bytes_max: 0,
    };
    match h.sandbox.run(&module, &task) {
        Err(SandboxError::MissingImport { module, name }) => {
            assert_eq!((module.as_str(), name.as_str()), ("env", "mystery"))
        }
        other => panic!("expected MissingImport, got {other:?}"),
    }
    task.allow_missing_imports = true;
    let report = h.sandbox.run(&module, &task).expect("runs");
    assert!(report.outcome.is_success());
}

#[test]
fn another_entry_point_can_be_named() {
    let h = metered();
    let wat = r#"(module (func (export "run") (local i32) (local.set 0 (i32.const 5))))"#;
    let module = h.sandbox.load(wat.as_bytes()).expect("wat");
    let out = h.out_dir();
    let task = |entry| TaskRun {
        program: "m",
        args: &[],
        env: &[],
        inputs: None,
        output_dir: &out,
        seed: 0,
        limits: limits(),
        entry,
        allow_missing_imports: false,
        hold_bytes_max: 0,
    };
    assert!(
        matches!(h.sandbox.run(&module, &task(None)), Err(SandboxError::MissingEntry(e)) if e == "_start")
    );
    let report = h.sandbox.run(&module, &task(Some("run"))).expect("runs");
    assert!(report.outcome.is_success());
    assert!(report.fuel_used.expect("metered").0 > 0);
}

#[test]
fn nan_canonicalisation_is_a_switch() {
    let h = metered();
    let (_, plain) = h.probe(&["nan"]);
    let canon = harness(SandboxConfig {
        nan_canonicalization: true,
        ..SandboxConfig::default()
    });
    let (_, canonical) = canon.probe(&["nan"]);
    assert_eq!(canonical.trim(), "nan bits 7fc00000");
    assert!(plain.starts_with("nan bits 7f"), "{plain}");
    assert_ne!(
        h.sandbox.engine_identity(),
        canon.sandbox.engine_identity(),
        "the identity names the switch"
    );
}

#[test]
fn compiled_modules_are_cached_in_memory_and_on_disk() {
    let cache = tempfile::tempdir().expect("tempdir");
    let config = SandboxConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..SandboxConfig::default()
    };
    let bytes = guests::builtin("noop").expect("noop");
    let first = Sandbox::new(config.clone()).expect("engine");
    assert!(!first.load(bytes).expect("load").cached);
    assert!(first.load(bytes).expect("load").cached, "memory cache");
    drop(first);
    let second = Sandbox::new(config).expect("engine");
    let module = second.load(bytes).expect("load");
    assert!(module.cached, "disk cache across sandboxes");
    assert_eq!(module.hash, types::BlobHash::of(bytes));
}

#[test]
fn bad_modules_are_refused_with_a_clear_error() {
    let h = metered();
    assert!(matches!(
        h.sandbox.load(b"\0asm\x01\0\0\0garbage"),
        Err(SandboxError::InvalidModule { .. })
    ));
    assert!(matches!(
        h.sandbox.load(b"(module (func"),
        Err(SandboxError::NotWasm(_))
    ));
    assert!(matches!(
        h.sandbox.load(&[0xff, 0xfe, 0x00]),
        Err(SandboxError::NotWasm(_))
    ));
}

#[test]
fn a_cancelled_task_stops_at_once_and_its_deadline_still_holds_when_it_is_not() {
    let h = metered();
    let module = probe(&h);
    let args = vec!["spin".to_owned()];
    let run = |deadline_ms: u64, cancel: Arc<AtomicBool>| {
        let out = h.out_dir();
        h.sandbox
            .run_cancellable(
                &module,
                &TaskRun {
                    program: "probe",
                    args: &args,
                    env: &[],
                    inputs: None,
                    output_dir: &out,
                    seed: 1,
                    limits: TaskLimits {
                        fuel: None,
                        deadline_ms,
                        ..limits()
                    },
                    entry: None,
                    allow_missing_imports: false,
                    hold_bytes_max: 0,
                },
                Some(cancel),
            )
            .expect("the task starts")
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let setter = cancel.clone();
    let started = Instant::now();
    let flip = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        setter.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let report = run(60_000, cancel);
    flip.join().expect("thread");
    assert_eq!(trap(&report), &Trap::Cancelled);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped long before its deadline"
    );
    let report = run(300, Arc::new(AtomicBool::new(false)));
    assert_eq!(trap(&report), &Trap::Deadline { deadline_ms: 300 });
    h.assert_healthy();
}

#[test]
fn a_task_that_yields_and_moves_to_another_thread_gives_the_same_outputs_and_fuel() {
    // A provider starts a short task on its async thread and moves one
    // that runs long to a sandbox thread: the result must not tell.
    let h = metered();
    let module = h
        .sandbox
        .load(guests::builtin("mandelbrot").expect("mandelbrot is built in"))
        .expect("mandelbrot loads");
    let args: Vec<String> = ["--size", "256", "--per-side", "4", "--tile", "5"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (first_out, moved_out) = (h.out_dir(), h.out_dir());
    let task = |out| TaskRun {
        program: "mandelbrot",
        args: &args,
        env: &[],
        inputs: None,
        output_dir: out,
        seed: 7,
        limits: limits(),
        entry: None,
        allow_missing_imports: false,
        hold_bytes_max: 0,
    };
    let whole = h
        .sandbox
        .run(&module, &task(&first_out))
        .expect("the task starts");
    assert!(whole.outcome.is_success(), "{:?}", whole.outcome);
    let fuel = whole.fuel_used.expect("metered").0;

    let yield_every = fuel / 10;
    let moved_task = task(&moved_out);
    let mut run = Box::pin(
        h.sandbox
            .run_async(&module, &moved_task, None, Some(yield_every)),
    );
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(
        run.as_mut().poll(&mut cx).is_pending(),
        "a task of {fuel} fuel yields after {yield_every}"
    );
    let moved = std::thread::scope(|s| {
        s.spawn(move || sandbox::block_on(run))
            .join()
            .expect("the other thread")
    })
    .expect("the task starts");

    assert_eq!(moved.outcome, whole.outcome);
    assert_eq!(moved.fuel_used, whole.fuel_used);
    assert_eq!(moved.outputs, whole.outputs);
    assert!(
        whole.outputs.iter().any(|o| o.name != sandbox::STDOUT_FILE),
        "the tile is a file written through WASI: {:?}",
        whole.outputs
    );
    for output in &whole.outputs {
        assert_eq!(
            std::fs::read(moved_out.join(&output.name)).expect("moved output"),
            std::fs::read(first_out.join(&output.name)).expect("output")
        );
    }
}
