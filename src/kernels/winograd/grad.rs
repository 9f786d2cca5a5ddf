//! F(2x2, 3x3)'s weight gradient (`dL/dg = G^T [ sum over tiles (A dY A^T) . (B^T d B) ] G`,
//! the forward of [`super`] read backwards): the output gradient's tiles `A dY A^T` on
//! AVX-512 and AVX2, the tiles' sums by [`crate::kernels::winograd_grad`], and the kernel's
//! untransform `G^T M G`.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::{gather, gather_phases, lanes, Rows};
use super::{tiles, transform_channels, Segment, Side, GATHER, P};
#[cfg(target_arch = "x86_64")]
use crate::kernels::conv::LANES;
use crate::kernels::conv::{ConvShape, Isa};
#[cfg(target_arch = "x86_64")]
use crate::kernels::micro::{mask8, store8, LANES8};
use crate::kernels::winograd_grad::{self, Dst};

/// `dL/dW` `[C_out, C_in, 3, 3]` of this convolution summed over the images of `x`
/// `[N, C_in, H, W]` and the output gradient `g` `[N, C_out, H, W]`, by the same F(2x2, 3x3)
/// read backwards ([`winograd_grad`]: per position `p` of the 4x4 transformed tile a matrix
/// product whose contraction runs over the tiles, 2.25x fewer multiply-adds than the direct
/// weight gradient's), the tiles' sums by [`winograd_grad::tile_sums`]. Check
/// [`super::weight_grad_applies`].
pub(crate) fn weight_grad(x: &[f32], g: &[f32], s: &ConvShape) -> Vec<f32> {
    let isa = Isa::detected().expect("the weight gradient needs AVX-512 or AVX2 with FMA");
    weight_grad_on(isa, x, g, s)
}

/// [`weight_grad`] on the vector code of `isa` (which the CPU must have).
fn weight_grad_on(isa: Isa, x: &[f32], g: &[f32], s: &ConvShape) -> Vec<f32> {
    assert!(
        s.k == 3 && s.pad == 1,
        "F(2x2, 3x3) needs 3x3 kernels and padding 1"
    );
    let plane = s.h * s.w;
    let images = x.len() / (s.c_in * plane).max(1);
    assert_eq!(x.len(), images * s.c_in * plane);
    assert_eq!(g.len(), images * s.c_out * plane);
    let (th, tw) = tiles(s);
    let sums = winograd_grad::tile_sums(
        isa,
        (images, th, tw),
        P,
        (s.c_in, s.c_out),
        |image, segment, dst| {
            let xi = &x[image * s.c_in * plane..][..s.c_in * plane];
            let gi = &g[image * s.c_out * plane..][..s.c_out * plane];
            let mut rows = [[[0.0f32; GATHER]; 2]; 4];
            let (input, gradient) = (Side::Input, Side::Gradient);
            let (v, y, row) = (dst.v, dst.y, Dst::ROW);
            let (v_stride, y_stride) = (dst.v_stride, dst.y_stride);
            // SAFETY: the CPU has `isa`; lanes `at..at + n` of every row of `v` and `y` are
            // this segment's alone, inside them (`tile_sums`).
            unsafe {
                transform_channels(isa, xi, s, segment, input, &mut rows, v, row, v_stride);
                transform_channels(isa, gi, s, segment, gradient, &mut rows, y, row, y_stride);
            }
        },
    );
    let mut dw = vec![0.0f32; s.c_out * s.c_in * 9];
    dw.par_chunks_mut(9).enumerate().for_each(|(i, kernel)| {
        let mut m = [0.0f32; P];
        sums.read(i / s.c_in, i % s.c_in, &mut m);
        kernel.copy_from_slice(&untransform_kernel(&m));
    });
    dw
}

/// `G^T M G`: the 3x3 weight gradient of one channel pair from its 4x4 sums (row-major), the
/// adjoint of [`super::transform_kernel`].
fn untransform_kernel(m: &[f32; P]) -> [f32; 9] {
    let gt = |a: f64, b: f64, c: f64, d: f64| [a + 0.5 * (b + c), 0.5 * (b - c), 0.5 * (b + c) + d];
    let m: [f64; P] = std::array::from_fn(|p| m[p] as f64);
    // G^T M: 3 rows of 4, column by column.
    let cols: [[f64; 3]; 4] = std::array::from_fn(|j| gt(m[j], m[4 + j], m[8 + j], m[12 + j]));
    // (G^T M) G: row i through G.
    std::array::from_fn(|k| {
        let i = k / 3;
        gt(cols[0][i], cols[1][i], cols[2][i], cols[3][i])[k % 3] as f32
    })
}

