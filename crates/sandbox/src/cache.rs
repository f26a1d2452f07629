//! Compiled modules by hash: in memory (bounded, oldest out first) and on
//! disk across runs, in a directory named by the engine identity so a
//! different engine never loads another's code.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use types::BlobHash;

/// Compiled modules kept in memory; each can be tens of MiB of code.
pub const MODULE_CACHE_ENTRIES_MAX: usize = 32;

pub struct ModuleCache {
    memory: Mutex<Entries>,
    dir: Option<PathBuf>,
    /// Disk writes under way, finished before the cache is dropped (a
    /// short-lived `plexus exec` still leaves its module on disk).
    writes: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct Entries {
    modules: HashMap<BlobHash, Arc<wasmtime::Module>>,
    order: VecDeque<BlobHash>,
}

impl ModuleCache {
    pub fn new(dir: Option<PathBuf>) -> Self {
        ModuleCache {
            memory: Mutex::new(Entries::default()),
            dir,
            writes: Mutex::new(Vec::new()),
        }
    }

    pub fn get(&self, engine: &wasmtime::Engine, hash: &BlobHash) -> Option<Arc<wasmtime::Module>> {
        if let Some(m) = self.lock().modules.get(hash) {
            return Some(m.clone());
        }
        let path = self.dir.as_ref()?.join(format!("{}.cwasm", hash.to_hex()));
        // SAFETY: files in the cache directory are written only by `insert`
        // below, from `Module::serialize` of this engine identity; wasmtime
        // still checks the header and refuses incompatible artefacts.
        let module = unsafe { wasmtime::Module::deserialize_file(engine, &path) }.ok()?;
        Some(self.remember(*hash, Arc::new(module)))
    }

    /// Only the memory cache: no disk access on a miss.
    pub fn get_in_memory(&self, hash: &BlobHash) -> Option<Arc<wasmtime::Module>> {
        self.lock().modules.get(hash).cloned()
    }

    pub fn insert(&self, hash: BlobHash, module: wasmtime::Module) -> Arc<wasmtime::Module> {
        if let Some(dir) = self.dir.clone() {
            // Written off the caller's thread (the task that waits for this
            // module runs meanwhile), to a temporary name and renamed: a
            // reader never sees half a file. A failure only costs a
            // recompile next time.
            let module = module.clone();
            let write = std::thread::Builder::new()
                .name("module-cache".into())
                .spawn(move || {
                    let Ok(bytes) = module.serialize() else {
                        return;
                    };
                    let _ = std::fs::create_dir_all(&dir);
                    let tmp = dir.join(format!(".{}.{}.tmp", hash.to_hex(), std::process::id()));
                    if std::fs::write(&tmp, bytes).is_ok() {
                        let _ = std::fs::rename(&tmp, dir.join(format!("{}.cwasm", hash.to_hex())));
                    }
                });
            if let Ok(handle) = write {
                let mut writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
                writes.retain(|w| !w.is_finished());
                writes.push(handle);
            }
        }
        self.remember(hash, Arc::new(module))
    }

    fn remember(&self, hash: BlobHash, module: Arc<wasmtime::Module>) -> Arc<wasmtime::Module> {
        let mut entries = self.lock();
        if entries.modules.insert(hash, module.clone()).is_none() {
            entries.order.push_back(hash);
        }
        while entries.order.len() > MODULE_CACHE_ENTRIES_MAX {
            if let Some(old) = entries.order.pop_front() {
                entries.modules.remove(&old);
            }
        }
        module
    }

    /// Waits for the disk writes under way.
    pub fn flush(&self) {
        let writes = std::mem::take(&mut *self.writes.lock().unwrap_or_else(|p| p.into_inner()));
        for w in writes {
            let _ = w.join();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves a consistent map; carry on.
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ModuleCache {
    fn drop(&mut self) {
        self.flush();
    }
}
