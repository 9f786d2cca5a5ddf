//! The frozen VGG feature extractor of the content loss (Eq. 7): VGG19 up to `conv4_4` before
//! its ReLU, or the VGG16 layout up to `conv4_3` (the only pretrained VGG these machines reach).
//!
//! Tensor names: `convs.{i}.weight`, `convs.{i}.bias`, `i` counting convolutions only.
//! [`crate::weights::load_vgg`] maps torchvision's `features.{j}` keys onto them.

use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::layers::{Conv, ConvSpec};

/// Which VGG and how deep.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum VggLayout {
    /// VGG19 up to conv4_4 (12 convolutions): the paper.
    #[default]
    Vgg19,
    /// VGG16 up to conv4_3 (10 convolutions): for VGG16-derived checkpoints.
    Vgg16,
}

impl VggLayout {
    /// Output channels of each convolution, in order.
    pub fn channels(self) -> &'static [usize] {
        match self {
            VggLayout::Vgg19 => &[64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512],
            VggLayout::Vgg16 => &[64, 64, 128, 128, 256, 256, 256, 512, 512, 512],
        }
    }

    /// Indices of the convolutions followed by a 2x2 max-pool.
    pub fn pools_after(self) -> &'static [usize] {
        match self {
            VggLayout::Vgg19 => &[1, 3, 7],
            VggLayout::Vgg16 => &[1, 3, 6],
        }
    }

    /// torchvision's index in `features` of each convolution (`features.{j}.weight`).
    pub fn torchvision_indices(self) -> Vec<usize> {
        let pools = self.pools_after();
        let mut j = 0;
        let mut out = Vec::new();
        for i in 0..self.channels().len() {
            out.push(j);
            j += 2; // conv, relu
            if pools.contains(&i) {
                j += 1; // max-pool
            }
        }
        out
    }
}

/// The pixel convention the pretrained weights expect.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum VggInput {
    /// torchvision: RGB in [0, 1], minus ImageNet mean, over ImageNet std (default).
    #[default]
    Torchvision,
    /// Caffe (the official code's VGG19): BGR in [0, 255] minus the BGR mean.
    Caffe,
}

/// Settings of the VGG feature extractor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct VggConfig {
    /// Default: vgg19.
    pub layout: VggLayout,
    /// Default: torchvision.
    pub input: VggInput,
}

impl VggConfig {
    /// Builds the network with random weights (load real ones with
    /// [`crate::weights::load_vgg`]). Its parameters never receive gradients.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Vgg<B> {
        let mut c_in = 3;
        let mut convs = Vec::new();
        for &c_out in self.layout.channels() {
            convs.push(ConvSpec::new(c_in, c_out, 3, 1).init(device));
            c_in = c_out;
        }
        Vgg {
            convs,
            layout: self.layout,
            input: self.input,
        }
        .no_grad()
    }
}

/// VGG features up to conv4_4 (or conv4_3), before the ReLU.
#[derive(Module, Debug)]
pub struct Vgg<B: Backend> {
    /// The 3x3 convolutions.
    pub convs: Vec<Conv<B>>,
    #[module(skip)]
    layout: VggLayout,
    #[module(skip)]
    input: VggInput,
}

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
const CAFFE_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];

impl<B: Backend> Vgg<B> {
    /// The layout this network was built with.
    pub fn layout(&self) -> VggLayout {
        self.layout
    }

    /// # Shapes
    /// `[N, 3, H, W]` RGB in `[-1, 1]` -> `[N, 512, H/8, W/8]`.
    pub fn forward(&self, rgb: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.normalize(rgb);
        let last = self.convs.len() - 1;
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv.forward(x);
            if i == last {
                break;
            }
            x = relu(x);
            if self.layout.pools_after().contains(&i) {
                x = crate::kernels::pool::max_pool2(x);
            }
        }
        x
    }

    fn normalize(&self, rgb: Tensor<B, 4>) -> Tensor<B, 4> {
        let device = rgb.device();
        let unit = (rgb + 1.0) / 2.0;
        let per_channel =
            |v: [f32; 3]| Tensor::<B, 1>::from_floats(v, &device).reshape([1, 3, 1, 1]);
        match self.input {
            VggInput::Torchvision => {
                (unit - per_channel(IMAGENET_MEAN)) / per_channel(IMAGENET_STD)
            }
            VggInput::Caffe => unit.flip([1]) * 255.0 - per_channel(CAFFE_MEAN_BGR),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_indices_match_the_features_sequence() {
        assert_eq!(
            VggLayout::Vgg19.torchvision_indices(),
            vec![0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25]
        );
        assert_eq!(
            VggLayout::Vgg16.torchvision_indices(),
            vec![0, 2, 5, 7, 10, 12, 14, 17, 19, 21]
        );
    }
}
