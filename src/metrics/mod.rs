//! Distribution distances between sets of image features: FID's Fréchet distance and KID, with
//! pytorch-fid's `.npz` statistics files, and folders of images to Inception features.

pub mod features;
pub mod kid;
pub mod npz;
pub mod stats;

pub use kid::{kid, Kid};
pub use stats::{frechet_distance, FeatureStats, Gaussian};
