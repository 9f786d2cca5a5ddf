//! A kernel of toonsmith's own (or one of CubeCL's, launched with a chosen strategy) as one
//! custom operation of burn's fusion stream: the stream runs the inputs' pending operations
//! first, hands the kernel burn-cubecl's tensors, and the outputs join the stream like any op's
//! (the pattern burn-vision uses). [`super::implicit_gemm`] and [`super::ln_cube`] are built on it.

use std::fmt;

use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeBackend;
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{FusionBackend, FusionRuntime};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};

use crate::device::Selected;

/// The CubeCL runtime of the build's GPU backend.
#[cfg(feature = "cuda-backend")]
pub(crate) type Runtime = cubecl::cuda::CudaRuntime;
/// The CubeCL runtime of the build's GPU backend.
#[cfg(not(feature = "cuda-backend"))]
pub(crate) type Runtime = cubecl::wgpu::WgpuRuntime;

/// burn's GPU backend without fusion: [`Selected`] is `Fusion<Cube>` ([`register`] takes one's
/// tensors for the other's, so a build where it is not does not compile).
pub(crate) type Cube = CubeBackend<Runtime, f32, i32, u8>;

/// What a custom operation computes: its outputs from its inputs, in the order registered.
pub(crate) trait CubeKernel: fmt::Debug + Send + Sync + 'static {
    /// The outputs, one per shape given to [`register`].
    fn run(&self, inputs: Vec<CubeTensor<Runtime>>) -> Vec<CubeTensor<Runtime>>;
}

/// The recorded operation.
#[derive(Debug)]
struct Op<K> {
    desc: CustomOpIr,
    kernel: K,
}

impl<K: CubeKernel> Operation<<Cube as FusionBackend>::FusionRuntime> for Op<K> {
    fn execute(
        &self,
        handles: &mut HandleContainer<
            <<Cube as FusionBackend>::FusionRuntime as FusionRuntime>::FusionHandle,
        >,
    ) {
        let inputs = self
            .desc
            .inputs
            .iter()
            .map(|t| handles.get_float_tensor::<Cube>(t))
            .collect();
        let outputs = self.kernel.run(inputs);
        for (ir, tensor) in self.desc.outputs.iter().zip(outputs) {
            handles.register_float_tensor::<Cube>(&ir.id, tensor);
        }
    }
}

/// Registers `kernel` as the operation `name` of the fusion stream, on `inputs` (float
/// tensors of [`Selected`], of any float format), with f32 outputs of `shapes` (toonsmith's
/// tensors between operations are f32): the outputs.
pub(crate) fn register<K: CubeKernel>(
    name: &'static str,
    inputs: Vec<FloatTensor<Selected>>,
    shapes: Vec<Shape>,
    kernel: K,
) -> Vec<FloatTensor<Selected>> {
    let client = inputs[0].client.clone();
    let streams = OperationStreams::with_inputs(&inputs);
    let inputs: Vec<TensorIr> = inputs.into_iter().map(|t| t.into_ir()).collect();
    let outputs: Vec<TensorIr> = shapes
        .into_iter()
        .map(|shape| TensorIr::uninit(client.create_empty_handle(), shape, DType::F32))
        .collect();
    let desc = CustomOpIr::new(name, &inputs, &outputs);
    let op = Op {
        desc: desc.clone(),
        kernel,
    };
    client.register(streams, OperationIr::Custom(desc), op)
}

/// [`register`] with one output.
pub(crate) fn register_one<K: CubeKernel>(
    name: &'static str,
    inputs: Vec<FloatTensor<Selected>>,
    shape: Shape,
    kernel: K,
) -> FloatTensor<Selected> {
    register(name, inputs, vec![shape], kernel).output()
}
