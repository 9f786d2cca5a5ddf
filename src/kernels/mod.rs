//! toonsmith's own kernels for the hot spots. On the CPU, host-slice kernels used in place of
//! burn-flex's ops when the backend is [`crate::device::CpuBackend`] (inference) or
//! `Autodiff<CpuBackend>` (training, through [`autodiff`]) and the CPU has what the kernel
//! needs; the functions below move a tensor's data in and out. On the GPU (CubeCL) backends,
//! compositions of burn's generic ops and autodiff nodes with their own backward ([`im2col`],
//! [`im2col_autodiff`], [`depthwise`], [`ln_ops`]), and CubeCL kernels as operations of burn's
//! fusion stream (`implicit_gemm`, `ln_cube`). Results equal burn's up to float summation
//! order. Measurements: `docs/performance.md`.

#[cfg(feature = "flex")]
pub mod autodiff;
pub mod calls;
pub mod conv;
#[cfg(feature = "cube-ops")]
pub(crate) mod cube_op;
pub mod depthwise;
pub mod im2col;
pub mod im2col_autodiff;
#[cfg(feature = "cube-ops")]
pub mod implicit_gemm;
#[cfg(feature = "cube-ops")]
pub mod ln_cube;
pub mod ln_ops;
pub(crate) mod micro;
pub mod norm;
pub(crate) mod plans;
pub mod polyphase;
pub mod pool;
pub mod precision;
pub mod subpixel;
pub mod wgrad;
pub(crate) mod winograd;
pub(crate) mod winograd4;
pub(crate) mod winograd_grad;
pub(crate) mod winograd_rows;
pub(crate) mod winograd_rows_grad;

use std::any::{Any, TypeId};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::device::is_cpu_backend;
use rayon::prelude::*;

/// Whether the host convolution kernel takes this `stride` and `groups` on this machine (dense,
/// stride 1 or 2 by its phases, AVX-512 or AVX2), whatever the backend.
fn host_conv_takes(stride: usize, groups: usize) -> bool {
    (stride == 1 || stride == 2) && groups == 1 && conv::available()
}

/// Whether [`conv2d`] can run a convolution with this `stride` and `groups` on backend `B`.
pub fn conv2d_applies<B: Backend>(stride: usize, groups: usize) -> bool {
    is_cpu_backend::<B>() && host_conv_takes(stride, groups)
}

/// Whether [`gemm_conv2d`] runs a convolution with these `groups` on backend `B`: a dense one
/// on a GPU (CubeCL) backend unless [`im2col::GpuConv::current`] asks for burn's.
pub fn gemm_conv_applies<B: Backend>(groups: usize) -> bool {
    groups == 1
        && on_cubecl::<B>()
        && im2col::GpuConv::current(training::<B>()) != im2col::GpuConv::Burn
}

/// Whether [`depthwise::conv2d`] runs a convolution with these `groups` from `c_in` to `c_out`
/// channels on backend `B`: a depthwise one (one filter per channel) in training on a GPU
/// (CubeCL) backend. burn's own is right for inference: 0.13 ms for G's 3x3 at 64x64, batch 8,
/// on an H200.
pub fn depthwise_applies<B: Backend>(groups: usize, c_in: usize, c_out: usize) -> bool {
    groups > 1 && groups == c_in && c_out == c_in && on_cubecl::<B>() && training::<B>()
}

/// Whether [`gpu_layer_norm`] runs LN on backend `B`: in training on a GPU (CubeCL) backend.
pub fn gpu_layer_norm_applies<B: Backend>() -> bool {
    on_cubecl::<B>() && training::<B>()
}

/// LN with `epsilon`, `gamma` and `beta`, then the leaky ReLU of `slope` if given, as one
/// autodiff node of the selected backend ([`ln_ops::layer_norm`]). Check
/// [`gpu_layer_norm_applies`] first.
pub fn gpu_layer_norm<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
    slope: Option<f64>,
) -> Tensor<B, 4> {
    use crate::device::{Selected, SelectedAutodiff};
    let x: Tensor<SelectedAutodiff, 4> = same_type(x);
    let (gamma, beta) = (same_type(gamma), same_type(beta));
    same_type(ln_ops::layer_norm::<Selected>(
        x, gamma, beta, epsilon, slope,
    ))
}

