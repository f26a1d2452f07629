//! Scenes loaded from glTF 2.0 (`.gltf` with embedded data URIs, or `.glb`).
//!
//! Materials come from the metallic-roughness model and its extensions:
//! emissive (with `KHR_materials_emissive_strength`) makes a light, a
//! transmission factor above one half (`KHR_materials_transmission`) makes
//! glass with `KHR_materials_ior`, a metallic factor above one half makes
//! metal (roughness becomes fuzz), anything else is diffuse. Textures are
//! ignored. glTF has no spheres, so a node whose extras hold
//! `{"plexus": {"sphere": {"radius": R}}}` is traced as an exact sphere at the
//! node's origin (its mesh, for other viewers, is skipped).

use crate::bvh::Bvh;
use crate::math::{Mat4, Vec3};
use base64::Engine as _;

/// Bounds that keep a hostile scene from exhausting the guest's memory with
/// an unhelpful trap: exceeding one is a `SceneError`.
pub const TRIANGLES_MAX: usize = 4_000_000;
pub const NODE_DEPTH_MAX: usize = 64;

#[derive(Debug)]
pub enum SceneError {
    Gltf(gltf::Error),
    Invalid(String),
}

impl std::fmt::Display for SceneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SceneError::Gltf(e) => write!(f, "invalid glTF: {e}"),
            SceneError::Invalid(s) => write!(f, "{s}"),
        }
    }
}

