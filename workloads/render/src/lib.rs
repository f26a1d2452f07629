//! A physically based path tracer: diffuse, metal, glass and emissive
//! materials, spheres and triangle meshes, a pinhole camera, a BVH, scenes
//! from glTF 2.0. It renders one rectangle (tile) of an image per call, and
//! every pixel's samples are seeded from the pixel alone, so an image is the
//! same however it is cut into tiles.

pub mod bvh;
pub mod math;
pub mod scene;
pub mod trace;

pub use scene::{Scene, SceneError};
pub use trace::{RenderSettings, render_tile};
