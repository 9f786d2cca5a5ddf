//! Weight gradients by Winograd's minimal filtering read backwards: the sums over tiles that
//! F(2x2, 3x3) ([`super::winograd`]) and F(4x4, 3x3) / F(4x4, 2x2) ([`super::winograd4`]) share
//! ([`tile_sums`]), and the latter's weight gradient ([`weight_grad`]).
//!
//! A forward tile is `Y = A^T [ (G g G^T) . (B^T d B) ] A`, bilinear in `U = G g G^T` and
//! `V = B^T d B`, so the gradient of one kernel `g` (output channel `o`, input channel `c`) is
//!
//! ```text
//! dL/dg_oc = G^T [ sum over tiles of (A dY_o A^T) . V_c ] G
//! ```
//!
//! with `dY_o` the tile's output gradient (zero outside the output). Per position `p` of the
//! transformed tile that is a matrix product `S_p [C_out, C_in] = Y_p [C_out, tiles] V_p^T
//! [tiles, C_in]` whose contraction runs over the tiles of all images. F(4x4, 3x3) takes 36
//! multiply-adds per channel pair and tile of 16 output pixels, 2.25 per pixel, where F(2x2,
//! 3x3) takes 4 and the direct weight gradient 9; F(4x4, 2x2) takes 25 / 16 = 1.56 where the
//! direct one takes 4. Its transforms write 2.25 (1.56) values per pixel and channel, against
//! F(2x2, 3x3)'s 4. The price is F(4, k)'s larger entries (up to 8 in `A^T`), so the sums
//! round a few times further from direct summation (checked against it in f64 below).

use rayon::prelude::*;

use super::conv::{ConvShape, Isa, OutPtr, LANES};
#[cfg(target_arch = "x86_64")]
use super::micro::{mask8, store8, LANES8};
use super::wgrad;
#[cfg(target_arch = "x86_64")]
use super::winograd::gather_phases;
use super::winograd::{for_planes, segments, Segment};
use super::winograd4::{self, Filter, Rows, A_MAX, F42, F43, GATHER, M};

/// Tiles per block: one thread's share of a chunk's transforms.
const NB: usize = 3 * LANES;
/// Tiles per chunk: the chunk's transformed inputs and output gradients (`positions x C x
/// 480` floats each) stay in L2/L3 while its products are summed, and each micro-kernel call
/// runs over 30 vectors of tiles before its lanes are summed.
const CHUNK: usize = 10 * NB;

/// Where one segment's transforms go: position `p` of channel `c`, tile `t` at `v + p v_stride
/// + c CHUNK + t` (the input) and `y + p y_stride + o CHUNK + t` (the output gradient).
#[derive(Clone, Copy)]
pub(crate) struct Dst {
    pub(crate) v: *mut f32,
    pub(crate) y: *mut f32,
    pub(crate) v_stride: usize,
    pub(crate) y_stride: usize,
}

impl Dst {
    /// Floats from one channel's row of tiles to the next's.
    pub(crate) const ROW: usize = CHUNK;
}

/// The sums `S_p [C_out, C_in]` over all tiles (`rows_out x rows_in` per position, the channel
/// counts padded to whole micro-kernel blocks; [`tile_sums`]).
pub(crate) struct TileSums {
    sums: Vec<f32>,
    rows_in: usize,
    rows_out: usize,
}

impl TileSums {
    /// `S_p[o, c]` of every position `p`, in order, into `out` (one float per position).
    pub(crate) fn read(&self, o: usize, c: usize, out: &mut [f32]) {
        let per = self.rows_out * self.rows_in;
        assert_eq!(out.len(), self.sums.len() / per, "one float per position");
        for (slot, sums) in out.iter_mut().zip(self.sums.chunks_exact(per)) {
            *slot = sums[o * self.rows_in + c];
        }
    }
}

