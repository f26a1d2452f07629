//! A bounding volume hierarchy over the scene's primitives: median split on
//! the longest axis of the centroids, small leaves, a flat node array.

use crate::math::{Vec3, fmax, fmin};
use crate::scene::{Primitive, Shape};

const LEAF_PRIMITIVES_MAX: usize = 4;
const SAH_BINS: usize = 12;
/// Depth is bounded by the median split (log2 of the primitive count), far
/// below this for any scene under `TRIANGLES_MAX`.
const STACK_DEPTH_MAX: usize = 64;
pub const RAY_EPSILON: f32 = 1e-4;

#[derive(Clone, Copy, Debug)]
struct Node {
    min: Vec3,
    max: Vec3,
    /// Leaf: first primitive. Interior: index of the left child (right is next).
    first: u32,
    /// Leaf: number of primitives. Interior: 0.
    count: u32,
}

pub struct Bvh {
    nodes: Vec<Node>,
}

#[derive(Clone, Copy, Debug)]
pub struct Hit {
    pub t: f32,
    pub primitive: u32,
}

impl Bvh {
    /// Builds the hierarchy, reordering `primitives` so leaves are contiguous.
    pub fn build(primitives: &mut Vec<Primitive>) -> Bvh {
        let bounds: Vec<(Vec3, Vec3)> = primitives.iter().map(|p| p.bounds()).collect();
        let mut order: Vec<u32> = (0..primitives.len() as u32).collect();
        let mut nodes = Vec::with_capacity(2 * primitives.len());
        nodes.push(Node {
            min: Vec3::ZERO,
            max: Vec3::ZERO,
            first: 0,
            count: 0,
        });
        build_node(&mut nodes, 0, &bounds, &mut order, 0);
        let reordered = order.iter().map(|&i| primitives[i as usize]).collect();
        *primitives = reordered;
        Bvh { nodes }
    }

    pub fn intersect(
        &self,
        prims: &[Primitive],
        origin: Vec3,
        dir: Vec3,
        t_max: f32,
    ) -> Option<Hit> {
        let inv = dir.recip();
        let mut best: Option<Hit> = None;
        let mut t_best = t_max;
        let mut stack = [0u32; STACK_DEPTH_MAX];
        let mut top = 1;
        while top > 0 {
            top -= 1;
            let node = &self.nodes[stack[top] as usize];
            if !slab(node, origin, inv, t_best) {
                continue;
            }
            if node.count > 0 {
                for i in node.first..node.first + node.count {
                    if let Some(t) = intersect_primitive(&prims[i as usize], origin, dir, t_best) {
                        t_best = t;
                        best = Some(Hit { t, primitive: i });
                    }
                }
            } else if top + 2 <= STACK_DEPTH_MAX {
                // Visit the nearer child first so t_best shrinks early.
                let (l, r) = (node.first, node.first + 1);
                let dl = entry(&self.nodes[l as usize], origin, inv);
                let dr = entry(&self.nodes[r as usize], origin, inv);
                let (near, far) = if dl <= dr { (l, r) } else { (r, l) };
                stack[top] = far;
                stack[top + 1] = near;
                top += 2;
            }
        }
        best
    }

    /// Whether anything lies on the ray before `t_max`.
    pub fn occluded(&self, prims: &[Primitive], origin: Vec3, dir: Vec3, t_max: f32) -> bool {
        let inv = dir.recip();
        let mut stack = [0u32; STACK_DEPTH_MAX];
        let mut top = 1;
        while top > 0 {
            top -= 1;
            let node = &self.nodes[stack[top] as usize];
            if !slab(node, origin, inv, t_max) {
                continue;
            }
            if node.count > 0 {
                for i in node.first..node.first + node.count {
                    if intersect_primitive(&prims[i as usize], origin, dir, t_max).is_some() {
                        return true;
                    }
                }
            } else if top + 2 <= STACK_DEPTH_MAX {
                stack[top] = node.first + 1;
                stack[top + 1] = node.first;
                top += 2;
            }
        }
        false
    }
}

