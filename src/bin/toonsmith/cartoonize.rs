//! `toonsmith cartoonize INPUT... [-o OUT]`: files, folders (recursive) and globs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use toonsmith::data::image_io::{is_image_path, scan_images};
use toonsmith::device::{self, Selected};
use toonsmith::infer::{self, Cartoonizer, ColourChain, OfficialColour, PostConfig};
use toonsmith::model::generator::SIZE_MULTIPLE;
use toonsmith::weights::TensorFile;

/// The model `cartoonize` uses when `--model` is not given (see README: how it was trained).
const BUNDLED_MODEL: &[u8] = include_bytes!("../../../models/default.safetensors");

/// Cartoonize photos at their original size.
#[derive(Args)]
pub struct CartoonizeArgs {
    /// Image files, folders (recursive) or glob patterns.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// Output folder (or output file for a single input file). Default: ./cartoonized
    #[arg(short, long, default_value = "cartoonized")]
    out: PathBuf,
    #[command(flatten)]
    style: StyleArgs,
}

/// The model and what is done around it: shared by `cartoonize` and `video`.
#[derive(Args)]
pub struct StyleArgs {
    /// Model: a .safetensors model file, a checkpoint folder or a run folder. Default: the
    /// bundled model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Blend of photo (0) and cartoon (1).
    #[arg(long, default_value_t = 1.0)]
    strength: f32,
    /// Colour post-processing: `paper` (natural saturation, Section IV-C), `official` (the
    /// released code's chain: brightness matched to the photo, then saturation, contrast and
    /// lightness) or `none`.
    #[arg(long, value_enum, default_value_t = Colour::Paper)]
    post: Colour,
    /// No colour post-processing (same as --post none).
    #[arg(long, conflicts_with = "post")]
    no_post: bool,
    /// Natural-saturation increase of the paper's chain (Section IV-C: 0.4).
    #[arg(long, default_value_t = 0.4)]
    vibrance: f32,
    /// Official chain: saturation slider, -1 to 1.
    #[arg(long, default_value_t = OfficialColour::default().saturation, allow_hyphen_values = true)]
    saturation: f32,
    /// Official chain: contrast slider, -1 to 1.
    #[arg(long, default_value_t = OfficialColour::default().contrast, allow_hyphen_values = true)]
    contrast: f32,
    /// Official chain: lightness slider, -1 to 1.
    #[arg(long, default_value_t = OfficialColour::default().lightness, allow_hyphen_values = true)]
    lightness: f32,
    /// Official chain: leave the cartoon's brightness as the generator made it.
    #[arg(long)]
    keep_brightness: bool,
    /// Downscale images whose longer side exceeds this many pixels.
    #[arg(long)]
    max_side: Option<u32>,
    /// Images above this many megapixels run in tiles with whole-image LN statistics (same
    /// result, bounded memory, up to 3x slower). Default: on the CPU, the largest photo whose
    /// whole forward fits in 3/4 of the available memory (at least 2.1); on a GPU, 2.1, or less
    /// where the device's largest buffer cannot hold a larger photo's widest tensor.
    #[arg(long)]
    tile_above: Option<f64>,
    /// Core side of the tiles in pixels (on a GPU, at most what the device's largest buffer
    /// holds with the halos). Default: on the CPU, 1024 where 3/4 of the available memory
    /// holds such a tile twice over, else 512; on a GPU, 512.
    #[arg(long)]
    tile: Option<usize>,
    /// GiB that tiled inference may use to keep intermediate results between its passes: more
    /// is faster (a 3840x2160 photo on 2 cores: 41 s in 512-pixel tiles with 1 GiB, 22.5 s in
    /// 1024-pixel tiles with 2.29 GiB, 17.6 s with 8), 0 uses the least memory. Default: on the
    /// CPU, what the tiles leave of 3/4 of the available memory; on a GPU, 1.
    #[arg(long)]
    tile_cache: Option<f64>,
}

impl StyleArgs {
    /// The cartoonizer these settings describe, its model loaded on the selected backend.
    pub fn cartoonizer(&self) -> anyhow::Result<Cartoonizer<Selected>> {
        if !(0.0..=1.0).contains(&self.strength) {
            bail!("invalid --strength {} (expected 0 to 1)", self.strength);
        }
        if let Some(gib) = self.tile_cache {
            non_negative("--tile-cache", gib, "GiB")?;
        }
        if let Some(megapixels) = self.tile_above {
            non_negative("--tile-above", megapixels, "megapixels")?;
        }
        let post = post_config(self)?;
        let device = device::default_device();
        let file = match &self.model {
            Some(path) => {
                let file = infer::model_file(path)?;
                TensorFile::read(&file)?
            }
            None => TensorFile::from_safetensors_bytes("<bundled model>", BUNDLED_MODEL)?,
        };
        let g = infer::load_model::<Selected>(&file, &device).context("cannot load the model")?;
        let (channels, halo) = (g.full_resolution_channels(), g.receptive_radius());
        let mut cartoonizer = Cartoonizer::new(g, device, post);
        cartoonizer.max_side = self.max_side;
        cartoonizer.tile_above = match self.tile_above {
            Some(megapixels) => (megapixels * 1e6) as usize,
            None => infer::memory::auto_tile_above(channels),
        };
        cartoonizer.tile_budget = infer::memory::auto_tile_budget();
        let core = match (self.tile, cartoonizer.tile_budget) {
            (Some(core), _) => Some(core.max(SIZE_MULTIPLE)),
            (None, Some(_)) => None,
            (None, None) => Some(infer::memory::DEFAULT_TILE_CORE),
        };
        cartoonizer.tile_core =
            core.map(|core| infer::memory::fit_tile_core(core, halo, channels, SIZE_MULTIPLE));
        cartoonizer.tile_cache = self
            .tile_cache
            .map(|gib| (gib * (1u64 << 30) as f64) as usize);
        Ok(cartoonizer)
    }
}

