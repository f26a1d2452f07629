//! One tile of the benchmark Mandelbrot (`shared/bench/peers/mandel_common.py`):
//! a 1024×1024 image over x in [-2, 1), y in [-1.5, 1.5), at most 1000
//! iterations, one u16 count per pixel. The arithmetic order matches the
//! Python reference so that checksums agree bit for bit.
//!
//! Usage: mandelbrot --per-side N --tile T [--size PIXELS] [--max-iter N] [--out PATH]
//! Writes the tile (PXT1, Luma16) to PATH (default /out/tile) and prints its checksum.

use std::process::ExitCode;
use tile::{PixelFormat, TileHeader};

const XMIN: f64 = -2.0;
const YMIN: f64 = -1.5;

struct Args {
    per_side: u32,
    tile: u32,
    size: u32,
    max_iter: u32,
    out: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        per_side: 8,
        tile: 0,
        size: 1024,
        max_iter: 1000,
        out: "/out/tile".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u32>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--per-side" => args.per_side = number()?,
            "--tile" => args.tile = number()?,
            "--size" => args.size = number()?,
            "--max-iter" => args.max_iter = number()?,
            "--out" => args.out = value.clone(),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if args.per_side == 0 || args.size % args.per_side != 0 {
        return Err(format!(
            "--size {} is not divisible by --per-side {}",
            args.size, args.per_side
        ));
    }
    if args.tile >= args.per_side * args.per_side {
        return Err(format!(
            "--tile {} is outside the {}×{} grid",
            args.tile, args.per_side, args.per_side
        ));
    }
    if args.max_iter > u16::MAX as u32 {
        return Err("--max-iter must fit in 16 bits".into());
    }
    Ok(args)
}

/// One step of z ← z² + c, in the reference's order of operations; false,
/// with z unchanged, once |z|² > 4 (the point has escaped).
#[inline(always)]
fn step(x: &mut f64, y: &mut f64, cx: f64, cy: f64) -> bool {
    let x2 = *x * *x;
    let y2 = *y * *y;
    if x2 + y2 > 4.0 {
        return false;
    }
    *y = 2.0 * *x * *y + cy;
    *x = x2 - y2 + cx;
    true
}

/// Iteration counts of one tile, row-major; the kernel the benchmarks compare.
pub fn render_tile(size: u32, per_side: u32, tile: u32, max_iter: u32) -> Vec<u16> {
    let scale = 3.0 / size as f64;
    let (tw, th) = (size / per_side, size / per_side);
    let (tx, ty) = (tile % per_side, tile / per_side);
    let mut counts = Vec::with_capacity((tw * th) as usize);
    for r in 0..th {
        let cy = YMIN + (ty * th + r) as f64 * scale;
        for c in 0..tw {
            let cx = XMIN + (tx * tw + c) as f64 * scale;
            let (mut x, mut y) = (0.0f64, 0.0f64);
            let mut i = 0;
            // Four steps per turn of the loop, each checked as before (the
            // same steps, in the same order, give the same counts). A sandbox
            // checks its fuel and deadline once per turn, and one step is only
            // a dozen instructions: one check per step cost as much as the
            // step itself (benchmark B3).
            'escaped: {
                while i + 4 <= max_iter {
                    for _ in 0..4 {
                        if !step(&mut x, &mut y, cx, cy) {
                            break 'escaped;
                        }
                        i += 1;
                    }
                }
                while i < max_iter {
                    if !step(&mut x, &mut y, cx, cy) {
                        break 'escaped;
                    }
                    i += 1;
                }
            }
            counts.push(i as u16);
        }
    }
    counts
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mandelbrot: {e}");
            return ExitCode::from(2);
        }
    };
    let counts = render_tile(args.size, args.per_side, args.tile, args.max_iter);
    let checksum: u64 = counts.iter().map(|&c| c as u64).sum();
    let side = args.size / args.per_side;
    let header = TileHeader {
        format: PixelFormat::Luma16,
        image_width: args.size,
        image_height: args.size,
        x: (args.tile % args.per_side) * side,
        y: (args.tile / args.per_side) * side,
        width: side,
        height: side,
    };
    let pixels: Vec<u8> = counts.iter().flat_map(|c| c.to_le_bytes()).collect();
    if let Err(e) = std::fs::write(&args.out, tile::encode(&header, &pixels)) {
        eprintln!("mandelbrot: cannot write {}: {e}", args.out);
        return ExitCode::from(1);
    }
    println!("checksum {checksum}");
    ExitCode::SUCCESS
}
