//! toonsmith's speed next to the PyTorch reference users would otherwise run
//! (`../shared/reference/tsa_pytorch.py`, or `TSA_REFERENCE=path`), in the same run, as ratios:
//! the generator forward at each size (tiled where `toonsmith cartoonize` tiles: on the CPU above
//! what fits in 3/4 of the available memory, on a GPU above 2.1 MP; `TOONSMITH_BENCH_TILE_ABOVE`
//! megapixels to choose)
//! and one training iteration (D step + G step, paper config, 256x256).
//!
//!     cargo bench --bench speed                          # 256x256, 1080x1920, training batch 2
//!     TOONSMITH_BENCH_SIZES=256x256,2160x3840 TOONSMITH_BENCH_BATCH=0 cargo bench --bench speed
//!
//! The backend is the one cargo features select (`device::Selected`): flex on the CPU by default,
//! `cargo bench --features cuda --bench speed` on a GPU, where the reference runs with
//! `--device cuda` and the training batch defaults to 8 (2 on the CPU). Results are read on the
//! host (the image, the loss values), so the device is synchronised before each clock read.
//!
//! Each measurement runs in a child process (this binary re-executed) under `/usr/bin/time`, so
//! the peak resident memory of each side is measured alone. One warm-up, then 5 timed runs:
//! median, min and max are printed and written to `target/bench-speed.json`, with GFLOP/s of
//! the forward (multiply-adds of Fig. 10 counted twice). Each timed call also goes to stderr as
//! it ends; `TOONSMITH_BENCH_WARMUP_STEPS=1` adds a first forward run layer by layer, each
//! step's time printed (where a GPU's first call spends its compilation and autotuning).
//! `TOONSMITH_GPU_PRECISION=f16` runs a GPU build's forward with the program's
//! `--precision f16`. `TOONSMITH_BENCH_CALLS=1` prints, after each child's timed runs, its host
//! convolutions per run summed by kind and shape (`kernels::calls`: forward, input gradient,
//! weight gradient, making a plan), the longest first.

use std::process::Command;
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Device, Distribution, Tensor};
use image::RgbImage;
use toonsmith::device::{self, Selected};
use toonsmith::infer::{Cartoonizer, PostConfig};
use toonsmith::kernels::calls;
use toonsmith::kernels::im2col::GpuConv;
use toonsmith::kernels::precision::Precision;
use toonsmith::model::layers::OwnStats;
use toonsmith::model::{Generator, GeneratorConfig};
use toonsmith::train::config::TrainConfig;
use toonsmith::train::step::{Nets, StepContext};

/// The number format of GPU inference convolutions (`f32` or `f16`; the program's
/// `--precision`).
const PRECISION_ENV: &str = "TOONSMITH_GPU_PRECISION";

/// The allocator of the `toonsmith` program, so the numbers are the program's.
#[path = "../src/bin/toonsmith/allocator.rs"]
mod allocator;

const RUNS: usize = 5;

type Train = burn::backend::Autodiff<Selected>;

/// Whether the selected backend runs on a GPU (then the reference does too).
fn on_gpu() -> bool {
    device::NAME.starts_with("cuda")
}

/// Median, min, max of `RUNS` timed calls after one warm-up, in ms.
/// Each call's time also goes to stderr as it ends (progress, and the warm-up's cost: on a GPU
/// it holds kernel compilation and autotuning).
fn time(mut f: impl FnMut()) -> [f64; 3] {
    let mut timed = |what: &str| {
        let t = Instant::now();
        f();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        eprintln!("{what}: {ms:.1} ms");
        ms
    };
    timed("warm-up");
    drop(calls::take());
    let mut times: Vec<f64> = (1..=RUNS).map(|i| timed(&format!("run {i}"))).collect();
    print_calls(calls::take());
    times.sort_by(f64::total_cmp);
    [times[RUNS / 2], times[0], times[RUNS - 1]]
}

