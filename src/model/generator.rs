//! The generator G: its configuration and the two variants, the paper's Fig. 10
//! ([`PaperGenerator`]) and the released code's ([`OfficialGenerator`]).
//!
//! Safetensors keys are the variant's field names (no variant prefix), see each variant's docs.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

pub use super::generator_official::{InvertedResBlock, OfficialGenerator};
pub use super::generator_paper::{PaperGenerator, ResBlock};
use super::layers::{ConvNormAct, ConvSpec, Normalizer, Padding};
use crate::config::Preset;
use crate::error::{Error, Result};

/// Settings of the generator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Architecture: `paper` (Fig. 10) or `official` (inverted-residual blocks, U-Net
    /// concatenations, TF1 bilinear upsampling). Default: paper.
    pub variant: Preset,
    /// Padding of every convolution. Default: zeros (the paper is silent; PyTorch ports pad with
    /// zeros). Official: reflect.
    pub padding: Padding,
    /// Epsilon of LN. Default: 1e-5 (PyTorch's GroupNorm). Official: 1e-12.
    pub ln_epsilon: f64,
    /// Number of residual blocks at 1/4 resolution. Default: 4 (Fig. 10).
    pub res_blocks: usize,
    /// Whether convolutions have a bias. Default: true. Official: false.
    pub bias: bool,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            variant: Preset::Paper,
            padding: Padding::Zeros,
            ln_epsilon: 1e-5,
            res_blocks: 4,
            bias: true,
        }
    }
}

/// The side lengths of G's input must be multiples of this (two stride-2 stages).
pub const SIZE_MULTIPLE: usize = 4;

/// The tensors alive between two steps of G's forward pass (one step per LN layer, see
/// [`Generator::step`]): the activation last, before it what later steps still need (skips,
/// a residual block's input). Tiled inference keeps states to resume passes from them.
pub type State<B> = Vec<Tensor<B, 4>>;

/// Runs `steps` steps from `photo`; the image is the last state's only tensor.
pub(super) fn run_steps<B: Backend>(
    photo: Tensor<B, 4>,
    steps: usize,
    mut step: impl FnMut(usize, State<B>) -> Option<State<B>>,
) -> Option<Tensor<B, 4>> {
    let mut state = vec![photo];
    for i in 0..steps {
        state = step(i, state)?;
    }
    state.pop()
}

impl GeneratorConfig {
    /// The released code's generator settings.
    pub fn official() -> Self {
        Self {
            variant: Preset::Official,
            padding: Padding::Reflect,
            ln_epsilon: 1e-12,
            res_blocks: 4,
            bias: false,
        }
    }

    /// Builds G with He-initialised convolutions.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Generator<B> {
        match self.variant {
            Preset::Paper => Generator::Paper(super::generator_paper::init(self, device)),
            Preset::Official => Generator::Official(super::generator_official::init(self, device)),
        }
    }

    pub(super) fn spec(&self, c_in: usize, c_out: usize, kernel: usize, stride: usize) -> ConvSpec {
        ConvSpec {
            padding: self.padding,
            bias: self.bias,
            ..ConvSpec::new(c_in, c_out, kernel, stride)
        }
    }

    /// `Conv, LN` and, if `act`, lRelu.
    pub(super) fn unit<B: Backend>(
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

    /// Depthwise 3x3 on `channels`, LN, lRelu.
    pub(super) fn depthwise<B: Backend>(
        &self,
        channels: usize,
        device: &B::Device,
    ) -> ConvNormAct<B> {
        let spec = ConvSpec {
            groups: channels,
            ..self.spec(channels, channels, 3, 1)
        };
        ConvNormAct::new(spec, true, true, self.ln_epsilon, device)
    }
}

/// The generator G, either variant.
#[derive(Module, Debug)]
pub enum Generator<B: Backend> {
    /// Fig. 10 of the paper.
    Paper(PaperGenerator<B>),
    /// The released code's generator.
    Official(OfficialGenerator<B>),
}

impl<B: Backend> Generator<B> {
    /// Cartoonizes a batch of photos.
    ///
    /// # Shapes
    /// `[N, 3, H, W]` in `[-1, 1]` -> `[N, 3, H, W]` in `[-1, 1]`; H and W multiples of
    /// [`SIZE_MULTIPLE`] (see [`Generator::check_input`]).
    pub fn forward(&self, photo: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Generator::Paper(g) => g.forward(photo),
            Generator::Official(g) => g.forward(photo),
        }
    }

    /// The forward pass with LN statistics from `n` (tiled inference); `None` if `n` ended it.
    pub fn forward_with(
        &self,
        photo: Tensor<B, 4>,
        n: &mut impl Normalizer<B>,
    ) -> Option<Tensor<B, 4>> {
        match self {
            Generator::Paper(g) => g.forward_with(photo, n),
            Generator::Official(g) => g.forward_with(photo, n),
        }
    }

    /// Number of steps of the forward pass; step `i` ends with LN layer `i` (the last step also
    /// maps to RGB).
    pub fn steps(&self) -> usize {
        match self {
            Generator::Paper(g) => g.steps(),
            Generator::Official(g) => g.steps(),
        }
    }

    /// Step `i` of the forward pass on `state` (the photo, `vec![photo]`, before step 0), LN
    /// statistics from `n`; `None` if `n` ended the pass. Running every step in order is
    /// [`Generator::forward_with`].
    pub fn step(&self, i: usize, state: State<B>, n: &mut impl Normalizer<B>) -> Option<State<B>> {
        match self {
            Generator::Paper(g) => g.step(i, state, n),
            Generator::Official(g) => g.step(i, state, n),
        }
    }

    /// Radius, in input pixels, beyond which input pixels do not affect an output pixel once the
    /// LN statistics are fixed (a multiple of 4, with margin): the halo of tiled inference.
    pub fn receptive_radius(&self) -> usize {
        match self {
            Generator::Paper(_) => 56,
            Generator::Official(_) => 72,
        }
    }

    /// The most channels one tensor of the forward has at full resolution, so the largest
    /// tensor per pixel of a photo (on a GPU, one buffer): the paper's G 64 (`up2`'s output
    /// and the head's input; the 128-channel upsampled input of `up2` is never written, its
    /// upsampling being folded into the convolution), the official G 128 (its bilinear
    /// upsampling is written before `up2`).
    pub fn full_resolution_channels(&self) -> usize {
        match self {
            Generator::Paper(_) => 64,
            Generator::Official(_) => 128,
        }
    }

    /// The smallest side this variant accepts: 4 for the paper's G; 8 for the official one,
    /// whose reflect padding needs two pixels at 1/4 resolution.
    pub fn min_side(&self) -> usize {
        match self {
            Generator::Paper(_) => SIZE_MULTIPLE,
            Generator::Official(_) => 2 * SIZE_MULTIPLE,
        }
    }

    /// Checks that `dims` is a batch this G accepts: `[N >= 1, 3, H, W]`, H and W multiples of
    /// [`SIZE_MULTIPLE`] and at least [`Generator::min_side`].
    pub fn check_input(&self, dims: [usize; 4]) -> Result<()> {
        let [n, c, h, w] = dims;
        let min = self.min_side();
        let ok = n >= 1
            && c == 3
            && h >= min
            && w >= min
            && h % SIZE_MULTIPLE == 0
            && w % SIZE_MULTIPLE == 0;
        if ok {
            return Ok(());
        }
        Err(Error::InvalidShape {
            what: "the generator",
            shape: dims.to_vec(),
            expected: format!(
                "[N, 3, H, W] with H and W multiples of {SIZE_MULTIPLE}, at least {min}"
            ),
        })
    }
}
