//! `toonsmith cartoonize`: a model file to a generator, an image of any size to a cartoon of the
//! same size, and the paper's colour post-processing.
//!
//! Sizes: the image is padded by reflection to the generator's multiple of 4 (edge replication
//! where it is too small to reflect) and cropped back, so the output has the input's size. No
//! downscaling happens unless `max_side` asks for it.

pub mod memory;
pub mod official_colour;
pub mod postprocess;
pub mod tiled;

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::ops::PadMode;
use burn::tensor::Tensor;
use image::{DynamicImage, GrayImage, RgbImage};

use crate::data::image_io::{images_to_data, tensor_to_images};
use crate::error::{Error, Result};
use crate::model::generator::SIZE_MULTIPLE;
use crate::model::{Generator, GeneratorConfig};
use crate::train::checkpoint::GENERATOR_CONFIG_KEY;
use crate::weights::{self, TensorFile};
pub use postprocess::{ColourChain, OfficialColour, PostConfig};
pub use tiled::Tiling;

/// Builds the generator a model file describes: safetensors weights whose metadata holds the
/// generator config under `toonsmith.generator` (what `train` writes in each checkpoint).
pub fn load_model<B: Backend>(file: &TensorFile, device: &B::Device) -> Result<Generator<B>> {
    let json = file
        .metadata
        .get(GENERATOR_CONFIG_KEY)
        .ok_or_else(|| Error::NotWeights {
            path: file.path.clone(),
            reason: format!("no `{GENERATOR_CONFIG_KEY}` metadata: not a toonsmith model file"),
        })?;
    let config: GeneratorConfig = serde_json::from_str(json).map_err(|e| Error::NotWeights {
        path: file.path.clone(),
        reason: format!("bad `{GENERATOR_CONFIG_KEY}` metadata: {e}"),
    })?;
    let mut g = config.init::<B>(device);
    weights::apply(&mut g, file, |name| vec![name.to_string()])?;
    Ok(g)
}

/// Resolves a `--model` argument: a model file, a checkpoint folder, or a run folder (its
/// latest checkpoint).
pub fn model_file(path: &Path) -> Result<std::path::PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let direct = path.join("generator.safetensors");
    if direct.is_file() {
        return Ok(direct);
    }
    crate::train::checkpoint::latest(&path.join("checkpoints"))
        .map(|c| c.join("generator.safetensors"))
        .ok_or_else(|| Error::Checkpoint {
            path: path.to_path_buf(),
            reason: "no model here: expected a .safetensors model file, a checkpoint folder or a run folder".into(),
        })
}

/// A generator ready to cartoonize photos.
pub struct Cartoonizer<B: Backend> {
    g: Generator<B>,
    device: B::Device,
    /// Post-processing settings.
    pub post: PostConfig,
    /// Downscale images whose longer side exceeds this (None: never).
    pub max_side: Option<u32>,
    /// Images with more pixels than this run in tiles (see [`tiled`]); `usize::MAX`: never.
    /// Default: 2,100,000 (1920x1080 runs whole).
    pub tile_above: usize,
    /// Core side of the tiles; `None`: chosen within [`Self::tile_budget`], else
    /// [`memory::DEFAULT_TILE_CORE`].
    pub tile_core: Option<usize>,
    /// Bytes tiled inference may keep between its passes (see [`tiled`]); `None`: what
    /// [`Self::tile_budget`] leaves, else [`memory::DEFAULT_TILE_CACHE`].
    pub tile_cache: Option<usize>,
    /// Bytes tiled inference may take in all, from which a tile core and cache not given are
    /// chosen per photo ([`memory::tiling_within`]). Default: `None`.
    pub tile_budget: Option<u64>,
}

impl<B: Backend> Cartoonizer<B> {
    /// Wraps `g` (its convolution weights laid out for the GPU's kernels where they read
    /// them so, [`crate::kernels::weights_for_inference`]).
    pub fn new(g: Generator<B>, device: B::Device, post: PostConfig) -> Self {
        crate::device::faults::watch();
        Self {
            g: crate::kernels::weights_for_inference(g),
            device,
            post,
            max_side: None,
            tile_above: memory::MIN_TILE_ABOVE,
            tile_core: None,
            tile_cache: None,
            tile_budget: None,
        }
    }

    /// Cartoonizes one image; alpha is kept, grayscale and 16-bit images come out as 8-bit RGB.
    pub fn cartoonize(&self, image: &DynamicImage) -> Result<DynamicImage> {
        let image = self.limit(image);
        let alpha: Option<GrayImage> = image.color().has_alpha().then(|| alpha_of(&image));
        let photo = image.to_rgb8();
        let mut cartoon = self.generate(&photo);
        crate::device::faults::check(&format!(
            "cartoonizing a {}x{} image",
            photo.width(),
            photo.height()
        ))?;
        postprocess::apply(&mut cartoon, &photo, &self.post);
        Ok(match alpha {
            Some(alpha) => {
                let mut rgba = DynamicImage::ImageRgb8(cartoon).to_rgba8();
                for (p, a) in rgba.pixels_mut().zip(alpha.pixels()) {
                    p[3] = a[0];
                }
                DynamicImage::ImageRgba8(rgba)
            }
            None => DynamicImage::ImageRgb8(cartoon),
        })
    }

