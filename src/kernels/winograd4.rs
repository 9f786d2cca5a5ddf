//! Stride-1, 3x3, pad-1 convolutions by Winograd's minimal filtering F(4x4, 3x3) (Lavin and
//! Gray, CVPR 2016; the Toom-Cook points 0, 1, -1, 2, -2 and infinity).
//!
//! As in [`super::winograd`] (F(2x2, 3x3)), each tile of output pixels of an output channel is
//! `Y = A^T [ sum_c (G g_c G^T) . (B^T d_c B) ] A`, but a tile is 4x4 outputs from a 6x6 input
//! patch, so the convolution is 36 matrix products (one per position `p` of the 6x6
//! transformed tile), `M_p [C_out, tiles] = U_p [C_out, C_in] . V_p [C_in, tiles]`: 36
//! multiply-adds per input channel and 16 outputs, 2.25 per output, against F(2x2, 3x3)'s 4 and
//! the direct convolution's 9. The transforms cost less per output too (a 6x6 patch per 16
//! outputs against a 4x4 one per 4). What it costs is rounding: `B^T` has entries up to 5 and
//! `A^T` up to 8, so the result is a few times further from direct summation than
//! F(2x2, 3x3)'s (checked against direct summation in f64 below, and through G against
//! PyTorch's output in `tests/reference.rs`). cuDNN, oneDNN and NNPACK use this tile size for
//! f32 3x3 convolutions for the same reason.
//!
//! The blocking is F(2x2, 3x3)'s: blocks of 48 consecutive tiles in row-major order (cut into
//! [`Segment`]s at the ends of tile rows), each block's transformed input (`36 C_in x 48`
//! floats) kept per thread and read once per group of panels, products on the direct
//! convolution's micro-kernel ([`conv::micro_upto`]). The input rows under a row of tiles are
//! gathered into their four column phases (`x mod 4`, zeros in the padding), so both
//! transforms are element-wise over contiguous runs of tiles.
//!
//! ```text
//! B^T = [4  0 -5  0  1  0]   G = [ 1/4     0     0 ]   A^T = [1  1  1  1  1  0]
//!       [0 -4 -4  1  1  0]       [-1/6  -1/6  -1/6 ]         [0  1 -1  2 -2  0]
//!       [0  4 -4 -1  1  0]       [-1/6   1/6  -1/6 ]         [0  1  1  4  4  0]
//!       [0 -2 -1  2  1  0]       [1/24  1/12   1/6 ]         [0  1 -1  8 -8  1]
//!       [0  2 -1 -2  1  0]       [1/24 -1/12   1/6 ]
//!       [0  4  0 -5  0  1]       [   0     0     1 ]
//! ```

use std::ops::Range;

use rayon::prelude::*;

use super::conv::{self, ConvShape, OutPtr, Tile, LANES, MR};
use super::winograd::{lanes, load_clipped, prefetch, segments, Segment, PREFETCH};

/// Outputs per tile side.
const M: usize = 4;
/// Inputs per tile side (`M + 2`).
const A: usize = 6;
/// Positions of the transformed 6x6 tile.
const P: usize = A * A;
/// Tiles per block: the width of one micro-kernel call (3 vectors).
const NB: usize = 3 * LANES;
/// Gathered columns of one phase per block row: `NB + 1` rounded up to whole vectors, plus a
/// vector of slack for the loads at `t + 1`.
const GATHER: usize = NB + 2 * LANES;
/// Most panels of output channels whose products are computed together (as in F(2x2, 3x3)).
const GROUP: usize = 8;
/// The six padded input rows under a row of tiles, in their four column phases.
type Rows = [[[f32; GATHER]; M]; A];

/// `G` (6x3), in f64.
const G: [[f64; 3]; A] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// Whether [`conv2d_into`] can run this convolution: 3x3, zero padding 1 (same-size output),
/// AVX-512.
fn can_run(s: &ConvShape) -> bool {
    s.k == 3 && s.pad == 1 && conv::available()
}

/// Whether the host convolution should run this convolution by F(4x4, 3x3) rather than
/// F(2x2, 3x3) or directly: it [`can_run`] it and it is faster on this shape
/// (`conv_layers H W C_in C_out 3 1`, `docs/performance.md`).
pub(crate) fn applies(s: &ConvShape) -> bool {
    let (th, tw) = tiles(s);
    can_run(s) && (16..=256).contains(&s.c_in) && th * tw >= 8 * NB
}