/// The tiles of `images` images of `th x tw` tiles each, in chunks of [`CHUNK`]: the threads
/// transform a chunk's blocks of [`NB`] tiles (`transform(image, segment, dst)`, the segment's
/// tile row counted within its image, `dst` at its first tile), then share out its
/// `positions` products ([`wgrad::add_products`] on `isa`, summed across lanes at the end of
/// each chunk).
pub(crate) fn tile_sums(
    isa: Isa,
    (images, th, tw): (usize, usize, usize),
    positions: usize,
    (c_in, c_out): (usize, usize),
    transform: impl Fn(usize, Segment, Dst) + Sync,
) -> TileSums {
    let total = images * th * tw;
    let (rows_out, rows_in) = (
        c_out.div_ceil(wgrad::R) * wgrad::R,
        c_in.div_ceil(wgrad::C) * wgrad::C,
    );
    let (v_stride, y_stride) = (rows_in * CHUNK, rows_out * CHUNK);
    // Row `c` of a position's `v` starts `c CHUNK` floats in.
    let row_starts: Vec<usize> = (0..rows_in).map(|c| c * CHUNK).collect();
    // Rows past the channel counts keep what an earlier call left there: they only reach sums
    // that are never read.
    let (mut v_kept, mut y_kept) = (KEPT_V.take(), KEPT_Y.take());
    let v = grown(&mut v_kept, positions * v_stride);
    let y = grown(&mut y_kept, positions * y_stride);
    let mut sums = vec![0.0f32; positions * rows_out * rows_in];
    for start in (0..total).step_by(CHUNK) {
        let len = CHUNK.min(total - start);
        if len < CHUNK {
            // The last vector's lanes past `len` reach the products: zeros in both operands
            // (an earlier call's infinity times zero would be a NaN).
            v.fill(0.0);
            y.fill(0.0);
        }
        let (vp, yp) = (OutPtr(v.as_mut_ptr()), OutPtr(y.as_mut_ptr()));
        (0..len.div_ceil(NB)).into_par_iter().for_each(|b| {
            let first = start + b * NB;
            // Rows of tiles counted across the images: a segment never spans two.
            for segment in segments(first..(first + NB).min(start + len), tw) {
                let (image, ty) = (segment.ty / th, segment.ty % th);
                let at = b * NB + segment.at;
                let dst = Dst {
                    v: vp.get().wrapping_add(at),
                    y: yp.get().wrapping_add(at),
                    v_stride,
                    y_stride,
                };
                transform(image, Segment { ty, ..segment }, dst);
            }
        });
        let vectors = len.div_ceil(LANES);
        sums.par_chunks_mut(rows_out * rows_in)
            .enumerate()
            .for_each(|(p, sum)| {
                let vp = &v[p * v_stride..][..v_stride];
                let yp = &y[p * y_stride..][..y_stride];
                for (ob, block) in sum.chunks_exact_mut(wgrad::R * rows_in).enumerate() {
                    // SAFETY: the CPU has `isa`; the reads stay in this position's rows of
                    // `v` and `y` (`vectors * 16 <= CHUNK`).
                    unsafe {
                        let y_rows = &yp[ob * wgrad::R * CHUNK..];
                        wgrad::add_products(isa, y_rows, CHUNK, vp, &row_starts, vectors, block)
                    };
                }
            });
    }
    KEPT_V.set(v_kept);
    KEPT_Y.set(y_kept);
    TileSums {
        sums,
        rows_in,
        rows_out,
    }
}