    /// The image downscaled to `max_side`, or the image itself (borrowed, not copied).
    fn limit<'a>(&self, image: &'a DynamicImage) -> std::borrow::Cow<'a, DynamicImage> {
        match self.max_side {
            Some(max) if image.width().max(image.height()) > max => std::borrow::Cow::Owned(
                image.resize(max, max, image::imageops::FilterType::Lanczos3),
            ),
            _ => std::borrow::Cow::Borrowed(image),
        }
    }

    /// G on the whole image, padded to the generator's multiple and cropped back.
    pub fn generate(&self, photo: &RgbImage) -> RgbImage {
        let (w, h) = (photo.width() as usize, photo.height() as usize);
        let x =
            Tensor::<B, 4>::from_data(images_to_data(std::slice::from_ref(photo)), &self.device);
        let min = self.g.min_side();
        let (ph, pw) = (padded(h, min), padded(w, min));
        let x = pad_to(x, ph, pw);
        if ph * pw > self.tile_above {
            let full = tiled::generate_tiled(&self.g, x, self.tiling(ph * pw));
            return image::imageops::crop_imm(&full, 0, 0, w as u32, h as u32).to_image();
        }
        let y = self.g.forward(x).slice([0..1, 0..3, 0..h, 0..w]);
        tensor_to_images(y).remove(0)
    }

    /// The tiles for a photo of `pixels` (padded) pixels.
    fn tiling(&self, pixels: usize) -> Tiling {
        let halo = self.g.receptive_radius();
        let (core, cache_bytes) = match self.tile_budget {
            Some(budget) => {
                memory::tiling_within(budget, pixels, halo, self.tile_core, self.tile_cache)
            }
            None => (
                self.tile_core.unwrap_or(memory::DEFAULT_TILE_CORE),
                self.tile_cache.unwrap_or(memory::DEFAULT_TILE_CACHE),
            ),
        };
        Tiling {
            core: core.div_ceil(SIZE_MULTIPLE).max(1) * SIZE_MULTIPLE,
            halo,
            cache_bytes,
        }
    }
}

/// The smallest multiple of [`SIZE_MULTIPLE`] >= `n` and >= `min`.
fn padded(n: usize, min: usize) -> usize {
    n.max(min).div_ceil(SIZE_MULTIPLE) * SIZE_MULTIPLE
}

/// Pads bottom/right to `h` x `w` by reflection, or by edge replication where the image is too
/// small to reflect.
fn pad_to<B: Backend>(x: Tensor<B, 4>, h: usize, w: usize) -> Tensor<B, 4> {
    let [_, _, ih, iw] = x.dims();
    let (dh, dw) = (h - ih, w - iw);
    if dh == 0 && dw == 0 {
        return x;
    }
    let mode = if dh < ih && dw < iw {
        PadMode::Reflect
    } else {
        PadMode::Edge
    };
    x.pad([(0, dh), (0, dw)], mode)
}

fn alpha_of(image: &DynamicImage) -> GrayImage {
    let rgba = image.to_rgba8();
    GrayImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        image::Luma([rgba.get_pixel(x, y)[3]])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A budget chooses the tile core and cache a caller left open; without one the fixed
    /// defaults apply.
    #[test]
    fn tiles_come_from_the_budget_or_the_defaults() {
        use crate::device::{CpuBackend, CPU};
        let g = crate::model::GeneratorConfig::default().init::<CpuBackend>(&CPU);
        let halo = g.receptive_radius();
        let mut c = Cartoonizer::new(g, CPU, PostConfig::off());
        let uhd = 3840 * 2160;
        let fixed = c.tiling(uhd);
        assert_eq!((fixed.core, fixed.halo), (memory::DEFAULT_TILE_CORE, halo));
        assert_eq!(fixed.cache_bytes, memory::DEFAULT_TILE_CACHE);
        let budget = 6 << 30;
        c.tile_budget = Some(budget);
        let chosen = c.tiling(uhd);
        let expected = memory::tiling_within(budget, uhd, halo, None, None);
        assert_eq!((chosen.core, chosen.cache_bytes), expected);
        assert_eq!(chosen.core, 1024);
        c.tile_core = Some(250);
        let given = c.tiling(uhd);
        assert_eq!(given.core, 252, "rounded up to a multiple of 4");
        assert!(
            given.cache_bytes > expected.1,
            "a smaller tile leaves more cache"
        );
    }

    #[test]
    fn padded_sizes() {
        assert_eq!(padded(257, 4), 260);
        assert_eq!(padded(1, 4), 4);
        assert_eq!(padded(3, 8), 8);
        assert_eq!(padded(256, 8), 256);
    }
}
