//! `toonsmith eval`: FID and KID between folders, of a model, or of every checkpoint of a run.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use toonsmith::device::{self, Selected};
use toonsmith::infer::{self, Cartoonizer, PostConfig};
use toonsmith::metrics::features::{
    cache_key, files_features, folder_images, image_features, FeatureSet,
};
use toonsmith::metrics::{frechet_distance, kid, npz, Gaussian};
use toonsmith::model::inception::{FidInception, FID_FEATURES};
use toonsmith::weights::{self, TensorFile};

/// FID and KID (pytorch-fid's Inception).
#[derive(Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    what: EvalCommand,
    /// pytorch-fid's Inception weights, pt_inception-2015-12-05-6726825d.pth (or
    /// TOONSMITH_INCEPTION).
    #[arg(long, global = true, env = "TOONSMITH_INCEPTION")]
    inception: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Between two folders, or a folder and pytorch-fid statistics (.npz).
    Fid {
        /// Folder or .npz.
        a: PathBuf,
        /// Folder or .npz.
        b: PathBuf,
        /// Save the statistics of A as pytorch-fid's .npz.
        #[arg(long)]
        save_stats: Option<PathBuf>,
    },
    /// Cartoonize a folder of photos with a model, then compare with a folder of cartoons.
    Model {
        /// Model file, checkpoint folder or run folder.
        #[arg(long)]
        model: PathBuf,
        /// Photos to cartoonize.
        #[arg(long)]
        photos: PathBuf,
        /// Real cartoons.
        #[arg(long)]
        cartoons: PathBuf,
    },
    /// Every checkpoint of a run, as a table; the best is named.
    Run {
        /// The run folder.
        run: PathBuf,
        /// Photos to cartoonize.
        #[arg(long)]
        photos: PathBuf,
        /// Real cartoons.
        #[arg(long)]
        cartoons: PathBuf,
    },
}

const INCEPTION_HELP: &str = "FID needs pytorch-fid's Inception weights: pass --inception \
pt_inception-2015-12-05-6726825d.pth (from pytorch-fid's release page, or \
~/.cache/torch/hub/checkpoints/ after pytorch-fid ran once)";

