use super::*;

const RENDER: &str = r#"
name = "render"
module = "builtin:render"
args = ["--x", "{x}", "--y", "{y}", "--n", "{task}", "{{literal}}"]
seed = 7
env = { FRAME = "f{x}" }

[inputs]
"scene.gltf" = "scenes/demo.gltf"

[tasks]
x = { start = 0, end = 300, step = 100 }
y = [10, "twenty"]

[limits]
fuel = 1000
memory_mib = 64
timeout_secs = 5
output_mib = 2

[assemble]
kind = "tiles-png"
output = "out.png"
"#;

fn parse_err(text: &str) -> String {
    Job::parse("job.toml", text)
        .expect_err("should be rejected")
        .to_string()
}

#[test]
fn expands_the_cartesian_product_last_key_fastest() {
    let job = Job::parse("job.toml", RENDER).expect("valid");
    assert_eq!(job.task_count(), 6);
    let t = job.task(3);
    assert_eq!(
        t.args,
        ["--x", "100", "--y", "twenty", "--n", "3", "{literal}"]
    );
    assert_eq!(t.env, [("FRAME".to_owned(), "f100".to_owned())]);
    assert_eq!(job.task(0).args[1], "0");
    assert_eq!(job.task(5).args[1..4], ["200", "--y", "twenty"]);
    assert_eq!(job.limits.fuel, Some(1000));
    assert_eq!(job.limits.memory_bytes_max, 64 << 20);
    assert_eq!(job.limits.deadline_ms, 5000);
    assert_eq!(job.assemble.kind, AssembleKind::TilesPng);
    assert_eq!(job.assemble.file, "tile");
    assert_eq!(job.module, ModuleSource::Builtin("render".into()));
}

#[test]
fn task_seeds_differ_between_tasks_and_repeat_between_runs() {
    let job = Job::parse("job.toml", RENDER).expect("valid");
    assert_ne!(job.task(0).seed, job.task(1).seed);
    assert_eq!(
        job.task(4).seed,
        Job::parse("job.toml", RENDER).expect("valid").task(4).seed
    );
}

#[test]
fn a_job_without_tasks_has_one_task() {
    let job = Job::parse("j.toml", "name = \"one\"\nmodule = \"a.wasm\"\n").expect("valid");
    assert_eq!(job.task_count(), 1);
    assert_eq!(job.module, ModuleSource::Path("a.wasm".into()));
}

