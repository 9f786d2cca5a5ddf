//! Stride-1, 7x7, pad-3 convolutions by Winograd's minimal filtering along rows, F(2, 7)
//! (Lavin and Gray, CVPR 2016; the Toom-Cook points 0, 1, -1, 2, -2, 1/2, -1/2 and infinity,
//! those of the common F(6, 3)).
//!
//! A 7x7 convolution is the sum over its kernel rows `ky` of 1x7 convolutions of input row
//! `y + ky`. Along a row, two adjacent outputs of a 1x7 kernel `g` are
//! `A^T [ (G g) . (B^T d) ]` with `d` the 8 input values under them: 8 multiplications
//! instead of 14. So output row `y` is, per position `p` of the 8 transformed values,
//! `M_p [C_out, tiles] = sum over (ky, c) of U_p[o, ky, c] V_p[c, y + ky, tiles]`, with
//! `U_p = (G g_{o, c, ky})_p` and `V_p` the transformed input rows: 28 multiply-adds per input
//! channel and output pixel against the direct convolution's 49 (1.75x fewer). The input
//! transform (64 multiply-adds per input channel, row and tile) is shared by the 7 output rows
//! that read the row and all output channels; the products run on the direct convolution's
//! micro-kernel ([`conv::micro_upto`]). G's 7x7 tail (64 -> 32 at full size) is a quarter to
//! a third of its forward on the CPU.
//!
//! Work is cut into bands of [`BAND`] output rows x blocks of 48 tiles (96 pixels); a task
//! transforms its `BAND + 6` input rows for its block (the channel [`winograd::PREFETCH`]
//! ahead asked into the cache: without it the gathers waited on memory for a third of the
//! time), multiplies one position at a time (that position's rows, `14 x C_in x 48` values,
//! stay in L2), and transforms back. The 1080p tail took 1.1-1.2 s directly and 0.74-0.86 s so
//! (`conv_layers 1080 1920 64 32 7 1`). Rounding: `B^T` has entries up
//! to 5.25 and `G` down to 1/90, so the result differs from direct summation by more ulps
//! than F(2x2, 3x3) (checked against direct summation in f64 below, and through G against
//! PyTorch's output in `tests/reference.rs`). The matrices are exact in binary but for `G`'s
//! ninths and ninetieths (rounded once, in f64).

use rayon::prelude::*;

use super::conv::{self, ConvShape, OutPtr, Tile, LANES, MR};
use super::winograd;

/// Transformed values per tile (`m + r - 1` for `m = 2` outputs and `r = 7` taps).
const ALPHA: usize = 8;
/// Kernel side.
const K: usize = 7;
/// Tiles per block: the width of one micro-kernel call (3 vectors).
const TB: usize = 3 * LANES;
/// Output rows per task.
const BAND: usize = 8;
/// Input rows a full band reads (its rows and the kernel's 6 more).
const ROWS: usize = BAND + K - 1;

/// `B^T` of F(2, 7): row `p` combines the 8 input values of a tile into its `p`-th value.
const BT: [[f32; ALPHA]; ALPHA] = [
    [-1.0, 0.0, 5.25, 0.0, -5.25, 0.0, 1.0, 0.0],
    [0.0, 1.0, 1.0, -4.25, -4.25, 1.0, 1.0, 0.0],
    [0.0, -1.0, 1.0, 4.25, -4.25, -1.0, 1.0, 0.0],
    [0.0, 0.5, 0.25, -2.5, -1.25, 2.0, 1.0, 0.0],
    [0.0, -0.5, 0.25, 2.5, -1.25, -2.0, 1.0, 0.0],
    [0.0, 2.0, 4.0, -2.5, -5.0, 0.5, 1.0, 0.0],
    [0.0, -2.0, 4.0, 2.5, -5.0, -0.5, 1.0, 0.0],
    [0.0, -1.0, 0.0, 5.25, 0.0, -5.25, 0.0, 1.0],
];

/// `A^T` of F(2, 7): the two outputs of a tile from its 8 products.
const AT: [[f32; ALPHA]; 2] = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 1.0],
];

/// `G` of F(2, 7) (the 7 taps of a kernel row to its 8 transformed values), in f64: row `p`
/// is `a_p^k / prod over l != p of (a_p - a_l)` for the finite points `a`, and the last tap for
/// the point at infinity.
fn g_matrix() -> [[f64; K]; ALPHA] {
    let points = [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5];
    std::array::from_fn(|p| {
        if p == ALPHA - 1 {
            return std::array::from_fn(|k| if k == K - 1 { 1.0 } else { 0.0 });
        }
        let a: f64 = points[p];
        let f: f64 = (0..ALPHA - 1)
            .filter(|&l| l != p)
            .map(|l| a - points[l])
            .product();
        std::array::from_fn(|k| a.powi(k as i32) / f)
    })
}

