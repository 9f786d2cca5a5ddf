//! Nearest x2 upsampling folded into the 3x3 convolution after it (Fig. 10's `Upsample_n`, then
//! `Conv 3x3`): the convolution of the upsampled image, computed on the small one phase by phase.
//!
//! With `u[2i + a] = x[i]` along each axis (`a` in {0, 1}) and one pixel of padding, output pixel
//! `y[o, 2i + a, 2j + b] = sum over c, ky, kx of w[o, c, ky, kx] u[2i + a + ky - 1, 2j + b + kx - 1]`
//! reads `x` at row `i + floor((a + ky - 1) / 2)`: rows `i - 1, i, i` for `ky = 0, 1, 2` when
//! `a = 0`, and `i, i, i + 1` when `a = 1`. So each of the four sub-pixel phases `(a, b)` is a 2x2
//! convolution of `x` padded by one pixel, with the taps that land on the same pixel summed:
//!
//! ```text
//! w_ab = R_a w R_b^T,   R_0 = [1 0 0]   R_1 = [1 1 0]
//!                             [0 1 1]         [0 0 1]
//! y[o, 2i + a, 2j + b] = z[(a, b, o), i + a, j + b],   z = conv2x2(pad(x, 1), w_ab for all phases)
//! ```
//!
//! `z` is one convolution with `4 C_out` outputs over `(H + 1) x (W + 1)` pixels, and each phase
//! keeps its own `H x W` window of it. That is 16 multiply-adds per input channel, output channel
//! and input pixel where the upsampled image's convolution takes 36 (four output pixels of
//! nine), and the upsampled input (the largest activation of G: 128 channels at full
//! resolution, before `up2`) is never written. Zero padding of `u` is zero padding of `x`;
//! reflection padding of `u` by one pixel is edge padding of `x` (`u[-1] = u[1] = x[0]`), which
//! the caller applies. The output equals the upsampled image's convolution up to the rounding of
//! the summed taps.

use std::any::TypeId;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::PadMode;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use super::{float_tensor, host_slice, same_type};
#[cfg(feature = "flex")]
use crate::device::CpuBackend;
use crate::device::{is_cpu_backend, Selected, SelectedAutodiff};

/// `R_a[d][k]`: whether tap `k` (0..3) of the 3x3 kernel lands on row `d` (0..2) of phase `a`'s
/// 2x2 window.
const R: [[[f32; 3]; 2]; 2] = [
    [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]],
    [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
];

/// The map from a 3x3 kernel's taps `(ky, kx)` to the four phases' 2x2 taps `(a, b, dy, dx)`,
/// row-major `[9, 16]`.
fn tap_map() -> Vec<f32> {
    let mut map = vec![0.0f32; 9 * 16];
    for (ky, kx) in (0..3).flat_map(|ky| (0..3).map(move |kx| (ky, kx))) {
        for (a, b, dy, dx) in (0..16).map(|p| (p >> 3, (p >> 2) & 1, (p >> 1) & 1, p & 1)) {
            map[(ky * 3 + kx) * 16 + ((a * 2 + b) * 2 + dy) * 2 + dx] = R[a][dy][ky] * R[b][dx][kx];
        }
    }
    map
}

/// The four phases' kernels of a 3x3 `weight`, stacked phase-major.
///
/// # Shapes
/// `[C_out, C_in, 3, 3]` -> `[4 C_out, C_in, 2, 2]`, output channel `(a * 2 + b) * C_out + o`.
pub fn phase_weights<B: Backend>(weight: Tensor<B, 4>) -> Tensor<B, 4> {
    let [c_out, c_in, kh, kw] = weight.dims();
    assert_eq!([kh, kw], [3, 3], "sub-pixel phases are of a 3x3 kernel");
    let map = Tensor::<B, 2>::from_data(TensorData::new(tap_map(), [9, 16]), &weight.device());
    weight
        .reshape([c_out * c_in, 9])
        .matmul(map)
        .reshape([c_out, c_in, 4, 4])
        .permute([2, 0, 1, 3])
        .reshape([4 * c_out, c_in, 2, 2])
}

