//! On the selected backend (a GPU build): toonsmith's gathered-window convolution
//! (`toonsmith::kernels::im2col`; in training with its own backward, `im2col_autodiff`, or
//! differentiated through its ops), CubeCL's implicit GEMM called directly
//! (`kernels::implicit_gemm`, forward) and toonsmith's depthwise convolution
//! (`kernels::depthwise`) against burn's `conv2d`, layer shape by layer shape of G, and the FID
//! Inception's other kernel shapes (forward). With `TOONSMITH_GPU_CONV=implicit` the training
//! node's forward and input gradient are the implicit GEMM too (the "own" rows).
//! First the same results, forward and gradients, on small inputs (exits 1 if not; for the
//! implicit GEMM after the tables), and the whole G against G on the CPU with the same weights;
//! then the time of each layer, forward alone and forward + backward, at a chosen size and
//! batch, and the implicit GEMM's candidate algorithms side by side.
//!
//!     cargo run --release --features cuda-untuned --example gpu_conv [H W [batch]] [--forward-only]
//!
//! With the `cuda-untuned` build burn's side is its direct kernel; with `cuda` its autotuned
//! choice (a first call of each shape then tunes: minutes).
use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Distribution, ElementConversion, Tensor};
use toonsmith::device::{self, CpuBackend, Selected, CPU};
use toonsmith::kernels::{depthwise, im2col, im2col_autodiff};
use toonsmith::model::GeneratorConfig;

type Train = Autodiff<Selected>;

/// A convolution of G: channels, kernel size, output scale 1/s, and whether it is depthwise
/// (one filter per channel: toonsmith's `kernels::depthwise` in training, burn's grouped
/// convolution otherwise).
#[derive(Clone, Copy)]
struct Layer {
    c_in: usize,
    c_out: usize,
    k: usize,
    scale: usize,
    depthwise: bool,
}

const fn dense(c_in: usize, c_out: usize, k: usize, scale: usize) -> Layer {
    Layer {
        c_in,
        c_out,
        k,
        scale,
        depthwise: false,
    }
}

/// Every convolution shape of G (Fig. 10), in order; `up1` and `up2` as they run, their
/// upsampling folded in (four sub-pixel phases of 2x2 taps, padding 1, on the small image:
/// `kernels::subpixel`).
const LAYERS: [Layer; 14] = [
    dense(3, 32, 7, 1),
    dense(32, 64, 3, 2),
    dense(64, 64, 3, 2),
    dense(64, 128, 3, 4),
    dense(128, 256, 3, 4),
    dense(256, 128, 1, 4),
    Layer {
        c_in: 128,
        c_out: 128,
        k: 3,
        scale: 4,
        depthwise: true,
    },
    dense(128, 256, 1, 4),
    dense(256, 128, 3, 4),
    dense(128, 512, 2, 4),
    dense(128, 128, 3, 2),
    dense(128, 256, 2, 2),
    dense(64, 32, 7, 1),
    dense(32, 3, 1, 1),
];

impl Layer {
    fn weight_shape(&self) -> [usize; 4] {
        let per_group = if self.depthwise { 1 } else { self.c_in };
        [self.c_out, per_group, self.k, self.k]
    }

    fn name(&self) -> String {
        let kind = if self.depthwise { " dw" } else { "" };
        format!(
            "{:>3}->{:<3} {}x{}{kind}",
            self.c_in, self.c_out, self.k, self.k
        )
    }
}

