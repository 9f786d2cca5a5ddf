//! The LN of Fig. 10 (normalisation over `(C, H, W)` of one image, per-channel scale and shift)
//! and the leaky ReLU after it, in two passes over the image instead of burn's chain of seven
//! element-wise ops, each of which allocates its result.

use rayon::prelude::*;

/// Values summed in f32 before the partial sum joins the f64 total.
pub(crate) const CHUNK: usize = 4096;

/// The sum and the sum of squares of `x` (a few thousand values at most): f32 in 16 lanes, then
/// f64. The lanes are the same whatever the machine, so is the result; with AVX-512 they are one
/// register each, with AVX2 two (built for plain x86-64 they took four SSE registers, and these
/// sums were 9% of a 1920x1080 forward; written as intrinsics since session 32).
pub fn sums(x: &[f32]) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    match super::conv::Isa::detected() {
        // SAFETY: the CPU has AVX-512F.
        Some(super::conv::Isa::Avx512) => return unsafe { sums_avx512(x) },
        // SAFETY: the CPU has AVX2.
        Some(super::conv::Isa::Avx2) => return unsafe { sums_avx2(x) },
        None => {}
    }
    sums_lanes(x)
}

/// [`sums_lanes`] with each sum's 16 lanes in one AVX-512 register (the same bits; the
/// compiler's vectorisation of the portable loop used scalar and 128-bit registers here too).
/// Compiled but not run on the AVX2-only development machines of sessions 27-32; the test
/// below checks it bit for bit wherever the CPU has AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sums_avx512(x: &[f32]) -> (f64, f64) {
    use std::arch::x86_64::*;
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    let (mut s, mut q) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for chunk in chunks {
        // SAFETY: `chunk` holds 16 floats.
        let a = unsafe { _mm512_loadu_ps(chunk.as_ptr()) };
        s = _mm512_add_ps(s, a);
        q = _mm512_add_ps(q, _mm512_mul_ps(a, a));
    }
    let lanes = |v: __m512| {
        let mut a = [0.0f32; 16];
        // SAFETY: `a` holds 16 floats.
        unsafe { _mm512_storeu_ps(a.as_mut_ptr(), v) };
        a
    };
    lane_totals(lanes(s), lanes(q), rest)
}

/// [`sums_lanes`] in two AVX2 vectors per sum (lanes 0-7 and 8-15), squares rounded before
/// they are added as there (no FMA), so the lanes and the result are the same bits. The
/// compiler's own vectorisation of the loop kept half of the lanes in scalar registers and
/// spilled the rest (these sums went from 4.7% to 1.9% of a 1920x1080 forward's samples).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sums_avx2(x: &[f32]) -> (f64, f64) {
    use std::arch::x86_64::*;
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    let (mut s0, mut s1, mut q0, mut q1) = (
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
    );
    for chunk in chunks {
        // SAFETY: `chunk` holds 16 floats.
        let (a, b) = unsafe {
            (
                _mm256_loadu_ps(chunk.as_ptr()),
                _mm256_loadu_ps(chunk.as_ptr().add(8)),
            )
        };
        s0 = _mm256_add_ps(s0, a);
        s1 = _mm256_add_ps(s1, b);
        q0 = _mm256_add_ps(q0, _mm256_mul_ps(a, a));
        q1 = _mm256_add_ps(q1, _mm256_mul_ps(b, b));
    }
    let lanes = |lo: __m256, hi: __m256| {
        let mut a = [0.0f32; 16];
        // SAFETY: `a` holds 16 floats.
        unsafe {
            _mm256_storeu_ps(a.as_mut_ptr(), lo);
            _mm256_storeu_ps(a.as_mut_ptr().add(8), hi);
        }
        a
    };
    lane_totals(lanes(s0, s1), lanes(q0, q1), rest)
}

#[inline(always)]
fn sums_lanes(x: &[f32]) -> (f64, f64) {
    let mut sum = [0.0f32; 16];
    let mut sum_sq = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for chunk in chunks {
        for ((s, q), &v) in sum.iter_mut().zip(&mut sum_sq).zip(chunk) {
            *s += v;
            *q += v * v;
        }
    }
    lane_totals(sum, sum_sq, rest)
}

/// The 16 lanes of the sum and of the sum of squares in f64, in lane order, plus the values
/// `rest` past the last whole 16.
#[inline(always)]
fn lane_totals(sum: [f32; 16], sum_sq: [f32; 16], rest: &[f32]) -> (f64, f64) {
    let lanes = |a: [f32; 16]| a.iter().map(|&v| v as f64).sum::<f64>();
    let tail = |f: fn(f32) -> f32| rest.iter().map(|&v| f(v) as f64).sum::<f64>();
    (lanes(sum) + tail(|v| v), lanes(sum_sq) + tail(|v| v * v))
}

/// Mean and biased variance of `x`, accumulated in f64 over f32 chunk sums.
pub fn mean_var(x: &[f32]) -> (f64, f64) {
    let (sum, sum_sq) = x
        .par_chunks(CHUNK)
        .map(sums)
        .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    let n = x.len().max(1) as f64;
    let mean = sum / n;
    (mean, (sum_sq / n - mean * mean).max(0.0))
}

