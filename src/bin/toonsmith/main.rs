//! The `toonsmith` command: parse, dispatch, print the error chain, exit code.

mod allocator;
mod cartoonize;
mod eval;
mod train;
mod video;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use burn::module::Module;
use clap::{Parser, Subcommand};
use toonsmith::device::{self, Selected};
use toonsmith::kernels::im2col::GpuConv;
use toonsmith::kernels::precision::Precision;
use toonsmith::model::{DiscriminatorConfig, GeneratorConfig, VggConfig};
use toonsmith::weights::TensorFile;

/// Photo-to-cartoon translation with the texture-saliency-adaptive GAN (Gao et al. 2022).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Number format of the convolution operands in GPU inference (cartoonize, video, eval):
    /// f32, or f16 (products accumulated in f32, the rest in f32; within 1 level of f32's
    /// cartoons). GPU builds only.
    #[arg(long, global = true, default_value = "f32", value_parser = parse_precision)]
    precision: Precision,
}

fn parse_precision(value: &str) -> Result<Precision, String> {
    Precision::parse(value).map_err(|err| err.to_string())
}

#[derive(Subcommand)]
enum Command {
    /// Build the networks of Fig. 10 on the selected backend and print their sizes.
    Info,
    /// Cartoonize photos (files, folders, globs) at their original size.
    Cartoonize(Box<cartoonize::CartoonizeArgs>),
    /// Cartoonize a video frame by frame, keeping its audio (needs ffmpeg).
    Video(Box<video::VideoArgs>),
    /// FID and KID between folders, of a model, or of a run's checkpoints.
    Eval(Box<eval::EvalArgs>),
    /// Train on a folder of photos and a folder of cartoons (unpaired).
    Train(Box<train::TrainArgs>),
    /// List the tensors and metadata of a weights file (safetensors or PyTorch .pth).
    Inspect {
        /// The file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    allocator::keep_freed_memory();
    toonsmith::device::keep_compiled_kernels();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if !matches!(cli.command, Command::Inspect { .. }) {
        device::check_available()?;
        let conv = toonsmith::kernels::gpu_settings_from_env()?;
        let training = matches!(cli.command, Command::Train(_));
        use_precision(cli.precision, conv, training)?;
    }
    match cli.command {
        Command::Info => info(),
        Command::Train(args) => train::run(*args),
        Command::Cartoonize(args) => cartoonize::run(*args),
        Command::Video(args) => video::run(*args),
        Command::Eval(args) => eval::run(*args),
        Command::Inspect { file } => inspect(&file),
    }
}

/// Makes `precision` the process's, refusing it where no convolution would use it: training
/// (always f32), the CPU build, or burn's own GPU convolution (`TOONSMITH_GPU_CONV=burn`).
fn use_precision(
    precision: Precision,
    conv: Option<GpuConv>,
    training: bool,
) -> anyhow::Result<()> {
    if precision == Precision::F32 {
        return Ok(());
    }
    if training {
        anyhow::bail!(
            "--precision {precision}: training computes in f32 (the option is for inference)"
        );
    }
    if device::is_cpu_backend::<Selected>() {
        anyhow::bail!(
            "--precision {precision}: the CPU build ({}) computes in f32; reduced precision \
             is for GPU builds (--features cuda)",
            device::NAME
        );
    }
    if let Some(GpuConv::Burn) = conv {
        anyhow::bail!(
            "--precision {precision} needs toonsmith's convolutions (gathered windows or the \
             implicit GEMM), not TOONSMITH_GPU_CONV=burn"
        );
    }
    precision.set_current();
    Ok(())
}

fn info() -> anyhow::Result<()> {
    let device = device::default_device();
    let g = GeneratorConfig::default().init::<Selected>(&device);
    let d_img = DiscriminatorConfig::image().init::<Selected>(&device);
    let d_patch = DiscriminatorConfig::patch().init::<Selected>(&device);
    let vgg = VggConfig::default().init::<Selected>(&device);
    println!(
        "toonsmith {} on {}",
        env!("CARGO_PKG_VERSION"),
        device::NAME
    );
    println!("  generator G        {:>10} parameters", g.num_params());
    println!("  D_img              {:>10} parameters", d_img.num_params());
    println!(
        "  D_patch            {:>10} parameters",
        d_patch.num_params()
    );
    println!(
        "  VGG19 to conv4_4   {:>10} parameters (frozen)",
        vgg.num_params()
    );
    if let Some(largest) = device::largest_buffer(&device) {
        let whole = toonsmith::infer::memory::auto_tile_above(g.full_resolution_channels());
        println!(
            "  largest buffer     {:>10.0} MiB (photos above {:.2} MP run in tiles)",
            largest as f64 / (1u64 << 20) as f64,
            whole as f64 / 1e6
        );
    }
    if let Some(budget) = toonsmith::infer::memory::auto_tile_budget() {
        let whole = toonsmith::infer::memory::auto_tile_above(g.full_resolution_channels());
        println!(
            "  memory budget      {:>10.1} GiB (3/4 of what is available: photos above {:.1} MP run in tiles within it)",
            budget as f64 / (1u64 << 30) as f64,
            whole as f64 / 1e6
        );
    }
    if device::is_cpu_backend::<Selected>() {
        use toonsmith::kernels::conv::{Isa, ISA_ENV};
        let kernels = match Isa::detected() {
            Some(Isa::Avx512) => "AVX-512",
            Some(Isa::Avx2) => "AVX2 and FMA",
            None => "none (burn-flex's convolutions)",
        };
        println!("  host kernels       {kernels} ({ISA_ENV})");
    } else {
        println!(
            "  dense convolutions inference {}, training {} (TOONSMITH_GPU_CONV)",
            GpuConv::current(false).name(),
            GpuConv::current(true).name()
        );
        println!(
            "  weight gradients   {} (TOONSMITH_GPU_WGRAD)",
            toonsmith::kernels::im2col_autodiff::WeightGrad::current().name()
        );
        println!(
            "  LN sums            {} (TOONSMITH_GPU_LN)",
            toonsmith::kernels::ln_ops::LnSums::current().name()
        );
        #[cfg(feature = "cube-ops")]
        if GpuConv::current(false) == GpuConv::Implicit {
            let algorithm = toonsmith::kernels::implicit_gemm::Algorithm::current();
            println!("  implicit GEMM      {algorithm} (TOONSMITH_GPU_IMPLICIT)");
        }
    }
    Ok(())
}

fn inspect(path: &std::path::Path) -> anyhow::Result<()> {
    let file =
        TensorFile::read(path).with_context(|| format!("cannot inspect {}", path.display()))?;
    let mut total = 0usize;
    for (name, data) in &file.tensors {
        total += data.num_elements();
        println!("{name:<48} {:?}", data.shape.to_vec());
    }
    for (key, value) in &file.metadata {
        println!("metadata {key} = {value}");
    }
    println!("{} tensors, {total} values", file.tensors.len());
    Ok(())
}
