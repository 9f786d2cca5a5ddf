//! The discriminators of Fig. 10: D_img (256x256x3 -> 32x32x1) judges whole images, D_patch
//! (96x96x1 -> 12x12x1) judges the grayscale patches chosen by CTSS. Both are
//! `Conv 3x3 s1, LN, lRelu` followed by three `Conv 3x3 s2, LN, lRelu` and a `Conv 3x3/1`.
//!
//! Tensor names: `layers.{i}.conv.weight`, `layers.{i}.norm.weight`, `out.weight`, and with
//! spectral normalisation `*.conv.u` (PyTorch: `weight_u`).

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::layers::{Conv, ConvNormAct, ConvSpec, Init, Padding};

/// Settings of one discriminator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DiscriminatorConfig {
    /// Input channels: 3 for D_img, 1 for D_patch.
    pub in_channels: usize,
    /// Output channels of the four LN blocks. D_img: [32, 64, 128, 256]; D_patch: [16, 32, 64,
    /// 128] (Fig. 10).
    pub channels: Vec<usize>,
    /// Spectral normalisation of every convolution. Default: off (Fig. 10 has none; the
    /// official code uses it).
    pub spectral_norm: bool,
    /// Padding rule. Default: zeros.
    pub padding: Padding,
    /// Epsilon of LN. Default: 1e-5.
    pub ln_epsilon: f64,
}

impl Default for DiscriminatorConfig {
    fn default() -> Self {
        Self::image()
    }
}

impl DiscriminatorConfig {
    /// D_img of Fig. 10.
    pub fn image() -> Self {
        Self {
            in_channels: 3,
            channels: vec![32, 64, 128, 256],
            spectral_norm: false,
            padding: Padding::Zeros,
            ln_epsilon: 1e-5,
        }
    }

    /// D_patch of Fig. 10.
    pub fn patch() -> Self {
        Self {
            in_channels: 1,
            channels: vec![16, 32, 64, 128],
            ..Self::image()
        }
    }

    /// Builds the discriminator with N(0, 0.02) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Discriminator<B> {
        let spec = |c_in, c_out, stride| ConvSpec {
            padding: self.padding,
            spectral_norm: self.spectral_norm,
            init: Init::Normal002,
            ..ConvSpec::new(c_in, c_out, 3, stride)
        };
        let mut c_in = self.in_channels;
        let mut layers = Vec::with_capacity(self.channels.len());
        for (i, &c_out) in self.channels.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            layers.push(ConvNormAct::new(
                spec(c_in, c_out, stride),
                true,
                true,
                self.ln_epsilon,
                device,
            ));
            c_in = c_out;
        }
        Discriminator {
            layers,
            out: spec(c_in, 1, 1).init(device),
        }
    }
}

/// A discriminator of Fig. 10 (D_img or D_patch, by its config).
#[derive(Module, Debug)]
pub struct Discriminator<B: Backend> {
    /// `Conv 3x3, LN, lRelu` blocks; the first has stride 1, the others stride 2.
    pub layers: Vec<ConvNormAct<B>>,
    /// The final `Conv 3x3/1`, no normalisation, no activation (LSGAN scores).
    pub out: Conv<B>,
}

impl<B: Backend> Discriminator<B> {
    /// Scores each location of the input as real (1) or fake (0), LSGAN-style.
    ///
    /// # Shapes
    /// `[N, C_in, H, W]` in `[-1, 1]` (D_img) or `[0, 1]` (D_patch) -> `[N, 1, H/8, W/8]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.layers.iter().fold(x, |x, layer| layer.forward(x));
        self.out.forward(x)
    }

    /// Scores of several batches of the same image size, in one pass over them stacked: the
    /// same values as [`Discriminator::forward`] of each, since LN's statistics are each
    /// image's own. One pass makes each layer's convolution plan once (D's weights change every
    /// step, so its plans are not kept) and launches each kernel once on a GPU. With spectral
    /// normalisation the pass does one power iteration, as Miyato et al.'s one per update
    /// (GAN code that stacks real and fake in D's batch, as BigGAN's, does the same).
    ///
    /// # Panics
    /// If `batches` is empty or their images differ in channels or size.
    pub fn forward_each<const N: usize>(&self, batches: [Tensor<B, 4>; N]) -> [Tensor<B, 4>; N] {
        let sizes = batches.each_ref().map(|b| b.dims()[0]);
        let scores = self.forward(Tensor::cat(batches.into(), 0));
        let mut start = 0;
        sizes.map(|n| {
            start += n;
            scores.clone().narrow(0, start - n, n)
        })
    }
}
