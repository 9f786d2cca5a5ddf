//! The weight gradient of the stride-1 convolution of [`super::conv`], in the same padded layout.
//!
//! `dW[o, c, ky, kx] = sum over images and output pixels (y, x) of g[o, y, x] xpad[c, y + ky,
//! x + kx]`. With the output gradient laid out `W + 2p` wide (zeros past `W_out`), as `gw[o, q]`
//! with `q = y (W + 2p) + x`, every term `t = (c, ky, kx)` reads the padded input at a fixed
//! offset: `dW[o, t] = sum_q gw[o, q] xpad[offset(t) + q]`, a matrix product with a contraction
//! over all pixels whose second operand is never materialised. The micro-kernel keeps 4 output
//! channels x 6 terms of 16-lane partial sums in 24 vector registers; pixels are taken in
//! chunks that stay in cache while the threads share the output channels, and the partial sums
//! stay vectors across chunks (summed across lanes once, at the end). (Before this, one
//! `gemm` call per kernel tap re-packed the whole output gradient k^2 times.) Same-size 3x3
//! convolutions of the shapes the Winograd convolution takes go to its weight gradient instead
//! (F(4x4, 3x3) on AVX2, which also takes the sub-pixel 2x2 ones by F(4x4, 2x2),
//! `super::winograd_grad`; F(2x2, 3x3) otherwise), and so do the 7x7 ones that run by
//! F(4, 7) along rows (`super::winograd_rows_grad`).

use rayon::prelude::*;

use super::conv::{pad_input, term_offsets, ConvShape, Isa, LANES};

/// Output channels per micro-kernel call.
pub(crate) const R: usize = 4;
/// Terms per micro-kernel call.
pub(crate) const C: usize = 6;
/// Pixels per chunk (a multiple of [`LANES`]): 4 KiB of each operand row.
const CHUNK: usize = 1024;

/// `dL/dW` `[C_out, C_in, k, k]` summed over the batch: `x` `[N, C_in, H, W]`, `g` (the output
/// gradient) `[N, C_out, H_out, W_out]`.
///
/// # Panics
/// If the slices do not match `s` or [`super::conv::available`] is false.
pub fn weight_grad(x: &[f32], g: &[f32], s: &ConvShape) -> Vec<f32> {
    weight_grad_of(x, g, s, None)
}