/// `x` (one image, `[C, H*W]`) normalised by `mean` and `var`, scaled and shifted per channel,
/// then leaky ReLU with `slope` if given; in place.
pub fn normalize_act(
    x: &mut [f32],
    (mean, var): (f64, f64),
    epsilon: f64,
    gamma: &[f32],
    beta: &[f32],
    slope: Option<f32>,
) {
    let inv_std = 1.0 / (var + epsilon).sqrt();
    let plane = x.len() / gamma.len().max(1);
    x.par_chunks_mut(plane)
        .zip(gamma.par_iter().zip(beta))
        .for_each(|(channel, (&g, &b))| {
            let scale = (g as f64 * inv_std) as f32;
            let shift = (b as f64 - mean * g as f64 * inv_std) as f32;
            scale_shift_act(channel, scale, shift, slope);
        });
}

/// `v * scale + shift`, then leaky ReLU with `slope` if given, in place; AVX-512 or AVX2 where
/// the CPU has it (the same operations on each value either way).
fn scale_shift_act(x: &mut [f32], scale: f32, shift: f32, slope: Option<f32>) {
    #[cfg(target_arch = "x86_64")]
    match super::conv::Isa::detected() {
        // SAFETY: the CPU has AVX-512F.
        Some(super::conv::Isa::Avx512) => {
            return unsafe { scale_shift_act_avx512(x, scale, shift, slope) }
        }
        // SAFETY: the CPU has AVX2.
        Some(super::conv::Isa::Avx2) => {
            return unsafe { scale_shift_act_avx2(x, scale, shift, slope) }
        }
        None => {}
    }
    scale_shift_act_loop(x, scale, shift, slope)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scale_shift_act_avx512(x: &mut [f32], scale: f32, shift: f32, slope: Option<f32>) {
    scale_shift_act_loop(x, scale, shift, slope)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scale_shift_act_avx2(x: &mut [f32], scale: f32, shift: f32, slope: Option<f32>) {
    scale_shift_act_loop(x, scale, shift, slope)
}

#[inline(always)]
fn scale_shift_act_loop(x: &mut [f32], scale: f32, shift: f32, slope: Option<f32>) {
    match slope {
        Some(slope) => x.iter_mut().for_each(|v| {
            let y = *v * scale + shift;
            *v = if y >= 0.0 { y } else { y * slope };
        }),
        None => x.iter_mut().for_each(|v| *v = *v * scale + shift),
    }
}

/// [`normalize_act`] on every image of a batch `x` (`[N, image]`), each by `stats` if given,
/// else by its own mean and variance; in place. Returns each image's mean and variance used.
pub fn layer_norm_batch(
    x: &mut [f32],
    image: usize,
    (stats, epsilon): (Option<(f64, f64)>, f64),
    gamma: &[f32],
    beta: &[f32],
    slope: Option<f32>,
) -> Vec<(f64, f64)> {
    x.chunks_mut(image.max(1))
        .map(|chunk| {
            let stats = stats.unwrap_or_else(|| mean_var(chunk));
            normalize_act(chunk, stats, epsilon, gamma, beta, slope);
            stats
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dispatched sums and scale-shift equal the portable loops bit for bit (the same lanes,
    /// the same operations), at lengths around the lane count.
    #[test]
    fn wide_paths_equal_the_portable_loops() {
        for n in [0, 1, 15, 16, 17, 100, 4096, 4099] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 1013) as f32 * 0.01 - 5.0)
                .collect();
            assert_eq!(sums(&x), sums_lanes(&x), "{n}");
            for slope in [None, Some(0.2)] {
                let (mut a, mut b) = (x.clone(), x.clone());
                scale_shift_act(&mut a, 1.7, -0.3, slope);
                scale_shift_act_loop(&mut b, 1.7, -0.3, slope);
                assert_eq!(a, b, "{n} {slope:?}");
            }
        }
    }

    #[test]
    fn sums_match_f64() {
        let row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let (sum, sum_sq) = sums(&row);
        let exact: f64 = row.iter().map(|&v| v as f64).sum();
        let exact_sq: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum();
        assert!((sum - exact).abs() < 1e-5 && (sum_sq - exact_sq).abs() < 1e-4);
    }

    #[test]
    fn normalised_image_has_zero_mean_unit_variance_and_leaks() {
        let mut x: Vec<f32> = (0..3 * 50)
            .map(|i| ((i * 37) % 101) as f32 * 0.3 + 5.0)
            .collect();
        let stats = mean_var(&x);
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!((stats.0 - mean).abs() < 1e-6 && (stats.1 - var).abs() < 1e-4 * var);
        let mut plain = x.clone();
        normalize_act(&mut plain, stats, 0.0, &[1.0; 3], &[0.0; 3], None);
        let (m, v) = mean_var(&plain);
        assert!(m.abs() < 1e-5 && (v - 1.0).abs() < 1e-4, "{m} {v}");
        normalize_act(
            &mut x,
            stats,
            0.0,
            &[2.0, 1.0, 1.0],
            &[0.0, 1.0, 0.0],
            Some(0.2),
        );
        for (i, (&y, &p)) in x.iter().zip(&plain).enumerate() {
            let (g, b) = [(2.0, 0.0), (1.0, 1.0), (1.0, 0.0)][i / 50];
            let lin = p * g + b;
            let want = if lin >= 0.0 { lin } else { 0.2 * lin };
            assert!((y - want).abs() < 1e-5, "{i}: {y} vs {want}");
        }
    }
}
