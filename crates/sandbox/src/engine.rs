//! The wasmtime engine, its configuration (which is part of the engine
//! identity every result names), and the ticker behind wall-clock deadlines.

use crate::cache::ModuleCache;
use crate::{LoadedModule, SandboxError};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use types::BlobHash;
use types::limits::MODULE_BYTES_MAX;

/// Granularity of wall-clock deadlines: the epoch advances this often.
pub(crate) const EPOCH_TICK_MS: u64 = 5;
/// The wasmtime version we pin in Cargo.toml; named in the engine identity.
const WASMTIME_VERSION: &str = "48.0.8";
/// Guest stack: enough for deep but sane recursion; overflow is a typed trap.
const WASM_STACK_BYTES_MAX: usize = 1 << 20;
/// Instances one sandbox holds at once: the slots of its pooling allocator.
/// A provider's slots stay below it (the start-up benchmark takes one).
pub const INSTANCES_MAX: u32 = 256;
/// Elements of a module's table in the pool (wasmtime's default, 20,000, is
/// less than some compilers emit for large programs).
const TABLE_ELEMENTS_MAX: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metering {
    /// Count fuel (the unit of billing) and enforce the task's fuel limit.
    Fuel,
    /// No fuel counting: for benchmarks that measure metering's cost.
    Off,
}

#[derive(Clone, Debug)]
pub struct SandboxConfig {
    pub metering: Metering,
    /// Compiled modules are kept here across runs; None: memory only.
    pub cache_dir: Option<PathBuf>,
    /// Compiles run on several threads; off when many sandboxes run at once.
    pub parallel_compilation: bool,
    /// Canonicalise NaNs so float results match across CPU architectures.
    /// It costs 2.5–6× on float-heavy code; without it results are still
    /// bit-exact within one engine identity (DESIGN.md, "a switch, not a tax").
    pub nan_canonicalization: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            metering: Metering::Fuel,
            cache_dir: None,
            parallel_compilation: true,
            nan_canonicalization: false,
        }
    }
}

pub struct Sandbox {
    pub(crate) engine: wasmtime::Engine,
    pub(crate) imports: crate::imports::Imports,
    pub(crate) metering: Metering,
    identity: String,
    cache: ModuleCache,
    ticker_stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let mut wasm = wasmtime::Config::new();
        wasm.consume_fuel(config.metering == Metering::Fuel)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(config.nan_canonicalization)
            .wasm_threads(false)
            .wasm_relaxed_simd(false)
            .wasm_exceptions(true)
            .max_wasm_stack(WASM_STACK_BYTES_MAX)
            .parallel_compilation(config.parallel_compilation);
        match std::env::var("PLEXUS_PERFMAP").as_deref() {
            // For `perf record -k 1` and `perf inject --jit`: machine code too.
            Ok("jitdump") => {
                wasm.profiler(wasmtime::ProfilingStrategy::JitDump);
            }
            // For `perf record`: wasmtime writes /tmp/perf-PID.map.
            Ok(_) => {
                wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
            }
            Err(_) => {}
        }
        let codegen_level = fix_codegen_level(&mut wasm)?;
        // Instances come from a pool of address space reserved once: a
        // task's instance is a slot reset for reuse, not a mapping made and
        // unmapped (the unmapping alone, with its TLB shootdowns, took 60 µs
        // of a no-op task's 200). Where the reservation is refused (a
        // limited address space), instances are mapped one by one.
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_core_instances(INSTANCES_MAX)
            .total_memories(INSTANCES_MAX)
            .total_tables(INSTANCES_MAX)
            .total_gc_heaps(INSTANCES_MAX)
            .total_stacks(INSTANCES_MAX)
            .table_elements(TABLE_ELEMENTS_MAX);
        let mut pooled = wasm.clone();
        pooled.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = match wasmtime::Engine::new(&pooled) {
            Ok(engine) => engine,
            Err(e) => {
                tracing::warn!(target: "plexus::sandbox", "no instance pool ({e:#}): instances are mapped one by one");
                wasmtime::Engine::new(&wasm).map_err(|e| SandboxError::Engine(e.to_string()))?
            }
        };

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let metering = match config.metering {
            Metering::Fuel => "fuel",
            Metering::Off => "nofuel",
        };
        let nans = if config.nan_canonicalization {
            "+nancanon"
        } else {
            ""
        };
        let identity = format!(
            "wasmtime-{WASMTIME_VERSION}/{}-{}/{codegen_level}/{metering}{nans}/{:016x}",
            std::env::consts::ARCH,
            std::env::consts::OS,
            hasher.finish()
        );
        let imports = crate::imports::Imports::new(&engine)?;
        let cache = ModuleCache::new(config.cache_dir.map(|d| d.join(sanitize(&identity))));

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("sandbox-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(EPOCH_TICK_MS));
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| SandboxError::io("cannot start the epoch ticker", e))?
        };
        Ok(Sandbox {
            engine,
            imports,
            metering: config.metering,
            identity,
            cache,
            ticker_stop,
            ticker: Some(ticker),
        })
    }

    /// wasmtime version, target, configuration: results are only compared
    /// bit for bit between equal identities.
    pub fn engine_identity(&self) -> &str {
        &self.identity
    }

    pub fn metering(&self) -> Metering {
        self.metering
    }

    /// Compiles a module (binary `.wasm` or text `.wat`), or takes it from the
    /// cache by hash. Compiling is bounded on its own and does not count
    /// against any task's deadline.
    pub fn load(&self, bytes: &[u8]) -> Result<LoadedModule, SandboxError> {
        if bytes.len() as u64 > MODULE_BYTES_MAX {
            return Err(SandboxError::ModuleTooLarge {
                size_bytes: bytes.len() as u64,
                limit_bytes: MODULE_BYTES_MAX,
            });
        }
        let binary = if bytes.starts_with(b"\0asm") {
            std::borrow::Cow::Borrowed(bytes)
        } else {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| SandboxError::NotWasm("neither wasm binary nor UTF-8 text".into()))?;
            std::borrow::Cow::Owned(
                wat::parse_str(text).map_err(|e| SandboxError::NotWasm(e.to_string()))?,
            )
        };
        let hash = BlobHash::of(&binary);
        if let Some(module) = self.cache.get(&self.engine, &hash) {
            return Ok(LoadedModule {
                hash,
                size_bytes: binary.len() as u64,
                cached: true,
                compile_ms: 0,
                module,
            });
        }
        let start = Instant::now();
        let module = wasmtime::Module::from_binary(&self.engine, &binary).map_err(|e| {
            SandboxError::InvalidModule {
                hash: hash.to_hex(),
                message: format!("{e:#}"),
            }
        })?;
        let compile_ms = start.elapsed().as_millis() as u64;
        let module = self.cache.insert(hash, module);
        Ok(LoadedModule {
            hash,
            size_bytes: binary.len() as u64,
            cached: false,
            compile_ms,
            module,
        })
    }
}