/// `A dY A^T` for the segment's tiles of one output-gradient channel `plane` (`s.h x s.w`):
/// `dY` is the tile's 2x2 output gradient (zero outside the image); tile `t`, position `p`,
/// at `dst + p * p_stride + t` (masked stores).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn gradient_tiles(
    plane: &[f32],
    s: &ConvShape,
    Segment { ty, tx0, n, .. }: Segment,
    rows: &mut Rows,
    dst: *mut f32,
    p_stride: usize,
) {
    use std::arch::x86_64::*;
    for (i, row) in rows.iter_mut().take(2).enumerate() {
        let (y, first) = ((2 * ty + i) as isize, (2 * tx0) as isize);
        // SAFETY: AVX-512 is enabled here.
        unsafe { gather(plane, (s.h, s.w), y, first, n, row) };
    }
    let zero = _mm512_setzero_ps();
    for t in (0..n).step_by(LANES) {
        let mask = lanes(n - t);
        // SAFETY: the loads at `t + 15 < GATHER` stay inside `rows`; the caller vouches for
        // the stores.
        unsafe {
            let load = |i: usize, parity: usize| _mm512_loadu_ps(rows[i][parity].as_ptr().add(t));
            let (a, b, c, d) = (load(0, 0), load(0, 1), load(1, 0), load(1, 1));
            // A dY: four rows of two.
            let ady = [
                (a, b),
                (_mm512_add_ps(a, c), _mm512_add_ps(b, d)),
                (_mm512_sub_ps(a, c), _mm512_sub_ps(b, d)),
                (_mm512_sub_ps(zero, c), _mm512_sub_ps(zero, d)),
            ];
            // (A dY) A^T, row by row.
            for (i, &(u, w)) in ady.iter().enumerate() {
                let values = [
                    u,
                    _mm512_add_ps(u, w),
                    _mm512_sub_ps(u, w),
                    _mm512_sub_ps(zero, w),
                ];
                for (j, value) in values.into_iter().enumerate() {
                    _mm512_mask_storeu_ps(dst.add((i * 4 + j) * p_stride + t), mask, value);
                }
            }
        }
    }
}

/// [`gradient_tiles`] on AVX2, 8 tiles at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gradient_tiles_avx2(
    plane: &[f32],
    s: &ConvShape,
    Segment { ty, tx0, n, .. }: Segment,
    rows: &mut Rows,
    dst: *mut f32,
    p_stride: usize,
) {
    use std::arch::x86_64::*;
    for (i, row) in rows.iter_mut().take(2).enumerate() {
        let (y, first) = ((2 * ty + i) as isize, (2 * tx0) as isize);
        // SAFETY: AVX2 is enabled here; `n <= NB`.
        unsafe { gather_phases(plane, (s.h, s.w), y, first, n, row) };
    }
    let zero = _mm256_setzero_ps();
    for t in (0..n).step_by(LANES8) {
        // SAFETY: as in `gradient_tiles`.
        unsafe {
            let (whole, mask) = (t + LANES8 <= n, mask8(n - t));
            let load = |i: usize, parity: usize| _mm256_loadu_ps(rows[i][parity].as_ptr().add(t));
            let (a, b, c, d) = (load(0, 0), load(0, 1), load(1, 0), load(1, 1));
            let ady = [
                (a, b),
                (_mm256_add_ps(a, c), _mm256_add_ps(b, d)),
                (_mm256_sub_ps(a, c), _mm256_sub_ps(b, d)),
                (_mm256_sub_ps(zero, c), _mm256_sub_ps(zero, d)),
            ];
            for (i, &(u, w)) in ady.iter().enumerate() {
                let values = [
                    u,
                    _mm256_add_ps(u, w),
                    _mm256_sub_ps(u, w),
                    _mm256_sub_ps(zero, w),
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
    use crate::kernels::conv;
    use crate::kernels::test_values::{direct_weight_grad, values};
    use crate::kernels::winograd::transform_kernel;

    #[test]
    fn weight_gradient_matches_direct_summation() {
        let isas = conv::isas_here();
        if isas.is_empty() {
            eprintln!("no AVX-512 or AVX2 here: the Winograd weight gradient not tested");
            return;
        }
        // Odd sides (half-outside tiles), channel counts that are not multiples of 4 and 6,
        // chunks that span images (3 x 10 x 17 = 510 tiles > 480) and a single partial chunk.
        let shapes = [(5, 7, 19, 33, 3), (13, 9, 6, 6, 2), (8, 4, 9, 7, 1)];
        for (i, &(c_in, c_out, h, w, n)) in shapes.iter().enumerate() {
            let s = ConvShape {
                c_in,
                c_out,
                h,
                w,
                k: 3,
                pad: 1,
            };
            let x = values(n * c_in * h * w, 70 + i as u32);
            let g = values(n * c_out * h * w, 80 + i as u32);
            let want = direct_weight_grad(&x, &g, &s, n);
            for &isa in &isas {
                let got = weight_grad_on(isa, &x, &g, &s);
                assert_eq!(got.len(), want.len());
                for (j, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() < 1e-3, "{isa:?} {s:?} at {j}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn kernel_untransform_is_the_adjoint_of_the_transform() {
        // <G g G^T, M> = <g, G^T M G> for any g and M.
        let g = values(9, 1);
        let m: [f32; P] = values(P, 2).try_into().unwrap();
        let u = transform_kernel(&g);
        let left: f64 = u.iter().zip(&m).map(|(a, b)| *a as f64 * *b as f64).sum();
        let back = untransform_kernel(&m);
        let right: f64 = g
            .iter()
            .zip(&back)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        assert!((left - right).abs() < 1e-6, "{left} vs {right}");
    }
}
