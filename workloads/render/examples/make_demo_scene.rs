//! Writes the demo scene, `examples/scenes/demo.gltf`, to stdout:
//! a room with a checkered floor, coloured walls, an area light in the
//! ceiling, a glass sphere, a mirror sphere, a brushed-gold sphere, a torus
//! and a tall box. Spheres carry a low-poly mesh for other glTF viewers and
//! the `plexus.sphere` extra that the path tracer renders exactly.
//!
//!     cargo run --manifest-path workloads/Cargo.toml -p render \
//!         --example make_demo_scene > examples/scenes/demo.gltf

use base64::Engine as _;
use serde_json::{Value, json};
use std::f32::consts::PI;

#[derive(Default)]
struct Builder {
    buffer: Vec<u8>,
    buffer_views: Vec<Value>,
    accessors: Vec<Value>,
    meshes: Vec<Value>,
    nodes: Vec<Value>,
}

impl Builder {
    fn mesh(
        &mut self,
        name: &str,
        positions: &[[f32; 3]],
        indices: &[u32],
        material: usize,
    ) -> usize {
        let pos_offset = self.buffer.len();
        let (mut min, mut max) = ([f32::MAX; 3], [f32::MIN; 3]);
        for p in positions {
            for k in 0..3 {
                min[k] = min[k].min(p[k]);
                max[k] = max[k].max(p[k]);
                self.buffer.extend_from_slice(&p[k].to_le_bytes());
            }
        }
        let idx_offset = self.buffer.len();
        for i in indices {
            self.buffer.extend_from_slice(&i.to_le_bytes());
        }
        let view = self.buffer_views.len();
        self.buffer_views.push(json!({"buffer": 0, "byteOffset": pos_offset, "byteLength": idx_offset - pos_offset, "target": 34962}));
        self.buffer_views.push(json!({"buffer": 0, "byteOffset": idx_offset, "byteLength": indices.len() * 4, "target": 34963}));
        let acc = self.accessors.len();
        self.accessors.push(json!({"bufferView": view, "componentType": 5126, "count": positions.len(), "type": "VEC3", "min": min, "max": max}));
        self.accessors.push(json!({"bufferView": view + 1, "componentType": 5125, "count": indices.len(), "type": "SCALAR"}));
        self.meshes.push(json!({"name": name, "primitives": [{"attributes": {"POSITION": acc}, "indices": acc + 1, "material": material}]}));
        self.meshes.len() - 1
    }

    fn node(&mut self, node: Value) {
        self.nodes.push(node);
    }
}

fn quad(corners: [[f32; 3]; 4]) -> (Vec<[f32; 3]>, Vec<u32>) {
    (corners.to_vec(), vec![0, 1, 2, 0, 2, 3])
}

fn icosphere() -> (Vec<[f32; 3]>, Vec<u32>) {
    let t = (1.0 + 5f32.sqrt()) / 2.0;
    let raw = [
        [-1.0, t, 0.0],
        [1.0, t, 0.0],
        [-1.0, -t, 0.0],
        [1.0, -t, 0.0],
        [0.0, -1.0, t],
        [0.0, 1.0, t],
        [0.0, -1.0, -t],
        [0.0, 1.0, -t],
        [t, 0.0, -1.0],
        [t, 0.0, 1.0],
        [-t, 0.0, -1.0],
        [-t, 0.0, 1.0],
    ];
    let positions = raw
        .iter()
        .map(|p: &[f32; 3]| {
            let l = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
            [p[0] / l, p[1] / l, p[2] / l]
        })
        .collect();
    let indices = vec![
        0, 11, 5, 0, 5, 1, 0, 1, 7, 0, 7, 10, 0, 10, 11, 1, 5, 9, 5, 11, 4, 11, 10, 2, 10, 7, 6, 7,
        1, 8, 3, 9, 4, 3, 4, 2, 3, 2, 6, 3, 6, 8, 3, 8, 9, 4, 9, 5, 2, 4, 11, 6, 2, 10, 8, 6, 7, 9,
        8, 1,
    ];
    (positions, indices)
}

fn torus(major: f32, minor: f32, segments: u32, sides: u32) -> (Vec<[f32; 3]>, Vec<u32>) {
    let mut positions = Vec::new();
    for i in 0..segments {
        let u = i as f32 / segments as f32 * 2.0 * PI;
        for j in 0..sides {
            let v = j as f32 / sides as f32 * 2.0 * PI;
            let r = major + minor * v.cos();
            positions.push([r * u.cos(), minor * v.sin(), r * u.sin()]);
        }
    }
    let mut indices = Vec::new();
    for i in 0..segments {
        for j in 0..sides {
            let a = i * sides + j;
            let b = ((i + 1) % segments) * sides + j;
            let c = ((i + 1) % segments) * sides + (j + 1) % sides;
            let d = i * sides + (j + 1) % sides;
            indices.extend_from_slice(&[a, d, c, a, c, b]);
        }
    }
    (positions, indices)
}

