//! Stride-1, 3x3, pad-1 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin and
//! Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016).
//!
//! Each 2x2 block of output pixels ("tile") of an output channel is
//! `Y = A^T [ sum_c (G g_c G^T) . (B^T d_c B) ] A`, where `g_c` is the 3x3 kernel of input
//! channel `c`, `d_c` the 4x4 input patch under the tile, `.` the element-wise product, and
//! (Eq. 8 of the paper above, with its F(2,3) matrices):
//!
//! ```text
//! B^T = [1  0 -1  0]    G = [ 1    0    0 ]    A^T = [1 1  1  0]
//!       [0  1  1  0]        [1/2  1/2  1/2]          [0 1 -1 -1]
//!       [0 -1  1  0]        [1/2 -1/2  1/2]
//!       [0  1  0 -1]        [ 0    0    1 ]
//! ```
//!
//! So the convolution becomes 16 independent matrix products (one per position `p` of the 4x4
//! transformed tile), `M_p [C_out, tiles] = U_p [C_out, C_in] . V_p [C_in, tiles]`, with 16
//! multiply-adds per input channel and tile instead of the direct convolution's 36: 2.25x
//! fewer. The products run on the direct convolution's micro-kernel ([`micro::micro`], 8
//! output channels x 48 tiles in registers). The work is cut into blocks of 48 consecutive
//! tiles in row-major order (a block may end one row of tiles and begin the next, so narrow
//! images fill the micro-kernel's three vectors too), so a block's transformed input
//! (`16 C_in` rows of 48) stays in or near the core's L2 (1.5 MiB at 512 input channels, read
//! once per group of panels: [`Block::group`]) and its products (16 x 8 x 48 per panel of
//! output channels) near L1; blocks are shared out to the rayon threads. The weights are
//! transformed once per batch ([`transform_weights`]). Each block gathers, per row of tiles it
//! touches, the input rows split into even and odd padded columns (zero padding included), so
//! both transforms are element-wise over contiguous runs.
//!
//! Rounding: the transforms add and subtract at most four terms and halve, so the result
//! differs from direct summation by a few ulps of the partial sums (checked against direct
//! summation in f64 below, and through G against PyTorch's output in `tests/reference.rs`).
//!
//! In the paper's G, 64% of the multiply-adds are in these convolutions
//! (`docs/performance.md`).

use std::ops::Range;

use rayon::prelude::*;

use super::conv::{self, ConvShape, Isa, OutPtr, LANES, MR};
use super::micro::{self, Tile};
#[cfg(target_arch = "x86_64")]
use super::micro::{mask8, store8, LANES8};

mod grad;
mod rows;
pub(crate) use grad::weight_grad;
#[cfg(target_arch = "x86_64")]
use grad::{gradient_tiles, gradient_tiles_avx2};
pub(crate) use rows::{for_planes, lanes, prefetch};
#[cfg(target_arch = "x86_64")]
pub(crate) use rows::{gather, gather_phases, load_clipped};

/// Tiles per block along a row: the width of one micro-kernel call (3 vectors).
const NB: usize = 3 * LANES;
/// Positions of the transformed 4x4 tile.
const P: usize = 16;
/// Gathered columns of one parity per block row: `NB + 1` rounded up to whole vectors, plus a
/// vector of slack for the loads at `t + 1`.
pub(crate) const GATHER: usize = NB + 2 * LANES;
/// Most panels of output channels whose products are computed together (64 channels: their
/// products, 16 x 64 x 48 floats, stay in L2); see [`Block::group`].
const GROUP: usize = 8;
/// Channels ahead whose input rows are prefetched.
pub(crate) const PREFETCH: usize = 4;
/// The four padded input rows under a row of tiles, even and odd columns.
type Rows = [[[f32; GATHER]; 2]; 4];

/// Whether [`conv2d_into`] can run this convolution: 3x3, zero padding 1 (same-size output),
/// AVX-512.
fn can_run(s: &ConvShape) -> bool {
    s.k == 3 && s.pad == 1 && conv::wide()
}

