//! Time of the host weight gradient (`toonsmith::kernels::wgrad::weight_grad`) of one
//! stride-1 convolution (same-size 3x3 unless `k` and `pad` are given), with the
//! direct-convolution GFLOP/s (2 C_in C_out k^2 H_out W_out N over the time): the
//! training-side counterpart of `conv_layers`.
//!
//!     cargo run --release --example wgrad_layers H W C_in C_out N [k pad]
use std::time::Instant;
use toonsmith::kernels::conv::ConvShape;
use toonsmith::kernels::wgrad::weight_grad;

/// The program's allocator, keeping freed memory (as in `conv_layers`).
#[path = "../src/bin/toonsmith/allocator.rs"]
mod allocator;

fn main() {
    allocator::keep_freed_memory();
    if !toonsmith::kernels::conv::available() {
        eprintln!("the host weight gradient needs AVX-512 or AVX2 with FMA");
        return;
    }
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let (h, w, c_in, c_out, n, k, pad) = match a[..] {
        [h, w, c_in, c_out, n] => (h, w, c_in, c_out, n, 3, 1),
        [h, w, c_in, c_out, n, k, pad] => (h, w, c_in, c_out, n, k, pad),
        _ => {
            eprintln!("usage: wgrad_layers H W C_in C_out N [k pad]");
            return;
        }
    };
    let s = ConvShape {
        c_in,
        c_out,
        h,
        w,
        k,
        pad,
    };
    let [oh, ow] = s.out_size();
    let x: Vec<f32> = (0..n * c_in * h * w)
        .map(|i| (i % 97) as f32 / 97.0 - 0.5)
        .collect();
    let g: Vec<f32> = (0..n * c_out * oh * ow)
        .map(|i| (i % 89) as f32 / 89.0 - 0.5)
        .collect();
    let mut times = vec![];
    for i in 0..12 {
        let t = Instant::now();
        std::hint::black_box(weight_grad(&x, &g, &s));
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let gf = 2.0 * (c_in * c_out * k * k * oh * ow * n) as f64 / 1e9;
    let m = times[times.len() / 2];
    println!(
        "{c_in}->{c_out} {k}x{k} pad {pad} {h}x{w} n{n}: {:.2} ms {:.0} GF/s",
        m * 1e3,
        gf / m
    );
}
