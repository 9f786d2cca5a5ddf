//! The stride-1 convolution of [`super::conv`] (stride 2 by its phases, depthwise by
//! [`super::depthwise::host`]) and the fused LN + leaky ReLU of [`super::norm`]
//! as differentiable ops of `Autodiff<CpuBackend>` (burn's backend-extension mechanism: nodes
//! with their own backward), so training on the CPU uses them too.
//!
//! For `y = conv(x, w)` with zero padding `p` and a `k x k` kernel:
//! - `dL/dx = conv(dL/dy, w')` with `w'[c, o] = w[o, c]` flipped in both axes and padding
//!   `k - 1 - p`: the same kernel.
//! - `dL/dw[o, c, ky, kx] = sum over n, y, x of dL/dy[n, o, y, x] xpad[n, c, y + ky, x + kx]`:
//!   [`super::wgrad`], on the same padded input, no im2col.

use std::borrow::Cow;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use rayon::prelude::*;

use super::conv::{self, ConvShape, Plan};
use super::depthwise::host as depthwise;
use super::polyphase::{self, Polyphase};
use super::wgrad;
use super::{calls, plans, same_type};
use crate::device::CpuBackend;

/// The training backend these kernels serve.
pub type CpuAutodiff = Autodiff<CpuBackend>;

type Primitive = FloatTensor<CpuBackend>;
type AdPrimitive = FloatTensor<CpuAutodiff>;

/// A primitive's values: its own buffer when nothing else holds it, else one copy
/// ([`super::flex_values`]; through `into_data` a shared buffer was copied up to three times:
/// 2.7% of a training step, most of it LN's input, which the autodiff graph keeps).
pub(crate) fn host(p: Primitive) -> (Vec<f32>, [usize; 4]) {
    let dims = Tensor::<CpuBackend, 4>::from_primitive(TensorPrimitive::Float(p.clone())).dims();
    (super::flex_values(p), dims)
}

/// A primitive's values, borrowed when it is contiguous f32 (the usual case: no copy, even when
/// the autodiff graph shares it), and its dims.
pub(crate) fn view(p: &Primitive) -> (Cow<'_, [f32]>, [usize; 4]) {
    let dims = Tensor::<CpuBackend, 4>::from_primitive(TensorPrimitive::Float(p.clone())).dims();
    match p.as_slice::<f32>() {
        Some(values) => (Cow::Borrowed(values), dims),
        None => (Cow::Owned(host(p.clone()).0), dims),
    }
}

pub(crate) fn primitive(values: Vec<f32>, dims: [usize; 4]) -> Primitive {
    let t = Tensor::<CpuBackend, 4>::from_data(TensorData::new(values, dims), &Default::default());
    t.into_primitive().tensor()
}

fn shape(x: [usize; 4], w: [usize; 4], pad: usize) -> ConvShape {
    ConvShape {
        c_in: x[1],
        c_out: w[0],
        h: x[2],
        w: x[3],
        k: w[2],
        pad,
    }
}

/// Padding and stride of a convolution node, and whether it is depthwise (one `k x k` filter
/// per channel, stride 1: [`super::depthwise::host`]).
#[derive(Clone, Copy, Debug)]
struct Geometry {
    pad: usize,
    stride: usize,
    depthwise: bool,
}

/// The depthwise problem of input dims `xd` and kernel side `k`.
fn depthwise_shape([n, c, h, w]: [usize; 4], k: usize, pad: usize) -> depthwise::Shape {
    depthwise::Shape { n, c, h, w, k, pad }
}

/// Forward of every image of the batch; stride 1 or 2 (by its phases, [`Polyphase`]); with
/// `frozen` (the weight and bias take no gradient) the plan may be a kept one.
fn forward(
    x: &[f32],
    xd: [usize; 4],
    (w, wd): (&[f32], [usize; 4]),
    bias: Option<&[f32]>,
    geometry: Geometry,
    frozen: bool,
) -> (Vec<f32>, [usize; 4]) {
    if geometry.depthwise {
        let s = depthwise_shape(xd, wd[2], geometry.pad);
        let [oh, ow] = s.out_size();
        return (depthwise::forward(x, w, bias, &s), [xd[0], xd[1], oh, ow]);
    }
    let s = shape(xd, wd, geometry.pad);
    let (y, [oh, ow]) = polyphase::conv2d_batch(x, w, bias, &s, geometry.stride, frozen);
    (y, [xd[0], wd[0], oh, ow])
}

