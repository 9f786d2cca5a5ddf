//! The released code's generator, rebuilt from the differences the authors' code is known to
//! have from Fig. 10 (the code itself is not reachable from here, so the stage widths below
//! follow Fig. 10 and the AnimeGANv2 code base it derives from):
//!
//! - inverted-residual blocks (`Conv 1x1` to 2C, depthwise 3x3, `Conv 1x1` to 256, each with
//!   LN; lRelu after the first two; the input added only when the channel counts match) instead
//!   of the ResBlocks;
//! - TF1 "legacy" bilinear x2 upsampling ([`upsample_tf1_bilinear2`]) instead of nearest;
//! - two U-Net concatenations: after each upsampling stage the encoder features of the same
//!   resolution are concatenated before the next convolution;
//! - reflect padding (stride-2 convolutions pad only bottom/right), no convolution bias,
//!   LN epsilon 1e-12 (set by [`GeneratorConfig::official`]).
//!
//! Tensor names: `stem`, `down1`, `down1_conv`, `down2`, `down2_conv`, `pre_blocks`,
//! `blocks.{i}.{expand,depthwise,project}`, `post_blocks`, `up1`, `up1_conv`, `up2`, `up2_conv`,
//! `head` (each `.conv.weight`, `.norm.{weight,bias}`) and `to_rgb.weight`.

use burn::module::Module;
use burn::tensor::activation::tanh;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::generator::{run_steps, GeneratorConfig, State};
use super::layers::{
    own_stats_pass, upsample_tf1_bilinear2, Conv, ConvNormAct, Normalizer, OwnStats,
};

/// Builds the official G with He-initialised convolutions.
pub(super) fn init<B: Backend>(
    config: &GeneratorConfig,
    device: &B::Device,
) -> OfficialGenerator<B> {
    let block = |c_in, c_out, k, s| config.unit(c_in, c_out, k, s, true, device);
    let blocks = (0..config.res_blocks)
        .map(|i| {
            let c_in = if i == 0 { 128 } else { 256 };
            InvertedResBlock {
                expand: config.unit(c_in, 2 * c_in, 1, 1, true, device),
                depthwise: config.depthwise(2 * c_in, device),
                project: config.unit(2 * c_in, 256, 1, 1, false, device),
            }
        })
        .collect();
    OfficialGenerator {
        stem: block(3, 32, 7, 1),
        down1: block(32, 64, 3, 2),
        down1_conv: block(64, 64, 3, 1),
        down2: block(64, 128, 3, 2),
        down2_conv: block(128, 128, 3, 1),
        pre_blocks: block(128, 128, 3, 1),
        blocks,
        post_blocks: block(256, 128, 3, 1),
        up1: block(128, 128, 3, 1),
        up1_conv: block(128 + 64, 128, 3, 1),
        up2: block(128, 64, 3, 1),
        up2_conv: block(64 + 32, 64, 3, 1),
        head: block(64, 32, 7, 1),
        to_rgb: config.spec(32, 3, 1, 1).init(device),
    }
}

/// Inverted-residual block (MobileNetV2 style, as in the released code): `[N, C, H, W]` ->
/// `[N, 256, H, W]`, the input added when C = 256 (see [`OfficialGenerator::step`]).
#[derive(Module, Debug)]
pub struct InvertedResBlock<B: Backend> {
    /// 1x1 convolution C -> 2C, LN, lRelu.
    pub expand: ConvNormAct<B>,
    /// Depthwise 3x3 on 2C, LN, lRelu.
    pub depthwise: ConvNormAct<B>,
    /// 1x1 convolution 2C -> 256, LN.
    pub project: ConvNormAct<B>,
}