/// Floats from one position's transformed input to the next's in a block: `C_in x NB` and a
/// cache line more, so that the 36 positions of a tile do not all fall in one set of the L1
/// cache (with `C_in` a multiple of 16 they would be a multiple of 4 KiB apart).
fn stride(s: &ConvShape) -> usize {
    s.c_in * NB + LANES
}

/// Tiles down and across.
fn tiles(s: &ConvShape) -> (usize, usize) {
    (s.h.div_ceil(M), s.w.div_ceil(M))
}

/// `U_p = G g G^T` for every output/input channel pair, packed in panels of [`MR`] output
/// channels, per position `p`, input-channel-major: `[panel][p][c][r]`, zero rows past
/// `C_out` (the layout of F(2x2, 3x3)'s).
pub(crate) fn transform_weights(weight: &[f32], s: &ConvShape) -> Vec<f32> {
    let panels = s.c_out.div_ceil(MR);
    let mut packed = vec![0.0; panels * P * s.c_in * MR];
    packed
        .par_chunks_mut(P * s.c_in * MR)
        .enumerate()
        .for_each(|(panel, dst)| {
            let outputs = panel * MR..s.c_out.min(panel * MR + MR);
            for c in 0..s.c_in {
                let mut u = [[0.0f32; MR]; P];
                for (r, o) in outputs.clone().enumerate() {
                    let kernel = &weight[(o * s.c_in + c) * 9..][..9];
                    for (p, value) in transform_kernel(kernel).into_iter().enumerate() {
                        u[p][r] = value;
                    }
                }
                for (p, run) in u.iter().enumerate() {
                    dst[(p * s.c_in + c) * MR..][..MR].copy_from_slice(run);
                }
            }
        });
    packed
}

/// `G g G^T` of one 3x3 kernel `g` (row-major), row-major 6x6, in f64.
fn transform_kernel(kernel: &[f32]) -> [f32; P] {
    let g = |i: usize, j: usize| kernel[i * 3 + j] as f64;
    // G g: 6 rows of 3.
    let gg: [[f64; 3]; A] =
        std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| G[i][k] * g(k, j)).sum()));
    std::array::from_fn(|p| {
        let (i, j) = (p / A, p % A);
        (0..3).map(|k| gg[i][k] * G[j][k]).sum::<f64>() as f32
    })
}

/// Convolution of one image `x` `[C_in, H, W]` by F(4x4, 3x3) into `out` `[C_out, H, W]`, on
/// the weights of [`transform_weights`] and the bias padded to whole panels. Check
/// [`can_run`] (and [`applies`] for speed).
pub(crate) fn conv2d_into(x: &[f32], packed: &[f32], bias: &[f32], s: &ConvShape, out: &mut [f32]) {
    assert!(can_run(s));
    assert_eq!(x.len(), s.c_in * s.h * s.w);
    assert_eq!(out.len(), s.c_out * s.h * s.w);
    let panels = s.c_out.div_ceil(MR);
    assert_eq!(packed.len(), panels * P * s.c_in * MR);
    assert_eq!(bias.len(), panels * MR);
    let offsets: Vec<usize> = (0..s.c_in).map(|c| c * NB).collect();
    let block = Block {
        x,
        packed,
        offsets: &offsets,
        bias,
        out: OutPtr(out.as_mut_ptr()),
        s,
        group: (s.c_in / 32).clamp(1, GROUP),
    };
    let (th, tw) = tiles(s);
    let total = th * tw;
    (0..total.div_ceil(NB)).into_par_iter().for_each(|b| {
        SCRATCH.with_borrow_mut(|(v, m)| {
            // Grown once per thread and kept (see F(2x2, 3x3)); `m` has a vector of slack for
            // the output transform's loads past a block's last tile.
            v.resize(v.len().max(P * stride(s)), 0.0);
            m.resize(m.len().max(P * (GROUP * MR * NB + LANES) + LANES), 0.0);
            let tiles = b * NB..(b * NB + NB).min(total);
            // SAFETY: AVX-512 was checked by `can_run`; this iteration alone writes the output
            // pixels of its tiles; the micro-kernel reads `NB` floats per term inside `v` and
            // writes `MR` rows of `NB` inside `m`.
            unsafe { block.run(tiles, tw, v, m) };
        })
    });
}

