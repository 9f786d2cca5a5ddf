//! [`super::im2col`]'s convolution as one differentiable op of `Autodiff<B>` for any backend
//! `B` (burn's backend-extension mechanism: a node with its own backward), for training on a
//! GPU. Autodiff through the gathered windows would keep every layer's windows (`k*k` times its
//! input) until the backward, and return the input gradient through the slices one by one: per
//! tap a zero tensor of the padded input's size, an assignment and an addition. Here the node
//! keeps only its input and weight, and for `y = conv(x, w)` (zero padding `p`, stride `s`,
//! a `k x k` kernel):
//! - `dL/dx = conv(dilate_s(dL/dy), w')`, `w'[c, o] = w[o, c]` flipped in both axes, padding
//!   `k - 1 - p`: the same gathered-window product (`dilate_s` puts `s - 1` zeros between the
//!   gradient's pixels; none at stride 1);
//! - `dL/dw[o, (ky, kx, c)] = sum over n, pixels of dL/dy[n, o, pixel] windows[n, (ky, kx, c),
//!   pixel]`: the windows gathered again, band by band, one product per band.

use std::marker::PhantomData;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{s, Tensor, TensorPrimitive};

use super::im2col::{self, bands, out_size, pad_zeros, windows, BAND_VALUES};

/// Padding and stride of a convolution node.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    pad: usize,
    stride: usize,
}

#[derive(Debug)]
struct GemmConv<B>(PhantomData<B>);

impl<B: Backend> Backward<B, 2> for GemmConv<B> {
    type State = (NodeId, NodeId, Geometry);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w] = ops.parents;
        let (x_state, w_state, geometry) = ops.state;
        let g = tensor::<B>(grads.consume::<B>(&ops.node));
        let x = tensor::<B>(checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state));
        let w = tensor::<B>(checkpointer.retrieve_node_output::<FloatTensor<B>>(w_state));
        if let Some(node) = node_x {
            let dx = input_grad(g.clone(), w.clone(), x.dims(), geometry);
            grads.register::<B>(node.id, dx.into_primitive().tensor());
        }
        if let Some(node) = node_w {
            let dw = weight_grad(x, g, w.dims(), geometry);
            grads.register::<B>(node.id, dw.into_primitive().tensor());
        }
    }
}

fn tensor<B: Backend>(primitive: FloatTensor<B>) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// `dL/dx`: the output gradient, dilated by the stride, convolved with the flipped transposed
/// kernel at padding `k - 1 - p`.
fn input_grad<B: Backend>(
    g: Tensor<B, 4>,
    w: Tensor<B, 4>,
    [_, _, h, width]: [usize; 4],
    Geometry { pad, stride }: Geometry,
) -> Tensor<B, 4> {
    let k = w.dims()[2];
    let flipped = w.swap_dims(0, 1).flip([2, 3]);
    let g = if stride > 1 {
        // The rows and columns the windows started from, in the padded input; a last row or
        // column no window reached stays zero.
        let (rows, cols) = (h + 2 * pad - k + 1, width + 2 * pad - k + 1);
        let [n, c, _, _] = g.dims();
        Tensor::zeros([n, c, rows, cols], &g.device())
            .slice_assign(s![.., .., 0..rows;stride, 0..cols;stride], g)
    } else {
        g
    };
    im2col::conv2d(g, flipped, None, k - 1 - pad, 1)
}

/// `dL/dw`, `[C_out, C_in, k, k]`: the output gradient times the input's windows, gathered
/// again band by band.
fn weight_grad<B: Backend>(
    x: Tensor<B, 4>,
    g: Tensor<B, 4>,
    [c_out, c_in, k, _]: [usize; 4],
    Geometry { pad, stride }: Geometry,
) -> Tensor<B, 4> {
    let x = pad_zeros(x, pad);
    let [n, _, _, _] = x.dims();
    let [out_h, out_w] = out_size(&x, k, stride);
    let taps = k * k * c_in;
    let dw = bands(n * taps * out_w, out_h, BAND_VALUES)
        .map(|(top, band)| {
            let columns = windows(&x, k, stride, (top, band), out_w);
            let g_band =
                g.clone()
                    .slice(s![.., .., top..top + band, ..])
                    .reshape([n, c_out, band * out_w]);
            g_band.matmul(columns.swap_dims(1, 2)).sum_dim(0)
        })
        .reduce(|a, b| a + b)
        .expect("at least one output row");
    dw.reshape([c_out, k, k, c_in]).permute([0, 3, 1, 2])
}

