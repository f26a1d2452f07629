//! Assembly: turning task outputs into a job's result. For now, stitching
//! PXT1 tiles (written by the render and mandelbrot workloads) into one PNG;
//! the tile format is defined in `workloads/tile`.
//!
//! Tiles come from guests, so they are input from outside: every header is
//! checked against the image, and every pixel must be covered exactly once.

use std::path::{Path, PathBuf};
use types::Job;
use types::job::AssembleKind;

pub const TILE_MAGIC: [u8; 4] = *b"PXT1";
pub const TILE_HEADER_BYTES: usize = 32;
/// Largest image assembled: 64 Mpx (192 MiB as RGB8).
pub const IMAGE_PIXELS_MAX: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("tile: {0}")]
    BadTile(String),
    #[error("tile at ({x}, {y}) overlaps a tile already placed")]
    Overlap { x: u32, y: u32 },
    #[error("the tiles cover {covered} of {total} pixels")]
    Incomplete { covered: u64, total: u64 },
    #[error("tiles disagree on the image: {0}")]
    Mismatch(String),
    #[error("task {index}: {message}")]
    Task { index: u64, message: String },
    #[error("no tiles to assemble")]
    Empty,
    #[error("write {path}: {message}")]
    Write { path: String, message: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    Rgb8,
    Luma16,
}