/// `w[o, c, ky, kx]` -> `w'[c, o, k-1-ky, k-1-kx]`.
fn flip_transpose(w: &[f32], [c_out, c_in, k, _]: [usize; 4]) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for o in 0..c_out {
        for c in 0..c_in {
            for ky in 0..k {
                for kx in 0..k {
                    let from = ((o * c_in + c) * k + ky) * k + kx;
                    let to = ((c * c_out + o) * k + (k - 1 - ky)) * k + (k - 1 - kx);
                    out[to] = w[from];
                }
            }
        }
    }
    out
}

/// `dL/dx` of the node's convolution `s` at `stride` with weight `w`: the convolution of the
/// output gradient `g` (dims `gd`) with the flipped, transposed weight (a stride-2 node's
/// phase weight), then for stride 2 the phases merged back. With `frozen` (the weight takes no
/// gradient) the plan may be a kept one ([`plans`]).
fn input_grad(
    (g, gd): (&[f32], [usize; 4]),
    w: &[f32],
    s: &ConvShape,
    stride: usize,
    frozen: bool,
) -> Vec<f32> {
    let phases = (stride == 2).then(|| Polyphase::new(*s));
    let inner = phases.as_ref().map_or(*s, |p| p.inner);
    let (c_in, c_out, k) = (inner.c_in, inner.c_out, inner.k);
    let back = shape(gd, [c_in, c_out, k, k], k - 1 - inner.pad);
    let key = plans::Key {
        shape: *s,
        stride,
        input_grad: true,
        weight: w,
        bias: None,
    };
    let label = || calls::label("input grad", s, stride, gd[0]);
    calls::time(label, || {
        let plan = plans::plan(key, frozen, || {
            let w_inner = phases
                .as_ref()
                .map_or(Cow::Borrowed(w), |p| Cow::Owned(p.weights(w)));
            Plan::new(&flip_transpose(&w_inner, [c_out, c_in, k, k]), None, &back)
        });
        let dx = conv::planned_batch(g, &plan);
        match &phases {
            Some(p) => p.merge_batch(&dx),
            None => dx,
        }
    })
}

/// The input and weight gradients of a node; the output gradient `g` is on the host.
fn input_weight_grads(
    (node_x, node_w): (Option<NodeId>, Option<NodeId>),
    (x_state, w_state, geometry): (NodeId, NodeId, Geometry),
    (g, gd): (&[f32], [usize; 4]),
    grads: &mut Gradients,
    checkpointer: &mut Checkpointer,
) {
    let x = checkpointer.retrieve_node_output::<Primitive>(x_state);
    let w = checkpointer.retrieve_node_output::<Primitive>(w_state);
    let (w, wd) = view(&w);
    let xd = Tensor::<CpuBackend, 4>::from_primitive(TensorPrimitive::Float(x.clone())).dims();
    if geometry.depthwise {
        let s = depthwise_shape(xd, wd[2], geometry.pad);
        if let Some(id) = node_x {
            grads.register::<CpuBackend>(id, primitive(depthwise::input_grad(g, &w, &s), xd));
        }
        if let Some(id) = node_w {
            let dw = depthwise::weight_grad(&view(&x).0, g, &s);
            grads.register::<CpuBackend>(id, primitive(dw, wd));
        }
        return;
    }
    let s = shape(xd, wd, geometry.pad);
    // A stride-2 node differentiates its phase convolution, then maps back.
    let phases = (geometry.stride == 2).then(|| Polyphase::new(s));
    let inner = phases.as_ref().map_or(s, |p| p.inner);
    if let Some(id) = node_x {
        let dx = input_grad((g, gd), &w, &s, geometry.stride, node_w.is_none());
        grads.register::<CpuBackend>(id, primitive(dx, xd));
    }
    // The input itself is only needed for the weight gradient (not for a frozen layer).
    if let Some(id) = node_w {
        let (x, _) = view(&x);
        let x_inner = match &phases {
            Some(p) => Cow::Owned(p.split_batch(&x)),
            None => x,
        };
        let live = phases.as_ref().map(Polyphase::live_terms);
        let label = || calls::label("weight grad", &s, geometry.stride, xd[0]);
        let dw = calls::time(label, || {
            wgrad::weight_grad_of(&x_inner, g, &inner, live.as_deref())
        });
        let dw = match &phases {
            Some(p) => p.weights_grad(&dw),
            None => dw,
        };
        grads.register::<CpuBackend>(id, primitive(dw, wd));
    }
}

