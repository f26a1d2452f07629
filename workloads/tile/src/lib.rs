//! The tile format that image-producing workloads write and the host's
//! `assemble` crate reads (keep the two in step: `crates/assemble/src/tile.rs`).
//!
//! Self-describing, so assembly needs nothing from the job file: a 32-byte
//! header (`PXT1`, pixel format, 3 zero bytes, then image width, image height,
//! x, y, width, height as little-endian u32) followed by the pixels, row-major.

pub const MAGIC: [u8; 4] = *b"PXT1";
pub const HEADER_BYTES: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PixelFormat {
    /// 3 bytes per pixel, sRGB.
    Rgb8 = 1,
    /// 2 bytes per pixel, little-endian: raw values such as iteration counts.
    Luma16 = 2,
}

impl PixelFormat {
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb8 => 3,
            PixelFormat::Luma16 => 2,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct TileHeader {
    pub format: PixelFormat,
    pub image_width: u32,
    pub image_height: u32,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Encodes a tile; `pixels` must hold exactly width × height pixels.
pub fn encode(header: &TileHeader, pixels: &[u8]) -> Vec<u8> {
    let expected = header.width as usize * header.height as usize * header.format.bytes_per_pixel();
    assert_eq!(
        pixels.len(),
        expected,
        "tile pixel buffer has the wrong size"
    );
    let mut out = Vec::with_capacity(HEADER_BYTES + pixels.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[header.format as u8, 0, 0, 0]);
    for v in [
        header.image_width,
        header.image_height,
        header.x,
        header.y,
        header.width,
        header.height,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(pixels);
    out
}