impl PixelFormat {
    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(PixelFormat::Rgb8),
            2 => Some(PixelFormat::Luma16),
            _ => None,
        }
    }
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb8 => 3,
            PixelFormat::Luma16 => 2,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileHeader {
    pub format: PixelFormat,
    pub image_width: u32,
    pub image_height: u32,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Parses and checks a tile; returns its header and pixel bytes.
pub fn parse_tile(bytes: &[u8]) -> Result<(TileHeader, &[u8]), AssembleError> {
    let bad = |m: &str| AssembleError::BadTile(m.to_owned());
    if bytes.len() < TILE_HEADER_BYTES || bytes[..4] != TILE_MAGIC {
        return Err(bad("not a PXT1 tile"));
    }
    let format = PixelFormat::from_code(bytes[4]).ok_or_else(|| bad("unknown pixel format"))?;
    let word = |i: usize| {
        u32::from_le_bytes([
            bytes[8 + 4 * i],
            bytes[9 + 4 * i],
            bytes[10 + 4 * i],
            bytes[11 + 4 * i],
        ])
    };
    let h = TileHeader {
        format,
        image_width: word(0),
        image_height: word(1),
        x: word(2),
        y: word(3),
        width: word(4),
        height: word(5),
    };
    let pixels = h.image_width as u64 * h.image_height as u64;
    if pixels == 0 || pixels > IMAGE_PIXELS_MAX {
        return Err(bad(&format!(
            "image {}x{} is empty or over {IMAGE_PIXELS_MAX} pixels",
            h.image_width, h.image_height
        )));
    }
    if h.width == 0
        || h.height == 0
        || h.x as u64 + h.width as u64 > h.image_width as u64
        || h.y as u64 + h.height as u64 > h.image_height as u64
    {
        return Err(bad(&format!(
            "tile {}x{} at ({}, {}) does not fit the image",
            h.width, h.height, h.x, h.y
        )));
    }
    let expected = h.width as usize * h.height as usize * format.bytes_per_pixel();
    let data = &bytes[TILE_HEADER_BYTES..];
    if data.len() != expected {
        return Err(bad(&format!(
            "{} pixel bytes, expected {expected}",
            data.len()
        )));
    }
    Ok((h, data))
}

/// An image being assembled from tiles.
pub struct Canvas {
    format: PixelFormat,
    width: u32,
    height: u32,
    pixels: Vec<u8>,
    covered: Vec<bool>,
    covered_count: u64,
}

impl Canvas {
    /// Starts a canvas shaped like the first tile's image, and places it.
    pub fn from_first_tile(bytes: &[u8]) -> Result<Canvas, AssembleError> {
        let (h, _) = parse_tile(bytes)?;
        let pixels = h.image_width as usize * h.image_height as usize;
        let mut canvas = Canvas {
            format: h.format,
            width: h.image_width,
            height: h.image_height,
            pixels: vec![0; pixels * h.format.bytes_per_pixel()],
            covered: vec![false; pixels],
            covered_count: 0,
        };
        canvas.place(bytes)?;
        Ok(canvas)
    }

    pub fn place(&mut self, bytes: &[u8]) -> Result<(), AssembleError> {
        let (h, data) = parse_tile(bytes)?;
        if (h.format, h.image_width, h.image_height) != (self.format, self.width, self.height) {
            return Err(AssembleError::Mismatch(format!(
                "a {:?} {}x{} tile in a {:?} {}x{} image",
                h.format, h.image_width, h.image_height, self.format, self.width, self.height
            )));
        }
        let bpp = self.format.bytes_per_pixel();
        for row in 0..h.height as usize {
            let y = h.y as usize + row;
            let start = y * self.width as usize + h.x as usize;
            if self.covered[start..start + h.width as usize]
                .iter()
                .any(|&c| c)
            {
                return Err(AssembleError::Overlap { x: h.x, y: h.y });
            }
        }
        for row in 0..h.height as usize {
            let y = h.y as usize + row;
            let start = y * self.width as usize + h.x as usize;
            let src = &data[row * h.width as usize * bpp..(row + 1) * h.width as usize * bpp];
            self.pixels[start * bpp..(start + h.width as usize) * bpp].copy_from_slice(src);
            self.covered[start..start + h.width as usize].fill(true);
        }
        self.covered_count += h.width as u64 * h.height as u64;
        Ok(())
    }

    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Sum of all samples: for Luma16 the benchmark checksum (sum of counts).
    pub fn checksum(&self) -> u64 {
        match self.format {
            PixelFormat::Rgb8 => self.pixels.iter().map(|&b| b as u64).sum(),
            PixelFormat::Luma16 => self
                .pixels
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as u64)
                .sum(),
        }
    }

    /// Writes the finished image as PNG (RGB8, or 16-bit grey holding raw values).
    pub fn write_png(&self, path: &Path) -> Result<(), AssembleError> {
        let total = self.width as u64 * self.height as u64;
        if self.covered_count != total {
            return Err(AssembleError::Incomplete {
                covered: self.covered_count,
                total,
            });
        }
        let write_err = |e: image::ImageError| AssembleError::Write {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        match self.format {
            PixelFormat::Rgb8 => image::save_buffer_with_format(
                path,
                &self.pixels,
                self.width,
                self.height,
                image::ExtendedColorType::Rgb8,
                image::ImageFormat::Png,
            )
            .map_err(write_err),
            PixelFormat::Luma16 => {
                let samples: Vec<u16> = self
                    .pixels
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                let img = image::ImageBuffer::<image::Luma<u16>, _>::from_raw(
                    self.width,
                    self.height,
                    samples,
                )
                .ok_or_else(|| AssembleError::Mismatch("buffer size".into()))?;
                img.save_with_format(path, image::ImageFormat::Png)
                    .map_err(write_err)
            }
        }
    }
}

/// One tile alone as an 8-bit PNG, for previews (a dashboard filling in an
/// image as tiles arrive). Luma16 counts are shown on a square-root scale.
pub fn tile_preview_png(bytes: &[u8]) -> Result<(TileHeader, Vec<u8>), AssembleError> {
    let (h, data) = parse_tile(bytes)?;
    let rgb: Vec<u8> = match h.format {
        PixelFormat::Rgb8 => data.to_vec(),
        PixelFormat::Luma16 => data
            .chunks_exact(2)
            .flat_map(|c| {
                let v = u16::from_le_bytes([c[0], c[1]]);
                let grey = ((v as f64).sqrt() * 8.0).min(255.0) as u8;
                [grey, grey, grey]
            })
            .collect(),
    };
    let mut png = Vec::new();
    image::write_buffer_with_format(
        &mut std::io::Cursor::new(&mut png),
        &rgb,
        h.width,
        h.height,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|e| AssembleError::Write {
        path: "tile preview".into(),
        message: e.to_string(),
    })?;
    Ok((h, png))
}

/// The assembled result of a job.
pub struct Assembled {
    pub path: PathBuf,
    /// Sum of samples, for images (see [`Canvas::checksum`]).
    pub checksum: Option<u64>,
}

/// Runs a job's assemble step over its tasks' output directories.
pub fn assemble_job(
    job: &Job,
    task_files: impl Fn(u64) -> Result<Vec<(String, PathBuf)>, String>,
    out: &Path,
) -> Result<Assembled, AssembleError> {
    match job.assemble.kind {
        AssembleKind::TilesPng => {
            let mut canvas: Option<Canvas> = None;
            for index in 0..job.task_count() {
                let task_error = |message: String| AssembleError::Task { index, message };
                let files = task_files(index).map_err(task_error)?;
                let path = files
                    .iter()
                    .find(|(name, _)| *name == job.assemble.file)
                    .map(|(_, path)| path)
                    .ok_or_else(|| task_error(format!("no `{}`", job.assemble.file)))?;
                let bytes = std::fs::read(path)
                    .map_err(|e| task_error(format!("read `{}`: {e}", job.assemble.file)))?;
                let placed = match canvas.as_mut() {
                    None => Canvas::from_first_tile(&bytes).map(|c| canvas = Some(c)),
                    Some(c) => c.place(&bytes),
                };
                placed.map_err(|e| task_error(e.to_string()))?;
            }
            let canvas = canvas.ok_or(AssembleError::Empty)?;
            let target = out.join(&job.assemble.output);
            canvas.write_png(&target)?;
            let checksum = Some(canvas.checksum());
            Ok(Assembled {
                path: target,
                checksum,
            })
        }
        AssembleKind::None => {
            let target = out.join("tasks");
            std::fs::create_dir_all(&target).map_err(|e| AssembleError::Write {
                path: target.display().to_string(),
                message: e.to_string(),
            })?;
            for index in 0..job.task_count() {
                let task_error = |message: String| AssembleError::Task { index, message };
                let to = target.join(index.to_string());
                for (name, from) in task_files(index).map_err(task_error)? {
                    // A task that printed nothing has no `stdout` file here,
                    // and a task with no files no directory: ten thousand
                    // tasks that print nothing are not ten thousand empty
                    // directories.
                    if name == STDOUT_FILE && std::fs::metadata(&from).is_ok_and(|m| m.len() == 0) {
                        continue;
                    }
                    link_or_copy(&from, &to.join(&name))
                        .map_err(|e| task_error(format!("output {name}: {e}")))?;
                }
            }
            Ok(Assembled {
                path: target,
                checksum: None,
            })
        }
    }
}

/// The file that holds a task's standard output (the sandbox's name for it).
const STDOUT_FILE: &str = "stdout";

/// A hard link where the file system allows one (outputs are immutable
/// blobs), a copy otherwise.
fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)?;
    }
    Ok(())
}

