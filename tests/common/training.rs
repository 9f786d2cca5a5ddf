//! A tiny training set made in a temp dir: blocky photos and cartoons with real edges, a
//! randomly initialised VGG16, and a paper config shrunk to run in seconds on the CPU.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use toonsmith::config::Stride;
use toonsmith::device::{CpuBackend, CPU};
use toonsmith::model::{VggConfig, VggLayout};
use toonsmith::train::config::TrainConfig;
use toonsmith::weights;

/// Blocky images with real edges, different per `seed`.
pub fn make_images(dir: &Path, count: usize, seed: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..count as u32 {
        let image = RgbImage::from_fn(72, 64, |x, y| {
            let cell = (x / 12 + y / 16 + i + seed) % 4;
            Rgb([
                (cell * 60) as u8,
                (255 - cell * 50) as u8,
                ((x * 3 + seed * 40) % 256) as u8,
            ])
        });
        image.save(dir.join(format!("img{i}.png"))).unwrap();
    }
}

/// A randomly initialised VGG16 saved under toonsmith's names.
pub fn make_vgg(path: &Path) {
    let vgg = VggConfig {
        layout: VggLayout::Vgg16,
        ..VggConfig::default()
    }
    .init::<CpuBackend>(&CPU);
    weights::save(&vgg, path, &HashMap::new()).unwrap();
}

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        make_images(&root.join("photos"), 2, 0);
        make_images(&root.join("cartoons/nested"), 2, 7);
        make_vgg(&root.join("vgg16.safetensors"));
        Self { _dir: dir, root }
    }

    pub fn config(&self, runs: &str) -> TrainConfig {
        let mut config = TrainConfig::default();
        config.data.photos = self.root.join("photos");
        config.data.cartoons = self.root.join("cartoons");
        config.data.size = 64;
        config.vgg.path = Some(self.root.join("vgg16.safetensors"));
        config.vgg.network.layout = VggLayout::Vgg16;
        config.schedule.batch = 1;
        config.schedule.epochs = 3;
        config.schedule.init_epochs = 1;
        config.ctss.patch_size = 32;
        config.ctss.k = 2;
        config.ctss.stride = Stride::Uniform { min: 16, max: 24 };
        config.run.dir = self.root.join(runs);
        config.run.sample_every = 3;
        config.run.samples = 2;
        config.validate().unwrap();
        config
    }
}
