//! The weight gradient of the 7x7, pad-3 convolutions of [`super::winograd_rows`], by the same
//! F(4, 7) along rows read backwards.
//!
//! Along a row the forward is `out[o, y, 4t + i] = sum over (c, ky, p) of A^T[i][p]
//! U_p[o, c, ky] V_p[c, y + ky, t]`, bilinear in the transformed kernel rows
//! `U_p = (G g_{o, c, ky})_p` and the transformed padded input rows `V_p = (B^T d)_p`. With the
//! output gradient's tiles transformed by `A`, `Y_p[o, y, t] = sum_i A^T[i][p] dOut[o, y,
//! 4t + i]` (zero past the end of the row),
//!
//! ```text
//! dL/dU_p[o, c, ky]     = sum over (y, t) of Y_p[o, y, t] V_p[c, y + ky, t]
//! dL/dg[o, c, ky, kx]   = sum over p of G[p][kx] dL/dU_p[o, c, ky]
//! ```
//!
//! per position `p` a matrix product `[C_out] x [7 C_in]` whose contraction runs over every
//! tile of every row: 10 multiply-adds per 4 pixels and term against the direct weight
//! gradient's 28 ([`super::wgrad`]), on its micro-kernel ([`wgrad::add_products`]). G's 7x7
//! tail (64 -> 32 at full size) had the largest weight gradient of its training step on the
//! CPU.
//!
//! Rows are taken in bands of [`BAND`] output rows, image by image: the threads transform the
//! band's `BAND + 6` padded input rows of every input channel and its output-gradient rows of
//! every output channel (channel-major, `[c][p][row][t]`, each channel's rows read in order),
//! then share out the products by position and block of output channels, added into f32 sums
//! after every band; `G^T` at the end, in f64. Rounding: `B^T`'s entries up to 273/16 and
//! `A^T`'s up to 27/8 are the forward's; checked against direct summation in f64 below.

use rayon::prelude::*;

use super::conv::{ConvShape, Isa, LANES};
use super::wgrad::{self, C, R};
use super::winograd_rows::{input_sums, Columns, Matrices, ALPHA, K, M, TB};

/// Output rows per band: one position's `V` of every channel (`C_in x 38 x 64` floats at 256
/// pixels across, 620 KiB for 64 channels) stays in L2 while its products run; the lanes of
/// each product are summed once per band (64 -> 32 at 256x256, two images, 2 Zen 4 cores
/// without AVX-512: median 122 ms against 134 with 16 rows, 221 directly).
const BAND: usize = 32;

/// Whether [`weight_grad`] should compute this convolution's weight gradient: the shapes
/// whose forward runs by F(4, 7) ([`super::winograd_rows::applies`]).
pub(crate) fn applies(s: &ConvShape) -> bool {
    super::winograd_rows::applies(s)
}

/// `dL/dW` `[C_out, C_in, 7, 7]` summed over the images of `x` `[N, C_in, H, W]` and the output
/// gradient `g` `[N, C_out, H, W]`. Check [`applies`].
///
/// # Panics
/// If the slices do not match `s`, `s` is not 7x7 with padding 3, or the CPU has neither
/// AVX-512 nor AVX2 with FMA.
pub(crate) fn weight_grad(x: &[f32], g: &[f32], s: &ConvShape) -> Vec<f32> {
    let isa = Isa::detected().expect("the weight gradient needs AVX-512 or AVX2 with FMA");
    weight_grad_on(isa, x, g, s)
}