/// The files under `dir`, by their path relative to it (`a/b.txt`): a
/// task's outputs when they are kept as a directory.
pub fn files_in(dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mut files = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, prefix)) = pending.pop() {
        let entries =
            std::fs::read_dir(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| e.to_string())?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let kind = entry.file_type().map_err(|e| e.to_string())?;
            if kind.is_dir() {
                pending.push((entry.path(), rel));
            } else if kind.is_file() {
                files.push((rel, entry.path()));
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(x: u32, y: u32, w: u32, h: u32, value: u8) -> Vec<u8> {
        let mut t = TILE_MAGIC.to_vec();
        t.extend_from_slice(&[1, 0, 0, 0]);
        for v in [4u32, 2, x, y, w, h] {
            t.extend_from_slice(&v.to_le_bytes());
        }
        t.extend(std::iter::repeat_n(value, (w * h * 3) as usize));
        t
    }

    #[test]
    fn a_tile_preview_is_a_png_of_the_tile_alone() {
        let (header, png) = tile_preview_png(&tile(2, 0, 2, 2, 20)).expect("preview");
        assert_eq!(
            (header.x, header.y, header.width, header.height),
            (2, 0, 2, 2)
        );
        let image = image::load_from_memory(&png).expect("a PNG").to_rgb8();
        assert_eq!(image.dimensions(), (2, 2));
        assert_eq!(image.get_pixel(1, 1).0, [20, 20, 20]);
        assert!(tile_preview_png(b"not a tile").is_err());
    }

    #[test]
    fn tiles_assemble_into_the_whole_image() {
        let mut c = Canvas::from_first_tile(&tile(0, 0, 2, 2, 10)).expect("first");
        c.place(&tile(2, 0, 2, 2, 20)).expect("second");
        assert_eq!(c.checksum(), 4 * 3 * 10 + 4 * 3 * 20);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.png");
        c.write_png(&path).expect("png");
        let img = image::open(&path).expect("decode").to_rgb8();
        assert_eq!(img.dimensions(), (4, 2));
        assert_eq!(img.get_pixel(3, 1).0, [20, 20, 20]);
    }

    #[test]
    fn overlaps_gaps_and_lies_are_refused() {
        let mut c = Canvas::from_first_tile(&tile(0, 0, 2, 2, 1)).expect("first");
        assert!(matches!(
            c.place(&tile(1, 0, 2, 2, 1)),
            Err(AssembleError::Overlap { .. })
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            c.write_png(&dir.path().join("x.png")),
            Err(AssembleError::Incomplete { .. })
        ));
        assert!(
            parse_tile(&tile(3, 0, 2, 2, 1)).is_err(),
            "tile sticks out of the image"
        );
        let mut short = tile(0, 0, 2, 2, 1);
        short.pop();
        assert!(parse_tile(&short).is_err());
        assert!(parse_tile(b"nonsense").is_err());
    }
}
