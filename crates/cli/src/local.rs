//! What `run` and `exec` share: the data directory, module resolution and
//! the sandbox they run tasks in.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PLEXUS_DATA_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("plexus");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/plexus"),
        None => std::env::temp_dir().join("plexus"),
    }
}

/// Module bytes from `builtin:NAME` or a path (relative to `base`).
pub fn module_bytes(spec: &str, base: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    if let Some(name) = spec.strip_prefix("builtin:") {
        return match guests::builtin(name) {
            Some(bytes) => Ok((name.to_owned(), bytes.to_vec())),
            None => bail!(
                "no built-in workload {name:?} (built in: {})",
                guests::builtin_names().join(", ")
            ),
        };
    }
    let path = base.join(spec);
    let size = std::fs::metadata(&path)
        .with_context(|| format!("module {}", path.display()))?
        .len();
    if size > types::limits::MODULE_BYTES_MAX {
        bail!(
            "module {} is {size} bytes, over the limit of {} (MODULE_BYTES_MAX)",
            path.display(),
            types::limits::MODULE_BYTES_MAX
        );
    }
    let bytes = std::fs::read(&path).with_context(|| format!("module {}", path.display()))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "module".into());
    Ok((name, bytes))
}

/// Reads a job file, bounded by JOB_FILE_BYTES_MAX; returns its name for
/// errors and its text.
pub fn read_job_file(path: &Path) -> anyhow::Result<(String, String)> {
    let shown = path.display().to_string();
    let size = std::fs::metadata(path)
        .with_context(|| format!("job file {shown}"))?
        .len();
    if size > types::limits::JOB_FILE_BYTES_MAX {
        bail!(
            "job file {shown} is {size} bytes, over the limit of {} (JOB_FILE_BYTES_MAX)",
            types::limits::JOB_FILE_BYTES_MAX
        );
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("job file {shown}"))?;
    Ok((shown, text))
}

pub fn sandbox(
    data_dir: &Path,
    metered: bool,
    canonicalize_nans: bool,
) -> anyhow::Result<sandbox::Sandbox> {
    let config = sandbox::SandboxConfig {
        nan_canonicalization: canonicalize_nans,
        parallel_compilation: true,
        metering: if metered {
            sandbox::Metering::Fuel
        } else {
            sandbox::Metering::Off
        },
        cache_dir: Some(data_dir.join("cache/modules")),
    };
    Ok(sandbox::Sandbox::new(config)?)
}