/// [`weight_grad`] of the terms `(c, ky, kx)` that `live` marks (all where `None`), zero for
/// the others: a stride-2 convolution's phase kernel has taps that are always zero
/// ([`super::polyphase::Polyphase::live_terms`]), whose gradient nobody reads.
///
/// # Panics
/// As [`weight_grad`]; if `live` does not have `C_in k k` entries.
pub fn weight_grad_of(x: &[f32], g: &[f32], s: &ConvShape, live: Option<&[bool]>) -> Vec<f32> {
    let micro = micro_kernel();
    // Winograd where it runs the forward too (`wgrad_layers H W C_in C_out 2`, each path
    // forced in turn while it was written, direct / Winograd: 128 -> 128 at 128x128
    // 49.6 / 22.4 ms, 256 -> 128 at 64x64 19.1 / 10.8 ms, 64 -> 64 at 256x256 47.4 / 31.6 ms).
    // F(4x4, k) on AVX2 (`wgrad_layers H W C_in C_out 2 [k pad]`, docs/performance.md
    // "Session 31").
    if live.is_none() && super::winograd_grad::applies(s) {
        return super::winograd_grad::weight_grad(x, g, s);
    }
    if super::winograd::weight_grad_applies(s) {
        return super::winograd::weight_grad(x, g, s);
    }
    // F(4, 7) along rows for the 7x7 layers whose forward runs so (`wgrad_layers 256 256 64 32
    // 2 7 3`: see `winograd_rows_grad`).
    if live.is_none() && super::winograd_rows_grad::applies(s) {
        return super::winograd_rows_grad::weight_grad(x, g, s);
    }
    let [oh, ow] = s.out_size();
    let (image_in, image_out) = (s.c_in * s.h * s.w, s.c_out * oh * ow);
    assert_eq!(x.len() / image_in.max(1), g.len() / image_out.max(1));
    let terms = s.c_in * s.k * s.k;
    // The computed terms (`kept[i]` is term `kept[i]` of the kernel) and their offsets, padded
    // to a multiple of C with a harmless offset; those columns are never read back.
    let all = term_offsets(s);
    let kept: Vec<usize> = match live {
        Some(live) => {
            assert_eq!(live.len(), terms, "one flag per term");
            (0..terms).filter(|&t| live[t]).collect()
        }
        None => (0..terms).collect(),
    };
    let mut offsets: Vec<usize> = kept.iter().map(|&t| all[t]).collect();
    offsets.resize(kept.len().div_ceil(C) * C, 0);
    let wp = s.w + 2 * s.pad;
    let len = (oh * wp).next_multiple_of(LANES);
    // Per block of R channels and C terms, R x C vectors of 16 partial sums, added to at every
    // chunk and summed across lanes once at the end.
    let (blocks, term_blocks) = (s.c_out.div_ceil(R), offsets.len() / C);
    let per_block = term_blocks * R * C * LANES;
    let mut partial = vec![0.0f32; blocks * per_block];
    for (xi, gi) in x.chunks(image_in).zip(g.chunks(image_out)) {
        let xpad = pad_input(xi, s);
        let gw = widen(gi, s.c_out, [oh, ow], wp, len);
        for q0 in (0..len).step_by(CHUNK) {
            let vectors = (len - q0).min(CHUNK) / LANES;
            partial
                .par_chunks_mut(per_block)
                .enumerate()
                .for_each(|(block, sums)| {
                    let g_rows = &gw[block * R * len + q0..];
                    for (tb, acc) in sums.chunks_mut(R * C * LANES).enumerate() {
                        let cols: [usize; C] = std::array::from_fn(|j| offsets[tb * C + j] + q0);
                        // SAFETY: `micro` is this CPU's; `gw` has R-padded rows of `len`
                        // floats; every read of `xpad` stays below the largest offset + len,
                        // inside xpad and its slack (see `pad_input`).
                        unsafe { micro(g_rows, len, &xpad, cols, vectors, acc) };
                    }
                });
        }
    }
    let mut dw = vec![0.0f32; s.c_out * terms];
    dw.par_chunks_mut(terms).enumerate().for_each(|(o, row)| {
        for (i, &t) in kept.iter().enumerate() {
            let (r, j) = (o % R, i % C);
            let at = (o / R) * per_block + (((i / C) * R + r) * C + j) * LANES;
            row[t] = partial[at..at + LANES].iter().sum();
        }
    });
    dw
}

/// `g` `[C_out, H_out, W_out]` as rows of `len` floats (`W_out` values every `wp`, zeros
/// elsewhere), with zero rows up to a multiple of [`R`].
fn widen(g: &[f32], c_out: usize, [oh, ow]: [usize; 2], wp: usize, len: usize) -> Vec<f32> {
    let mut gw = vec![0.0f32; c_out.div_ceil(R) * R * len];
    gw.par_chunks_mut(len)
        .zip(g.par_chunks(oh * ow))
        .for_each(|(dst, src)| {
            for (y, row) in src.chunks(ow).enumerate() {
                dst[y * wp..y * wp + ow].copy_from_slice(row);
            }
        });
    gw
}