fn main() {
    if let Err(err) = device::check_available() {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (h, w, batch) = match args[..] {
        [h, w, b, ..] => (h, w, b),
        [h, w] => (h, w, 1),
        _ => (1080, 1920, 1),
    };
    let training = !std::env::args().any(|a| a == "--forward-only");
    println!(
        "{}; max |x - reference| relative to max |reference|, the reference burn's convolution \
         on the CPU (toonsmith's way | burn's on this backend):",
        device::NAME
    );
    let mut worst = 0.0f32;
    // Checked after the tables, so a wrong implicit GEMM still shows which algorithms are.
    let mut implicit_worst = 0.0f32;
    for layer in LAYERS {
        for (stride, way) in [(1, Way::Own), (2, Way::Own), (1, Way::Ops)] {
            let [ours, burns] = compare(layer, stride, way);
            let show = |[o, dx, dw, db]: [f32; 4]| {
                format!("out {o:.1e} dx {dx:.1e} dW {dw:.1e} db {db:.1e}")
            };
            let way = if way == Way::Own { "own" } else { "ops" };
            let name = layer.name();
            println!(
                "  {name} s{stride} {way}: {} | burn: {}",
                show(ours),
                show(burns)
            );
            worst = ours.into_iter().fold(worst, f32::max);
        }
        for stride in [1, 2].into_iter().filter(|_| !layer.depthwise) {
            let before = refused_so_far();
            let diff = compare_implicit(layer, stride);
            let ran = if refused_so_far() > before {
                " (refused: burn's ran)"
            } else {
                ""
            };
            println!(
                "  {} s{stride} implicit GEMM{ran}: out {diff:.1e}",
                layer.name()
            );
            implicit_worst = implicit_worst.max(diff);
        }
    }
    #[cfg(feature = "cube-ops")]
    if let Some(note) = toonsmith::kernels::implicit_gemm::refusal_note() {
        println!("  ({note})");
    }
    for (kernel, padding, stride) in INCEPTION {
        let diff = compare_rect(kernel, padding, stride);
        println!(
            "  FID Inception {}x{} s{stride}: out {diff:.1e}",
            kernel[0], kernel[1]
        );
        worst = worst.max(diff);
    }
    // TF32 tensor cores keep 10 mantissa bits: a few 1e-4 relative is their rounding.
    if worst > 1e-2 {
        eprintln!("toonsmith's convolution and the CPU reference differ by {worst:.1e} (relative)");
        std::process::exit(1);
    }
    match generator_vs_cpu() {
        Ok(diff) => println!(
            "whole G, 64x96: max |{} - CPU| = {diff:.1e} (within 1/255: {})",
            device::NAME,
            diff <= 1.0 / 255.0
        ),
        Err(err) => println!("whole G against the CPU: not compared ({err})"),
    }
    println!("{h}x{w}, batch {batch}: ms per call (median of 5 after one warm-up)");
    println!(
        "{:>22} {:>9} {:>9} {:>9} {:>13} {:>13} {:>13}",
        "layer", "gemm fwd", "impl fwd", "burn fwd", "own fwd+bwd", "ops fwd+bwd", "burn fwd+bwd"
    );
    for layer in LAYERS {
        let scale = layer.scale;
        let shape = [batch, layer.c_in, h / scale, w / scale];
        let forward = |way| time_forward(shape, layer, way);
        let both = |way| {
            if training {
                time_training(shape, layer, way)
            } else {
                f64::NAN
            }
        };
        let implicit = if layer.depthwise {
            f64::NAN
        } else {
            forward(Way::Implicit)
        };
        println!(
            "{:>22} {:>9.2} {:>9.2} {:>9.2} {:>13.2} {:>13.2} {:>13.2}",
            format!("{} @{}x{}", layer.name(), h / scale, w / scale),
            forward(Way::Ops),
            implicit,
            forward(Way::Burn),
            both(Way::Own),
            both(Way::Ops),
            both(Way::Burn)
        );
    }
    #[cfg(feature = "cube-ops")]
    implicit_table([batch, h, w]);
    if implicit_worst > 1e-2 {
        eprintln!(
            "the implicit GEMM and the CPU reference differ by {implicit_worst:.1e} (relative)"
        );
        std::process::exit(1);
    }
}

/// Relative max differences of output and input, weight and bias gradients from burn's
/// convolution on the CPU (the reference), on a batch of 2 small images: toonsmith's
/// convolution (`way`) on this backend, then burn's.
fn compare(layer: Layer, stride: usize, way: Way) -> [[f32; 4]; 2] {
    let k = layer.k;
    let x = Tensor::<CpuBackend, 4>::random([2, layer.c_in, 13, 18], Distribution::Default, &CPU);
    let weight = Tensor::<CpuBackend, 4>::random(layer.weight_shape(), Distribution::Default, &CPU);
    let bias = Tensor::<CpuBackend, 1>::random([layer.c_out], Distribution::Default, &CPU);
    let [_, _, out_h, out_w] =
        convolve(x.clone(), weight.clone(), None, k, stride, Way::Burn).dims();
    // One upstream gradient for every way, independent of their outputs.
    let upstream = Tensor::<CpuBackend, 4>::random(
        [2, layer.c_out, out_h, out_w],
        Distribution::Uniform(-1.0, 1.0),
        &CPU,
    );
    let reference = {
        type Cpu = Autodiff<CpuBackend>;
        let xa = Tensor::<Cpu, 4>::from_inner(x.clone()).require_grad();
        let wa = Tensor::<Cpu, 4>::from_inner(weight.clone()).require_grad();
        let ba = Tensor::<Cpu, 1>::from_inner(bias.clone()).require_grad();
        let out = convolve(
            xa.clone(),
            wa.clone(),
            Some(ba.clone()),
            k,
            stride,
            Way::Burn,
        );
        let grads = (out.clone() * Tensor::from_inner(upstream.clone()))
            .sum()
            .backward();
        [
            out.inner().flatten::<1>(0, 3),
            xa.grad(&grads).expect("dx").flatten::<1>(0, 3),
            wa.grad(&grads).expect("dW").flatten::<1>(0, 3),
            ba.grad(&grads).expect("db"),
        ]
    };
    let device = device::default_device();
    let here = |t: &Tensor<CpuBackend, 4>| Tensor::<Selected, 4>::from_data(t.to_data(), &device);
    let run = |way: Way| {
        let xa = Tensor::<Train, 4>::from_inner(here(&x)).require_grad();
        let wa = Tensor::<Train, 4>::from_inner(here(&weight)).require_grad();
        let ba = Tensor::<Train, 1>::from_data(bias.to_data(), &device).require_grad();
        let out = convolve_train(xa.clone(), wa.clone(), Some(ba.clone()), k, stride, way);
        let up = Tensor::<Train, 4>::from_inner(here(&upstream));
        let grads = (out.clone() * up).sum().backward();
        let cpu = |t: Tensor<Selected, 1>| Tensor::<CpuBackend, 1>::from_data(t.into_data(), &CPU);
        [
            cpu(out.inner().flatten::<1>(0, 3)),
            cpu(xa.grad(&grads).expect("dx").flatten::<1>(0, 3)),
            cpu(wa.grad(&grads).expect("dW").flatten::<1>(0, 3)),
            cpu(ba.grad(&grads).expect("db")),
        ]
    };
    [run(way), run(Way::Burn)].map(|got| {
        let mut diffs = [0.0f32; 4];
        for (d, (a, b)) in diffs.iter_mut().zip(got.into_iter().zip(reference.clone())) {
            *d = relative(a, b);
        }
        diffs
    })
}

/// `max |got - reference|` relative to `max |reference|`.
fn relative<B: Backend, const D: usize>(got: Tensor<B, D>, reference: Tensor<B, D>) -> f32 {
    let scale: f32 = reference.clone().abs().max().into_scalar().elem();
    let diff: f32 = (got - reference).abs().max().into_scalar().elem();
    diff / scale.max(1e-12)
}

/// Relative max difference of CubeCL's implicit GEMM on this backend (forward, bias included)
/// from burn's convolution on the CPU, 2 images of 13x18; NaN in a build without it.
fn compare_implicit(layer: Layer, stride: usize) -> f32 {
    let x = Tensor::<CpuBackend, 4>::random([2, layer.c_in, 13, 18], Distribution::Default, &CPU);
    let weight = Tensor::<CpuBackend, 4>::random(layer.weight_shape(), Distribution::Default, &CPU);
    let bias = Tensor::<CpuBackend, 1>::random([layer.c_out], Distribution::Default, &CPU);
    let k = layer.k;
    let reference = convolve(
        x.clone(),
        weight.clone(),
        Some(bias.clone()),
        k,
        stride,
        Way::Burn,
    );
    let device = device::default_device();
    let here = |t: &Tensor<CpuBackend, 4>| Tensor::<Selected, 4>::from_data(t.to_data(), &device);
    let bias = Tensor::<Selected, 1>::from_data(bias.to_data(), &device);
    match implicit(here(&x), here(&weight), Some(bias), k, stride) {
        Some(got) => relative(Tensor::from_data(got.into_data(), &CPU), reference),
        None => f32::NAN,
    }
}

/// CubeCL's implicit GEMM at padding `k / 2` (`kernels::implicit_gemm`); `None` in a build
/// without it.
fn implicit(
    x: Tensor<Selected, 4>,
    weight: Tensor<Selected, 4>,
    bias: Option<Tensor<Selected, 1>>,
    k: usize,
    stride: usize,
) -> Option<Tensor<Selected, 4>> {
    #[cfg(feature = "cube-ops")]
    {
        use toonsmith::kernels::implicit_gemm;
        Some(implicit_gemm::conv2d(x, weight, bias, [k / 2; 2], stride))
    }
    #[cfg(not(feature = "cube-ops"))]
    {
        let _ = (x, weight, bias, k, stride);
        None
    }
}

/// Convolutions the implicit GEMM refused so far in this process (0 in a build without it).
fn refused_so_far() -> usize {
    #[cfg(feature = "cube-ops")]
    return toonsmith::kernels::implicit_gemm::refused_calls();
    #[cfg(not(feature = "cube-ops"))]
    0
}

/// The implicit-GEMM algorithms the per-algorithm table times: burn-cubecl's default and
/// those CubeCL's autotuner ranked first for forward convolutions on an H200 (session 15).
#[cfg(feature = "cube-ops")]
const CANDIDATES: [&str; 5] = [
    "simple_sync_cyclic:cmma",
    "simple_sync_strided:mma",
    "simple_async_strided:mma",
    "simple_async_tma:mma",
    "specialized_tma:mma",
];

/// Each dense layer of G at `[batch, C, h / s, w / s]` by each of [`CANDIDATES`]: forward ms
/// (median of 5 after one warm-up) and the output's largest difference from the gathered-window
/// convolution's on this backend (relative), or "refused" where cubek refused the shape.
#[cfg(feature = "cube-ops")]
fn implicit_table([batch, h, w]: [usize; 3]) {
    use toonsmith::kernels::implicit_gemm::{conv2d_by, refusal, refused_calls, Algorithm};
    use toonsmith::kernels::precision::Precision;
    let candidates: Vec<Algorithm> = CANDIDATES
        .iter()
        .map(|name| Algorithm::parse(name).expect("a known algorithm"))
        .collect();
    println!("{h}x{w}, batch {batch}: implicit GEMM by algorithm, forward ms (difference)");
    let names: Vec<String> = candidates.iter().map(|a| format!("{a:>24}")).collect();
    println!("{:>22} {}", "layer", names.join(" "));
    let device = device::default_device();
    for layer in LAYERS.iter().filter(|layer| !layer.depthwise) {
        let shape = [batch, layer.c_in, h / layer.scale, w / layer.scale];
        let x = Tensor::<Selected, 4>::random(shape, Distribution::Default, &device);
        let weight =
            Tensor::<Selected, 4>::random(layer.weight_shape(), Distribution::Default, &device);
        let pad = [layer.k / 2; 2];
        let reference = im2col::conv2d(x.clone(), weight.clone(), None, layer.k / 2, 1);
        let cells: Vec<String> = candidates
            .iter()
            .map(|&algorithm| {
                let before = refused_calls();
                let got = conv2d_by(
                    x.clone(),
                    weight.clone(),
                    None,
                    (pad, 1),
                    (algorithm, Precision::F32),
                );
                let diff = relative(got, reference.clone());
                if refused_calls() > before {
                    return format!("{:>24}", "refused");
                }
                let ms = median_ms(|| {
                    let out = conv2d_by(
                        x.clone(),
                        weight.clone(),
                        None,
                        (pad, 1),
                        (algorithm, Precision::F32),
                    );
                    Selected::sync(&device).expect("sync");
                    drop(out);
                });
                format!("{:>24}", format!("{ms:.2} ({diff:.0e})"))
            })
            .collect();
        let name = format!("{} @{}x{}", layer.name(), h / layer.scale, w / layer.scale);
        println!("{name:>22} {}", cells.join(" "));
    }
    for algorithm in candidates {
        if let Some(why) = refusal(algorithm) {
            println!("  {algorithm} refused (first time): {why}");
        }
    }
}

/// (kernel, padding, stride) of the FID Inception's kernel shapes other than G's:
/// `im2col::conv2d_rect` (inference only).
const INCEPTION: [([usize; 2], [usize; 2], usize); 5] = [
    ([1, 7], [0, 3], 1),
    ([7, 1], [3, 0], 1),
    ([1, 3], [0, 1], 1),
    ([3, 1], [1, 0], 1),
    ([3, 3], [0, 0], 2),
];

/// Relative max difference of `im2col::conv2d_rect` on this backend from burn's convolution
/// on the CPU, 2 images of 17x17 (Inception's 7x7-branch size), 32 -> 48 channels.
fn compare_rect(kernel: [usize; 2], padding: [usize; 2], stride: usize) -> f32 {
    let x = Tensor::<CpuBackend, 4>::random([2, 32, 17, 17], Distribution::Default, &CPU);
    let weight = Tensor::<CpuBackend, 4>::random(
        [48, 32, kernel[0], kernel[1]],
        Distribution::Default,
        &CPU,
    );
    let options = ConvOptions::new([stride; 2], padding, [1, 1], 1);
    let reference = conv2d(x.clone(), weight.clone(), None, options);
    let device = device::default_device();
    let here = |t: &Tensor<CpuBackend, 4>| Tensor::<Selected, 4>::from_data(t.to_data(), &device);
    let got = im2col::conv2d_rect(here(&x), here(&weight), None, padding, stride);
    relative(Tensor::from_data(got.into_data(), &CPU), reference)
}

/// G on the selected backend against G on the CPU with the same weights (saved and loaded
/// through a safetensors file), one 64x96 input: the largest difference of their outputs.
fn generator_vs_cpu() -> toonsmith::error::Result<f32> {
    let device = device::default_device();
    let g_cpu = GeneratorConfig::default().init::<CpuBackend>(&CPU);
    let path = std::env::temp_dir().join("toonsmith-gpu-conv-g.safetensors");
    toonsmith::weights::save(&g_cpu, &path, &Default::default())?;
    let mut g = GeneratorConfig::default().init::<Selected>(&device);
    let loaded = toonsmith::weights::load(&mut g, &path);
    let _ = std::fs::remove_file(&path);
    loaded?;
    let x_cpu =
        Tensor::<CpuBackend, 4>::random([1, 3, 64, 96], Distribution::Uniform(-1.0, 1.0), &CPU);
    let x = Tensor::<Selected, 4>::from_data(x_cpu.to_data(), &device);
    let y = Tensor::<CpuBackend, 4>::from_data(g.forward(x).into_data(), &CPU);
    let y_cpu = g_cpu.forward(x_cpu);
    Ok((y - y_cpu).abs().max().into_scalar().elem())
}

/// Which convolution: gathered windows (through burn's ops), the same as one node with its
/// own backward (training only), CubeCL's implicit GEMM (forward timing only), or burn's.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    Ops,
    Own,
    Implicit,
    Burn,
}

