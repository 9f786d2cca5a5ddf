//! Dense convolution by CubeCL's implicit GEMM (cubek's convolution kernels, which burn-cubecl's
//! autotuner chooses among: a tensor-core tiled matrix product that reads each tile of windows
//! straight from the input instead of gathering them into memory), launched directly with a
//! chosen [`Algorithm`], also from the untuned builds, where burn's own `conv2d` would run its
//! direct kernel. It is one custom operation of burn's fusion stream
//! (`TOONSMITH_GPU_CONV=implicit`, [`super::im2col::GpuConv::Implicit`]).
//!
//! Why: on an H200 the gathered-window path spends its convolution time in burn's untuned
//! matmul at 15-35 TFLOP/s and in copying windows (71 of the 1080p forward's 110 ms of
//! kernels, `docs/performance.md`, session 17), while CubeCL's autotuner, where it ran (session
//! 15), chose these implicit GEMMs for every dense forward shape (`simple_sync` and
//! `simple_tma` with MMA tiles first). They need tensor cores; where the device or the shape
//! is refused (`ConvSetupError`: lavapipe, an old GPU) the operation runs burn's own
//! convolution of the build instead, and [`refusal`] says why, so a benchmark can say which
//! kernel it timed.
//!
//! Layout: burn's tensors are NCHW, the kernels read NHWC with the channels contiguous; the
//! input and weight are permuted (a view; cubek copies what its reading needs) and the NHWC
//! output is returned as an NCHW view of it, as burn's own convolution does.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use burn::tensor::ops::conv::calculate_conv_output_size;
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};
use burn::tensor::{DType, Shape, Tensor, TensorPrimitive};
use burn_cubecl::kernel::{cast, into_contiguous};
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::ops::{permute_nchw_to_nhwc, permute_nhwc_to_nchw};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubek::convolution::components::ConvSetupError;
use cubek::convolution::{
    launch_ref, AcceleratedTileKind, ConvAlgorithm, ConvolutionArgs, ConvolutionInputs, Strategy,
};
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::std::InputBinding;

use super::cube_op::{self, Cube, CubeKernel, Runtime};
use super::im2col::pad_zeros;
use super::precision::Precision;
use super::{float_tensor, im2col_autodiff};
use crate::device::Selected;
use crate::error::{Error, Result};

/// Environment variable choosing [`Algorithm::current`].
pub const ENV: &str = "TOONSMITH_GPU_IMPLICIT";

/// cubek's reading strategies, by their names.
const ALGORITHMS: [ConvAlgorithm; 9] = [
    ConvAlgorithm::SimpleSyncCyclic,
    ConvAlgorithm::SimpleSyncStrided,
    ConvAlgorithm::SimpleSyncTilewise,
    ConvAlgorithm::SimpleAsyncCyclic,
    ConvAlgorithm::SimpleAsyncStrided,
    ConvAlgorithm::SimpleAsyncTma,
    ConvAlgorithm::SpecializedAsyncCyclic,
    ConvAlgorithm::SpecializedAsyncStrided,
    ConvAlgorithm::SpecializedTma,
];

/// One of cubek's implicit-GEMM convolution kernels: how tiles of input and weight reach
/// shared memory (`algorithm`: synchronous or asynchronous copies, cyclic or strided over the
/// threads, the TMA unit; "specialized" ones give loading and computing to different warps) and
/// which tensor-core instructions multiply them (`tile`: CMMA, CUDA's WMMA API, or MMA, PTX's
/// `mma`). Written `algorithm:tile`, e.g. `simple_sync_strided:mma`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Algorithm {
    /// The reading strategy.
    pub algorithm: ConvAlgorithm,
    /// The tile matmul.
    pub tile: AcceleratedTileKind,
}

impl Algorithm {
    /// burn-cubecl's `ConvStrategy::ImplicitGemm`: `simple_sync_cyclic:cmma`.
    pub const DEFAULT: Self = Self {
        algorithm: ConvAlgorithm::SimpleSyncCyclic,
        tile: AcceleratedTileKind::Cmma,
    };

