//! Dense convolution as one matrix product over gathered windows ("im2col", Chellapilla et al.
//! 2006; Caffe's convolution), in burn's generic tensor ops: for the GPU backends, where burn's
//! own convolution without autotuning is its direct kernel (88% of a 1080p forward on an H200,
//! `docs/performance.md`) while its matmul is a tensor-core kernel within 1.0-1.3x of the best
//! its autotuner finds. It is made of differentiable ops (pad, a strided window view copied
//! once, matmul; under autodiff strided slices stacked), so burn's autodiff can train through
//! it (`gemm-ops`); training uses [`super::im2col_autodiff`] instead, the same forward as one
//! node with its own backward.
//!
//! Which convolution a GPU build runs, for inference and for training, is [`GpuConv`], read
//! once from `TOONSMITH_GPU_CONV`.

use std::sync::OnceLock;

use burn::tensor::backend::Backend;
use burn::tensor::ops::PadMode;
use burn::tensor::{s, Tensor};

use super::precision::Precision;
use crate::error::{Error, Result};

/// Environment variable choosing [`GpuConv`].
pub const ENV: &str = "TOONSMITH_GPU_CONV";

/// Most values the gathered windows of one product may hold: 2^28 f32 (1 GiB) on CUDA, 2^25
/// (128 MiB, WebGPU's default storage-buffer binding limit) on wgpu and Vulkan, whose drivers
/// may refuse larger buffers (lavapipe refused a 288 MiB copy of one). A larger output is
/// computed in bands of whole output rows, each with its own windows: the last 7x7 convolution
/// of G at 1920x1080 would otherwise gather 3136 values per pixel (26 GB).
pub const BAND_VALUES: usize =
    if cfg!(feature = "cuda-backend") || !cfg!(any(feature = "vulkan-backend", feature = "wgpu")) {
        1 << 28
    } else {
        1 << 25
    };

/// The convolution a GPU backend runs for dense (`groups == 1`) layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuConv {
    /// [`conv2d`]: gathered windows and one matmul per band; in training one autodiff node
    /// with its own backward ([`super::im2col_autodiff`]).
    Gemm,
    /// [`conv2d`] in training too, differentiated through its ops by burn's autodiff (keeps
    /// every layer's windows for the backward; for comparison).
    GemmOps,
    /// burn's `conv2d`: with autotuning, the fastest of its implicit GEMMs, direct kernel and
    /// 1x1 matmul for each shape; without, its direct kernel.
    Burn,
    /// CubeCL's tensor-core implicit GEMM called directly, with or without autotuning
    /// (`super::implicit_gemm`): for inference, and in training for the node's forward and
    /// input-gradient products (its weight gradient stays gathered windows).
    Implicit,
}

impl GpuConv {
    /// The default of this build for inference (`training` false) or training: burn's
    /// convolution for inference where CubeCL autotunes it (feature `autotune`, in `cuda`,
    /// `vulkan` and `wgpu`: its tuned implicit GEMM ran G at 1080p in 132.6 ms on an H200),
    /// else [`GpuConv::Gemm`]. Training is [`GpuConv::Gemm`] in every GPU build: burn's tuned
    /// backward-weight ran a 3x3 64->64 layer at 256x256, batch 8 at 2.6 TFLOP/s, and tuning a
    /// training step's convolution backwards took over 7 minutes (`docs/performance.md`).
    /// Inference in a reduced [`Precision`] is [`GpuConv::Gemm`] in every build (the format
    /// applies to the gathered-window product).
    pub fn default_for_build(training: bool) -> Self {
        if cfg!(feature = "autotune") && !training && Precision::current() == Precision::F32 {
            Self::Burn
        } else {
            Self::Gemm
        }
    }

    /// Every choice.
    pub const ALL: [Self; 4] = [Self::Gemm, Self::GemmOps, Self::Burn, Self::Implicit];

