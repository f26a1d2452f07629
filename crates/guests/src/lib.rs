//! The guest workloads Plexus ships, compiled from `workloads/` for
//! wasm32-wasip1 by this crate's build script and embedded in the binary,
//! so `builtin:render` works from any directory with nothing installed.

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// The module bytes of a built-in workload.
pub fn builtin(name: &str) -> Option<&'static [u8]> {
    BUILTINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

/// Names of the built-in workloads, for error messages.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTINS.iter().map(|(n, _)| *n).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_builtin_is_a_wasm_module() {
        for (name, bytes) in super::BUILTINS {
            assert_eq!(&bytes[..4], b"\0asm", "{name} is not a wasm module");
        }
        assert!(super::builtin("render").is_some());
        assert!(super::builtin("nope").is_none());
    }
}