/// Whether `B` is the selected backend's training (autodiff) backend.
fn training<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<crate::device::SelectedAutodiff>()
}

/// Convolution with zero padding `pad` and `stride` by gathered windows or CubeCL's implicit
/// GEMM ([`im2col::GpuConv`]): for training on the selected backend
/// ([`crate::device::SelectedAutodiff`]) as one node with its own backward
/// ([`im2col_autodiff`]) unless `TOONSMITH_GPU_CONV=gemm-ops`, else through burn's ops
/// ([`im2col::conv2d`]); for inference [`im2col::conv2d`], or the implicit GEMM where chosen.
/// Check [`gemm_conv_applies`] first.
pub fn gemm_conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    pad: usize,
    stride: usize,
) -> Tensor<B, 4> {
    use crate::device::{Selected, SelectedAutodiff};
    if implicit_applies::<B>() {
        return implicit_conv2d(x, weight, bias, [pad; 2], stride);
    }
    let gemm_node = training::<B>() && im2col::GpuConv::current(true) != im2col::GpuConv::GemmOps;
    if !gemm_node {
        return im2col::conv2d(x, weight, bias, pad, stride);
    }
    let x: Tensor<SelectedAutodiff, 4> = same_type(x);
    let weight = same_type(weight);
    let bias = bias.map(same_type);
    same_type(im2col_autodiff::conv2d::<Selected>(
        x, weight, bias, pad, stride,
    ))
}

/// The kernels' settings of the environment, checked: `TOONSMITH_CPU_ISA`
/// ([`conv::Isa::lowered`]), `TOONSMITH_GPU_CONV`
/// ([`im2col::GpuConv::from_env`], returned), `TOONSMITH_GPU_LN` ([`ln_ops::LnSums::from_env`]),
/// `TOONSMITH_GPU_WGRAD` ([`im2col_autodiff::WeightGrad::from_env`]) and, in builds with the
/// implicit GEMM, `TOONSMITH_GPU_IMPLICIT`
/// (`implicit_gemm::Algorithm::from_env`); an error names a variable set to no valid value.
/// The program and the bench call it at start.
pub fn gpu_settings_from_env() -> crate::error::Result<Option<im2col::GpuConv>> {
    env_choice(conv::ISA_ENV, |value| conv::Isa::lowered(None, value))?;
    #[cfg(feature = "cube-ops")]
    implicit_gemm::Algorithm::from_env()?;
    ln_ops::LnSums::from_env()?;
    im2col_autodiff::WeightGrad::from_env()?;
    im2col::GpuConv::from_env()
}

/// Whether [`implicit_conv2d`] runs convolutions on backend `B`: the selected GPU backend
/// (outside autodiff: inference, and the products inside [`im2col_autodiff`]'s node) when
/// [`im2col::GpuConv::current`] is [`im2col::GpuConv::Implicit`].
pub(crate) fn implicit_applies<B: Backend>() -> bool {
    cfg!(feature = "cube-ops")
        && TypeId::of::<B>() == TypeId::of::<crate::device::Selected>()
        && im2col::GpuConv::current(false) == im2col::GpuConv::Implicit
}

/// Convolution with zero `padding` `[rows, columns]` and `stride` by CubeCL's implicit GEMM
/// ([`implicit_gemm::conv2d`]); gathered windows ([`im2col::conv2d_rect`]) in a build without
/// it. Check [`implicit_applies`] first.
pub(crate) fn implicit_conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    padding: [usize; 2],
    stride: usize,
) -> Tensor<B, 4> {
    #[cfg(feature = "cube-ops")]
    {
        let bias = bias.map(same_type);
        same_type(implicit_gemm::conv2d(
            same_type(x),
            same_type(weight),
            bias,
            padding,
            stride,
        ))
    }
    #[cfg(not(feature = "cube-ops"))]
    im2col::conv2d_rect(x, weight, bias, padding, stride)
}

