//! Depthwise convolution (one `k x k` filter per channel, the ResBlocks' 3x3 of G) as a sum of
//! `k*k` shifted copies of the input, each scaled per channel, in burn's generic tensor ops:
//! for training on the GPU backends. burn 0.21's backward of a grouped convolution computes the
//! weight gradient group by group: 128 convolutions per depthwise layer, 512 of 1.42 ms each
//! per G pass at 256x256, batch 8, on an H200 (65% of a training iteration, CubeCL profile in
//! `docs/performance.md`). Through these ops burn's autodiff gives the weight gradient as one
//! reduction per tap and the input gradient as one assignment per tap.

use burn::tensor::backend::Backend;
use burn::tensor::{s, Tensor, TensorData};

use super::im2col::{out_size, pad_zeros};

/// Depthwise convolution with zero padding `pad` and `stride`.
///
/// # Shapes
/// `x` `[N, C, H, W]`, `weight` `[C, 1, k, k]`, `bias` `[C]` ->
/// `[N, C, (H + 2 pad - k) / stride + 1, (W + 2 pad - k) / stride + 1]`.
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    pad: usize,
    stride: usize,
) -> Tensor<B, 4> {
    let [c, _, k, _] = weight.dims();
    let x = pad_zeros(x, [pad; 2]);
    let [out_h, out_w] = out_size(&x, [k; 2], stride);
    let span = |start: usize, count: usize| start..start + (count - 1) * stride + 1;
    // Tap-major `[k*k, C]`, one row per tap: with a column of `[C, k*k]` per tap instead,
    // burn's fused element-wise kernels on Vulkan (lavapipe) read the scales wrongly once all
    // nine taps are summed (0.16 relative error; four taps, or rows, exact).
    let taps = weight.reshape([c, k * k]).swap_dims(0, 1);
    let out = (0..k * k)
        .map(|tap| {
            let (ky, kx) = (tap / k, tap % k);
            let shifted = x
                .clone()
                .slice(s![.., .., span(ky, out_h);stride, span(kx, out_w);stride]);
            let scale = taps
                .clone()
                .slice(s![tap..tap + 1, ..])
                .reshape([1, c, 1, 1]);
            shifted * scale
        })
        .reduce(|a, b| a + b)
        .expect("a kernel has at least one tap");
    match bias {
        Some(bias) => out + bias.reshape([1, c, 1, 1]),
        None => out,
    }
}

/// Host kernels of the stride-1 depthwise convolution with zero padding, for the CPU backends
/// (inference, and `Autodiff<CpuBackend>`'s convolution node, `super::autodiff`). burn-flex
/// runs a grouped convolution's input gradient as a transposed convolution on one thread and
/// its weight gradient group by group: 4% of a CPU training step for G's eight 3x3 layers
/// (`docs/performance.md`, session 25). Here every plane is one task, each tap a
/// multiply-add of whole row segments.
pub mod host {
    use rayon::prelude::*;

