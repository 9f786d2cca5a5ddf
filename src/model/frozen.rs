//! Layers of the frozen, pretrained feature networks (Inception, EfficientNet-Lite0): a bias-free
//! convolution kernel and a batch norm in inference mode, named as PyTorch names them so that
//! the original state dicts load without remapping.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::Tensor;

use crate::kernels;

/// A convolution kernel without bias, `[C_out, C_in / groups, kh, kw]`.
#[derive(Module, Debug)]
pub struct ConvWeight<B: Backend> {
    /// The kernel.
    pub weight: Param<Tensor<B, 4>>,
}

impl<B: Backend> ConvWeight<B> {
    /// A zero kernel of `shape` (placeholder until weights are loaded).
    pub fn zeros(shape: [usize; 4], device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::zeros(shape, device)),
        }
    }

    /// The convolution of `x` with this kernel, zero `padding` `[top and bottom, left and
    /// right]`, `stride` and `groups`: a dense one as gathered windows times a matmul on a GPU
    /// build that convolves so ([`kernels::gemm_conv_applies`]: where burn's convolution is its
    /// untuned direct kernel, which ran G at 1080p 6x slower on an H200) or by CubeCL's implicit
    /// GEMM where chosen (`TOONSMITH_GPU_CONV=implicit`), else burn's.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        padding: [usize; 2],
        stride: usize,
        groups: usize,
    ) -> Tensor<B, 4> {
        let weight = self.weight.val();
        if kernels::gemm_conv_applies::<B>(groups) {
            if kernels::implicit_applies::<B>() {
                return kernels::implicit_conv2d(x, weight, None, padding, stride);
            }
            return kernels::im2col::conv2d_rect(x, weight, None, padding, stride);
        }
        let options = ConvOptions::new([stride; 2], padding, [1, 1], groups);
        conv2d(x, weight, None, options)
    }
}

/// Batch norm with running statistics (inference only).
#[derive(Module, Debug)]
pub struct BatchNorm<B: Backend> {
    /// Scale.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift.
    pub bias: Param<Tensor<B, 1>>,
    /// Running mean.
    pub running_mean: Param<Tensor<B, 1>>,
    /// Running variance.
    pub running_var: Param<Tensor<B, 1>>,
}

impl<B: Backend> BatchNorm<B> {
    /// The identity batch norm over `channels`.
    pub fn new(channels: usize, device: &B::Device) -> Self {
        let ones = || Param::from_tensor(Tensor::ones([channels], device));
        let zeros = || Param::from_tensor(Tensor::zeros([channels], device));
        Self {
            weight: ones(),
            bias: zeros(),
            running_mean: zeros(),
            running_var: ones(),
        }
    }

    /// `(x - running_mean) / sqrt(running_var + epsilon) * weight + bias`, per channel, folded
    /// into one scale and one shift.
    pub fn forward(&self, x: Tensor<B, 4>, epsilon: f64) -> Tensor<B, 4> {
        let c = x.dims()[1];
        let scale = self.weight.val() / (self.running_var.val() + epsilon).sqrt();
        let shift = self.bias.val() - self.running_mean.val() * scale.clone();
        x * scale.reshape([1, c, 1, 1]) + shift.reshape([1, c, 1, 1])
    }
}