    /// This choice's value of `TOONSMITH_GPU_CONV`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gemm => "gemm",
            Self::GemmOps => "gemm-ops",
            Self::Burn => "burn",
            Self::Implicit => "implicit",
        }
    }

    /// Parses `gemm`, `gemm-ops`, `burn` or `implicit`.
    pub fn parse(value: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|choice| choice.name() == value)
            .ok_or_else(|| Error::InvalidConfig {
                field: ENV,
                value: value.into(),
                expected: "gemm, gemm-ops, burn or implicit".into(),
            })
    }

    /// `TOONSMITH_GPU_CONV` if set (for inference and training alike; an error naming it if it
    /// is not one of [`GpuConv::parse`]'s), else `None`: each pass's
    /// [`GpuConv::default_for_build`].
    pub fn from_env() -> Result<Option<Self>> {
        super::env_choice(ENV, Self::parse)
    }

    /// The choice for inference (`training` false) or training: [`GpuConv::from_env`] read
    /// once, else the build's default; an invalid value falls back to the default (the program
    /// checks the variable at start with [`GpuConv::from_env`]).
    pub fn current(training: bool) -> Self {
        static CHOICE: OnceLock<Option<GpuConv>> = OnceLock::new();
        CHOICE
            .get_or_init(|| Self::from_env().ok().flatten())
            .unwrap_or_else(|| Self::default_for_build(training))
    }
}

/// Convolution with zero padding `pad` and `stride` as gathered windows times the weight
/// matrix, in bands of at most [`BAND_VALUES`] gathered values.
///
/// # Shapes
/// `x` `[N, C_in, H, W]`, `weight` `[C_out, C_in, k, k]`, `bias` `[C_out]` ->
/// `[N, C_out, (H + 2 pad - k) / stride + 1, (W + 2 pad - k) / stride + 1]`.
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    pad: usize,
    stride: usize,
) -> Tensor<B, 4> {
    conv2d_in_bands(x, weight, bias, ([pad; 2], stride), BAND_VALUES)
}

/// [`conv2d`] for a `kh x kw` kernel with `padding` `[top and bottom, left and right]` (the
/// Inception network's 1x7, 7x1, 1x3 and 3x1 convolutions).
///
/// # Shapes
/// `x` `[N, C_in, H, W]`, `weight` `[C_out, C_in, kh, kw]`, `bias` `[C_out]` ->
/// `[N, C_out, (H + 2 ph - kh) / stride + 1, (W + 2 pw - kw) / stride + 1]`.
pub fn conv2d_rect<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    padding: [usize; 2],
    stride: usize,
) -> Tensor<B, 4> {
    conv2d_in_bands(x, weight, bias, (padding, stride), BAND_VALUES)
}

/// [`conv2d_rect`] with the band limit `band_values` (tests force several bands with a small
/// one), its operands in the process's [`Precision`] outside autodiff (inference), f32 under it.
pub(crate) fn conv2d_in_bands<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    (padding, stride): ([usize; 2], usize),
    band_values: usize,
) -> Tensor<B, 4> {
    let precision = if B::ad_enabled(&x.device()) {
        Precision::F32
    } else {
        Precision::current()
    };
    conv2d_at(x, weight, bias, (padding, stride), (band_values, precision))
}

