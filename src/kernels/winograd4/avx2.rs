//! The AVX2 and FMA code of [`super`]'s F(4x4, 3x3) and F(4x4, 2x2): the input transform 8
//! tiles at a time (the input rows split into their column phases by shuffles, then `B^T d B`
//! on 8-float vectors), shared with the weight gradient ([`input_channels_avx2`]), and the
//! output transform's `A^T m A` stored as whole rows of tiles. The products run on
//! [`micro_upto_avx2`](crate::kernels::micro::micro_upto_avx2).

use super::{stride, Block, Filter, Rows, M, NB};
use crate::kernels::conv::{ConvShape, MR};
use crate::kernels::micro::{mask8, store8, LANES8};
use crate::kernels::winograd::{for_planes, gather_phases, Segment};

/// The transforms of [`Block::run`] on AVX2 and FMA.
impl Block<'_> {
    /// [`Block::transform_input`] on AVX2 ([`input_tiles_avx2`], channel by channel).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn transform_input_avx2<const A: usize, const K: usize, F: Filter<A, K>>(
        &self,
        segment: Segment,
        rows: &mut Rows,
        dst: *mut f32,
    ) {
        let strides = (NB, stride(self.s));
        // SAFETY: AVX2 is enabled here; the caller vouches for the stores.
        unsafe { input_channels_avx2::<A, K, F>(self.x, self.s, segment, rows, dst, strides) };
    }

    /// [`Block::transform_output`] on AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn transform_output_avx2<const A: usize, const K: usize, F: Filter<A, K>>(
        &self,
        (panel, k): (usize, usize),
        segment: Segment,
        m: &[f32],
    ) {
        use std::arch::x86_64::*;
        let s = self.s;
        let [oh, ow] = s.out_size();
        let Segment { ty, tx0, n, at } = segment;
        for r in 0..MR.min(s.c_out - panel * MR) {
            let o = panel * MR + r;
            let bias = _mm256_set1_ps(self.bias[o]);
            for t in (0..n).step_by(LANES8) {
                // SAFETY: as in `transform_output` (7 floats past a slot at most).
                let load = |p: usize| unsafe {
                    let row = p * self.m_stride() + (k * MR + r) * NB;
                    _mm256_loadu_ps(m.as_ptr().add(row + at + t))
                };
                // SAFETY: AVX2 and FMA are enabled here.
                let down: [[__m256; M]; A] = std::array::from_fn(|j| unsafe {
                    F::at8(std::array::from_fn(|i| load(i * A + j)))
                });
                let x = M * (tx0 + t);
                let width = (M * (n - t)).min(ow - x).min(M * LANES8);
                #[allow(
                    clippy::needless_range_loop,
                    reason = "`dy` picks a row of each column"
                )]
                for dy in 0..M {
                    let y = M * ty + dy;
                    if y >= oh {
                        break;
                    }
                    // SAFETY: AVX2 and FMA are enabled here.
                    let values = unsafe { F::at8(std::array::from_fn(|j| down[j][dy])) };
                    let values = values.map(|value| _mm256_add_ps(value, bias));
                    // SAFETY: row y of channel o, columns x..x + width, inside the output; no
                    // other iteration writes this row (see `run_blocks`).
                    unsafe {
                        let dst = self.out.get().add((o * oh + y) * ow + x);
                        store_interleaved8(values, dst, width);
                    }
                }
            }
        }
    }
}

/// `V_p = (B^T d B)_p` on AVX2 of the segment's tiles in every input channel of `x` (planes of
/// `s.h x s.w`, zero padding `s.pad`): channel `c`, position `p`, tile `t` at `dst + c row + p
/// p_stride + t` (masked to the segment), with the channel
/// [`PREFETCH`](crate::kernels::winograd::PREFETCH) ahead asked into the cache. The forward's
/// ([`Block::transform_input_avx2`]) and the weight gradient's
/// ([`crate::kernels::winograd_grad`]).
///
/// # Safety
/// AVX2 and FMA are available; `n <= NB`; `dst + c row + p p_stride + t` is writable for
/// every channel `c`, position `p` and `t < n`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn input_channels_avx2<const A: usize, const K: usize, F: Filter<A, K>>(
    x: &[f32],
    s: &ConvShape,
    segment: Segment,
    rows: &mut Rows,
    dst: *mut f32,
    (row, p_stride): (usize, usize),
) {
    let Segment { ty, tx0, n, .. } = segment;
    let window = (M * ty..M * ty + A, M * tx0..M * (tx0 + n) + K - 1, s.pad);
    for_planes(x, (s.h, s.w), window, |c, plane| {
        let dst = dst.wrapping_add(c * row);
        // SAFETY: AVX2 is enabled here; the caller vouches for the stores.
        unsafe { input_tiles_avx2::<A, K, F>(plane, s, segment, rows, dst, p_stride) };
    });
}

