//! InceptionV3 as pytorch-fid uses it for FID: torchvision's layout with pytorch-fid's
//! `FIDInceptionA/C/E` blocks (average pools that ignore padding, a max pool in the last block),
//! up to the 2048-d pool features. Inputs are resized to 299x299 (bilinear, no corner
//! alignment) and scaled to [-1, 1], as pytorch-fid does.
//!
//! Field names are torchvision's (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch1x1.bn.running_var`,
//! ...), so pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` loads without remapping.
#![allow(non_snake_case)]

use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::{avg_pool2d, interpolate, max_pool2d};
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::Tensor;

use super::frozen::{BatchNorm, ConvWeight};

/// Batch normalisation epsilon of torchvision's Inception.
const BN_EPSILON: f64 = 1e-3;

/// `Conv2d(bias=False) -> BatchNorm2d(eps=0.001) -> ReLU`, in inference mode.
#[derive(Module, Debug)]
pub struct BasicConv2d<B: Backend> {
    /// The convolution.
    pub conv: ConvWeight<B>,
    /// The batch norm.
    pub bn: BatchNorm<B>,
    #[module(skip)]
    stride: usize,
    #[module(skip)]
    padding: [usize; 2],
}

impl<B: Backend> BasicConv2d<B> {
    fn new(
        c_in: usize,
        c_out: usize,
        kernel: [usize; 2],
        stride: usize,
        padding: [usize; 2],
        device: &B::Device,
    ) -> Self {
        Self {
            conv: ConvWeight::zeros([c_out, c_in, kernel[0], kernel[1]], device),
            bn: BatchNorm::new(c_out, device),
            stride,
            padding,
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = self.conv.forward(x, self.padding, self.stride, 1);
        relu(self.bn.forward(y, BN_EPSILON))
    }
}

fn conv<B: Backend>(c_in: usize, c_out: usize, k: usize, device: &B::Device) -> BasicConv2d<B> {
    BasicConv2d::new(c_in, c_out, [k, k], 1, [k / 2, k / 2], device)
}

fn conv_s2<B: Backend>(c_in: usize, c_out: usize, device: &B::Device) -> BasicConv2d<B> {
    BasicConv2d::new(c_in, c_out, [3, 3], 2, [0, 0], device)
}

fn conv_1x7<B: Backend>(c_in: usize, c_out: usize, device: &B::Device) -> BasicConv2d<B> {
    BasicConv2d::new(c_in, c_out, [1, 7], 1, [0, 3], device)
}

fn conv_7x1<B: Backend>(c_in: usize, c_out: usize, device: &B::Device) -> BasicConv2d<B> {
    BasicConv2d::new(c_in, c_out, [7, 1], 1, [3, 0], device)
}

fn conv_1x3<B: Backend>(c_in: usize, c_out: usize, device: &B::Device) -> BasicConv2d<B> {
    BasicConv2d::new(c_in, c_out, [1, 3], 1, [0, 1], device)
}

fn conv_3x1<B: Backend>(c_in: usize, c_out: usize, device: &B::Device) -> BasicConv2d<B> {
    BasicConv2d::new(c_in, c_out, [3, 1], 1, [1, 0], device)
}

/// 3x3 average pool, stride 1, padding 1, not counting the padding (pytorch-fid's blocks).
fn avg3<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    avg_pool2d(x, [3, 3], [1, 1], [1, 1], false, false)
}

fn max3s2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], false)
}

/// `FIDInceptionA`.
#[derive(Module, Debug)]
pub struct InceptionA<B: Backend> {
    branch1x1: BasicConv2d<B>,
    branch5x5_1: BasicConv2d<B>,
    branch5x5_2: BasicConv2d<B>,
    branch3x3dbl_1: BasicConv2d<B>,
    branch3x3dbl_2: BasicConv2d<B>,
    branch3x3dbl_3: BasicConv2d<B>,
    branch_pool: BasicConv2d<B>,
}

