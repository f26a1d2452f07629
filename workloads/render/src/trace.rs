//! The integrator: unidirectional path tracing with next-event estimation
//! towards emissive triangles (the area lights), Russian roulette after a few
//! bounces, ACES tone mapping and sRGB output.

use crate::bvh::RAY_EPSILON;
use crate::math::{Rng, Vec3, fmax, fmin};
use crate::scene::{Material, Scene, Shape};
use std::f32::consts::PI;

/// A single path's radiance is clamped: rare bright paths (caustics through
/// glass) otherwise show as white speckles at low sample counts.
const SAMPLE_RADIANCE_MAX: f32 = 4.0;
const ROULETTE_FROM_DEPTH: u32 = 3;

#[derive(Clone, Copy, Debug)]
pub struct RenderSettings {
    pub width: u32,
    pub height: u32,
    pub samples_per_pixel: u32,
    pub max_depth: u32,
    pub seed: u64,
    pub exposure: f32,
}

/// Renders the rectangle (x, y, w, h) of the image to sRGB bytes, row-major.
pub fn render_tile(scene: &Scene, s: &RenderSettings, x0: u32, y0: u32, w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity((w * h * 3) as usize);
    let cam = &scene.camera;
    let aspect = s.width as f32 / s.height as f32;
    for py in y0..y0 + h {
        for px in x0..x0 + w {
            // Seeded by the pixel, never by the tile: tiling does not change the image.
            let mut rng = Rng::new(s.seed, py as u64 * s.width as u64 + px as u64);
            let mut sum = Vec3::ZERO;
            for _ in 0..s.samples_per_pixel {
                let u = (px as f32 + rng.next_f32()) / s.width as f32;
                let v = (py as f32 + rng.next_f32()) / s.height as f32;
                let dir = (cam.forward
                    + cam.right * ((2.0 * u - 1.0) * cam.tan_half_fov_y * aspect)
                    + cam.up * ((1.0 - 2.0 * v) * cam.tan_half_fov_y))
                    .normalize();
                let l = radiance(scene, cam.origin, dir, &mut rng, s.max_depth);
                sum += l.min(Vec3::splat(SAMPLE_RADIANCE_MAX));
            }
            let color = sum * (s.exposure / s.samples_per_pixel.max(1) as f32);
            out.extend_from_slice(&to_srgb8(color));
        }
    }
    out
}

fn radiance(scene: &Scene, mut origin: Vec3, mut dir: Vec3, rng: &mut Rng, max_depth: u32) -> Vec3 {
    let mut color = Vec3::ZERO;
    let mut throughput = Vec3::ONE;
    // Emission seen after a diffuse bounce was already counted by light sampling.
    let mut count_emission = true;
    for depth in 0..max_depth {
        let Some(hit) = scene
            .bvh
            .intersect(&scene.primitives, origin, dir, f32::INFINITY)
        else {
            color += throughput.mul_elem(scene.background);
            break;
        };
        let prim = &scene.primitives[hit.primitive as usize];
        let point = origin + dir * hit.t;
        let outward = match prim.shape {
            Shape::Triangle { normal, .. } => normal,
            Shape::Sphere { center, radius } => (point - center) / radius,
        };
        let front = dir.dot(outward) < 0.0;
        let normal = if front { outward } else { -outward };
        match scene.materials[prim.material as usize] {
            Material::Emissive { radiance } => {
                let sampled = matches!(prim.shape, Shape::Triangle { .. });
                if count_emission || !sampled {
                    color += throughput.mul_elem(radiance);
                }
                break;
            }
            Material::Diffuse { albedo } => {
                let direct = sample_lights(scene, point, normal, rng);
                color += throughput.mul_elem(albedo).mul_elem(direct) * (1.0 / PI);
                throughput = throughput.mul_elem(albedo);
                dir = cosine_hemisphere(normal, rng);
                origin = point + normal * RAY_EPSILON;
                count_emission = false;
            }
            Material::Metal { albedo, fuzz } => {
                let reflected = reflect(dir, normal) + random_unit_vector(rng) * fuzz;
                if reflected.dot(normal) <= 0.0 {
                    break;
                }
                throughput = throughput.mul_elem(albedo);
                dir = reflected.normalize();
                origin = point + normal * RAY_EPSILON;
                count_emission = true;
            }
            Material::Glass { ior, tint } => {
                let eta = if front { 1.0 / ior } else { ior };
                let cos_i = fmin((-dir).dot(normal), 1.0);
                let sin2_t = eta * eta * (1.0 - cos_i * cos_i);
                let r0 = ((1.0 - eta) / (1.0 + eta)).powi(2);
                let fresnel = r0 + (1.0 - r0) * (1.0 - cos_i).powi(5);
                if sin2_t > 1.0 || rng.next_f32() < fresnel {
                    dir = reflect(dir, normal);
                    origin = point + normal * RAY_EPSILON;
                } else {
                    let cos_t = (1.0 - sin2_t).sqrt();
                    dir = (dir * eta + normal * (eta * cos_i - cos_t)).normalize();
                    origin = point - normal * RAY_EPSILON;
                    throughput = throughput.mul_elem(tint);
                }
                count_emission = true;
            }
        }
        if depth >= ROULETTE_FROM_DEPTH {
            let survive = fmin(throughput.max_component(), 0.95);
            if rng.next_f32() >= survive {
                break;
            }
            throughput = throughput / survive;
        }
    }
    color
}