/// `dL/db[o]`: the output gradient summed over images and pixels.
/// Channels in parallel, each plane in f32 lanes per chunk ([`super::norm::sums`]), the chunks
/// in f64 (summed one value at a time in f64 on one thread, it was 2% of a training step).
fn bias_grad(g: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
    let plane = h * w;
    (0..c)
        .into_par_iter()
        .map(|o| {
            let image = |i: usize| &g[(i * c + o) * plane..][..plane];
            let chunks = (0..n).flat_map(|i| image(i).chunks(super::norm::CHUNK));
            chunks.map(|chunk| super::norm::sums(chunk).0).sum::<f64>() as f32
        })
        .collect()
}

#[derive(Debug)]
struct ConvNoBias;

impl Backward<CpuBackend, 2> for ConvNoBias {
    type State = (NodeId, NodeId, Geometry);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w] = ops.parents;
        let (g, gd) = host(grads.consume::<CpuBackend>(&ops.node));
        let nodes = (node_x.map(|n| n.id), node_w.map(|n| n.id));
        input_weight_grads(nodes, ops.state, (&g, gd), grads, checkpointer);
    }
}

#[derive(Debug)]
struct ConvWithBias;

impl Backward<CpuBackend, 3> for ConvWithBias {
    type State = (NodeId, NodeId, Geometry);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w, node_b] = ops.parents;
        let (g, gd) = host(grads.consume::<CpuBackend>(&ops.node));
        if let Some(node) = node_b {
            let db = bias_grad(&g, gd);
            let t = Tensor::<CpuBackend, 1>::from_data(
                TensorData::new(db, [gd[1]]),
                &Default::default(),
            );
            grads.register::<CpuBackend>(node.id, t.into_primitive().tensor());
        }
        let nodes = (node_x.map(|n| n.id), node_w.map(|n| n.id));
        input_weight_grads(nodes, ops.state, (&g, gd), grads, checkpointer);
    }
}

/// Whether `B` is [`CpuAutodiff`].
pub fn is_cpu_autodiff<B: Backend>() -> bool {
    std::any::TypeId::of::<B>() == std::any::TypeId::of::<CpuAutodiff>()
}

/// Differentiable stride-1 or stride-2 convolution on [`CpuAutodiff`] (check [`is_cpu_autodiff`] and
/// [`super::conv::available`] first).
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    pad: usize,
    stride: usize,
) -> Tensor<B, 4> {
    assert!(
        stride == 1 || stride == 2,
        "conv2d_autodiff_applies checks the stride"
    );
    let geometry = Geometry {
        pad,
        stride,
        depthwise: false,
    };
    node(x, weight, bias, geometry)
}

/// Differentiable stride-1 depthwise convolution (`weight` `[C, 1, k, k]` on `C` channels,
/// `pad < k`) on [`CpuAutodiff`] (check [`super::depthwise::host_applies`] first).
pub fn depthwise_conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    pad: usize,
) -> Tensor<B, 4> {
    let geometry = Geometry {
        pad,
        stride: 1,
        depthwise: true,
    };
    node(x, weight, bias, geometry)
}

