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
use rayon::prelude::*;

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
    // One row of one channel plane per task: the planar layout's rows are independent.
    values
        .par_chunks_mut(w.max(1))
        .enumerate()
        .for_each(|(row, dst)| {
            let (plane, y) = (row / h, row % h);
            let (n, c) = (plane / 3, plane % 3);
            let src = &images[n].as_raw()[y * w * 3..(y + 1) * w * 3];
            for (d, pixel) in dst.iter_mut().zip(src.chunks_exact(3)) {
                *d = pixel[c] as f32 / 127.5 - 1.0;
            }
        });
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
    let plane = h * w;
    (0..n)
        .map(|k| {
            let mut raw = vec![0u8; plane * 3];
            // Row by row in parallel (a 1920x1080 image took 18 ms on one thread, on the GPU
            // path's critical path between the download and the next image).
            raw.par_chunks_mut((w * 3).max(1))
                .enumerate()
                .for_each(|(y, dst)| {
                    let at = |c: usize| &values[(k * 3 + c) * plane + y * w..][..w];
                    let (r, g, b) = (at(0), at(1), at(2));
                    for (x, pixel) in dst.chunks_exact_mut(3).enumerate() {
                        pixel[0] = to_level(r[x]);
                        pixel[1] = to_level(g[x]);
                        pixel[2] = to_level(b[x]);
                    }
                });
            RgbImage::from_raw(w as u32, h as u32, raw)
                .unwrap_or_else(|| unreachable!("{w}x{h}x3 values"))
        })
        .collect()
}

/// A value in `[-1, 1]` as an 8-bit level (clamped, rounded; NaN to 0).
fn to_level(v: f32) -> u8 {
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
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

    /// Two images of distinct content: each value lands in its own image, channel and place
    /// (planar layout, images after one another), and back.
    #[test]
    fn batches_keep_each_image_channel_and_place() {
        let pixel = |k: u32| {
            move |x: u32, y: u32| {
                image::Rgb([
                    (x * 7 + k) as u8,
                    (y * 11) as u8,
                    (x + y * 13 + k * 3) as u8,
                ])
            }
        };
        let images = [
            RgbImage::from_fn(6, 4, pixel(0)),
            RgbImage::from_fn(6, 4, pixel(1)),
        ];
        let data = images_to_data(&images);
        assert_eq!(data.shape.to_vec(), vec![2, 3, 4, 6]);
        let values = data.to_vec::<f32>().unwrap();
        // Image 1, channel 2, row 3, column 5: (5 + 39 + 3) = 47.
        assert_eq!(values[((3 + 2) * 4 + 3) * 6 + 5], 47.0 / 127.5 - 1.0);
        let back = tensor_to_images(Tensor::<CpuBackend, 4>::from_data(data, &CPU));
        assert_eq!(back, images.to_vec());
    }

    /// Values outside [-1, 1] clamp, levels round to nearest, NaN becomes 0.
    #[test]
    fn levels_clamp_and_round() {
        let values = vec![-3.0, 1.5, 0.0, f32::NAN, 2.0 / 255.0 - 1.0 + 0.001, -1.0];
        let t = Tensor::<CpuBackend, 4>::from_data(TensorData::new(values, [1, 3, 1, 2]), &CPU);
        let image = &tensor_to_images(t)[0];
        assert_eq!(image.get_pixel(0, 0).0, [0, 128, 1]);
        assert_eq!(image.get_pixel(1, 0).0, [255, 0, 0]);
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
