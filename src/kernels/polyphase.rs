//! Stride-2 convolution as a stride-1 one, so it runs on [`super::conv`] and
//! [`super::wgrad`] (the downsampling convolutions of G and D).
//!
//! Split the zero-padded input into its four phases `P_ab[c, i, j] = xpad[c, 2i + a, 2j + b]`.
//! An output pixel `y[o, i, j] = sum over c, ky, kx of w[o, c, ky, kx] xpad[c, 2i + ky, 2j + kx]`
//! then reads phase `(ky mod 2, kx mod 2)` at `(i + ky / 2, j + kx / 2)`: a stride-1, unpadded
//! convolution of the phases stacked as `4 C_in` channels with a `ceil(k / 2)`-square kernel
//! `w'[o, (a, b, c), dy, dx] = w[o, c, 2 dy + a, 2 dx + b]` (zero where `2 dy + a >= k`). For
//! the 3x3 kernels here that is 16 taps per input channel of which 7 are always zero: the
//! direct convolution skips terms that are zero for a whole panel of outputs (9 multiply-adds
//! per input channel, as the stride-2 convolution itself), and the weight gradient computes
//! only the [`Polyphase::live_terms`]. The kernel is about four times faster than the im2col
//! path.

use rayon::prelude::*;

use super::conv::{self, ConvShape, Plan};
use super::{calls, per_image, plans};

/// A stride-2 convolution and the stride-1 convolution of its phases.
#[derive(Clone, Copy, Debug)]
pub struct Polyphase {
    /// The stride-2 problem (`pad` on each side, zeros).
    pub outer: ConvShape,
    /// The stride-1, unpadded problem on the stacked phases.
    pub inner: ConvShape,
}

impl Polyphase {
    /// The phase problem of `outer`.
    pub fn new(outer: ConvShape) -> Self {
        let k2 = outer.k.div_ceil(2);
        let [oh, ow] = Self::out_size(&outer);
        Self {
            outer,
            inner: ConvShape {
                c_in: 4 * outer.c_in,
                c_out: outer.c_out,
                h: oh + k2 - 1,
                w: ow + k2 - 1,
                k: k2,
                pad: 0,
            },
        }
    }

    /// Output size of the stride-2 convolution `outer`.
    pub fn out_size(outer: &ConvShape) -> [usize; 2] {
        let size = |n: usize| (n + 2 * outer.pad - outer.k) / 2 + 1;
        [size(outer.h), size(outer.w)]
    }

    /// The padded-input position `(Y, X)` that phase pixel `(a, b, i, j)` reads, if inside the
    /// image: `Y = 2i + a - pad`.
    fn source(&self, a: usize, i: usize, pad: usize, len: usize) -> Option<usize> {
        (2 * i + a).checked_sub(pad).filter(|&y| y < len)
    }

    /// One image `[C_in, H, W]` as its stacked phases `[4 C_in, h', w']`.
    pub fn split(&self, x: &[f32]) -> Vec<f32> {
        let s = self.inner;
        let mut out = vec![0.0f32; s.c_in * s.h * s.w];
        self.split_into(x, &mut out);
        out
    }

    /// [`Polyphase::split`] into `out`, which is zeros (they stay where no image pixel lands).
    /// Each task takes one input channel and row phase `a`, and reads each of its image rows
    /// once into both column phases ([`deinterleave`]).
    fn split_into(&self, x: &[f32], out: &mut [f32]) {
        let (o, s) = (self.outer, self.inner);
        let plane = s.h * s.w;
        // Halves of `out` by row phase `a`; in each, the planes of phases (a, 0) and (a, 1).
        out.par_chunks_mut(2 * o.c_in * plane)
            .enumerate()
            .for_each(|(a, half)| {
                let (phase0, phase1) = half.split_at_mut(o.c_in * plane);
                (phase0
                    .par_chunks_mut(plane)
                    .zip(phase1.par_chunks_mut(plane)))
                .enumerate()
                .for_each(|(c, (phase0, phase1))| {
                    let image = &x[c * o.h * o.w..(c + 1) * o.h * o.w];
                    for (i, y) in self.rows(a) {
                        let row = &image[y * o.w..(y + 1) * o.w];
                        let to = i * s.w..(i + 1) * s.w;
                        deinterleave(row, o.pad, (&mut phase0[to.clone()], &mut phase1[to]));
                    }
                });
            });
    }