/// Refuses a NaN or negative `value` of `flag` (in `unit`) by name.
fn non_negative(flag: &str, value: f64, unit: &str) -> anyhow::Result<()> {
    if value.is_nan() || value < 0.0 {
        bail!("invalid {flag} {value} (expected {unit} >= 0)");
    }
    Ok(())
}

pub fn run(args: CartoonizeArgs) -> anyhow::Result<()> {
    let cartoonizer = args.style.cartoonizer()?;
    let jobs = jobs(&args.inputs, &args.out)?;
    let bar = ProgressBar::new(jobs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("cartoonize [{bar:30}] {pos}/{len} ETA {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut failed = 0;
    for (input, output) in &jobs {
        bar.set_message(input.display().to_string());
        if let Err(err) = convert(&cartoonizer, input, output) {
            if is_device_fault(&err) {
                bar.abandon();
                return Err(err);
            }
            failed += 1;
            bar.suspend(|| eprintln!("error: {err:#}"));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    eprintln!(
        "{} of {} images cartoonized into {}",
        jobs.len() - failed,
        jobs.len(),
        args.out.display()
    );
    if failed > 0 {
        bail!("{failed} images failed");
    }
    Ok(())
}

/// `--post` values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Colour {
    Paper,
    Official,
    None,
}

fn post_config(args: &StyleArgs) -> anyhow::Result<PostConfig> {
    let official = OfficialColour {
        match_brightness: !args.keep_brightness,
        saturation: args.saturation,
        contrast: args.contrast,
        lightness: args.lightness,
    };
    official
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid official colour setting: {e}"))?;
    let colour = match (args.no_post, args.post) {
        (true, _) | (_, Colour::None) => ColourChain::None,
        (_, Colour::Paper) => ColourChain::Paper,
        (_, Colour::Official) => ColourChain::Official,
    };
    Ok(PostConfig {
        colour,
        vibrance: args.vibrance,
        official,
        strength: args.strength,
    })
}

fn convert(cartoonizer: &Cartoonizer<Selected>, input: &Path, output: &Path) -> anyhow::Result<()> {
    let image = toonsmith::data::load_dynamic(input)?;
    let cartoon = cartoonizer
        .cartoonize(&image)
        .with_context(|| input.display().to_string())?;
    let output = keep_alpha_format(output, cartoon.color().has_alpha());
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    cartoon
        .save(&output)
        .with_context(|| format!("{}: cannot write {}", input.display(), output.display()))?;
    Ok(())
}

/// Whether `err` is a device fault: every later image would be garbage too, so the folder stops.
fn is_device_fault(err: &anyhow::Error) -> bool {
    err.downcast_ref::<toonsmith::error::Error>()
        .is_some_and(toonsmith::device::faults::is_fault)
}

/// JPEG cannot hold alpha: such images are written as PNG.
fn keep_alpha_format(output: &Path, alpha: bool) -> PathBuf {
    let ext = output
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if alpha && (ext == "jpg" || ext == "jpeg") {
        output.with_extension("png")
    } else {
        output.to_path_buf()
    }
}

/// (input, output) pairs: folder contents keep their path relative to the folder, under `out`.
fn jobs(inputs: &[String], out: &Path) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    let mut jobs = Vec::new();
    let single_file_out =
        inputs.len() == 1 && is_image_path(out) && Path::new(&inputs[0]).is_file();
    for input in inputs {
        let path = PathBuf::from(input);
        if path.is_dir() {
            for file in scan_images(&path)? {
                let rel = file.strip_prefix(&path).unwrap_or(&file).to_path_buf();
                jobs.push((file, out.join(rel)));
            }
        } else if path.exists() {
            let target = if single_file_out {
                out.to_path_buf()
            } else {
                out.join(path.file_name().unwrap_or_default())
            };
            jobs.push((path, target));
        } else {
            let matches: Vec<PathBuf> = glob::glob(input)
                .with_context(|| format!("{input}: not a file, folder or valid glob"))?
                .filter_map(|m| m.ok())
                .filter(|p| p.is_file())
                .collect();
            if matches.is_empty() {
                bail!("{input}: no such file or folder, and no file matches it as a pattern");
            }
            for file in matches {
                let name = file.file_name().unwrap_or_default().to_owned();
                jobs.push((file, out.join(name)));
            }
        }
    }
    if jobs.is_empty() {
        bail!("no images found in {}", inputs.join(", "));
    }
    Ok(jobs)
}