/// Whether the host convolution should run this convolution here rather than directly: it
/// [`can_run`] it, and it is faster on this shape. Below 8 input channels the transforms cost
/// more than they save; above 512 (not measured) a block's transformed input (`16 C_in x 48`
/// floats) outgrows L2 twice over; below 64 tiles (16x16 pixels) there is less than a block
/// per thread. (`conv_layers H W C_in C_out 3 1`, direct / Winograd, ms: 512 -> 512 at
/// 64x64 51.7 / 23.1, at 32x32 11.1 / 8.0, at 16x16 4.0 / 3.7; 256 -> 256 at 24x24
/// 1.94 / 1.31, at 16x16 1.01 / 0.87; 128 -> 128 at 24x24 0.92 / 0.40; 64 -> 64 at 16x16
/// 0.09 / 0.11.)
pub(crate) fn applies(s: &ConvShape) -> bool {
    can_run(s) && fits(s)
}

/// The shapes [`applies`] takes, whatever the CPU.
fn fits(s: &ConvShape) -> bool {
    let (th, tw) = tiles(s);
    s.k == 3 && s.pad == 1 && (8..=512).contains(&s.c_in) && th * tw >= 64
}

/// Whether [`weight_grad`] should compute this convolution's weight gradient: the shapes of
/// [`applies`], on AVX-512 or AVX2 (the forward's blocks are AVX-512's alone; the weight
/// gradient's transforms and products have AVX2 versions).
pub(crate) fn weight_grad_applies(s: &ConvShape) -> bool {
    conv::available() && fits(s)
}

/// Tiles down and across.
fn tiles(s: &ConvShape) -> (usize, usize) {
    (s.h.div_ceil(2), s.w.div_ceil(2))
}

/// `U_p = G g G^T` for every output/input channel pair, packed in panels of [`MR`] output
/// channels, per position `p`, input-channel-major: `[panel][p][c][r]`, zero rows past
/// `C_out`. Each thread writes whole panels; an input channel's 16 x 8 values are computed
/// together and stored as 16 runs of 8 (one value at a time, 16 planes apart, thrashed the
/// cache: 4.4 ms for 512 -> 512).
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

/// `G g G^T` of one 3x3 kernel `g` (row-major), row-major 4x4, in f64.
fn transform_kernel(kernel: &[f32]) -> [f32; P] {
    let g_rows = |a: f64, b: f64, c: f64| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    let g: [f64; 9] = std::array::from_fn(|k| kernel[k] as f64);
    // G g: 4 rows of 3, column by column.
    let [c0, c1, c2]: [[f64; 4]; 3] = std::array::from_fn(|j| g_rows(g[j], g[3 + j], g[6 + j]));
    // (G g) G^T: row i of G g through G.
    let u: [[f64; 4]; 4] = std::array::from_fn(|i| g_rows(c0[i], c1[i], c2[i]));
    std::array::from_fn(|p| u[p / 4][p % 4] as f32)
}

/// Convolution of one image `x` `[C_in, H, W]` by F(2x2, 3x3) into `out` `[C_out, H, W]`, on
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
            // Grown once per thread and kept: fresh pages for every block would be cleared by
            // the kernel each time. `m` has a vector of slack for the output transform's
            // loads past a block's last tile.
            v.resize(v.len().max(P * s.c_in * NB), 0.0);
            m.resize(P * GROUP * MR * NB + LANES, 0.0);
            let tiles = b * NB..(b * NB + NB).min(total);
            // SAFETY: AVX-512 was checked by `can_run`; this iteration alone writes the output
            // pixels of its tiles; the micro-kernel reads `NB` floats per term inside `v` and
            // writes `MR` rows of `NB` inside `m`.
            unsafe { block.run(tiles, tw, v, m) };
        })
    });
}

/// Tiles `tx0..tx0 + n` of tile row `ty`, at lanes `at..at + n` of their block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Segment {
    pub(crate) ty: usize,
    pub(crate) tx0: usize,
    pub(crate) n: usize,
    pub(crate) at: usize,
}

