//! The 2x2, stride-2 max-pool of VGG (between its blocks of convolutions) on the host, and as
//! one node of `Autodiff<CpuBackend>` whose backward routes each output's gradient to the
//! input pixel it took.
//!
//! burn-flex pools through its general 3-D pooling, one scalar window at a time, and keeps an
//! `i64` index per output for the backward: 3.5% of a CPU training step went there
//! (`docs/performance.md`, session 25). Here each output keeps the position of its maximum in
//! its window in one byte. As PyTorch (and burn): windows do not overhang (an odd last row or
//! column is dropped), ties go to the first pixel in row-major order, and a NaN in a window
//! makes its output NaN.

use burn::tensor::backend::Backend;
use burn::tensor::module::max_pool2d;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use super::host_slice;
use crate::device::is_cpu_backend;

/// The 2x2, stride-2 max-pool, on the host where the backend's tensors live there (inference
/// or training on the CPU), else burn's `max_pool2d`.
///
/// # Shapes
/// `[N, C, H, W]` -> `[N, C, H / 2, W / 2]`.
pub fn max_pool2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    if is_cpu_backend::<B>() {
        let device = x.device();
        let dims = x.dims();
        let (out, _) = forward(&host_slice(x), dims);
        return Tensor::from_data(TensorData::new(out, pooled(dims)), &device);
    }
    #[cfg(feature = "flex")]
    if super::autodiff::is_cpu_autodiff::<B>() {
        return super::same_type(node::max_pool2(super::same_type(x)));
    }
    max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false)
}

/// The output dimensions of `[N, C, H, W]`.
fn pooled([n, c, h, w]: [usize; 4]) -> [usize; 4] {
    [n, c, h / 2, w / 2]
}

/// The pooled values of `x` `[N, C, H, W]` and, for each, where in its window the maximum
/// was (`2 dy + dx`).
fn forward(x: &[f32], dims: [usize; 4]) -> (Vec<f32>, Vec<u8>) {
    let [_, _, h, w] = dims;
    let [n, c, oh, ow] = pooled(dims);
    let mut out = vec![0.0f32; n * c * oh * ow];
    let mut at = vec![0u8; out.len()];
    if out.is_empty() {
        return (out, at);
    }
    out.par_chunks_mut(oh * ow)
        .zip(at.par_chunks_mut(oh * ow))
        .zip(x.par_chunks(h * w))
        .for_each(|((out, at), plane)| {
            for ((out, at), rows) in out
                .chunks_exact_mut(ow)
                .zip(at.chunks_exact_mut(ow))
                .zip(plane.chunks_exact(2 * w))
            {
                let (top, bottom) = rows.split_at(w);
                let pairs = top.chunks_exact(2).zip(bottom.chunks_exact(2));
                for ((value, at), (t, b)) in out.iter_mut().zip(at.iter_mut()).zip(pairs) {
                    (*value, *at) = max_of([t[0], t[1], b[0], b[1]]);
                }
            }
        });
    (out, at)
}

/// The largest of a window in row-major order and its position: the first of equal ones, a NaN
/// if there is one (as PyTorch's `max_pool2d`).
/// Written without branches, so the loop over a row compiles to vector selects.
#[inline(always)]
fn max_of(window: [f32; 4]) -> (f32, u8) {
    let (mut best, mut at) = (window[0], 0u8);
    for (k, &v) in window.iter().enumerate().skip(1) {
        let take = v > best || (v.is_nan() & !best.is_nan());
        best = if take { v } else { best };
        at = if take { k as u8 } else { at };
    }
    (best, at)
}

/// The autodiff node of the CPU training backend.
#[cfg(feature = "flex")]
mod node {
    use std::sync::Arc;

    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::Autodiff;
    use burn::tensor::Tensor;
    use rayon::prelude::*;

    use super::{forward, pooled};
    use crate::device::CpuBackend;
    use crate::kernels::autodiff::{host, primitive, view};
    use crate::kernels::float_tensor;

    /// The gradient of [`super::forward`]'s input from its output's `g`: each output's gradient at the
    /// pixel it took, zero elsewhere.
    pub(super) fn backward(g: &[f32], at: &[u8], dims: [usize; 4]) -> Vec<f32> {
        let [n, c, h, w] = dims;
        let [_, _, oh, ow] = pooled(dims);
        let mut dx = vec![0.0f32; n * c * h * w];
        if g.is_empty() {
            return dx;
        }
        dx.par_chunks_mut(h * w)
            .zip(g.par_chunks(oh * ow).zip(at.par_chunks(oh * ow)))
            .for_each(|(plane, (g, at))| {
                for i in 0..oh {
                    let row = i * ow..(i + 1) * ow;
                    for (j, (&g, &k)) in g[row.clone()].iter().zip(&at[row]).enumerate() {
                        let (dy, dx) = (usize::from(k / 2), usize::from(k % 2));
                        plane[(2 * i + dy) * w + 2 * j + dx] = g;
                    }
                }
            });
        dx
    }