thread_local! {
    /// Each thread's transformed input and products of one block.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
}

/// What every block reads, and where it writes.
struct Block<'a> {
    x: &'a [f32],
    packed: &'a [f32],
    offsets: &'a [usize],
    bias: &'a [f32],
    out: OutPtr,
    s: &'a ConvShape,
    /// Panels per group: one per 32 input channels, up to [`GROUP`] (as in F(2x2, 3x3)).
    group: usize,
}

impl Block<'_> {
    /// Floats from one position's products to the next's: a group's and a cache line more
    /// (see [`stride`]).
    fn m_stride(&self) -> usize {
        self.group * MR * NB + LANES
    }

    /// The tiles `tiles` (at most [`NB`], row-major, `tw` a row), every output channel.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run(&self, tiles: Range<usize>, tw: usize, v: &mut [f32], m: &mut [f32]) {
        let s = self.s;
        let nb = tiles.len();
        // Lanes past the block's tiles keep earlier values: they only reach outputs that are
        // never stored.
        let mut rows: Rows = [[[0.0; GATHER]; M]; A];
        for segment in segments(tiles.clone(), tw) {
            // SAFETY: AVX-512 is enabled here; position p's lanes `at..at + n` of every
            // channel are inside `v` (`[p][c][NB]`).
            unsafe { self.transform_input(segment, &mut rows, v[segment.at..].as_mut_ptr()) };
        }
        let panels = s.c_out.div_ceil(MR);
        for first in (0..panels).step_by(self.group) {
            let group = self.group.min(panels - first);
            for p in 0..P {
                let src = v[p * stride(s)..].as_ptr();
                for k in 0..group {
                    let panel = first + k;
                    let weights = &self.packed[(panel * P + p) * s.c_in * MR..][..s.c_in * MR];
                    let tile = Tile {
                        panel: weights,
                        offsets: self.offsets,
                        bias: &[0.0; MR],
                        dst: m[p * self.m_stride() + k * MR * NB..].as_mut_ptr(),
                        plane: NB,
                        rows: MR,
                    };
                    // SAFETY: every term reads `nb` values at `src + c NB`, inside `v`; the
                    // stores stay in the `MR x NB` slot (p, k) of `m`.
                    unsafe { conv::micro_upto(&tile, src, nb) };
                }
            }
            for k in 0..group {
                for segment in segments(tiles.clone(), tw) {
                    // SAFETY: as in `conv2d_into`.
                    unsafe { self.transform_output((first + k, k), segment, m) };
                }
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn run(&self, _: Range<usize>, _: usize, _: &mut [f32], _: &mut [f32]) {
        unreachable!("`can_run` checks for AVX-512")
    }

    /// `V_p = (B^T d B)_p` of the segment's tiles in every input channel: channel `c`,
    /// position `p`, tile `t` at `dst + (p C_in + c) NB + t` (masked stores), with the channel
    /// [`PREFETCH`] ahead asked into the cache.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_input(&self, segment: Segment, rows: &mut Rows, dst: *mut f32) {
        use std::arch::x86_64::*;
        let s = self.s;
        let Segment { ty, tx0, n, .. } = segment;
        let plane_len = s.h * s.w;
        let (ys, xs) = (M * ty..M * ty + A, M * tx0..M * (tx0 + n) + 2);
        for (c, plane) in self.x.chunks_exact(plane_len).enumerate() {
            if let Some(ahead) = self.x.chunks_exact(plane_len).nth(c + PREFETCH) {
                prefetch(ahead, (s.h, s.w), ys.clone(), xs.clone(), 1);
            }
            for (i, row) in rows.iter_mut().enumerate() {
                // Padded row 4 ty + i is image row 4 ty + i - 1; padded column 4 tx0 is image
                // column 4 tx0 - 1.
                let (y, first) = ((M * ty + i) as isize - 1, (M * tx0) as isize - 1);
                // SAFETY: AVX-512 is enabled here.
                unsafe { gather4(plane, (s.h, s.w), y, first, n, row) };
            }
            let dst = dst.wrapping_add(c * NB);
            for t in (0..n).step_by(LANES) {
                let mask = lanes(n - t);
                // SAFETY: the loads at `t + 1 + 15 < GATHER` stay inside `rows`; the stores
                // are position p's lanes `t..t + 16` (masked to the segment) of channel `c`.
                unsafe {
                    // B^T d along each row: padded columns 4t + j, j = 0..5, of tiles t..t+16.
                    let across: [[__m512; A]; A] = std::array::from_fn(|i| {
                        let load =
                            |j: usize| _mm512_loadu_ps(rows[i][j % M].as_ptr().add(t + j / M));
                        bt_d(std::array::from_fn(load))
                    });
                    // ... then down each column.
                    #[allow(clippy::needless_range_loop, reason = "`j` picks a column")]
                    for j in 0..A {
                        let column = bt_d(std::array::from_fn(|i| across[i][j]));
                        for (i, value) in column.into_iter().enumerate() {
                            let p = i * A + j;
                            _mm512_mask_storeu_ps(dst.add(p * stride(s) + t), mask, value);
                        }
                    }
                }
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn transform_input(&self, _: Segment, _: &mut Rows, _: *mut f32) {
        unreachable!("`can_run` checks for AVX-512")
    }

    /// `Y = A^T M A` plus the bias for the `MR` output channels of `panel`, whose products are
    /// slot `k` of its group in `m`, for the segment's tiles (lanes `at..at + n`), written to
    /// output rows `4 ty..4 ty + 4` (those inside the image).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_output(&self, (panel, k): (usize, usize), segment: Segment, m: &[f32]) {
        use std::arch::x86_64::*;
        let s = self.s;
        let Segment { ty, tx0, n, at } = segment;
        let rows = MR.min(s.c_out - panel * MR);
        for r in 0..rows {
            let o = panel * MR + r;
            let bias = _mm512_set1_ps(self.bias[o]);
            for t in (0..n).step_by(LANES) {
                // SAFETY: the loads start in the `MR x NB` slot (p, k) of `m` and end at most
                // 15 floats past it (`m` has that slack after its last slot).
                let mp: [__m512; P] = std::array::from_fn(|p| unsafe {
                    let row = p * self.m_stride() + (k * MR + r) * NB;
                    _mm512_loadu_ps(m.as_ptr().add(row + at + t))
                });
                // A^T M: 4 rows of 6, column by column.
                let down: [[__m512; M]; A] =
                    std::array::from_fn(|j| at_m(std::array::from_fn(|i| mp[i * A + j])));
                let x = M * (tx0 + t);
                // Output columns of these tiles inside the image.
                let width = (M * (n - t)).min(s.w - x).min(M * LANES);
                #[allow(
                    clippy::needless_range_loop,
                    reason = "`dy` picks a row of each column"
                )]
                for dy in 0..M {
                    let y = M * ty + dy;
                    if y >= s.h {
                        break;
                    }
                    // (A^T M) A: the row's four columns of every tile.
                    let values = at_m(std::array::from_fn(|j| down[j][dy]));
                    let values = values.map(|value| _mm512_add_ps(value, bias));
                    // SAFETY: row y of channel o, columns x..x + width, inside the output; no
                    // other iteration writes this row (see `conv2d_into`).
                    unsafe {
                        let dst = self.out.get().add((o * s.h + y) * s.w + x);
                        store_interleaved(values, dst, width);
                    }
                }
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn transform_output(&self, _: (usize, usize), _: Segment, _: &[f32]) {
        unreachable!("`can_run` checks for AVX-512")
    }
}

/// `B^T d` of six vectors of tiles' values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn bt_d(d: [std::arch::x86_64::__m512; A]) -> [std::arch::x86_64::__m512; A] {
    use std::arch::x86_64::*;
    let (two, four, five) = (
        _mm512_set1_ps(2.0),
        _mm512_set1_ps(4.0),
        _mm512_set1_ps(5.0),
    );
    let d4_d2 = _mm512_sub_ps(d[4], d[2]);
    let d1_d3 = _mm512_sub_ps(d[1], d[3]);
    [
        // 4 d0 - 5 d2 + d4
        _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4])),
        // -4 (d1 + d2) + d3 + d4
        _mm512_fnmadd_ps(four, _mm512_add_ps(d[1], d[2]), _mm512_add_ps(d[3], d[4])),
        // 4 (d1 - d2) - d3 + d4
        _mm512_fmadd_ps(four, _mm512_sub_ps(d[1], d[2]), _mm512_sub_ps(d[4], d[3])),
        // -2 (d1 - d3) - d2 + d4
        _mm512_fnmadd_ps(two, d1_d3, d4_d2),
        // 2 (d1 - d3) - d2 + d4
        _mm512_fmadd_ps(two, d1_d3, d4_d2),
        // 4 d1 - 5 d3 + d5
        _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5])),
    ]
}