fn build_node(
    nodes: &mut Vec<Node>,
    index: usize,
    bounds: &[(Vec3, Vec3)],
    order: &mut [u32],
    first: usize,
) {
    let (mut min, mut max) = (Vec3::splat(f32::MAX), Vec3::splat(f32::MIN));
    let (mut cmin, mut cmax) = (Vec3::splat(f32::MAX), Vec3::splat(f32::MIN));
    for &i in order.iter() {
        let (lo, hi) = bounds[i as usize];
        min = min.min(lo);
        max = max.max(hi);
        let c = (lo + hi) * 0.5;
        cmin = cmin.min(c);
        cmax = cmax.max(c);
    }
    nodes[index].min = min;
    nodes[index].max = max;
    let extent = cmax - cmin;
    if order.len() <= LEAF_PRIMITIVES_MAX || extent.max_component() <= 0.0 {
        nodes[index].first = first as u32;
        nodes[index].count = order.len() as u32;
        return;
    }
    // Binned surface-area heuristic: of SAH_BINS candidate planes per axis,
    // split at the one that minimises area × count on both sides.
    let mut best: Option<(f32, usize, f32)> = None; // (cost, axis, plane)
    for axis in 0..3 {
        if extent[axis] <= 0.0 {
            continue;
        }
        let mut bins = [(Vec3::splat(f32::MAX), Vec3::splat(f32::MIN), 0u32); SAH_BINS];
        let scale = SAH_BINS as f32 / extent[axis];
        for &i in order.iter() {
            let (lo, hi) = bounds[i as usize];
            let c = (lo[axis] + hi[axis]) * 0.5;
            let b = (((c - cmin[axis]) * scale) as usize).min(SAH_BINS - 1);
            bins[b] = (bins[b].0.min(lo), bins[b].1.max(hi), bins[b].2 + 1);
        }
        let mut right_area = [0.0f32; SAH_BINS];
        let mut right_count = [0u32; SAH_BINS];
        let (mut rmin, mut rmax, mut rcount) = (Vec3::splat(f32::MAX), Vec3::splat(f32::MIN), 0);
        for b in (1..SAH_BINS).rev() {
            rmin = rmin.min(bins[b].0);
            rmax = rmax.max(bins[b].1);
            rcount += bins[b].2;
            right_area[b] = area(rmin, rmax);
            right_count[b] = rcount;
        }
        let (mut lmin, mut lmax, mut lcount) = (Vec3::splat(f32::MAX), Vec3::splat(f32::MIN), 0);
        for b in 0..SAH_BINS - 1 {
            lmin = lmin.min(bins[b].0);
            lmax = lmax.max(bins[b].1);
            lcount += bins[b].2;
            if lcount == 0 || right_count[b + 1] == 0 {
                continue;
            }
            let cost =
                area(lmin, lmax) * lcount as f32 + right_area[b + 1] * right_count[b + 1] as f32;
            if best.is_none_or(|(c, _, _)| cost < c) {
                best = Some((cost, axis, cmin[axis] + (b + 1) as f32 / scale));
            }
        }
    }
    let leaf_cost = area(min, max) * order.len() as f32;
    let mid = match best {
        Some((cost, axis, plane)) if cost < leaf_cost || order.len() > LEAF_PRIMITIVES_MAX * 4 => {
            let centroid = |i: u32| {
                let (lo, hi) = bounds[i as usize];
                (lo[axis] + hi[axis]) * 0.5
            };
            let mut left = 0;
            for k in 0..order.len() {
                if centroid(order[k]) < plane {
                    order.swap(k, left);
                    left += 1;
                }
            }
            if left == 0 || left == order.len() {
                order.len() / 2
            } else {
                left
            }
        }
        _ => {
            nodes[index].first = first as u32;
            nodes[index].count = order.len() as u32;
            return;
        }
    };
    let left = nodes.len();
    nodes.push(Node {
        min: Vec3::ZERO,
        max: Vec3::ZERO,
        first: 0,
        count: 0,
    });
    nodes.push(Node {
        min: Vec3::ZERO,
        max: Vec3::ZERO,
        first: 0,
        count: 0,
    });
    nodes[index].first = left as u32;
    nodes[index].count = 0;
    let (lo, hi) = order.split_at_mut(mid);
    build_node(nodes, left, bounds, lo, first);
    build_node(nodes, left + 1, bounds, hi, first + mid);
}

fn slab(node: &Node, origin: Vec3, inv: Vec3, t_max: f32) -> bool {
    let t0 = (node.min - origin).mul_elem(inv);
    let t1 = (node.max - origin).mul_elem(inv);
    let near = fmax(t0.min(t1).max_component(), 0.0);
    let far = t0.max(t1);
    let far = fmin(far.min_component(), t_max);
    near <= far
}

pub fn intersect_primitive(p: &Primitive, origin: Vec3, dir: Vec3, t_max: f32) -> Option<f32> {
    match p.shape {
        Shape::Triangle { v0, e1, e2, .. } => {
            // Möller–Trumbore.
            let pv = dir.cross(e2);
            let det = e1.dot(pv);
            if det.abs() < 1e-9 {
                return None;
            }
            let inv_det = 1.0 / det;
            let tv = origin - v0;
            let u = tv.dot(pv) * inv_det;
            if !(0.0..=1.0).contains(&u) {
                return None;
            }
            let qv = tv.cross(e1);
            let v = dir.dot(qv) * inv_det;
            if v < 0.0 || u + v > 1.0 {
                return None;
            }
            let t = e2.dot(qv) * inv_det;
            (t > RAY_EPSILON && t < t_max).then_some(t)
        }
        Shape::Sphere { center, radius } => {
            let oc = origin - center;
            let b = oc.dot(dir);
            let c = oc.dot(oc) - radius * radius;
            let disc = b * b - c;
            if disc < 0.0 {
                return None;
            }
            let s = disc.sqrt();
            let t = if -b - s > RAY_EPSILON { -b - s } else { -b + s };
            (t > RAY_EPSILON && t < t_max).then_some(t)
        }
    }
}

fn area(min: Vec3, max: Vec3) -> f32 {
    let e = (max - min).max(Vec3::ZERO);
    e.x * e.y + e.y * e.z + e.z * e.x
}

fn entry(node: &Node, origin: Vec3, inv: Vec3) -> f32 {
    let t0 = (node.min - origin).mul_elem(inv);
    let t1 = (node.max - origin).mul_elem(inv);
    t0.min(t1).max_component()
}
