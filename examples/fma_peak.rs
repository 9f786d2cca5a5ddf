use std::arch::x86_64::*;
use std::time::Instant;
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
        _mm256_storeu_ps(t.as_mut_ptr(), acc[j]);
        s += t.iter().sum::<f32>();
    }
    s
}
fn main() {
    let iters = 200_000_000;
    let t = Instant::now();
    let s = unsafe { peak512(iters) };
    println!(
        "avx512: {:.1} GFLOP/s/core ({s})",
        (iters * 12 * 32) as f64 / t.elapsed().as_secs_f64() / 1e9
    );
    let t = Instant::now();
    let s = unsafe { peak256(iters) };
    println!(
        "avx2: {:.1} GFLOP/s/core ({s})",
        (iters * 12 * 16) as f64 / t.elapsed().as_secs_f64() / 1e9
    );
}
