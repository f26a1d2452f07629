//! A memory-bound kernel for the WASM-against-native benchmark (B3): a 3×3
//! Gaussian blur of a 4K RGBA image, several passes, each reading one buffer and
//! writing the other. The image is made from a seeded generator, so the
//! kernel needs no input file and both builds do exactly the same work.
//!
//! Usage: blur [--width W] [--height H] [--passes N] [--seed S]
//! Prints a checksum of the final image (the sum of its bytes, FNV-1a).

use std::process::ExitCode;

struct Args {
    width: usize,
    height: usize,
    passes: u32,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        width: 3840,
        height: 2160,
        passes: 4,
        seed: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--width" => args.width = number()? as usize,
            "--height" => args.height = number()? as usize,
            "--passes" => args.passes = number()? as u32,
            "--seed" => args.seed = number()?,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if args.width < 3 || args.height < 3 || args.width * args.height > 64 << 20 {
        return Err("the image must be at least 3×3 and at most 64 Mpixels".into());
    }
    Ok(args)
}

/// xorshift64*: a deterministic image, the same on every target.
fn image(width: usize, height: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.max(1);
    let mut pixels = vec![0u8; width * height * 4];
    for chunk in pixels.chunks_exact_mut(8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        chunk.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    pixels
}

/// One pass: each inner pixel becomes the binomial (Gaussian) 3×3 average
/// of its neighbourhood, weights 1 2 1 / 2 4 2 / 1 2 1 over 16, rounded,
/// channel by channel; the border is copied. The weights sum to a power of
/// two, so each byte costs nine loads, adds and one shift in 16-bit lanes: the
/// pass is bound by memory, not by a division (a box blur's division by 9
/// needs 32-bit lanes, which WASM SIMD widens through byte shuffles that
/// Cranelift lowers three instructions at a time; measured in BENCHMARKS.md).
pub fn blur_pass(src: &[u8], dst: &mut [u8], width: usize, height: usize) {
    let row = width * 4;
    dst[..row].copy_from_slice(&src[..row]);
    dst[(height - 1) * row..].copy_from_slice(&src[(height - 1) * row..]);
    for y in 1..height - 1 {
        let (above, here, below) = (
            &src[(y - 1) * row..y * row],
            &src[y * row..(y + 1) * row],
            &src[(y + 1) * row..(y + 2) * row],
        );
        let out = &mut dst[y * row..(y + 1) * row];
        out[..4].copy_from_slice(&here[..4]);
        out[row - 4..].copy_from_slice(&here[row - 4..]);
        for i in 4..row - 4 {
            // At most 16 × 255 + 8: u16 lanes hold it.
            let line = |r: &[u8]| r[i - 4] as u16 + 2 * r[i] as u16 + r[i + 4] as u16;
            let sum = line(above) + 2 * line(here) + line(below);
            out[i] = ((sum + 8) >> 4) as u8;
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("blur: {e}");
            return ExitCode::from(2);
        }
    };
    let mut a = image(args.width, args.height, args.seed);
    let mut b = vec![0u8; a.len()];
    for _ in 0..args.passes {
        blur_pass(&a, &mut b, args.width, args.height);
        std::mem::swap(&mut a, &mut b);
    }
    let mut fnv: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in &a {
        fnv = (fnv ^ byte as u64).wrapping_mul(0x100_0000_01b3);
    }
    println!("{fnv:016x}");
    ExitCode::SUCCESS
}
