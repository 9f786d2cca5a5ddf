//! Distribution distances between sets of image features: FID's Fréchet distance and KID, with
//! pytorch-fid's `.npz` statistics files, and folders of images to the features of a
//! [`network::FeatureNet`] (Inception for FID, EfficientNet-Lite0 for "FD (EfficientNet-Lite0)").

pub mod features;
pub mod kid;
pub mod network;
pub mod npz;
pub mod stats;

pub use kid::{kid, Kid};
pub use network::{FeatureNet, FeatureNetKind};
pub use stats::{frechet_distance, FeatureStats, Gaussian};
