//! On the selected backend (a GPU build): burn's matmul at the shapes toonsmith's gathered-window
//! convolutions give it (`kernels::im2col`), in f32, f16 and bf16 (operands cast before the
//! clock starts, product accumulated by the kernel), with the time of casting the window
//! operand. Prints the median of 5 timed calls after one warm-up, TFLOP/s, and each reduced
//! precision's largest difference from the f32 product relative to its largest magnitude: is a
//! reduced-precision convolution path worth building, and how far would it move the output?
//!
//!     cargo build --release --features cuda-untuned --example gpu_matmul
//!     target/release/examples/gpu_matmul
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Device, Distribution, ElementConversion, FloatDType, Tensor};
use toonsmith::device::{self, Selected};

/// A product `[batch, m, k] x [batch, k, n]` and where G meets it.
struct Shape {
    what: &'static str,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
}

const SHAPES: [Shape; 6] = [
    Shape {
        what: "1080p head 7x7 64->32, one band of 44 rows",
        batch: 1,
        m: 32,
        k: 3136,
        n: 44 * 1920,
    },
    Shape {
        what: "1080p 3x3 64->64, one band of 242 rows",
        batch: 1,
        m: 64,
        k: 576,
        n: 242 * 1920,
    },
    Shape {
        what: "1080p/2 3x3 128->128, one band of 242 rows",
        batch: 1,
        m: 128,
        k: 1152,
        n: 121 * 960,
    },
    Shape {
        what: "train b8 256x256 3x3 64->64",
        batch: 8,
        m: 64,
        k: 576,
        n: 256 * 256,
    },
    Shape {
        what: "train b8 64x64 1x1 256->128",
        batch: 8,
        m: 128,
        k: 256,
        n: 64 * 64,
    },
    Shape {
        what: "square 4096",
        batch: 1,
        m: 4096,
        k: 4096,
        n: 4096,
    },
];

fn main() {
    if let Err(err) = device::check_available() {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
    let device = device::default_device();
    println!(
        "{}: median ms (TFLOP/s); diff = max |p - p_f32| / max |p_f32|",
        device::NAME
    );
    for shape in SHAPES {
        let Shape { batch, m, k, n, .. } = shape;
        let lhs = Tensor::<Selected, 3>::random([batch, m, k], Distribution::Default, &device);
        let rhs = Tensor::<Selected, 3>::random([batch, k, n], Distribution::Default, &device);
        let flop = 2.0 * (batch * m * k * n) as f64;
        let exact = lhs.clone().matmul(rhs.clone());
        let formats = [
            ("f32", FloatDType::F32),
            ("f16", FloatDType::F16),
            ("bf16", FloatDType::BF16),
        ];
        let product = Product {
            lhs: &lhs,
            rhs: &rhs,
            exact: &exact,
            flop,
        };
        let cast_ms = median_ms(&device, || rhs.clone().cast(FloatDType::F16));
        let line = product.time(&device, &formats);
        println!("{:<44}{line} | cast rhs to f16 {cast_ms:.3}", shape.what);
        // The same product pixel-major: [batch, n, k] x [batch, k, m] (the output transposed).
        let contiguous = |t: &Tensor<Selected, 3>| {
            Tensor::<Selected, 3>::from_data(t.clone().swap_dims(1, 2).into_data(), &device)
        };
        let (lhs_t, rhs_t) = (contiguous(&rhs), contiguous(&lhs));
        let exact_t = exact.clone().swap_dims(1, 2);
        let product = Product {
            lhs: &lhs_t,
            rhs: &rhs_t,
            exact: &exact_t,
            flop,
        };
        let line = product.time(&device, &formats[..2]);
        println!("{:<44}{line}", "  pixel-major (transposed)");
    }
}

/// A product to time, with its f32 result.
struct Product<'a> {
    lhs: &'a Tensor<Selected, 3>,
    rhs: &'a Tensor<Selected, 3>,
    exact: &'a Tensor<Selected, 3>,
    flop: f64,
}

impl Product<'_> {
    /// ` | name ms (TFLOP/s) diff d` for each format, operands cast before the clock.
    fn time(&self, device: &Device<Selected>, formats: &[(&str, FloatDType)]) -> String {
        let scale: f32 = self.exact.clone().abs().max().into_scalar().elem();
        let mut line = String::new();
        for &(name, dtype) in formats {
            let (a, b) = (self.lhs.clone().cast(dtype), self.rhs.clone().cast(dtype));
            let ms = median_ms(device, || a.clone().matmul(b.clone()));
            let product = a.matmul(b).cast(FloatDType::F32);
            let diff: f32 = (product - self.exact.clone())
                .abs()
                .max()
                .into_scalar()
                .elem();
            let tflops = self.flop / ms / 1e9;
            line += &format!(
                " | {name} {ms:7.3} ({tflops:5.1}) diff {:.1e}",
                diff / scale
            );
        }
        line
    }
}

fn median_ms(device: &Device<Selected>, mut f: impl FnMut() -> Tensor<Selected, 3>) -> f64 {
    let run = |f: &mut dyn FnMut() -> Tensor<Selected, 3>| {
        let t = Instant::now();
        let out = f();
        Selected::sync(device).expect("sync");
        drop(out);
        t.elapsed().as_secs_f64() * 1e3
    };
    run(&mut f);
    let mut times: Vec<f64> = (0..5).map(|_| run(&mut f)).collect();
    times.sort_by(f64::total_cmp);
    times[2]
}