/// The tiles `range` (row-major indices, `tw` tiles a row) cut at the ends of tile rows.
pub(crate) fn segments(range: Range<usize>, tw: usize) -> impl Iterator<Item = Segment> {
    let start = range.start;
    let mut next = start;
    std::iter::from_fn(move || {
        (next < range.end).then(|| {
            let (ty, tx0) = (next / tw, next % tw);
            let n = (tw - tx0).min(range.end - next);
            let segment = Segment {
                ty,
                tx0,
                n,
                at: next - start,
            };
            next += n;
            segment
        })
    })
}

thread_local! {
    /// Each thread's transformed input and products of one block (of this module's
    /// convolution and of [`super::winograd4`]'s).
    pub(crate) static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const {
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
    /// Panels per group: one per 32 input channels, up to [`GROUP`]. Each position's
    /// transformed input (`C_in x 48` floats) is read once per group rather than once per
    /// panel, which matters when the block's (`16 C_in x 48`) outgrows L2; with few input
    /// channels small groups keep the products (`16 x 8 x 48` floats per panel) near L1. (`conv_layers`: 256 -> 256 at 64x64
    /// 13.5 ms with one panel at a time, 8.4 ms in groups of 8.)
    group: usize,
}

impl Block<'_> {
    /// The tiles `tiles` (at most [`NB`], row-major, `tw` a row), every output channel.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run(&self, tiles: Range<usize>, tw: usize, v: &mut [f32], m: &mut [f32]) {
        let s = self.s;
        let nb = tiles.len();
        // Lanes past the block's tiles keep earlier values: they only reach outputs that are
        // never stored.
        let mut rows = [[[0.0f32; GATHER]; 2]; 4];
        for segment in segments(tiles.clone(), tw) {
            let dst = v[segment.at..].as_mut_ptr();
            // SAFETY: AVX-512 is enabled here; position p's lanes `at..at + n` of every
            // channel are inside `v` (`[p][c][NB]`).
            unsafe {
                transform_channels(
                    Isa::Avx512,
                    self.x,
                    s,
                    segment,
                    Side::Input,
                    &mut rows,
                    dst,
                    NB,
                    s.c_in * NB,
                )
            };
        }
        let panels = s.c_out.div_ceil(MR);
        for first in (0..panels).step_by(self.group) {
            let group = self.group.min(panels - first);
            for p in 0..P {
                let src = v[p * s.c_in * NB..].as_ptr();
                for k in 0..group {
                    let panel = first + k;
                    let weights = &self.packed[(panel * P + p) * s.c_in * MR..][..s.c_in * MR];
                    let tile = Tile {
                        panel: weights,
                        offsets: self.offsets,
                        bias: &[0.0; MR],
                        dst: m[(p * self.group + k) * MR * NB..].as_mut_ptr(),
                        plane: NB,
                        rows: MR,
                    };
                    // SAFETY: every term reads the vectors of `nb` values at `src + c NB`, inside `v`; the
                    // stores stay in the `MR x NB` slot (p, k) of `m`.
                    unsafe { micro::micro_upto(&tile, src, nb) };
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
        unreachable!("`applies` checks for AVX-512")
    }

    /// `Y = A^T M A` plus the bias for the `MR` output channels of `panel`, whose products are
    /// slot `k` of its group in `m`, for the segment's tiles (lanes `at..at + n`), written to
    /// output rows 2 ty and 2 ty + 1 (those inside the image).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_output(&self, (panel, k): (usize, usize), segment: Segment, m: &[f32]) {
        use std::arch::x86_64::*;
        let s = self.s;
        let Segment { ty, tx0, n, at } = segment;
        // Lanes of (even, odd) interleaved: the first and the second 16 output columns.
        let first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let second =
            _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        let rows = MR.min(s.c_out - panel * MR);
        for r in 0..rows {
            let o = panel * MR + r;
            let bias = _mm512_set1_ps(self.bias[o]);
            for t in (0..n).step_by(LANES) {
                // SAFETY: the loads start in the `MR x NB` slot (p, k) of `m` and end at most
                // 15 floats past it (`m` has that slack after its last slot).
                let mp: [__m512; P] = std::array::from_fn(|p| unsafe {
                    let row = ((p * self.group + k) * MR + r) * NB;
                    _mm512_loadu_ps(m.as_ptr().add(row + at + t))
                });
                // A^T M: the two rows of the 2x4 intermediate.
                let top: [__m512; 4] = std::array::from_fn(|b| {
                    _mm512_add_ps(_mm512_add_ps(mp[b], mp[4 + b]), mp[8 + b])
                });
                let bottom: [__m512; 4] = std::array::from_fn(|b| {
                    _mm512_sub_ps(_mm512_sub_ps(mp[4 + b], mp[8 + b]), mp[12 + b])
                });
                let x = 2 * (tx0 + t);
                // Output columns of these tiles inside the image.
                let width = (2 * (n - t)).min(s.w - x).min(2 * LANES);
                for (dy, z) in [top, bottom].iter().enumerate() {
                    let y = 2 * ty + dy;
                    if y >= s.h {
                        break;
                    }
                    let even = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(z[0], z[1]), z[2]), bias);
                    let odd = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(z[1], z[2]), z[3]), bias);
                    // SAFETY: row y of channel o, columns x..x + width, inside the output; no
                    // other iteration writes this row (see `conv2d_into`).
                    unsafe {
                        let dst = self.out.get().add((o * s.h + y) * s.w + x);
                        let lo = _mm512_permutex2var_ps(even, first, odd);
                        let hi = _mm512_permutex2var_ps(even, second, odd);
                        _mm512_mask_storeu_ps(dst, lanes(width), lo);
                        if width > LANES {
                            _mm512_mask_storeu_ps(dst.add(LANES), lanes(width - LANES), hi);
                        }
                    }
                }
            }
        }
    }
}