/// The convolution node of `geometry`, with or without a bias.
fn node<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    geometry: Geometry,
) -> Tensor<B, 4> {
    let x: AdPrimitive = same_type(x.into_primitive().tensor());
    let w: AdPrimitive = same_type(weight.into_primitive().tensor());
    let b: Option<AdPrimitive> = bias.map(|b| same_type(b.into_primitive().tensor()));
    // A weight and bias that take no gradient (VGG19's; D's while G trains, which the plan
    // cache tells apart by their values).
    let untracked = |t: &AdPrimitive| t.node.requirement.is_none();
    let frozen = untracked(&w) && b.as_ref().is_none_or(untracked);
    let compute = |x: &AdPrimitive, w: &AdPrimitive, b: Option<&AdPrimitive>| {
        let (xv, xd) = view(&x.primitive);
        let (wv, wd) = view(&w.primitive);
        let bias = b.map(|b| {
            let t = Tensor::<CpuBackend, 1>::from_primitive(TensorPrimitive::Float(
                b.primitive.clone(),
            ));
            t.into_data().into_vec::<f32>().unwrap_or_default()
        });
        let (y, dims) = forward(&xv, xd, (&wv, wd), bias.as_deref(), geometry, frozen);
        primitive(y, dims)
    };
    let out = match &b {
        Some(b) => match ConvWithBias
            .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&w), geometry);
                prep.finish(state, compute(&x, &w, Some(b)))
            }
            OpsKind::UnTracked(prep) => prep.finish(compute(&x, &w, Some(b))),
        },
        None => match ConvNoBias
            .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&w), geometry);
                prep.finish(state, compute(&x, &w, None))
            }
            OpsKind::UnTracked(prep) => prep.finish(compute(&x, &w, None)),
        },
    };
    Tensor::from_primitive(TensorPrimitive::Float(same_type(out)))
}

/// LN over `(C, H, W)` of one image, then leaky ReLU (`slope`, if any): saved settings.
#[derive(Debug, Clone, Copy)]
struct LnSettings {
    epsilon: f64,
    slope: Option<f32>,
}

/// The per-image statistics `(mean, 1 / std)` from each image's mean and variance.
fn ln_stats(moments: &[(f64, f64)], epsilon: f64) -> Vec<(f64, f64)> {
    moments
        .iter()
        .map(|&(mean, var)| (mean, 1.0 / (var + epsilon).sqrt()))
        .collect()
}

/// One channel of LN's backward: `dy = dz`, times `slope` where `xh gamma + beta < 0`, written
/// over `dz`'s place in `dy`; returns `(sum dy xh, sum dy)` (f32 in 16 lanes, then f64).
fn dy_sums(
    dy: &mut [f32],
    x: &[f32],
    dz: &[f32],
    (mean, inv_std): (f32, f32),
    (gamma, beta): (f32, f32),
    slope: f32,
) -> (f64, f64) {
    const L: usize = 16;
    let step = |xv: f32, dzv: f32| {
        let xh = (xv - mean) * inv_std;
        let d = if xh * gamma + beta < 0.0 {
            dzv * slope
        } else {
            dzv
        };
        (d, xh)
    };
    let mut total = (0.0f64, 0.0f64);
    for ((dy, x), dz) in dy.chunks_mut(4096).zip(x.chunks(4096)).zip(dz.chunks(4096)) {
        let (mut s_xh, mut s_d) = ([0.0f32; L], [0.0f32; L]);
        let mut lanes = dy
            .chunks_exact_mut(L)
            .zip(x.chunks_exact(L))
            .zip(dz.chunks_exact(L));
        for ((out, xv), dzv) in lanes.by_ref() {
            for i in 0..L {
                let (d, xh) = step(xv[i], dzv[i]);
                out[i] = d;
                s_xh[i] += d * xh;
                s_d[i] += d;
            }
        }
        let done = dy.len() / L * L;
        for ((out, &xv), &dzv) in dy[done..].iter_mut().zip(&x[done..]).zip(&dz[done..]) {
            let (d, xh) = step(xv, dzv);
            *out = d;
            s_xh[0] += d * xh;
            s_d[0] += d;
        }
        total.0 += s_xh.iter().map(|&v| v as f64).sum::<f64>();
        total.1 += s_d.iter().map(|&v| v as f64).sum::<f64>();
    }
    total
}

#[derive(Debug)]
struct LayerNormAct;

impl Backward<CpuBackend, 3> for LayerNormAct {
    /// The input, gamma and beta; the settings; each image's mean and variance, from the
    /// forward (computing them again took a read of every activation: 1% of a CPU training
    /// step).
    type State = (NodeId, NodeId, NodeId, LnSettings, Arc<Vec<(f64, f64)>>);

