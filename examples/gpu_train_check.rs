//! Training iterations on the selected backend (a GPU build) against the same iterations on
//! the CPU: the same initial networks (made on the CPU, moved through their records), the same
//! photo and cartoon, the same CTSS strides; every loss of each step (the D step, then the G
//! step after D's update) compared. The second iteration's losses depend on the first's updates
//! of both networks, so on every gradient of the step. Exits 1 if one differs by more than 2%
//! (TF32 matmuls round to about 1e-3); a wrong kernel on the GPU path (a convolution, the
//! depthwise convolution, the LN node or its sums, a fused element-wise op) shows as a loss off
//! by far more.
//!
//!     cargo run --release --features cuda-untuned --example gpu_train_check [size] [iterations]
use burn::backend::Autodiff;
use burn::module::Module;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::{Device, Distribution, Tensor};
use toonsmith::device::{self, CpuBackend, Selected, CPU};
use toonsmith::kernels;
use toonsmith::train::config::TrainConfig;
use toonsmith::train::step::{Nets, StepContext};

type Cpu = Autodiff<CpuBackend>;
type Gpu = Autodiff<Selected>;

/// `module` (made on the CPU) as the same module on `device`: `target`, a freshly made one of
/// the same configuration, loaded with `module`'s record (through its bytes).
fn moved<M: Module<Cpu>, T: Module<Gpu>>(module: &M, target: T, device: &Device<Gpu>) -> T {
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = recorder
        .record(module.clone().into_record(), ())
        .expect("record to bytes");
    let record = recorder.load(bytes, device).expect("record from bytes");
    target.load_record(record)
}

fn main() {
    let checked = device::check_available().and_then(|()| kernels::gpu_settings_from_env());
    if let Err(err) = checked {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (size, iterations) = (arg(1, 256), arg(2, 2));
    let config = TrainConfig::default();
    let device = device::default_device();
    let vgg_cpu = config.vgg.network.init::<Cpu>(&CPU);
    let vgg = moved(&vgg_cpu, config.vgg.network.init::<Gpu>(&device), &device);
    let mut cpu = Nets::<Cpu>::new(&config, &CPU);
    let mut gpu = Nets::<Gpu>::new(&config, &device);
    gpu.g = moved(&cpu.g, gpu.g, &device);
    gpu.d = moved(&cpu.d, gpu.d, &device);
    let batch = |seed: f64| {
        Tensor::<CpuBackend, 4>::random([1, 3, size, size], Distribution::Uniform(-1.0, 1.0), &CPU)
            .mul_scalar(seed)
    };
    let (photo, cartoon) = (batch(1.0), batch(0.9));
    let here = |t: &Tensor<CpuBackend, 4>| Tensor::<Gpu, 4>::from_data(t.to_data(), &device);
    let on_cpu = StepContext::new(&config, vgg_cpu);
    let on_gpu = StepContext::new(&config, vgg);
    let strides = (60, 60);
    println!(
        "{} against the CPU, {iterations} training iterations at {size}x{size} \
         (convolutions {}, weight gradients {}, LN sums {}):",
        device::NAME,
        kernels::im2col::GpuConv::current(true).name(),
        kernels::im2col_autodiff::WeightGrad::current().name(),
        kernels::ln_ops::LnSums::current().name()
    );
    let mut worst = 0.0f32;
    for iteration in 1..=iterations {
        let expected = on_cpu
            .adversarial(
                &mut cpu,
                Tensor::from_inner(photo.clone()),
                Tensor::from_inner(cartoon.clone()),
                strides,
            )
            .expect("CPU step");
        let got = on_gpu
            .adversarial(&mut gpu, here(&photo), here(&cartoon), strides)
            .expect("GPU step");
        println!("iteration {iteration}");
        for (name, want) in &expected {
            let have = got.get(name).copied().unwrap_or(f32::NAN);
            let relative = (have - want).abs() / want.abs().max(1e-6);
            println!("  {name:>16}: {have:>12.6} vs {want:>12.6} (relative {relative:.1e})");
            worst = if relative.is_nan() {
                f32::INFINITY
            } else {
                worst.max(relative)
            };
        }
    }
    #[cfg(feature = "cube-ops")]
    if let Some(note) = toonsmith::kernels::implicit_gemm::refusal_note() {
        println!("({note})");
    }
    if worst > 2e-2 {
        eprintln!("a loss differs from the CPU's by {worst:.1e} (relative)");
        std::process::exit(1);
    }
}
