//! Renders one tile of a glTF scene.
//!
//! Usage: render --scene PATH --width W --height H --x X --y Y
//!               --tile-width TW --tile-height TH [--spp N] [--max-depth N]
//!               [--seed S] [--exposure E] [--out PATH]
//! The tile is clipped to the image; it is written as PXT1 (RGB8) to PATH
//! (default /out/tile).

use render::{RenderSettings, Scene, render_tile};
use std::process::ExitCode;
use tile::{PixelFormat, TileHeader};

/// Bounds on what one task may be asked to render.
const IMAGE_SIDE_MAX: u32 = 16_384;
const SAMPLES_PER_PIXEL_MAX: u32 = 65_536;
const DEPTH_MAX: u32 = 256;

struct Args {
    scene: String,
    settings: RenderSettings,
    x: u32,
    y: u32,
    tile_width: u32,
    tile_height: u32,
    out: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        scene: String::new(),
        settings: RenderSettings {
            width: 1280,
            height: 720,
            samples_per_pixel: 16,
            max_depth: 8,
            seed: 1,
            exposure: 1.0,
        },
        x: 0,
        y: 0,
        tile_width: 0,
        tile_height: 0,
        out: "/out/tile".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let int = || {
            value
                .parse::<u32>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--scene" => a.scene = value.clone(),
            "--width" => a.settings.width = int()?,
            "--height" => a.settings.height = int()?,
            "--x" => a.x = int()?,
            "--y" => a.y = int()?,
            "--tile-width" => a.tile_width = int()?,
            "--tile-height" => a.tile_height = int()?,
            "--spp" => a.settings.samples_per_pixel = int()?,
            "--max-depth" => a.settings.max_depth = int()?,
            "--seed" => {
                a.settings.seed = value.parse().map_err(|e| format!("--seed {value}: {e}"))?
            }
            "--exposure" => {
                a.settings.exposure = value
                    .parse()
                    .map_err(|e| format!("--exposure {value}: {e}"))?
            }
            "--out" => a.out = value.clone(),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    let s = &a.settings;
    if a.scene.is_empty() {
        return Err("--scene is required".into());
    }
    if s.width == 0 || s.height == 0 || s.width > IMAGE_SIDE_MAX || s.height > IMAGE_SIDE_MAX {
        return Err(format!(
            "image size {}x{} must be within 1..={IMAGE_SIDE_MAX}",
            s.width, s.height
        ));
    }
    if s.samples_per_pixel == 0 || s.samples_per_pixel > SAMPLES_PER_PIXEL_MAX {
        return Err(format!("--spp must be within 1..={SAMPLES_PER_PIXEL_MAX}"));
    }
    if s.max_depth == 0 || s.max_depth > DEPTH_MAX {
        return Err(format!("--max-depth must be within 1..={DEPTH_MAX}"));
    }
    if a.x >= s.width || a.y >= s.height {
        return Err(format!(
            "tile origin ({}, {}) lies outside the {}x{} image",
            a.x, a.y, s.width, s.height
        ));
    }
    if a.tile_width == 0 {
        a.tile_width = s.width;
    }
    if a.tile_height == 0 {
        a.tile_height = s.height;
    }
    a.tile_width = a.tile_width.min(s.width - a.x);
    a.tile_height = a.tile_height.min(s.height - a.y);
    Ok(a)
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let bytes =
        std::fs::read(&args.scene).map_err(|e| format!("cannot read {}: {e}", args.scene))?;
    let scene = Scene::from_gltf(&bytes).map_err(|e| format!("{}: {e}", args.scene))?;
    let pixels = render_tile(
        &scene,
        &args.settings,
        args.x,
        args.y,
        args.tile_width,
        args.tile_height,
    );
    let header = TileHeader {
        format: PixelFormat::Rgb8,
        image_width: args.settings.width,
        image_height: args.settings.height,
        x: args.x,
        y: args.y,
        width: args.tile_width,
        height: args.tile_height,
    };
    std::fs::write(&args.out, tile::encode(&header, &pixels))
        .map_err(|e| format!("cannot write {}: {e}", args.out))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("render: {e}");
            ExitCode::from(2)
        }
    }
}
