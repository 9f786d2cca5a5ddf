//! Dense convolution by CubeCL's implicit GEMM (burn-cubecl's `ConvStrategy::ImplicitGemm`:
//! cubek's tensor-core tiled matrix product that reads each tile of windows straight from the
//! input instead of gathering them into memory), called directly from the untuned builds,
//! where burn's own `conv2d` would run its direct kernel. It is one custom operation of burn's
//! fusion stream (`TOONSMITH_GPU_CONV=implicit`, [`super::im2col::GpuConv::Implicit`]).
//!
//! Why: on an H200 the gathered-window path spends its convolution time in burn's untuned
//! matmul at 15-35 TFLOP/s and in copying windows (71 of the 1080p forward's 110 ms of
//! kernels, `docs/performance.md`, session 17), while CubeCL's autotuner, where it ran (session
//! 15), chose these implicit GEMMs for every dense forward shape. This kernel needs tensor
//! cores (CMMA); where the device or the shape is refused (`ConvSetupError`: lavapipe, an old
//! GPU) the operation runs burn's own convolution of the build instead, and [`refusal`] says
//! why, so a benchmark can say which kernel it timed.

use std::sync::OnceLock;

use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};
use burn::tensor::{Shape, Tensor, TensorPrimitive};
use burn_cubecl::kernel::conv::{conv_forward, ConvStrategy};
use burn_cubecl::CubeBackend;
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};

use super::same_type;
use crate::device::Selected;

/// The first reason the implicit GEMM was refused in this process, if it was.
static REFUSAL: OnceLock<String> = OnceLock::new();

/// Why the implicit GEMM was refused (and burn's own convolution ran instead), if it was
/// refused in this process.
pub fn refusal() -> Option<&'static str> {
    REFUSAL.get().map(String::as_str)
}

/// burn's GPU backend without fusion: [`Selected`] is `Fusion<Cube>` (checked at compile time
/// by [`fused_is_selected`]).
#[cfg(feature = "cuda-backend")]
type Cube = CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;
/// burn's GPU backend without fusion: [`Selected`] is `Fusion<Cube>` (checked at compile time
/// by [`fused_is_selected`]).
#[cfg(not(feature = "cuda-backend"))]
type Cube = CubeBackend<cubecl::wgpu::WgpuRuntime, f32, i32, u8>;

/// Compiles only where [`Selected`] is `Fusion<Cube>`.
#[allow(dead_code)]
fn fused_is_selected(x: Tensor<Fusion<Cube>, 1>) -> Tensor<Selected, 1> {
    x
}

/// Convolution with zero `padding` (`[rows, columns]`) and `stride` by the implicit GEMM, on the
/// selected backend (a GPU build's).
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
    let options = ConvOptions::new([stride; 2], padding, [1, 1], 1);
    let primitive = |t: FloatTensor<Selected>| -> FloatTensor<Fusion<Cube>> { same_type(t) };
    let out = fused_conv(
        primitive(x.into_primitive().tensor()),
        primitive(weight.into_primitive().tensor()),
        bias.map(|b| primitive(b.into_primitive().tensor())),
        options,
    );
    Tensor::from_primitive(TensorPrimitive::Float(same_type(out)))
}

/// Registers the convolution as one custom operation of `x`'s fusion stream: its inputs'
/// pending operations run first, its output joins the stream like any op's.
fn fused_conv(
    x: FloatTensor<Fusion<Cube>>,
    weight: FloatTensor<Fusion<Cube>>,
    bias: Option<FloatTensor<Fusion<Cube>>>,
    options: ConvOptions<2>,
) -> FloatTensor<Fusion<Cube>> {
    let [n, _, h, w] = x.shape.dims();
    let [c_out, _, kh, kw] = weight.shape.dims();
    let out_size = |size: usize, k: usize, axis: usize| {
        (size + 2 * options.padding[axis] - k) / options.stride[axis] + 1
    };
    let shape = Shape::new([n, c_out, out_size(h, kh, 0), out_size(w, kw, 1)]);
    let client = x.client.clone();
    let mut streams = OperationStreams::with_inputs([&x, &weight]);
    let mut inputs = vec![x.into_ir(), weight.into_ir()];
    if let Some(bias) = bias {
        streams.tensor(&bias);
        inputs.push(bias.into_ir());
    }
    let dtype = inputs[0].dtype;
    let out = TensorIr::uninit(client.create_empty_handle(), shape, dtype);
    let desc = CustomOpIr::new("toonsmith_implicit_gemm_conv2d", &inputs, &[out]);
    let op = ImplicitConv {
        desc: desc.clone(),
        options,
    };
    client
        .register(streams, OperationIr::Custom(desc), op)
        .output()
}

/// The recorded operation: inputs `[x, weight]` or `[x, weight, bias]`, one output.
#[derive(Debug)]
struct ImplicitConv {
    desc: CustomOpIr,
    options: ConvOptions<2>,
}

impl Operation<<Cube as FusionBackend>::FusionRuntime> for ImplicitConv {
    fn execute(
        &self,
        handles: &mut HandleContainer<
            <<Cube as FusionBackend>::FusionRuntime as FusionRuntime>::FusionHandle,
        >,
    ) {
        let inputs = &self.desc.inputs;
        let x = handles.get_float_tensor::<Cube>(&inputs[0]);
        let weight = handles.get_float_tensor::<Cube>(&inputs[1]);
        let bias = inputs
            .get(2)
            .map(|bias| handles.get_float_tensor::<Cube>(bias));
        let tried = conv_forward(
            x.clone(),
            weight.clone(),
            bias.clone(),
            self.options.clone(),
            ConvStrategy::ImplicitGemm,
        );
        let out = tried.unwrap_or_else(|err| {
            let why = format!("{err:?}");
            let _ = REFUSAL.set(why.split_whitespace().collect::<Vec<_>>().join(" "));
            Cube::conv2d(x, weight, bias, self.options.clone())
        });
        handles.register_float_tensor::<Cube>(&self.desc.outputs[0].id, out);
    }
}