/// [`conv2d_in_bands`] with the operands in `precision` ([`Precision::operand_dtype`]: the
/// padded input and the weight cast, the product cast back before the bias). Training
/// ([`super::im2col_autodiff`]) calls it with f32 whatever the process's precision.
pub(crate) fn conv2d_at<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    (padding, stride): ([usize; 2], usize),
    (band_values, precision): (usize, Precision),
) -> Tensor<B, 4> {
    let [n, _, _, _] = x.dims();
    let [c_out, c_in, kh, kw] = weight.dims();
    let kernel = [kh, kw];
    let dtype = x.dtype();
    // Padded first: burn's `pad` fills with the default float dtype.
    let x = pad_zeros(x, padding);
    let (x, weight) = match precision.operand_dtype() {
        Some(half) => (x.cast(half), weight.cast(half)),
        None => (x, weight),
    };
    let [out_h, out_w] = out_size(&x, kernel, stride);
    let by_rows = stride == 1 && kh == kw && kh >= ROWS_FROM && !B::ad_enabled(&x.device());
    // Columns in the weight's order (c, ky, kx), as `windows` gathers them.
    let taps = kh * kw * c_in;
    let row_values = n * out_w * if by_rows { c_in * kw } else { taps };
    let matrix = weight
        .clone()
        .reshape([1, c_out, taps])
        .expand([n, c_out, taps]);
    // Kernel row by kernel row, a band of `band` output rows gathers `band + kh - 1` rows.
    let halo = if by_rows { kh - 1 } else { 0 };
    let bands: Vec<Tensor<B, 4>> = bands(row_values, out_h, band_values, halo)
        .map(|(top, band)| {
            let product = if by_rows {
                rows_product(&x, &weight, (top, band), dtype)
            } else {
                let columns = windows(&x, kernel, stride, (top, band), out_w);
                matrix.clone().matmul(columns)
            };
            product.reshape([n, c_out, band, out_w])
        })
        .collect();
    let out = if bands.len() == 1 {
        bands.into_iter().next().expect("one band")
    } else {
        Tensor::cat(bands, 2)
    };
    let out = out.cast(dtype);
    match bias {
        Some(bias) => out + bias.reshape([1, c_out, 1, 1]),
        None => out,
    }
}

/// Square kernels from this size up convolve (at stride 1, outside autodiff) kernel row by
/// kernel row ([`rows_product`]).
const ROWS_FROM: usize = 5;

/// One band of output rows of a `k x k` convolution at stride 1 of the padded `x`, as `k`
/// products summed: the windows of one kernel row (`C k` values per pixel) are gathered once
/// over the band's `band + k - 1` input rows, and kernel row `ky`'s weights multiply them from
/// row `ky` on (an offset into the same tensor). The gather writes `k` times fewer values than
/// whole windows (`C k k` per pixel); the products do the same arithmetic. For G's 7x7 64->32
/// head at 1920x1080 whole windows are 6.5 G values, about half of all the forward's gathering.
/// The products are summed in `dtype` (f32 when the operands are f16).
///
/// # Shapes
/// `x` `[N, C, H, W]` (padded), `weight` `[C_out, C, k, k]` -> `[N, C_out, band * (W - k + 1)]`.
fn rows_product<B: Backend>(
    x: &Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    (top, band): (usize, usize),
    dtype: burn::tensor::DType,
) -> Tensor<B, 3> {
    let [n, c, _, width] = x.dims();
    let [c_out, _, k, _] = weight.dims();
    let (rows, out_w) = (band + k - 1, width - k + 1);
    let windows = x
        .clone()
        .slice(s![.., .., top..top + rows, ..])
        .unfold::<5, _>(3, k, 1)
        .permute([0, 1, 4, 2, 3])
        .reshape([n, c * k, rows * out_w]);
    (0..k)
        .map(|ky| {
            let row = weight
                .clone()
                .slice(s![.., .., ky..ky + 1, ..])
                .reshape([1, c_out, c * k])
                .expand([n, c_out, c * k]);
            let columns = windows
                .clone()
                .slice(s![.., .., ky * out_w..(ky + band) * out_w]);
            row.matmul(columns).cast(dtype)
        })
        .reduce(|a, b| a + b)
        .expect("a kernel has at least one row")
}

/// `x` with `[ph, pw]` zeros above and below, left and right.
pub(crate) fn pad_zeros<B: Backend>(x: Tensor<B, 4>, [ph, pw]: [usize; 2]) -> Tensor<B, 4> {
    if ph > 0 || pw > 0 {
        x.pad([(ph, ph), (pw, pw)], PadMode::Constant(0.0))
    } else {
        x
    }
}

/// Output height and width of a `kh x kw` window at `stride` over padded `x`.
pub(crate) fn out_size<B: Backend>(
    x: &Tensor<B, 4>,
    [kh, kw]: [usize; 2],
    stride: usize,
) -> [usize; 2] {
    let [_, _, h, w] = x.dims();
    [(h - kh) / stride + 1, (w - kw) / stride + 1]
}

