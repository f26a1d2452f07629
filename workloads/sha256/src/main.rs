//! A hashing kernel for the WASM-against-native benchmark (B3): SHA-256 of
//! 64 MiB made by a seeded generator (no input file, the same bytes on
//! every target), with the portable `sha2` implementation on both.
//!
//! Usage: sha256 [--mib N] [--seed S]
//! Prints the digest in hex.

use sha2::{Digest, Sha256};
use std::process::ExitCode;

fn main() -> ExitCode {
    let (mut mib, mut seed) = (64u64, 1u64);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().and_then(|v| v.parse::<u64>().ok());
        match (flag.as_str(), value) {
            ("--mib", Some(v)) if (1..=256).contains(&v) => mib = v,
            ("--seed", Some(v)) => seed = v,
            _ => {
                eprintln!("sha256: usage: sha256 [--mib 1..256] [--seed S]");
                return ExitCode::from(2);
            }
        }
    }
    let mut state = seed.max(1);
    let mut data = vec![0u8; (mib << 20) as usize];
    for chunk in data.chunks_exact_mut(8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        chunk.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    let digest = Sha256::digest(&data);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    println!("{hex}");
    ExitCode::SUCCESS
}