    /// Marker of the max-pool node; its state is the input's dimensions and where each output's
    /// maximum was.
    #[derive(Debug)]
    struct MaxPool2;

    impl Backward<CpuBackend, 1> for MaxPool2 {
        type State = ([usize; 4], Arc<Vec<u8>>);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (g, _) = host(grads.consume::<CpuBackend>(&ops.node));
            let (dims, at) = ops.state;
            if let [Some(node)] = ops.parents {
                grads.register::<CpuBackend>(node.id, primitive(backward(&g, &at, dims), dims));
            }
        }
    }

    /// [`super::max_pool2`] as one node of `Autodiff<CpuBackend>`.
    pub(super) fn max_pool2(x: Tensor<Autodiff<CpuBackend>, 4>) -> Tensor<Autodiff<CpuBackend>, 4> {
        let x = x.into_primitive().tensor();
        // Borrowed: the input is shared with the graph (ReLU keeps it), so reading it through
        // `into_data` would copy it.
        let (values, dims) = view(&x.primitive);
        let (out, at) = forward(&values, dims);
        let out = primitive(out, pooled(dims));
        let node = match MaxPool2
            .prepare::<NoCheckpointing>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((dims, Arc::new(at)), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        float_tensor(node)
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::node::backward;
    use super::*;
    use crate::device::CpuBackend;
    use burn::backend::Autodiff;
    use burn::tensor::Distribution;

    type Ad = Autodiff<CpuBackend>;

    fn burns<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
        max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false)
    }

    fn values<B: Backend>(t: Tensor<B, 4>) -> Vec<f32> {
        t.into_data().into_vec::<f32>().unwrap()
    }

    #[test]
    fn values_and_gradients_equal_burns() {
        let device = Default::default();
        // Odd sides drop their last row or column; one channel plane of a single window.
        for dims in [[2, 3, 8, 10], [1, 2, 7, 9], [3, 1, 2, 2]] {
            let x = Tensor::<CpuBackend, 4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
            assert_eq!(
                values(max_pool2(x.clone())),
                values(burns(x.clone())),
                "{dims:?}"
            );

            // A weighting of the outputs, so each output's gradient differs.
            let weights = Tensor::<Ad, 4>::random(pooled(dims), Distribution::Default, &device);
            let grad = |pool: fn(Tensor<Ad, 4>) -> Tensor<Ad, 4>| {
                let xa = Tensor::<Ad, 4>::from_data(x.to_data(), &device).require_grad();
                let loss = (pool(xa.clone()) * weights.clone()).sum();
                values(xa.grad(&loss.backward()).unwrap())
            };
            let (ours, theirs) = (grad(max_pool2), grad(burns));
            assert_eq!(ours, theirs, "{dims:?}");
            assert!(ours.iter().any(|&g| g != 0.0));
        }
    }

    #[test]
    fn ties_go_to_the_first_pixel_and_nan_propagates() {
        assert_eq!(max_of([1.0, 3.0, 3.0, 2.0]), (3.0, 1));
        assert_eq!(max_of([5.0, 5.0, 5.0, 5.0]), (5.0, 0));
        assert_eq!(max_of([-1.0, -2.0, -3.0, -0.5]), (-0.5, 3));
        let (v, k) = max_of([1.0, f32::NAN, 7.0, 2.0]);
        assert!(v.is_nan() && k == 1);
        // The gradient of a tie reaches only the first of the tied pixels.
        let dx = backward(&[1.0], &[max_of([0.0, 4.0, 4.0, 4.0]).1], [1, 1, 2, 2]);
        assert_eq!(dx, [0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn both_cpu_backends_take_the_host_pool() {
        // burn-flex keeps the first pixel's 1.0 here; the host pool gives NaN, as PyTorch.
        let window = [[[[1.0, f32::NAN], [0.5, 0.25]]]];
        let device = Default::default();
        let plain = Tensor::<CpuBackend, 4>::from_floats(window, &device);
        let tracked = Tensor::<Ad, 4>::from_floats(window, &device).require_grad();
        assert!(values(max_pool2(plain))[0].is_nan());
        assert!(values(max_pool2(tracked))[0].is_nan());
    }
}