/// Bands of output rows `(top, rows)` covering `out_h` rows, each gathering at most
/// `band_values` values at `row_values` per gathered row, a band of `rows` output rows
/// gathering `rows + halo` (at least one output row per band): [`rows_product`]'s bands
/// gather `k - 1` rows more than they output, which the limit must count.
pub(crate) fn bands(
    row_values: usize,
    out_h: usize,
    band_values: usize,
    halo: usize,
) -> impl Iterator<Item = (usize, usize)> {
    let rows = (band_values / row_values.max(1))
        .saturating_sub(halo)
        .clamp(1, out_h.max(1));
    (0..out_h)
        .step_by(rows)
        .map(move |top| (top, rows.min(out_h - top)))
}

/// The `kh x kw` windows of padded `x` under output rows `top..top + band` as a strided view
/// (no copy on CubeCL or flex: `Tensor::unfold`), `[N, C, band, out_w, ky, kx]`.
pub(crate) fn window_view<B: Backend>(
    x: &Tensor<B, 4>,
    [kh, kw]: [usize; 2],
    stride: usize,
    (top, band): (usize, usize),
) -> Tensor<B, 6> {
    let [_, _, h, _] = x.dims();
    let rows = top * stride..(top + band - 1) * stride + kh;
    let x = if rows == (0..h) {
        x.clone()
    } else {
        x.clone().slice(s![.., .., rows, ..])
    };
    x.unfold::<5, _>(2, kh, stride)
        .unfold::<6, _>(3, kw, stride)
}

/// The `kh x kw` windows of padded `x` under output rows `top..top + band`, one column per
/// output pixel: `[N, C*kh*kw, band*out_w]`, rows ordered (c, ky, kx) as the weight's
/// `[C_out, C, kh, kw]`. One strided copy of [`window_view`]; under autodiff `kh*kw` strided
/// slices stacked instead (burn differentiates a window view row of windows by row of
/// windows, a slice in one assignment).
pub(crate) fn windows<B: Backend>(
    x: &Tensor<B, 4>,
    kernel: [usize; 2],
    stride: usize,
    (top, band): (usize, usize),
    out_w: usize,
) -> Tensor<B, 3> {
    let [n, c, _, _] = x.dims();
    if B::ad_enabled(&x.device()) {
        return stacked_slices(x, kernel, stride, (top, band), out_w);
    }
    window_view(x, kernel, stride, (top, band))
        .permute([0, 1, 4, 5, 2, 3])
        .reshape([n, c * kernel[0] * kernel[1], band * out_w])
}