    /// Sizes of one problem: `k x k` kernel, `pad` zeros on each side, stride 1.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct Shape {
        /// Images.
        pub n: usize,
        /// Channels (in = out: one filter each).
        pub c: usize,
        /// Input height.
        pub h: usize,
        /// Input width.
        pub w: usize,
        /// Kernel side.
        pub k: usize,
        /// Zero padding on each side.
        pub pad: usize,
    }

    impl Shape {
        /// Output height and width: `H + 2 pad - k + 1`.
        pub fn out_size(&self) -> [usize; 2] {
            [
                self.h + 2 * self.pad + 1 - self.k,
                self.w + 2 * self.pad + 1 - self.k,
            ]
        }

        /// The input gradient's problem: the output gradient correlated with the flipped
        /// kernel, padded by `k - 1 - pad` (`pad < k`).
        fn transposed(&self) -> Shape {
            let [h, w] = self.out_size();
            Shape {
                h,
                w,
                pad: self.k - 1 - self.pad,
                ..*self
            }
        }
    }

    /// `y[n, c] = bias[c] + sum over ky, kx of w[c, ky, kx] xpad[n, c, y + ky, x + kx]`.
    ///
    /// # Shapes
    /// `x` `[N, C, H, W]`, `weight` `[C, 1, k, k]`, `bias` `[C]` -> `[N, C, H_out, W_out]`.
    pub fn forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: &Shape) -> Vec<f32> {
        let [oh, ow] = s.out_size();
        let (plane, taps) = (s.h * s.w, s.k * s.k);
        let mut y = vec![0.0f32; s.n * s.c * oh * ow];
        if y.is_empty() {
            return y;
        }
        y.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(plane))
            .enumerate()
            .for_each(|(i, (out, x))| {
                let c = i % s.c;
                out.fill(bias.map_or(0.0, |b| b[c]));
                for (ky, kx, from, to, len) in overlaps(s) {
                    let tap = weight[c * taps + ky * s.k + kx];
                    for (out_row, y_in) in out.chunks_exact_mut(ow).zip(rows(ky, s)) {
                        let Some(y_in) = y_in else { continue };
                        let src = &x[y_in * s.w + from..][..len];
                        for (o, v) in out_row[to..to + len].iter_mut().zip(src) {
                            *o += tap * v;
                        }
                    }
                }
            });
        y
    }

    /// The input gradient from the output gradient `g`: [`forward`] of `g` with each kernel
    /// flipped.
    pub fn input_grad(g: &[f32], weight: &[f32], s: &Shape) -> Vec<f32> {
        let taps = s.k * s.k;
        let flipped: Vec<f32> = weight
            .chunks(taps)
            .flat_map(|kernel| kernel.iter().rev().copied())
            .collect();
        forward(g, &flipped, None, &s.transposed())
    }

    /// `dW[c, ky, kx] = sum over n, y, x of g[n, c, y, x] xpad[n, c, y + ky, x + kx]`, each
    /// row's products summed in f32, the rows in f64.
    ///
    /// # Shapes
    /// `x` `[N, C, H, W]`, `g` `[N, C, H_out, W_out]` -> `[C, 1, k, k]`.
    pub fn weight_grad(x: &[f32], g: &[f32], s: &Shape) -> Vec<f32> {
        let [oh, ow] = s.out_size();
        let (plane, out_plane, taps) = (s.h * s.w, oh * ow, s.k * s.k);
        let mut dw = vec![0.0f32; s.c * taps];
        dw.par_chunks_mut(taps).enumerate().for_each(|(c, dw)| {
            let mut sums = vec![0.0f64; taps];
            for n in 0..s.n {
                let x = &x[(n * s.c + c) * plane..][..plane];
                let g = &g[(n * s.c + c) * out_plane..][..out_plane];
                for (ky, kx, from, to, len) in overlaps(s) {
                    for (g_row, y_in) in g.chunks_exact(ow).zip(rows(ky, s)) {
                        let Some(y_in) = y_in else { continue };
                        let src = &x[y_in * s.w + from..][..len];
                        let dot: f32 = g_row[to..to + len]
                            .iter()
                            .zip(src)
                            .map(|(a, b)| a * b)
                            .sum();
                        sums[ky * s.k + kx] += f64::from(dot);
                    }
                }
            }
            for (d, sum) in dw.iter_mut().zip(sums) {
                *d = sum as f32;
            }
        });
        dw
    }

    /// For every tap `(ky, kx)`: the input columns `from..from + len` that output columns
    /// `to..to + len` read (those inside the row), when there are any.
    fn overlaps(s: &Shape) -> impl Iterator<Item = (usize, usize, usize, usize, usize)> + '_ {
        let ow = s.out_size()[1];
        (0..s.k * s.k).filter_map(move |tap| {
            let (ky, kx) = (tap / s.k, tap % s.k);
            // Output column x reads input column x + kx - pad.
            let to = s.pad.saturating_sub(kx);
            let end = (s.w + s.pad).saturating_sub(kx).min(ow);
            (end > to).then(|| (ky, kx, to + kx - s.pad, to, end - to))
        })
    }

    /// For each output row, the input row that kernel row `ky` reads there, if inside.
    fn rows(ky: usize, s: &Shape) -> impl Iterator<Item = Option<usize>> + '_ {
        (0..s.out_size()[0]).map(move |y| (y + ky).checked_sub(s.pad).filter(|&r| r < s.h))
    }
}

/// Whether the host kernels ([`host`]) run this convolution on backend `B`: a depthwise one
/// (`groups` = `c_in` = `c_out`) at stride 1 with `pad < k`, on the CPU backend, plain or
/// under autodiff.
pub fn host_applies<B: Backend>(
    groups: usize,
    [c_in, c_out]: [usize; 2],
    [k, pad, stride]: [usize; 3],
) -> bool {
    let depthwise = groups > 1 && groups == c_in && c_out == c_in;
    depthwise && stride == 1 && pad < k && super::host_backend::<B>()
}