/// Adds to `acc` (`R x C` vectors of 16 lanes) the products over `vectors * 16` pixels of row
/// `r` of `gw` (rows `stride` apart) and `xpad` at `cols[j]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn micro(
    gw: &[f32],
    stride: usize,
    xpad: &[f32],
    cols: [usize; C],
    vectors: usize,
    acc: &mut [f32],
) {
    use std::arch::x86_64::*;
    assert_eq!(acc.len(), R * C * LANES);
    let sums = acc.as_mut_ptr();
    let mut reg = [[_mm512_setzero_ps(); C]; R];
    for (r, row) in reg.iter_mut().enumerate() {
        for (j, a) in row.iter_mut().enumerate() {
            *a = unsafe { _mm512_loadu_ps(sums.add((r * C + j) * LANES)) };
        }
    }
    let g = gw.as_ptr();
    let x = xpad.as_ptr();
    for v in 0..vectors {
        let q = v * LANES;
        let mut xv = [_mm512_setzero_ps(); C];
        for (slot, &col) in xv.iter_mut().zip(&cols) {
            *slot = unsafe { _mm512_loadu_ps(x.add(col + q)) };
        }
        for (r, row) in reg.iter_mut().enumerate() {
            let gv = unsafe { _mm512_loadu_ps(g.add(r * stride + q)) };
            for (a, &b) in row.iter_mut().zip(&xv) {
                *a = _mm512_fmadd_ps(gv, b, *a);
            }
        }
    }
    for (r, row) in reg.iter().enumerate() {
        for (j, &a) in row.iter().enumerate() {
            unsafe { _mm512_storeu_ps(sums.add((r * C + j) * LANES), a) };
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn micro(_: &[f32], _: usize, _: &[f32], _: [usize; C], _: usize, _: &mut [f32]) {
    unreachable!("weight_grad checks `available` first")
}

/// A weight-gradient micro-kernel: [`micro`] or [`micro_avx2`].
type Micro = unsafe fn(&[f32], usize, &[f32], [usize; C], usize, &mut [f32]);

/// The micro-kernel of this CPU's [`Isa`].
///
/// # Panics
/// If [`super::conv::available`] is false.
fn micro_kernel() -> Micro {
    micro_of(Isa::detected().expect("weight_grad needs AVX-512 or AVX2 with FMA"))
}

/// The micro-kernel of `isa`.
fn micro_of(isa: Isa) -> Micro {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => micro,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => micro_avx2,
        #[allow(unreachable_patterns, reason = "no vector code off x86_64")]
        _ => unreachable!("no host kernels on this architecture"),
    }
}

/// `sum[r][i] += sum over q < 16 vectors of y[r stride + q] x[offsets[i] + q]` for the [`R`]
/// rows of one block of output channels (`sum` `[R][offsets.len()]`, `offsets.len()` a
/// multiple of [`C`]): a matrix product whose contraction runs over pixels or tiles, by the
/// micro-kernel of `isa`, each slot's lanes summed once per call. The Winograd weight
/// gradients' products ([`super::winograd`], [`super::winograd_rows_grad`]), whose operands
/// change from one chunk of tiles to the next.
///
/// # Safety
/// The CPU has `isa`; `y` holds rows `r stride + 16 vectors` floats and `x` `offsets[i] + 16
/// vectors` floats.
pub(crate) unsafe fn add_products(
    isa: Isa,
    y: &[f32],
    stride: usize,
    x: &[f32],
    offsets: &[usize],
    vectors: usize,
    sum: &mut [f32],
) {
    let micro = micro_of(isa);
    let terms = offsets.len();
    assert_eq!(terms % C, 0, "whole blocks of C terms");
    assert_eq!(sum.len(), R * terms);
    for (block, cols) in offsets.chunks_exact(C).enumerate() {
        let mut acc = [0.0f32; R * C * LANES];
        let cols: [usize; C] = cols.try_into().expect("C offsets");
        // SAFETY: the caller's contract.
        unsafe {
            micro(y, stride, x, cols, vectors, &mut acc);
            add_lanes(isa, &acc, &mut sum[block * C..], terms);
        }
    }
}

/// Adds each of the `R x C` slots of `acc` (16 lanes each), summed by vector adds, to
/// `sum[r terms + j]`. (Summed one float after the other, the 384 dependent additions of a
/// call, about 1150 cycles at 3 each, outlasted the call's own work on AVX2 over F(2x2,
/// 3x3)'s chunk of 480 tiles: 1440 vector multiply-adds, 720 cycles at 2 a cycle.)
///
/// # Safety
/// The CPU has `isa`; `sum` holds `(R - 1) terms + C` floats.
unsafe fn add_lanes(isa: Isa, acc: &[f32; R * C * LANES], sum: &mut [f32], terms: usize) {
    assert!(sum.len() >= (R - 1) * terms + C);
    // SAFETY: the CPU has `isa` (the caller's).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        match isa {
            Isa::Avx512 => add_lanes_avx512(acc, sum, terms),
            Isa::Avx2 => add_lanes_avx2(acc, sum, terms),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, acc, terms);
        unreachable!("no host kernels on this architecture")
    }
}

