//! The guest's imports: wasmtime-wasi's WASI preview 1, with a few functions
//! wrapped or replaced where the sandbox must decide rather than the host:
//!
//! - `fd_write` to stdout and stderr is kept in memory (stdout bounded by the
//!   output limit, stderr as a bounded tail); any other `fd_write`/`fd_pwrite`
//!   is charged against the output limit *before* it reaches the disk.
//! - `fd_filestat_get`, `path_filestat_get` and `fd_readdir` return fixed
//!   device, inode, link count and timestamps, so nothing of the host's
//!   file system leaks into outputs or fuel.
//! - `poll_oneoff` never sleeps: it advances the virtual clock instead, so a
//!   guest cannot stall a task outside the reach of its deadline.
//!
//! wasmtime-wasi offers no hook for these, so each wrapper calls the original
//! function (taken from a second linker holding the unwrapped imports).

use crate::SandboxError;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::{Caller, Linker};
use wasmtime_wasi::p1::WasiP1Ctx;

const WASI: &str = "wasi_snapshot_preview1";
/// Largest iovec array one write may pass (POSIX IOV_MAX).
const IOVECS_MAX: u32 = 1024;
/// Largest subscription count one `poll_oneoff` may pass.
const POLL_SUBSCRIPTIONS_MAX: u32 = 4096;
/// Each reading of the virtual clock advances it, so elapsed times are never
/// zero yet stay a pure function of the guest's own calls.
pub(crate) const CLOCK_STEP_NS: u64 = 1_000;
/// The virtual wall clock starts at 2020-01-01T00:00:00Z.
pub(crate) const WALL_CLOCK_EPOCH_NS: u64 = 1_577_836_800 * 1_000_000_000;

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;

/// A limit the guest ran into inside a host call; raised as the trap's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LimitHit {
    #[error("output limit of {limit_bytes} bytes exceeded")]
    Output { limit_bytes: u64 },
    #[error("memory limit of {limit_bytes} bytes exceeded")]
    Memory { limit_bytes: u64 },
    #[error("cancelled")]
    Cancelled,
}

/// Everything a running task owns; one per store.
pub(crate) struct TaskState {
    pub wasi: WasiP1Ctx,
    pub limiter: MemoryLimiter,
    pub stdout: Vec<u8>,
    pub stderr_tail: VecDeque<u8>,
    pub stderr_tail_bytes_max: u64,
    pub stderr_bytes_total: u64,
    /// Bytes written through fd_write/fd_pwrite, stdout included.
    pub output_bytes_charged: u64,
    pub output_bytes_max: u64,
    pub clock_ns: Arc<AtomicU64>,
    pub trampoline_parts: Option<TrampolineParts>,
    pub originals: Option<Originals>,
    pub limit_hit: Option<LimitHit>,
}

impl TaskState {
    fn charge_output(&mut self, bytes: u64) -> wasmtime::Result<()> {
        let total = self.output_bytes_charged.saturating_add(bytes);
        if total > self.output_bytes_max {
            let hit = LimitHit::Output {
                limit_bytes: self.output_bytes_max,
            };
            self.limit_hit = Some(hit);
            return Err(wasmtime::Error::new(hit));
        }
        self.output_bytes_charged = total;
        Ok(())
    }

    fn push_stderr(&mut self, bytes: &[u8]) {
        self.stderr_bytes_total += bytes.len() as u64;
        let cap = self.stderr_tail_bytes_max as usize;
        let keep = &bytes[bytes.len().saturating_sub(cap)..];
        self.stderr_tail.extend(keep);
        let excess = self.stderr_tail.len().saturating_sub(cap);
        self.stderr_tail.drain(..excess);
    }
}

pub(crate) struct MemoryLimiter {
    pub memory_bytes_max: u64,
    pub hit: bool,
}