/// The released code's generator.
#[derive(Module, Debug)]
pub struct OfficialGenerator<B: Backend> {
    /// Conv 7x7/32 (its output is the full-resolution skip).
    pub stem: ConvNormAct<B>,
    /// Conv 3x3/64, stride 2.
    pub down1: ConvNormAct<B>,
    /// Conv 3x3/64 (its output is the half-resolution skip).
    pub down1_conv: ConvNormAct<B>,
    /// Conv 3x3/128, stride 2.
    pub down2: ConvNormAct<B>,
    /// Conv 3x3/128.
    pub down2_conv: ConvNormAct<B>,
    /// Conv 3x3/128 before the blocks.
    pub pre_blocks: ConvNormAct<B>,
    /// Inverted-residual blocks, the first 128 -> 256, the others 256 -> 256.
    pub blocks: Vec<InvertedResBlock<B>>,
    /// Conv 3x3/128 after the blocks.
    pub post_blocks: ConvNormAct<B>,
    /// Bilinear x2, then this Conv 3x3/128.
    pub up1: ConvNormAct<B>,
    /// Conv 3x3/128 on the concatenation with the half-resolution skip (128 + 64 channels).
    pub up1_conv: ConvNormAct<B>,
    /// Bilinear x2, then this Conv 3x3/64.
    pub up2: ConvNormAct<B>,
    /// Conv 3x3/64 on the concatenation with the full-resolution skip (64 + 32 channels).
    pub up2_conv: ConvNormAct<B>,
    /// Conv 7x7/32.
    pub head: ConvNormAct<B>,
    /// Conv 1x1/3, followed by tanh.
    pub to_rgb: Conv<B>,
}

impl<B: Backend> OfficialGenerator<B> {
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

    /// Steps of the forward pass, one per LN layer: 6 encoder units, 3 per block, 6 decoder
    /// units (the last also maps to RGB).
    pub fn steps(&self) -> usize {
        6 + 3 * self.blocks.len() + 6
    }

    /// Step `i` on `state` (see [`State`]): the skips the decoder still needs (full then half
    /// resolution) come first, then, inside a block, the block's input, then the activation.
    pub fn step(
        &self,
        i: usize,
        mut state: State<B>,
        n: &mut impl Normalizer<B>,
    ) -> Option<State<B>> {
        let x = state.pop().expect("a step's input state is never empty");
        let blocks = 3 * self.blocks.len();
        match i {
            0 => return Some(vec![self.stem.forward_with(x, n)?]),
            // The inputs of down1 and down2 stay as the full- and half-resolution skips.
            1 => {
                state.push(x.clone());
                state.push(self.down1.forward_with(x, n)?);
            }
            2 => state.push(self.down1_conv.forward_with(x, n)?),
            3 => {
                state.push(x.clone());
                state.push(self.down2.forward_with(x, n)?);
            }
            4 => state.push(self.down2_conv.forward_with(x, n)?),
            5 => state.push(self.pre_blocks.forward_with(x, n)?),
            i if i < 6 + blocks => {
                let block = &self.blocks[(i - 6) / 3];
                match (i - 6) % 3 {
                    0 => {
                        state.push(x.clone());
                        state.push(block.expand.forward_with(x, n)?);
                    }
                    1 => state.push(block.depthwise.forward_with(x, n)?),
                    _ => {
                        let input = state.pop().expect("the block's input");
                        let y = block.project.forward_with(x, n)?;
                        let y = if input.dims()[1] == y.dims()[1] {
                            input + y
                        } else {
                            y
                        };
                        state.push(y);
                    }
                }
            }
            i => {
                let y = match i - 6 - blocks {
                    0 => self.post_blocks.forward_with(x, n)?,
                    1 => self.up1.forward_with(upsample_tf1_bilinear2(x), n)?,
                    2 => {
                        let skip_half = state.pop().expect("the half-resolution skip");
                        self.up1_conv
                            .forward_with(Tensor::cat(vec![x, skip_half], 1), n)?
                    }
                    3 => self.up2.forward_with(upsample_tf1_bilinear2(x), n)?,
                    4 => {
                        let skip_full = state.pop().expect("the full-resolution skip");
                        self.up2_conv
                            .forward_with(Tensor::cat(vec![x, skip_full], 1), n)?
                    }
                    _ => tanh(self.to_rgb.forward(self.head.forward_with(x, n)?)),
                };
                state.push(y);
            }
        }
        Some(state)
    }
}