/// [`add_lanes`] on AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn add_lanes_avx512(acc: &[f32; R * C * LANES], sum: &mut [f32], terms: usize) {
    use std::arch::x86_64::*;
    // SAFETY: 16 floats a slot; AVX-512 is enabled here.
    add_lanes_with(acc, sum, terms, |lanes| unsafe {
        _mm512_reduce_add_ps(_mm512_loadu_ps(lanes.as_ptr()))
    });
}

/// [`add_lanes`] on AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_lanes_avx2(acc: &[f32; R * C * LANES], sum: &mut [f32], terms: usize) {
    use std::arch::x86_64::*;
    // SAFETY: 16 floats a slot; AVX2 is enabled here.
    add_lanes_with(acc, sum, terms, |lanes| unsafe {
        let at = lanes.as_ptr();
        let halves = _mm256_add_ps(_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8)));
        let quad = _mm_add_ps(
            _mm256_castps256_ps128(halves),
            _mm256_extractf128_ps::<1>(halves),
        );
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps::<1>(pair, pair)))
    });
}

/// The loops of [`add_lanes`], inlined into each instruction set's copy with its `slot_sum`.
#[inline(always)]
fn add_lanes_with(
    acc: &[f32; R * C * LANES],
    sum: &mut [f32],
    terms: usize,
    slot_sum: impl Fn(&[f32]) -> f32,
) {
    for (k, lanes) in acc.chunks_exact(LANES).enumerate() {
        sum[(k / C) * terms + k % C] += slot_sum(lanes);
    }
}