/// A convolution with padding `k / 2`; depthwise where the weight has one input channel per
/// group and the input more than one.
fn convolve<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    k: usize,
    stride: usize,
    way: Way,
) -> Tensor<B, 4> {
    let groups = if depthwise(&x, &weight) {
        x.dims()[1]
    } else {
        1
    };
    match way {
        Way::Implicit => unreachable!("the implicit GEMM is called through `implicit`"),
        Way::Ops | Way::Own if groups > 1 => depthwise::conv2d(x, weight, bias, k / 2, stride),
        Way::Ops | Way::Own => im2col::conv2d(x, weight, bias, k / 2, stride),
        Way::Burn => {
            let options = ConvOptions::new([stride; 2], [k / 2; 2], [1, 1], groups);
            conv2d(x, weight, bias, options)
        }
    }
}

/// Whether the weight has one input channel per group and the input more than one.
fn depthwise<B: Backend>(x: &Tensor<B, 4>, weight: &Tensor<B, 4>) -> bool {
    weight.dims()[1] == 1 && x.dims()[1] > 1
}

fn convolve_train(
    x: Tensor<Train, 4>,
    weight: Tensor<Train, 4>,
    bias: Option<Tensor<Train, 1>>,
    k: usize,
    stride: usize,
    way: Way,
) -> Tensor<Train, 4> {
    match way {
        Way::Own if !depthwise(&x, &weight) => {
            im2col_autodiff::conv2d::<Selected>(x, weight, bias, k / 2, stride)
        }
        way => convolve(x, weight, bias, k, stride, way),
    }
}