fn cuboid(size: [f32; 3]) -> (Vec<[f32; 3]>, Vec<u32>) {
    let [x, y, z] = size.map(|s| s / 2.0);
    let positions = vec![
        [-x, 0.0, -z],
        [x, 0.0, -z],
        [x, 0.0, z],
        [-x, 0.0, z],
        [-x, 2.0 * y, -z],
        [x, 2.0 * y, -z],
        [x, 2.0 * y, z],
        [-x, 2.0 * y, z],
    ];
    let indices = vec![
        0, 1, 2, 0, 2, 3, 4, 6, 5, 4, 7, 6, 0, 4, 5, 0, 5, 1, 1, 5, 6, 1, 6, 2, 2, 6, 7, 2, 7, 3,
        3, 7, 4, 3, 4, 0,
    ];
    (positions, indices)
}

fn main() {
    let materials = json!([
        {"name": "white", "pbrMetallicRoughness": {"baseColorFactor": [0.78, 0.78, 0.76, 1.0], "metallicFactor": 0.0, "roughnessFactor": 1.0}},
        {"name": "red", "pbrMetallicRoughness": {"baseColorFactor": [0.72, 0.09, 0.08, 1.0], "metallicFactor": 0.0, "roughnessFactor": 1.0}},
        {"name": "green", "pbrMetallicRoughness": {"baseColorFactor": [0.12, 0.52, 0.16, 1.0], "metallicFactor": 0.0, "roughnessFactor": 1.0}},
        {"name": "light", "emissiveFactor": [1.0, 0.92, 0.8], "extensions": {"KHR_materials_emissive_strength": {"emissiveStrength": 14.0}}},
        {"name": "glass", "pbrMetallicRoughness": {"baseColorFactor": [0.96, 0.98, 1.0, 1.0], "metallicFactor": 0.0, "roughnessFactor": 0.0},
         "extensions": {"KHR_materials_transmission": {"transmissionFactor": 1.0}, "KHR_materials_ior": {"ior": 1.5}}},
        {"name": "mirror", "pbrMetallicRoughness": {"baseColorFactor": [0.92, 0.92, 0.95, 1.0], "metallicFactor": 1.0, "roughnessFactor": 0.0}},
        {"name": "gold", "pbrMetallicRoughness": {"baseColorFactor": [1.0, 0.76, 0.33, 1.0], "metallicFactor": 1.0, "roughnessFactor": 0.22}},
        {"name": "blue", "pbrMetallicRoughness": {"baseColorFactor": [0.14, 0.28, 0.75, 1.0], "metallicFactor": 0.0, "roughnessFactor": 1.0}},
        {"name": "dark tile", "pbrMetallicRoughness": {"baseColorFactor": [0.22, 0.22, 0.24, 1.0], "metallicFactor": 0.0, "roughnessFactor": 1.0}}
    ]);
    let (white, red, green, light, glass, mirror, gold, blue, dark) = (0, 1, 2, 3, 4, 5, 6, 7, 8);
    let mut b = Builder::default();
    let (w, h, d) = (5.0f32, 5.0f32, 5.0f32); // half width, height, half depth

    // Checkered floor: 10 × 10 squares in two materials.
    for (material, parity) in [(white, 0), (dark, 1)] {
        let mut positions = Vec::new();
        let mut indices = Vec::new();
        let n = 10;
        let step = 2.0 * w / n as f32;
        for i in 0..n {
            for j in 0..n {
                if (i + j) % 2 != parity {
                    continue;
                }
                let (x0, z0) = (-w + i as f32 * step, -d + j as f32 * step);
                let base = positions.len() as u32;
                positions.extend_from_slice(&[
                    [x0, 0.0, z0],
                    [x0, 0.0, z0 + step],
                    [x0 + step, 0.0, z0 + step],
                    [x0 + step, 0.0, z0],
                ]);
                indices.extend_from_slice(&[base, base + 1, base + 2, base, base + 2, base + 3]);
            }
        }
        let mesh = b.mesh("floor", &positions, &indices, material);
        b.node(json!({"name": "floor", "mesh": mesh}));
    }
    let walls = [
        (
            "ceiling",
            white,
            [[-w, h, -d], [w, h, -d], [w, h, d], [-w, h, d]],
        ),
        (
            "back wall",
            white,
            [[-w, 0.0, -d], [w, 0.0, -d], [w, h, -d], [-w, h, -d]],
        ),
        (
            "front wall",
            white,
            [[-w, 0.0, d], [-w, h, d], [w, h, d], [w, 0.0, d]],
        ),
        (
            "left wall",
            red,
            [[-w, 0.0, -d], [-w, h, -d], [-w, h, d], [-w, 0.0, d]],
        ),
        (
            "right wall",
            green,
            [[w, 0.0, -d], [w, 0.0, d], [w, h, d], [w, h, -d]],
        ),
        (
            "light",
            light,
            [
                [-1.4, h - 0.01, -1.8],
                [-1.4, h - 0.01, 0.2],
                [1.4, h - 0.01, 0.2],
                [1.4, h - 0.01, -1.8],
            ],
        ),
    ];
    for (name, material, corners) in walls {
        let (p, i) = quad(corners);
        let mesh = b.mesh(name, &p, &i, material);
        b.node(json!({"name": name, "mesh": mesh}));
    }
    let (ico_p, ico_i) = icosphere();
    for (name, material, center, radius) in [
        ("glass sphere", glass, [-1.5, 1.0, 0.6], 1.0),
        ("mirror sphere", mirror, [1.9, 1.3, -1.9], 1.3),
        ("gold sphere", gold, [1.2, 0.6, 1.3], 0.6),
    ] {
        let mesh = b.mesh(name, &ico_p, &ico_i, material);
        b.node(json!({"name": name, "mesh": mesh, "translation": center, "scale": [radius, radius, radius],
                      "extras": {"plexus": {"sphere": {"radius": 1.0}}}}));
    }
    let (tp, ti) = torus(0.8, 0.3, 48, 24);
    let mesh = b.mesh("torus", &tp, &ti, blue);
    let tilt = 0.35f32;
    b.node(
        json!({"name": "torus", "mesh": mesh, "translation": [-0.4, 0.62, -1.6],
                  "rotation": [(tilt / 2.0).sin(), 0.0, 0.0, (tilt / 2.0).cos()]}),
    );
    let (cp, ci) = cuboid([1.3, 2.8, 1.3]);
    let mesh = b.mesh("tall box", &cp, &ci, white);
    let turn = 0.45f32;
    b.node(
        json!({"name": "tall box", "mesh": mesh, "translation": [-3.2, 0.0, -3.0],
                  "rotation": [0.0, (turn / 2.0).sin(), 0.0, (turn / 2.0).cos()]}),
    );

    // Camera: at `eye`, looking at `target`; glTF cameras look down -Z.
    let (eye, target) = ([0.0f32, 2.2, 4.7], [0.0f32, 1.4, -1.0]);
    let f = normalize(sub(target, eye));
    let r = normalize(cross(f, [0.0, 1.0, 0.0]));
    let u = cross(r, f);
    let matrix = [
        r[0], r[1], r[2], 0.0, u[0], u[1], u[2], 0.0, -f[0], -f[1], -f[2], 0.0, eye[0], eye[1],
        eye[2], 1.0,
    ];
    b.node(json!({"name": "camera", "camera": 0, "matrix": matrix}));

    let node_count = b.nodes.len();
    let data = base64::engine::general_purpose::STANDARD.encode(&b.buffer);
    let doc = json!({
        "asset": {"version": "2.0", "generator": "plexus make_demo_scene"},
        "extensionsUsed": ["KHR_materials_emissive_strength", "KHR_materials_transmission", "KHR_materials_ior"],
        "scene": 0,
        "scenes": [{"name": "plexus demo room", "nodes": (0..node_count).collect::<Vec<_>>()}],
        "nodes": b.nodes,
        "cameras": [{"type": "perspective", "perspective": {"yfov": 0.9, "aspectRatio": 16.0 / 9.0, "znear": 0.05}}],
        "meshes": b.meshes,
        "materials": materials,
        "accessors": b.accessors,
        "bufferViews": b.buffer_views,
        "buffers": [{"byteLength": b.buffer.len(), "uri": format!("data:application/octet-stream;base64,{data}")}],
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).expect("serialisable")
    );
}

fn sub(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn cross(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
fn normalize(a: [f32; 3]) -> [f32; 3] {
    let l = (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt();
    [a[0] / l, a[1] / l, a[2] / l]
}
