//! Stride-1, 7x7, pad-3 convolutions by Winograd's minimal filtering along rows, F(4, 7)
//! (Lavin and Gray, CVPR 2016; Toom-Cook points 0, ±1, ±2, ±1/2, ±3/2 and infinity).
//!
//! A 7x7 convolution is the sum over its kernel rows `ky` of 1x7 convolutions of input row
//! `y + ky`. Along a row, four adjacent outputs of a 1x7 kernel `g` are
//! `A^T [ (G g) . (B^T d) ]` with `d` the 10 input values under them: 10 multiplications
//! instead of 28. So output row `y` is, per position `p` of the 10 transformed values,
//! `M_p [C_out, tiles] = sum over (ky, c) of U_p[o, ky, c] V_p[c, y + ky, tiles]`, with
//! `U_p = (G g_{o, c, ky})_p` and `V_p` the transformed input rows: 17.5 multiply-adds per
//! input channel and output pixel against the direct convolution's 49 (F(2, 7), used before:
//! 28). The input transform (100 multiply-adds per input channel, row and tile of 4) is shared
//! by the 7 output rows that read the row and all output channels; the products run on the
//! direct convolution's micro-kernel ([`super::micro`]). G's 7x7 tail (64 -> 32 at full size)
//! is the largest layer of its forward on the CPU (on AVX2, 95-115 ms direct, 45-49 ms by
//! F(4, 7) at 256x256 on 2 Zen 4 cores).
//!
//! Work is cut into bands of [`BAND`] output rows x blocks of 48 tiles (192 pixels); a task
//! transforms its `BAND + 6` input rows for its block (the channel [`winograd::PREFETCH`]
//! ahead asked into the cache: without it the gathers waited on memory for a third of the
//! time), multiplies one position at a time (that position's rows, `14 x C_in x 48` values,
//! stay in L2), and transforms back.
//!
//! The matrices come from the points by the Toom-Cook construction, in f64 at run time
//! ([`Matrices`]): `B^T` and `A^T` are exact in binary (their entries are dyadic: the points
//! are), `G` is rounded once. Rounding: with entries up to 27/8 in `A^T` and 273/16 in
//! `B^T`, the result is further from direct summation than F(2, 7)'s was
//! (`scripts/winograd_points.py`, an f32 simulation of 448-term sums: largest error 2.5e-5
//! against 2.9e-6, for outputs of about 1; of the 9-point sets with 0, ±1, ±2, ±1/2 the one
//! with ±3/2 gave the smallest, ±3 1.8x and ±1/4 2.9x more). Checked against direct
//! summation in f64 below, and through G against PyTorch's output in `tests/reference.rs`.

use rayon::prelude::*;

use super::conv::{self, ConvShape, Isa, OutPtr, LANES, MR};
use super::micro::Tile;
use super::winograd;
use super::winograd4::{gather4, GATHER};

/// The four column phases of one input row, as [`gather4`] fills them.
pub(super) type Columns = [[f32; GATHER]; M];

/// Outputs per tile.
pub(super) const M: usize = 4;
/// Kernel side.
pub(super) const K: usize = 7;
/// Transformed values per tile (`M + K - 1`).
pub(super) const ALPHA: usize = M + K - 1;
/// The finite Toom-Cook points (the last of the `ALPHA` is infinity).
const POINTS: [f64; ALPHA - 1] = [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 1.5, -1.5];
/// Tiles per block: the width of one micro-kernel call (3 vectors).
pub(super) const TB: usize = 3 * LANES;
/// Output rows per task.
const BAND: usize = 8;
/// Input rows a full band reads (its rows and the kernel's 6 more).
const ROWS: usize = BAND + K - 1;
/// Floats from one position's transformed rows to the next's: a cache line more than their
/// `ROWS x C_in x TB`, which is a multiple of 4 KiB (all positions would fall in one L1 set).
fn v_stride(c_in: usize) -> usize {
    ROWS * c_in * TB + LANES
}

/// `B^T` (`ALPHA x ALPHA`), `A^T` (`M x ALPHA`) and `G` (`ALPHA x K`) of F(4, 7) on
/// [`POINTS`]: row `p` of `B^T` is the coefficients of `prod over l != p of (x - a_l)` (the
/// product over all finite points for infinity), `A^T[i][p] = a_p^i` (1 in the last row for
/// infinity), `G[p][k] = a_p^k / prod over l != p of (a_p - a_l)` (the last tap for
/// infinity).
pub(super) struct Matrices {
    pub(super) bt: [[f32; ALPHA]; ALPHA],
    pub(super) at: [[f32; ALPHA]; M],
    pub(super) g: [[f64; K]; ALPHA],
}