/// `A^T m` of six vectors of tiles' values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn at_m(m: [std::arch::x86_64::__m512; A]) -> [std::arch::x86_64::__m512; M] {
    use std::arch::x86_64::*;
    let (two, four, eight) = (
        _mm512_set1_ps(2.0),
        _mm512_set1_ps(4.0),
        _mm512_set1_ps(8.0),
    );
    let (sum12, diff12) = (_mm512_add_ps(m[1], m[2]), _mm512_sub_ps(m[1], m[2]));
    let (sum34, diff34) = (_mm512_add_ps(m[3], m[4]), _mm512_sub_ps(m[3], m[4]));
    [
        _mm512_add_ps(_mm512_add_ps(m[0], sum12), sum34),
        _mm512_fmadd_ps(two, diff34, diff12),
        _mm512_fmadd_ps(four, sum34, sum12),
        _mm512_add_ps(_mm512_fmadd_ps(eight, diff34, diff12), m[5]),
    ]
}

/// Stores column `j` of 16 tiles (`values[j]`, lane `t` for tile `t`) at `dst + 4 t + j`, the
/// first `width` of the 64 floats.
///
/// # Safety
/// `dst..dst + width` is writable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn store_interleaved(values: [std::arch::x86_64::__m512; M], dst: *mut f32, width: usize) {
    use std::arch::x86_64::*;
    // Pairs (j0, j1) and (j2, j3) of tiles 0-7 and 8-15, then the pairs of pairs.
    let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let pairs = |a, b| {
        [
            _mm512_castps_pd(_mm512_permutex2var_ps(a, low, b)),
            _mm512_castps_pd(_mm512_permutex2var_ps(a, high, b)),
        ]
    };
    let (p01, p23) = (pairs(values[0], values[1]), pairs(values[2], values[3]));
    let first = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
    let second = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    let quads = [
        _mm512_permutex2var_pd(p01[0], first, p23[0]),
        _mm512_permutex2var_pd(p01[0], second, p23[0]),
        _mm512_permutex2var_pd(p01[1], first, p23[1]),
        _mm512_permutex2var_pd(p01[1], second, p23[1]),
    ];
    for (q, quad) in quads.into_iter().enumerate() {
        let start = q * LANES;
        if start >= width {
            break;
        }
        // SAFETY: lanes `start..width` are inside `dst..dst + width`.
        unsafe {
            _mm512_mask_storeu_ps(dst.add(start), lanes(width - start), _mm512_castpd_ps(quad))
        };
    }
}

