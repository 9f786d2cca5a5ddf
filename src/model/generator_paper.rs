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

use super::generator::{run_steps, GeneratorConfig, State};
use super::layers::{own_stats_pass, Conv, ConvNormAct, Normalizer, OwnStats};

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
    /// Upsample_n(128): nearest x2, then this Conv 3x3/128 (run as one, [`Conv::forward_upsampled`]).
    pub up1: ConvNormAct<B>,
    /// Conv 3x3/128.
    pub up1_conv: ConvNormAct<B>,
    /// Upsample_n(64): nearest x2, then this Conv 3x3/64 (run as one).
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
        run_steps(photo, self.steps(), |i, state| self.step(i, state, n))
    }

    /// Steps of the forward pass, one per LN layer: the 5 encoder units, 3 per ResBlock, the
    /// 7 decoder units (the last also maps to RGB).
    pub fn steps(&self) -> usize {
        5 + 3 * self.res_blocks.len() + 7
    }

    /// Step `i` on `state` (see [`State`]): inside a ResBlock the state holds the block's input
    /// and the current activation, elsewhere the activation alone.
    pub fn step(
        &self,
        i: usize,
        mut state: State<B>,
        n: &mut impl Normalizer<B>,
    ) -> Option<State<B>> {
        let x = state.pop().expect("a step's input state is never empty");
        let encoder = [
            &self.stem,
            &self.down1,
            &self.down1_conv,
            &self.down2,
            &self.down2_conv,
        ];
        if let Some(unit) = encoder.get(i) {
            return Some(vec![unit.forward_with(x, n)?]);
        }
        let i = i - encoder.len();
        if i < 3 * self.res_blocks.len() {
            let block = &self.res_blocks[i / 3];
            return Some(match i % 3 {
                0 => vec![x.clone(), block.expand.forward_with(x, n)?],
                1 => {
                    state.push(block.depthwise.forward_with(x, n)?);
                    state
                }
                _ => {
                    let skip = state.pop().expect("the ResBlock's input");
                    vec![skip + block.project.forward_with(x, n)?]
                }
            });
        }
        let y = match i - 3 * self.res_blocks.len() {
            0 => self.neck.forward_with(x, n)?,
            1 => self.up1.forward_upsampled_with(x, n)?,
            2 => self.up1_conv.forward_with(x, n)?,
            3 => self.up2.forward_upsampled_with(x, n)?,
            4 => self.up2_conv1.forward_with(x, n)?,
            5 => self.up2_conv2.forward_with(x, n)?,
            _ => tanh(self.to_rgb.forward(self.head.forward_with(x, n)?)),
        };
        Some(vec![y])
    }
}