/// Tables hold a pointer per element; bound them like memory.
const TABLE_ELEMENTS_MAX: usize = 10_000_000;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_bytes_max {
            self.hit = true;
            return Err(wasmtime::Error::new(LimitHit::Memory {
                limit_bytes: self.memory_bytes_max,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_MAX)
    }
}

/// The unwrapped functions, reached through a trampoline instance that
/// re-exports the guest's memory: wiggle-generated WASI functions read the
/// memory from their caller's `memory` export, and a host function calling
/// them directly would be a caller without one.
pub(crate) struct Originals {
    instance: wasmtime::Instance,
}

/// Forwards each wrapped function to the original import; exports the
/// guest's memory so the originals find it.
const TRAMPOLINE_WAT: &str = r#"
(module
  (import "env" "memory" (memory 0))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_pwrite" (func $fd_pwrite (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_get" (func $fd_filestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_filestat_get" (func $path_filestat_get (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_readdir" (func $fd_readdir (param i32 i32 i32 i64 i32) (result i32)))
  (export "memory" (memory 0))
  (func (export "fd_write") (param i32 i32 i32 i32) (result i32)
    (call $fd_write (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "fd_pwrite") (param i32 i32 i32 i64 i32) (result i32)
    (call $fd_pwrite (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)))
  (func (export "fd_filestat_get") (param i32 i32) (result i32)
    (call $fd_filestat_get (local.get 0) (local.get 1)))
  (func (export "path_filestat_get") (param i32 i32 i32 i32 i32) (result i32)
    (call $path_filestat_get (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)))
  (func (export "fd_readdir") (param i32 i32 i32 i64 i32) (result i32)
    (call $fd_readdir (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)))
)
"#;

pub(crate) struct Imports {
    base: Linker<TaskState>,
    pub guest: Linker<TaskState>,
    trampoline: wasmtime::Module,
}

impl Imports {
    pub fn new(engine: &wasmtime::Engine) -> Result<Imports, SandboxError> {
        let err = |e: wasmtime::Error| SandboxError::Engine(format!("{e:#}"));
        let mut base = Linker::new(engine);
        // The asynchronous WASI functions: a task may run on an async
        // thread of the node, where the synchronous ones (they block on
        // tokio) would panic; run elsewhere, they are driven by `in_tokio`.
        wasmtime_wasi::p1::add_to_linker_async(&mut base, |s: &mut TaskState| &mut s.wasi)
            .map_err(err)?;
        let mut guest = base.clone();
        guest.allow_shadowing(true);
        guest
            .func_wrap_async(WASI, "fd_write", |caller, (fd, iovs, len, written)| {
                Box::new(fd_write(caller, fd, iovs, len, written))
            })
            .map_err(err)?;
        guest
            .func_wrap_async(WASI, "fd_pwrite", |caller, (fd, iovs, len, at, written)| {
                Box::new(fd_pwrite(caller, fd, iovs, len, at, written))
            })
            .map_err(err)?;
        guest
            .func_wrap_async(WASI, "fd_filestat_get", |caller, (fd, buf)| {
                Box::new(fd_filestat_get(caller, fd, buf))
            })
            .map_err(err)?;
        guest
            .func_wrap_async(
                WASI,
                "path_filestat_get",
                |caller, (fd, flags, path, path_len, buf)| {
                    Box::new(path_filestat_get(caller, fd, flags, path, path_len, buf))
                },
            )
            .map_err(err)?;
        guest
            .func_wrap_async(
                WASI,
                "fd_readdir",
                |caller, (fd, buf, len, cookie, used)| {
                    Box::new(fd_readdir(caller, fd, buf, len, cookie, used))
                },
            )
            .map_err(err)?;
        guest
            .func_wrap(WASI, "poll_oneoff", poll_oneoff)
            .map_err(err)?;
        let trampoline = wasmtime::Module::new(engine, TRAMPOLINE_WAT).map_err(err)?;
        Ok(Imports {
            base,
            guest,
            trampoline,
        })
    }

    /// Everything needed to build a task's trampoline once its memory exists.
    pub fn trampoline_parts(&self, store: &mut wasmtime::Store<TaskState>) -> TrampolineParts {
        let mut get = |name: &str| self.base.get(&mut *store, WASI, name).ok();
        let funcs = [
            "fd_write",
            "fd_pwrite",
            "fd_filestat_get",
            "path_filestat_get",
            "fd_readdir",
        ]
        .map(&mut get);
        TrampolineParts {
            module: self.trampoline.clone(),
            funcs,
        }
    }
}

pub(crate) struct TrampolineParts {
    module: wasmtime::Module,
    funcs: [Option<wasmtime::Extern>; 5],
}

fn memory(caller: &mut Caller<'_, TaskState>) -> Option<wasmtime::Memory> {
    caller.get_export("memory").and_then(|e| e.into_memory())
}

fn read_u32(data: &[u8], at: u32) -> Option<u32> {
    let at = at as usize;
    data.get(at..at.checked_add(4)?)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u64(data: &[u8], at: usize) -> Option<u64> {
    let b = data.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

fn write_bytes(data: &mut [u8], at: usize, bytes: &[u8]) -> bool {
    match at
        .checked_add(bytes.len())
        .and_then(|end| data.get_mut(at..end))
    {
        Some(slot) => {
            slot.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

/// The (offset, length) of each iovec, checked against memory; None on a fault.
fn iovecs(data: &[u8], iovs: i32, iovs_len: i32) -> Option<Vec<(usize, usize)>> {
    let count = u32::try_from(iovs_len).ok().filter(|&n| n <= IOVECS_MAX)?;
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let at = (iovs as u32).checked_add(i * 8)?;
        let (ptr, len) = (
            read_u32(data, at)? as usize,
            read_u32(data, at.checked_add(4)?)? as usize,
        );
        ptr.checked_add(len).filter(|&end| end <= data.len())?;
        out.push((ptr, len));
    }
    Some(out)
}

async fn call_original(
    caller: &mut Caller<'_, TaskState>,
    name: &str,
    params: &[wasmtime::Val],
) -> wasmtime::Result<i32> {
    let instance = match &caller.data().originals {
        Some(o) => o.instance,
        None => {
            let memory = memory(caller)
                .ok_or_else(|| wasmtime::Error::msg("sandbox: the guest exports no memory"))?;
            let parts = caller
                .data_mut()
                .trampoline_parts
                .take()
                .ok_or_else(|| wasmtime::Error::msg("sandbox: trampoline unavailable"))?;
            let mut imports = vec![wasmtime::Extern::Memory(memory)];
            for f in parts.funcs {
                imports
                    .push(f.ok_or_else(|| wasmtime::Error::msg("sandbox: WASI function missing"))?);
            }
            let instance =
                wasmtime::Instance::new_async(&mut *caller, &parts.module, &imports).await?;
            caller.data_mut().originals = Some(Originals { instance });
            instance
        }
    };
    let func = instance
        .get_func(&mut *caller, name)
        .ok_or_else(|| wasmtime::Error::msg("sandbox: trampoline function missing"))?;
    let mut result = [wasmtime::Val::I32(0)];
    func.call_async(&mut *caller, params, &mut result).await?;
    Ok(result[0].unwrap_i32())
}

async fn fd_write(
    mut caller: Caller<'_, TaskState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    let Some(mem) = memory(&mut caller) else {
        return Ok(ERRNO_FAULT);
    };
    if fd == 1 || fd == 2 {
        let (data, state) = mem.data_and_store_mut(&mut caller);
        let Some(vecs) = iovecs(data, iovs, iovs_len) else {
            return Ok(ERRNO_FAULT);
        };
        let total: usize = vecs.iter().map(|v| v.1).sum();
        if fd == 1 {
            state.charge_output(total as u64)?;
            for (ptr, len) in vecs {
                state.stdout.extend_from_slice(&data[ptr..ptr + len]);
            }
        } else {
            for (ptr, len) in vecs {
                state.push_stderr(&data[ptr..ptr + len]);
            }
        }
        let written = (total as u32).to_le_bytes();
        return Ok(if write_bytes(data, nwritten as u32 as usize, &written) {
            ERRNO_SUCCESS
        } else {
            ERRNO_FAULT
        });
    }
    let total = match iovecs(mem.data(&caller), iovs, iovs_len) {
        Some(v) => v.iter().map(|v| v.1 as u64).sum(),
        None => return Ok(ERRNO_FAULT),
    };
    caller.data_mut().charge_output(total)?;
    use wasmtime::Val::I32;
    call_original(
        &mut caller,
        "fd_write",
        &[I32(fd), I32(iovs), I32(iovs_len), I32(nwritten)],
    )
    .await
}

async fn fd_pwrite(
    mut caller: Caller<'_, TaskState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    offset: i64,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    let Some(mem) = memory(&mut caller) else {
        return Ok(ERRNO_FAULT);
    };
    let total = match iovecs(mem.data(&caller), iovs, iovs_len) {
        Some(v) => v.iter().map(|v| v.1 as u64).sum(),
        None => return Ok(ERRNO_FAULT),
    };
    caller.data_mut().charge_output(total)?;
    use wasmtime::Val::{I32, I64};
    call_original(
        &mut caller,
        "fd_pwrite",
        &[
            I32(fd),
            I32(iovs),
            I32(iovs_len),
            I64(offset),
            I32(nwritten),
        ],
    )
    .await
}

/// Overwrites the host-dependent fields of a WASI `filestat` (64 bytes):
/// dev @0, ino @8, nlink @24, atim @40, mtim @48, ctim @56.
fn fix_filestat(caller: &mut Caller<'_, TaskState>, buf: i32) {
    let Some(mem) = memory(caller) else { return };
    let data = mem.data_mut(caller);
    let at = buf as u32 as usize;
    for (offset, value) in [(0, 0u64), (8, 0), (24, 1), (40, 0), (48, 0), (56, 0)] {
        write_bytes(data, at + offset, &value.to_le_bytes());
    }
}

async fn fd_filestat_get(
    mut caller: Caller<'_, TaskState>,
    fd: i32,
    buf: i32,
) -> wasmtime::Result<i32> {
    use wasmtime::Val::I32;
    let errno = call_original(&mut caller, "fd_filestat_get", &[I32(fd), I32(buf)]).await?;
    if errno == ERRNO_SUCCESS {
        fix_filestat(&mut caller, buf);
    }
    Ok(errno)
}

async fn path_filestat_get(
    mut caller: Caller<'_, TaskState>,
    fd: i32,
    flags: i32,
    path: i32,
    path_len: i32,
    buf: i32,
) -> wasmtime::Result<i32> {
    use wasmtime::Val::I32;
    let errno = call_original(
        &mut caller,
        "path_filestat_get",
        &[I32(fd), I32(flags), I32(path), I32(path_len), I32(buf)],
    )
    .await?;
    if errno == ERRNO_SUCCESS {
        fix_filestat(&mut caller, buf);
    }
    Ok(errno)
}

/// Zeroes `d_ino` in each directory entry (24-byte header: next @0, ino @8,
/// namlen @16, type @20; then the name).
async fn fd_readdir(
    mut caller: Caller<'_, TaskState>,
    fd: i32,
    buf: i32,
    buf_len: i32,
    cookie: i64,
    bufused: i32,
) -> wasmtime::Result<i32> {
    use wasmtime::Val::{I32, I64};
    let errno = call_original(
        &mut caller,
        "fd_readdir",
        &[I32(fd), I32(buf), I32(buf_len), I64(cookie), I32(bufused)],
    )
    .await?;
    if errno != ERRNO_SUCCESS {
        return Ok(errno);
    }
    let Some(mem) = memory(&mut caller) else {
        return Ok(errno);
    };
    let data = mem.data_mut(&mut caller);
    let Some(used) = read_u32(data, bufused as u32) else {
        return Ok(errno);
    };
    let (start, used) = (buf as u32 as usize, used as usize);
    let mut pos = 0usize;
    while pos + 24 <= used {
        write_bytes(data, start + pos + 8, &0u64.to_le_bytes());
        let Some(namlen) = read_u32(data, (start + pos + 16) as u32) else {
            break;
        };
        pos += 24 + namlen as usize;
    }
    Ok(errno)
}

/// Every subscription resolves at once: fd readiness immediately, clocks by
/// moving the virtual clock to the earliest deadline. Subscription (48 bytes):
/// userdata @0, tag @8, clock id @16, timeout @24, flags @40, or fd @16.
/// Event (32 bytes): userdata @0, errno @8, type @10, nbytes @16, flags @24.
fn poll_oneoff(
    mut caller: Caller<'_, TaskState>,
    subs: i32,
    events: i32,
    count: i32,
    nevents: i32,
) -> wasmtime::Result<i32> {
    let Some(mem) = memory(&mut caller) else {
        return Ok(ERRNO_FAULT);
    };
    let count = match u32::try_from(count) {
        Ok(n) if n > 0 && n <= POLL_SUBSCRIPTIONS_MAX => n as usize,
        _ => return Ok(ERRNO_INVAL),
    };
    let (data, state) = mem.data_and_store_mut(&mut caller);
    let now = state.clock_ns.load(Ordering::Relaxed);
    let mut parsed = Vec::with_capacity(count);
    for i in 0..count {
        let at = subs as u32 as usize + i * 48;
        let (Some(userdata), Some(tag)) = (read_u64(data, at), data.get(at + 8).copied()) else {
            return Ok(ERRNO_FAULT);
        };
        let deadline = if tag == 0 {
            let (Some(id), Some(timeout), Some(flags)) = (
                read_u32(data, (at + 16) as u32),
                read_u64(data, at + 24),
                data.get(at + 40).copied(),
            ) else {
                return Ok(ERRNO_FAULT);
            };
            let absolute = flags & 1 == 1;
            Some(match (absolute, id) {
                (false, _) => now.saturating_add(timeout),
                (true, 0) => timeout.saturating_sub(WALL_CLOCK_EPOCH_NS),
                (true, _) => timeout,
            })
        } else {
            None
        };
        parsed.push((userdata, tag, deadline));
    }
    let any_fd = parsed.iter().any(|p| p.2.is_none());
    let earliest = parsed.iter().filter_map(|p| p.2).min();
    let mut written = 0usize;
    for (userdata, tag, deadline) in parsed {
        let fires = if any_fd {
            deadline.is_none()
        } else {
            deadline == earliest
        };
        if !fires {
            continue;
        }
        let at = events as u32 as usize + written * 32;
        let mut event = [0u8; 32];
        event[..8].copy_from_slice(&userdata.to_le_bytes());
        event[10] = tag;
        if !write_bytes(data, at, &event) {
            return Ok(ERRNO_FAULT);
        }
        written += 1;
    }
    if let (false, Some(t)) = (any_fd, earliest) {
        state.clock_ns.fetch_max(t, Ordering::Relaxed);
    }
    Ok(
        if write_bytes(
            data,
            nevents as u32 as usize,
            &(written as u32).to_le_bytes(),
        ) {
            ERRNO_SUCCESS
        } else {
            ERRNO_FAULT
        },
    )
}

/// The guest's clocks: virtual time that advances only by the guest's calls.
pub(crate) struct VirtualClock(pub Arc<AtomicU64>);

impl wasmtime_wasi::HostWallClock for VirtualClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(CLOCK_STEP_NS)
    }
    fn now(&self) -> std::time::Duration {
        let ns = self.0.fetch_add(CLOCK_STEP_NS, Ordering::Relaxed);
        std::time::Duration::from_nanos(WALL_CLOCK_EPOCH_NS + ns)
    }
}

impl wasmtime_wasi::HostMonotonicClock for VirtualClock {
    fn resolution(&self) -> u64 {
        CLOCK_STEP_NS
    }
    fn now(&self) -> u64 {
        self.0.fetch_add(CLOCK_STEP_NS, Ordering::Relaxed)
    }
}

/// The guest's random source: BLAKE3 in extendable-output mode, keyed by the
/// task's seed. Unpredictable without the seed, identical with it.
pub(crate) struct SeededRandom(blake3::OutputReader);

impl SeededRandom {
    pub fn new(seed: u64, purpose: &str) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key("plexus sandbox random v1");
        hasher.update(purpose.as_bytes());
        hasher.update(&seed.to_le_bytes());
        SeededRandom(hasher.finalize_xof())
    }
}

impl rand_core::TryRng for SeededRandom {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill(dst);
        Ok(())
    }
}