thread_local! {
    /// The calling thread's transformed inputs and output gradients of its last [`tile_sums`],
    /// kept for the next (up to ~32 MB each for G's layers): made afresh at every call, their
    /// pages were faulted in and zeroed every time (a sixth of a 128 -> 512 2x2 weight
    /// gradient's time). Taken out while in use, so a call nested in another makes its own.
    static KEPT_V: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    static KEPT_Y: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The first `len` floats of `kept`, grown with zeros to hold them.
fn grown(kept: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if kept.len() < len {
        kept.resize(len, 0.0);
    }
    &mut kept[..len]
}

/// Whether [`weight_grad`] should compute this convolution's weight gradient: a shape
/// [`winograd4`] runs (3x3 with padding 1, 2x2 with padding 0 or 1), on AVX2 (on AVX-512 the
/// weight gradients stay F(2x2, 3x3)'s or direct, on vectors twice as wide: this one was
/// measured, and its vector code tested, on AVX2 only), with enough channels and tiles for the
/// transforms to pay.
pub(crate) fn applies(s: &ConvShape) -> bool {
    let (th, tw) = winograd4::tiles(s);
    Isa::detected() == Some(Isa::Avx2)
        && winograd4::can_run(s)
        && (16..=512).contains(&s.c_in)
        && s.c_out >= 16
        && th * tw >= 64
}

/// `dL/dW` `[C_out, C_in, k, k]` of a convolution that [`winograd4`] runs, summed over the
/// images of `x` `[N, C_in, H, W]` and the output gradient `g` `[N, C_out, H_out, W_out]`,
/// by F(4x4, k) on AVX2. Check [`applies`].
///
/// # Panics
/// If the CPU lacks AVX2 and FMA, or the shape is not one [`winograd4`] runs.
pub(crate) fn weight_grad(x: &[f32], g: &[f32], s: &ConvShape) -> Vec<f32> {
    assert!(winograd4::can_run(s), "F(4x4, k) does not run {s:?}");
    // AVX-512 CPUs have AVX2 and FMA too.
    assert!(
        super::conv::available(),
        "F(4x4, k)'s weight gradient needs AVX2 and FMA"
    );
    match s.k {
        3 => weight_grad_with::<6, 3, F43>(x, g, s),
        _ => weight_grad_with::<5, 2, F42>(x, g, s),
    }
}

/// [`weight_grad`] by the filter `F`.
fn weight_grad_with<const A: usize, const K: usize, F: Filter<A, K>>(
    x: &[f32],
    g: &[f32],
    s: &ConvShape,
) -> Vec<f32> {
    let [oh, ow] = s.out_size();
    let (image_in, image_out) = (s.c_in * s.h * s.w, s.c_out * oh * ow);
    let images = x.len() / image_in.max(1);
    assert_eq!(x.len(), images * image_in);
    assert_eq!(g.len(), images * image_out);
    let (th, tw) = winograd4::tiles(s);
    let sums = tile_sums(
        Isa::Avx2,
        (images, th, tw),
        A * A,
        (s.c_in, s.c_out),
        |image, segment, dst| {
            let xi = &x[image * image_in..][..image_in];
            let gi = &g[image * image_out..][..image_out];
            let mut rows: Rows = [[[0.0; GATHER]; M]; A_MAX];
            // SAFETY: the CPU has AVX2 and FMA (checked above); lanes `at..at + n` of every row
            // of `v` and `y` are this segment's alone, inside them (`tile_sums`).
            unsafe { transform::<A, K, F>(xi, gi, s, segment, &mut rows, dst) };
        },
    );
    let mut dw = vec![0.0f32; s.c_out * s.c_in * K * K];
    dw.par_chunks_mut(s.c_in * K * K)
        .enumerate()
        .for_each(|(o, row)| {
            let mut m = [0.0f32; A_MAX * A_MAX];
            for (c, kernel) in row.chunks_exact_mut(K * K).enumerate() {
                sums.read(o, c, &mut m[..A * A]);
                untransform::<A, K, F>(&m[..A * A], kernel);
            }
        });
    dw
}

/// The segment's `V` of every input channel of `x` and `A dY A^T` of every output-gradient
/// channel of `g`, each with the channel [`PREFETCH`](super::winograd::PREFETCH) ahead asked
/// into the cache ([`for_planes`]).
///
/// # Safety
/// AVX2 and FMA are available; `dst` as [`tile_sums`] gives it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transform<const A: usize, const K: usize, F: Filter<A, K>>(
    x: &[f32],
    g: &[f32],
    s: &ConvShape,
    segment: Segment,
    rows: &mut Rows,
    dst: Dst,
) {
    let strides = (Dst::ROW, dst.v_stride);
    // SAFETY: the caller's.
    unsafe { winograd4::input_channels_avx2::<A, K, F>(x, s, segment, rows, dst.v, strides) };
    let [oh, ow] = s.out_size();
    let Segment { ty, tx0, n, .. } = segment;
    let window = (M * ty..M * ty + M, M * tx0..M * (tx0 + n), 0);
    for_planes(g, (oh, ow), window, |o, src| {
        let out = dst.y.wrapping_add(o * Dst::ROW);
        // SAFETY: the caller's.
        unsafe { gradient_tiles::<A, K, F>(src, [oh, ow], segment, rows, out, dst.y_stride) };
    });
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn transform<const A: usize, const K: usize, F: Filter<A, K>>(
    _: &[f32],
    _: &[f32],
    _: &ConvShape,
    _: Segment,
    _: &mut Rows,
    _: Dst,
) {
    unreachable!("`weight_grad` checks for AVX2")
}

/// `A dY A^T` on AVX2, 8 tiles at a time, of the segment's tiles in one output-gradient
/// channel `plane` (`oh x ow`; `dY` is the tile's 4x4 gradient, zero outside the output):
/// position `p`, tile `t` at `dst + p p_stride + t` (masked to the segment).
///
/// # Safety
/// AVX2 and FMA are available; `n <= NB`; `dst + p p_stride + t` is writable for every
/// position `p` and `t < n`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gradient_tiles<const A: usize, const K: usize, F: Filter<A, K>>(
    plane: &[f32],
    [oh, ow]: [usize; 2],
    Segment { ty, tx0, n, .. }: Segment,
    rows: &mut Rows,
    dst: *mut f32,
    p_stride: usize,
) {
    use std::arch::x86_64::*;
    for (i, row) in rows.iter_mut().take(M).enumerate() {
        let (y, first) = ((M * ty + i) as isize, (M * tx0) as isize);
        // SAFETY: AVX2 is enabled here; `n <= NB`.
        unsafe { gather_phases(plane, (oh, ow), y, first, n, row) };
    }
    for t in (0..n).step_by(LANES8) {
        // SAFETY: the loads at `t + 7 < GATHER` stay inside `rows`; the caller vouches for the
        // stores (position p's lanes `t..t + 8`, masked to the segment).
        unsafe {
            let (whole, mask) = (t + LANES8 <= n, mask8(n - t));
            // A dY: column j (output column 4t + j of tiles t..t+8) down its four rows.
            let down: [[__m256; A]; M] = std::array::from_fn(|j| {
                F::a8(std::array::from_fn(|i| {
                    _mm256_loadu_ps(rows[i][j].as_ptr().add(t))
                }))
            });
            // (A dY) A^T, row by row.
            #[allow(clippy::needless_range_loop, reason = "`i` picks a row of each column")]
            for i in 0..A {
                let row = F::a8(std::array::from_fn(|j| down[j][i]));
                for (j, value) in row.into_iter().enumerate() {
                    store8(dst.add((i * A + j) * p_stride + t), whole, mask, value);
                }
            }
        }
    }
}

