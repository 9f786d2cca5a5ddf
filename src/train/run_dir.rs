//! The self-describing run folder: `runs/NNN-name/` with `config.toml` (written first),
//! `log.jsonl` (one line per step), `samples/` (photo | cartoon grids) and `checkpoints/`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::error::{Error, Result};

/// An open run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// The folder.
    pub path: PathBuf,
}

impl RunDir {
    /// Creates the next numbered folder `parent/NNN-name`.
    pub fn create(parent: &Path, name: &str) -> Result<Self> {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let next = fs::read_dir(parent)
            .map_err(|e| Error::io(parent, e))?
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .split('-')
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
            .max()
            .map_or(1, |n| n + 1);
        for number in next.. {
            let path = parent.join(format!("{number:03}-{name}"));
            match fs::create_dir(&path) {
                Ok(()) => return Self::open(&path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        unreachable!("u32 run numbers exhausted")
    }

    /// Opens an existing run folder (for `--resume`), creating its subfolders.
    pub fn open(path: &Path) -> Result<Self> {
        for sub in ["samples", "checkpoints"] {
            let dir = path.join(sub);
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.path.join("config.toml")
    }

    /// `checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.path.join("checkpoints")
    }

    /// Writes the resolved configuration.
    pub fn write_config(&self, toml: &str) -> Result<()> {
        crate::weights::write_atomic(&self.config_path(), toml.as_bytes())
    }

    /// Appends one JSON line to `log.jsonl`.
    pub fn log(&self, line: &serde_json::Value) -> Result<()> {
        let path = self.path.join("log.jsonl");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        writeln!(file, "{line}").map_err(|e| Error::io(&path, e))
    }

    /// Drops the log lines of steps after `done` (written after the checkpoint a resumed run
    /// restarts from; `step` in the log counts steps done).
    pub fn truncate_log(&self, done: usize) -> Result<()> {
        let path = self.path.join("log.jsonl");
        let Ok(text) = fs::read_to_string(&path) else {
            return Ok(());
        };
        let kept: String = text
            .lines()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("step")?.as_u64())
                    .is_some_and(|s| s as usize <= done)
            })
            .map(|line| format!("{line}\n"))
            .collect();
        crate::weights::write_atomic(&path, kept.as_bytes())
    }

    /// Saves a grid with one row per pair: photo | cartoonized.
    pub fn save_samples(
        &self,
        step: usize,
        photos: &[RgbImage],
        cartoons: &[RgbImage],
    ) -> Result<PathBuf> {
        let path = self
            .path
            .join("samples")
            .join(format!("step-{step:08}.png"));
        let (w, h) = photos.first().map(|p| p.dimensions()).unwrap_or((0, 0));
        let mut grid = RgbImage::new(2 * w, h * photos.len() as u32);
        for (row, (photo, cartoon)) in photos.iter().zip(cartoons).enumerate() {
            image::imageops::replace(&mut grid, photo, 0, (row as u32 * h) as i64);
            image::imageops::replace(&mut grid, cartoon, w as i64, (row as u32 * h) as i64);
        }
        grid.save(&path).map_err(|e| Error::Image {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(path)
    }
}