impl Sandbox {
    /// Whether the module is compiled and in memory: loading it costs
    /// nothing (no read, no compile).
    pub fn is_compiled(&self, hash: &BlobHash) -> bool {
        self.cache.get_in_memory(hash).is_some()
    }

    /// [`Sandbox::load`] for a module whose hash is already known (a blob
    /// checked on arrival): a module compiled before is taken from memory
    /// without reading or hashing its bytes, which a provider would
    /// otherwise do for every task.
    pub fn load_known(
        &self,
        hash: BlobHash,
        read: impl FnOnce() -> std::io::Result<Vec<u8>>,
    ) -> Result<LoadedModule, SandboxError> {
        if let Some(module) = self.cache.get_in_memory(&hash) {
            return Ok(LoadedModule {
                hash,
                size_bytes: 0,
                cached: true,
                compile_ms: 0,
                module,
            });
        }
        let bytes = read().map_err(|e| SandboxError::io(format!("read module {hash}"), e))?;
        self.load(&bytes)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// Compiles for a fixed CPU feature level chosen by Plexus, not the host's
/// detected features, so that every host of an architecture produces the same
/// machine code behaviour (and the engine identity can name the level).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn fix_codegen_level(config: &mut wasmtime::Config) -> Result<&'static str, SandboxError> {
    // x86-64-v2: every x86-64 CPU sold since about 2009.
    let features = [
        ("has_sse3", std::arch::is_x86_feature_detected!("sse3")),
        ("has_ssse3", std::arch::is_x86_feature_detected!("ssse3")),
        ("has_sse41", std::arch::is_x86_feature_detected!("sse4.1")),
        ("has_sse42", std::arch::is_x86_feature_detected!("sse4.2")),
        ("has_popcnt", std::arch::is_x86_feature_detected!("popcnt")),
    ];
    config
        .target("x86_64-unknown-linux-gnu")
        .map_err(|e| SandboxError::Engine(e.to_string()))?;
    for (flag, present) in features {
        if !present {
            return Err(SandboxError::Engine(format!(
                "this CPU lacks {flag}, part of the x86-64-v2 level Plexus compiles for"
            )));
        }
        // SAFETY: the feature was detected on this host just above.
        unsafe {
            config.cranelift_flag_enable(flag);
        }
    }
    Ok("x86-64-v2")
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn fix_codegen_level(_config: &mut wasmtime::Config) -> Result<&'static str, SandboxError> {
    // Other hosts keep wasmtime's detection until they get a fixed level.
    Ok("host")
}

fn sanitize(identity: &str) -> String {
    identity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