/// The depthwise convolution of [`host`] with zero padding `pad`, on a CPU backend (an
/// autodiff node under `Autodiff<CpuBackend>`). Check [`host_applies`] first.
///
/// # Shapes
/// `x` `[N, C, H, W]`, `weight` `[C, 1, k, k]`, `bias` `[C]` -> `[N, C, H + 2 pad - k + 1, ...]`.
pub fn host_conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    pad: usize,
) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    if super::autodiff::is_cpu_autodiff::<B>() {
        return super::autodiff::depthwise_conv2d(x, weight, bias, pad);
    }
    let (device, [n, c, h, w]) = (x.device(), x.dims());
    let k = weight.dims()[2];
    let s = host::Shape { n, c, h, w, k, pad };
    let bias = bias.map(super::host_slice);
    let y = host::forward(
        &super::host_slice(x),
        &super::host_slice(weight),
        bias.as_deref(),
        &s,
    );
    let [oh, ow] = s.out_size();
    Tensor::from_data(TensorData::new(y, [n, c, oh, ow]), &device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::CpuBackend;
    use crate::kernels::im2col::tests::{max_diff, random};
    use burn::backend::Autodiff;
    use burn::tensor::module::conv2d as burn_conv2d;
    use burn::tensor::ops::ConvOptions;

    type AD = Autodiff<CpuBackend>;

    /// A depthwise convolution of `x`, `weight`, `bias`, `pad`, `stride` under test.
    type Conv =
        fn(Tensor<AD, 4>, Tensor<AD, 4>, Option<Tensor<AD, 1>>, usize, usize) -> Tensor<AD, 4>;

    /// Output and input, weight and bias gradients of `conv` equal burn's grouped
    /// convolution's on each case `(x dims, k, pad, stride)`.
    fn assert_matches_burn(cases: &[([usize; 4], usize, usize, usize)], conv: Conv) {
        for &(shape, k, pad, stride) in cases {
            let c = shape[1];
            let x = random::<CpuBackend, 4>(shape);
            let weight = random::<CpuBackend, 4>([c, 1, k, k]);
            let bias = random::<CpuBackend, 1>([c]);
            let options = ConvOptions::new([stride; 2], [pad; 2], [1, 1], c);
            let upstream = random::<CpuBackend, 4>(
                burn_conv2d(x.clone(), weight.clone(), None, options.clone()).dims(),
            );
            let run = |ours: bool| {
                let xa = Tensor::<AD, 4>::from_inner(x.clone()).require_grad();
                let wa = Tensor::<AD, 4>::from_inner(weight.clone()).require_grad();
                let ba = Tensor::<AD, 1>::from_inner(bias.clone()).require_grad();
                let b = Some(ba.clone());
                let out = if ours {
                    conv(xa.clone(), wa.clone(), b, pad, stride)
                } else {
                    burn_conv2d(xa.clone(), wa.clone(), b, options.clone())
                };
                let up = Tensor::<AD, 4>::from_inner(upstream.clone());
                let grads = (out.clone() * up).sum().backward();
                [
                    out.inner(),
                    xa.grad(&grads).expect("x grad"),
                    wa.grad(&grads).expect("w grad"),
                    ba.grad(&grads).expect("b grad").reshape([1, 1, 1, c]),
                ]
            };
            let (ours, theirs) = (run(true), run(false));
            for (name, (a, b)) in ["output", "dx", "dW", "db"]
                .iter()
                .zip(ours.into_iter().zip(theirs))
            {
                assert_eq!(a.dims(), b.dims(), "{name} {shape:?} k{k} s{stride}");
                let diff = max_diff(a, b);
                assert!(diff < 1e-4, "{name} {shape:?} k{k} s{stride}: {diff}");
            }
        }
    }

    /// The composition of burn's ops, at G's 3x3 stride 1 and at 3x3 and 5x5 stride 2 over
    /// odd sizes.
    #[test]
    fn matches_burns_grouped_convolution() {
        let cases = [
            ([2, 4, 9, 11], 3, 1, 1),
            ([1, 3, 13, 8], 3, 1, 2),
            ([2, 2, 11, 7], 5, 2, 2),
        ];
        assert_matches_burn(&cases, conv2d);
    }

    /// The host kernels as `Autodiff<CpuBackend>`'s node: G's 3x3 with padding 1, no padding,
    /// a 5x5 with less padding than "same", one wider than the image.
    #[test]
    fn host_node_matches_burns_grouped_convolution() {
        let cases = [
            ([2, 4, 9, 11], 3, 1, 1),
            ([1, 3, 6, 5], 3, 0, 1),
            ([2, 2, 7, 8], 5, 1, 1),
            ([1, 2, 4, 3], 5, 2, 1),
        ];
        for &(shape, k, pad, stride) in &cases {
            assert!(host_applies::<AD>(
                shape[1],
                [shape[1]; 2],
                [k, pad, stride]
            ));
        }
        assert_matches_burn(&cases, |x, w, b, pad, _| host_conv2d(x, w, b, pad));
    }

    /// The plain CPU backend's forward by the host kernel, and what it does not take.
    #[test]
    fn host_forward_matches_burns_and_takes_only_depthwise_stride_1() {
        let (c, k, pad) = (3, 3, 1);
        let x = random::<CpuBackend, 4>([2, c, 10, 7]);
        let weight = random::<CpuBackend, 4>([c, 1, k, k]);
        let bias = random::<CpuBackend, 1>([c]);
        let options = ConvOptions::new([1; 2], [pad; 2], [1, 1], c);
        let theirs = burn_conv2d(x.clone(), weight.clone(), Some(bias.clone()), options);
        let ours = host_conv2d(x, weight, Some(bias), pad);
        assert!(max_diff(ours, theirs) < 1e-5);
        assert!(host_applies::<CpuBackend>(c, [c, c], [k, pad, 1]));
        assert!(!host_applies::<CpuBackend>(c, [c, c], [k, pad, 2]));
        assert!(!host_applies::<CpuBackend>(1, [c, c], [k, pad, 1]));
        assert!(!host_applies::<CpuBackend>(c, [c, 2 * c], [k, pad, 1]));
        assert!(!host_applies::<CpuBackend>(c, [c, c], [k, k, 1]));
    }
}