/// Whether [`implicit_weight_grad`] computes the weight gradients of [`im2col_autodiff`]'s node
/// on backend `B`: the selected GPU backend (the node's inner one) when
/// [`im2col_autodiff::WeightGrad::current`] is [`im2col_autodiff::WeightGrad::Implicit`].
pub(crate) fn implicit_wgrad_applies<B: Backend>() -> bool {
    cfg!(feature = "cube-ops")
        && TypeId::of::<B>() == TypeId::of::<crate::device::Selected>()
        && im2col_autodiff::WeightGrad::current() == im2col_autodiff::WeightGrad::Implicit
}

/// The weight gradient `[C_out, C_in, k, k]` (`dims`) of a convolution with zero padding `pad`
/// and `stride` of `x` with output gradient `g`, by CubeCL's implicit GEMM
/// ([`implicit_gemm::weight_grad`]); gathered windows ([`im2col_autodiff::weight_grad`]) in a
/// build without it. Check [`implicit_wgrad_applies`] first.
pub(crate) fn implicit_weight_grad<B: Backend>(
    x: Tensor<B, 4>,
    g: Tensor<B, 4>,
    dims: [usize; 4],
    (pad, stride): (usize, usize),
) -> Tensor<B, 4> {
    #[cfg(feature = "cube-ops")]
    return same_type(implicit_gemm::weight_grad(
        same_type(x),
        same_type(g),
        dims,
        (pad, stride),
    ));
    #[cfg(not(feature = "cube-ops"))]
    im2col_autodiff::weight_grad(im2col::pad_zeros(x, [pad; 2]), g, dims, stride)
}

/// `module` with its 4-D parameters (convolution weights) stored channels-last where CubeCL's
/// implicit GEMM runs the convolutions of backend `B` (`implicit_applies`,
/// `implicit_gemm::channels_last`), else as it is: for a model kept for inference, whose
/// weights would otherwise be copied into that layout at every call.
pub fn weights_for_inference<B: Backend, M: burn::module::Module<B>>(module: M) -> M {
    #[cfg(feature = "cube-ops")]
    if implicit_applies::<B>() {
        return module.map(&mut ChannelsLastWeights);
    }
    module
}

/// Lays out each 4-D float parameter with [`implicit_gemm::channels_last`].
#[cfg(feature = "cube-ops")]
struct ChannelsLastWeights;

#[cfg(feature = "cube-ops")]
impl<B: Backend> burn::module::ModuleMapper<B> for ChannelsLastWeights {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<B, D>>,
    ) -> burn::module::Param<Tensor<B, D>> {
        if D != 4 || TypeId::of::<B>() != TypeId::of::<crate::device::Selected>() {
            return param;
        }
        param.map(|w| same_type(implicit_gemm::channels_last(same_type(w))))
    }
}

/// The environment variable `var` parsed by `parse` if set (its error, naming the variable, if
/// the value is not one `parse` takes), else `None`: how each GPU choice reads its variable.
pub(crate) fn env_choice<T>(
    var: &str,
    parse: impl FnOnce(&str) -> crate::error::Result<T>,
) -> crate::error::Result<Option<T>> {
    match std::env::var(var) {
        Ok(value) => parse(&value).map(Some),
        Err(_) => Ok(None),
    }
}

/// The float tensor of a backend primitive (what autodiff nodes receive and register).
pub(crate) fn float_tensor<B: Backend, const D: usize>(
    primitive: burn::tensor::ops::FloatTensor<B>,
) -> Tensor<B, D> {
    Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(primitive))
}

/// Moves `value` to type `U`, which it is (callers check the backend's `TypeId` first).
pub(crate) fn same_type<T: 'static, U: 'static>(value: T) -> U {
    let mut slot = Some(value);
    let any: &mut dyn Any = &mut slot;
    match any.downcast_mut::<Option<U>>().and_then(Option::take) {
        Some(v) => v,
        None => unreachable!("callers check the backend's TypeId"),
    }
}

