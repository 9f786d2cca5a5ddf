//! The generator G of Fig. 10: an encoder (two stride-2 stages), four depthwise-separable
//! ResBlocks at 1/4 resolution, a decoder with two nearest x2 upsampling stages, and a tanh.
//!
//! Tensor names (safetensors keys) follow the fields: `stem.conv.weight`, `stem.norm.weight`,
//! `res_blocks.0.expand.conv.weight`, ..., `to_rgb.weight`. Convolution weights are PyTorch's
//! `[C_out, C_in/groups, k, k]`, LN parameters those of `nn.GroupNorm(1, C)`, so the network can
//! be rebuilt in a few lines of PyTorch (see `scripts/reference.py`).

use burn::module::Module;
use burn::tensor::activation::tanh;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::layers::{upsample_nearest2, Conv, ConvNormAct, ConvSpec, Padding};
use crate::error::{Error, Result};

/// Settings of the generator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Padding of every convolution. Default: zeros (the paper is silent; PyTorch ports pad with
    /// zeros, the official code reflects).
    pub padding: Padding,
    /// Epsilon of LN. Default: 1e-5 (PyTorch's GroupNorm; the official code uses 1e-12).
    pub ln_epsilon: f64,
    /// Number of ResBlocks. Default: 4 (Fig. 10).
    pub res_blocks: usize,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            padding: Padding::Zeros,
            ln_epsilon: 1e-5,
            res_blocks: 4,
        }
    }
}

/// The side lengths of G's input must be multiples of this (two stride-2 stages).
pub const SIZE_MULTIPLE: usize = 4;

impl GeneratorConfig {
    /// Builds G with He-initialised convolutions.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Generator<B> {
        let block = |c_in, c_out, k, s| self.unit(c_in, c_out, k, s, true, device);
        Generator {
            stem: block(3, 32, 7, 1),
            down1: block(32, 64, 3, 2),
            down1_conv: block(64, 64, 3, 1),
            down2: block(64, 128, 3, 2),
            down2_conv: block(128, 256, 3, 1),
            res_blocks: (0..self.res_blocks)
                .map(|_| self.res_block(device))
                .collect(),
            neck: block(256, 128, 3, 1),
            up1: block(128, 128, 3, 1),
            up1_conv: block(128, 128, 3, 1),
            up2: block(128, 64, 3, 1),
            up2_conv1: block(64, 64, 3, 1),
            up2_conv2: block(64, 64, 3, 1),
            head: block(64, 32, 7, 1),
            to_rgb: self.spec(32, 3, 1, 1).init(device),
        }
    }

    fn spec(&self, c_in: usize, c_out: usize, kernel: usize, stride: usize) -> ConvSpec {
        ConvSpec {
            padding: self.padding,
            ..ConvSpec::new(c_in, c_out, kernel, stride)
        }
    }

    fn unit<B: Backend>(
        &self,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        act: bool,
        device: &B::Device,
    ) -> ConvNormAct<B> {
        let spec = self.spec(c_in, c_out, kernel, stride);
        ConvNormAct::new(spec, true, act, self.ln_epsilon, device)
    }

    fn res_block<B: Backend>(&self, device: &B::Device) -> ResBlock<B> {
        let depthwise = ConvSpec {
            groups: 128,
            ..self.spec(128, 128, 3, 1)
        };
        ResBlock {
            expand: self.unit(256, 128, 1, 1, true, device),
            depthwise: ConvNormAct::new(depthwise, true, true, self.ln_epsilon, device),
            project: self.unit(128, 256, 1, 1, false, device),
        }
    }
}

/// The ResBlock of Fig. 10: `Conv 1x1/128, LN, lRelu -> DConv 3x3/128, LN, lRelu ->
/// Conv 1x1/256, LN`, plus the input.
#[derive(Module, Debug)]
pub struct ResBlock<B: Backend> {
    /// 1x1 convolution 256 -> 128.
    pub expand: ConvNormAct<B>,
    /// Depthwise 3x3 convolution on 128 channels.
    pub depthwise: ConvNormAct<B>,
    /// 1x1 convolution 128 -> 256, LN, no activation.
    pub project: ConvNormAct<B>,
}

impl<B: Backend> ResBlock<B> {
    /// # Shapes
    /// `[N, 256, H, W]` -> `[N, 256, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = self.expand.forward(x.clone());
        let y = self.depthwise.forward(y);
        x + self.project.forward(y)
    }
}

/// The generator G (Fig. 10).
#[derive(Module, Debug)]
pub struct Generator<B: Backend> {
    /// Conv 7x7/32.
    pub stem: ConvNormAct<B>,
    /// Conv 3x3/64, stride 2.
    pub down1: ConvNormAct<B>,
    /// Conv 3x3/64.
    pub down1_conv: ConvNormAct<B>,
    /// Conv 3x3/128, stride 2.
    pub down2: ConvNormAct<B>,
    /// Conv 3x3/256.
    pub down2_conv: ConvNormAct<B>,
    /// Four ResBlocks at 256 channels.
    pub res_blocks: Vec<ResBlock<B>>,
    /// Conv 3x3/128 before the first upsampling.
    pub neck: ConvNormAct<B>,
    /// Upsample_n(128): nearest x2, then this Conv 3x3/128.
    pub up1: ConvNormAct<B>,
    /// Conv 3x3/128.
    pub up1_conv: ConvNormAct<B>,
    /// Upsample_n(64): nearest x2, then this Conv 3x3/64.
    pub up2: ConvNormAct<B>,
    /// Conv 3x3/64.
    pub up2_conv1: ConvNormAct<B>,
    /// Conv 3x3/64.
    pub up2_conv2: ConvNormAct<B>,
    /// Conv 7x7/32.
    pub head: ConvNormAct<B>,
    /// Conv 1x1/3, followed by tanh.
    pub to_rgb: Conv<B>,
}

impl<B: Backend> Generator<B> {
    /// Cartoonizes a batch of photos.
    ///
    /// # Shapes
    /// `[N, 3, H, W]` in `[-1, 1]` -> `[N, 3, H, W]` in `[-1, 1]`; H and W multiples of
    /// [`SIZE_MULTIPLE`] (see [`Generator::check_input`]).
    pub fn forward(&self, photo: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.stem.forward(photo);
        let x = self.down1_conv.forward(self.down1.forward(x));
        let mut x = self.down2_conv.forward(self.down2.forward(x));
        for block in &self.res_blocks {
            x = block.forward(x);
        }
        let x = self.neck.forward(x);
        let x = self
            .up1_conv
            .forward(self.up1.forward(upsample_nearest2(x)));
        let x = self.up2.forward(upsample_nearest2(x));
        let x = self.up2_conv2.forward(self.up2_conv1.forward(x));
        tanh(self.to_rgb.forward(self.head.forward(x)))
    }

    /// Checks that `dims` is a batch G accepts: `[N >= 1, 3, H, W]`, H and W positive multiples
    /// of [`SIZE_MULTIPLE`].
    pub fn check_input(dims: [usize; 4]) -> Result<()> {
        let [n, c, h, w] = dims;
        let ok =
            n >= 1 && c == 3 && h > 0 && w > 0 && h % SIZE_MULTIPLE == 0 && w % SIZE_MULTIPLE == 0;
        if ok {
            return Ok(());
        }
        Err(Error::InvalidShape {
            what: "the generator",
            shape: dims.to_vec(),
            expected: format!("[N, 3, H, W] with H and W positive multiples of {SIZE_MULTIPLE}"),
        })
    }
}