impl<B: Backend> InceptionA<B> {
    fn new(c_in: usize, pool: usize, d: &B::Device) -> Self {
        Self {
            branch1x1: conv(c_in, 64, 1, d),
            branch5x5_1: conv(c_in, 48, 1, d),
            branch5x5_2: conv(48, 64, 5, d),
            branch3x3dbl_1: conv(c_in, 64, 1, d),
            branch3x3dbl_2: conv(64, 96, 3, d),
            branch3x3dbl_3: conv(96, 96, 3, d),
            branch_pool: conv(c_in, pool, 1, d),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b5 = self
            .branch5x5_2
            .forward(self.branch5x5_1.forward(x.clone()));
        let b3 = self.branch3x3dbl_1.forward(x.clone());
        let b3 = self.branch3x3dbl_3.forward(self.branch3x3dbl_2.forward(b3));
        let bp = self.branch_pool.forward(avg3(x));
        Tensor::cat(vec![b1, b5, b3, bp], 1)
    }
}

/// `InceptionB` (torchvision's, unchanged by pytorch-fid).
#[derive(Module, Debug)]
pub struct InceptionB<B: Backend> {
    branch3x3: BasicConv2d<B>,
    branch3x3dbl_1: BasicConv2d<B>,
    branch3x3dbl_2: BasicConv2d<B>,
    branch3x3dbl_3: BasicConv2d<B>,
}

impl<B: Backend> InceptionB<B> {
    fn new(c_in: usize, d: &B::Device) -> Self {
        Self {
            branch3x3: conv_s2(c_in, 384, d),
            branch3x3dbl_1: conv(c_in, 64, 1, d),
            branch3x3dbl_2: conv(64, 96, 3, d),
            branch3x3dbl_3: conv_s2(96, 96, d),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b3 = self.branch3x3.forward(x.clone());
        let bd = self.branch3x3dbl_1.forward(x.clone());
        let bd = self.branch3x3dbl_3.forward(self.branch3x3dbl_2.forward(bd));
        Tensor::cat(vec![b3, bd, max3s2(x)], 1)
    }
}

/// `FIDInceptionC`.
#[derive(Module, Debug)]
pub struct InceptionC<B: Backend> {
    branch1x1: BasicConv2d<B>,
    branch7x7_1: BasicConv2d<B>,
    branch7x7_2: BasicConv2d<B>,
    branch7x7_3: BasicConv2d<B>,
    branch7x7dbl_1: BasicConv2d<B>,
    branch7x7dbl_2: BasicConv2d<B>,
    branch7x7dbl_3: BasicConv2d<B>,
    branch7x7dbl_4: BasicConv2d<B>,
    branch7x7dbl_5: BasicConv2d<B>,
    branch_pool: BasicConv2d<B>,
}

impl<B: Backend> InceptionC<B> {
    fn new(c_in: usize, c7: usize, d: &B::Device) -> Self {
        Self {
            branch1x1: conv(c_in, 192, 1, d),
            branch7x7_1: conv(c_in, c7, 1, d),
            branch7x7_2: conv_1x7(c7, c7, d),
            branch7x7_3: conv_7x1(c7, 192, d),
            branch7x7dbl_1: conv(c_in, c7, 1, d),
            branch7x7dbl_2: conv_7x1(c7, c7, d),
            branch7x7dbl_3: conv_1x7(c7, c7, d),
            branch7x7dbl_4: conv_7x1(c7, c7, d),
            branch7x7dbl_5: conv_1x7(c7, 192, d),
            branch_pool: conv(c_in, 192, 1, d),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b7 = self.branch7x7_1.forward(x.clone());
        let b7 = self.branch7x7_3.forward(self.branch7x7_2.forward(b7));
        let bd = self.branch7x7dbl_1.forward(x.clone());
        let bd = self.branch7x7dbl_3.forward(self.branch7x7dbl_2.forward(bd));
        let bd = self.branch7x7dbl_5.forward(self.branch7x7dbl_4.forward(bd));
        let bp = self.branch_pool.forward(avg3(x));
        Tensor::cat(vec![b1, b7, bd, bp], 1)
    }
}

/// `InceptionD` (torchvision's).
#[derive(Module, Debug)]
pub struct InceptionD<B: Backend> {
    branch3x3_1: BasicConv2d<B>,
    branch3x3_2: BasicConv2d<B>,
    branch7x7x3_1: BasicConv2d<B>,
    branch7x7x3_2: BasicConv2d<B>,
    branch7x7x3_3: BasicConv2d<B>,
    branch7x7x3_4: BasicConv2d<B>,
}

impl<B: Backend> InceptionD<B> {
    fn new(c_in: usize, d: &B::Device) -> Self {
        Self {
            branch3x3_1: conv(c_in, 192, 1, d),
            branch3x3_2: conv_s2(192, 320, d),
            branch7x7x3_1: conv(c_in, 192, 1, d),
            branch7x7x3_2: conv_1x7(192, 192, d),
            branch7x7x3_3: conv_7x1(192, 192, d),
            branch7x7x3_4: conv_s2(192, 192, d),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b3 = self
            .branch3x3_2
            .forward(self.branch3x3_1.forward(x.clone()));
        let b7 = self.branch7x7x3_1.forward(x.clone());
        let b7 = self.branch7x7x3_3.forward(self.branch7x7x3_2.forward(b7));
        let b7 = self.branch7x7x3_4.forward(b7);
        Tensor::cat(vec![b3, b7, max3s2(x)], 1)
    }
}

/// `FIDInceptionE_1` (average pool) and `FIDInceptionE_2` (max pool).
#[derive(Module, Debug)]
pub struct InceptionE<B: Backend> {
    branch1x1: BasicConv2d<B>,
    branch3x3_1: BasicConv2d<B>,
    branch3x3_2a: BasicConv2d<B>,
    branch3x3_2b: BasicConv2d<B>,
    branch3x3dbl_1: BasicConv2d<B>,
    branch3x3dbl_2: BasicConv2d<B>,
    branch3x3dbl_3a: BasicConv2d<B>,
    branch3x3dbl_3b: BasicConv2d<B>,
    branch_pool: BasicConv2d<B>,
    #[module(skip)]
    max_pool: bool,
}

impl<B: Backend> InceptionE<B> {
    fn new(c_in: usize, max_pool: bool, d: &B::Device) -> Self {
        Self {
            branch1x1: conv(c_in, 320, 1, d),
            branch3x3_1: conv(c_in, 384, 1, d),
            branch3x3_2a: conv_1x3(384, 384, d),
            branch3x3_2b: conv_3x1(384, 384, d),
            branch3x3dbl_1: conv(c_in, 448, 1, d),
            branch3x3dbl_2: conv(448, 384, 3, d),
            branch3x3dbl_3a: conv_1x3(384, 384, d),
            branch3x3dbl_3b: conv_3x1(384, 384, d),
            branch_pool: conv(c_in, 192, 1, d),
            max_pool,
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b3 = self.branch3x3_1.forward(x.clone());
        let b3 = Tensor::cat(
            vec![
                self.branch3x3_2a.forward(b3.clone()),
                self.branch3x3_2b.forward(b3),
            ],
            1,
        );
        let bd = self
            .branch3x3dbl_2
            .forward(self.branch3x3dbl_1.forward(x.clone()));
        let bd = Tensor::cat(
            vec![
                self.branch3x3dbl_3a.forward(bd.clone()),
                self.branch3x3dbl_3b.forward(bd),
            ],
            1,
        );
        let pooled = if self.max_pool {
            max_pool2d(x, [3, 3], [1, 1], [1, 1], [1, 1], false)
        } else {
            avg3(x)
        };
        let bp = self.branch_pool.forward(pooled);
        Tensor::cat(vec![b1, b3, bd, bp], 1)
    }
}

/// pytorch-fid's InceptionV3 up to the final average pool.
#[derive(Module, Debug)]
pub struct FidInception<B: Backend> {
    Conv2d_1a_3x3: BasicConv2d<B>,
    Conv2d_2a_3x3: BasicConv2d<B>,
    Conv2d_2b_3x3: BasicConv2d<B>,
    Conv2d_3b_1x1: BasicConv2d<B>,
    Conv2d_4a_3x3: BasicConv2d<B>,
    Mixed_5b: InceptionA<B>,
    Mixed_5c: InceptionA<B>,
    Mixed_5d: InceptionA<B>,
    Mixed_6a: InceptionB<B>,
    Mixed_6b: InceptionC<B>,
    Mixed_6c: InceptionC<B>,
    Mixed_6d: InceptionC<B>,
    Mixed_6e: InceptionC<B>,
    Mixed_7a: InceptionD<B>,
    Mixed_7b: InceptionE<B>,
    Mixed_7c: InceptionE<B>,
}

/// Dimension of the pool features.
pub const FID_FEATURES: usize = 2048;

impl<B: Backend> FidInception<B> {
    /// The network with placeholder weights (load pytorch-fid's file with
    /// [`crate::weights::load`]).
    pub fn new(d: &B::Device) -> Self {
        Self {
            Conv2d_1a_3x3: conv_s2(3, 32, d),
            Conv2d_2a_3x3: BasicConv2d::new(32, 32, [3, 3], 1, [0, 0], d),
            Conv2d_2b_3x3: conv(32, 64, 3, d),
            Conv2d_3b_1x1: conv(64, 80, 1, d),
            Conv2d_4a_3x3: BasicConv2d::new(80, 192, [3, 3], 1, [0, 0], d),
            Mixed_5b: InceptionA::new(192, 32, d),
            Mixed_5c: InceptionA::new(256, 64, d),
            Mixed_5d: InceptionA::new(288, 64, d),
            Mixed_6a: InceptionB::new(288, d),
            Mixed_6b: InceptionC::new(768, 128, d),
            Mixed_6c: InceptionC::new(768, 160, d),
            Mixed_6d: InceptionC::new(768, 160, d),
            Mixed_6e: InceptionC::new(768, 192, d),
            Mixed_7a: InceptionD::new(768, d),
            Mixed_7b: InceptionE::new(1280, false, d),
            Mixed_7c: InceptionE::new(2048, true, d),
        }
    }