    /// The gradient of [`Polyphase::split`]: phase gradients `[4 C_in, h', w']` back to the
    /// image `[C_in, H, W]` (each image pixel is read by exactly one phase pixel, or none).
    pub fn merge(&self, phases: &[f32]) -> Vec<f32> {
        let o = self.outer;
        let mut out = vec![0.0f32; o.c_in * o.h * o.w];
        self.merge_into(phases, &mut out);
        out
    }

    /// [`Polyphase::merge`] into `out`, which is zeros (they stay where no phase pixel reads the
    /// image). Each task takes one channel and writes each of its image rows once, from both
    /// column phases ([`interleave`]).
    fn merge_into(&self, phases: &[f32], out: &mut [f32]) {
        let (o, s) = (self.outer, self.inner);
        let (plane, block) = (s.h * s.w, o.c_in * s.h * s.w);
        out.par_chunks_mut(o.h * o.w)
            .enumerate()
            .for_each(|(c, dst)| {
                for a in 0..2 {
                    let phase = |b: usize| &phases[(2 * a + b) * block + c * plane..][..plane];
                    let (phase0, phase1) = (phase(0), phase(1));
                    for (i, y) in self.rows(a) {
                        let from = i * s.w..(i + 1) * s.w;
                        let row = &mut dst[y * o.w..(y + 1) * o.w];
                        interleave((&phase0[from.clone()], &phase1[from]), o.pad, row);
                    }
                }
            });
    }

    /// `(i, y)` for each phase row `i` of row phase `a` that reads image row `y` (inside the
    /// image: `y = 2i + a - pad`).
    fn rows(&self, a: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.inner.h)
            .filter_map(move |i| Some((i, self.source(a, i, self.outer.pad, self.outer.h)?)))
    }

    /// `(o, c, ky, kx)` -> index of `w'[o, (a, b, c), dy, dx]`, for every tap of `w`.
    fn taps(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let (o, s) = (self.outer, self.inner);
        let (k, k2) = (o.k, s.k);
        (0..o.c_out).flat_map(move |out| {
            (0..o.c_in).flat_map(move |c| {
                (0..k * k).map(move |tap| {
                    let (ky, kx) = (tap / k, tap % k);
                    let phase = (ky % 2) * 2 + kx % 2;
                    let to = (((out * 4 + phase) * o.c_in + c) * k2 + ky / 2) * k2 + kx / 2;
                    (((out * o.c_in + c) * k + ky) * k + kx, to)
                })
            })
        })
    }

    /// Weights `[C_out, C_in, k, k]` as the phase kernel `[C_out, 4 C_in, k', k']`.
    pub fn weights(&self, w: &[f32]) -> Vec<f32> {
        let s = self.inner;
        let mut out = vec![0.0f32; s.c_out * s.c_in * s.k * s.k];
        for (from, to) in self.taps() {
            out[to] = w[from];
        }
        out
    }

    /// Which terms `(a, b, c, dy, dx)` of the phase kernel hold a tap of the original kernel
    /// (`2 dy + a < k` and `2 dx + b < k`): the others are zero for every output channel.
    pub fn live_terms(&self) -> Vec<bool> {
        let s = self.inner;
        let terms = s.c_in * s.k * s.k;
        let mut live = vec![false; terms];
        for (_, to) in self
            .taps()
            .take(self.outer.c_in * self.outer.k * self.outer.k)
        {
            live[to % terms] = true;
        }
        live
    }

    /// The gradient of [`Polyphase::weights`]: the phase kernel's gradient back to `[C_out,
    /// C_in, k, k]` (the always-zero taps are dropped).
    pub fn weights_grad(&self, dw: &[f32]) -> Vec<f32> {
        let o = self.outer;
        let mut out = vec![0.0f32; o.c_out * o.c_in * o.k * o.k];
        for (from, to) in self.taps() {
            out[from] = dw[to];
        }
        out
    }

    /// [`Polyphase::split`] of every image of a batch.
    pub fn split_batch(&self, x: &[f32]) -> Vec<f32> {
        per_image(x, self.lens(), |src, dst| self.split_into(src, dst))
    }

    /// [`Polyphase::merge`] of every image of a batch.
    pub fn merge_batch(&self, phases: &[f32]) -> Vec<f32> {
        let (image, stacked) = self.lens();
        per_image(phases, (stacked, image), |src, dst| {
            self.merge_into(src, dst)
        })
    }

    /// Values per image and per stacked-phase image.
    fn lens(&self) -> (usize, usize) {
        let (o, s) = (self.outer, self.inner);
        (o.c_in * o.h * o.w, s.c_in * s.h * s.w)
    }
}

