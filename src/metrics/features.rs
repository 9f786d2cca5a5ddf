//! Image folders to features: a [`FeatureNet`] on each image (RGB in `[0, 1]`, resized inside
//! the network), as one matrix per folder.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use image::RgbImage;

use super::network::FeatureNet;
use super::stats::{FeatureStats, Gaussian};
use crate::data::image_io::images_to_data;
use crate::data::{load_rgb, scan_images};
use crate::error::{Error, Result};

/// Features of a set of images, row-major `[n, dim]`, and the files that could not be read.
#[derive(Debug)]
pub struct FeatureSet {
    /// Feature dimension.
    pub dim: usize,
    /// The features.
    pub features: Vec<f32>,
    /// Unreadable files, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

impl FeatureSet {
    /// No features yet, of dimension `dim`.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            features: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Number of feature vectors.
    pub fn len(&self) -> usize {
        self.features.len() / self.dim
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// Mean and covariance.
    pub fn gaussian(&self) -> Gaussian {
        let mut stats = FeatureStats::new(self.dim);
        stats.add(&self.features);
        stats.gaussian()
    }
}

/// Features of one RGB image; an error if the device failed computing them
/// ([`crate::device::faults`]).
pub fn image_features<B: Backend>(
    net: &FeatureNet<B>,
    image: &RgbImage,
    device: &B::Device,
) -> Result<Vec<f32>> {
    let x = Tensor::<B, 4>::from_data(images_to_data(std::slice::from_ref(image)), device);
    let unit = (x + 1.0) / 2.0;
    let features = net
        .features(unit)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default();
    crate::device::faults::check(&format!("computing {} features", net.kind().json_key()))?;
    Ok(features)
}

/// Features of every image file in `paths`; `progress` is called after each file. Unreadable
/// files are skipped (listed in the set); a device fault stops with an error naming the file.
pub fn files_features<B: Backend>(
    net: &FeatureNet<B>,
    paths: &[PathBuf],
    device: &B::Device,
    mut progress: impl FnMut(&Path),
) -> Result<FeatureSet> {
    let mut set = FeatureSet::new(net.kind().dim());
    for path in paths {
        match load_rgb(path) {
            Ok(image) => set
                .features
                .extend(image_features(net, &image, device).map_err(|e| in_file(path, e))?),
            Err(err) => set.skipped.push((path.clone(), err.to_string())),
        }
        progress(path);
    }
    Ok(set)
}

/// `err` about `path`: a device fault names the file it happened on.
fn in_file(path: &Path, err: Error) -> Error {
    match err {
        Error::Device { during, reason } => Error::Device {
            during: format!("{during} of {}", path.display()),
            reason,
        },
        other => other,
    }
}

/// Images of `folder`, an error if none.
pub fn folder_images(folder: &Path) -> Result<Vec<PathBuf>> {
    let paths = scan_images(folder)?;
    if paths.is_empty() {
        return Err(Error::TooFewImages {
            path: folder.to_path_buf(),
            found: 0,
            needed: 2,
            what: "statistics need images".into(),
        });
    }
    Ok(paths)
}

/// Key of a folder's cached statistics: its file list, their sizes and modification times, and
/// a hash of the weights file.
pub fn cache_key(paths: &[PathBuf], weights: &Path) -> Result<String> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for path in paths {
        path.hash(&mut hasher);
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        meta.len().hash(&mut hasher);
        meta.modified().ok().hash(&mut hasher);
    }
    let bytes = std::fs::read(weights).map_err(|e| Error::io(weights, e))?;
    bytes.len().hash(&mut hasher);
    bytes.iter().step_by(4096).for_each(|b| b.hash(&mut hasher));
    Ok(format!("{:016x}", hasher.finish()))
}