/// Whether [`conv2d_into`] should run this convolution: 7x7 with zero padding 3 (same-size
/// output), AVX-512, and at least 16 input and output channels (with fewer the transforms
/// weigh more than they save: G's 3 -> 32 head stays direct).
pub(crate) fn applies(s: &ConvShape) -> bool {
    s.k == K && s.pad == 3 && conv::available() && s.c_in >= 16 && s.c_out >= 16 && s.w >= 16
}

/// `U_p = G g` of every kernel row, packed per panel of [`MR`] output channels and position
/// `p`, term-major with terms `(ky, c)`: `[panel][p][ky][c][r]`, zero rows past `C_out`.
pub(crate) fn transform_weights(weight: &[f32], s: &ConvShape) -> Vec<f32> {
    let g = g_matrix();
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
    let blocks = s.w.div_ceil(2).div_ceil(TB);
    let bands = s.h.div_ceil(BAND);
    let ptr = OutPtr(out.as_mut_ptr());
    let panels = s.c_out.div_ceil(MR);
    // Term `(ky, c)` (the `ky * C_in + c`-th) starts that many runs of 48 into `V`.
    let offsets: Vec<usize> = (0..K * s.c_in).map(|t| t * TB).collect();
    (0..bands * blocks).into_par_iter().for_each_init(
        || Scratch {
            v: vec![0.0; ALPHA * ROWS * s.c_in * TB],
            m: vec![0.0; BAND * ALPHA * panels * MR * TB],
        },
        |scratch, task| {
            let task = Task {
                y0: task / blocks * BAND,
                t0: task % blocks * TB,
                s,
            };
            // SAFETY: AVX-512 was checked by `applies`; this task alone writes its band's
            // rows in its block's columns.
            unsafe {
                task.transform_input(x, &mut scratch.v);
                task.products(packed, &offsets, scratch);
                task.transform_output(&scratch.m, bias, ptr);
            }
        },
    );
}

/// A task's transformed input and products.
struct Scratch {
    /// `V[p][row][c][t]` for the band's input rows.
    v: Vec<f32>,
    /// `M[y][p][o][t]` for the band's output rows (channels padded to whole panels).
    m: Vec<f32>,
}

/// One band of output rows from `y0` and one block of tiles from `t0`.
struct Task<'a> {
    y0: usize,
    t0: usize,
    s: &'a ConvShape,
}