/// Row `y` of `plane` (`h x w`; zeros when `y` is outside it), column `first + 4 j + q` into
/// `out[q][j]` for `j` in `0..=n` (zeros outside the row).
///
/// # Safety
/// AVX-512 is available; `n <= NB`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather4(
    plane: &[f32],
    (h, w): (usize, usize),
    y: isize,
    first: isize,
    n: usize,
    out: &mut [[f32; GATHER]; M],
) {
    use std::arch::x86_64::*;
    let Some(y) = usize::try_from(y).ok().filter(|&y| y < h) else {
        *out = [[0.0; GATHER]; M];
        return;
    };
    let line = &plane[y * w..][..w];
    // Phase q of 32 values in lanes 0-7 (from the first pair of vectors) and 8-15 (from the
    // second pair): q + 4 (lane mod 8).
    let phase: [__m512i; M] = std::array::from_fn(|q| {
        let q = q as i32;
        _mm512_setr_epi32(
            q,
            q + 4,
            q + 8,
            q + 12,
            q + 16,
            q + 20,
            q + 24,
            q + 28,
            q,
            q + 4,
            q + 8,
            q + 12,
            q + 16,
            q + 20,
            q + 24,
            q + 28,
        )
    });
    for k in (0..M * (n + 1)).step_by(M * LANES) {
        // SAFETY: AVX-512 is available (this function's contract).
        let v: [__m512; M] = std::array::from_fn(|part| unsafe {
            load_clipped(line, first + (k + part * LANES) as isize)
        });
        for (q, index) in phase.iter().enumerate() {
            let low = _mm512_permutex2var_ps(v[0], *index, v[1]);
            let high = _mm512_permutex2var_ps(v[2], *index, v[3]);
            // SAFETY: `k / 4 + 16 <= n + 1 + 15 < GATHER`.
            unsafe {
                _mm512_storeu_ps(
                    out[q].as_mut_ptr().add(k / M),
                    _mm512_mask_blend_ps(0xFF00, low, high),
                )
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_values::{direct_conv, values};

    /// `B^T` of the module's doc comment, in f64.
    const BT: [[f64; A]; A] = [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ];
    /// `A^T` of the module's doc comment, in f64.
    const AT: [[f64; A]; M] = [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ];

    #[test]
    fn one_tile_is_the_3x3_correlation() {
        // A^T [(G g G^T) . (B^T d B)] A = (g * d)[0..4, 0..4] for any g and d; checks the
        // matrices (`G` and `transform_kernel` here, `B^T` and `A^T` of the doc comment, which
        // `bt_d` and `at_m` are tested against through `matches_direct_summation`).
        let g = values(9, 1);
        let d: Vec<f64> = values(P, 2).into_iter().map(f64::from).collect();
        let u = transform_kernel(&g);
        let v: Vec<f64> = (0..P)
            .map(|p| {
                let (i, j) = (p / A, p % A);
                (0..P).map(|q| BT[i][q / A] * d[q] * BT[j][q % A]).sum()
            })
            .collect();
        for y in 0..M {
            for x in 0..M {
                let got: f64 = (0..P)
                    .map(|p| AT[y][p / A] * u[p] as f64 * v[p] * AT[x][p % A])
                    .sum();
                let want: f64 = (0..9)
                    .map(|k| g[k] as f64 * d[(y + k / 3) * A + x + k % 3])
                    .sum();
                // `u` is rounded to f32: about 1e-7 of the products.
                assert!(
                    (got - want).abs() < 1e-5,
                    "output ({y}, {x}): {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn matches_direct_summation() {
        if !conv::available() {
            eprintln!("no AVX-512 here: F(4x4, 3x3) not tested");
            return;
        }
        // Sides that are not multiples of 4 (last tiles partly outside), rows of tiles wider
        // than one block (tw = 27 < 48 < 2 tw: blocks end and begin mid-row) and narrower,
        // a single tile row, output channels not a multiple of 8, and more than one group of
        // panels (72 channels: groups of 2).
        let shapes = [
            (16, 8, 6, 105),
            (17, 13, 7, 9),
            (72, 72, 5, 30),
            (32, 20, 1, 1),
            (16, 9, 23, 14),
            (40, 16, 31, 33),
        ];
        for (i, &(c_in, c_out, h, w)) in shapes.iter().enumerate() {
            let s = ConvShape {
                c_in,
                c_out,
                h,
                w,
                k: 3,
                pad: 1,
            };
            assert!(can_run(&s));
            let x = values(c_in * h * w, i as u32);
            let wt = values(c_out * c_in * 9, 50 + i as u32);
            let b = values(c_out, 3);
            let mut bias = vec![0.0; c_out.div_ceil(MR) * MR];
            bias[..c_out].copy_from_slice(&b);
            let mut got = vec![f32::NAN; c_out * h * w];
            conv2d_into(&x, &transform_weights(&wt, &s), &bias, &s, &mut got);
            let want = direct_conv(&x, &wt, Some(&b), &s);
            for (j, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!((g - e).abs() < 2e-4, "{s:?} at {j}: {g} vs {e}");
            }
        }
    }
}