/// [`micro`] on AVX2 and FMA, in two passes of 2 output channels (12 of the 16 registers hold
/// 2 x 6 partial sums of 8 lanes). Every pixel is added into the first 8 lanes of its term's
/// 16-lane slot of `acc`: which lane a pixel's product joins does not matter, as the lanes are
/// summed at the end.
///
/// # Safety
/// As [`micro`]'s, with AVX2 and FMA in place of AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn micro_avx2(
    gw: &[f32],
    stride: usize,
    xpad: &[f32],
    cols: [usize; C],
    vectors: usize,
    acc: &mut [f32],
) {
    use std::arch::x86_64::*;
    const HALF: usize = LANES / 2;
    assert_eq!(acc.len(), R * C * LANES);
    let sums = acc.as_mut_ptr();
    let (g, x) = (gw.as_ptr(), xpad.as_ptr());
    for r0 in (0..R).step_by(2) {
        // SAFETY: the slots of rows r0, r0 + 1 lie inside `acc`; the reads stay where
        // `micro`'s do (`vectors * 16` floats of each row and column).
        unsafe {
            let mut reg: [[__m256; C]; 2] = std::array::from_fn(|r| {
                std::array::from_fn(|j| _mm256_loadu_ps(sums.add(((r0 + r) * C + j) * LANES)))
            });
            for q in (0..vectors * LANES).step_by(HALF) {
                let g0 = _mm256_loadu_ps(g.add(r0 * stride + q));
                let g1 = _mm256_loadu_ps(g.add((r0 + 1) * stride + q));
                for (j, &col) in cols.iter().enumerate() {
                    let xv = _mm256_loadu_ps(x.add(col + q));
                    reg[0][j] = _mm256_fmadd_ps(g0, xv, reg[0][j]);
                    reg[1][j] = _mm256_fmadd_ps(g1, xv, reg[1][j]);
                }
            }
            for (r, row) in reg.iter().enumerate() {
                for (j, &a) in row.iter().enumerate() {
                    _mm256_storeu_ps(sums.add(((r0 + r) * C + j) * LANES), a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_values::{direct_weight_grad, values};

    #[test]
    fn matches_direct_summation() {
        if !super::super::conv::available() {
            eprintln!("no AVX-512 or AVX2 here: weight_grad not tested");
            return;
        }
        // Channel and term counts that are not multiples of 4 and 6, kernels 1, 3, 7, pad 0,
        // several chunks (40 x 40 > 1024 pixels), two images.
        let shapes = [
            (3, 5, 9, 53, 7, 3, 2),
            (4, 8, 6, 16, 3, 1, 1),
            (9, 3, 5, 100, 1, 0, 2),
            (2, 17, 7, 49, 3, 0, 1),
            (5, 6, 40, 40, 3, 1, 2),
        ];
        for (i, &(c_in, c_out, h, w, k, pad, n)) in shapes.iter().enumerate() {
            let s = ConvShape {
                c_in,
                c_out,
                h,
                w,
                k,
                pad,
            };
            let [oh, ow] = s.out_size();
            let x = values(n * c_in * h * w, i as u32);
            let g = values(n * c_out * oh * ow, 50 + i as u32);
            let got = weight_grad(&x, &g, &s);
            let want = direct_weight_grad(&x, &g, &s, n);
            assert_eq!(got.len(), want.len());
            for (j, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 1e-3, "{s:?} at {j}: {a} vs {b}");
            }
        }
    }

    /// The AVX2 micro-kernel, on any CPU with AVX2, against scalar sums: it adds to what the
    /// slots hold, and a slot's 16 lanes sum to its channel-term product.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_micro_kernel_adds_the_products() {
        if !super::super::conv::isas_here().contains(&Isa::Avx2) {
            eprintln!("no AVX2 here: the AVX2 micro-kernel not tested");
            return;
        }
        let (stride, vectors) = (80, 5);
        let gw = values(R * stride, 21);
        let xpad = values(300, 22);
        let cols = [0, 3, 17, 100, 101, 220];
        let start = values(R * C * LANES, 23);
        let mut acc = start.clone();
        // SAFETY: AVX2 and FMA were detected; rows of `gw` and columns of `xpad` hold
        // `vectors * 16` floats from where they are read.
        unsafe { micro_avx2(&gw, stride, &xpad, cols, vectors, &mut acc) };
        for r in 0..R {
            for (j, &col) in cols.iter().enumerate() {
                let slot = (r * C + j) * LANES;
                let lanes = |v: &[f32]| v[slot..slot + LANES].iter().sum::<f32>();
                let product: f32 = (0..vectors * LANES)
                    .map(|q| gw[r * stride + q] * xpad[col + q])
                    .sum();
                let (got, want) = (lanes(&acc), lanes(&start) + product);
                assert!((got - want).abs() < 1e-3, "({r}, {j}): {got} vs {want}");
            }
        }
    }

    #[test]
    fn only_the_live_terms_are_computed() {
        if !super::super::conv::available() {
            eprintln!("no AVX-512 or AVX2 here: weight_grad not tested");
            return;
        }
        // 7 x 2 x 2 = 28 terms, every third one live (not a multiple of C).
        let s = ConvShape {
            c_in: 7,
            c_out: 6,
            h: 9,
            w: 21,
            k: 2,
            pad: 0,
        };
        let [oh, ow] = s.out_size();
        let x = values(2 * 7 * 9 * 21, 3);
        let g = values(2 * 6 * oh * ow, 4);
        let live: Vec<bool> = (0..28).map(|t| t % 3 == 1).collect();
        let got = weight_grad_of(&x, &g, &s, Some(&live));
        let want = direct_weight_grad(&x, &g, &s, 2);
        for (j, (a, b)) in got.iter().zip(&want).enumerate() {
            let b = if live[j % 28] { *b } else { 0.0 };
            assert!((a - b).abs() < 1e-3, "at {j}: {a} vs {b}");
        }
    }
}
