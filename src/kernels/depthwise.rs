//! Depthwise convolution (one `k x k` filter per channel, the ResBlocks' 3x3 of G) as a sum of
//! `k*k` shifted copies of the input, each scaled per channel, in burn's generic tensor ops:
//! for training on the GPU backends. burn 0.21's backward of a grouped convolution computes the
//! weight gradient group by group: 128 convolutions per depthwise layer, 512 of 1.42 ms each
//! per G pass at 256x256, batch 8, on an H200 (65% of a training iteration, CubeCL profile in
//! `docs/performance.md`). Through these ops burn's autodiff gives the weight gradient as one
//! reduction per tap and the input gradient as one assignment per tap.

use burn::tensor::backend::Backend;
use burn::tensor::{s, Tensor};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::CpuBackend;
    use crate::kernels::im2col::tests::{max_diff, random};
    use burn::backend::Autodiff;
    use burn::tensor::module::conv2d as burn_conv2d;
    use burn::tensor::ops::ConvOptions;

    type AD = Autodiff<CpuBackend>;

    /// Output and input, weight and bias gradients equal burn's grouped convolution's, at
    /// G's 3x3 stride 1 and at 3x3 and 5x5 stride 2 over odd sizes.
    #[test]
    fn matches_burns_grouped_convolution() {
        for (shape, k, pad, stride) in [
            ([2, 4, 9, 11], 3, 1, 1),
            ([1, 3, 13, 8], 3, 1, 2),
            ([2, 2, 11, 7], 5, 2, 2),
        ] {
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
                    conv2d(xa.clone(), wa.clone(), b, pad, stride)
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
}