/// A row's two column phases `(phase 0, phase 1)` as `((even, skip), (odd, skip))`: image
/// column `2m` is column `m + skip` of the even phase, `2m + 1` column `m + skip` of the odd one
/// (column `j` of phase `b` reads image column `2j + b - pad`, so the even phase is `pad % 2`).
/// The odd phase's skip is the even one's, or one more (odd `pad`).
fn by_parity<T>(pad: usize, (phase0, phase1): (T, T)) -> ((T, usize), (T, usize)) {
    let (skip_even, skip_odd) = (pad / 2, pad.div_ceil(2));
    match pad % 2 {
        0 => ((phase0, skip_even), (phase1, skip_odd)),
        _ => ((phase1, skip_even), (phase0, skip_odd)),
    }
}

/// One image row into its two column phases (`phases.b[j] = row[2j + b - pad]` where that is
/// inside the row and `j` inside the phase); other columns are left as they are. Pairs go
/// through one loop that the compiler turns into vector shuffles (the phase-by-phase scalar
/// copy it replaced was 30% of a stride-2 layer's time).
fn deinterleave(row: &[f32], pad: usize, phases: (&mut [f32], &mut [f32])) {
    let ((to_even, skip_even), (to_odd, skip_odd)) = by_parity(pad, phases);
    let to_even = to_even.get_mut(skip_even..).unwrap_or_default();
    let to_odd = to_odd.get_mut(skip_odd..).unwrap_or_default();
    let mut done = 0;
    for ((pair, e), o) in row
        .chunks_exact(2)
        .zip(to_even.iter_mut())
        .zip(to_odd.iter_mut())
    {
        (*e, *o) = (pair[0], pair[1]);
        done += 1;
    }
    // The odd phase starts no earlier than the even one (`skip_odd >= skip_even`), so it is
    // done; even columns may remain: the row's last, unpaired one, or those past the odd
    // phase's end.
    for m in done..to_even.len().min(row.len().div_ceil(2)) {
        to_even[m] = row[2 * m];
    }
}

/// The adjoint of [`deinterleave`]: the image row from its two column phases (columns no
/// phase reads are left as they are).
fn interleave(phases: (&[f32], &[f32]), pad: usize, row: &mut [f32]) {
    let ((from_even, skip_even), (from_odd, skip_odd)) = by_parity(pad, phases);
    let from_even = from_even.get(skip_even..).unwrap_or_default();
    let from_odd = from_odd.get(skip_odd..).unwrap_or_default();
    let mut done = 0;
    for ((pair, &e), &o) in row.chunks_exact_mut(2).zip(from_even).zip(from_odd) {
        (pair[0], pair[1]) = (e, o);
        done += 1;
    }
    // As in `deinterleave`, only even columns may remain.
    let len = row.len();
    for m in done..from_even.len().min(len.div_ceil(2)) {
        row[2 * m] = from_even[m];
    }
}

