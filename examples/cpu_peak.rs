//! Peak single-core f32 FMA throughput of this CPU (AVX-512 and AVX2): twelve independent FMA
//! chains, the ceiling the convolution kernel is measured against in docs/performance.md.
//!
//!     cargo run --release --example cpu_peak
#![allow(clippy::needless_range_loop)]

use std::time::Instant;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn peak512(iters: usize) -> f32 {
    let mut acc = [_mm512_set1_ps(0.0); 12];
    let a = _mm512_set1_ps(1.000001);
    let b = _mm512_set1_ps(0.999999);
    for _ in 0..iters {
        for j in 0..12 {
            acc[j] = _mm512_fmadd_ps(a, acc[j], b);
        }
    }
    let mut s = 0.0;
    for j in 0..12 {
        s += _mm512_reduce_add_ps(acc[j]);
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn peak256(iters: usize) -> f32 {
    let mut acc = [_mm256_set1_ps(0.0); 12];
    let a = _mm256_set1_ps(1.000001);
    let b = _mm256_set1_ps(0.999999);
    for _ in 0..iters {
        for j in 0..12 {
            acc[j] = _mm256_fmadd_ps(a, acc[j], b);
        }
    }
    let mut s = 0.0;
    for j in 0..12 {
        let mut t = [0f32; 8];
        unsafe { _mm256_storeu_ps(t.as_mut_ptr(), acc[j]) };
        s += t.iter().sum::<f32>();
    }
    s
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        let iters = 200_000_000;
        if std::arch::is_x86_feature_detected!("avx512f") {
            let t = Instant::now();
            // SAFETY: AVX-512 was detected.
            let s = unsafe { peak512(iters) };
            let rate = (iters * 12 * 32) as f64 / t.elapsed().as_secs_f64() / 1e9;
            println!("AVX-512: {rate:.0} GFLOP/s per core ({s})");
        }
        if std::arch::is_x86_feature_detected!("fma") {
            let t = Instant::now();
            // SAFETY: AVX2 and FMA were detected.
            let s = unsafe { peak256(iters) };
            let rate = (iters * 12 * 16) as f64 / t.elapsed().as_secs_f64() / 1e9;
            println!("AVX2+FMA: {rate:.0} GFLOP/s per core ({s})");
        }
    }
}
