//! Builds the guest workloads (`workloads/`, their own cargo workspace) for
//! wasm32-wasip1 with simd128, so that `plexus` embeds modules built from the
//! source in this checkout and no binary is committed.
//!
//! The nested cargo gets its own target directory beside ours, so it never
//! waits on the outer build's lock, and its artefacts survive `OUT_DIR`
//! changes between profiles.

use std::path::{Path, PathBuf};
use std::process::Command;

const GUESTS: [&str; 6] = ["render", "mandelbrot", "noop", "probe", "blur", "sha256"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workloads = manifest_dir
        .join("../../workloads")
        .canonicalize()
        .expect("workloads/ exists");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    // OUT_DIR is TARGET/PROFILE/build/guests-HASH/out: share TARGET/wasm-guests.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map(|t| t.join("wasm-guests"))
        .unwrap_or_else(|| out_dir.join("wasm-guests"));

    println!(
        "cargo:rerun-if-changed={}",
        workloads.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        workloads.join("Cargo.lock").display()
    );
    for entry in [
        "tile",
        "noop",
        "mandelbrot",
        "probe",
        "render",
        "blur",
        "sha256",
    ] {
        println!("cargo:rerun-if-changed={}", workloads.join(entry).display());
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workloads)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip1",
            "--target-dir",
        ])
        .arg(&target_dir)
        // Flags meant for the host build must not leak into the guests'.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+simd128");
    for guest in GUESTS {
        cmd.args(["--bin", guest]);
    }
    let status = cmd
        .status()
        .expect("cannot run cargo to build the guest workloads");
    assert!(
        status.success(),
        "building the guest workloads for wasm32-wasip1 failed (is the target installed? `rustup target add wasm32-wasip1`)"
    );

    let built = target_dir.join("wasm32-wasip1/release");
    let mut index = String::from(
        "/// (name, module bytes) of every built-in workload.\npub static BUILTINS: &[(&str, &[u8])] = &[\n",
    );
    for guest in GUESTS {
        let wasm = built.join(format!("{guest}.wasm"));
        let copy = out_dir.join(format!("{guest}.wasm"));
        copy_if_changed(&wasm, &copy);
        index.push_str(&format!(
            "    ({guest:?}, include_bytes!({:?})),\n",
            copy.display().to_string()
        ));
    }
    index.push_str("];\n");
    std::fs::write(out_dir.join("builtins.rs"), index).expect("write builtins.rs");
}

fn copy_if_changed(from: &Path, to: &Path) {
    let bytes = std::fs::read(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    if std::fs::read(to).ok().as_deref() != Some(&bytes[..]) {
        std::fs::write(to, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", to.display()));
    }
}