    /// Every algorithm with every tile kind.
    pub fn all() -> impl Iterator<Item = Self> {
        ALGORITHMS.into_iter().flat_map(|algorithm| {
            [AcceleratedTileKind::Cmma, AcceleratedTileKind::Mma]
                .map(|tile| Self { algorithm, tile })
        })
    }

    /// Parses `algorithm:tile` (one of [`Algorithm::all`]'s names).
    pub fn parse(value: &str) -> Result<Self> {
        Self::all()
            .find(|a| a.to_string() == value)
            .ok_or_else(|| Error::InvalidConfig {
                field: ENV,
                value: value.into(),
                expected: "an algorithm:tile pair such as simple_sync_cyclic:cmma or \
                           simple_sync_strided:mma"
                    .into(),
            })
    }

    /// `TOONSMITH_GPU_IMPLICIT` if set (an error naming it if it is not one of
    /// [`Algorithm::parse`]'s), else `None`.
    pub fn from_env() -> Result<Option<Self>> {
        super::env_choice(ENV, Self::parse)
    }

    /// [`Algorithm::from_env`] read once, else [`Algorithm::DEFAULT`] (an invalid value too:
    /// the program checks the variable at start).
    pub fn current() -> Self {
        static CHOICE: OnceLock<Option<Algorithm>> = OnceLock::new();
        CHOICE
            .get_or_init(|| Self::from_env().ok().flatten())
            .unwrap_or(Self::DEFAULT)
    }
}

impl Algorithm {
    /// cubek's strategy for this algorithm (its blueprint inferred from the problem).
    fn strategy(self) -> Strategy {
        Strategy::Inferred {
            algorithm: self.algorithm,
            tile_kind: self.tile,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.tile)
    }
}

