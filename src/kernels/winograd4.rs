//! Stride-1 3x3 and 2x2 convolutions by Winograd's minimal filtering F(4x4, 3x3) and
//! F(4x4, 2x2) (Lavin and Gray, CVPR 2016): 3x3 with zero padding 1 (G's same-size layers),
//! 2x2 with zero padding 0 or 1 (the sub-pixel phases of G's upsampling,
//! [`super::subpixel`], and their input gradient).
//!
//! As in [`super::winograd`] (F(2x2, 3x3)), each tile of output pixels of an output channel is
//! `Y = A^T [ sum_c (G g_c G^T) . (B^T d_c B) ] A`, but a tile is 4x4 outputs from an `a x a`
//! input patch (`a = 4 + k - 1`: 6 for 3x3, 5 for 2x2), so the convolution is `a^2` matrix
//! products (one per position `p` of the transformed tile),
//! `M_p [C_out, tiles] = U_p [C_out, C_in] . V_p [C_in, tiles]`. Per output and input channel
//! that is 36 / 16 = 2.25 multiply-adds for a 3x3 kernel (F(2x2, 3x3): 4, direct: 9) and
//! 25 / 16 = 1.56 for a 2x2 one (direct: 4). The transforms cost less per output too (an
//! `a x a` patch per 16 outputs against a 4x4 one per 4). What it costs is rounding: F(4, 3)'s
//! `B^T` has entries up to 5 and `A^T` up to 8, so the result is a few times further from
//! direct summation than F(2x2, 3x3)'s (checked against direct summation in f64 below, and
//! through G against PyTorch's output in `tests/reference.rs`). cuDNN, oneDNN and NNPACK use
//! this tile size for f32 3x3 convolutions for the same reason.
//!
//! The blocking is F(2x2, 3x3)'s: blocks of 48 consecutive tiles in row-major order (cut into
//! [`Segment`]s at the ends of tile rows), each block's transformed input (`a^2 C_in x 48`
//! floats) kept per thread and read once per group of panels, products on the direct
//! convolution's micro-kernel ([`super::micro`]). The input rows under a row of tiles are
//! gathered into their four column phases (`x mod 4`, zeros in the padding), so both
//! transforms are element-wise over contiguous runs of tiles.
//!
//! The two filters, their matrices and their vector code: [`filter`].

use std::ops::Range;

use rayon::prelude::*;

use super::conv::{self, ConvShape, Isa, OutPtr, LANES, MR};
use super::micro::Tile;
use super::winograd::{lanes, load_clipped, prefetch, segments, Segment, PREFETCH, SCRATCH};

#[cfg(target_arch = "x86_64")]
mod avx2;
mod filter;
#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::input_channels_avx2;
pub(crate) use filter::{Filter, F42, F43};

/// Outputs per tile side.
pub(crate) const M: usize = 4;
/// Most inputs per tile side (F(4, 3)'s 6).
pub(crate) const A_MAX: usize = 6;
/// Tiles per block: the width of one micro-kernel call (3 vectors).
const NB: usize = 3 * LANES;
/// Gathered columns of one phase per block row: `NB + 1` rounded up to whole vectors, plus a
/// vector of slack for the loads at `t + 1`.
pub(crate) const GATHER: usize = NB + 2 * LANES;
// The AVX2 path gathers rows with F(2x2, 3x3)'s `gather_phases`.
const _: () = assert!(GATHER == super::winograd::GATHER);
/// Most panels of output channels whose products are computed together (as in F(2x2, 3x3)).
const GROUP: usize = 8;

/// Whether [`conv2d_into`] can run this convolution: 3x3 with zero padding 1 or 2x2 with
/// zero padding 0 or 1, AVX-512 or AVX2.
pub(crate) fn can_run(s: &ConvShape) -> bool {
    matches!((s.k, s.pad), (3, 1) | (2, 0) | (2, 1)) && conv::available()
}