/// [`weight_grad`] on the vector code of `isa` (which the CPU must have).
fn weight_grad_on(isa: Isa, x: &[f32], g: &[f32], s: &ConvShape) -> Vec<f32> {
    assert!(
        s.k == K && s.pad == 3,
        "F(4, 7) needs 7x7 kernels and padding 3"
    );
    let plane = s.h * s.w;
    let images = x.len() / (s.c_in * plane).max(1);
    assert_eq!(x.len(), images * s.c_in * plane);
    assert_eq!(g.len(), images * s.c_out * plane);
    let layout = Layout::new(s);
    let Layout { v_plane, y_len, .. } = layout;
    let rows_out = s.c_out.div_ceil(R) * R;
    let terms = (s.c_in * K).next_multiple_of(C);
    // Term `(c, ky)` reads channel c's transformed rows from row ky; the padding terms read
    // channel 0's (their sums are never read back).
    let offsets: Vec<usize> = (0..terms)
        .map(|t| {
            if t < s.c_in * K {
                t / K * ALPHA * v_plane + t % K * layout.tiles
            } else {
                0
            }
        })
        .collect();
    let matrices = Matrices::new();
    // V `[c][p][row][t]` and a vector of slack for the last term's reads past its rows; Y
    // `[o][p][q]` (`q = row tiles + t`), zero past each band's rows and in the rows past C_out.
    let mut v = vec![0.0f32; s.c_in * ALPHA * v_plane + LANES];
    let mut y = vec![0.0f32; rows_out * ALPHA * y_len];
    // `dL/dU_p` `[p][o][term]`.
    let mut sums = vec![0.0f32; ALPHA * rows_out * terms];
    for (xi, gi) in x
        .chunks_exact(s.c_in * plane)
        .zip(g.chunks_exact(s.c_out * plane))
    {
        for y0 in (0..s.h).step_by(BAND) {
            let band = Band {
                y0,
                rows: BAND.min(s.h - y0),
                layout,
                s,
                matrices: &matrices,
            };
            let input = v.par_chunks_mut(ALPHA * v_plane).zip(xi.par_chunks(plane));
            let gradient = y.par_chunks_mut(ALPHA * y_len).zip(gi.par_chunks(plane));
            // SAFETY: the CPU has `isa` (the caller's).
            input.for_each(|(dst, src)| unsafe { band.transform(isa, Side::Input, src, dst) });
            gradient
                .for_each(|(dst, src)| unsafe { band.transform(isa, Side::Gradient, src, dst) });
            let vectors = (band.rows * layout.tiles).div_ceil(LANES);
            let blocks = rows_out / R;
            sums.par_chunks_mut(R * terms)
                .enumerate()
                .for_each(|(i, block)| {
                    let (p, ob) = (i / blocks, i % blocks);
                    let y_rows = &y[ob * R * ALPHA * y_len + p * y_len..];
                    // SAFETY: the CPU has `isa`; row r of the block reads `16 vectors <= y_len`
                    // floats from `r ALPHA y_len`, inside `y`; term `(c, ky)` reads from
                    // `c ALPHA v_plane + ky tiles` at most `v_plane + 15` floats (the band's
                    // `6 + rows` rows and less than a vector), inside `v` and its slack.
                    unsafe {
                        let v_p = &v[p * v_plane..];
                        wgrad::add_products(
                            isa,
                            y_rows,
                            ALPHA * y_len,
                            v_p,
                            &offsets,
                            vectors,
                            block,
                        )
                    };
                });
        }
    }
    untransform(&matrices, &sums, s, rows_out, terms)
}

/// `dL/dg[o, c, ky, kx] = sum_p G[p][kx] dL/dU_p[o, (c, ky)]`, in f64.
fn untransform(
    matrices: &Matrices,
    sums: &[f32],
    s: &ConvShape,
    rows_out: usize,
    terms: usize,
) -> Vec<f32> {
    let mut dw = vec![0.0f32; s.c_out * s.c_in * K * K];
    dw.par_chunks_mut(K).enumerate().for_each(|(i, taps)| {
        let (o, term) = (i / (s.c_in * K), i % (s.c_in * K));
        for (kx, tap) in taps.iter_mut().enumerate() {
            let sum: f64 = (0..ALPHA)
                .map(|p| matrices.g[p][kx] * sums[(p * rows_out + o) * terms + term] as f64)
                .sum();
            *tap = sum as f32;
        }
    });
    dw
}

/// Where a band's transformed rows lie.
#[derive(Clone, Copy)]
struct Layout {
    /// Tiles of 4 pixels across a row.
    tiles: usize,
    /// Floats of one channel's `V_p` (`BAND + 6` rows of `tiles`).
    v_plane: usize,
    /// Floats of one channel's `Y_p` (`BAND` rows of `tiles`, up to whole vectors).
    y_len: usize,
}

impl Layout {
    fn new(s: &ConvShape) -> Self {
        let tiles = s.w.div_ceil(M);
        Self {
            tiles,
            v_plane: (BAND + K - 1) * tiles,
            y_len: (BAND * tiles).next_multiple_of(LANES),
        }
    }
}

/// Which operand a channel's rows become.
#[derive(Clone, Copy)]
enum Side {
    /// `V_p` of the band's padded input rows.
    Input,
    /// `Y_p` of the band's output-gradient rows.
    Gradient,
}

/// The output rows `y0..y0 + rows` of one image.
struct Band<'a> {
    y0: usize,
    rows: usize,
    layout: Layout,
    s: &'a ConvShape,
    matrices: &'a Matrices,
}