    /// With `xh = (x - mean) / std`, `y = xh gamma + beta`, `z = leaky(y)`: `dy = dz` where
    /// `y >= 0`, `slope dz` elsewhere; `dgamma = sum dy xh`, `dbeta = sum dy`;
    /// `dx = (dxh - mean(dxh) - xh mean(dxh xh)) / std` with `dxh = dy gamma`, means over the
    /// image.
    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_g, node_b] = ops.parents;
        let (dz, dims) = host(grads.consume::<CpuBackend>(&ops.node));
        let (x_state, g_state, b_state, settings, moments) = ops.state;
        let x = checkpointer.retrieve_node_output::<Primitive>(x_state);
        let (x, _) = view(&x);
        let gamma = host_1d(checkpointer.retrieve_node_output::<Primitive>(g_state));
        let beta = host_1d(checkpointer.retrieve_node_output::<Primitive>(b_state));
        let [_, c, h, w] = dims;
        let (plane, image) = (h * w, c * h * w);
        let stats = ln_stats(&moments, settings.epsilon);
        let slope = settings.slope.unwrap_or(1.0);
        let mut dx = vec![0.0f32; x.len()];
        let mut dgamma = vec![0.0f64; c];
        let mut dbeta = vec![0.0f64; c];
        for (n, &(mean, inv_std)) in stats.iter().enumerate() {
            let xs = &x[n * image..(n + 1) * image];
            let dzs = &dz[n * image..(n + 1) * image];
            let dxs = &mut dx[n * image..(n + 1) * image];
            // Per channel: dy (kept in dx for now), sum dy xh and sum dy.
            let (m, inv) = (mean as f32, inv_std as f32);
            let sums: Vec<(f64, f64)> = dxs
                .par_chunks_mut(plane)
                .enumerate()
                .map(|(ch, dy)| {
                    let range = ch * plane..(ch + 1) * plane;
                    let affine = (gamma[ch], beta[ch]);
                    dy_sums(dy, &xs[range.clone()], &dzs[range], (m, inv), affine, slope)
                })
                .collect();
            let image_f = image as f64;
            let m1 = (sums.iter().enumerate())
                .map(|(ch, s)| gamma[ch] as f64 * s.1)
                .sum::<f64>()
                / image_f;
            let m2 = (sums.iter().enumerate())
                .map(|(ch, s)| gamma[ch] as f64 * s.0)
                .sum::<f64>()
                / image_f;
            for (ch, s) in sums.iter().enumerate() {
                dgamma[ch] += s.0;
                dbeta[ch] += s.1;
            }
            let (m1, m2) = (m1 as f32, m2 as f32);
            dxs.par_chunks_mut(plane).enumerate().for_each(|(ch, d)| {
                let g = gamma[ch];
                for (v, &xv) in d.iter_mut().zip(&xs[ch * plane..(ch + 1) * plane]) {
                    let xh = (xv - m) * inv;
                    *v = (*v * g - m1 - xh * m2) * inv;
                }
            });
        }
        let vector = |v: Vec<f64>| {
            let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
            let t =
                Tensor::<CpuBackend, 1>::from_data(TensorData::new(v, [c]), &Default::default());
            t.into_primitive().tensor()
        };
        if let Some(node) = node_x {
            grads.register::<CpuBackend>(node.id, primitive(dx, dims));
        }
        if let Some(node) = node_g {
            grads.register::<CpuBackend>(node.id, vector(dgamma));
        }
        if let Some(node) = node_b {
            grads.register::<CpuBackend>(node.id, vector(dbeta));
        }
    }
}

fn host_1d(p: Primitive) -> Vec<f32> {
    let t = Tensor::<CpuBackend, 1>::from_primitive(TensorPrimitive::Float(p));
    t.into_data().into_vec::<f32>().unwrap_or_default()
}