/// Whether the host convolution should run this convolution here rather than by F(2x2, 3x3)
/// or directly: it [`can_run`] it and it is faster on this shape. With fewer than 16 input
/// channels the transforms weigh more than they save; past 256 input channels a 3x3 block's
/// transformed input (`36 C_in x 48` floats) outgrows L2 twice over (2x2 blocks were measured
/// up to 512: as fast as directly there, 2.3x faster at 256); below [`MIN_TILES`] the
/// weights' transform (`C_in C_out` kernels, about 20 ns each) and the uneven share of blocks
/// between the threads cost more than the products save.
/// (`conv_layers H W C_in C_out k 1 pad images`, `docs/performance.md`.)
pub(crate) fn applies(s: &ConvShape) -> bool {
    let (th, tw) = tiles(s);
    if !conv::wide() {
        return can_run(s) && (16..=512).contains(&s.c_in) && th * tw >= MIN_TILES_AVX2;
    }
    let most = if s.k == 3 { 256 } else { 512 };
    can_run(s) && (16..=most).contains(&s.c_in) && th * tw >= MIN_TILES
}

/// Fewest output tiles of an image for [`applies`] on AVX2, where neither F(2x2, 3x3) nor the
/// direct convolution has AVX-512's wider registers: a 16x16 output, and up to 512 input
/// channels. (`conv_layers H W C C 3 1 1 4`, 2 Zen 4 cores without AVX-512, direct / F(4x4,
/// 3x3), ms: 512 at 32x32 145 / 57, at 16x16 36 / 25, at 8x8 21 / 25; 256 at 32x32 35 / 14; 64
/// at 16x16 0.98 / 0.80; 16 at 256x256, two images, 5.0 / 5.2.)
const MIN_TILES_AVX2: usize = 4 * 4;

/// Fewest output tiles of an image for [`applies`]: a 64x64 output. (256 -> 256 at 64x64:
/// 5.9 ms against F(2x2, 3x3)'s 5.8 for one image, 9.1 against 11.0 for two; at 56x56 5.4
/// against 4.6.)
const MIN_TILES: usize = 16 * 16;

/// Floats from one position's transformed input to the next's in a block: `C_in x NB` and a
/// cache line more, so that the positions of a tile do not all fall in one set of the L1
/// cache (with `C_in` a multiple of 16 they would be a multiple of 4 KiB apart).
fn stride(s: &ConvShape) -> usize {
    s.c_in * NB + LANES
}

/// Tiles down and across the output.
pub(crate) fn tiles(s: &ConvShape) -> (usize, usize) {
    let [oh, ow] = s.out_size();
    (oh.div_ceil(M), ow.div_ceil(M))
}

/// `U_p = G g G^T` for every output/input channel pair, packed in panels of [`MR`] output
/// channels, per position `p`, input-channel-major: `[panel][p][c][r]`, zero rows past
/// `C_out` (the layout of F(2x2, 3x3)'s).
pub(crate) fn transform_weights(weight: &[f32], s: &ConvShape) -> Vec<f32> {
    assert!(can_run(s));
    match s.k {
        3 => pack::<6, 3, F43>(weight, s),
        _ => pack::<5, 2, F42>(weight, s),
    }
}

/// [`transform_weights`] for the filter `F`.
fn pack<const A: usize, const K: usize, F: Filter<A, K>>(
    weight: &[f32],
    s: &ConvShape,
) -> Vec<f32> {
    let panels = s.c_out.div_ceil(MR);
    let mut packed = vec![0.0; panels * A * A * s.c_in * MR];
    packed
        .par_chunks_mut(A * A * s.c_in * MR)
        .enumerate()
        .for_each(|(panel, dst)| {
            let outputs = panel * MR..s.c_out.min(panel * MR + MR);
            // The panel's kernels of one input channel, lane `r` for output channel `r`
            // (zero past `C_out`).
            let mut g = [[[0.0f64; MR]; K]; K];
            for c in 0..s.c_in {
                for (r, o) in outputs.clone().enumerate() {
                    let kernel = &weight[(o * s.c_in + c) * K * K..][..K * K];
                    for (k, &value) in kernel.iter().enumerate() {
                        g[k / K][k % K][r] = value as f64;
                    }
                }
                // Stored as `A^2` runs of 8 (one value at a time, `A^2` planes apart, thrashed
                // the cache: 38 ms for 512 -> 512, 11 ms so, 4 ms with the panel's 8 kernels
                // transformed together).
                let u = transform_panel::<A, K, F>(&g);
                for (p, run) in u.iter().flatten().enumerate() {
                    dst[(p * s.c_in + c) * MR..][..MR].copy_from_slice(run);
                }
            }
        });
    packed
}