struct Evaluator {
    net: FidInception<Selected>,
    weights: PathBuf,
    device: burn::tensor::Device<Selected>,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let path = args.inception.clone().context(INCEPTION_HELP)?;
    let device = device::default_device();
    let mut net = FidInception::<Selected>::new(&device);
    weights::load(&mut net, &path).context("cannot load the Inception weights")?;
    let ctx = Evaluator {
        net,
        weights: path,
        device,
    };
    let result = match &args.what {
        EvalCommand::Fid { a, b, save_stats } => fid_command(&ctx, a, b, save_stats.as_deref())?,
        EvalCommand::Model {
            model,
            photos,
            cartoons,
        } => {
            let real = ctx.folder(cartoons)?;
            let score = ctx.model_score(model, photos, &real)?;
            print_score("model", &score);
            score
        }
        EvalCommand::Run {
            run,
            photos,
            cartoons,
        } => run_command(&ctx, run, photos, cartoons)?,
    };
    if let Some(json) = &args.json {
        std::fs::write(json, serde_json::to_string_pretty(&result)?)
            .with_context(|| format!("cannot write {}", json.display()))?;
    }
    Ok(())
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!("{what} [{{bar:30}}] {{pos}}/{{len}} ETA {{eta}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

impl Evaluator {
    /// Features of a folder, from the cache when the folder and weights are unchanged.
    fn folder(&self, folder: &Path) -> anyhow::Result<FeatureSet> {
        let paths = folder_images(folder)?;
        let key = cache_key(&paths, &self.weights)?;
        let cache = cache_dir().map(|d| d.join(format!("fid-features-{key}.safetensors")));
        if let Some(file) = cache.as_ref().filter(|c| c.is_file()) {
            if let Ok(read) = TensorFile::read(file) {
                if let Some(data) = read.tensors.get("features") {
                    let features = data.clone().into_vec::<f32>().unwrap_or_default();
                    return Ok(FeatureSet {
                        features,
                        skipped: Vec::new(),
                    });
                }
            }
        }
        let progress = bar(paths.len(), &format!("features {}", folder.display()));
        let set = files_features(&self.net, &paths, &self.device, |_| progress.inc(1));
        progress.finish_and_clear();
        for (path, reason) in &set.skipped {
            eprintln!("skipped {}: {reason}", path.display());
        }
        if let Some(file) = cache {
            let _ = save_features(&file, &set.features);
        }
        Ok(set)
    }

    fn model_score(
        &self,
        model: &Path,
        photos: &Path,
        real: &FeatureSet,
    ) -> anyhow::Result<serde_json::Value> {
        let file = TensorFile::read(&infer::model_file(model)?)?;
        let g = infer::load_model::<Selected>(&file, &self.device)?;
        #[allow(clippy::clone_on_copy)] // the device is Copy on the CPU backend only
        let cartoonizer = Cartoonizer::new(g, self.device.clone(), PostConfig::default());
        let paths = folder_images(photos)?;
        let progress = bar(
            paths.len(),
            &format!("cartoonize+features {}", model.display()),
        );
        let mut fake = FeatureSet::default();
        for path in &paths {
            match toonsmith::data::load_dynamic(path).and_then(|img| cartoonizer.cartoonize(&img)) {
                Ok(cartoon) => fake.features.extend(image_features(
                    &self.net,
                    &cartoon.to_rgb8(),
                    &self.device,
                )),
                Err(err) => fake.skipped.push((path.clone(), err.to_string())),
            }
            progress.inc(1);
        }
        progress.finish_and_clear();
        Ok(score(
            &fake.gaussian(),
            &real.gaussian(),
            Some((&fake, real)),
        ))
    }
}

fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let dir = base.join("toonsmith");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

fn save_features(path: &Path, features: &[f32]) -> anyhow::Result<()> {
    let bytes: Vec<u8> = features.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![features.len() / FID_FEATURES, FID_FEATURES],
        &bytes,
    )?;
    let data = safetensors::serialize([("features", view)], None)?;
    weights::write_atomic(path, &data)?;
    Ok(())
}

/// FID (and KID when both feature sets are at hand), with a warning for small sets.
fn score(
    a: &Gaussian,
    b: &Gaussian,
    features: Option<(&FeatureSet, &FeatureSet)>,
) -> serde_json::Value {
    for (name, g) in [("A", a), ("B", b)] {
        if g.count > 0 && g.count <= FID_FEATURES {
            eprintln!(
                "warning: {name} has {} images, fewer than the {} needed for a full-rank covariance: FID is biased upwards; prefer KID",
                g.count,
                FID_FEATURES + 1
            );
        }
    }
    let fid = frechet_distance(a, b);
    let kid = features.map(|(fa, fb)| {
        let k = kid(&fa.features, &fb.features, FID_FEATURES, 100, 1000, 0);
        serde_json::json!({ "mean": k.mean, "std": k.std })
    });
    serde_json::json!({ "fid": fid, "kid": kid, "count_a": a.count, "count_b": b.count })
}

fn print_score(label: &str, s: &serde_json::Value) {
    let kid = s["kid"]["mean"].as_f64().map(|m| {
        format!(
            "  KID {:.5} ± {:.5}",
            m,
            s["kid"]["std"].as_f64().unwrap_or(0.0)
        )
    });
    println!(
        "{label}: FID {:.3}{}  ({} vs {} images)",
        s["fid"].as_f64().unwrap_or(f64::NAN),
        kid.unwrap_or_default(),
        s["count_a"],
        s["count_b"]
    );
}

fn side(ctx: &Evaluator, path: &Path) -> anyhow::Result<(Gaussian, Option<FeatureSet>)> {
    if path.extension().is_some_and(|e| e == "npz") {
        return Ok((npz::load(path)?, None));
    }
    if !path.is_dir() {
        bail!(
            "{}: neither a folder of images nor a .npz statistics file",
            path.display()
        );
    }
    let set = ctx.folder(path)?;
    Ok((set.gaussian(), Some(set)))
}

fn fid_command(
    ctx: &Evaluator,
    a: &Path,
    b: &Path,
    save_stats: Option<&Path>,
) -> anyhow::Result<serde_json::Value> {
    let (ga, fa) = side(ctx, a)?;
    let (gb, fb) = side(ctx, b)?;
    if let Some(path) = save_stats {
        npz::save(path, &ga)?;
    }
    let features = fa.as_ref().zip(fb.as_ref());
    let s = score(&ga, &gb, features);
    print_score("FID", &s);
    Ok(s)
}

fn run_command(
    ctx: &Evaluator,
    run: &Path,
    photos: &Path,
    cartoons: &Path,
) -> anyhow::Result<serde_json::Value> {
    let mut checkpoints: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .with_context(|| format!("{}: not a run folder", run.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("generator.safetensors").is_file())
        .collect();
    checkpoints.sort();
    if checkpoints.is_empty() {
        bail!("{}: no checkpoints", run.display());
    }
    let real = ctx.folder(cartoons)?;
    let mut rows = Vec::new();
    for checkpoint in &checkpoints {
        let s = ctx.model_score(checkpoint, photos, &real)?;
        print_score(
            &checkpoint.file_name().unwrap_or_default().to_string_lossy(),
            &s,
        );
        rows.push(serde_json::json!({ "checkpoint": checkpoint, "score": s }));
    }
    let best = rows
        .iter()
        .min_by(|x, y| {
            x["score"]["fid"]
                .as_f64()
                .unwrap_or(f64::MAX)
                .total_cmp(&y["score"]["fid"].as_f64().unwrap_or(f64::MAX))
        })
        .map(|r| r["checkpoint"].clone());
    println!(
        "best (lowest FID): {}",
        best.as_ref().and_then(|b| b.as_str()).unwrap_or("-")
    );
    Ok(serde_json::json!({ "checkpoints": rows, "best": best }))
}