impl Band<'_> {
    /// The band's `side` of one channel `plane` (`H x W`) into `dst` (`[p][row][t]`).
    ///
    /// # Safety
    /// The CPU has `isa`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn transform(&self, isa: Isa, side: Side, plane: &[f32], dst: &mut [f32]) {
        // SAFETY: the caller's.
        unsafe {
            match isa {
                Isa::Avx512 => self.transform_avx512(side, plane, dst),
                Isa::Avx2 => self.transform_avx2(side, plane, dst),
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn transform(&self, _: Isa, _: Side, _: &[f32], _: &mut [f32]) {
        unreachable!("`applies` checks for AVX-512 or AVX2")
    }

    /// [`Self::transform`] compiled for AVX-512.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_avx512(&self, side: Side, plane: &[f32], dst: &mut [f32]) {
        // SAFETY: AVX-512 (the caller's); gathers of at most `TB + 2 + 16 <= GATHER` columns.
        self.transform_with(side, plane, dst, |plane, hw, y, first, n, columns| unsafe {
            super::winograd4::gather4(plane, hw, y, first, n, columns)
        });
    }

    /// [`Self::transform`] compiled for AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn transform_avx2(&self, side: Side, plane: &[f32], dst: &mut [f32]) {
        // SAFETY: AVX2 (the caller's); gathers of at most `TB + 2 + 8 <= GATHER` columns.
        self.transform_with(side, plane, dst, |plane, hw, y, first, n, columns| unsafe {
            super::winograd::gather_phases::<M>(plane, hw, y, first, n, columns)
        });
    }

    /// The loops of [`Self::transform`], inlined into each instruction set's copy with its
    /// `gather` of a row's four column phases (zeros outside the image).
    #[inline(always)]
    fn transform_with(
        &self,
        side: Side,
        plane: &[f32],
        dst: &mut [f32],
        gather: impl Fn(&[f32], (usize, usize), isize, isize, usize, &mut Columns),
    ) {
        let (s, tiles) = (self.s, self.layout.tiles);
        let mut columns: Columns = [[0.0f32; super::winograd4::GATHER]; M];
        let (rows, len) = match side {
            Side::Input => (self.rows + K - 1, self.layout.v_plane),
            Side::Gradient => (self.rows, self.layout.y_len),
        };
        for r in 0..rows {
            for t0 in (0..tiles).step_by(TB) {
                let n = TB.min(tiles - t0);
                let mut put = |p: usize, sums: &[f32; TB]| {
                    dst[p * len + r * tiles + t0..][..n].copy_from_slice(&sums[..n]);
                };
                match side {
                    Side::Input => {
                        // Padded row y0 + r is image row y0 + r - 3; padded column 4 t0 is
                        // image column 4 t0 - 3; `TB + 2` columns per phase (`j / 4 <= 2`).
                        let (y, first) = ((self.y0 + r) as isize - 3, (M * t0) as isize - 3);
                        gather(plane, (s.h, s.w), y, first, TB + 2, &mut columns);
                        input_sums(&self.matrices.bt, &columns, &mut put);
                    }
                    Side::Gradient => {
                        let (y, first) = ((self.y0 + r) as isize, (M * t0) as isize);
                        gather(plane, (s.h, s.w), y, first, TB, &mut columns);
                        gradient_sums(&self.matrices.at, &columns, &mut put);
                    }
                }
            }
        }
        if let Side::Gradient = side {
            // The products read whole vectors: zero past the band's rows.
            for p in 0..ALPHA {
                dst[p * len + rows * tiles..(p + 1) * len].fill(0.0);
            }
        }
    }
}

/// `Y_p = (A dY)_p` of the [`TB`] tiles whose output-gradient row's four column phases are
/// `columns` (`dY_i[t] = columns[i][t]`), handed to `put` position by position.
#[inline(always)]
fn gradient_sums(
    at: &[[f32; ALPHA]; M],
    columns: &Columns,
    mut put: impl FnMut(usize, &[f32; TB]),
) {
    for p in 0..ALPHA {
        let mut sums = [0.0f32; TB];
        for (phase, row) in columns.iter().zip(at) {
            let a = row[p];
            if a != 0.0 {
                for (d, &value) in sums.iter_mut().zip(&phase[..TB]) {
                    *d += a * value;
                }
            }
        }
        put(p, &sums);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv;
    use crate::kernels::test_values::{direct_weight_grad, values};

    #[test]
    fn matches_direct_summation() {
        let isas = conv::isas_here();
        if isas.is_empty() {
            eprintln!("no AVX-512 or AVX2 here: the F(4, 7) weight gradient not tested");
            return;
        }
        // More than one band and a partial last one (33 and 70 rows), rows of more than one
        // run of 48 tiles (201 pixels: 51 tiles) and widths that are not multiples of 4,
        // channel counts that are not multiples of 4 (output) or whose 7 C_in terms are not
        // of 6 (17: 119 terms), two images, a band shorter than the kernel (5 rows).
        let shapes = [
            (16, 16, 21, 30, 2),
            (17, 18, 5, 201, 1),
            (16, 20, 33, 13, 1),
            (16, 16, 70, 9, 2),
        ];
        for (i, &(c_in, c_out, h, w, n)) in shapes.iter().enumerate() {
            let s = ConvShape {
                c_in,
                c_out,
                h,
                w,
                k: K,
                pad: 3,
            };
            let x = values(n * c_in * h * w, 90 + i as u32);
            let g = values(n * c_out * h * w, 95 + i as u32);
            let want = direct_weight_grad(&x, &g, &s, n);
            for &isa in &isas {
                let got = weight_grad_on(isa, &x, &g, &s);
                assert_eq!(got.len(), want.len());
                for (j, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() < 2e-3, "{isa:?} {s:?} at {j}: {a} vs {b}");
                }
            }
        }
    }
}
