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
//! - `dL/dw[o, (c, ky, kx)] = sum over n, pixels of dL/dy[n, o, pixel] windows[n, pixel,
//!   (c, ky, kx)]`: the windows gathered again (pixel-major), band by band, one batched
//!   product per band over chunks of rows, summed; or, with `TOONSMITH_GPU_WGRAD=implicit`
//!   ([`WeightGrad::Implicit`]), by CubeCL's implicit-GEMM weight gradient, no windows in
//!   memory.

use std::marker::PhantomData;
use std::sync::OnceLock;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, PadMode};
use burn::tensor::{s, Tensor};

use super::float_tensor;
use super::im2col::{self, bands, out_size, pad_zeros, window_view, BAND_VALUES};
use super::precision::Precision;
use crate::error::{Error, Result};

/// How the node's weight gradient runs on the selected GPU backend (`TOONSMITH_GPU_WGRAD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightGrad {
    /// Gathered windows times the output gradient (`weight_grad`).
    Windows,
    /// CubeCL's implicit-GEMM weight gradient (cubek's `BackwardWeight`, by the algorithm of
    /// `TOONSMITH_GPU_IMPLICIT`; `super::implicit_gemm::weight_grad`). Builds with a CubeCL
    /// backend only.
    Implicit,
}

/// Environment variable choosing [`WeightGrad::current`].
pub const WGRAD_ENV: &str = "TOONSMITH_GPU_WGRAD";

impl WeightGrad {
    /// The default: [`WeightGrad::Windows`] until the implicit one has been timed on a GPU.
    pub const DEFAULT: Self = Self::Windows;

    /// This choice's value of `TOONSMITH_GPU_WGRAD`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Windows => "windows",
            Self::Implicit => "implicit",
        }
    }

    /// Parses `windows`, or `implicit` in a build with a CubeCL backend.
    pub fn parse(value: &str) -> Result<Self> {
        let cube = cfg!(feature = "cube-ops");
        match value {
            "windows" => Ok(Self::Windows),
            "implicit" if cube => Ok(Self::Implicit),
            _ => Err(Error::InvalidConfig {
                field: WGRAD_ENV,
                value: value.into(),
                expected: if cube {
                    "windows or implicit".into()
                } else {
                    "windows (implicit needs a build with a CubeCL backend: cuda, vulkan or wgpu)"
                        .into()
                },
            }),
        }
    }

    /// `TOONSMITH_GPU_WGRAD` if set (an error naming it if it is not one of
    /// [`WeightGrad::parse`]'s), else `None`.
    pub fn from_env() -> Result<Option<Self>> {
        super::env_choice(WGRAD_ENV, Self::parse)
    }

    /// [`WeightGrad::from_env`] read once, else [`WeightGrad::DEFAULT`] (an invalid value too:
    /// the program checks the variable at start).
    pub fn current() -> Self {
        static CHOICE: OnceLock<Option<WeightGrad>> = OnceLock::new();
        CHOICE
            .get_or_init(|| Self::from_env().ok().flatten())
            .unwrap_or(Self::DEFAULT)
    }
}

/// Padding and stride of a convolution node, and how the input it keeps is padded.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    pad: usize,
    stride: usize,
    /// The zeros already around the kept input: `pad`, or 0 where the forward and the weight
    /// gradient are both CubeCL's implicit GEMM, whose kernels read the padding as zeros
    /// without it in memory ([`kept_padding`]).
    kept_pad: usize,
}

impl Geometry {
    /// The padding still to apply to the kept input.
    fn pad_left(self) -> usize {
        self.pad - self.kept_pad
    }
}

/// How much of the padding `pad` the node's kept input gets in memory on backend `B`: none
/// where its forward ([`super::implicit_applies`]) and weight gradient
/// ([`super::implicit_wgrad_applies`]) are CubeCL's implicit GEMM, which take the padding as an
/// argument (a fill and a copy of the input fewer per convolution per step); else all of it,
/// padded once in the forward for the products and the gathered-window weight gradient.
fn kept_padding<B: Backend>(pad: usize) -> usize {
    if super::implicit_applies::<B>() && super::implicit_wgrad_applies::<B>() {
        0
    } else {
        pad
    }
}