impl Task<'_> {
    /// Output rows of this band.
    fn rows(&self) -> usize {
        BAND.min(self.s.h - self.y0)
    }

    /// Tiles of this block.
    fn tiles(&self) -> usize {
        TB.min(self.s.w.div_ceil(2) - self.t0)
    }

    /// `V_p` of the band's `rows + 6` padded input rows, every channel: the even and odd
    /// columns of the block's tiles gathered ([`winograd::gather`], zeros in the padding),
    /// then the 8 sums.
    ///
    /// # Safety
    /// AVX-512 is available.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_input(&self, x: &[f32], v: &mut [f32]) {
        let s = self.s;
        let mut columns = [[0.0f32; winograd::GATHER]; 2];
        let plane_len = s.h * s.w;
        // The padded rows and columns this task reads, for the prefetch of the channel
        // `PREFETCH` ahead (each channel's rows are a plane away from the last one's).
        let (ys, xs) = (
            self.y0..self.y0 + self.rows() + K - 1,
            2 * self.t0..2 * (self.t0 + TB) + K - 1,
        );
        for c in 0..s.c_in {
            if let Some(ahead) = x.chunks_exact(plane_len).nth(c + winograd::PREFETCH) {
                winograd::prefetch(ahead, (s.h, s.w), ys.clone(), xs.clone(), s.pad);
            }
            let plane = &x[c * plane_len..][..plane_len];
            for r in 0..self.rows() + K - 1 {
                // d_j[t] = xpad[y0 + r, 2 (t0 + t) + j]: even j from `columns[0][t + j / 2]`,
                // odd j from `columns[1]`; padded column `2 t0` is image column `2 t0 - 3`.
                let (y, first) = ((self.y0 + r) as isize - 3, (2 * self.t0) as isize - 3);
                // SAFETY: AVX-512 is available (this function's contract); `TB + 3` pairs fit
                // `GATHER` (see `gather`).
                unsafe { winograd::gather(plane, (s.h, s.w), y, first, TB + 3, &mut columns) };
                for (p, bt) in BT.iter().enumerate() {
                    let mut sums = [0.0f32; TB];
                    for (j, &b) in bt.iter().enumerate() {
                        if b != 0.0 {
                            let src = &columns[j % 2][j / 2..][..TB];
                            for (d, &value) in sums.iter_mut().zip(src) {
                                *d += b * value;
                            }
                        }
                    }
                    v[((p * ROWS + r) * s.c_in + c) * TB..][..TB].copy_from_slice(&sums);
                }
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn transform_input(&self, _: &[f32], _: &mut [f32]) {
        unreachable!("`applies` checks for AVX-512")
    }

    /// `M_p` of every output row of the band: per position, per row, per panel, one
    /// micro-kernel call over the `7 C_in` terms `(ky, c)`.
    ///
    /// # Safety
    /// AVX-512 is available.
    unsafe fn products(&self, packed: &[f32], offsets: &[usize], scratch: &mut Scratch) {
        let s = self.s;
        let terms = K * s.c_in;
        let panels = s.c_out.div_ceil(MR);
        let n = self.tiles();
        for p in 0..ALPHA {
            for y in 0..self.rows() {
                let src = scratch.v[(p * ROWS + y) * s.c_in * TB..].as_ptr();
                for panel in 0..panels {
                    let tile = Tile {
                        panel: &packed[(panel * ALPHA + p) * terms * MR..][..terms * MR],
                        offsets,
                        bias: &[0.0; MR],
                        dst: scratch.m[((y * ALPHA + p) * panels + panel) * MR * TB..].as_mut_ptr(),
                        plane: TB,
                        rows: MR,
                    };
                    // SAFETY: AVX-512 (the contract); term `(ky, c)` reads `n` values
                    // of V's row `y + ky`, channel `c` (inside `v`: rows `y + ky < ROWS`); the
                    // stores stay in slot (y, p, panel) of `m`.
                    unsafe { conv::micro_upto(&tile, src, n) };
                }
            }
        }
    }

    /// `A^T M` plus the bias into the output's band and block.
    ///
    /// # Safety
    /// AVX-512 is available; `out` is the output `[C_out, H, W]`; no other thread writes this
    /// band's block.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_output(&self, m: &[f32], bias: &[f32], out: OutPtr) {
        let s = self.s;
        let panels = s.c_out.div_ceil(MR);
        let x0 = 2 * self.t0;
        let width = (2 * self.tiles()).min(s.w - x0);
        let mut row = [0.0f32; 2 * TB];
        for y in 0..self.rows() {
            for o in 0..s.c_out {
                // The tiles' first and second outputs, each a sum over the 8 positions.
                let (mut first, mut second) = ([bias[o]; TB], [bias[o]; TB]);
                for p in 0..ALPHA {
                    let products = &m[((y * ALPHA + p) * panels * MR + o) * TB..][..TB];
                    let (a0, a1) = (AT[0][p], AT[1][p]);
                    for ((f, g), &value) in first.iter_mut().zip(&mut second).zip(products) {
                        *f += a0 * value;
                        *g += a1 * value;
                    }
                }
                for (t, pair) in row.chunks_exact_mut(2).enumerate() {
                    pair[0] = first[t];
                    pair[1] = second[t];
                }
                // SAFETY: row `y0 + y`, columns `x0..x0 + width` of channel `o`, inside `out`.
                let dst = unsafe { out.get().add((o * s.h + self.y0 + y) * s.w + x0) };
                unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), dst, width) };
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn transform_output(&self, _: &[f32], _: &[f32], _: OutPtr) {
        unreachable!("`applies` checks for AVX-512")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_values::{direct_conv, values};

    #[test]
    fn one_tile_is_the_1x7_correlation() {
        // A^T [(G g) . (B^T d)] = (g * d)[0..2] in f64 for any g and d.
        let g = g_matrix();
        let taps: Vec<f64> = values(K, 1).into_iter().map(f64::from).collect();
        let d: Vec<f64> = values(ALPHA, 2).into_iter().map(f64::from).collect();
        let products: Vec<f64> = (0..ALPHA)
            .map(|p| {
                let u: f64 = (0..K).map(|k| g[p][k] * taps[k]).sum();
                let v: f64 = (0..ALPHA).map(|j| BT[p][j] as f64 * d[j]).sum();
                u * v
            })
            .collect();
        for i in 0..2 {
            let got: f64 = (0..ALPHA).map(|p| AT[i][p] as f64 * products[p]).sum();
            let want: f64 = (0..K).map(|k| taps[k] * d[i + k]).sum();
            assert!((got - want).abs() < 1e-12, "output {i}: {got} vs {want}");
        }
    }

    #[test]
    fn matches_direct_summation() {
        if !conv::available() {
            eprintln!("no AVX-512 here: not tested");
            return;
        }
        // Odd and even widths, several blocks (a 200-wide row is 100 tiles: 48 + 48 + 4),
        // several bands with a short last one, channels not multiples of 8.
        for (i, &(c_in, c_out, h, w)) in [(16, 20, 11, 200), (19, 16, 17, 33), (32, 64, 9, 97)]
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
            let mut got = vec![f32::NAN; c_out * h * w];
            conv2d_into(&x, &transform_weights(&wt, &s), &bias, &s, &mut got);
            let want = direct_conv(&x, &wt, Some(&b), &s);
            for (j, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!((g - e).abs() < 2e-4, "{s:?} at {j}: {g} vs {e}");
            }
        }
    }
}