/// Convolution of every image of a batch `x` `[N, C_in, H, W]` with stride 1 or 2 (by the
/// phases) on `conv::planned_batch`; returns `[N, C_out, H_out, W_out]` and `[H_out, W_out]`.
/// With `frozen` (the weight and bias do not change from call to call) the plan may be a
/// kept one (`plans`).
pub fn conv2d_batch(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    stride: usize,
    frozen: bool,
) -> (Vec<f32>, [usize; 2]) {
    let key = plans::Key {
        shape: *s,
        stride,
        input_grad: false,
        weight,
        bias,
    };
    let images = || x.len() / (s.c_in * s.h * s.w).max(1);
    calls::time(
        || calls::label("forward", s, stride, images()),
        || {
            if stride == 2 {
                let p = Polyphase::new(*s);
                let plan = plans::plan(key, frozen, || {
                    Plan::new(&p.weights(weight), bias, &p.inner)
                });
                (
                    conv::planned_batch(&p.split_batch(x), &plan),
                    p.inner.out_size(),
                )
            } else {
                let plan = plans::plan(key, frozen, || Plan::new(weight, bias, s));
                (conv::planned_batch(x, &plan), s.out_size())
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_values::{unpadded, values};

    /// Direct stride-2 summation in f64.
    fn naive(x: &[f32], w: &[f32], o: &ConvShape) -> Vec<f32> {
        let [oh, ow] = Polyphase::out_size(o);
        let mut out = vec![0.0; o.c_out * oh * ow];
        for (idx, value) in out.iter_mut().enumerate() {
            let (oc, i, j) = (idx / (oh * ow), idx / ow % oh, idx % ow);
            let mut sum = 0.0f64;
            for c in 0..o.c_in {
                for ky in 0..o.k {
                    for kx in 0..o.k {
                        let (Some(y), Some(xx)) = (
                            unpadded(2 * i + ky, o.pad, o.h),
                            unpadded(2 * j + kx, o.pad, o.w),
                        ) else {
                            continue;
                        };
                        let wv = w[((oc * o.c_in + c) * o.k + ky) * o.k + kx] as f64;
                        sum += wv * x[(c * o.h + y) * o.w + xx] as f64;
                    }
                }
            }
            *value = sum as f32;
        }
        out
    }

    #[test]
    fn phases_convolve_like_the_stride_2_convolution() {
        if !conv::available() {
            eprintln!("no AVX-512 or AVX2 here: not tested");
            return;
        }
        // Even and odd sizes, pad 1 (zeros) and pad 0 (a pre-padded input), k 3 and 4.
        for (i, &(c_in, c_out, h, w, k, pad)) in [
            (3, 5, 8, 10, 3, 1),
            (2, 4, 9, 7, 3, 1),
            (4, 3, 9, 11, 3, 0),
            (2, 2, 10, 6, 4, 1),
        ]
        .iter()
        .enumerate()
        {
            let outer = ConvShape {
                c_in,
                c_out,
                h,
                w,
                k,
                pad,
            };
            let p = Polyphase::new(outer);
            let x = values(c_in * h * w, i as u32);
            let wt = values(c_out * c_in * k * k, 40 + i as u32);
            let got = conv::conv2d(&p.split(&x), &p.weights(&wt), None, &p.inner);
            let want = naive(&x, &wt, &outer);
            assert_eq!(got.len(), want.len(), "{outer:?}");
            for (g, e) in got.iter().zip(&want) {
                assert!((g - e).abs() < 1e-4, "{outer:?}: {g} vs {e}");
            }
        }
    }

    #[test]
    fn a_3x3_phase_kernel_has_9_live_terms_per_input_channel() {
        // Taps (2 dy + a, 2 dx + b) past the 3x3 kernel are zero for every output: the
        // direct convolution's panels skip them (`conv::tests` checks the skipping itself).
        let outer = ConvShape {
            c_in: 5,
            c_out: 3,
            h: 8,
            w: 8,
            k: 3,
            pad: 1,
        };
        let p = Polyphase::new(outer);
        let w = p.weights(&vec![1.0; 3 * 5 * 9]);
        let terms = p.inner.c_in * p.inner.k * p.inner.k;
        for o in 0..3 {
            let live = w[o * terms..(o + 1) * terms].iter().filter(|&&v| v != 0.0);
            assert_eq!(live.count(), 9 * 5);
        }
        let flags = p.live_terms();
        assert_eq!(flags.iter().filter(|&&l| l).count(), 9 * 5);
        for (t, &l) in flags.iter().enumerate() {
            assert_eq!(l, w[t] != 0.0, "term {t}");
        }
    }

    #[test]
    fn split_reads_the_padded_image_at_each_phase_and_merge_is_its_adjoint() {
        // P_ab[c, i, j] = xpad[c, 2i + a, 2j + b], from the definition; sides even, odd and
        // shorter than the padding, pads 0 to 2.
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum::<f64>();
        for (i, &(h, w, k, pad)) in [
            (8, 10, 3, 1),
            (9, 7, 3, 1),
            (1, 1, 3, 1),
            (3, 4, 3, 0),
            (5, 6, 5, 2),
            (1, 2, 4, 2),
        ]
        .iter()
        .enumerate()
        {
            let outer = ConvShape {
                c_in: 2,
                c_out: 1,
                h,
                w,
                k,
                pad,
            };
            let p = Polyphase::new(outer);
            let x = values(2 * h * w, 7 + i as u32);
            let got = p.split(&x);
            let s = p.inner;
            let xpad = |c: usize, y: usize, xx: usize| {
                let (y, xx) = (y as isize - pad as isize, xx as isize - pad as isize);
                let inside = (0..h as isize).contains(&y) && (0..w as isize).contains(&xx);
                if inside {
                    x[(c * h + y as usize) * w + xx as usize]
                } else {
                    0.0
                }
            };
            for (index, &value) in got.iter().enumerate() {
                let (channel, i, j) = (index / (s.h * s.w), index / s.w % s.h, index % s.w);
                let (phase, c) = (channel / 2, channel % 2);
                let want = xpad(c, 2 * i + phase / 2, 2 * j + phase % 2);
                assert_eq!(value, want, "{outer:?} at {index}");
            }
            let q = values(got.len(), 20 + i as u32);
            let (lhs, rhs) = (dot(&got, &q), dot(&x, &p.merge(&q)));
            assert!((lhs - rhs).abs() < 1e-4, "{outer:?}: {lhs} vs {rhs}");
        }
    }

    #[test]
    fn merge_and_weights_grad_are_the_adjoints() {
        // <split(x), p> = <x, merge(p)> and <weights(w), v> = <w, weights_grad(v)>.
        let outer = ConvShape {
            c_in: 3,
            c_out: 2,
            h: 9,
            w: 8,
            k: 3,
            pad: 1,
        };
        let p = Polyphase::new(outer);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum::<f64>();
        let x = values(3 * 9 * 8, 1);
        let q = values(p.inner.c_in * p.inner.h * p.inner.w, 2);
        assert!((dot(&p.split(&x), &q) - dot(&x, &p.merge(&q))).abs() < 1e-4);
        let w = values(2 * 3 * 9, 3);
        let v = values(2 * p.inner.c_in * 4, 4);
        assert!((dot(&p.weights(&w), &v) - dot(&w, &p.weights_grad(&v))).abs() < 1e-4);
    }
}
