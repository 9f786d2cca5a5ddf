//! Two independent, seeded, shuffled streams of images (photos and cartoons, nothing paired),
//! decoded on a background thread into mini-batches.
//!
//! Which file feeds which step is a pure function of `(seed, stream, position)`: each stream is
//! reshuffled every time it is exhausted, and step `t` takes positions `t * batch ..
//! (t + 1) * batch` of both streams. A run resumed at step `t` therefore sees exactly the batches
//! an uninterrupted run would, with no RNG state to save.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread;

use burn::tensor::TensorData;
use image::RgbImage;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::image_io::{fit_square, images_to_data, load_rgb, scan_images};
use crate::error::{Error, Result};

/// How often a stream looks for a readable replacement of an unreadable file.
const MAX_REPLACEMENTS: u64 = 16;

/// Files that could not be read (and were replaced), with the reason.
pub type Skipped = Vec<(PathBuf, String)>;

/// One domain: its files and the seed of its shuffles.
#[derive(Debug, Clone)]
pub struct ImageStream {
    /// Where the files were found.
    pub root: PathBuf,
    /// The files, sorted.
    pub paths: Vec<PathBuf>,
    seed: u64,
}

impl ImageStream {
    /// Scans `root` recursively; an error when it holds fewer than `min_images` images.
    pub fn scan(root: &Path, seed: u64, min_images: usize, what: &str) -> Result<Self> {
        let paths = scan_images(root)?;
        if paths.len() < min_images.max(1) {
            return Err(Error::TooFewImages {
                path: root.to_path_buf(),
                found: paths.len(),
                needed: min_images.max(1),
                what: what.to_string(),
            });
        }
        Ok(Self {
            root: root.to_path_buf(),
            paths,
            seed,
        })
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether the stream has no file (never true after [`ImageStream::scan`]).
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The order of the files in shuffle cycle `cycle`.
    fn order(&self, cycle: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.paths.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(mix(self.seed, cycle)));
        order
    }

    /// The file at stream position `position`.
    pub fn path_at(&self, position: u64) -> &Path {
        let len = self.paths.len() as u64;
        &self.paths[self.order(position / len)[(position % len) as usize]]
    }
}

/// SplitMix64-style mixing of a seed and a counter.
pub(crate) fn mix(seed: u64, counter: u64) -> u64 {
    let mut z = seed ^ counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Image size and augmentation of the batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// Images per domain per step.
    pub batch: usize,
    /// Side of the square training crops.
    pub size: u32,
    /// Random crop position and horizontal flip (off: centre crop, as the official code).
    pub augment: bool,
}

/// One step's photos and cartoons, `[batch, 3, size, size]` in `[-1, 1]`.
#[derive(Debug)]
pub struct UnpairedBatch {
    /// The training step this batch belongs to.
    pub step: usize,
    /// Photos.
    pub photos: TensorData,
    /// Cartoons.
    pub cartoons: TensorData,
    /// Files that could not be read (and were replaced), with the reason.
    pub skipped: Skipped,
}

/// Photos and cartoons, batched.
#[derive(Debug, Clone)]
pub struct UnpairedData {
    /// The photo stream.
    pub photos: ImageStream,
    /// The cartoon stream.
    pub cartoons: ImageStream,
    /// Size and augmentation.
    pub options: BatchOptions,
}

impl UnpairedData {
    /// Steps per epoch: `floor(max(photos, cartoons) / batch)`.
    pub fn steps_per_epoch(&self) -> usize {
        self.photos.len().max(self.cartoons.len()) / self.options.batch
    }

    /// Decodes the batch of `step` (both domains), replacing unreadable files.
    pub fn batch(&self, step: usize) -> Result<UnpairedBatch> {
        let (photos, mut skipped) = self.decode(&self.photos, step, 0)?;
        let (cartoons, more) = self.decode(&self.cartoons, step, 1)?;
        skipped.extend(more);
        Ok(UnpairedBatch {
            step,
            photos,
            cartoons,
            skipped,
        })
    }