/// `G g G^T` of [`MR`] `K x K` kernels at once (`g[y][x][r]`: lane `r` is a kernel), in f64.
fn transform_panel<const A: usize, const K: usize, F: Filter<A, K>>(
    g: &[[[f64; MR]; K]; K],
) -> [[[f32; MR]; A]; A] {
    // G g: A rows of K.
    let mut gg = [[[0.0f64; MR]; K]; A];
    for (row, coefs) in gg.iter_mut().zip(&F::G) {
        for (k, &coef) in coefs.iter().enumerate() {
            for (sum, taps) in row.iter_mut().zip(&g[k]) {
                for (s, &t) in sum.iter_mut().zip(taps) {
                    *s += coef * t;
                }
            }
        }
    }
    // (G g) G^T.
    let mut u = [[[0.0f32; MR]; A]; A];
    for (out, row) in u.iter_mut().zip(&gg) {
        for (value, coefs) in out.iter_mut().zip(&F::G) {
            let mut sum = [0.0f64; MR];
            for (&coef, taps) in coefs.iter().zip(row) {
                for (s, &t) in sum.iter_mut().zip(taps) {
                    *s += coef * t;
                }
            }
            *value = sum.map(|v| v as f32);
        }
    }
    u
}

/// Convolution of one image `x` `[C_in, H, W]` into `out` `[C_out, H_out, W_out]`, on the
/// weights of [`transform_weights`] and the bias padded to whole panels. Check [`can_run`]
/// (and [`applies`] for speed).
pub(crate) fn conv2d_into(x: &[f32], packed: &[f32], bias: &[f32], s: &ConvShape, out: &mut [f32]) {
    assert!(can_run(s));
    let isa = Isa::detected().expect("`can_run` checked it");
    conv2d_on(isa, x, packed, bias, s, out);
}

/// [`conv2d_into`] on the vector code of `isa` (which the CPU must have).
fn conv2d_on(isa: Isa, x: &[f32], packed: &[f32], bias: &[f32], s: &ConvShape, out: &mut [f32]) {
    assert_eq!(x.len(), s.c_in * s.h * s.w);
    let [oh, ow] = s.out_size();
    assert_eq!(out.len(), s.c_out * oh * ow);
    let a = M + s.k - 1;
    let panels = s.c_out.div_ceil(MR);
    assert_eq!(packed.len(), panels * a * a * s.c_in * MR);
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
    match s.k {
        3 => run_blocks::<6, 3, F43>(&block, isa),
        _ => run_blocks::<5, 2, F42>(&block, isa),
    }
}