impl Matrices {
    pub(super) fn new() -> Self {
        let finite = ALPHA - 1;
        let poly = |skip: Option<usize>| {
            let mut c = [0.0f64; ALPHA];
            c[0] = 1.0;
            for (_, &a) in POINTS.iter().enumerate().filter(|&(l, _)| Some(l) != skip) {
                // c *= (x - a), highest degree first so each coefficient is read before it
                // is overwritten.
                for d in (0..ALPHA).rev() {
                    c[d] = if d > 0 { c[d - 1] } else { 0.0 } - a * c[d];
                }
            }
            c
        };
        let bt = std::array::from_fn(|p| poly((p < finite).then_some(p)).map(|v| v as f32));
        let at = std::array::from_fn(|i| {
            std::array::from_fn(|p| match POINTS.get(p) {
                Some(a) => a.powi(i as i32) as f32,
                None => f32::from(u8::from(i == M - 1)),
            })
        });
        let g = std::array::from_fn(|p| match POINTS.get(p) {
            Some(&a) => {
                let f: f64 = (0..finite)
                    .filter(|&l| l != p)
                    .map(|l| a - POINTS[l])
                    .product();
                std::array::from_fn(|k| a.powi(k as i32) / f)
            }
            None => std::array::from_fn(|k| if k == K - 1 { 1.0 } else { 0.0 }),
        });
        Self { bt, at, g }
    }
}

/// Whether [`conv2d_into`] should run this convolution: 7x7 with zero padding 3 (same-size
/// output), AVX-512 or AVX2, and at least 16 input and output channels (with fewer the
/// transforms weigh more than they save: G's 3 -> 32 head stays direct).
pub(crate) fn applies(s: &ConvShape) -> bool {
    s.k == K && s.pad == 3 && conv::available() && s.c_in >= 16 && s.c_out >= 16 && s.w >= 16
}

/// `U_p = G g` of every kernel row, packed per panel of [`MR`] output channels and position
/// `p`, term-major with terms `(ky, c)`: `[panel][p][ky][c][r]`, zero rows past `C_out`.
pub(crate) fn transform_weights(weight: &[f32], s: &ConvShape) -> Vec<f32> {
    let g = Matrices::new().g;
    let terms = K * s.c_in;
    let panels = s.c_out.div_ceil(MR);
    let mut packed = vec![0.0; panels * ALPHA * terms * MR];
    packed
        .par_chunks_mut(ALPHA * terms * MR)
        .enumerate()
        .for_each(|(panel, dst)| {
            for o in panel * MR..s.c_out.min(panel * MR + MR) {
                for c in 0..s.c_in {
                    for ky in 0..K {
                        let taps = &weight[((o * s.c_in + c) * K + ky) * K..][..K];
                        for (p, row) in g.iter().enumerate() {
                            let u: f64 = row.iter().zip(taps).map(|(a, &w)| a * w as f64).sum();
                            dst[(p * terms + ky * s.c_in + c) * MR + o % MR] = u as f32;
                        }
                    }
                }
            }
        });
    packed
}

/// The convolution of one image `x` `[C_in, H, W]` into `out` `[C_out, H, W]`, with the
/// weights from [`transform_weights`] and `bias` padded to whole panels.
pub(crate) fn conv2d_into(x: &[f32], packed: &[f32], bias: &[f32], s: &ConvShape, out: &mut [f32]) {
    let isa = Isa::detected().expect("`applies` checked it");
    conv2d_on(isa, x, packed, bias, s, out);
}

/// [`conv2d_into`] on the vector code of `isa` (which the CPU must have).
fn conv2d_on(isa: Isa, x: &[f32], packed: &[f32], bias: &[f32], s: &ConvShape, out: &mut [f32]) {
    let blocks = s.w.div_ceil(M).div_ceil(TB);
    let bands = s.h.div_ceil(BAND);
    let ptr = OutPtr(out.as_mut_ptr());
    let panels = s.c_out.div_ceil(MR);
    let matrices = Matrices::new();
    // Term `(ky, c)` (the `ky * C_in + c`-th) starts that many runs of 48 into `V`.
    let offsets: Vec<usize> = (0..K * s.c_in).map(|t| t * TB).collect();
    (0..bands * blocks).into_par_iter().for_each_init(
        || Scratch {
            v: vec![0.0; ALPHA * v_stride(s.c_in)],
            m: vec![0.0; BAND * ALPHA * panels * MR * TB],
        },
        |scratch, task| {
            let task = Task {
                y0: task / blocks * BAND,
                t0: task % blocks * TB,
                s,
                matrices: &matrices,
            };
            // SAFETY: the CPU has `isa` (the caller's); this task alone writes its band's
            // rows in its block's columns.
            unsafe {
                task.transform_input(isa, x, &mut scratch.v);
                task.products(isa, packed, &offsets, scratch);
                task.transform_output(isa, &scratch.m, bias, ptr);
            }
        },
    );
}

