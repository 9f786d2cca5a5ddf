//! `toonsmith train`: flags -> config, progress bar, Ctrl-C -> checkpoint.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use burn::module::Module;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use toonsmith::config::Preset;
use toonsmith::device::{self, SelectedAutodiff};
use toonsmith::train::config::{self, Overrides, Style, TrainConfig};
use toonsmith::train::observer::{Observer, Plan, StepReport};
use toonsmith::train::{self as trainer, Outcome};

/// Train G, D_img and D_patch on two unpaired folders.
#[derive(Args)]
pub struct TrainArgs {
    /// TOML configuration (every key documented in README.md); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint.
    #[arg(long, conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// Defaults to start from: paper or official.
    #[arg(long, value_parser = parse_preset)]
    preset: Option<Preset>,
    /// The released code's style constants: twr, db or csc.
    #[arg(long, value_parser = parse_style)]
    style: Option<Style>,
    /// Folder of photos (recursive).
    #[arg(long)]
    photos: Option<PathBuf>,
    /// Folder of cartoon images (recursive).
    #[arg(long)]
    cartoons: Option<PathBuf>,
    /// Pretrained VGG weights (torchvision vgg19-*.pth, or safetensors).
    #[arg(long)]
    vgg: Option<PathBuf>,
    /// Side of the training crops.
    #[arg(long)]
    size: Option<u32>,
    /// Total epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Pre-training epochs.
    #[arg(long)]
    init_epochs: Option<usize>,
    /// Mini-batch size.
    #[arg(long)]
    batch: Option<usize>,
    /// Patches kept by CTSS.
    #[arg(long)]
    k: Option<usize>,
    /// Parent folder of the run folders.
    #[arg(long)]
    runs: Option<PathBuf>,
    /// Seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many steps in total.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Print the resolved configuration and the parameter counts, then exit.
    #[arg(long)]
    dry_run: bool,
}

fn parse_preset(s: &str) -> Result<Preset, String> {
    toml::Value::String(s.to_string())
        .try_into()
        .map_err(|_| format!("unknown preset {s:?} (expected paper or official)"))
}

fn parse_style(s: &str) -> Result<Style, String> {
    toml::Value::String(s.to_string())
        .try_into()
        .map_err(|_| format!("unknown style {s:?} (expected twr, db or csc)"))
}

impl TrainArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            preset: self.preset,
            style: self.style,
            photos: self.photos.clone(),
            cartoons: self.cartoons.clone(),
            size: self.size,
            vgg: self.vgg.clone(),
            epochs: self.epochs,
            init_epochs: self.init_epochs,
            batch: self.batch,
            k: self.k,
            run_dir: self.runs.clone(),
            seed: self.seed,
            max_steps: self.max_steps,
        }
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let device = device::default_device();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    let mut bar = Progress::default();
    let outcome = if let Some(run_dir) = &args.resume {
        trainer::resume::<SelectedAutodiff>(run_dir, args.max_steps, &device, &mut bar, &stop)
            .with_context(|| format!("cannot resume {}", run_dir.display()))?
    } else {
        let config = config::resolve(args.config.as_deref(), &args.overrides())?;
        if args.dry_run {
            return dry_run(&config);
        }
        trainer::train::<SelectedAutodiff>(config, &device, &mut bar, &stop)?
    };
    bar.finish(&outcome);
    Ok(())
}

fn dry_run(config: &TrainConfig) -> anyhow::Result<()> {
    print!("{}", config::to_toml(config));
    let device = device::default_device();
    let count = |n: usize| format!("{n:>10}");
    println!("\n# backend: {}", device::NAME);
    println!(
        "# G        {} parameters",
        count(
            config
                .generator
                .init::<device::Selected>(&device)
                .num_params()
        )
    );
    println!(
        "# D_img    {} parameters",
        count(config.d_img.init::<device::Selected>(&device).num_params())
    );
    println!(
        "# D_patch  {} parameters",
        count(
            config
                .d_patch
                .init::<device::Selected>(&device)
                .num_params()
        )
    );
    Ok(())
}

/// indicatif bar on a terminal, plain lines otherwise (indicatif hides the bar then).
#[derive(Default)]
struct Progress {
    bar: Option<ProgressBar>,
    means: std::collections::BTreeMap<&'static str, (f32, u32)>,
}

impl Observer for Progress {
    fn started(&mut self, plan: &Plan<'_>) {
        eprintln!(
            "run {}: {} photos, {} cartoons, {} steps per epoch, steps {}..{}",
            plan.run_dir.display(),
            plan.images.0,
            plan.images.1,
            plan.steps_per_epoch,
            plan.start_step,
            plan.end_step
        );
        let bar = ProgressBar::new(plan.end_step as u64).with_position(plan.start_step as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        self.bar = Some(bar);
    }

    fn step(&mut self, report: &StepReport<'_>) {
        for (name, value) in report.losses {
            let slot = self.means.entry(name).or_insert((0.0, 0));
            *slot = (slot.0 + value, slot.1 + 1);
        }
        let summary: Vec<String> = self
            .means
            .iter()
            .filter(|(k, _)| ["content", "d_total", "g_total"].contains(k))
            .map(|(k, (sum, n))| format!("{k} {:.4}", sum / *n as f32))
            .collect();
        let msg = format!(
            "{} epoch {} | {} | {:.2} img/s",
            report.phase.name(),
            report.epoch,
            summary.join(" "),
            report.images_per_s
        );
        if let Some(bar) = &self.bar {
            bar.set_position(report.step as u64);
            bar.set_message(msg.clone());
            if bar.is_hidden() {
                eprintln!("step {} {msg}", report.step);
            }
        }
        if report.step.is_multiple_of(50) {
            self.means.clear();
        }
    }

    fn skipped(&mut self, path: &Path, reason: &str) {
        self.println(&format!(
            "skipped unreadable file {}: {reason}",
            path.display()
        ));
    }

    fn checkpoint(&mut self, path: &Path) {
        self.println(&format!("checkpoint {}", path.display()));
    }
}

impl Progress {
    fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(line),
            _ => eprintln!("{line}"),
        }
    }

    fn finish(&self, outcome: &Outcome) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let how = if outcome.stopped {
            "stopped"
        } else {
            "finished"
        };
        eprintln!(
            "{how} after {} steps; last checkpoint {}",
            outcome.steps,
            outcome.checkpoint.display()
        );
        if outcome.skipped_files > 0 {
            eprintln!("{} unreadable files were skipped", outcome.skipped_files);
        }
        eprintln!(
            "model: {}",
            outcome.checkpoint.join("generator.safetensors").display()
        );
    }
}