/// The bias of the stacked phases: `bias` once per phase.
///
/// # Shapes
/// `[C_out]` -> `[4 C_out]`.
pub fn phase_bias<B: Backend>(bias: Tensor<B, 1>) -> Tensor<B, 1> {
    let [c_out] = bias.dims();
    bias.reshape([1, c_out])
        .repeat_dim(0, 4)
        .reshape([4 * c_out])
}

/// The upsampled image's convolution from the phases' `z`: each phase's `H x W` window, at
/// offset `(a, b)`, interleaved. Under autodiff one node (`interleave_node`).
///
/// # Shapes
/// `[N, 4 C_out, H + 1, W + 1]` -> `[N, C_out, 2H, 2W]`.
pub fn interleave<B: Backend>(z: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c4, h1, w1] = z.dims();
    let dims = [n, c4 / 4, h1 - 1, w1 - 1];
    if is_cpu_backend::<B>() {
        return on_host(
            z,
            |values| interleave_host(values, dims),
            [n, dims[1], 2 * dims[2], 2 * dims[3]],
        );
    }
    if TypeId::of::<B>() == TypeId::of::<SelectedAutodiff>() {
        return same_type(interleave_node::<Selected>(same_type(z)));
    }
    #[cfg(feature = "flex")]
    if TypeId::of::<B>() == TypeId::of::<Autodiff<CpuBackend>>() {
        return same_type(interleave_node::<CpuBackend>(same_type(z)));
    }
    interleave_ops(z)
}

/// [`interleave`] by burn's ops: four windows, stacked twice.
fn interleave_ops<B: Backend>(z: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c4, h1, w1] = z.dims();
    let (c_out, h, w) = (c4 / 4, h1 - 1, w1 - 1);
    let phase = |a: usize, b: usize| {
        z.clone()
            .narrow(1, (a * 2 + b) * c_out, c_out)
            .narrow(2, a, h)
            .narrow(3, b, w)
    };
    let row = |a: usize| Tensor::<B, 4>::stack::<5>(vec![phase(a, 0), phase(a, 1)], 4);
    Tensor::<B, 5>::stack::<6>(vec![row(0), row(1)], 3).reshape([n, c_out, 2 * h, 2 * w])
}

/// The gradient of [`interleave`]'s input from its output's `g`: each phase's pixels at its
/// offset, zero on the row and column of `z` the phase does not read.
///
/// # Shapes
/// `[N, C_out, 2H, 2W]` -> `[N, 4 C_out, H + 1, W + 1]`.
fn deinterleave<B: Backend>(g: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c_out, h2, w2] = g.dims();
    let dims = [n, c_out, h2 / 2, w2 / 2];
    if is_cpu_backend::<B>() {
        let out = [n, 4 * c_out, dims[2] + 1, dims[3] + 1];
        return on_host(g, |values| deinterleave_host(values, dims), out);
    }
    deinterleave_ops(g)
}

/// [`deinterleave`] by burn's ops: the phases split off by a reshape, each padded to its
/// offset.
fn deinterleave_ops<B: Backend>(g: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c_out, h2, w2] = g.dims();
    let (h, w) = (h2 / 2, w2 / 2);
    let phases = g
        .reshape([n, c_out, h, 2, w, 2])
        .permute([0, 3, 5, 1, 2, 4])
        .reshape([n, 4 * c_out, h, w]);
    let padded = (0..4)
        .map(|p| {
            let (a, b) = (p / 2, p % 2);
            phases
                .clone()
                .narrow(1, p * c_out, c_out)
                .pad([(a, 1 - a), (b, 1 - b)], PadMode::Constant(0.0))
        })
        .collect();
    Tensor::cat(padded, 1)
}

/// Marker of the [`interleave`] node.
#[derive(Debug)]
struct Interleave;

impl<B: Backend> Backward<B, 1> for Interleave {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = float_tensor::<B, 4>(grads.consume::<B>(&ops.node));
        if let [Some(node)] = ops.parents {
            grads.register::<B>(node.id, deinterleave(g).into_primitive().tensor());
        }
    }
}

