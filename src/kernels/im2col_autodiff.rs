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
    use burn::tensor::module::conv2d as burn_conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Distribution, ElementConversion};

    type AD = Autodiff<CpuBackend>;

    fn random<Be: Backend, const D: usize>(shape: [usize; D]) -> Tensor<Be, D> {
        Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), &Default::default())
    }

    fn max_diff<Be: Backend, const D: usize>(a: Tensor<Be, D>, b: Tensor<Be, D>) -> f32 {
        (a - b).abs().max().into_scalar().elem()
    }

    /// Output and input, weight and bias gradients equal burn's convolution's, for every
    /// kernel size and stride of G, D and VGG, odd sizes (at stride 2, a last row and column
    /// no window reaches), and a frozen weight (no weight gradient asked).
    #[test]
    fn gradients_match_burns_convolution() {
        let cases = [
            ([2, 3, 9, 11], 5, 3, 1, 1),
            ([2, 4, 12, 10], 6, 3, 1, 2),
            ([2, 5, 11, 9], 4, 3, 1, 2),
            ([1, 3, 13, 8], 4, 7, 3, 1),
            ([2, 6, 7, 9], 3, 1, 0, 1),
            ([2, 5, 11, 9], 4, 3, 0, 2),
        ];
        for (shape, c_out, k, pad, stride) in cases {
            let x = random::<CpuBackend, 4>(shape);
            let weight = random::<CpuBackend, 4>([c_out, shape[1], k, k]);
            let bias = random::<CpuBackend, 1>([c_out]);
            let options = ConvOptions::new([stride; 2], [pad; 2], [1, 1], 1);
            let upstream = burn_conv2d(x.clone(), weight.clone(), None, options.clone())
                .random_like(Distribution::Uniform(-1.0, 1.0));
            let run = |ours: bool, frozen: bool| {
                let xa = Tensor::<AD, 4>::from_inner(x.clone()).require_grad();
                let wa = Tensor::<AD, 4>::from_inner(weight.clone());
                let wa = if frozen { wa } else { wa.require_grad() };
                let ba = Tensor::<AD, 1>::from_inner(bias.clone()).require_grad();
                let out = if ours {
                    conv2d(xa.clone(), wa.clone(), Some(ba.clone()), pad, stride)
                } else {
                    burn_conv2d(xa.clone(), wa.clone(), Some(ba.clone()), options.clone())
                };
                let up = Tensor::<AD, 4>::from_inner(upstream.clone());
                let grads = (out.clone() * up).sum().backward();
                let dw = wa.grad(&grads);
                (
                    out.inner(),
                    xa.grad(&grads).expect("x grad"),
                    dw,
                    ba.grad(&grads).expect("b grad"),
                )
            };
            let case = format!("{shape:?} k{k} p{pad} s{stride}");
            let (y, dx, dw, db) = run(true, false);
            let (ey, edx, edw, edb) = run(false, false);
            assert!(max_diff(y, ey) < 1e-4, "output {case}");
            assert!(max_diff(dx, edx.clone()) < 1e-4, "input grad {case}");
            let (dw, edw) = (dw.expect("w grad"), edw.expect("w grad"));
            assert!(max_diff(dw, edw) < 1e-3, "weight grad {case}");
            assert!(max_diff(db, edb) < 1e-3, "bias grad {case}");
            let (_, dx_frozen, dw_frozen, _) = run(true, true);
            assert!(dw_frozen.is_none(), "frozen weight {case}");
            assert!(max_diff(dx_frozen, edx) < 1e-4, "frozen input grad {case}");
        }
    }
}
