//! On the selected backend (a GPU build): what `--precision f16` does to a cartoon.
//! The bundled model cartoonizes `examples/sunset.jpg` at its own size and resized to
//! 1920x1080, through the program's path (`infer::Cartoonizer`, no post-processing), in f32 and
//! f16; printed: the largest difference from the f32 cartoon in 8-bit levels, the share of
//! values more than one level off, and the median time of 3 calls after one warm-up (image in
//! and out included). Exits 1 if f16 is more than one level off anywhere (the
//! bound the issue sets for a reduced-precision path: 1/255). With `TOONSMITH_GPU_CONV=implicit`,
//! the same for CubeCL's implicit GEMM.
//!
//!     cargo build --release --features cuda-untuned --example gpu_precision
//!     target/release/examples/gpu_precision      # from the repository root
use std::time::Instant;

use image::{imageops::FilterType, RgbImage};
use toonsmith::device::{self, Selected};
use toonsmith::infer::{self, Cartoonizer, PostConfig};
use toonsmith::kernels::precision::Precision;
use toonsmith::weights::TensorFile;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    device::keep_compiled_kernels();
    device::check_available()?;
    toonsmith::kernels::gpu_settings_from_env()?;
    let device = device::default_device();
    let file = TensorFile::read("models/default.safetensors".as_ref())?;
    let g = infer::load_model::<Selected>(&file, &device)?;
    let cartoonizer = Cartoonizer::new(g, device, PostConfig::off());
    let photo = image::open("examples/sunset.jpg")?.to_rgb8();
    let hd = image::imageops::resize(&photo, 1920, 1080, FilterType::Triangle);
    let mut worst = 0u8;
    for (name, photo) in [("sunset.jpg", &photo), ("sunset.jpg at 1920x1080", &hd)] {
        Precision::F32.set_current();
        let (exact, ms) = timed(&cartoonizer, photo);
        println!("{}, {name}: f32 {ms:.1} ms", device::NAME);
        Precision::F16.set_current();
        let (cartoon, ms) = timed(&cartoonizer, photo);
        let (max, over_one) = difference(&cartoon, &exact);
        println!(
            "  f16: {ms:.1} ms, max |f16 - f32| = {max} levels, \
             {:.4}% of values more than one level off",
            100.0 * over_one
        );
        worst = worst.max(max);
    }
    Precision::F32.set_current();
    #[cfg(feature = "cube-ops")]
    if let Some(note) = toonsmith::kernels::implicit_gemm::refusal_note() {
        println!("({note})");
    }
    if worst > 1 {
        eprintln!("f16 moved the cartoon by {worst} levels (bound: 1)");
        std::process::exit(1);
    }
    Ok(())
}

/// The cartoon of `photo` and the median time of 3 calls after one warm-up, in ms.
fn timed(cartoonizer: &Cartoonizer<Selected>, photo: &RgbImage) -> (RgbImage, f64) {
    let cartoon = cartoonizer.generate(photo);
    let mut times: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            let out = cartoonizer.generate(photo);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            drop(out);
            ms
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (cartoon, times[1])
}

/// The largest difference in 8-bit levels and the share of values more than one level apart.
fn difference(a: &RgbImage, b: &RgbImage) -> (u8, f64) {
    let diffs: Vec<u8> = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| x.abs_diff(*y))
        .collect();
    let over_one = diffs.iter().filter(|&&d| d > 1).count() as f64 / diffs.len() as f64;
    (diffs.iter().copied().max().unwrap_or(0), over_one)
}