fn time_forward(shape: [usize; 4], layer: Layer, way: Way) -> f64 {
    let device = device::default_device();
    let x = Tensor::<Selected, 4>::random(shape, Distribution::Default, &device);
    let weight =
        Tensor::<Selected, 4>::random(layer.weight_shape(), Distribution::Default, &device);
    if way == Way::Implicit {
        // NaN where the build has no implicit GEMM or cubek refuses the shape.
        let before = refused_so_far();
        let Some(out) = implicit(x.clone(), weight.clone(), None, layer.k, 1) else {
            return f64::NAN;
        };
        Selected::sync(&device).expect("sync");
        drop(out);
        if refused_so_far() > before {
            return f64::NAN;
        }
    }
    median_ms(|| {
        let out = match way {
            Way::Implicit => implicit(x.clone(), weight.clone(), None, layer.k, 1),
            way => Some(convolve(x.clone(), weight.clone(), None, layer.k, 1, way)),
        };
        Selected::sync(&device).expect("sync");
        drop(out);
    })
}

fn time_training(shape: [usize; 4], layer: Layer, way: Way) -> f64 {
    let device = device::default_device();
    let x = Tensor::<Train, 4>::random(shape, Distribution::Default, &device).require_grad();
    let weight = Tensor::<Train, 4>::random(layer.weight_shape(), Distribution::Default, &device)
        .require_grad();
    median_ms(|| {
        let out = convolve_train(x.clone(), weight.clone(), None, layer.k, 1, way);
        let grads = out.sum().backward();
        drop(grads);
        Selected::sync(&device).expect("sync");
    })
}

fn median_ms(mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[2]
}