/// Whether `B` is a CubeCL (GPU) backend, plain or under autodiff: in a build with one, every
/// backend but the CPU one and its autodiff.
fn on_cubecl<B: Backend>() -> bool {
    let gpu_build = cfg!(any(
        feature = "cuda-backend",
        feature = "vulkan-backend",
        feature = "wgpu"
    ));
    gpu_build && !host_backend::<B>()
}

/// Whether `B`'s tensors live in host memory: the CPU backend, plain or under autodiff.
pub(crate) fn host_backend<B: Backend>() -> bool {
    #[cfg(feature = "flex")]
    return is_cpu_backend::<B>() || autodiff::is_cpu_autodiff::<B>();
    #[cfg(not(feature = "flex"))]
    false
}

/// Whether [`layer_norm`] and [`upsample_nearest2`] replace burn's ops on backend `B`.
pub fn layer_norm_applies<B: Backend>() -> bool {
    is_cpu_backend::<B>()
}

/// Nearest-neighbour x2 upsampling in one pass (burn's expand-and-reshape walks a strided
/// view element by element).
///
/// # Shapes
/// `[N, C, H, W]` -> `[N, C, 2H, 2W]`.
pub fn upsample_nearest2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    use rayon::prelude::*;
    let device = x.device();
    let [n, c, h, w] = x.dims();
    let values = host_slice(x);
    let mut out = vec![0.0f32; values.len() * 4];
    out.par_chunks_mut(4 * h * w)
        .zip(values.par_chunks(h * w))
        .for_each(|(dst, src)| {
            for (y, row) in src.chunks(w).enumerate() {
                let top = &mut dst[2 * y * 2 * w..(2 * y + 1) * 2 * w];
                for (pair, &v) in top.chunks_mut(2).zip(row) {
                    pair.fill(v);
                }
                dst.copy_within(2 * y * 2 * w..(2 * y + 1) * 2 * w, (2 * y + 1) * 2 * w);
            }
        });
    Tensor::from_data(TensorData::new(out, [n, c, 2 * h, 2 * w]), &device)
}

/// LN over `(C, H, W)` of each image by [`norm`]: with the image's own statistics, or with
/// `stats` (mean, variance) when given; then the leaky ReLU of `slope` if given.
///
/// # Shapes
/// `x` `[N, C, H, W]`, `gamma` and `beta` `[C]` -> `[N, C, H, W]`.
pub fn layer_norm<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
    stats: Option<(f64, f64)>,
    slope: Option<f64>,
) -> Tensor<B, 4> {
    let device = x.device();
    let dims = x.dims();
    let mut values = host_values(x);
    let gamma = host_slice(gamma);
    let beta = host_slice(beta);
    let image = dims[1] * dims[2] * dims[3];
    let slope = slope.map(|s| s as f32);
    norm::layer_norm_batch(&mut values, image, (stats, epsilon), &gamma, &beta, slope);
    Tensor::from_data(TensorData::new(values, dims), &device)
}

/// Whether [`autodiff::conv2d`] can run a convolution with this `stride` and `groups` on
/// backend `B` (the CPU backend under autodiff, for training).
pub fn conv2d_autodiff_applies<B: Backend>(stride: usize, groups: usize) -> bool {
    #[cfg(feature = "flex")]
    {
        autodiff::is_cpu_autodiff::<B>() && host_conv_takes(stride, groups)
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (stride, groups);
        false
    }
}

/// `f` on every image of a batch: `input` in images of `in_len` values, each written into its
/// `out_len` slot of the returned batch. The images are shared out to the rayon threads too:
/// `f`'s own parallel loops then split a large image, while a batch of small ones (the patch
/// discriminator's 18 patches of 96x96 and less) runs one image per thread instead of paying
/// each image's fork and join.
pub(crate) fn per_image(
    input: &[f32],
    (in_len, out_len): (usize, usize),
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let images = input.len() / in_len.max(1);
    let mut out = vec![0.0f32; images * out_len];
    out.par_chunks_mut(out_len.max(1))
        .zip(input.par_chunks(in_len.max(1)))
        .for_each(|(dst, src)| f(src, dst));
    out
}