#[test]
fn errors_name_the_file_line_and_field() {
    let e = parse_err("name = \"x\"\nmodule = \"m.wasm\"\nbogus = 3\n");
    assert!(e.starts_with("job.toml:3:"), "{e}");
    assert!(e.contains("bogus"), "{e}");

    let e = parse_err("name = \"x\"\n");
    assert!(e.contains("module"), "{e}");

    let e = parse_err(
        "name = \"x\"\nmodule = \"m.wasm\"\n[tasks]\nx = { start = 0, end = 10, step = 0 }\n",
    );
    assert!(e.starts_with("job.toml:4:"), "{e}");
    assert!(e.contains("tasks.x") && e.contains("step"), "{e}");

    let e = parse_err("name = \"x\"\nmodule = \"m.wasm\"\nargs = [\"{nope}\"]\n");
    assert!(e.starts_with("job.toml:3:") && e.contains("{nope}"), "{e}");

    let e = parse_err("name = \"x\"\nmodule = \"m.wasm\"\n[limits]\nmemory_mib = \"lots\"\n");
    assert!(e.starts_with("job.toml:4:"), "{e}");

    let e = parse_err("name = \"x\"\nmodule = \"m.wasm\"\n[inputs]\n\"../etc\" = \"a\"\n");
    assert!(e.contains("plain file name"), "{e}");

    let e = parse_err("name = = \"x\"");
    assert!(e.starts_with("job.toml:1:"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn a_trillion_tasks_is_refused_without_expanding_them() {
    let e = parse_err(
        "name = \"big\"\nmodule = \"m.wasm\"\n[tasks]\na = { start = 0, end = 1000000 }\nb = { start = 0, end = 1000000 }\n",
    );
    assert!(e.contains("maximum of 1000000 tasks"), "{e}");
    let e = parse_err(
        "name = \"big\"\nmodule = \"m.wasm\"\n[tasks]\na = { start = 0, end = 1000000000000 }\n",
    );
    assert!(e.contains("maximum"), "{e}");
}

#[test]
fn templating_escapes_and_rejects_unclosed_placeholders() {
    let lookup = |k: &str| (k == "a").then(|| "1".to_owned());
    assert_eq!(template("x{a}y{{z}}", &lookup), Ok("x1y{z}".into()));
    assert!(template("x{a", &lookup).is_err());
    assert_eq!(template("{b}", &lookup), Err("b".into()));
}

#[test]
fn verification_defaults_to_replication_and_is_validated() {
    let job = Job::parse("job.toml", RENDER).expect("valid");
    assert_eq!(job.verification, Verification::default());
    assert!(job.verification.enabled);
    let with =
        |table: &str| format!("name = \"v\"\nmodule = \"builtin:noop\"\n[verification]\n{table}\n");
    let job = Job::parse(
        "job.toml",
        &with("mode = \"none\"\nfloor = 0.25\nreplicas = 3\ndistinct_networks = true"),
    )
    .expect("valid");
    assert_eq!(
        job.verification,
        Verification {
            enabled: false,
            floor: 0.25,
            replicas: 3,
            distinct_networks: true
        }
    );
    assert!(parse_err(&with("mode = \"vote\"")).contains("job.toml:4:8: `verification.mode`"));
    assert!(parse_err(&with("floor = 1.5")).contains("`verification.floor` is a share"));
    assert!(parse_err(&with("replicas = 1")).contains("between 2 and 5"));
    assert!(parse_err(&with("quorum = 2")).contains("unknown field"));
}

#[test]
fn requirements_are_optional_and_parsed_with_their_units() {
    let none = Job::parse("job.toml", RENDER).expect("valid");
    assert_eq!(none.requirements, Requirements::default());
    let text = format!(
        "{RENDER}\n[requirements]\nprice_per_gfuel_max = 50\nmemory_mib_min = 2048\nengine = \"e1\"\nverified_min = 3\nbudget = 900\n"
    );
    let job = Job::parse("job.toml", &text).expect("valid");
    assert_eq!(
        job.requirements,
        Requirements {
            price_per_gfuel_max: Some(50),
            memory_bytes_min: Some(2048 * limits::MIB),
            engine: Some("e1".into()),
            verified_min: Some(3),
            budget: Some(Credits(900)),
        }
    );
    let err = parse_err(&format!("{RENDER}\n[requirements]\nbudget = 100\n"));
    assert!(
        err.contains("needs `requirements.price_per_gfuel_max`"),
        "{err}"
    );
    let err = parse_err(&format!(
        "{RENDER}\n[requirements]\nprice_per_gfuel_max = 5\nbudget = 0\n"
    ));
    assert!(err.contains("at least 1 credit"), "{err}");
    let err = parse_err(&format!("{RENDER}\n[requirements]\nprice = 5\n"));
    assert!(err.contains("price"), "{err}");
    let err = parse_err(&format!("{RENDER}\n[requirements]\nengine = \" \"\n"));
    assert!(err.contains("`requirements.engine` is empty"), "{err}");
    let err = parse_err(&format!(
        "{RENDER}\n[requirements]\nmemory_mib_min = 18446744073709551615\n"
    ));
    assert!(err.contains("too large"), "{err}");
}

mod fuzz {
    //! The job file is user input (and, with remote submission, a peer's):
    //! arbitrary text and valid files mutated byte by byte must parse or
    //! fail with an error, never panic, and a parsed job must expand
    //! without panicking at its ends.
    use super::*;
    use proptest::prelude::*;

    fn exercise(text: &str) {
        if let Ok(job) = Job::parse("fuzz.toml", text) {
            let n = job.task_count();
            if n > 0 {
                let _ = job.task(0);
                let _ = job.task(n - 1);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn arbitrary_text_never_panics_the_parser(text in "\\PC{0,400}") {
            exercise(&text);
        }

        #[test]
        fn mutated_job_files_never_panic_the_parser(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
        ) {
            let mut bytes = RENDER.as_bytes().to_vec();
            for (at, byte, kind) in edits {
                let n = bytes.len().max(1);
                match kind {
                    0 if !bytes.is_empty() => bytes[at % n] = byte,
                    1 => bytes.insert(at % (bytes.len() + 1), byte),
                    _ if !bytes.is_empty() => { bytes.remove(at % n); }
                    _ => {}
                }
            }
            exercise(&String::from_utf8_lossy(&bytes));
        }
    }
}