/// `V_p = (B^T d)_p` of the [`TB`] tiles whose padded input row's four column phases are
/// `columns` (`d_j[t] = columns[j % 4][t + j / 4]`), handed to `put` position by position
/// (inlined into the caller, whose target features vectorise it).
#[inline(always)]
pub(super) fn input_sums(
    bt: &[[f32; ALPHA]; ALPHA],
    columns: &Columns,
    mut put: impl FnMut(usize, &[f32; TB]),
) {
    for (p, row) in bt.iter().enumerate() {
        let mut sums = [0.0f32; TB];
        for (j, &b) in row.iter().enumerate() {
            if b != 0.0 {
                let src = &columns[j % M][j / M..][..TB];
                for (d, &value) in sums.iter_mut().zip(src) {
                    *d += b * value;
                }
            }
        }
        put(p, &sums);
    }
}

/// A task's transformed input and products.
struct Scratch {
    /// `V[p][row][c][t]` for the band's input rows (positions [`v_stride`] apart).
    v: Vec<f32>,
    /// `M[y][p][o][t]` for the band's output rows (channels padded to whole panels).
    m: Vec<f32>,
}

/// One band of output rows from `y0` and one block of tiles from `t0`.
struct Task<'a> {
    y0: usize,
    t0: usize,
    s: &'a ConvShape,
    matrices: &'a Matrices,
}