/// Irradiance-like term from one point on one light, chosen by area:
/// Le · cos θ_surface · cos θ_light / d² / pdf, with pdf = 1 / total area.
fn sample_lights(scene: &Scene, point: Vec3, normal: Vec3, rng: &mut Rng) -> Vec3 {
    let total = scene.light_area_total();
    if total <= 0.0 {
        return Vec3::ZERO;
    }
    let pick = rng.next_f32() * total;
    let index = scene
        .light_area_cdf
        .partition_point(|&a| a <= pick)
        .min(scene.lights.len() - 1);
    let light = &scene.primitives[scene.lights[index] as usize];
    let (
        Shape::Triangle {
            v0,
            e1,
            e2,
            normal: light_normal,
        },
        Material::Emissive { radiance },
    ) = (light.shape, scene.materials[light.material as usize])
    else {
        return Vec3::ZERO;
    };
    let (mut a, mut b) = (rng.next_f32(), rng.next_f32());
    if a + b > 1.0 {
        a = 1.0 - a;
        b = 1.0 - b;
    }
    let target = v0 + e1 * a + e2 * b;
    let to_light = target - point;
    let dist2 = to_light.dot(to_light);
    let dist = dist2.sqrt();
    let dir = to_light / dist;
    let cos_surface = normal.dot(dir);
    let cos_light = light_normal.dot(dir).abs();
    if cos_surface <= 0.0 || cos_light <= 0.0 {
        return Vec3::ZERO;
    }
    let origin = point + normal * RAY_EPSILON;
    if scene
        .bvh
        .occluded(&scene.primitives, origin, dir, dist * (1.0 - 1e-3))
    {
        return Vec3::ZERO;
    }
    radiance * (cos_surface * cos_light * total / dist2)
}

fn reflect(d: Vec3, n: Vec3) -> Vec3 {
    d - n * (2.0 * d.dot(n))
}

fn random_unit_vector(rng: &mut Rng) -> Vec3 {
    let z = 1.0 - 2.0 * rng.next_f32();
    let r = fmax(1.0 - z * z, 0.0).sqrt();
    let phi = 2.0 * PI * rng.next_f32();
    Vec3::new(r * phi.cos(), r * phi.sin(), z)
}

fn cosine_hemisphere(n: Vec3, rng: &mut Rng) -> Vec3 {
    // A unit-sphere point added to the normal is cosine-distributed.
    let d = n + random_unit_vector(rng);
    if d.dot(d) < 1e-12 { n } else { d.normalize() }
}

fn to_srgb8(c: Vec3) -> [u8; 3] {
    let map = |x: f32| {
        // ACES filmic (Narkowicz's fit), then the sRGB transfer curve.
        let x = fmax(x, 0.0);
        let t = ((x * (2.51 * x + 0.03)) / (x * (2.43 * x + 0.59) + 0.14)).clamp(0.0, 1.0);
        let s = if t <= 0.003_130_8 {
            12.92 * t
        } else {
            1.055 * t.powf(1.0 / 2.4) - 0.055
        };
        (s * 255.0 + 0.5).clamp(0.0, 255.0) as u8
    };
    [map(c.x), map(c.y), map(c.z)]
}