    /// Pool features of images in `[0, 1]`, resized to 299x299 and scaled to `[-1, 1]` as
    /// pytorch-fid does.
    ///
    /// # Shapes
    /// `[N, 3, H, W]` -> `[N, 2048]`.
    pub fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let options = InterpolateOptions {
            mode: InterpolateMode::Bilinear,
            align_corners: false,
        };
        let x = interpolate(images, [299, 299], options) * 2.0 - 1.0;
        let x = self
            .Conv2d_2b_3x3
            .forward(self.Conv2d_2a_3x3.forward(self.Conv2d_1a_3x3.forward(x)));
        let x = self
            .Conv2d_4a_3x3
            .forward(self.Conv2d_3b_1x1.forward(max3s2(x)));
        let x = max3s2(x);
        let x = self
            .Mixed_5d
            .forward(self.Mixed_5c.forward(self.Mixed_5b.forward(x)));
        let x = self.Mixed_6a.forward(x);
        let x = self.Mixed_6e.forward(
            self.Mixed_6d
                .forward(self.Mixed_6c.forward(self.Mixed_6b.forward(x))),
        );
        let x = self
            .Mixed_7c
            .forward(self.Mixed_7b.forward(self.Mixed_7a.forward(x)));
        let [n, c, _, _] = x.dims();
        x.mean_dim(3).mean_dim(2).reshape([n, c])
    }
}