/// The first reason each algorithm was refused for each operation (`forward`, `weight
/// gradient`) in this process.
static REFUSALS: Mutex<Vec<(Algorithm, &'static str, String)>> = Mutex::new(Vec::new());

/// How many convolutions were refused in this process.
static REFUSED_CALLS: AtomicUsize = AtomicUsize::new(0);

/// How many convolutions were refused in this process (burn's ran in their place): a caller
/// that reads it before and after one convolution has run knows whether that one was.
pub fn refused_calls() -> usize {
    REFUSED_CALLS.load(Ordering::Relaxed)
}

/// Why `algorithm` was refused (and a convolution of burn's or gathered windows ran instead),
/// for each operation it was refused for in this process, if any.
pub fn refusal(algorithm: Algorithm) -> Option<String> {
    let refusals = REFUSALS.lock().unwrap_or_else(|e| e.into_inner());
    let reasons: Vec<String> = refusals
        .iter()
        .filter(|(a, _, _)| *a == algorithm)
        .map(|(_, operation, why)| format!("{operation}: {why}"))
        .collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// One line saying that [`Algorithm::current`] was refused and why (burn's convolution ran in
/// its place), if it was: what a benchmark or a check prints beside its figures.
pub fn refusal_note() -> Option<String> {
    let algorithm = Algorithm::current();
    refusal(algorithm).map(|why| {
        format!("implicit GEMM {algorithm} refused ({why}): burn's convolution or gathered windows ran instead")
    })
}

fn note_refusal(algorithm: Algorithm, operation: &'static str, err: &ConvSetupError) {
    REFUSED_CALLS.fetch_add(1, Ordering::Relaxed);
    let mut refusals = REFUSALS.lock().unwrap_or_else(|e| e.into_inner());
    if !refusals
        .iter()
        .any(|(a, o, _)| *a == algorithm && *o == operation)
    {
        let why = format!("{err:?}");
        let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
        refusals.push((algorithm, operation, why));
    }
}

/// Convolution with zero `padding` (`[rows, columns]`) and `stride` by the implicit GEMM
/// [`Algorithm::current`], on the selected backend (a GPU build's).
///
/// # Shapes
/// `x` `[N, C_in, H, W]`, `weight` `[C_out, C_in, kh, kw]`, `bias` `[C_out]` ->
/// `[N, C_out, (H + 2 ph - kh) / stride + 1, (W + 2 pw - kw) / stride + 1]`.
pub fn conv2d(
    x: Tensor<Selected, 4>,
    weight: Tensor<Selected, 4>,
    bias: Option<Tensor<Selected, 1>>,
    padding: [usize; 2],
    stride: usize,
) -> Tensor<Selected, 4> {
    let how = (Algorithm::current(), Precision::current());
    conv2d_by(x, weight, bias, (padding, stride), how)
}

/// [`conv2d`] by `algorithm`, with the operands in `precision`: with f16 they are cast (burn
/// fuses the input's cast into the element-wise kernel that wrote it, LN's), multiplied on the
/// f16 tensor-core path with f32 accumulation, and the output is f32 ([`super::precision`]).
pub fn conv2d_by(
    x: Tensor<Selected, 4>,
    weight: Tensor<Selected, 4>,
    bias: Option<Tensor<Selected, 1>>,
    (padding, stride): ([usize; 2], usize),
    (algorithm, precision): (Algorithm, Precision),
) -> Tensor<Selected, 4> {
    let options = ConvOptions::new([stride; 2], padding, [1, 1], 1);
    let (x, weight) = match precision.operand_dtype() {
        Some(half) => (x.cast(half), weight.cast(half)),
        None => (x, weight),
    };
    let out = fused_conv(
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
        bias.map(|b| b.into_primitive().tensor()),
        (options, algorithm),
    );
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// Registers the convolution as one custom operation of `x`'s fusion stream
/// ([`super::cube_op`]).
fn fused_conv(
    x: FloatTensor<Selected>,
    weight: FloatTensor<Selected>,
    bias: Option<FloatTensor<Selected>>,
    (options, algorithm): (ConvOptions<2>, Algorithm),
) -> FloatTensor<Selected> {
    let [n, _, h, w] = x.shape.dims();
    let [c_out, _, kh, kw] = weight.shape.dims();
    let [oh, ow] = out_size(&options, [h, w], [kh, kw]);
    let inputs = [Some(x), Some(weight), bias]
        .into_iter()
        .flatten()
        .collect();
    let shape = Shape::new([n, c_out, oh, ow]);
    let op = ImplicitConv { options, algorithm };
    cube_op::register_one("toonsmith_implicit_gemm_conv2d", inputs, shape, op)
}

/// Output rows and columns of a convolution with `options` of an input of `size` by a kernel
/// of `kernel`.
fn out_size(options: &ConvOptions<2>, size: [usize; 2], kernel: [usize; 2]) -> [usize; 2] {
    let o = options;
    [0, 1].map(|a| {
        calculate_conv_output_size(kernel[a], o.stride[a], o.padding[a], o.dilation[a], size[a])
    })
}

/// The operation: inputs `[x, weight]` or `[x, weight, bias]`, one output.
#[derive(Debug)]
struct ImplicitConv {
    options: ConvOptions<2>,
    algorithm: Algorithm,
}

impl ImplicitConv {
    /// The convolution by cubek's kernel, or its refusal.
    fn launch<R: CubeRuntime>(
        &self,
        x: CubeTensor<R>,
        weight: CubeTensor<R>,
        bias: Option<CubeTensor<R>>,
    ) -> std::result::Result<CubeTensor<R>, ConvSetupError> {
        let x = permute_nchw_to_nhwc(x);
        let weight = permute_nchw_to_nhwc(weight);
        let [n, h, w, _] = x.meta.shape().dims();
        let [c_out, kh, kw, _] = weight.meta.shape().dims();
        let [oh, ow] = out_size(&self.options, [h, w], [kh, kw]);
        let client = x.client.clone();
        let out_shape = Shape::new([n, oh, ow, c_out]);
        let out = empty_device_dtype(client.clone(), x.device.clone(), out_shape, DType::F32);
        let dtypes = f32_out(&x, &weight);
        let inputs = ConvolutionInputs::Forward {
            input: bind(x),
            weight: bind(weight),
            bias: bias.map(bind),
            out: out.clone().binding(),
        };
        let args = ConvolutionArgs {
            stride: self.options.stride,
            padding: self.options.padding,
            dilation: self.options.dilation,
        };
        launch_ref::<R, 2>(&self.algorithm.strategy(), &client, inputs, args, dtypes)?;
        Ok(permute_nhwc_to_nchw(out))
    }
}

/// The operands' formats as they are in memory, an f32 output.
fn f32_out<R: CubeRuntime>(lhs: &CubeTensor<R>, rhs: &CubeTensor<R>) -> MatmulElems {
    MatmulElems::from_globals(&MatmulGlobalElems {
        lhs: lhs.dtype.into(),
        rhs: rhs.dtype.into(),
        out: DType::F32.into(),
    })
}

/// An operand as cubek reads it.
fn bind<R: CubeRuntime>(t: CubeTensor<R>) -> InputBinding<R> {
    let dtype = t.dtype.into();
    InputBinding::new(t.binding(), dtype)
}

impl CubeKernel for ImplicitConv {
    fn run(&self, inputs: Vec<CubeTensor<Runtime>>) -> Vec<CubeTensor<Runtime>> {
        let mut inputs = inputs.into_iter();
        let (Some(x), Some(weight)) = (inputs.next(), inputs.next()) else {
            unreachable!("registered with input and weight")
        };
        let bias = inputs.next();
        let tried = self.launch(x.clone(), weight.clone(), bias.clone());
        let out = tried.unwrap_or_else(|err| {
            note_refusal(self.algorithm, "forward", &err);
            let [x, weight] = [x, weight].map(|t| cast(t, DType::F32));
            Cube::conv2d(x, weight, bias, self.options.clone())
        });
        vec![out]
    }
}

/// `w` with its values stored channels-last (`[C_out, kh, kw, C_in]` in memory), seen as NCHW
/// as before: what cubek's kernels read. A weight used for many convolutions (a model's, for
/// inference) is laid out once instead of being copied by cubek at every call (one launch per
/// convolution per image). Same values, same shape.
pub fn channels_last(w: Tensor<Selected, 4>) -> Tensor<Selected, 4> {
    let shape = Shape::new(w.dims());
    let inputs = vec![w.into_primitive().tensor()];
    float_tensor(cube_op::register_one(
        "toonsmith_channels_last",
        inputs,
        shape,
        ChannelsLast,
    ))
}

/// The operation of [`channels_last`].
#[derive(Debug)]
struct ChannelsLast;

impl CubeKernel for ChannelsLast {
    fn run(&self, inputs: Vec<CubeTensor<Runtime>>) -> Vec<CubeTensor<Runtime>> {
        inputs
            .into_iter()
            .map(|w| permute_nhwc_to_nchw(into_contiguous(permute_nchw_to_nhwc(w))))
            .collect()
    }
}

/// The weight gradient `[C_out, C_in, k, k]` (`dims`) of the convolution with zero padding
/// `pad` (read as zeros, not in memory) and `stride` of `x` whose output gradient is `g`, by cubek's implicit-GEMM `BackwardWeight` with
/// [`Algorithm::current`], one launch. Where cubek refuses, gathered windows
/// ([`im2col_autodiff::weight_grad`]) compute it and the refusal is recorded ([`refusal`]).
///
/// Not split over pixels: cubek 0.2's kernels give each output tile one block looping over
/// every pixel of the batch, so a layer whose `C_out x C_in k k` output has fewer tiles than
/// the GPU has multiprocessors (most of G's at 64-square tiles) leaves some idle; splitting the
/// sum into launches would not help, since launches on one stream run one after another. The
/// gathered-window path splits it by batching its product ([`im2col_autodiff`]).
///
/// # Shapes
/// `x` `[N, C_in, H, W]`, `g` `[N, C_out, (H + 2 pad - k) / stride + 1, (W + 2 pad - k) /
/// stride + 1]`.
pub fn weight_grad(
    x: Tensor<Selected, 4>,
    g: Tensor<Selected, 4>,
    dims: [usize; 4],
    (pad, stride): (usize, usize),
) -> Tensor<Selected, 4> {
    let inputs = vec![x.into_primitive().tensor(), g.into_primitive().tensor()];
    let op = ImplicitWgrad {
        dims,
        pad,
        stride,
        algorithm: Algorithm::current(),
    };
    let name = "toonsmith_implicit_gemm_wgrad";
    float_tensor(cube_op::register_one(name, inputs, Shape::new(dims), op))
}

/// The weight-gradient operation: inputs `[x, g]`, output `dL/dw` `dims`.
#[derive(Debug)]
struct ImplicitWgrad {
    dims: [usize; 4],
    pad: usize,
    stride: usize,
    algorithm: Algorithm,
}

impl ImplicitWgrad {
    /// The weight gradient by cubek's kernel, or its refusal.
    fn launch<R: CubeRuntime>(
        &self,
        x: CubeTensor<R>,
        g: CubeTensor<R>,
    ) -> std::result::Result<CubeTensor<R>, ConvSetupError> {
        let x = permute_nchw_to_nhwc(x);
        let g = permute_nchw_to_nhwc(g);
        let [c_out, c_in, kh, kw] = self.dims;
        let client = x.client.clone();
        let shape = Shape::new([c_out, kh, kw, c_in]);
        let dw = empty_device_dtype(client.clone(), x.device.clone(), shape, DType::F32);
        let dtypes = f32_out(&x, &g);
        let inputs = ConvolutionInputs::BackwardWeight {
            input: bind(x),
            out_grad: bind(g),
            weight_grad: dw.clone().binding(),
        };
        let args = ConvolutionArgs {
            stride: [self.stride; 2],
            padding: [self.pad; 2],
            dilation: [1; 2],
        };
        launch_ref::<R, 2>(&self.algorithm.strategy(), &client, inputs, args, dtypes)?;
        Ok(permute_nhwc_to_nchw(dw))
    }
}

impl CubeKernel for ImplicitWgrad {
    fn run(&self, inputs: Vec<CubeTensor<Runtime>>) -> Vec<CubeTensor<Runtime>> {
        let [x, g]: [CubeTensor<Runtime>; 2] = inputs
            .try_into()
            .unwrap_or_else(|_| unreachable!("registered with x and g"));
        let dw = self.launch(x.clone(), g.clone()).unwrap_or_else(|err| {
            note_refusal(self.algorithm, "weight gradient", &err);
            let [x, g] = [x, g].map(float_tensor::<Cube, 4>);
            let x = pad_zeros(x, [self.pad; 2]);
            let dw = im2col_autodiff::weight_grad(x, g, self.dims, self.stride);
            dw.into_primitive().tensor()
        });
        vec![dw]
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::device::{default_device, CpuBackend, CPU};
    use burn::tensor::module::conv2d as burn_conv2d;
    use burn::tensor::{Distribution, ElementConversion};

    #[test]
    fn every_algorithm_is_named_and_parsed_back() {
        let all: Vec<Algorithm> = Algorithm::all().collect();
        assert_eq!(all.len(), 18);
        for algorithm in all {
            assert_eq!(Algorithm::parse(&algorithm.to_string()).unwrap(), algorithm);
        }
        assert_eq!(Algorithm::DEFAULT.to_string(), "simple_sync_cyclic:cmma");
        let err = Algorithm::parse("fastest").unwrap_err().to_string();
        assert!(err.contains(ENV) && err.contains("fastest"), "{err}");
    }

    /// On this build's GPU, each algorithm's convolution (or burn's in its place where
    /// refused) equals burn's on the CPU, at stride 1 and 2, with a bias, with f32 and f16
    /// operands; the TF32 (and f16) margin. The result is f32 either way.
    #[test]
    fn convolution_equals_the_cpus() {
        let device = default_device();
        let x = Tensor::<CpuBackend, 4>::random([2, 16, 11, 14], Distribution::Default, &CPU);
        let w = Tensor::<CpuBackend, 4>::random([24, 16, 3, 3], Distribution::Default, &CPU);
        let b = Tensor::<CpuBackend, 1>::random([24], Distribution::Default, &CPU);
        let here4 =
            |t: &Tensor<CpuBackend, 4>| Tensor::<Selected, 4>::from_data(t.to_data(), &device);
        let cases = Algorithm::all()
            .flat_map(|a| [(a, Precision::F32), (a, Precision::F16)])
            .flat_map(|how| [(how, 1), (how, 2)]);
        for ((algorithm, precision), stride) in cases {
            let options = ConvOptions::new([stride; 2], [1, 1], [1, 1], 1);
            let want = burn_conv2d(x.clone(), w.clone(), Some(b.clone()), options);
            let bias = Tensor::<Selected, 1>::from_data(b.to_data(), &device);
            let got = conv2d_by(
                here4(&x),
                here4(&w),
                Some(bias),
                ([1, 1], stride),
                (algorithm, precision),
            );
            assert_eq!(got.dtype(), DType::F32);
            let got = Tensor::<CpuBackend, 4>::from_data(got.into_data(), &CPU);
            let scale: f32 = want.clone().abs().max().into_scalar().elem();
            let diff: f32 = (got - want).abs().max().into_scalar().elem();
            assert!(
                diff / scale < 1e-2,
                "{algorithm} {precision} stride {stride}: {diff} of {scale}"
            );
        }
    }

    /// On this build's GPU, the implicit-GEMM weight gradient (or gathered windows where cubek
    /// refuses it) equals the gathered windows' of the padded input on the CPU, at stride 1 and
    /// 2, with and without padding; the TF32 margin.
    #[test]
    fn weight_gradient_equals_the_cpus() {
        let device = default_device();
        for (pad, stride, k) in [(0, 1, 3), (1, 2, 3), (3, 1, 7), (1, 1, 3)] {
            let x = Tensor::<CpuBackend, 4>::random([2, 16, 13, 14], Distribution::Default, &CPU);
            let [oh, ow] = [13, 14].map(|size| (size + 2 * pad - k) / stride + 1);
            let g = Tensor::<CpuBackend, 4>::random([2, 24, oh, ow], Distribution::Default, &CPU);
            let dims = [24, 16, k, k];
            let padded = pad_zeros(x.clone(), [pad; 2]);
            let want = im2col_autodiff::weight_grad(padded, g.clone(), dims, stride);
            let here =
                |t: &Tensor<CpuBackend, 4>| Tensor::<Selected, 4>::from_data(t.to_data(), &device);
            let got = weight_grad(here(&x), here(&g), dims, (pad, stride));
            assert_eq!(got.dims(), dims);
            let got = Tensor::<CpuBackend, 4>::from_data(got.into_data(), &CPU);
            let scale: f32 = want.clone().abs().max().into_scalar().elem();
            let diff: f32 = (got - want).abs().max().into_scalar().elem();
            let case = format!("pad {pad} stride {stride} k {k}");
            assert!(diff / scale < 1e-2, "{case}: {diff} of {scale}");
        }
    }

    /// [`channels_last`] keeps the values and the shape, and a convolution with its weight
    /// equals the one with the weight as it was.
    #[test]
    fn channels_last_weights_keep_their_values() {
        let device = default_device();
        let w = Tensor::<CpuBackend, 4>::random([6, 5, 3, 3], Distribution::Default, &CPU);
        let x = Tensor::<CpuBackend, 4>::random([1, 5, 8, 9], Distribution::Default, &CPU);
        let here4 =
            |t: &Tensor<CpuBackend, 4>| Tensor::<Selected, 4>::from_data(t.to_data(), &device);
        let laid = channels_last(here4(&w));
        assert_eq!(laid.dims(), [6, 5, 3, 3]);
        let how = ([1, 1], 1);
        let plain = conv2d_by(
            here4(&x),
            here4(&w),
            None,
            how,
            (Algorithm::DEFAULT, Precision::F32),
        );
        let with_laid = conv2d_by(
            here4(&x),
            laid.clone(),
            None,
            how,
            (Algorithm::DEFAULT, Precision::F32),
        );
        let back = |t: Tensor<Selected, 4>| Tensor::<CpuBackend, 4>::from_data(t.into_data(), &CPU);
        let diff: f32 = (back(laid) - w).abs().max().into_scalar().elem();
        assert_eq!(diff, 0.0);
        let diff: f32 = (back(with_laid) - back(plain))
            .abs()
            .max()
            .into_scalar()
            .elem();
        assert!(diff < 1e-5, "{diff}");
    }
}