/// The host convolutions' calls of the timed runs, per run, on stderr (with
/// `TOONSMITH_BENCH_CALLS`; nothing on a GPU, whose convolutions are not the host's).
fn print_calls(calls: Vec<calls::Calls>) {
    if calls.is_empty() {
        return;
    }
    // Plans are made inside the forward and input-gradient calls that need them.
    let outer = calls.iter().filter(|c| !c.label.starts_with("plan"));
    let total = outer.map(|c| c.ms).sum::<f64>() / RUNS as f64;
    eprintln!(
        "host convolutions per run: {total:.1} ms (forward and input grad include their plans)"
    );
    for c in calls {
        let (count, ms) = (c.count as f64 / RUNS as f64, c.ms / RUNS as f64);
        eprintln!("{ms:10.1} ms {count:6.1} calls  {}", c.label);
    }
}

fn forward_child(h: usize, w: usize) -> [f64; 3] {
    let device = device::default_device();
    let g = GeneratorConfig::default().init::<Selected>(&device);
    if std::env::var_os("TOONSMITH_BENCH_WARMUP_STEPS").is_some() {
        warm_up_by_steps(&g, h, w, &device);
    }
    let channels = g.full_resolution_channels();
    let mut cartoonizer = Cartoonizer::new(g, device::default_device(), PostConfig::default());
    cartoonizer.tile_above = match std::env::var("TOONSMITH_BENCH_TILE_ABOVE") {
        Ok(mp) => {
            (mp.parse::<f64>()
                .expect("TOONSMITH_BENCH_TILE_ABOVE: megapixels")
                * 1e6) as usize
        }
        Err(_) => toonsmith::infer::memory::auto_tile_above(channels),
    };
    let photo = RgbImage::from_fn(w as u32, h as u32, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8])
    });
    time(|| {
        drop(cartoonizer.generate(&photo));
        sync(&device);
    })
}

/// One first forward run step by step (one LN layer each, `Generator::step`), the time of each
/// printed as it ends: on a GPU the first call holds kernel compilation and autotuning, and
/// this shows which layers' shapes it spends them on.
fn warm_up_by_steps(g: &Generator<Selected>, h: usize, w: usize, device: &Device<Selected>) {
    let x = Tensor::random([1, 3, h, w], Distribution::Uniform(-1.0, 1.0), device);
    let mut state = vec![x];
    for i in 0..g.steps() {
        let t = Instant::now();
        state = g
            .step(i, state, &mut OwnStats)
            .expect("OwnStats never ends a pass");
        sync(device);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        eprintln!("first forward, step {i}: {ms:.1} ms");
    }
}

fn train_child(batch: usize) -> [f64; 3] {
    let config = TrainConfig::default();
    let device = device::default_device();
    let vgg = config.vgg.network.init::<Train>(&device);
    let mut nets = Nets::new(&config, &device);
    let context = StepContext::new(&config, vgg);
    let batch_of = || {
        Tensor::<Train, 4>::random(
            [batch, 3, 256, 256],
            Distribution::Uniform(-1.0, 1.0),
            &device,
        )
    };
    let (photo, cartoon) = (batch_of(), batch_of());
    time(|| {
        // The reference draws CTSS strides in [48, 72]; the middle one here.
        let log = context.adversarial(&mut nets, photo.clone(), cartoon.clone(), (60, 60));
        let log = log.expect("training step");
        if let Some((name, value)) = log.iter().find(|(_, v)| !v.is_finite()) {
            panic!("training step: loss {name} is {value}");
        }
        sync(&device);
    })
}

/// Waits for the device's queued work (results are read back already; this makes it explicit
/// and, with `CUBECL_DEBUG_OPTION=profile`, prints CubeCL's per-kernel summary of the run).
fn sync(device: &Device<Selected>) {
    Selected::sync(device).expect("device synchronisation");
}