/// `G^T S G`: the `K x K` weight gradient `kernel` (row-major) of one channel pair from its
/// `A x A` sums `s` (row-major), in f64: `G^T S` column by column, then its rows through `G`.
fn untransform<const A: usize, const K: usize, F: Filter<A, K>>(s: &[f32], kernel: &mut [f32]) {
    assert_eq!((s.len(), kernel.len()), (A * A, K * K));
    // `gs[k][j]` = (G^T S)[k][j].
    let gs: [[f64; A]; K] = std::array::from_fn(|k| {
        std::array::from_fn(|j| (0..A).map(|i| F::G[i][k] * s[i * A + j] as f64).sum())
    });
    for (kl, out) in kernel.iter_mut().enumerate() {
        let (k, l) = (kl / K, kl % K);
        *out = (0..A).map(|j| gs[k][j] * F::G[j][l]).sum::<f64>() as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_values::{direct_weight_grad, values};

    #[test]
    fn weight_gradient_matches_direct_summation() {
        if !super::super::conv::available() {
            eprintln!("no AVX2 here: F(4x4, k)'s weight gradient not tested");
            return;
        }
        // (k, pad, C_in, C_out, H, W, images): odd sides (tiles half outside the output),
        // channel counts that are not multiples of 4 and 6, chunks that span images (2 x 11 x
        // 23 = 506 tiles > 480 for 3x3), 2x2 kernels with padding 0 (H - 1 outputs) and 1 (H +
        // 1), one partial chunk.
        let shapes = [
            (3, 1, 5, 7, 43, 89, 2),
            (3, 1, 13, 9, 6, 6, 1),
            (2, 0, 7, 10, 17, 30, 2),
            (2, 1, 6, 5, 23, 9, 3),
        ];
        for (i, &(k, pad, c_in, c_out, h, w, n)) in shapes.iter().enumerate() {
            let s = ConvShape {
                c_in,
                c_out,
                h,
                w,
                k,
                pad,
            };
            let [oh, ow] = s.out_size();
            let x = values(n * c_in * h * w, 30 + i as u32);
            let g = values(n * c_out * oh * ow, 40 + i as u32);
            let want = direct_weight_grad(&x, &g, &s, n);
            let got = weight_grad(&x, &g, &s);
            assert_eq!(got.len(), want.len());
            // The sums run over up to 8000 products of values in [-1, 1].
            let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            for (j, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 2e-5 * scale, "{s:?} at {j}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn untransform_is_the_adjoint_of_the_kernel_transform() {
        // <G g G^T, S> = <g, G^T S G> for any g and S.
        fn check<const A: usize, const K: usize, F: Filter<A, K>>() {
            let g = values(K * K, 5);
            let s = values(A * A, 6);
            let mut back = vec![0.0f32; K * K];
            untransform::<A, K, F>(&s, &mut back);
            let mut left = 0.0f64;
            for i in 0..A {
                for j in 0..A {
                    let mut u = 0.0f64;
                    for k in 0..K {
                        for l in 0..K {
                            u += F::G[i][k] * g[k * K + l] as f64 * F::G[j][l];
                        }
                    }
                    left += u * s[i * A + j] as f64;
                }
            }
            let right: f64 = g
                .iter()
                .zip(&back)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum();
            assert!((left - right).abs() < 1e-5, "{left} vs {right}");
        }
        check::<6, 3, F43>();
        check::<5, 2, F42>();
    }
}
