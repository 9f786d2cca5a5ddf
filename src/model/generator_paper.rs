//! The paper's generator G (Fig. 10): an encoder (two stride-2 stages), four
//! depthwise-separable ResBlocks at 1/4 resolution, a decoder with two nearest x2 upsampling
//! stages, and a tanh.
//!
//! Tensor names (safetensors keys) follow the fields: `stem.conv.weight`, `stem.norm.weight`,
//! `res_blocks.0.expand.conv.weight`, ..., `to_rgb.weight`. Convolution weights are PyTorch's
//! `[C_out, C_in/groups, k, k]`, LN parameters those of `nn.GroupNorm(1, C)`, so the network can
//! be rebuilt in a few lines of PyTorch (see `scripts/reference.py`).

use burn::module::Module;
use burn::tensor::activation::tanh;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::generator::GeneratorConfig;
use super::layers::{own_stats_pass, upsample_nearest2, Conv, ConvNormAct, Normalizer, OwnStats};

/// Builds the paper's G with He-initialised convolutions.
pub(super) fn init<B: Backend>(config: &GeneratorConfig, device: &B::Device) -> PaperGenerator<B> {
    let block = |c_in, c_out, k, s| config.unit(c_in, c_out, k, s, true, device);
    PaperGenerator {
        stem: block(3, 32, 7, 1),
        down1: block(32, 64, 3, 2),
        down1_conv: block(64, 64, 3, 1),
        down2: block(64, 128, 3, 2),
        down2_conv: block(128, 256, 3, 1),
        res_blocks: (0..config.res_blocks)
            .map(|_| ResBlock {
                expand: config.unit(256, 128, 1, 1, true, device),
                depthwise: config.depthwise(128, device),
                project: config.unit(128, 256, 1, 1, false, device),
            })
            .collect(),
        neck: block(256, 128, 3, 1),
        up1: block(128, 128, 3, 1),
        up1_conv: block(128, 128, 3, 1),
        up2: block(128, 64, 3, 1),
        up2_conv1: block(64, 64, 3, 1),
        up2_conv2: block(64, 64, 3, 1),
        head: block(64, 32, 7, 1),
        to_rgb: config.spec(32, 3, 1, 1).init(device),
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

    /// As [`ResBlock::forward`], LN statistics from `n`.
    pub fn forward_with(
        &self,
        x: Tensor<B, 4>,
        n: &mut impl Normalizer<B>,
    ) -> Option<Tensor<B, 4>> {
        let y = self.expand.forward_with(x.clone(), n)?;
        let y = self.depthwise.forward_with(y, n)?;
        Some(x + self.project.forward_with(y, n)?)
    }
}

/// The paper's generator G (Fig. 10).
#[derive(Module, Debug)]
pub struct PaperGenerator<B: Backend> {
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

impl<B: Backend> PaperGenerator<B> {
    /// # Shapes
    /// `[N, 3, H, W]` in `[-1, 1]` -> `[N, 3, H, W]` in `[-1, 1]`; H and W multiples of 4.
    pub fn forward(&self, photo: Tensor<B, 4>) -> Tensor<B, 4> {
        own_stats_pass(self.forward_with(photo, &mut OwnStats))
    }

    /// The forward pass with LN statistics from `n`; `None` if `n` ended it early.
    pub fn forward_with(
        &self,
        photo: Tensor<B, 4>,
        n: &mut impl Normalizer<B>,
    ) -> Option<Tensor<B, 4>> {
        let x = self.stem.forward_with(photo, n)?;
        let x = self
            .down1_conv
            .forward_with(self.down1.forward_with(x, n)?, n)?;
        let mut x = self
            .down2_conv
            .forward_with(self.down2.forward_with(x, n)?, n)?;
        for block in &self.res_blocks {
            x = block.forward_with(x, n)?;
        }
        let x = self.neck.forward_with(x, n)?;
        let x = self.up1.forward_with(upsample_nearest2(x), n)?;
        let x = self.up1_conv.forward_with(x, n)?;
        let x = self.up2.forward_with(upsample_nearest2(x), n)?;
        let x = self
            .up2_conv2
            .forward_with(self.up2_conv1.forward_with(x, n)?, n)?;
        Some(tanh(self.to_rgb.forward(self.head.forward_with(x, n)?)))
    }
}