/// [`input_channels_avx2`] of one channel `plane`, 8 tiles at a time: position `p`, tile `t`
/// at `dst + p p_stride + t`.
///
/// # Safety
/// As [`input_channels_avx2`]'s, for this channel.
#[target_feature(enable = "avx2,fma")]
unsafe fn input_tiles_avx2<const A: usize, const K: usize, F: Filter<A, K>>(
    plane: &[f32],
    s: &ConvShape,
    Segment { ty, tx0, n, .. }: Segment,
    rows: &mut Rows,
    dst: *mut f32,
    p_stride: usize,
) {
    use std::arch::x86_64::*;
    for (i, row) in rows.iter_mut().take(A).enumerate() {
        // Padded row 4 ty + i is image row 4 ty + i - pad; padded column 4 tx0 is image
        // column 4 tx0 - pad.
        let y = (M * ty + i) as isize - s.pad as isize;
        let first = (M * tx0) as isize - s.pad as isize;
        // SAFETY: AVX2 is enabled here; `n <= NB`.
        unsafe { gather_phases(plane, (s.h, s.w), y, first, n, row) };
    }
    for t in (0..n).step_by(LANES8) {
        // SAFETY: the loads at `t + 1 + 7 < GATHER` stay inside `rows`; the caller vouches
        // for the stores (position p's lanes `t..t + 8`, masked to the segment).
        unsafe {
            let (whole, mask) = (t + LANES8 <= n, mask8(n - t));
            // B^T d along each row: padded columns 4t + j of tiles t..t+8.
            let across: [[__m256; A]; A] = std::array::from_fn(|i| {
                let load = |j: usize| _mm256_loadu_ps(rows[i][j % M].as_ptr().add(t + j / M));
                F::bt8(std::array::from_fn(load))
            });
            // ... then down each column.
            #[allow(clippy::needless_range_loop, reason = "`j` picks a column")]
            for j in 0..A {
                let column = F::bt8(std::array::from_fn(|i| across[i][j]));
                for (i, value) in column.into_iter().enumerate() {
                    store8(dst.add((i * A + j) * p_stride + t), whole, mask, value);
                }
            }
        }
    }
}

/// [`super::store_interleaved`] on AVX2: column `j` of 8 tiles (`values[j]`) at
/// `dst + 4 t + j`, the first `width` of the 32 floats.
///
/// # Safety
/// `dst..dst + width` is writable.
#[target_feature(enable = "avx2,fma")]
unsafe fn store_interleaved8(values: [std::arch::x86_64::__m256; M], dst: *mut f32, width: usize) {
    use std::arch::x86_64::*;
    let [c0, c1, c2, c3] = values;
    // (c0, c1) and (c2, c3) interleaved per 128-bit half: tiles (0, 1 | 4, 5) and (2, 3 | 6, 7).
    let (lo01, hi01) = (_mm256_unpacklo_ps(c0, c1), _mm256_unpackhi_ps(c0, c1));
    let (lo23, hi23) = (_mm256_unpacklo_ps(c2, c3), _mm256_unpackhi_ps(c2, c3));
    let pd = _mm256_castps_pd;
    let tiles = |a: __m256, b: __m256| {
        (
            _mm256_castpd_ps(_mm256_unpacklo_pd(pd(a), pd(b))),
            _mm256_castpd_ps(_mm256_unpackhi_pd(pd(a), pd(b))),
        )
    };
    // Tiles (0 | 4), (1 | 5), (2 | 6), (3 | 7), four columns each.
    let (t04, t15) = tiles(lo01, lo23);
    let (t26, t37) = tiles(hi01, hi23);
    let quads = [
        _mm256_permute2f128_ps(t04, t15, 0x20),
        _mm256_permute2f128_ps(t26, t37, 0x20),
        _mm256_permute2f128_ps(t04, t15, 0x31),
        _mm256_permute2f128_ps(t26, t37, 0x31),
    ];
    for (q, quad) in quads.into_iter().enumerate() {
        let start = q * LANES8;
        if start >= width {
            break;
        }
        // SAFETY: lanes `start..width` are inside `dst..dst + width`.
        unsafe {
            store8(
                dst.add(start),
                start + LANES8 <= width,
                mask8(width - start),
                quad,
            )
        };
    }
}