/// Which of the two tile transforms a channel loop runs.
#[derive(Clone, Copy)]
enum Side {
    /// `B^T d B` of the input ([`input_tiles`]).
    Input,
    /// `A dY A^T` of the output gradient ([`gradient_tiles`]).
    Gradient,
}

impl Side {
    /// The rows and columns of a plane that [`gather`] reads for `segment`, before shifting
    /// back by the padding, and the padding.
    fn window(self, Segment { ty, tx0, n, .. }: Segment) -> (Range<usize>, Range<usize>, usize) {
        match self {
            Side::Input => (2 * ty..2 * ty + 4, 2 * tx0..2 * (tx0 + n) + 2, 1),
            Side::Gradient => (2 * ty..2 * ty + 2, 2 * tx0..2 * (tx0 + n), 0),
        }
    }
}

/// The transform `side` of the segment's tiles in every channel of `planes` (`[C, s.h, s.w]`):
/// channel `c`, position `p`, tile `t` at `dst + c * row + p * p_stride + t` (masked stores),
/// with the channel [`PREFETCH`] ahead asked into the cache (a channel's rows are a plane
/// apart from the next channel's, too far for the hardware prefetcher).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn transform_channels(
    isa: Isa,
    planes: &[f32],
    s: &ConvShape,
    segment: Segment,
    side: Side,
    rows: &mut Rows,
    dst: *mut f32,
    row: usize,
    p_stride: usize,
) {
    for_planes(planes, (s.h, s.w), side.window(segment), |c, src| {
        let dst = dst.wrapping_add(c * row);
        // SAFETY: the caller vouches for the CPU's `isa` and for the stores.
        unsafe {
            match (isa, side) {
                (Isa::Avx512, Side::Input) => input_tiles(src, s, segment, rows, dst, p_stride),
                (Isa::Avx512, Side::Gradient) => {
                    gradient_tiles(src, s, segment, rows, dst, p_stride)
                }
                (Isa::Avx2, Side::Input) => input_tiles_avx2(src, s, segment, rows, dst, p_stride),
                (Isa::Avx2, Side::Gradient) => {
                    gradient_tiles_avx2(src, s, segment, rows, dst, p_stride)
                }
            }
        }
    });
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn transform_channels(
    _: Isa,
    _: &[f32],
    _: &ConvShape,
    _: Segment,
    _: Side,
    _: &mut Rows,
    _: *mut f32,
    _: usize,
    _: usize,
) {
    unreachable!("`can_run` checks for AVX-512")
}

/// `V_p = (B^T d B)_p` for the segment's tiles of one input channel `plane` (`s.h x s.w`):
/// tile `t` of the segment, position `p`, at `dst + p * p_stride + t` (masked stores: lanes
/// past `n` are not written).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn input_tiles(
    plane: &[f32],
    s: &ConvShape,
    Segment { ty, tx0, n, .. }: Segment,
    rows: &mut Rows,
    dst: *mut f32,
    p_stride: usize,
) {
    use std::arch::x86_64::*;
    for (i, row) in rows.iter_mut().enumerate() {
        // Padded row 2 ty + i is input row 2 ty + i - 1; padded column 2 tx0 is input column
        // 2 tx0 - 1.
        let (y, first) = ((2 * ty + i) as isize - 1, (2 * tx0) as isize - 1);
        // SAFETY: AVX-512 is enabled here.
        unsafe { gather(plane, (s.h, s.w), y, first, n, row) };
    }
    for t in (0..n).step_by(LANES) {
        let mask = lanes(n - t);
        // SAFETY: the loads at `t + 1 + 15 < GATHER` stay inside `rows`; the caller vouches
        // for the stores.
        unsafe {
            // Padded columns 2t, 2t + 1, 2t + 2, 2t + 3 of the tiles t..t + 16, per row.
            let d: [[__m512; 4]; 4] = std::array::from_fn(|i| {
                let [even, odd] = &rows[i];
                [
                    _mm512_loadu_ps(even.as_ptr().add(t)),
                    _mm512_loadu_ps(odd.as_ptr().add(t)),
                    _mm512_loadu_ps(even.as_ptr().add(t + 1)),
                    _mm512_loadu_ps(odd.as_ptr().add(t + 1)),
                ]
            });
            // B^T d, column by column.
            let bt: [[__m512; 4]; 4] = [
                std::array::from_fn(|q| _mm512_sub_ps(d[0][q], d[2][q])),
                std::array::from_fn(|q| _mm512_add_ps(d[1][q], d[2][q])),
                std::array::from_fn(|q| _mm512_sub_ps(d[2][q], d[1][q])),
                std::array::from_fn(|q| _mm512_sub_ps(d[1][q], d[3][q])),
            ];
            // (B^T d) B, row by row.
            for (i, r) in bt.iter().enumerate() {
                let values = [
                    _mm512_sub_ps(r[0], r[2]),
                    _mm512_add_ps(r[1], r[2]),
                    _mm512_sub_ps(r[2], r[1]),
                    _mm512_sub_ps(r[1], r[3]),
                ];
                for (j, value) in values.into_iter().enumerate() {
                    _mm512_mask_storeu_ps(dst.add((i * 4 + j) * p_stride + t), mask, value);
                }
            }
        }
    }
}