#[derive(Debug)]
struct GemmConv<B>(PhantomData<B>);

impl<B: Backend> Backward<B, 2> for GemmConv<B> {
    /// The input, zero-padded by `kept_pad` (kept from the forward, so the backward does not
    /// pad again), the weight's node, the geometry.
    type State = (FloatTensor<B>, NodeId, Geometry);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w] = ops.parents;
        let (x_kept, w_state, geometry) = ops.state;
        let g = float_tensor::<B, 4>(grads.consume::<B>(&ops.node));
        let x_kept = float_tensor::<B, 4>(x_kept);
        let w = float_tensor::<B, 4>(checkpointer.retrieve_node_output::<FloatTensor<B>>(w_state));
        if let Some(node) = node_x {
            let [n, c, hp, wp] = x_kept.dims();
            let kept = geometry.kept_pad;
            let unpadded = [n, c, hp - 2 * kept, wp - 2 * kept];
            let dx = input_grad(g.clone(), w.clone(), unpadded, geometry);
            grads.register::<B>(node.id, dx.into_primitive().tensor());
        }
        if let Some(node) = node_w {
            let dw = weight_grad_by(x_kept, g, w.dims(), geometry);
            grads.register::<B>(node.id, dw.into_primitive().tensor());
        }
    }
}

/// `dL/dx`: the output gradient, dilated by the stride, convolved with the flipped transposed
/// kernel at padding `k - 1 - p`.
fn input_grad<B: Backend>(
    g: Tensor<B, 4>,
    w: Tensor<B, 4>,
    [_, _, h, width]: [usize; 4],
    Geometry { pad, stride, .. }: Geometry,
) -> Tensor<B, 4> {
    let k = w.dims()[2];
    let flipped = w.swap_dims(0, 1).flip([2, 3]);
    // The rows and columns the windows started from, in the padded input; a last row or
    // column no window reached stays zero.
    let g = dilate(g, stride, [h + 2 * pad - k + 1, width + 2 * pad - k + 1]);
    product(g, flipped, k - 1 - pad, 1)
}

/// The convolution of `x` with `w` (no bias) at zero padding `pad` and `stride` in f32, for the
/// forward and the input gradient: CubeCL's implicit GEMM where it is chosen
/// ([`super::implicit_applies`]), else gathered windows.
fn product<B: Backend>(
    x: Tensor<B, 4>,
    w: Tensor<B, 4>,
    pad: usize,
    stride: usize,
) -> Tensor<B, 4> {
    if super::implicit_applies::<B>() {
        return super::implicit_conv2d(x, w, None, [pad; 2], stride);
    }
    let f32 = (BAND_VALUES, Precision::F32);
    im2col::conv2d_at(x, w, None, ([pad; 2], stride), f32)
}

/// `g` with `stride - 1` zeros after each row and column, cut to `size` (`g` itself at stride
/// 1): a unit axis after each spatial one padded with zeros, then merged into it.
fn dilate<B: Backend>(g: Tensor<B, 4>, stride: usize, [rows, cols]: [usize; 2]) -> Tensor<B, 4> {
    if stride == 1 {
        return g;
    }
    let [n, c, h, w] = g.dims();
    g.reshape([n, c, h, 1, w, 1])
        .pad(
            [(0, stride - 1), (0, 0), (0, stride - 1)],
            PadMode::Constant(0.0),
        )
        .reshape([n, c, h * stride, w * stride])
        .slice(s![.., .., 0..rows, 0..cols])
}

/// Output pixels per partial product of the weight gradient: a product over all of a band's
/// pixels would leave a few output tiles (`C_out x C_in k k`) each summing hundreds of
/// thousands of terms, so a band is split into chunks of whole rows, one batch entry each,
/// whose products are summed after.
const WEIGHT_GRAD_CHUNK: usize = 4096;