/// [`interleave`] as one node of burn's autodiff: the forward on the inner backend, the backward
/// [`deinterleave`]. Through burn's ops each of the four windows' backward would write a
/// zero-filled copy of all of `z`, and the two stacks' backward would cut the gradient again.
fn interleave_node<B: Backend>(z: Tensor<Autodiff<B>, 4>) -> Tensor<Autodiff<B>, 4> {
    let z = z.into_primitive().tensor();
    let out = interleave(float_tensor::<B, 4>(z.primitive.clone()))
        .into_primitive()
        .tensor();
    let node = Interleave
        .prepare::<NoCheckpointing>([z.node.clone()])
        .compute_bound()
        .stateless(out);
    float_tensor::<Autodiff<B>, 4>(node)
}

/// `f` on the values of `t` (a CPU backend's tensor), its result of `dims` on `t`'s device.
fn on_host<B: Backend>(
    t: Tensor<B, 4>,
    f: impl FnOnce(&[f32]) -> Vec<f32>,
    dims: [usize; 4],
) -> Tensor<B, 4> {
    let device = t.device();
    let values = host_slice(t);
    Tensor::from_data(TensorData::new(f(&values), dims), &device)
}

/// [`interleave`] on host values, `[n, c_out, h, w]` the output's dimensions before doubling.
fn interleave_host(z: &[f32], [n, c_out, h, w]: [usize; 4]) -> Vec<f32> {
    let (h1, w1) = (h + 1, w + 1);
    let mut out = vec![0.0f32; n * c_out * 4 * h * w];
    out.par_chunks_mut(4 * h * w)
        .enumerate()
        .for_each(|(plane, dst)| {
            let (image, o) = (plane / c_out, plane % c_out);
            let source = |a: usize, b: usize| {
                let channel = image * 4 * c_out + (a * 2 + b) * c_out + o;
                &z[channel * h1 * w1..(channel + 1) * h1 * w1]
            };
            for a in 0..2 {
                let (left, right) = (source(a, 0), source(a, 1));
                for i in 0..h {
                    let row = &mut dst[(2 * i + a) * 2 * w..(2 * i + a + 1) * 2 * w];
                    let (l, r) = (&left[(i + a) * w1..], &right[(i + a) * w1 + 1..]);
                    for (j, pair) in row.chunks_exact_mut(2).enumerate() {
                        pair[0] = l[j];
                        pair[1] = r[j];
                    }
                }
            }
        });
    out
}