/// [`windows`] as `kh*kw` strided slices, one per tap, stacked after the channel axis.
fn stacked_slices<B: Backend>(
    x: &Tensor<B, 4>,
    [kh, kw]: [usize; 2],
    stride: usize,
    (top, band): (usize, usize),
    out_w: usize,
) -> Tensor<B, 3> {
    let [n, c, _, _] = x.dims();
    let span = |start: usize, count: usize| start..start + (count - 1) * stride + 1;
    let taps: Vec<Tensor<B, 5>> = (0..kh * kw)
        .map(|tap| {
            let (ky, kx) = (tap / kw, tap % kw);
            let ys = span(top * stride + ky, band);
            let xs = span(kx, out_w);
            x.clone()
                .slice(s![.., .., ys;stride, xs;stride])
                .reshape([n, c, 1, band, out_w])
        })
        .collect();
    Tensor::cat(taps, 2).reshape([n, c * kh * kw, band * out_w])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::device::CpuBackend;
    use burn::tensor::module::conv2d as burn_conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Distribution, ElementConversion, TensorData};

    type B = CpuBackend;

    pub(crate) fn random<Be: Backend, const D: usize>(shape: [usize; D]) -> Tensor<Be, D> {
        Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), &Default::default())
    }

    pub(crate) fn max_diff<Be: Backend, const D: usize>(a: Tensor<Be, D>, b: Tensor<Be, D>) -> f32 {
        (a - b).abs().max().into_scalar().elem()
    }

    /// (input `[N, C, H, W]`, `C_out`, k, pad, stride, band limit): every kernel size and
    /// stride of G, D and VGG, odd sizes (at stride 2, a last row and column no window
    /// reaches), and band limits that split the output into several bands (the last one
    /// shorter); a 1x1 kernel at stride 2 over an odd height and an even width; and a band
    /// tall enough that the weight gradient splits it into chunks of rows.
    pub(crate) const CASES: [([usize; 4], usize, usize, usize, usize, usize); 10] = [
        ([2, 3, 9, 11], 5, 3, 1, 1, BAND_VALUES),
        ([2, 4, 12, 10], 6, 3, 1, 2, BAND_VALUES),
        ([1, 3, 13, 8], 4, 7, 3, 1, 3 * 49 * 8 * 2),
        // 7x7 and 5x5 at stride 1 go kernel row by kernel row: 4 and 3 output rows per band
        // (each gathering k - 1 more).
        ([2, 3, 13, 8], 4, 7, 3, 1, 2 * 3 * 7 * 8 * (4 + 6)),
        ([1, 2, 9, 10], 3, 5, 2, 1, 2 * 5 * 10 * (3 + 4)),
        ([2, 6, 7, 9], 3, 1, 0, 1, 6 * 9 * 2 * 3),
        ([2, 5, 11, 9], 4, 3, 0, 2, 1),
        ([1, 2, 10, 10], 3, 3, 1, 1, 2 * 9 * 10 * 4),
        ([2, 3, 13, 18], 4, 1, 0, 2, BAND_VALUES),
        ([1, 2, 600, 9], 3, 3, 1, 1, BAND_VALUES),
    ];

    /// Bands cover every output row once, and each gathers at most the limit, its halo
    /// counted, unless one output row alone is over it.
    #[test]
    fn bands_keep_their_gathered_rows_under_the_limit() {
        let cases = [
            (10, 7, 50, 0),
            (10, 7, 50, 2),
            (10, 9, 95, 6),
            (10, 3, 5, 6),
        ];
        for (row_values, out_h, limit, halo) in cases {
            let bands: Vec<_> = bands(row_values, out_h, limit, halo).collect();
            let mut next = 0;
            for &(top, rows) in &bands {
                assert_eq!(top, next);
                assert!(rows >= 1);
                if rows > 1 {
                    assert!((rows + halo) * row_values <= limit, "{bands:?} {halo}");
                }
                next = top + rows;
            }
            assert_eq!(next, out_h, "{bands:?}");
        }
        let rows = |halo| bands(10, 9, 95, halo).next().map(|(_, rows)| rows);
        assert_eq!((rows(0), rows(6)), (Some(9), Some(3)));
    }

    #[test]
    fn matches_burns_convolution() {
        for (shape, c_out, k, pad, stride, band) in CASES {
            let x = random::<B, 4>(shape);
            let weight = random::<B, 4>([c_out, shape[1], k, k]);
            let bias = random::<B, 1>([c_out]);
            let options = ConvOptions::new([stride; 2], [pad; 2], [1, 1], 1);
            let expected = burn_conv2d(x.clone(), weight.clone(), Some(bias.clone()), options);
            let got = conv2d_in_bands(x, weight, Some(bias), ([pad; 2], stride), band);
            assert_eq!(got.dims(), expected.dims(), "{shape:?} k{k} s{stride}");
            let diff = max_diff(got, expected);
            assert!(diff < 1e-4, "{shape:?} k{k} s{stride} band {band}: {diff}");
        }
    }

    /// f16 operands: the product is rounded (so the cast happened), by no more than
    /// f16's unit roundoff allows, and comes back in the input's dtype.
    #[test]
    fn half_precision_operands_round_the_product_within_their_epsilon() {
        let x = random::<B, 4>([1, 8, 12, 10]);
        let weight = random::<B, 4>([6, 8, 3, 3]);
        let bias = random::<B, 1>([6]);
        let conv = |x: &Tensor<B, 4>, weight: &Tensor<B, 4>, bias, precision| {
            let at = (BAND_VALUES, precision);
            conv2d_at(x.clone(), weight.clone(), bias, ([1, 1], 1), at)
        };
        let exact = conv(&x, &weight, Some(bias.clone()), Precision::F32);
        // Rounding each operand to a unit roundoff u moves each term w x by at most 2u |w x|
        // (to first order), so the sum by at most 2u times the convolution of |x| with |w|.
        let magnitude = conv(
            &x.clone().abs(),
            &weight.clone().abs(),
            None,
            Precision::F32,
        );
        let magnitude: f32 = magnitude.max().into_scalar().elem();
        let u = 2f32.powi(-11);
        let got = conv(&x, &weight, Some(bias.clone()), Precision::F16);
        assert_eq!(got.dtype(), exact.dtype(), "cast back");
        let diff = max_diff(got, exact);
        assert!(diff > 0.0, "operands were not rounded");
        assert!(diff <= 2.05 * u * magnitude, "{diff} vs {magnitude}");
    }

    /// Inception's rectangular kernels (1x7, 7x1, 1x3 with their paddings) and a 3x3 at
    /// stride 2 without padding, forward, against burn's convolution.
    #[test]
    fn rectangular_kernels_match_burns_convolution() {
        for (shape, c_out, kernel, padding, stride) in [
            ([2, 3, 9, 12], 4, [1, 7], [0, 3], 1),
            ([1, 2, 11, 8], 3, [7, 1], [3, 0], 1),
            ([2, 3, 8, 9], 2, [1, 3], [0, 1], 1),
            ([1, 4, 13, 10], 3, [3, 3], [0, 0], 2),
        ] {
            let x = random::<B, 4>(shape);
            let weight = random::<B, 4>([c_out, shape[1], kernel[0], kernel[1]]);
            let options = ConvOptions::new([stride; 2], padding, [1, 1], 1);
            let expected = burn_conv2d(x.clone(), weight.clone(), None, options);
            let got = conv2d_rect(x, weight, None, padding, stride);
            assert_eq!(got.dims(), expected.dims(), "{shape:?} {kernel:?}");
            let diff = max_diff(got, expected);
            assert!(diff < 1e-4, "{shape:?} {kernel:?}: {diff}");
        }
    }

    #[test]
    fn one_pixel_kernel_is_a_channel_mix() {
        // 1x1 weights [[1, 2], [0, -1]]: out0 = x0 + 2 x1, out1 = -x1 (closed form).
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(
                vec![1.0f32, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0],
                [1, 2, 2, 2],
            ),
            &Default::default(),
        );
        let weight = Tensor::<B, 4>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 0.0, -1.0], [2, 2, 1, 1]),
            &Default::default(),
        );
        let got: Vec<f32> = conv2d(x, weight, None, 0, 1).into_data().to_vec().unwrap();
        assert_eq!(
            got,
            vec![21.0, 42.0, 63.0, 84.0, -10.0, -20.0, -30.0, -40.0]
        );
    }

    #[test]
    fn the_setting_parses_or_names_the_variable() {
        assert_eq!(GpuConv::parse("gemm").unwrap(), GpuConv::Gemm);
        assert_eq!(GpuConv::parse("gemm-ops").unwrap(), GpuConv::GemmOps);
        assert_eq!(GpuConv::parse("burn").unwrap(), GpuConv::Burn);
        assert_eq!(GpuConv::parse("implicit").unwrap(), GpuConv::Implicit);
        for choice in GpuConv::ALL {
            assert_eq!(GpuConv::parse(choice.name()).unwrap(), choice);
        }
        assert_eq!(GpuConv::default_for_build(true), GpuConv::Gemm);
        let err = GpuConv::parse("fast").unwrap_err().to_string();
        assert!(err.contains(ENV) && err.contains("fast"), "{err}");
    }
}