/// `dL/dw` of the node from its kept input `x`: CubeCL's implicit GEMM where chosen
/// ([`super::implicit_wgrad_applies`]), else [`weight_grad`] (of the input padded).
fn weight_grad_by<B: Backend>(
    x: Tensor<B, 4>,
    g: Tensor<B, 4>,
    dims: [usize; 4],
    geometry: Geometry,
) -> Tensor<B, 4> {
    let (pad, stride) = (geometry.pad_left(), geometry.stride);
    if super::implicit_wgrad_applies::<B>() {
        return super::implicit_weight_grad(x, g, dims, (pad, stride));
    }
    weight_grad(pad_zeros(x, [pad; 2]), g, dims, stride)
}

/// `dL/dw`, `[C_out, C_in, k, k]`: the output gradient times the windows of the zero-padded
/// input `x`, gathered again band by band, pixel-major (`[pixels, C_in k k]`), in chunks of rows.
pub(crate) fn weight_grad<B: Backend>(
    x: Tensor<B, 4>,
    g: Tensor<B, 4>,
    [c_out, c_in, k, _]: [usize; 4],
    stride: usize,
) -> Tensor<B, 4> {
    let [n, _, _, _] = x.dims();
    let [out_h, out_w] = out_size(&x, [k; 2], stride);
    let taps = c_in * k * k;
    let dw = bands(n * taps * out_w, out_h, BAND_VALUES, 0)
        .map(|(top, band)| {
            let rows = chunk_rows(band, out_w);
            let chunks = n * band / rows;
            let pixels = rows * out_w;
            let columns = window_view(&x, [k; 2], stride, (top, band))
                .permute([0, 2, 3, 1, 4, 5])
                .reshape([chunks, pixels, taps]);
            let g_band = g
                .clone()
                .slice(s![.., .., top..top + band, ..])
                .reshape([n, c_out, band / rows, pixels])
                .swap_dims(1, 2)
                .reshape([chunks, c_out, pixels]);
            g_band.matmul(columns).sum_dim(0)
        })
        .reduce(|a, b| a + b)
        .expect("at least one output row");
    dw.reshape([c_out, c_in, k, k])
}

/// The most rows of `band` (a divisor of it) whose `out_w`-pixel rows fit
/// [`WEIGHT_GRAD_CHUNK`] pixels; at least one.
fn chunk_rows(band: usize, out_w: usize) -> usize {
    let most = (WEIGHT_GRAD_CHUNK / out_w.max(1)).clamp(1, band);
    (1..=most)
        .rev()
        .find(|d| band.is_multiple_of(*d))
        .unwrap_or(1)
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
    let kept_pad = kept_padding::<B>(pad);
    let geometry = Geometry {
        pad,
        stride,
        kept_pad,
    };
    let c_out = weight.dims()[0];
    let x = x.into_primitive().tensor();
    let w = weight.into_primitive().tensor();
    let x_kept = pad_zeros(float_tensor::<B, 4>(x.primitive.clone()), [kept_pad; 2]);
    let compute = |x_kept: Tensor<B, 4>| {
        let w = float_tensor::<B, 4>(w.primitive.clone());
        product(x_kept, w, geometry.pad_left(), stride)
            .into_primitive()
            .tensor()
    };
    let out = match GemmConv::<B>(PhantomData)
        .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let out = compute(x_kept.clone());
            let state = (
                x_kept.into_primitive().tensor(),
                prep.checkpoint(&w),
                geometry,
            );
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(compute(x_kept)),
    };
    let out = float_tensor::<Autodiff<B>, 4>(out);
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

    #[test]
    fn weight_gradient_chunks_are_whole_rows_within_the_limit() {
        assert_eq!(chunk_rows(600, 9), 300);
        assert_eq!(chunk_rows(13, 10), 13);
        assert_eq!(chunk_rows(7, 5000), 1);
        assert_eq!(chunk_rows(64, 256), 16);
    }

    #[test]
    fn weight_grad_names_parse() {
        assert_eq!(WeightGrad::parse("windows").unwrap(), WeightGrad::Windows);
        assert_eq!(
            WeightGrad::parse("implicit").is_ok(),
            cfg!(feature = "cube-ops")
        );
        let err = WeightGrad::parse("fast").unwrap_err().to_string();
        assert!(err.contains(WGRAD_ENV) && err.contains("fast"), "{err}");
    }

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
                        im2col::conv2d_in_bands(xa.clone(), wa.clone(), b, ([pad; 2], stride), band)
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
