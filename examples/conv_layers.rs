//! Time of each stride-1 dense convolution of the paper's G on the host kernel
//! (`toonsmith::kernels::conv::conv2d`), at a chosen size, with the direct-convolution
//! GFLOP/s (2 C_in C_out k^2 per output pixel over the time): where the forward's time goes,
//! layer by layer, for docs/performance.md.
//!
//!     cargo run --release --example conv_layers [H W [C_in C_out k scale [pad images [kept [stride]]]]]
//!
//! With `pad` and `images`, one layer of any shape as the training step calls it (a batch
//! through `conv2d_batch`), e.g. a stride-2 layer's phase convolution `128 64 2 1 0 2`; a
//! `kept` argument `1` keeps the plan as frozen weights' (VGG19's) are kept, so the time is the
//! convolution's alone; a last `stride` of 2 times a stride-2 layer whole (phases, plan and
//! convolution), e.g. `256 256 32 64 3 1 1 2 0 2`.
use std::time::Instant;

/// The program's allocator, keeping freed memory: with glibc's, every run's output (up to
/// 1 GB) is fresh pages that the kernel zeroes, which hid the convolution's own time.
#[path = "../src/bin/toonsmith/allocator.rs"]
mod allocator;

use toonsmith::kernels::conv::{available, ConvShape};
use toonsmith::kernels::polyphase;

fn main() {
    allocator::keep_freed_memory();
    if !available() {
        eprintln!("the host convolution needs AVX-512 or AVX2 with FMA");
        return;
    }
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (h, w) = match args[..] {
        [h, w, ..] => (h, w),
        _ => (256, 256),
    };
    // (C_in, C_out, k, scale): the stride-1 dense convolutions of G (Fig. 10), full size first.
    let layers = [
        (3, 32, 7, 1),
        (64, 64, 3, 2),
        (128, 256, 3, 4),
        (256, 128, 1, 4),
        (128, 256, 1, 4),
        (256, 128, 3, 4),
        (128, 128, 3, 2),
        (128, 64, 3, 1),
        (64, 64, 3, 1),
        (64, 32, 7, 1),
    ];
    // One layer alone (for a profile) when given.
    let one = match args[..] {
        [_, _, c_in, c_out, k, scale, ..] => Some((c_in, c_out, k, scale)),
        _ => None,
    };
    let (pad, images, frozen, stride) = match args[..] {
        [_, _, _, _, _, _, pad, images] => (Some(pad), images.max(1), false, 1),
        [_, _, _, _, _, _, pad, images, kept] => (Some(pad), images.max(1), kept == 1, 1),
        [_, _, _, _, _, _, pad, images, kept, stride] => {
            (Some(pad), images.max(1), kept == 1, stride.clamp(1, 2))
        }
        _ => (None, 1, false, 1),
    };
    let conv2d_batch = |x: &[f32], wt: &[f32], s: &ConvShape| {
        polyphase::conv2d_batch(x, wt, None, s, stride, frozen).0
    };
    for (c_in, c_out, k, scale) in one.map_or(layers.to_vec(), |l| vec![l]) {
        let s = ConvShape {
            c_in,
            c_out,
            h: h / scale,
            w: w / scale,
            k,
            pad: pad.unwrap_or(k / 2),
        };
        let x: Vec<f32> = (0..images * c_in * s.h * s.w)
            .map(|i| (i % 97) as f32 / 97.0 - 0.5)
            .collect();
        let wt: Vec<f32> = (0..c_out * c_in * k * k)
            .map(|i| (i % 89) as f32 / 890.0)
            .collect();
        let _ = conv2d_batch(&x, &wt, &s);
        let mut times = Vec::new();
        for _ in 0..if one.is_some() { 50 } else { 7 } {
            let t = Instant::now();
            std::hint::black_box(conv2d_batch(&x, &wt, &s));
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let [oh, ow] = match stride {
            2 => polyphase::Polyphase::out_size(&s),
            _ => s.out_size(),
        };
        let flop = 2.0 * (images * c_in * c_out * k * k * oh * ow) as f64;
        println!(
            "{c_in:>4} -> {c_out:<4} {k}x{k}/{stride} at {:>4}x{:<4} pad {} x{images} {:>8.2} ms {:>6.0} GFLOP/s",
            s.h,
            s.w,
            s.pad,
            median * 1e3,
            flop / median / 1e9
        );
    }
}