impl From<gltf::Error> for SceneError {
    fn from(e: gltf::Error) -> Self {
        SceneError::Gltf(e)
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Material {
    Diffuse { albedo: Vec3 },
    Metal { albedo: Vec3, fuzz: f32 },
    Glass { ior: f32, tint: Vec3 },
    Emissive { radiance: Vec3 },
}

#[derive(Clone, Copy, Debug)]
pub enum Shape {
    Triangle {
        v0: Vec3,
        e1: Vec3,
        e2: Vec3,
        normal: Vec3,
    },
    Sphere {
        center: Vec3,
        radius: f32,
    },
}

#[derive(Clone, Copy, Debug)]
pub struct Primitive {
    pub shape: Shape,
    pub material: u32,
}

impl Primitive {
    pub fn bounds(&self) -> (Vec3, Vec3) {
        match self.shape {
            Shape::Triangle { v0, e1, e2, .. } => {
                let (v1, v2) = (v0 + e1, v0 + e2);
                (v0.min(v1).min(v2), v0.max(v1).max(v2))
            }
            Shape::Sphere { center, radius } => {
                (center - Vec3::splat(radius), center + Vec3::splat(radius))
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Camera {
    pub origin: Vec3,
    pub forward: Vec3,
    pub right: Vec3,
    pub up: Vec3,
    pub tan_half_fov_y: f32,
}

pub struct Scene {
    pub primitives: Vec<Primitive>,
    pub materials: Vec<Material>,
    pub camera: Camera,
    pub bvh: Bvh,
    /// Emissive triangles sampled directly (next-event estimation), by index.
    pub lights: Vec<u32>,
    /// Running sum of light areas, for choosing a light in proportion to its area.
    pub light_area_cdf: Vec<f32>,
    pub background: Vec3,
}

impl Scene {
    pub fn from_gltf(bytes: &[u8]) -> Result<Scene, SceneError> {
        let gltf = gltf::Gltf::from_slice(bytes)?;
        let buffers = load_buffers(&gltf)?;
        let mut materials: Vec<Material> = gltf.materials().map(convert_material).collect();
        let default_material = materials.len() as u32;
        materials.push(Material::Diffuse {
            albedo: Vec3::splat(0.8),
        });

        let scene = gltf
            .default_scene()
            .or_else(|| gltf.scenes().next())
            .ok_or_else(|| SceneError::Invalid("the glTF file has no scene".into()))?;
        let mut loader = Loader {
            buffers: &buffers,
            default_material,
            primitives: Vec::new(),
            camera: None,
        };
        for node in scene.nodes() {
            loader.visit(&node, &Mat4::IDENTITY, 0)?;
        }
        let camera = loader
            .camera
            .ok_or_else(|| SceneError::Invalid("the scene has no perspective camera".into()))?;
        let mut primitives = loader.primitives;
        if primitives.is_empty() {
            return Err(SceneError::Invalid("the scene has no geometry".into()));
        }
        let bvh = Bvh::build(&mut primitives);
        let mut lights = Vec::new();
        let mut light_area_cdf = Vec::new();
        let mut area_sum = 0.0;
        for (i, p) in primitives.iter().enumerate() {
            if let (Shape::Triangle { e1, e2, .. }, Material::Emissive { .. }) =
                (p.shape, materials[p.material as usize])
            {
                let area = 0.5 * e1.cross(e2).length();
                if area > 0.0 {
                    area_sum += area;
                    lights.push(i as u32);
                    light_area_cdf.push(area_sum);
                }
            }
        }
        Ok(Scene {
            primitives,
            materials,
            camera,
            bvh,
            lights,
            light_area_cdf,
            background: Vec3::ZERO,
        })
    }

    pub fn light_area_total(&self) -> f32 {
        self.light_area_cdf.last().copied().unwrap_or(0.0)
    }
}

fn load_buffers(gltf: &gltf::Gltf) -> Result<Vec<Vec<u8>>, SceneError> {
    let mut buffers = Vec::new();
    for buffer in gltf.buffers() {
        let data = match buffer.source() {
            gltf::buffer::Source::Bin => gltf
                .blob
                .clone()
                .ok_or_else(|| SceneError::Invalid("GLB buffer without a BIN chunk".into()))?,
            gltf::buffer::Source::Uri(uri) => {
                let encoded = uri
                    .strip_prefix("data:")
                    .and_then(|rest| rest.split_once(";base64,"))
                    .map(|(_, data)| data)
                    .ok_or_else(|| {
                        SceneError::Invalid(format!(
                            "buffer {} refers to an external file ({uri}); embed it as a data URI or use .glb",
                            buffer.index()
                        ))
                    })?;
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| {
                        SceneError::Invalid(format!("buffer {}: bad base64: {e}", buffer.index()))
                    })?
            }
        };
        if data.len() < buffer.length() {
            return Err(SceneError::Invalid(format!(
                "buffer {} is shorter than declared",
                buffer.index()
            )));
        }
        buffers.push(data);
    }
    Ok(buffers)
}

fn convert_material(m: gltf::Material) -> Material {
    let pbr = m.pbr_metallic_roughness();
    let [r, g, b, _] = pbr.base_color_factor();
    let base = Vec3::new(r, g, b);
    let emissive = Vec3::from_array(m.emissive_factor()) * m.emissive_strength().unwrap_or(1.0);
    let transmission = m
        .transmission()
        .map(|t| t.transmission_factor())
        .unwrap_or(0.0);
    if emissive.max_component() > 0.0 {
        Material::Emissive { radiance: emissive }
    } else if transmission > 0.5 {
        Material::Glass {
            ior: m.ior().unwrap_or(1.5),
            tint: base,
        }
    } else if pbr.metallic_factor() > 0.5 {
        Material::Metal {
            albedo: base,
            fuzz: pbr.roughness_factor().clamp(0.0, 1.0),
        }
    } else {
        Material::Diffuse { albedo: base }
    }
}

struct Loader<'a> {
    buffers: &'a [Vec<u8>],
    default_material: u32,
    primitives: Vec<Primitive>,
    camera: Option<Camera>,
}

impl Loader<'_> {
    fn visit(&mut self, node: &gltf::Node, parent: &Mat4, depth: usize) -> Result<(), SceneError> {
        if depth > NODE_DEPTH_MAX {
            return Err(SceneError::Invalid(format!(
                "node hierarchy deeper than {NODE_DEPTH_MAX}"
            )));
        }
        let global = parent.mul(&Mat4(node.transform().matrix()));
        if let (Some(camera), None) = (node.camera(), &self.camera)
            && let gltf::camera::Projection::Perspective(p) = camera.projection()
        {
            let forward = global
                .transform_vector(Vec3::new(0.0, 0.0, -1.0))
                .normalize();
            let up_hint = global
                .transform_vector(Vec3::new(0.0, 1.0, 0.0))
                .normalize();
            let right = forward.cross(up_hint).normalize();
            let up = right.cross(forward);
            self.camera = Some(Camera {
                origin: global.transform_point(Vec3::ZERO),
                forward,
                right,
                up,
                tan_half_fov_y: (p.yfov() * 0.5).tan(),
            });
        }
        if let Some(mesh) = node.mesh() {
            let default_material = self.default_material;
            let material_of =
                |p: &gltf::Primitive| p.material().index().map_or(default_material, |i| i as u32);
            if let Some(radius) = sphere_radius(node) {
                let scale = global.transform_vector(Vec3::new(1.0, 0.0, 0.0)).length();
                let material = mesh
                    .primitives()
                    .next()
                    .map_or(self.default_material, |p| material_of(&p));
                self.primitives.push(Primitive {
                    shape: Shape::Sphere {
                        center: global.transform_point(Vec3::ZERO),
                        radius: radius * scale,
                    },
                    material,
                });
            } else {
                for primitive in mesh.primitives() {
                    self.add_mesh_primitive(&primitive, &global, material_of(&primitive))?;
                }
            }
        }
        for child in node.children() {
            self.visit(&child, &global, depth + 1)?;
        }
        Ok(())
    }

    fn add_mesh_primitive(
        &mut self,
        primitive: &gltf::Primitive,
        global: &Mat4,
        material: u32,
    ) -> Result<(), SceneError> {
        if primitive.mode() != gltf::mesh::Mode::Triangles {
            return Ok(()); // points and lines have no surface to hit
        }
        let reader = primitive.reader(|b| self.buffers.get(b.index()).map(|d| d.as_slice()));
        let positions: Vec<Vec3> = reader
            .read_positions()
            .ok_or_else(|| SceneError::Invalid("a mesh primitive has no POSITION".into()))?
            .map(|p| global.transform_point(Vec3::from_array(p)))
            .collect();
        let indices: Vec<u32> = match reader.read_indices() {
            Some(i) => i.into_u32().collect(),
            None => (0..positions.len() as u32).collect(),
        };
        if self.primitives.len() + indices.len() / 3 > TRIANGLES_MAX {
            return Err(SceneError::Invalid(format!(
                "the scene has more than {TRIANGLES_MAX} triangles"
            )));
        }
        for tri in indices.chunks_exact(3) {
            let get = |i: u32| {
                positions
                    .get(i as usize)
                    .copied()
                    .ok_or_else(|| SceneError::Invalid(format!("vertex index {i} out of range")))
            };
            let (v0, v1, v2) = (get(tri[0])?, get(tri[1])?, get(tri[2])?);
            let (e1, e2) = (v1 - v0, v2 - v0);
            let normal = e1.cross(e2).normalize();
            if normal.length() == 0.0 {
                continue; // degenerate
            }
            self.primitives.push(Primitive {
                shape: Shape::Triangle { v0, e1, e2, normal },
                material,
            });
        }
        Ok(())
    }
}

fn sphere_radius(node: &gltf::Node) -> Option<f32> {
    let raw = node.extras().as_ref()?;
    let value: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
    let radius = value
        .get("plexus")?
        .get("sphere")?
        .get("radius")?
        .as_f64()?;
    (radius > 0.0).then_some(radius as f32)
}