/// Differentiable LN over `(C, H, W)` of each image with per-channel `gamma`, `beta`, then the
/// leaky ReLU of `slope` if given, on [`CpuAutodiff`] (check [`is_cpu_autodiff`] first).
pub fn layer_norm<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
    slope: Option<f64>,
) -> Tensor<B, 4> {
    let x: AdPrimitive = same_type(x.into_primitive().tensor());
    let g: AdPrimitive = same_type(gamma.into_primitive().tensor());
    let b: AdPrimitive = same_type(beta.into_primitive().tensor());
    let settings = LnSettings {
        epsilon,
        slope: slope.map(|s| s as f32),
    };
    let compute = |x: &AdPrimitive, g: &AdPrimitive, b: &AdPrimitive| {
        let (mut values, dims) = host(x.primitive.clone());
        let gamma = host_1d(g.primitive.clone());
        let beta = host_1d(b.primitive.clone());
        let image = dims[1] * dims[2] * dims[3];
        let norm = (None, epsilon);
        let moments =
            super::norm::layer_norm_batch(&mut values, image, norm, &gamma, &beta, settings.slope);
        (primitive(values, dims), moments)
    };
    let out = match LayerNormAct
        .prepare::<NoCheckpointing>([x.node.clone(), g.node.clone(), b.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let (out, moments) = compute(&x, &g, &b);
            let state = (
                prep.checkpoint(&x),
                prep.checkpoint(&g),
                prep.checkpoint(&b),
                settings,
                Arc::new(moments),
            );
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(compute(&x, &g, &b).0),
    };
    Tensor::from_primitive(TensorPrimitive::Float(same_type(out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::conv2d as burn_conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::Distribution;

    fn max_rel(a: Tensor<CpuBackend, 4>, b: Tensor<CpuBackend, 4>) -> f32 {
        let scale: f32 = b.clone().abs().max().into_scalar();
        let diff: f32 = (a - b).abs().max().into_scalar();
        diff / scale.max(1e-12)
    }

    #[test]
    fn gradients_match_burns_convolution() {
        if !super::super::conv::available() {
            eprintln!("no AVX-512 or AVX2 here: not tested");
            return;
        }
        let device = Default::default();
        for &(n, c_in, c_out, h, w, k, stride) in &[
            (2, 5, 9, 7, 19, 3, 1),
            (1, 3, 4, 9, 50, 7, 1),
            (2, 6, 3, 4, 5, 1, 1),
            (2, 5, 6, 8, 10, 3, 2),
            (1, 3, 4, 9, 7, 3, 2),
        ] {
            let pad = k / 2;
            let out = |n: usize| (n + 2 * pad - k) / stride + 1;
            let x0 = Tensor::<CpuAutodiff, 4>::random(
                [n, c_in, h, w],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let w0 = Tensor::<CpuAutodiff, 4>::random(
                [c_out, c_in, k, k],
                Distribution::Normal(0.0, 0.3),
                &device,
            );
            let r = Tensor::<CpuAutodiff, 4>::random(
                [n, c_out, out(h), out(w)],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let b0 =
                Tensor::<CpuAutodiff, 1>::random([c_out], Distribution::Normal(0.0, 1.0), &device);
            let run = |ours: bool| {
                let x = x0.clone().detach().require_grad();
                let wt = w0.clone().detach().require_grad();
                let b = (k != 7).then(|| b0.clone().detach().require_grad());
                let y = if ours {
                    conv2d(x.clone(), wt.clone(), b.clone(), pad, stride)
                } else {
                    let options = ConvOptions::new([stride; 2], [pad, pad], [1, 1], 1);
                    burn_conv2d(x.clone(), wt.clone(), b.clone(), options)
                };
                let grads = (y.clone() * r.clone()).sum().backward();
                let db = b.map(|b| b.grad(&grads).unwrap().reshape([1, c_out, 1, 1]));
                let db = db.unwrap_or_else(|| Tensor::zeros([1, c_out, 1, 1], &device));
                (
                    y.inner(),
                    x.grad(&grads).unwrap(),
                    wt.grad(&grads).unwrap(),
                    db,
                )
            };
            let (y1, dx1, dw1, db1) = run(true);
            let (y2, dx2, dw2, db2) = run(false);
            for (what, a, b) in [
                ("y", y1, y2),
                ("dx", dx1, dx2),
                ("dw", dw1, dw2),
                ("db", db1, db2),
            ] {
                let err = max_rel(a, b);
                assert!(
                    err < 1e-5,
                    "k={k} stride={stride} {what}: relative error {err}"
                );
            }
        }
    }

    /// A weight that takes no gradient (VGG19's) has its plans kept ([`plans`]): the output
    /// and the input gradient still follow the weight's values when they change.
    #[test]
    fn frozen_weights_kept_plans_follow_their_values() {
        if !super::super::conv::available() {
            eprintln!("no AVX-512 or AVX2 here: not tested");
            return;
        }
        let device = Default::default();
        // Shapes no other test uses, so the plans kept are this test's.
        // Without a bias the forward's plan and the input gradient's differ by their use alone.
        let cases = [
            (1, [6, 10, 13, 17], false),
            (2, [6, 10, 14, 18], false),
            (2, [5, 9, 8, 8], true),
        ];
        for (stride, [c_in, c_out, h, w], with_bias) in cases {
            let normal = |dims: [usize; 4], std: f64| {
                Tensor::<CpuAutodiff, 4>::random(dims, Distribution::Normal(0.0, std), &device)
            };
            let x0 = normal([2, c_in, h, w], 1.0);
            let b = Tensor::<CpuAutodiff, 1>::random([c_out], Distribution::Default, &device);
            let run = |weight: &Tensor<CpuAutodiff, 4>, ours: bool| {
                let x = x0.clone().detach().require_grad();
                let (wt, bias) = (
                    weight.clone().detach(),
                    with_bias.then(|| b.clone().detach()),
                );
                let y = if ours {
                    conv2d(x.clone(), wt, bias, 1, stride)
                } else {
                    let options = ConvOptions::new([stride; 2], [1, 1], [1, 1], 1);
                    burn_conv2d(x.clone(), wt, bias, options)
                };
                let grads = (y.clone() * y.clone()).sum().backward();
                (y.inner(), x.grad(&grads).unwrap())
            };
            let weights = [
                normal([c_out, c_in, 3, 3], 0.3),
                normal([c_out, c_in, 3, 3], 0.3),
            ];
            // Three uses of the first weight (the second keeps its plans, the third reads
            // them), then two of the second.
            for weight in [0, 0, 0, 1, 1].map(|i| &weights[i]) {
                let ((y1, dx1), (y2, dx2)) = (run(weight, true), run(weight, false));
                for (what, err) in [("y", max_rel(y1, y2)), ("dx", max_rel(dx1, dx2))] {
                    assert!(err < 1e-5, "stride {stride} {what}: relative error {err}");
                }
            }
        }
    }

    #[test]
    fn layer_norm_gradients_match_burns_ops() {
        let device = Default::default();
        let x0 =
            Tensor::<CpuAutodiff, 4>::random([2, 3, 5, 7], Distribution::Normal(0.5, 2.0), &device);
        let g0 = Tensor::<CpuAutodiff, 1>::random([3], Distribution::Normal(1.0, 0.5), &device);
        let b0 = Tensor::<CpuAutodiff, 1>::random([3], Distribution::Normal(0.0, 0.5), &device);
        let r =
            Tensor::<CpuAutodiff, 4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 1.0), &device);
        for slope in [None, Some(0.2)] {
            let run = |ours: bool| {
                let x = x0.clone().detach().require_grad();
                let g = g0.clone().detach().require_grad();
                let b = b0.clone().detach().require_grad();
                let y = if ours {
                    layer_norm(x.clone(), g.clone(), b.clone(), 1e-5, slope)
                } else {
                    let flat = x.clone().reshape([2, 105]);
                    let (var, mean) = flat.clone().var_mean_bias(1);
                    let normed = ((flat - mean) / (var + 1e-5).sqrt()).reshape([2, 3, 5, 7]);
                    let y =
                        normed * g.clone().reshape([1, 3, 1, 1]) + b.clone().reshape([1, 3, 1, 1]);
                    match slope {
                        Some(s) => burn::tensor::activation::leaky_relu(y, s),
                        None => y,
                    }
                };
                let grads = (y.clone() * r.clone()).sum().backward();
                let dg = g.grad(&grads).unwrap().reshape([1, 3, 1, 1]);
                let db = b.grad(&grads).unwrap().reshape([1, 3, 1, 1]);
                (y.inner(), x.grad(&grads).unwrap(), dg, db)
            };
            let (y1, dx1, dg1, db1) = run(true);
            let (y2, dx2, dg2, db2) = run(false);
            for (what, a, b) in [
                ("y", y1, y2),
                ("dx", dx1, dx2),
                ("dgamma", dg1, dg2),
                ("dbeta", db1, db2),
            ] {
                let err = max_rel(a, b);
                assert!(err < 1e-4, "{slope:?} {what}: relative error {err}");
            }
        }
    }
}