/// Multiply-adds of the paper's G at `h x w` (Fig. 10), counted from its layer table: the
/// network's nominal count, as PyTorch runs it (toonsmith's `up1` and `up2`, their upsampling
/// folded in by `kernels::subpixel`, do 4/9 of theirs), so both sides' GFLOP/s compare.
fn generator_flops(h: usize, w: usize) -> f64 {
    let g = GeneratorConfig::default();
    // (c_in, c_out, k, output scale 1/s): every dense convolution of G.
    let mut convs = vec![
        (3, 32, 7, 1),
        (32, 64, 3, 2),
        (64, 64, 3, 2),
        (64, 128, 3, 4),
        (128, 256, 3, 4),
    ];
    for _ in 0..g.res_blocks {
        convs.extend([(256, 128, 1, 4), (128, 256, 1, 4)]);
    }
    convs.extend([
        (256, 128, 3, 4),
        (128, 128, 3, 2),
        (128, 128, 3, 2),
        (128, 64, 3, 1),
        (64, 64, 3, 1),
        (64, 64, 3, 1),
        (64, 32, 7, 1),
        (32, 3, 1, 1),
    ]);
    let pixels = |s: usize| ((h / s) * (w / s)) as f64;
    let dense: f64 = convs
        .iter()
        .map(|&(ci, co, k, s)| pixels(s) * (ci * co * k * k) as f64)
        .sum();
    let depthwise = g.res_blocks as f64 * pixels(4) * 128.0 * 9.0;
    2.0 * (dense + depthwise)
}

/// Runs `cmd` under `/usr/bin/time -f %M`, returning stdout and the peak RSS in MiB.
fn timed(cmd: &mut Command) -> (String, f64) {
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("PEAK_KB %M")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .output()
        .expect("run /usr/bin/time");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kb: f64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("PEAK_KB "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        kb / 1024.0,
    )
}

/// The reference's JSON value `key` from a run with `args`, and its peak RSS.
fn reference(script: &str, threads: usize, args: &[&str], key: &str) -> (f64, f64) {
    let threads = threads.to_string();
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg("--quick");
    if on_gpu() {
        cmd.args(["--device", "cuda"]);
    } else {
        cmd.args(["--device", "cpu", "--threads", &threads]);
    }
    cmd.args(args);
    let (out, mem) = timed(&mut cmd);
    let value = serde_json::from_str::<serde_json::Value>(&out)
        .ok()
        .and_then(|v| v.get(key)?.as_f64())
        .unwrap_or(f64::NAN);
    (value, mem)
}

fn ours(args: &[String]) -> ([f64; 3], f64) {
    let me = std::env::current_exe().expect("own path");
    let (out, mem) = timed(Command::new(me).args(args));
    let v: Vec<f64> = out
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(f64::NAN);
    ([get(0), get(1), get(2)], mem)
}

fn row(what: &str, ts: [f64; 3], pt: f64, flops: f64, mem: (f64, f64)) -> serde_json::Value {
    let gflops = flops / (ts[0] / 1e3) / 1e9;
    println!(
        "{what:>18} {:>9.1} {:>9.1} {:>9.1} {gflops:>8.0} {pt:>10.1} {:>7.2} {:>8.0} {:>8.0}",
        ts[0],
        ts[1],
        ts[2],
        ts[0] / pt,
        mem.0,
        mem.1
    );
    serde_json::json!({
        "what": what,
        "toonsmith_ms": {"median": ts[0], "min": ts[1], "max": ts[2]},
        "toonsmith_gflops": gflops, "pytorch_ms_median": pt, "ratio": ts[0] / pt,
        "toonsmith_peak_mib": mem.0, "pytorch_peak_mib": mem.1,
    })
}

/// Says so on stderr if CubeCL's implicit GEMM (`TOONSMITH_GPU_CONV=implicit`, the algorithm
/// `TOONSMITH_GPU_IMPLICIT`) was refused and burn's convolution timed in its place.
fn report_refusal() {
    #[cfg(feature = "cube-ops")]
    if let Some(note) = toonsmith::kernels::implicit_gemm::refusal_note() {
        eprintln!("{note}");
    }
}