/// [`input_tiles`] on AVX2, 8 tiles at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn input_tiles_avx2(
    plane: &[f32],
    s: &ConvShape,
    Segment { ty, tx0, n, .. }: Segment,
    rows: &mut Rows,
    dst: *mut f32,
    p_stride: usize,
) {
    use std::arch::x86_64::*;
    for (i, row) in rows.iter_mut().enumerate() {
        let (y, first) = ((2 * ty + i) as isize - 1, (2 * tx0) as isize - 1);
        // SAFETY: AVX2 is enabled here; `n <= NB`.
        unsafe { gather_phases(plane, (s.h, s.w), y, first, n, row) };
    }
    for t in (0..n).step_by(LANES8) {
        // SAFETY: as in `input_tiles` (loads at `t + 1 + 7 < GATHER`).
        unsafe {
            let (whole, mask) = (t + LANES8 <= n, mask8(n - t));
            let d: [[__m256; 4]; 4] = std::array::from_fn(|i| {
                let [even, odd] = &rows[i];
                [
                    _mm256_loadu_ps(even.as_ptr().add(t)),
                    _mm256_loadu_ps(odd.as_ptr().add(t)),
                    _mm256_loadu_ps(even.as_ptr().add(t + 1)),
                    _mm256_loadu_ps(odd.as_ptr().add(t + 1)),
                ]
            });
            let bt: [[__m256; 4]; 4] = [
                std::array::from_fn(|q| _mm256_sub_ps(d[0][q], d[2][q])),
                std::array::from_fn(|q| _mm256_add_ps(d[1][q], d[2][q])),
                std::array::from_fn(|q| _mm256_sub_ps(d[2][q], d[1][q])),
                std::array::from_fn(|q| _mm256_sub_ps(d[1][q], d[3][q])),
            ];
            for (i, r) in bt.iter().enumerate() {
                let values = [
                    _mm256_sub_ps(r[0], r[2]),
                    _mm256_add_ps(r[1], r[2]),
                    _mm256_sub_ps(r[2], r[1]),
                    _mm256_sub_ps(r[1], r[3]),
                ];
                for (j, value) in values.into_iter().enumerate() {
                    store8(dst.add((i * 4 + j) * p_stride + t), whole, mask, value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_values::{direct_conv, values};

    #[test]
    fn matches_direct_summation() {
        if !conv::wide() {
            eprintln!("no AVX-512 here: the Winograd convolution not tested");
            return;
        }
        // Odd and even sides (a last tile half outside), rows of tiles wider than one block
        // (tw = 53 > 48: blocks end and begin mid-row) and narrower (blocks of several rows,
        // tail masks), output channels not a multiple of 8 and more than one group of panels
        // (72 channels: groups of 2).
        let shapes = [
            (8, 8, 6, 16),
            (9, 13, 7, 105),
            (16, 5, 1, 1),
            (72, 72, 5, 9),
            (12, 17, 11, 3),
            (16, 9, 20, 10),
            (32, 16, 31, 33),
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
            let bias = (i % 2 == 1).then_some(b.as_slice());
            let mut got = vec![f32::NAN; c_out * h * w];
            let mut bias_padded = vec![0.0; c_out.div_ceil(MR) * MR];
            bias_padded[..c_out].copy_from_slice(bias.unwrap_or(&vec![0.0; c_out]));
            conv2d_into(&x, &transform_weights(&wt, &s), &bias_padded, &s, &mut got);
            let want = direct_conv(&x, &wt, bias, &s);
            for (j, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!((g - e).abs() < 1e-4, "{s:?} at {j}: {g} vs {e}");
            }
        }
    }

    #[test]
    fn blocks_are_cut_at_the_ends_of_tile_rows() {
        let cut: Vec<_> = segments(40..88, 32)
            .map(|g| (g.ty, g.tx0, g.n, g.at))
            .collect();
        assert_eq!(cut, [(1, 8, 24, 0), (2, 0, 24, 24)]);
        let cut: Vec<_> = segments(0..11, 5).map(|g| (g.ty, g.n, g.at)).collect();
        assert_eq!(cut, [(0, 5, 0), (1, 5, 5), (2, 1, 10)]);
    }

    #[test]
    fn takes_only_same_size_3x3_convolutions_of_the_shapes_it_speeds_up() {
        let s = |c_in, k, pad, w| ConvShape {
            c_in,
            c_out: 8,
            h: 8,
            w,
            k,
            pad,
        };
        assert!(!applies(&s(4, 3, 1, 64)));
        assert!(!applies(&s(16, 3, 0, 64)));
        assert!(!applies(&s(16, 7, 3, 64)));
        assert!(!applies(&s(1024, 3, 1, 64)));
        assert!(!applies(&s(16, 3, 1, 16)));
        assert_eq!(applies(&s(16, 3, 1, 64)), conv::wide());
        assert_eq!(applies(&s(512, 3, 1, 32)), conv::wide());
    }
}