/// Every block of tiles of the output, shared out to the threads.
fn run_blocks<const A: usize, const K: usize, F: Filter<A, K>>(block: &Block, isa: Isa) {
    let s = block.s;
    let (th, tw) = tiles(s);
    let total = th * tw;
    (0..total.div_ceil(NB)).into_par_iter().for_each(|b| {
        SCRATCH.with_borrow_mut(|(v, m)| {
            // F(2x2, 3x3)'s buffers, grown once per thread and kept; `m` has a vector of slack
            // for the output transform's loads past a block's last tile.
            v.resize(v.len().max(A * A * stride(s)), 0.0);
            m.resize(m.len().max(A * A * (GROUP * MR * NB + LANES) + LANES), 0.0);
            let tiles = b * NB..(b * NB + NB).min(total);
            // SAFETY: the CPU has `isa` (checked by `can_run`); this iteration alone writes the
            // output pixels of its tiles; the micro-kernel reads `NB` floats per term inside
            // `v` and writes `MR` rows of `NB` inside `m`.
            unsafe { block.run::<A, K, F>(isa, tiles, tw, v, m) };
        })
    });
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

/// The `a` padded input rows under a row of tiles (at most [`A_MAX`]), in their four column
/// phases.
pub(crate) type Rows = [[[f32; GATHER]; M]; A_MAX];

impl Block<'_> {
    /// Floats from one position's products to the next's: a group's and a cache line more
    /// (see [`stride`]).
    fn m_stride(&self) -> usize {
        self.group * MR * NB + LANES
    }

    /// The tiles `tiles` (at most [`NB`], row-major, `tw` a row), every output channel, on the
    /// vector code of `isa` (the transforms per segment and the products per position and
    /// panel: one call each, so the loops are shared).
    #[cfg(target_arch = "x86_64")]
    unsafe fn run<const A: usize, const K: usize, F: Filter<A, K>>(
        &self,
        isa: Isa,
        tiles: Range<usize>,
        tw: usize,
        v: &mut [f32],
        m: &mut [f32],
    ) {
        let s = self.s;
        let nb = tiles.len();
        // Lanes past the block's tiles keep earlier values: they only reach outputs that are
        // never stored.
        let mut rows: Rows = [[[0.0; GATHER]; M]; A_MAX];
        for segment in segments(tiles.clone(), tw) {
            let dst = v[segment.at..].as_mut_ptr();
            // SAFETY: the CPU has `isa`; position p's lanes `at..at + n` of every channel are
            // inside `v` (`[p][c][NB]`).
            unsafe {
                match isa {
                    Isa::Avx512 => self.transform_input::<A, K, F>(segment, &mut rows, dst),
                    Isa::Avx2 => self.transform_input_avx2::<A, K, F>(segment, &mut rows, dst),
                }
            };
        }
        let micro = isa.micro_kernel();
        let panels = s.c_out.div_ceil(MR);
        for first in (0..panels).step_by(self.group) {
            let group = self.group.min(panels - first);
            for p in 0..A * A {
                let src = v[p * stride(s)..].as_ptr();
                for k in 0..group {
                    let panel = first + k;
                    let weights = &self.packed[(panel * A * A + p) * s.c_in * MR..];
                    let tile = Tile {
                        panel: &weights[..s.c_in * MR],
                        offsets: self.offsets,
                        bias: &[0.0; MR],
                        dst: m[p * self.m_stride() + k * MR * NB..].as_mut_ptr(),
                        plane: NB,
                        rows: MR,
                    };
                    // SAFETY: every term reads `nb` values at `src + c NB`, inside `v`; the
                    // stores stay in the `MR x NB` slot (p, k) of `m`.
                    unsafe { micro(&tile, src, nb) };
                }
            }
            for k in 0..group {
                for segment in segments(tiles.clone(), tw) {
                    let slot = (first + k, k);
                    // SAFETY: as in `run_blocks`.
                    unsafe {
                        match isa {
                            Isa::Avx512 => self.transform_output::<A, K, F>(slot, segment, m),
                            Isa::Avx2 => self.transform_output_avx2::<A, K, F>(slot, segment, m),
                        }
                    };
                }
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn run<const A: usize, const K: usize, F: Filter<A, K>>(
        &self,
        _: Isa,
        _: Range<usize>,
        _: usize,
        _: &mut [f32],
        _: &mut [f32],
    ) {
        unreachable!("`can_run` checks for AVX-512 or AVX2")
    }

    /// `V_p = (B^T d B)_p` of the segment's tiles in every input channel: channel `c`,
    /// position `p`, tile `t` at `dst + p stride + c NB + t` (masked stores), with the channel
    /// [`PREFETCH`] ahead asked into the cache.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_input<const A: usize, const K: usize, F: Filter<A, K>>(
        &self,
        segment: Segment,
        rows: &mut Rows,
        dst: *mut f32,
    ) {
        use std::arch::x86_64::*;
        let s = self.s;
        let Segment { ty, tx0, n, .. } = segment;
        let plane_len = s.h * s.w;
        let (ys, xs) = (M * ty..M * ty + A, M * tx0..M * (tx0 + n) + K - 1);
        for (c, plane) in self.x.chunks_exact(plane_len).enumerate() {
            if let Some(ahead) = self.x.chunks_exact(plane_len).nth(c + PREFETCH) {
                prefetch(ahead, (s.h, s.w), ys.clone(), xs.clone(), s.pad);
            }
            for (i, row) in rows.iter_mut().take(A).enumerate() {
                // Padded row 4 ty + i is image row 4 ty + i - pad; padded column 4 tx0 is
                // image column 4 tx0 - pad.
                let y = (M * ty + i) as isize - s.pad as isize;
                let first = (M * tx0) as isize - s.pad as isize;
                // SAFETY: AVX-512 is enabled here; `n <= NB`.
                unsafe { gather4(plane, (s.h, s.w), y, first, n, row) };
            }
            let dst = dst.wrapping_add(c * NB);
            for t in (0..n).step_by(LANES) {
                let mask = lanes(n - t);
                // SAFETY: the loads at `t + 1 + 15 < GATHER` stay inside `rows`; the stores
                // are position p's lanes `t..t + 16` (masked to the segment) of channel `c`.
                unsafe {
                    // B^T d along each row: padded columns 4t + j of tiles t..t+16.
                    let across: [[__m512; A]; A] = std::array::from_fn(|i| {
                        let load =
                            |j: usize| _mm512_loadu_ps(rows[i][j % M].as_ptr().add(t + j / M));
                        F::bt(std::array::from_fn(load))
                    });
                    // ... then down each column.
                    #[allow(clippy::needless_range_loop, reason = "`j` picks a column")]
                    for j in 0..A {
                        let column = F::bt(std::array::from_fn(|i| across[i][j]));
                        for (i, value) in column.into_iter().enumerate() {
                            let p = i * A + j;
                            _mm512_mask_storeu_ps(dst.add(p * stride(s) + t), mask, value);
                        }
                    }
                }
            }
        }
    }

    /// `Y = A^T M A` plus the bias for the `MR` output channels of `panel`, whose products are
    /// slot `k` of its group in `m`, for the segment's tiles (lanes `at..at + n`), written to
    /// output rows `4 ty..4 ty + 4` (those inside the output).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_output<const A: usize, const K: usize, F: Filter<A, K>>(
        &self,
        (panel, k): (usize, usize),
        segment: Segment,
        m: &[f32],
    ) {
        use std::arch::x86_64::*;
        let s = self.s;
        let [oh, ow] = s.out_size();
        let Segment { ty, tx0, n, at } = segment;
        let rows = MR.min(s.c_out - panel * MR);
        for r in 0..rows {
            let o = panel * MR + r;
            let bias = _mm512_set1_ps(self.bias[o]);
            for t in (0..n).step_by(LANES) {
                // SAFETY: the loads start in the `MR x NB` slot (p, k) of `m` and end at most
                // 15 floats past it (`m` has that slack after its last slot).
                let load = |p: usize| unsafe {
                    let row = p * self.m_stride() + (k * MR + r) * NB;
                    _mm512_loadu_ps(m.as_ptr().add(row + at + t))
                };
                // A^T M: 4 rows of A, column by column.
                // SAFETY: AVX-512 is enabled here.
                let down: [[__m512; M]; A] = std::array::from_fn(|j| unsafe {
                    F::at(std::array::from_fn(|i| load(i * A + j)))
                });
                let x = M * (tx0 + t);
                // Output columns of these tiles inside the output.
                let width = (M * (n - t)).min(ow - x).min(M * LANES);
                #[allow(
                    clippy::needless_range_loop,
                    reason = "`dy` picks a row of each column"
                )]
                for dy in 0..M {
                    let y = M * ty + dy;
                    if y >= oh {
                        break;
                    }
                    // (A^T M) A: the row's four columns of every tile.
                    // SAFETY: AVX-512 is enabled here.
                    let values = unsafe { F::at(std::array::from_fn(|j| down[j][dy])) };
                    let values = values.map(|value| _mm512_add_ps(value, bias));
                    // SAFETY: row y of channel o, columns x..x + width, inside the output; no
                    // other iteration writes this row (see `run_blocks`).
                    unsafe {
                        let dst = self.out.get().add((o * oh + y) * ow + x);
                        store_interleaved(values, dst, width);
                    }
                }
            }
        }
    }
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
/// AVX-512 is available; `n + 16 <= GATHER`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn gather4(
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
        let index: [i32; LANES] = std::array::from_fn(|lane| (q + M * (lane % 8)) as i32);
        // SAFETY: 16 i32s.
        unsafe { _mm512_loadu_si512(index.as_ptr().cast()) }
    });
    for k in (0..M * (n + 1)).step_by(M * LANES) {
        // SAFETY: AVX-512 is available (this function's contract).
        let v: [__m512; M] = std::array::from_fn(|part| unsafe {
            load_clipped(line, first + (k + part * LANES) as isize)
        });
        for (q, index) in phase.iter().enumerate() {
            let low = _mm512_permutex2var_ps(v[0], *index, v[1]);
            let high = _mm512_permutex2var_ps(v[2], *index, v[3]);
            // SAFETY: `k / 4 <= n`, so `k / 4 + 16 <= n + 16 <= GATHER`.
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

    /// `B^T` and `A^T` of F(4, 3) in the module's doc comment, in f64.
    const BT43: [[f64; 6]; 6] = [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ];
    const AT43: [[f64; 6]; M] = [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ];
    /// `B^T` and `A^T` of F(4, 2) in the module's doc comment, in f64.
    const BT42: [[f64; 5]; 5] = [
        [0.5, -1.0, -0.5, 1.0, 0.0],
        [0.0, -0.5, 0.5, 1.0, 0.0],
        [0.0, 0.5, -1.5, 1.0, 0.0],
        [0.0, -1.0, 0.0, 1.0, 0.0],
        [0.0, 0.5, -1.0, -0.5, 1.0],
    ];
    const AT42: [[f64; 5]; M] = [
        [1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 0.5, 0.0],
        [0.0, 1.0, 1.0, 0.25, 0.0],
        [0.0, 1.0, -1.0, 0.125, 1.0],
    ];

    /// `A^T [(G g G^T) . (B^T d B)] A` of one tile against the `K x K` correlation of `d`, in
    /// f64 (`G g G^T` by `transform_panel`, rounded to f32: about 1e-7 of the products).
    fn one_tile<const A: usize, const K: usize, F: Filter<A, K>>(
        bt: &[[f64; A]; A],
        at: &[[f64; A]; M],
    ) {
        let g = values(K * K, 1);
        let d: Vec<f64> = values(A * A, 2).into_iter().map(f64::from).collect();
        // The kernel in lane 3 of a panel whose other lanes hold other values.
        let mut panel = [[[0.5f64; MR]; K]; K];
        for (k, &value) in g.iter().enumerate() {
            panel[k / K][k % K][3] = value as f64;
        }
        let lanes = transform_panel::<A, K, F>(&panel);
        let u: [[f32; A]; A] = std::array::from_fn(|i| std::array::from_fn(|j| lanes[i][j][3]));
        let v = |i: usize, j: usize| -> f64 {
            (0..A * A).map(|q| bt[i][q / A] * d[q] * bt[j][q % A]).sum()
        };
        for y in 0..M {
            for x in 0..M {
                let got: f64 = (0..A * A)
                    .map(|p| {
                        let (i, j) = (p / A, p % A);
                        at[y][i] * u[i][j] as f64 * v(i, j) * at[x][j]
                    })
                    .sum();
                let want: f64 = (0..K * K)
                    .map(|k| g[k] as f64 * d[(y + k / K) * A + x + k % K])
                    .sum();
                assert!(
                    (got - want).abs() < 1e-5,
                    "F(4, {K}) output ({y}, {x}): {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn one_tile_is_the_correlation() {
        // Checks `G` and `transform_panel`, and the `B^T` and `A^T` of the doc comment (which
        // `bt` and `at` are tested against through `matches_direct_summation`).
        one_tile::<6, 3, F43>(&BT43, &AT43);
        one_tile::<5, 2, F42>(&BT42, &AT42);
    }

    #[test]
    fn matches_direct_summation() {
        let isas = conv::isas_here();
        if isas.is_empty() {
            eprintln!("no AVX-512 or AVX2 here: F(4x4, 3x3) and F(4x4, 2x2) not tested");
            return;
        }
        // Sides that are not multiples of 4 (last tiles partly outside), rows of tiles wider
        // than one block (blocks end and begin mid-row) and narrower, a single tile row,
        // output channels not a multiple of 8, more than one group of panels (72 channels:
        // groups of 2), and both 2x2 paddings (a larger and a smaller output).
        let shapes = [
            (16, 8, 6, 105, 3, 1),
            (17, 13, 7, 9, 3, 1),
            (72, 72, 5, 30, 3, 1),
            (32, 20, 1, 1, 3, 1),
            (16, 9, 23, 14, 3, 1),
            (40, 16, 31, 33, 3, 1),
            (16, 12, 9, 103, 2, 1),
            (72, 24, 14, 13, 2, 1),
            (24, 9, 10, 98, 2, 0),
            (33, 16, 2, 2, 2, 0),
        ];
        for (i, &(c_in, c_out, h, w, k, pad)) in shapes.iter().enumerate() {
            let s = ConvShape {
                c_in,
                c_out,
                h,
                w,
                k,
                pad,
            };
            assert!(can_run(&s));
            let x = values(c_in * h * w, i as u32);
            let wt = values(c_out * c_in * k * k, 50 + i as u32);
            let b = values(c_out, 3);
            let mut bias = vec![0.0; c_out.div_ceil(MR) * MR];
            bias[..c_out].copy_from_slice(&b);
            let [oh, ow] = s.out_size();
            let want = direct_conv(&x, &wt, Some(&b), &s);
            for &isa in &isas {
                let mut got = vec![f32::NAN; c_out * oh * ow];
                conv2d_on(isa, &x, &transform_weights(&wt, &s), &bias, &s, &mut got);
                for (j, (g, e)) in got.iter().zip(&want).enumerate() {
                    assert!((g - e).abs() < 2e-4, "{isa:?} {s:?} at {j}: {g} vs {e}");
                }
            }
        }
    }

    #[test]
    fn takes_the_shapes_it_speeds_up() {
        let s = |c_in, k, pad, side| ConvShape {
            c_in,
            c_out: 8,
            h: side,
            w: side,
            k,
            pad,
        };
        let yes = conv::available();
        assert_eq!(applies(&s(64, 3, 1, 80)), yes);
        assert_eq!(applies(&s(512, 2, 1, 80)), yes);
        assert_eq!(applies(&s(128, 2, 0, 81)), yes);
        assert!(!applies(&s(8, 3, 1, 80)), "few input channels");
        // AVX-512 has F(2x2, 3x3) for these; AVX2 only this.
        assert_eq!(applies(&s(512, 3, 1, 80)), yes && !conv::wide());
        assert_eq!(applies(&s(64, 3, 1, 60)), yes && !conv::wide());
        assert!(!applies(&s(64, 3, 1, 8)), "too few tiles");
        assert_eq!(applies(&s(64, 3, 1, 64)), yes);
        assert!(!applies(&s(64, 3, 0, 80)), "3x3 without padding");
        assert!(!applies(&s(64, 7, 3, 80)), "7x7");
    }
}