/// Differentiable convolution with zero padding `pad` and `stride` ([`im2col::conv2d`]
/// forward, the backward above), the bias added after it.
///
/// # Shapes
/// As [`im2col::conv2d`].
pub fn conv2d<B: Backend>(
    x: Tensor<Autodiff<B>, 4>,
    weight: Tensor<Autodiff<B>, 4>,
    bias: Option<Tensor<Autodiff<B>, 1>>,
    pad: usize,
    stride: usize,
) -> Tensor<Autodiff<B>, 4> {
    let geometry = Geometry { pad, stride };
    let c_out = weight.dims()[0];
    let x = x.into_primitive().tensor();
    let w = weight.into_primitive().tensor();
    let compute = || {
        let out = im2col::conv2d(
            tensor::<B>(x.primitive.clone()),
            tensor::<B>(w.primitive.clone()),
            None,
            pad,
            stride,
        );
        out.into_primitive().tensor()
    };
    let out = match GemmConv::<B>(PhantomData)
        .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = (prep.checkpoint(&x), prep.checkpoint(&w), geometry);
            prep.finish(state, compute())
        }
        OpsKind::UnTracked(prep) => prep.finish(compute()),
    };
    let out = Tensor::<Autodiff<B>, 4>::from_primitive(TensorPrimitive::Float(out));
    match bias {
        Some(bias) => out + bias.reshape([1, c_out, 1, 1]),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::CpuBackend;
    use crate::kernels::im2col::tests::{max_diff, random, CASES};
    use burn::tensor::module::conv2d as burn_conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::Distribution;

    type AD = Autodiff<CpuBackend>;

    /// How the convolution under test is differentiated.
    #[derive(Clone, Copy, Debug)]
    enum Way {
        /// This module's node.
        Own,
        /// burn's autodiff through [`im2col::conv2d_in_bands`]'s ops, with the case's bands.
        Ops,
        /// burn's `conv2d`: the reference.
        Burn,
    }

    /// Output and input, weight and bias gradients of both gathered-window ways equal burn's
    /// convolution's, for [`CASES`], and a frozen weight gets no gradient.
    #[test]
    fn gradients_match_burns_convolution() {
        for (shape, c_out, k, pad, stride, band) in CASES {
            let x = random::<CpuBackend, 4>(shape);
            let weight = random::<CpuBackend, 4>([c_out, shape[1], k, k]);
            let bias = random::<CpuBackend, 1>([c_out]);
            let options = ConvOptions::new([stride; 2], [pad; 2], [1, 1], 1);
            let upstream = burn_conv2d(x.clone(), weight.clone(), None, options.clone())
                .random_like(Distribution::Uniform(-1.0, 1.0));
            let run = |way: Way, frozen: bool| {
                let xa = Tensor::<AD, 4>::from_inner(x.clone()).require_grad();
                let wa = Tensor::<AD, 4>::from_inner(weight.clone());
                let wa = if frozen { wa } else { wa.require_grad() };
                let ba = Tensor::<AD, 1>::from_inner(bias.clone()).require_grad();
                let b = Some(ba.clone());
                let out = match way {
                    Way::Own => conv2d(xa.clone(), wa.clone(), b, pad, stride),
                    Way::Ops => {
                        im2col::conv2d_in_bands(xa.clone(), wa.clone(), b, (pad, stride), band)
                    }
                    Way::Burn => burn_conv2d(xa.clone(), wa.clone(), b, options.clone()),
                };
                let up = Tensor::<AD, 4>::from_inner(upstream.clone());
                let grads = (out.clone() * up).sum().backward();
                (
                    out.inner(),
                    xa.grad(&grads).expect("x grad"),
                    wa.grad(&grads),
                    ba.grad(&grads).expect("b grad"),
                )
            };
            let (ey, edx, edw, edb) = run(Way::Burn, false);
            let edw = edw.expect("w grad");
            for way in [Way::Own, Way::Ops] {
                let case = format!("{way:?} {shape:?} k{k} p{pad} s{stride} band {band}");
                let (y, dx, dw, db) = run(way, false);
                assert!(max_diff(y, ey.clone()) < 1e-4, "output {case}");
                assert!(max_diff(dx, edx.clone()) < 1e-4, "input grad {case}");
                assert!(
                    max_diff(dw.expect("w grad"), edw.clone()) < 1e-3,
                    "weight grad {case}"
                );
                assert!(max_diff(db, edb.clone()) < 1e-3, "bias grad {case}");
            }
            let (_, dx_frozen, dw_frozen, _) = run(Way::Own, true);
            assert!(dw_frozen.is_none(), "frozen weight {shape:?}");
            assert!(
                max_diff(dx_frozen, edx) < 1e-4,
                "frozen input grad {shape:?}"
            );
        }
    }
}
