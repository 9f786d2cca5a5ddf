//! Checkpoints: G, both discriminators (with their spectral-norm vectors), the three Adam
//! states and the position in the schedule, in one folder `step-00000123/` (steps done) of the run's
//! `checkpoints/`. Every file is written into a hidden temporary folder, synced, and the folder
//! renamed into place, so a crash never leaves a half-written checkpoint. The RNG needs no
//! state: shuffles and strides are functions of (seed, step).
//!
//! Each checkpoint also holds `generator.safetensors` with the generator config in its metadata:
//! a model file `cartoonize` and `eval` read directly.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module};
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::step::Nets;
use crate::error::{Error, Result};
use crate::model::GeneratorConfig;
use crate::weights;

/// Metadata key of the generator config (JSON) in a model file.
pub const GENERATOR_CONFIG_KEY: &str = "toonsmith.generator";

/// Where the schedule stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Steps done.
    pub step: usize,
    /// Epochs done.
    pub epoch: usize,
}

type Rec = NamedMpkBytesRecorder<FullPrecisionSettings>;

fn fail(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = fs::File::create(path).map_err(|e| Error::io(path, e))?;
    file.write_all(bytes).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

fn record_bytes<B: AutodiffBackend, R: burn::record::Record<B>>(
    record: R,
    path: &Path,
) -> Result<Vec<u8>> {
    Recorder::<B>::record(&Rec::default(), record, ()).map_err(|e| fail(path, e))
}

/// Saves `nets` at `position` under `checkpoints/`, returning the new folder.
pub fn save<B: AutodiffBackend>(
    checkpoints: &Path,
    nets: &Nets<B>,
    position: Position,
    generator: &GeneratorConfig,
) -> Result<PathBuf> {
    let name = format!("step-{:08}", position.step);
    let target = checkpoints.join(&name);
    let tmp = checkpoints.join(format!(".{name}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let files: [(&str, Vec<u8>); 6] = [
        (
            "g.mpk",
            record_bytes::<B, _>(nets.g.clone().into_record(), &tmp)?,
        ),
        (
            "d.mpk",
            record_bytes::<B, _>(nets.d.clone().into_record(), &tmp)?,
        ),
        (
            "opt_init.mpk",
            record_bytes::<B, _>(nets.opt_init.to_record(), &tmp)?,
        ),
        (
            "opt_g.mpk",
            record_bytes::<B, _>(nets.opt_g.to_record(), &tmp)?,
        ),
        (
            "opt_d.mpk",
            record_bytes::<B, _>(nets.opt_d.to_record(), &tmp)?,
        ),
        (
            "position.json",
            serde_json::to_vec_pretty(&position).unwrap_or_default(),
        ),
    ];
    for (file, bytes) in files {
        write_synced(&tmp.join(file), &bytes)?;
    }
    save_model(
        &nets.g.valid(),
        generator,
        &tmp.join("generator.safetensors"),
    )?;
    // Weights read after a device fault are garbage: the folder stays hidden (`.tmp`), the last
    // good checkpoint stays the latest.
    crate::device::faults::check(&format!("saving checkpoint {}", target.display()))?;
    if target.exists() {
        fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
    }
    fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
    if let Ok(dir) = fs::File::open(checkpoints) {
        let _ = dir.sync_all();
    }
    Ok(target)
}

/// Writes a model file: the generator's weights with its config in the metadata.
pub fn save_model<B: burn::tensor::backend::Backend>(
    g: &crate::model::Generator<B>,
    config: &GeneratorConfig,
    path: &Path,
) -> Result<()> {
    let json = serde_json::to_string(config).unwrap_or_default();
    let meta = std::collections::HashMap::from([(GENERATOR_CONFIG_KEY.to_string(), json)]);
    weights::save(g, path, &meta)
}

/// The most recent complete checkpoint under `checkpoints/`, if any.
pub fn latest(checkpoints: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(checkpoints)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .map(|n| n.starts_with("step-"))
                .unwrap_or(false)
                && p.join("position.json").exists()
        })
        .collect();
    found.sort();
    found.pop()
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::io(path, e))
}

fn load_record<B: AutodiffBackend, R: burn::record::Record<B>>(
    path: &Path,
    device: &B::Device,
) -> Result<R> {
    Recorder::<B>::load(&Rec::default(), read(path)?, device).map_err(|e| fail(path, e))
}

/// Restores `nets` from the checkpoint folder `dir`.
pub fn load<B: AutodiffBackend>(
    dir: &Path,
    nets: Nets<B>,
    device: &B::Device,
) -> Result<(Nets<B>, Position)> {
    let position: Position = serde_json::from_slice(&read(&dir.join("position.json"))?)
        .map_err(|e| fail(&dir.join("position.json"), e))?;
    let nets = Nets {
        g: nets.g.load_record(load_record(&dir.join("g.mpk"), device)?),
        d: nets.d.load_record(load_record(&dir.join("d.mpk"), device)?),
        opt_init: nets
            .opt_init
            .load_record(load_record(&dir.join("opt_init.mpk"), device)?),
        opt_g: nets
            .opt_g
            .load_record(load_record(&dir.join("opt_g.mpk"), device)?),
        opt_d: nets
            .opt_d
            .load_record(load_record(&dir.join("opt_d.mpk"), device)?),
    };
    Ok((nets, position))
}
