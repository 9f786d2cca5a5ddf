//! Reading images from disk into RGB and converting between images and tensors.
//!
//! Any JPEG, PNG, WebP, BMP or TIFF the `image` crate decodes is accepted: EXIF orientation is
//! applied, and grayscale, alpha, 16-bit and CMYK images are converted to 8-bit RGB (alpha is
//! dropped here; inference keeps it separately).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::error::{Error, Result};

/// File extensions scanned for images (lower case).
pub const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"];

/// Whether `path` has one of [`IMAGE_EXTENSIONS`].
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// Every image file under `dir`, recursively, sorted by path. An error if `dir` cannot be read.
pub fn scan_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|e| Error::io(&folder, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&folder, e))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if is_image_path(&path) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Decodes `path` with its EXIF orientation applied.
pub fn load_dynamic(path: &Path) -> Result<DynamicImage> {
    let fail = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let reader = ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let mut decoder = reader.into_decoder().map_err(|e| fail(e.to_string()))?;
    let orientation = decoder.orientation().map_err(|e| fail(e.to_string()))?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| fail(e.to_string()))?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// Decodes `path` to 8-bit RGB.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    Ok(load_dynamic(path)?.to_rgb8())
}

/// Resizes `image` so its shorter side is `size` and cuts the `size x size` square at
/// (`dx`, `dy`) in `[0, 1]` of the free range (0.5, 0.5 is the centre).
pub fn fit_square(image: &RgbImage, size: u32, dx: f32, dy: f32) -> RgbImage {
    let (w, h) = image.dimensions();
    let scale = size as f32 / w.min(h) as f32;
    let (nw, nh) = (
        ((w as f32 * scale).round() as u32).max(size),
        ((h as f32 * scale).round() as u32).max(size),
    );
    let resized = if (nw, nh) == (w, h) {
        image.clone()
    } else {
        image::imageops::resize(image, nw, nh, FilterType::Triangle)
    };
    let x = ((nw - size) as f32 * dx).round() as u32;
    let y = ((nh - size) as f32 * dy).round() as u32;
    image::imageops::crop_imm(&resized, x, y, size, size).to_image()
}

/// Stacks same-size RGB images into `[N, 3, H, W]` values in `[-1, 1]`.
pub fn images_to_data(images: &[RgbImage]) -> TensorData {
    let (w, h) = images.first().map(|i| i.dimensions()).unwrap_or((0, 0));
    let (w, h) = (w as usize, h as usize);
    let mut values = vec![0.0f32; images.len() * 3 * h * w];
    for (n, image) in images.iter().enumerate() {
        for (i, pixel) in image.pixels().enumerate() {
            for c in 0..3 {
                values[(n * 3 + c) * h * w + i] = pixel[c] as f32 / 127.5 - 1.0;
            }
        }
    }
    TensorData::new(values, [images.len(), 3, h, w])
}

/// The images of a `[N, 3, H, W]` tensor in `[-1, 1]` (values clamped, rounded).
pub fn tensor_to_images<B: Backend>(tensor: Tensor<B, 4>) -> Vec<RgbImage> {
    let [n, _, h, w] = tensor.dims();
    let values = tensor
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default();
    (0..n)
        .map(|k| {
            RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let at = |c: usize| {
                    let v = values[(k * 3 + c) * h * w + y as usize * w + x as usize];
                    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
                };
                image::Rgb([at(0), at(1), at(2)])
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{CpuBackend, CPU};

    #[test]
    fn tensor_round_trip_is_exact_on_8bit_values() {
        let image = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 50, y as u8 * 100, 255]));
        let data = images_to_data(std::slice::from_ref(&image));
        let back = tensor_to_images(Tensor::<CpuBackend, 4>::from_data(data, &CPU));
        assert_eq!(back[0], image);
    }

    #[test]
    fn fit_square_crops_the_centre_of_the_long_side() {
        // 40x20: left half black, middle 20 columns white, right black.
        let image = RgbImage::from_fn(40, 20, |x, _| {
            if (10..30).contains(&x) {
                image::Rgb([255; 3])
            } else {
                image::Rgb([0; 3])
            }
        });
        let square = fit_square(&image, 20, 0.5, 0.5);
        assert_eq!(square.dimensions(), (20, 20));
        assert!(square.pixels().all(|p| p[0] == 255));
    }
}