impl Task<'_> {
    /// Output rows of this band.
    fn rows(&self) -> usize {
        BAND.min(self.s.h - self.y0)
    }

    /// Tiles of this block.
    fn tiles(&self) -> usize {
        TB.min(self.s.w.div_ceil(M) - self.t0)
    }

    /// `V_p` of the band's `rows + 6` padded input rows, every channel: the four column
    /// phases of the block's tiles gathered ([`gather4`], [`winograd::gather_phases`]; zeros
    /// in the padding), then the 10 sums.
    ///
    /// # Safety
    /// The CPU has `isa`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn transform_input(&self, isa: Isa, x: &[f32], v: &mut [f32]) {
        // SAFETY: the CPU has `isa`; each gather fills `TB + 2` columns per phase, and `TB + 2
        // + 16 <= GATHER`.
        unsafe {
            match isa {
                Isa::Avx512 => self.transform_input_avx512(x, v),
                Isa::Avx2 => self.transform_input_avx2(x, v),
            }
        }
    }

    /// [`Self::transform_input`]'s loops compiled for AVX-512.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_input_avx512(&self, x: &[f32], v: &mut [f32]) {
        // SAFETY: AVX-512 (the caller's); `n + 16 <= GATHER` (the caller's).
        self.transform_input_with(x, v, |plane, hw, y, first, n, columns| unsafe {
            gather4(plane, hw, y, first, n, columns)
        });
    }

    /// [`Self::transform_input`]'s loops compiled for AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn transform_input_avx2(&self, x: &[f32], v: &mut [f32]) {
        // SAFETY: AVX2 (the caller's); `n + 8 <= GATHER` (the caller's).
        self.transform_input_with(x, v, |plane, hw, y, first, n, columns| unsafe {
            winograd::gather_phases::<M>(plane, hw, y, first, n, columns)
        });
    }

    /// The loops of [`Self::transform_input`], inlined into each instruction set's copy (whose
    /// target features vectorise them), with that set's `gather` of the column phases.
    #[inline(always)]
    fn transform_input_with(
        &self,
        x: &[f32],
        v: &mut [f32],
        gather: impl Fn(&[f32], (usize, usize), isize, isize, usize, &mut Columns),
    ) {
        let s = self.s;
        let mut columns: Columns = [[0.0f32; GATHER]; M];
        let plane_len = s.h * s.w;
        // The padded rows and columns this task reads, for the prefetch of the channel
        // `PREFETCH` ahead (each channel's rows are a plane away from the last one's).
        let (ys, xs) = (
            self.y0..self.y0 + self.rows() + K - 1,
            M * self.t0..M * (self.t0 + TB) + K - 1,
        );
        for c in 0..s.c_in {
            if let Some(ahead) = x.chunks_exact(plane_len).nth(c + winograd::PREFETCH) {
                winograd::prefetch(ahead, (s.h, s.w), ys.clone(), xs.clone(), s.pad);
            }
            let plane = &x[c * plane_len..][..plane_len];
            for r in 0..self.rows() + K - 1 {
                // d_j[t] = xpad[y0 + r, 4 (t0 + t) + j] = `columns[j % 4][t + j / 4]`; padded
                // column `4 t0` is image column `4 t0 - 3`.
                let (y, first) = ((self.y0 + r) as isize - 3, (M * self.t0) as isize - 3);
                // `TB + 2` columns per phase (`j / 4 <= 2`).
                gather(plane, (s.h, s.w), y, first, TB + 2, &mut columns);
                input_sums(&self.matrices.bt, &columns, |p, sums| {
                    let at = p * v_stride(s.c_in) + (r * s.c_in + c) * TB;
                    v[at..][..TB].copy_from_slice(sums);
                });
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn transform_input(&self, _: Isa, _: &[f32], _: &mut [f32]) {
        unreachable!("`applies` checks for AVX-512 or AVX2")
    }

    /// `M_p` of every output row of the band: per position, per row, per panel, one
    /// micro-kernel call over the `7 C_in` terms `(ky, c)`.
    ///
    /// # Safety
    /// The CPU has `isa`.
    unsafe fn products(&self, isa: Isa, packed: &[f32], offsets: &[usize], scratch: &mut Scratch) {
        let micro = isa.micro_kernel();
        let s = self.s;
        let terms = K * s.c_in;
        let panels = s.c_out.div_ceil(MR);
        let n = self.tiles();
        for p in 0..ALPHA {
            for y in 0..self.rows() {
                let src = scratch.v[p * v_stride(s.c_in) + y * s.c_in * TB..].as_ptr();
                for panel in 0..panels {
                    let tile = Tile {
                        panel: &packed[(panel * ALPHA + p) * terms * MR..][..terms * MR],
                        offsets,
                        bias: &[0.0; MR],
                        dst: scratch.m[((y * ALPHA + p) * panels + panel) * MR * TB..].as_mut_ptr(),
                        plane: TB,
                        rows: MR,
                    };
                    // SAFETY: the CPU has `isa` (the contract); term `(ky, c)` reads `n`
                    // values of V's row `y + ky`, channel `c` (inside `v`: rows `y + ky <
                    // ROWS`); the stores stay in slot (y, p, panel) of `m`.
                    unsafe { micro(&tile, src, n) };
                }
            }
        }
    }

    /// `A^T M` plus the bias into the output's band and block.
    ///
    /// # Safety
    /// The CPU has `isa`; `out` is the output `[C_out, H, W]`; no other thread writes this
    /// band's block.
    #[cfg(target_arch = "x86_64")]
    unsafe fn transform_output(&self, isa: Isa, m: &[f32], bias: &[f32], out: OutPtr) {
        // SAFETY: the caller's.
        unsafe {
            match isa {
                Isa::Avx512 => self.transform_output_avx512(m, bias, out),
                Isa::Avx2 => self.transform_output_avx2(m, bias, out),
            }
        }
    }

    /// [`Self::transform_output`]'s loops compiled for AVX-512.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_output_avx512(&self, m: &[f32], bias: &[f32], out: OutPtr) {
        // SAFETY: the caller's.
        unsafe { self.transform_output_with(m, bias, out) }
    }

    /// [`Self::transform_output`]'s loops compiled for AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn transform_output_avx2(&self, m: &[f32], bias: &[f32], out: OutPtr) {
        // SAFETY: the caller's.
        unsafe { self.transform_output_with(m, bias, out) }
    }

    /// The loops of [`Self::transform_output`], inlined into each instruction set's copy.
    ///
    /// # Safety
    /// As [`Self::transform_output`]'s, less the instruction set.
    #[inline(always)]
    unsafe fn transform_output_with(&self, m: &[f32], bias: &[f32], out: OutPtr) {
        let s = self.s;
        let panels = s.c_out.div_ceil(MR);
        let x0 = M * self.t0;
        let width = (M * self.tiles()).min(s.w - x0);
        let mut row = [0.0f32; M * TB];
        for y in 0..self.rows() {
            for o in 0..s.c_out {
                // The tiles' four outputs, each a sum over the 10 positions.
                let mut outputs = [[bias[o]; TB]; M];
                for p in 0..ALPHA {
                    let products = &m[((y * ALPHA + p) * panels * MR + o) * TB..][..TB];
                    for (output, at) in outputs.iter_mut().zip(&self.matrices.at) {
                        let a = at[p];
                        for (sum, &value) in output.iter_mut().zip(products) {
                            *sum += a * value;
                        }
                    }
                }
                for (t, pixels) in row.chunks_exact_mut(M).enumerate() {
                    for (pixel, output) in pixels.iter_mut().zip(&outputs) {
                        *pixel = output[t];
                    }
                }
                // SAFETY: row `y0 + y`, columns `x0..x0 + width` of channel `o`, inside `out`.
                let dst = unsafe { out.get().add((o * s.h + self.y0 + y) * s.w + x0) };
                unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), dst, width) };
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn transform_output(&self, _: Isa, _: &[f32], _: &[f32], _: OutPtr) {
        unreachable!("`applies` checks for AVX-512 or AVX2")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_values::{direct_conv, values};

    #[test]
    fn one_tile_is_the_1x7_correlation() {
        // A^T [(G g) . (B^T d)] = (g * d)[0..4] in f64 for any g and d.
        let Matrices { bt, at, g } = Matrices::new();
        let taps: Vec<f64> = values(K, 1).into_iter().map(f64::from).collect();
        let d: Vec<f64> = values(ALPHA, 2).into_iter().map(f64::from).collect();
        let products: Vec<f64> = (0..ALPHA)
            .map(|p| {
                let u: f64 = (0..K).map(|k| g[p][k] * taps[k]).sum();
                let v: f64 = (0..ALPHA).map(|j| bt[p][j] as f64 * d[j]).sum();
                u * v
            })
            .collect();
        for i in 0..M {
            let got: f64 = (0..ALPHA).map(|p| at[i][p] as f64 * products[p]).sum();
            let want: f64 = (0..K).map(|k| taps[k] * d[i + k]).sum();
            assert!((got - want).abs() < 1e-9, "output {i}: {got} vs {want}");
        }
    }

    #[test]
    fn b_and_a_are_exact_in_f32() {
        // Their entries are dyadic rationals (the points are): f32 holds them exactly, so only
        // `G` is rounded. Recomputing in f64 must give the same values.
        let Matrices { bt, at, .. } = Matrices::new();
        assert_eq!(bt[0][..5], [2.25, 0.0, -12.8125, 0.0, 17.0625][..]);
        for value in bt.iter().flatten().chain(at.iter().flatten()) {
            assert_eq!(
                (*value as f64 * 64.0).fract(),
                0.0,
                "{value} is not a multiple of 1/64"
            );
        }
    }

    #[test]
    fn matches_direct_summation() {
        let isas = conv::isas_here();
        if isas.is_empty() {
            eprintln!("neither AVX-512 nor AVX2 here: not tested");
            return;
        }
        // Widths not multiples of 4, several blocks (a 400-wide row is 100 tiles: 48 + 48 +
        // 4), several bands with a short last one, channels not multiples of 8.
        for (i, &(c_in, c_out, h, w)) in [
            (16, 20, 11, 400),
            (19, 16, 17, 33),
            (32, 64, 9, 97),
            (16, 16, 3, 18),
        ]
        .iter()
        .enumerate()
        {
            let s = ConvShape {
                c_in,
                c_out,
                h,
                w,
                k: 7,
                pad: 3,
            };
            assert!(applies(&s));
            let x = values(c_in * h * w, i as u32);
            let wt = values(c_out * c_in * 49, 10 + i as u32);
            let b = values(c_out, 20);
            let mut bias = vec![0.0; c_out.div_ceil(MR) * MR];
            bias[..c_out].copy_from_slice(&b);
            let want = direct_conv(&x, &wt, Some(&b), &s);
            for &isa in &isas {
                let mut got = vec![f32::NAN; c_out * h * w];
                conv2d_on(isa, &x, &transform_weights(&wt, &s), &bias, &s, &mut got);
                for (j, (g, e)) in got.iter().zip(&want).enumerate() {
                    assert!((g - e).abs() < 2e-4, "{isa:?} {s:?} at {j}: {g} vs {e}");
                }
            }
        }
    }
}