/// [`deinterleave`] on host values, `[n, c_out, h, w]` the output's dimensions before doubling.
fn deinterleave_host(g: &[f32], [n, c_out, h, w]: [usize; 4]) -> Vec<f32> {
    let (h1, w1) = (h + 1, w + 1);
    let mut out = vec![0.0f32; n * 4 * c_out * h1 * w1];
    out.par_chunks_mut(h1 * w1)
        .enumerate()
        .for_each(|(channel, dst)| {
            let (image, rest) = (channel / (4 * c_out), channel % (4 * c_out));
            let (phase, o) = (rest / c_out, rest % c_out);
            let (a, b) = (phase / 2, phase % 2);
            let plane = &g[(image * c_out + o) * 4 * h * w..][..4 * h * w];
            for i in 0..h {
                let row = &plane[(2 * i + a) * 2 * w..][..2 * w];
                let target = &mut dst[(i + a) * w1 + b..][..w];
                for (t, pair) in target.iter_mut().zip(row.chunks_exact(2)) {
                    *t = pair[b];
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_values::{direct_conv, values};
    use super::*;
    use crate::kernels::conv::ConvShape;
    use burn::backend::Autodiff;
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;

    type B = crate::device::CpuBackend;

    /// Nearest x2 upsampling of `[c, h, w]` host values.
    fn upsample(x: &[f32], [c, h, w]: [usize; 3]) -> Vec<f32> {
        let mut out = vec![0.0; c * 4 * h * w];
        for ch in 0..c {
            for y in 0..2 * h {
                for xx in 0..2 * w {
                    out[(ch * 2 * h + y) * 2 * w + xx] = x[(ch * h + y / 2) * w + xx / 2];
                }
            }
        }
        out
    }

    /// The phases' output (by burn's convolution) on backend `Bk`, `[1, c_out, 2h, 2w]` values.
    fn phases_output<Bk: Backend>(
        x: Vec<f32>,
        weight: Vec<f32>,
        bias: Vec<f32>,
        [c_in, c_out, h, w]: [usize; 4],
    ) -> Vec<f32> {
        let device = Default::default();
        let x = Tensor::<Bk, 4>::from_data(TensorData::new(x, [1, c_in, h, w]), &device);
        let weight =
            Tensor::<Bk, 4>::from_data(TensorData::new(weight, [c_out, c_in, 3, 3]), &device);
        let bias = Tensor::<Bk, 1>::from_data(TensorData::new(bias, [c_out]), &device);
        let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let z = conv2d(x, phase_weights(weight), Some(phase_bias(bias)), options);
        let y = interleave(z);
        assert_eq!(y.dims(), [1, c_out, 2 * h, 2 * w]);
        y.into_data().into_vec::<f32>().unwrap()
    }

    /// The phases' output against the upsampled image's 3x3 convolution by direct summation in
    /// f64, at odd and even sizes, on the CPU backend and under autodiff (the node).
    #[test]
    fn phases_equal_the_upsampled_convolution() {
        for (c_in, c_out, h, w) in [(3, 2, 1, 1), (4, 5, 3, 6), (6, 3, 5, 4)] {
            let x = values(c_in * h * w, 7);
            let weight = values(c_out * c_in * 9, 11);
            let bias = values(c_out, 13);
            let up = ConvShape {
                c_in,
                c_out,
                h: 2 * h,
                w: 2 * w,
                k: 3,
                pad: 1,
            };
            let expected = direct_conv(&upsample(&x, [c_in, h, w]), &weight, Some(&bias), &up);
            let dims = [c_in, c_out, h, w];
            let host = phases_output::<B>(x.clone(), weight.clone(), bias.clone(), dims);
            let ops = phases_output::<Autodiff<B>>(x, weight, bias, dims);
            for (i, ((g, o), e)) in host.iter().zip(&ops).zip(&expected).enumerate() {
                assert!((g - e).abs() < 1e-5, "{c_in}x{h}x{w} value {i}: {g} vs {e}");
                assert!(
                    (o - e).abs() < 1e-5,
                    "{c_in}x{h}x{w} value {i} (ops): {o} vs {e}"
                );
            }
        }
    }

    /// Gradients through the phases (summed taps, windows, interleave) equal those through the
    /// upsampled image's convolution, for the input, the weight and the bias.
    #[test]
    fn phases_have_the_upsampled_convolutions_gradients() {
        type A = Autodiff<B>;
        let device = Default::default();
        let [c_in, c_out, h, w] = [3, 4, 5, 6];
        let leaf = |v: Vec<f32>, shape: Vec<usize>| {
            Tensor::<A, 1>::from_data(
                TensorData::new(v, [shape.iter().product::<usize>()]),
                &device,
            )
            .require_grad()
        };
        let run = |phased: bool| {
            let x = leaf(values(c_in * h * w, 1), vec![c_in, h, w]);
            let weight = leaf(values(c_out * c_in * 9, 2), vec![c_out, c_in, 9]);
            let bias = leaf(values(c_out, 3), vec![c_out]);
            let x4 = x.clone().reshape([1, c_in, h, w]);
            let w4 = weight.clone().reshape([c_out, c_in, 3, 3]);
            let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
            let y = if phased {
                interleave(conv2d(
                    x4,
                    phase_weights(w4),
                    Some(phase_bias(bias.clone())),
                    options,
                ))
            } else {
                let up = x4
                    .reshape([1, c_in, h, 1, w, 1])
                    .expand([1, c_in, h, 2, w, 2])
                    .reshape([1, c_in, 2 * h, 2 * w]);
                conv2d(up, w4, Some(bias.clone()), options)
            };
            // A loss whose gradient differs from pixel to pixel.
            let target = Tensor::<A, 4>::from_data(
                TensorData::new(values(c_out * 4 * h * w, 4), [1, c_out, 2 * h, 2 * w]),
                &device,
            );
            let grads = (y * target).sum().backward();
            [x, weight, bias].map(|t| {
                t.grad(&grads)
                    .unwrap()
                    .into_data()
                    .into_vec::<f32>()
                    .unwrap()
            })
        };
        let (phased, plain) = (run(true), run(false));
        for (name, (p, q)) in ["input", "weight", "bias"]
            .iter()
            .zip(phased.iter().zip(&plain))
        {
            for (i, (a, b)) in p.iter().zip(q).enumerate() {
                assert!((a - b).abs() < 1e-4, "{name} gradient {i}: {a} vs {b}");
            }
        }
    }

    /// The host interleave against its definition, `y[o, 2i + a, 2j + b] = z[(a, b, o), i + a,
    /// j + b]`, over two images.
    #[test]
    fn host_interleave_takes_each_phase_at_its_offset() {
        let [n, c_out, h, w] = [2, 3, 4, 5];
        let z = values(n * 4 * c_out * (h + 1) * (w + 1), 3);
        let y = interleave_host(&z, [n, c_out, h, w]);
        for (index, &value) in y.iter().enumerate() {
            let (xx, rest) = (index % (2 * w), index / (2 * w));
            let (yy, rest) = (rest % (2 * h), rest / (2 * h));
            let (o, image) = (rest % c_out, rest / c_out);
            let (a, b) = (yy % 2, xx % 2);
            let channel = image * 4 * c_out + (a * 2 + b) * c_out + o;
            let source = (channel * (h + 1) + yy / 2 + a) * (w + 1) + xx / 2 + b;
            assert_eq!(value, z[source], "output {index}");
        }
    }

    /// burn's-ops versions (the GPU's) equal the host ones, both ways.
    #[test]
    fn ops_equal_the_host_loops() {
        let device = Default::default();
        let [n, c_out, h, w] = [2, 3, 4, 5];
        let z = values(n * 4 * c_out * (h + 1) * (w + 1), 5);
        let g = values(n * c_out * 4 * h * w, 6);
        let zt = Tensor::<B, 4>::from_data(
            TensorData::new(z.clone(), [n, 4 * c_out, h + 1, w + 1]),
            &device,
        );
        let gt = Tensor::<B, 4>::from_data(
            TensorData::new(g.clone(), [n, c_out, 2 * h, 2 * w]),
            &device,
        );
        let forward = interleave_ops(zt).into_data().into_vec::<f32>().unwrap();
        assert_eq!(forward, interleave_host(&z, [n, c_out, h, w]));
        let backward = deinterleave_ops(gt).into_data().into_vec::<f32>().unwrap();
        assert_eq!(backward, deinterleave_host(&g, [n, c_out, h, w]));
    }

    /// The backward is the forward's adjoint: `<interleave(z), g> = <z, deinterleave(g)>`, and
    /// it leaves zero what no phase reads.
    #[test]
    fn deinterleave_is_the_adjoint() {
        let [n, c_out, h, w] = [2, 3, 4, 5];
        let z = values(n * 4 * c_out * (h + 1) * (w + 1), 8);
        let g = values(n * c_out * 4 * h * w, 9);
        let dot = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| *x as f64 * *y as f64)
                .sum::<f64>()
        };
        let dz = deinterleave_host(&g, [n, c_out, h, w]);
        let (left, right) = (
            dot(&interleave_host(&z, [n, c_out, h, w]), &g),
            dot(&z, &dz),
        );
        assert!(
            (left - right).abs() < 1e-9 * left.abs().max(1.0),
            "{left} vs {right}"
        );
        // Phase (0, 0) never reads z's last row.
        let last_row = &dz[h * (w + 1)..(h + 1) * (w + 1)];
        assert!(last_row.iter().all(|&v| v == 0.0));
    }
}
