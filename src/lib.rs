//! toonsmith: photo-to-cartoon translation with the texture-saliency-adaptive GAN of
//! Gao, Zhang and Tian, "Learning to Incorporate Texture Saliency Adaptive Attention to Image
//! Cartoonization" (ICML 2022), on burn.
//!
//! - [`model`]: the generator G, the discriminators D_img and D_patch, VGG for the content loss
//!   (Fig. 10, Eq. 7).
//! - [`ctss`]: the cartoon-texture-saliency-sampler (Section III-B, Eqs. 1-6).
//! - [`losses`]: the objective (Eqs. 7-17) and the style losses of Table IV.
//! - [`weights`]: safetensors I/O of every network and import of pretrained VGG files.
//! - [`data`]: unpaired image folders to mini-batches.
//! - [`train`]: the two-phase training loop, checkpoints and run folders.
//! - [`infer`]: model files to cartoons of any size, and the colour post-processing.
//! - [`video`]: videos frame by frame through ffmpeg pipes.
//! - [`metrics`]: Fréchet distance, KID and pytorch-fid `.npz` statistics.
//! - [`config`]: serde configuration whose defaults are the paper's.
//! - [`device`]: the backend, chosen once by cargo features.
//! - [`kernels`]: toonsmith's own CPU kernels for inference hot spots.
#![warn(missing_docs)]

pub mod config;
pub mod ctss;
pub mod data;
pub mod device;
pub mod error;
pub mod infer;
pub mod kernels;
pub mod losses;
pub mod metrics;
pub mod model;
pub mod train;
pub mod video;
pub mod weights;

pub use error::{Error, Result};
