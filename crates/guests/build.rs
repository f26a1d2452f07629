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

    ensure_guest_target();

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workloads)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            GUEST_TARGET,
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
        "building the guest workloads for {GUEST_TARGET} failed"
    );

    let built = target_dir.join(GUEST_TARGET).join("release");
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

/// The guests' target triple (rust-toolchain.toml lists it too).
const GUEST_TARGET: &str = "wasm32-wasip1";

/// Installs the guests' target into the toolchain that builds us when it lacks it.
///
/// rustup adds the `targets` of rust-toolchain.toml only when it installs the
/// toolchain; on a machine whose stable toolchain was already there, the guests'
/// build stops with "can't find crate for `std`". A new user's first command
/// should just work, so we ask rustup for the target here, before the nested
/// build, and only fail (with the one command that fixes it) where rustup cannot.
fn ensure_guest_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let Some(sysroot) = sysroot else {
        // Without a sysroot to look in, let the nested build say what is wrong.
        return;
    };
    let target_lib = sysroot.join("lib/rustlib").join(GUEST_TARGET).join("lib");
    // Run again whenever the target goes away (or is first added), so a
    // toolchain that lost it is mended at the next build, not only the first.
    println!("cargo:rerun-if-changed={}", target_lib.display());
    if target_lib.is_dir() {
        return;
    }
    // The toolchain that runs us: rustup names it for its children; otherwise
    // the sysroot is rustup's folder of that name.
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").ok().or_else(|| {
        sysroot
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
    });
    println!(
        "cargo:warning=the toolchain lacks the guests' target {GUEST_TARGET}; adding it with rustup (once)"
    );
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", GUEST_TARGET]);
    if let Some(toolchain) = &toolchain {
        cmd.args(["--toolchain", toolchain]);
    }
    let fix = format!("rustup target add {GUEST_TARGET}");
    match cmd.status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "`{}` failed ({status}); run `{fix}` and build again",
            format_args!("{cmd:?}")
        ),
        Err(e) => panic!(
            "the guest workloads need the {GUEST_TARGET} target and rustup could not be run ({e}); \
             install the target for this toolchain (with rustup: `{fix}`) and build again"
        ),
    }
}

fn copy_if_changed(from: &Path, to: &Path) {
    let bytes = std::fs::read(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    if std::fs::read(to).ok().as_deref() != Some(&bytes[..]) {
        std::fs::write(to, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", to.display()));
    }
}