    fn decode(
        &self,
        stream: &ImageStream,
        step: usize,
        domain: u64,
    ) -> Result<(TensorData, Skipped)> {
        let first = (step * self.options.batch) as u64;
        let results: Vec<Result<(RgbImage, Skipped)>> = (0..self.options.batch as u64)
            .into_par_iter()
            .map(|j| self.decode_one(stream, first + j, domain))
            .collect();
        let mut images = Vec::with_capacity(results.len());
        let mut skipped = Vec::new();
        for result in results {
            let (image, bad) = result?;
            images.push(image);
            skipped.extend(bad);
        }
        Ok((images_to_data(&images), skipped))
    }

    /// The image at `position`; an unreadable file is replaced by the file at the same position
    /// of the following shuffle cycles.
    fn decode_one(
        &self,
        stream: &ImageStream,
        position: u64,
        domain: u64,
    ) -> Result<(RgbImage, Skipped)> {
        let mut skipped = Vec::new();
        let len = stream.len() as u64;
        for attempt in 0..MAX_REPLACEMENTS {
            let path = stream.path_at(position + attempt * len);
            match load_rgb(path) {
                Ok(image) => return Ok((self.crop(&image, position, domain), skipped)),
                Err(err) => skipped.push((path.to_path_buf(), err.to_string())),
            }
        }
        Err(Error::TooFewImages {
            path: stream.root.clone(),
            found: 0,
            needed: 1,
            what: format!("{MAX_REPLACEMENTS} unreadable files in a row"),
        })
    }

    fn crop(&self, image: &RgbImage, position: u64, domain: u64) -> RgbImage {
        let size = self.options.size;
        if !self.options.augment {
            return fit_square(image, size, 0.5, 0.5);
        }
        let mut rng = StdRng::seed_from_u64(mix(mix(self.photos.seed, domain + 7), position));
        let mut crop = fit_square(image, size, rng.random(), rng.random());
        if rng.random_bool(0.5) {
            image::imageops::flip_horizontal_in_place(&mut crop);
        }
        crop
    }

    /// Decodes the batches of steps `start..end` on a background thread, a few ahead of use.
    /// Every step gets its batch or an error: a panic while decoding one is sent as
    /// [`Error::DataLoader`] (a thread that died would end the batches early, and training
    /// would stop short as if the schedule were done).
    pub fn prefetch(&self, start: usize, end: usize) -> Receiver<Result<UnpairedBatch>> {
        let (sender, receiver) = sync_channel(2);
        let on_failure = sender.clone();
        let data = self.clone();
        let spawned = thread::Builder::new()
            .name("toonsmith-prefetch".into())
            .spawn(move || {
                for step in start..end {
                    if sender.send(guarded(step, || data.batch(step))).is_err() {
                        break;
                    }
                }
            });
        if let Err(err) = spawned {
            let reason = format!("cannot start its thread: {err}");
            let _ = on_failure.send(Err(Error::DataLoader {
                step: start,
                reason,
            }));
        }
        receiver
    }
}

/// `batch()`, with a panic turned into [`Error::DataLoader`] at `step`.
fn guarded<T>(step: usize, batch: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(batch)).unwrap_or_else(|panic| {
        let reason = crate::error::panic_message(panic.as_ref());
        Err(Error::DataLoader { step, reason })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(n: usize, seed: u64) -> ImageStream {
        ImageStream {
            root: PathBuf::from("x"),
            paths: (0..n).map(|i| PathBuf::from(format!("{i}.png"))).collect(),
            seed,
        }
    }

    #[test]
    fn a_panic_while_loading_is_an_error_of_its_step() {
        assert_eq!(guarded(3, || Ok(7)).unwrap(), 7);
        let err = guarded::<()>(5, || panic!("decoder bug")).unwrap_err();
        assert!(
            matches!(&err, Error::DataLoader { step: 5, reason } if reason == "decoder bug"),
            "{err}"
        );
    }

    #[test]
    fn each_cycle_is_a_permutation_and_cycles_differ() {
        let s = stream(7, 3);
        let cycle = |c: u64| {
            (0..7)
                .map(|i| s.path_at(c * 7 + i).to_path_buf())
                .collect::<Vec<_>>()
        };
        let mut first = cycle(0);
        assert_ne!(first, cycle(1));
        first.sort();
        assert_eq!(first, s.paths);
        assert_eq!(cycle(2), cycle(2));
    }
}