fn main() {
    device::keep_compiled_kernels();
    if std::env::var_os("TOONSMITH_BENCH_CALLS").is_some() {
        calls::enable();
    }
    let checked = device::check_available()
        .and_then(|()| toonsmith::kernels::gpu_settings_from_env())
        .and_then(|_| {
            std::env::var(PRECISION_ENV).map_or(Ok(Precision::F32), |v| Precision::parse(&v))
        });
    match checked {
        Ok(precision) => precision.set_current(),
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(1);
        }
    }
    let args: Vec<String> = std::env::args().collect();
    if !device::is_cpu_backend::<Selected>() {
        eprintln!(
            "{}: dense convolutions by {} (inference, operands {}), {} (training, weight \
             gradients by {}); LN sums by {}",
            device::NAME,
            GpuConv::current(false).name(),
            Precision::current(),
            GpuConv::current(true).name(),
            toonsmith::kernels::im2col_autodiff::WeightGrad::current().name(),
            toonsmith::kernels::ln_ops::LnSums::current().name()
        );
        #[cfg(feature = "cube-ops")]
        if GpuConv::current(false) == GpuConv::Implicit {
            let algorithm = toonsmith::kernels::implicit_gemm::Algorithm::current();
            eprintln!("implicit GEMM algorithm {algorithm}");
        }
    }
    if let Some(i) = args.iter().position(|a| a == "--child-forward") {
        allocator::keep_freed_memory();
        let t = forward_child(args[i + 1].parse().unwrap(), args[i + 2].parse().unwrap());
        report_refusal();
        println!("{} {} {}", t[0], t[1], t[2]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--child-train") {
        allocator::keep_freed_memory();
        let t = train_child(args[i + 1].parse().unwrap());
        report_refusal();
        println!("{} {} {}", t[0], t[1], t[2]);
        return;
    }
    let sizes =
        std::env::var("TOONSMITH_BENCH_SIZES").unwrap_or_else(|_| "256x256,1080x1920".into());
    let batch: usize = std::env::var("TOONSMITH_BENCH_BATCH")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(if on_gpu() { 8 } else { 2 });
    let script = std::env::var("TSA_REFERENCE").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/reference/tsa_pytorch.py"
        )
        .into()
    });
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    println!(
        "{} ({threads} CPU threads); times in ms; ratio = toonsmith median / PyTorch median; MiB = peak host RSS",
        device::NAME
    );
    println!(
        "{:>18} {:>9} {:>9} {:>9} {:>8} {:>10} {:>7} {:>8} {:>8}",
        "", "median", "min", "max", "GFLOP/s", "pytorch", "ratio", "ts MiB", "pt MiB"
    );
    let mut results = Vec::new();
    for size in sizes.split(',').filter(|s| !s.is_empty()) {
        let (h, w) = size.split_once('x').expect("sizes as HxW");
        let (h, w): (usize, usize) = (h.parse().unwrap(), w.parse().unwrap());
        let (ts, ts_mem) = ours(&["--child-forward".into(), h.to_string(), w.to_string()]);
        let key = format!("infer_ms_fp32_{h}x{w}");
        let args = ["--no-train", "--sizes", size];
        let (pt, pt_mem) = reference(&script, threads, &args, &key);
        let flops = generator_flops(h, w);
        results.push(row(
            &format!("forward {size}"),
            ts,
            pt,
            flops,
            (ts_mem, pt_mem),
        ));
    }
    if batch > 0 {
        let (ts, ts_mem) = ours(&["--child-train".into(), batch.to_string()]);
        let b = batch.to_string();
        let key = format!("train_iter_ms_fp32_b{batch}");
        let (pt, pt_mem) = reference(&script, threads, &["--batch", &b, "--sizes", "64x64"], &key);
        let what = format!("train b{batch} 256");
        results.push(row(&what, ts, pt, f64::NAN, (ts_mem, pt_mem)));
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-speed.json");
    let _ = std::fs::write(
        path,
        serde_json::to_string_pretty(&results).unwrap_or_default(),
    );
    println!("written to {path}");
}