/// `t`'s values as a vector of its own: on the CPU backend the tensor's buffer itself when
/// nothing else holds it, else one copy (burn-flex's `into_data` copies a shared or narrowed
/// buffer up to three times: half of a tiled 3840x2160 forward, whose kept tile states are
/// shared). Read-only callers take [`host_slice`], which copies nothing.
pub(crate) fn host_values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    #[cfg(feature = "flex")]
    if is_cpu_backend::<B>() {
        return flex_values(flex_tensor(t));
    }
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default()
}

/// The CPU backend's tensor behind `t` (callers check [`is_cpu_backend`]).
#[cfg(feature = "flex")]
fn flex_tensor<B: Backend, const D: usize>(t: Tensor<B, D>) -> burn_flex::FlexTensor {
    same_type::<_, Tensor<crate::device::CpuBackend, D>>(t)
        .into_primitive()
        .tensor()
}

/// A CPU-backend tensor's values: its buffer when it owns all of it exactly, else one copy of
/// the values it views.
#[cfg(feature = "flex")]
pub(crate) fn flex_values(t: burn_flex::FlexTensor) -> Vec<f32> {
    let whole = t.is_unique()
        && t.layout().start_offset() == 0
        && t.bytes().len() == t.layout().num_elements() * size_of::<f32>();
    if let (false, Some(values)) = (whole, t.as_slice::<f32>()) {
        return values.to_vec();
    }
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default()
}

/// A tensor's f32 values on the host, for reading: a CPU-backend tensor's own buffer where it
/// is contiguous f32 (no copy, even when other tensors share it), else a vector of them.
pub(crate) struct HostSlice(HostData);

enum HostData {
    #[cfg(feature = "flex")]
    Flex(burn_flex::FlexTensor),
    Owned(Vec<f32>),
}

impl std::ops::Deref for HostSlice {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match &self.0 {
            #[cfg(feature = "flex")]
            HostData::Flex(t) => t.as_slice::<f32>().unwrap_or_default(),
            HostData::Owned(values) => values,
        }
    }
}

/// `t`'s values for reading ([`HostSlice`]).
pub(crate) fn host_slice<B: Backend, const D: usize>(t: Tensor<B, D>) -> HostSlice {
    #[cfg(feature = "flex")]
    if is_cpu_backend::<B>() {
        let flex = flex_tensor(t);
        return HostSlice(match flex.as_slice::<f32>() {
            Some(_) => HostData::Flex(flex),
            None => HostData::Owned(flex_values(flex)),
        });
    }
    HostSlice(HostData::Owned(host_values(t)))
}

/// Stride-1 or stride-2 convolution with zero padding `pad` by [`conv::conv2d`] (stride 2 by
/// its phases, [`polyphase`]), image by image. Check [`conv2d_applies`] first. The weights'
/// plans are kept between calls (`plans`: this is inference, whose weights are the same
/// image after image).
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
    let device = x.device();
    let [n, c_in, h, w] = x.dims();
    let [c_out, _, k, _] = weight.dims();
    let shape = conv::ConvShape {
        c_in,
        c_out,
        h,
        w,
        k,
        pad,
    };
    let x = host_slice(x);
    let weight = host_slice(weight);
    let bias = bias.map(host_slice);
    let frozen = true;
    let (out, [oh, ow]) =
        polyphase::conv2d_batch(&x, &weight, bias.as_deref(), &shape, stride, frozen);
    Tensor::from_data(TensorData::new(out, [n, c_out, oh, ow]), &device)
}

#[cfg(test)]
pub(crate) mod test_values {
    /// `n` deterministic values in [-0.5, 0.5) (a multiplicative hash of the index and `seed`).
    pub fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                v as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Input coordinate of padded coordinate `pos` (`pad` zeros before `len` values), if any.
    pub fn unpadded(pos: usize, pad: usize, len: usize) -> Option<usize> {
        pos.checked_sub(pad).filter(|&p| p < len)
    }

    /// Stride-1 convolution by direct summation in f64 (the kernels' yardstick).
    pub fn direct_conv(
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        s: &super::conv::ConvShape,
    ) -> Vec<f32> {
        let [oh, ow] = s.out_size();
        let mut out = vec![0.0; s.c_out * oh * ow];
        for o in 0..s.c_out {
            for y in 0..oh {
                for xo in 0..ow {
                    let mut sum = bias.map_or(0.0, |b| b[o] as f64);
                    for c in 0..s.c_in {
                        for ky in 0..s.k {
                            for kx in 0..s.k {
                                let (Some(iy), Some(ix)) =
                                    (unpadded(y + ky, s.pad, s.h), unpadded(xo + kx, s.pad, s.w))
                                else {
                                    continue;
                                };
                                let wv = w[((o * s.c_in + c) * s.k + ky) * s.k + kx] as f64;
                                sum += wv * x[(c * s.h + iy) * s.w + ix] as f64;
                            }
                        }
                    }
                    out[(o * oh + y) * ow + xo] = sum as f32;
                }
            }
        }
        out
    }

    /// `dL/dW` of a stride-1 convolution over `n` images by direct summation in f64.
    pub fn direct_weight_grad(
        x: &[f32],
        g: &[f32],
        s: &super::conv::ConvShape,
        n: usize,
    ) -> Vec<f32> {
        let [oh, ow] = s.out_size();
        let mut dw = vec![0.0f64; s.c_out * s.c_in * s.k * s.k];
        for i in 0..n {
            for o in 0..s.c_out {
                for c in 0..s.c_in {
                    for ky in 0..s.k {
                        for kx in 0..s.k {
                            let mut sum = 0.0f64;
                            for y in 0..oh {
                                for xo in 0..ow {
                                    let (Some(iy), Some(ix)) = (
                                        unpadded(y + ky, s.pad, s.h),
                                        unpadded(xo + kx, s.pad, s.w),
                                    ) else {
                                        continue;
                                    };
                                    let gv = g[((i * s.c_out + o) * oh + y) * ow + xo] as f64;
                                    let xv = x[((i * s.c_in + c) * s.h + iy) * s.w + ix] as f64;
                                    sum += gv * xv;
                                }
                            }
                            dw[((o * s.c_in + c) * s.k + ky) * s.k + kx] += sum;
                        }
                    }
                }
            }
        }
        dw.into_iter().map(|v| v as f32).collect()
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::device::{CpuBackend, CPU};

    fn ramp(dims: [usize; 4]) -> Tensor<CpuBackend, 4> {
        let n = dims.iter().product::<usize>();
        let values = (0..n).map(|i| i as f32).collect::<Vec<_>>();
        Tensor::from_data(TensorData::new(values, dims), &CPU)
    }

    /// A shared tensor is read where it lies, and a vector of its own is a copy that leaves the
    /// other holder's values alone.
    #[test]
    fn shared_buffers_are_read_in_place_and_copied_to_own() {
        let t = ramp([1, 2, 3, 4]);
        let kept = t.clone();
        let kept_at = flex_tensor(kept.clone())
            .as_slice::<f32>()
            .map(<[f32]>::as_ptr);
        let read = host_slice(t.clone());
        assert_eq!(
            Some(read.as_ptr()),
            kept_at,
            "host_slice copied a shared buffer"
        );
        let mut own = host_values(t);
        assert_ne!(Some(own.as_ptr()), kept_at);
        own[0] = -1.0;
        assert_eq!(kept.into_data().to_vec::<f32>().unwrap()[0], 0.0);
    }

    /// Narrowed and permuted views give the values they show, as `into_data` does.
    #[test]
    fn views_give_the_values_they_show() {
        let t = ramp([1, 2, 5, 6]);
        let cases = [
            t.clone().slice([0..1, 1..2, 0..5, 0..6]),
            t.clone().slice([0..1, 0..2, 1..4, 2..5]),
            t.clone().swap_dims(2, 3),
            t.clone(),
        ];
        for view in cases {
            let expected = view.clone().into_data().to_vec::<f32>().unwrap();
            assert_eq!(&*host_slice(view.clone()), expected.as_slice());
            assert_eq!(host_values(view), expected);
        }
    }
}
