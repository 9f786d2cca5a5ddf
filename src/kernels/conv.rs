//! Stride-1 dense 2-D convolution for x86-64 CPUs with AVX-512 or AVX2 and FMA, without im2col.
//!
//! The input is zero-padded once to `[C_in, H + 2p, W + 2p]`. Output pixel `(y, x)` of channel
//! `o` is then `sum over (c, ky, kx) of w[o, c, ky, kx] * xpad[c, y + ky, x + kx]`: for a run of
//! consecutive `x`, every term `(c, ky, kx)` reads a contiguous run of `xpad` at a fixed offset.
//! So the convolution is a matrix product `W [C_out, K] . B [K, pixels]` whose B is never
//! materialised: the micro-kernel (`kernels::micro`) keeps an 8-channel x 48-pixel block of
//! outputs in 24 vector registers and, for each of the `K = C_in k^2` terms, loads three
//! 16-float vectors of `xpad` at that term's offset and multiplies them by 8 broadcast weights.
//! Weights are packed in 8-channel panels so the broadcasts read memory in order. Rows of the
//! output are shared out to the rayon threads. The `Plan` of a convolution picks its
//! algorithm (Winograd, F(4, 7) along rows, or this direct summation) and lays out its weights.
//!
//! burn-flex 0.21 convolves through im2col tiles of 512 pixels and a general matrix product
//! (`gemm`'s kernels), which reaches about a quarter of this CPU's peak; see
//! `docs/performance.md` for the measurements.

use rayon::prelude::*;

use super::micro::{Micro, Tile};

/// Output channels per micro-kernel call (rows of the register block).
pub(crate) const MR: usize = 8;
/// Floats per AVX-512 vector.
pub(crate) const LANES: usize = 16;
/// Vectors per micro-kernel call along a row (48 pixels).
pub(crate) const NV: usize = 3;
/// Slack after the padded input so the last vector of a row may read past its end.
const SLACK: usize = NV * LANES;

/// A convolution problem: NCHW input of one image, OIHW weight, zero padding `pad`, stride 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Input (and output) height.
    pub h: usize,
    /// Input (and output) width.
    pub w: usize,
    /// Square kernel side (odd).
    pub k: usize,
    /// Zero padding on each side (`k / 2` for same-size output; 0 for a pre-padded input).
    pub pad: usize,
}

impl ConvShape {
    fn out_h(&self) -> usize {
        self.h + 2 * self.pad + 1 - self.k
    }

    fn out_w(&self) -> usize {
        self.w + 2 * self.pad + 1 - self.k
    }

    /// Output size `[H_out, W_out]`.
    pub fn out_size(&self) -> [usize; 2] {
        [self.out_h(), self.out_w()]
    }
}

/// The vector instructions the host kernels run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F: every kernel, Winograd's included.
    Avx512,
    /// AVX2 and FMA (most x86-64 CPUs since 2013-2015 without AVX-512, and virtual machines
    /// that hide it): on 8-float vectors the direct convolution (`micro::micro_upto_avx2`)
    /// and its weight gradient, F(4x4, 3x3) and F(4x4, 2x2) and their weight gradients (the
    /// latter AVX2's alone), F(4, 7) along rows, F(2x2, 3x3)'s weight gradient; F(2x2, 3x3)'s
    /// forward stays AVX-512's.
    Avx2,
}

/// The variable that lowers the host kernels' [`Isa`].
pub const ISA_ENV: &str = "TOONSMITH_CPU_ISA";

impl Isa {
    /// What this CPU offers, or what [`ISA_ENV`] lowers it to ([`Isa::lowered`]; an invalid
    /// value is ignored here: the program checks it at start); read once.
    pub fn detected() -> Option<Isa> {
        static DETECTED: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            let cpu = cpu_isa();
            match super::env_choice(ISA_ENV, |value| Self::lowered(cpu, value)) {
                Ok(Some(chosen)) => chosen,
                _ => cpu,
            }
        })
    }

    /// The kernels' instruction set when `value` of [`ISA_ENV`] lowers `cpu`'s: `avx512` (the
    /// CPU's own), `avx2`, or `none` (burn-flex's convolutions); a set above the CPU's stays the
    /// CPU's. Anything else is an error naming the variable.
    pub fn lowered(cpu: Option<Isa>, value: &str) -> crate::error::Result<Option<Isa>> {
        match value {
            "none" => Ok(None),
            "avx2" => Ok(cpu.map(|_| Isa::Avx2)),
            "avx512" => Ok(cpu),
            _ => Err(crate::error::Error::InvalidConfig {
                field: ISA_ENV,
                value: value.into(),
                expected: "avx512, avx2 or none".into(),
            }),
        }
    }
}

/// The best [`Isa`] this CPU has.
fn cpu_isa() -> Option<Isa> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(Isa::Avx512);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Some(Isa::Avx2);
        }
    }
    None
}

/// Whether this CPU can run [`conv2d`] (AVX-512, or AVX2 with FMA).
pub fn available() -> bool {
    Isa::detected().is_some()
}

/// Whether this CPU runs the AVX-512 kernels (and the one only it has: F(2x2, 3x3)'s
/// forward).
pub fn wide() -> bool {
    Isa::detected() == Some(Isa::Avx512)
}

/// Every [`Isa`] this CPU can run, best first (the kernels' tests check each).
#[cfg(test)]
pub(crate) fn isas_here() -> Vec<Isa> {
    match cpu_isa() {
        Some(Isa::Avx512) => vec![Isa::Avx512, Isa::Avx2],
        Some(Isa::Avx2) => vec![Isa::Avx2],
        None => Vec::new(),
    }
}

/// The micro-kernel of this CPU's [`Isa`].
///
/// # Panics
/// If [`available`] is false.
fn micro_kernel() -> Micro {
    Isa::detected()
        .expect("conv2d needs AVX-512 or AVX2 with FMA")
        .micro_kernel()
}

/// `[C_in, H, W]` zero-padded by `pad` on each side, with [`SLACK`] zeros at the end.
pub(crate) fn pad_input(x: &[f32], s: &ConvShape) -> Vec<f32> {
    let (hp, wp) = (s.h + 2 * s.pad, s.w + 2 * s.pad);
    let mut out = vec![0.0; s.c_in * hp * wp + SLACK];
    out[..s.c_in * hp * wp]
        .par_chunks_mut(hp * wp)
        .zip(x.par_chunks(s.h * s.w))
        .for_each(|(dst, src)| {
            for (y, row) in src.chunks(s.w).enumerate() {
                let start = (y + s.pad) * wp + s.pad;
                dst[start..start + s.w].copy_from_slice(row);
            }
        });
    out
}

/// A direct convolution's weights in panels of [`MR`] output channels, each holding only its
/// live terms: a term `(c, ky, kx)` whose weight is zero for every channel of the panel adds
/// nothing, and is skipped. Those are structural in the phase convolutions: a stride-2 3x3
/// convolution by its phases ([`super::polyphase`]) has 16 terms per input channel of which 7
/// are always zero (9 live), and its input gradient's panels, one phase each, 4, 2, 2 or 1 of
/// 4. (Skipping a zero weight also skips `0 x inf = NaN`: an infinite input value then
/// reaches the output only through its live terms.)
struct Panels {
    /// `weights[(start_p + t) * MR + r]`: live term `t` of panel `p`, output channel
    /// `p * MR + r` (zero past `C_out`).
    weights: Vec<f32>,
    /// Offset in the padded input of each live term, panel after panel ([`term_offsets`]).
    offsets: Vec<usize>,
    /// Where each panel's live terms start, and after the last, their total.
    starts: Vec<usize>,
}

impl Panels {
    /// `weight` `[C_out, C_in, k, k]`, each term at `offsets[term]`.
    fn pack(weight: &[f32], c_out: usize, offsets: &[usize]) -> Self {
        let terms = offsets.len();
        let mut panels = Self {
            weights: Vec::with_capacity(c_out.div_ceil(MR) * MR * terms),
            offsets: Vec::with_capacity(c_out.div_ceil(MR) * terms),
            starts: vec![0],
        };
        for p in 0..c_out.div_ceil(MR) {
            let outputs = p * MR..c_out.min(p * MR + MR);
            for (t, &offset) in offsets.iter().enumerate() {
                let column = outputs.clone().map(|o| weight[o * terms + t]);
                if column.clone().all(|v| v == 0.0) {
                    continue;
                }
                panels.offsets.push(offset);
                panels.weights.extend(column);
                panels.weights.resize(panels.offsets.len() * MR, 0.0);
            }
            panels.starts.push(panels.offsets.len());
        }
        panels
    }

    /// Panel `p`'s weights and offsets.
    fn panel(&self, p: usize) -> (&[f32], &[usize]) {
        let terms = self.starts[p]..self.starts[p + 1];
        (
            &self.weights[terms.start * MR..terms.end * MR],
            &self.offsets[terms],
        )
    }
}

/// Offset in the padded input of each term `(c, ky, kx)`, in the weight's order.
pub(crate) fn term_offsets(s: &ConvShape) -> Vec<usize> {
    let (hp, wp) = (s.h + 2 * s.pad, s.w + 2 * s.pad);
    let mut offsets = Vec::with_capacity(s.c_in * s.k * s.k);
    for c in 0..s.c_in {
        for ky in 0..s.k {
            for kx in 0..s.k {
                offsets.push(c * hp * wp + ky * wp + kx);
            }
        }
    }
    offsets
}

/// Pointer to the output, shared by the threads that write disjoint rows of it.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: each thread writes only the rows of the output it was given.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the `Send` wrapper, not the raw field).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Convolution of one image: `x` `[C_in, H, W]`, `weight` `[C_out, C_in, k, k]`, optional
/// `bias` `[C_out]`; returns `[C_out, H_out, W_out]`.
///
/// # Panics
/// If the slices do not match `s` or [`available`] is false.
pub fn conv2d(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> Vec<f32> {
    let [oh, ow] = s.out_size();
    let mut out = vec![0.0f32; s.c_out * oh * ow];
    conv2d_into(x, weight, bias, s, &mut out);
    out
}

/// A 1x1 convolution without padding sees the image as `[C, pixels]`, whatever its rows: the
/// same pixels cut into the rows (at least 8, for the threads) that leave the least of the
/// last 48-pixel micro-kernel block empty, when that beats the image's own rows. (A 64-pixel
/// row runs one full block and one third-full: the residual blocks' 1x1 convolutions at
/// 256x256 ran at 250-310 GFLOP/s.)
fn recut_1x1(s: &ConvShape) -> Option<ConvShape> {
    let block = NV * LANES;
    let waste = |w: usize| (w.div_ceil(block) * block - w) as f64 / w as f64;
    if s.k != 1 || s.pad != 0 || s.h < 8 {
        return None;
    }
    let pixels = s.h * s.w;
    let rows = (8..=s.h)
        .filter(|&r| pixels.is_multiple_of(r))
        .min_by(|&a, &b| waste(pixels / a).total_cmp(&waste(pixels / b)))?;
    (waste(pixels / rows) < waste(s.w)).then_some(ConvShape {
        h: rows,
        w: pixels / rows,
        ..*s
    })
}

/// [`conv2d`] into `out` `[C_out, H_out, W_out]`.
fn conv2d_into(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: &ConvShape, out: &mut [f32]) {
    Plan::new(weight, bias, s).run(x, out);
}

/// One convolution's weights laid out for the algorithm that runs it, once for every image of
/// a batch (a 512 -> 512 3x3 layer's Winograd transform alone took 4.4 ms, 40% of its 32x32
/// convolution), and kept between calls for weights that do not change ([`super::plans`]).
pub(crate) struct Plan {
    /// The shape the algorithm sees (a 1x1 convolution's pixels re-cut: [`recut_1x1`]).
    shape: ConvShape,
    /// The bias, zero-padded to whole panels of [`MR`] output channels.
    bias: Vec<f32>,
    algorithm: Algorithm,
}

enum Algorithm {
    /// F(2x2, 3x3) on the transformed weights ([`super::winograd::transform_weights`]).
    Winograd(Vec<f32>),
    /// F(4x4, 3x3) on the transformed weights ([`super::winograd4::transform_weights`]).
    Winograd4(Vec<f32>),
    /// F(4, 7) along rows on the transformed weights
    /// ([`super::winograd_rows::transform_weights`]).
    Rows7(Vec<f32>),
    /// Direct summation of each panel's live terms ([`Panels`]).
    Direct(Panels),
}

impl Plan {
    /// # Panics
    /// If the slices do not match `s` or [`available`] is false.
    pub(crate) fn new(weight: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> Self {
        assert!(available(), "conv2d needs AVX-512 or AVX2 with FMA");
        assert_eq!(weight.len(), s.c_out * s.c_in * s.k * s.k);
        let mut bias_padded = vec![0.0; s.c_out.div_ceil(MR) * MR];
        if let Some(b) = bias {
            bias_padded[..s.c_out].copy_from_slice(b);
        }
        let shape = recut_1x1(s).unwrap_or(*s);
        let algorithm = if super::winograd4::applies(s) {
            Algorithm::Winograd4(super::winograd4::transform_weights(weight, s))
        } else if super::winograd::applies(s) {
            Algorithm::Winograd(super::winograd::transform_weights(weight, s))
        } else if super::winograd_rows::applies(s) {
            Algorithm::Rows7(super::winograd_rows::transform_weights(weight, s))
        } else {
            Algorithm::Direct(Panels::pack(weight, s.c_out, &term_offsets(&shape)))
        };
        Self {
            shape,
            bias: bias_padded,
            algorithm,
        }
    }

    /// The bytes of the plan's weights and bias.
    pub(crate) fn bytes(&self) -> usize {
        use std::mem::size_of_val;
        let weights = match &self.algorithm {
            Algorithm::Winograd(packed)
            | Algorithm::Winograd4(packed)
            | Algorithm::Rows7(packed) => size_of_val(&packed[..]),
            Algorithm::Direct(p) => {
                size_of_val(&p.weights[..])
                    + size_of_val(&p.offsets[..])
                    + size_of_val(&p.starts[..])
            }
        };
        weights + size_of_val(&self.bias[..])
    }

    /// The convolution of one image `x` `[C_in, H, W]` into `out` `[C_out, H_out, W_out]`.
    ///
    /// # Panics
    /// If the slices do not match the plan's shape.
    fn run(&self, x: &[f32], out: &mut [f32]) {
        let s = &self.shape;
        assert_eq!(x.len(), s.c_in * s.h * s.w);
        assert_eq!(out.len(), s.c_out * s.out_h() * s.out_w());
        match &self.algorithm {
            Algorithm::Winograd(packed) => {
                super::winograd::conv2d_into(x, packed, &self.bias, s, out)
            }
            Algorithm::Winograd4(packed) => {
                super::winograd4::conv2d_into(x, packed, &self.bias, s, out)
            }
            Algorithm::Rows7(packed) => {
                super::winograd_rows::conv2d_into(x, packed, &self.bias, s, out)
            }
            Algorithm::Direct(panels) => self.direct(x, panels, out),
        }
    }

    fn direct(&self, x: &[f32], panels: &Panels, out: &mut [f32]) {
        let s = &self.shape;
        if s.k == 1 && s.pad == 0 {
            return self.pointwise(x, panels, out);
        }
        let xpad = pad_input(x, s);
        let ptr = OutPtr(out.as_mut_ptr());
        let wp = s.w + 2 * s.pad;
        let micro = micro_kernel();
        (0..s.out_h()).into_par_iter().for_each(|y| {
            // SAFETY: `micro` is this CPU's; row `y` of every output channel is written by this
            // iteration only; reads stay inside `xpad` (which has SLACK floats of slack past
            // the last row) and `panels`.
            unsafe { conv_row(&xpad[y * wp..], panels, &self.bias, ptr.get(), y, s, micro) };
        });
    }

    /// A 1x1 convolution without padding: per block of 48 pixels of a row, the block's values
    /// of every input channel copied into one contiguous buffer (each term's three vectors
    /// were three cache lines of a different channel plane), then every panel of output
    /// channels on it.
    fn pointwise(&self, x: &[f32], panels: &Panels, out: &mut [f32]) {
        let s = &self.shape;
        let plane = s.h * s.w;
        let block = NV * LANES;
        // Each live term's offset in the buffer: its channel's run of 48.
        let offsets: Vec<usize> = panels.offsets.iter().map(|&o| o / plane * block).collect();
        let ptr = OutPtr(out.as_mut_ptr());
        let micro = micro_kernel();
        (0..s.h).into_par_iter().for_each_init(
            || vec![0.0f32; s.c_in * block],
            |buf, y| {
                let mut x0 = 0;
                while x0 < s.w {
                    let n = (s.w - x0).min(block);
                    for (c, dst) in buf.chunks_mut(block).enumerate() {
                        dst[..n].copy_from_slice(&x[c * plane + y * s.w + x0..][..n]);
                    }
                    // SAFETY: `micro` is this CPU's; row `y` of every output channel is written
                    // by this iteration only; reads stay inside `buf`.
                    let at = (y, x0, n);
                    unsafe {
                        pointwise_block(buf, panels, &offsets, &self.bias, ptr.get(), at, s, micro)
                    };
                    x0 += n;
                }
            },
        );
    }
}

/// Pixels `x0..x0 + n` of output row `y` of every output channel, from `buf` (the block's
/// input, 48 values per channel), by `micro`.
#[allow(clippy::too_many_arguments)]
unsafe fn pointwise_block(
    buf: &[f32],
    panels: &Panels,
    offsets: &[usize],
    bias: &[f32],
    out: *mut f32,
    (y, x0, n): (usize, usize, usize),
    s: &ConvShape,
    micro: Micro,
) {
    let plane = s.h * s.w;
    for p in 0..s.c_out.div_ceil(MR) {
        let (panel, _) = panels.panel(p);
        let terms = panels.starts[p]..panels.starts[p + 1];
        let tile = Tile {
            panel,
            offsets: &offsets[terms],
            bias: &bias[p * MR..p * MR + MR],
            // SAFETY: see `Plan::pointwise`.
            dst: unsafe { out.add(p * MR * plane + y * s.w + x0) },
            plane,
            rows: MR.min(s.c_out - p * MR),
        };
        unsafe { micro(&tile, buf.as_ptr(), n) };
    }
}

/// [`conv2d`] of every image of a batch `x` `[N, C_in, H, W]`; returns `[N, C_out, H_out, W_out]`.
pub fn conv2d_batch(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> Vec<f32> {
    planned_batch(x, &Plan::new(weight, bias, s))
}

/// [`conv2d_batch`] by `plan`.
pub(crate) fn planned_batch(x: &[f32], plan: &Plan) -> Vec<f32> {
    let s = &plan.shape;
    let [oh, ow] = s.out_size();
    let lens = (s.c_in * s.h * s.w, s.c_out * oh * ow);
    super::per_image(x, lens, |image, dst| plan.run(image, dst))
}

/// One output row `y` of every output channel, by `micro`.
unsafe fn conv_row(
    xrow: &[f32],
    panels: &Panels,
    bias: &[f32],
    out: *mut f32,
    y: usize,
    s: &ConvShape,
    micro: Micro,
) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let plane = oh * ow;
    for p in 0..s.c_out.div_ceil(MR) {
        let (panel, offsets) = panels.panel(p);
        let rows = MR.min(s.c_out - p * MR);
        let bias = &bias[p * MR..p * MR + MR];
        let mut x0 = 0;
        while x0 < ow {
            let left = ow - x0;
            // SAFETY: see `conv2d`; `dst` is row `y`, column `x0` of channel `p * MR`.
            let dst = unsafe { out.add(p * MR * plane + y * ow + x0) };
            let src = unsafe { xrow.as_ptr().add(x0) };
            let tile = Tile {
                panel,
                offsets,
                bias,
                dst,
                plane,
                rows,
            };
            let n = left.min(NV * LANES);
            unsafe { micro(&tile, src, n) };
            x0 += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_values::{direct_conv, values};

    #[test]
    fn the_variable_only_lowers_the_instruction_set() {
        let (wide, avx2) = (Some(Isa::Avx512), Some(Isa::Avx2));
        assert_eq!(Isa::lowered(wide, "avx2").unwrap(), avx2);
        assert_eq!(Isa::lowered(wide, "avx512").unwrap(), wide);
        assert_eq!(
            Isa::lowered(avx2, "avx512").unwrap(),
            avx2,
            "never above the CPU's"
        );
        assert_eq!(Isa::lowered(None, "avx2").unwrap(), None);
        assert_eq!(Isa::lowered(wide, "none").unwrap(), None);
        let err = Isa::lowered(wide, "sse").unwrap_err().to_string();
        assert!(err.contains(ISA_ENV) && err.contains("sse"), "{err}");
    }

    #[test]
    fn recut_1x1_rows_keep_the_pixels_and_fill_blocks_better() {
        let s = |k, pad, h, w| ConvShape {
            c_in: 4,
            c_out: 4,
            h,
            w,
            k,
            pad,
        };
        let r = recut_1x1(&s(1, 0, 64, 64)).expect("64-pixel rows waste a third of a block");
        assert_eq!(r.h * r.w, 64 * 64);
        assert!(r.h >= 8 && r.w.is_multiple_of(16) && r.w > 64, "{r:?}");
        assert!(
            recut_1x1(&s(1, 0, 64, 96)).is_none(),
            "96 = two full blocks"
        );
        assert!(recut_1x1(&s(3, 1, 64, 64)).is_none());
        assert!(recut_1x1(&s(1, 0, 4, 64)).is_none());
    }

    #[test]
    fn matches_direct_summation() {
        if !available() {
            eprintln!("no AVX-512 or AVX2 here: conv2d not tested");
            return;
        }
        // Odd widths (tails of 1 and 2 vectors), channel counts that are not multiples of 8,
        // kernels 1, 3, 7, and a pre-padded input (pad 0).
        let shapes = [
            (3, 5, 9, 53, 7, 3),
            (4, 8, 6, 16, 3, 1),
            (9, 3, 5, 100, 1, 0),
            (5, 9, 16, 20, 1, 0),
            (2, 17, 7, 49, 3, 0),
            (16, 12, 4, 33, 3, 1),
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
            let x = values(c_in * h * w, i as u32);
            let wt = values(c_out * c_in * k * k, 99 + i as u32);
            let b = values(c_out, 7);
            let bias = (i % 2 == 0).then_some(b.as_slice());
            let got = conv2d(&x, &wt, bias, &s);
            let want = direct_conv(&x, &wt, bias, &s);
            assert_eq!(got.len(), want.len());
            for (j, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!((g - e).abs() < 1e-4, "{s:?} at {j}: {g} vs {e}");
            }
        }
    }

    #[test]
    fn terms_zero_for_a_whole_panel_are_skipped_and_change_nothing() {
        if !available() {
            eprintln!("no AVX-512 or AVX2 here: conv2d not tested");
            return;
        }
        // 20 output channels (panels of 8, 8, 4), 3 x 3 x 3 = 27 terms. Panel 0: input
        // channel 1 zero for all its outputs (9 terms skipped) and tap (0, 0) of channel 0 zero
        // for all but output 3 (kept); panel 1: every weight zero (bias only); panel 2: tap
        // (2, 2) of every channel zero (3 skipped).
        let s = ConvShape {
            c_in: 3,
            c_out: 20,
            h: 7,
            w: 19,
            k: 3,
            pad: 1,
        };
        let mut wt = values(20 * 27, 5);
        for o in 0..20 {
            let kernel = &mut wt[o * 27..(o + 1) * 27];
            match o {
                0..=7 => {
                    kernel[9..18].fill(0.0);
                    if o != 3 {
                        kernel[0] = 0.0;
                    }
                }
                8..=15 => kernel.fill(0.0),
                _ => (0..3).for_each(|c| kernel[c * 9 + 8] = 0.0),
            }
        }
        let panels = Panels::pack(&wt, s.c_out, &term_offsets(&s));
        assert_eq!(panels.starts, [0, 18, 18, 18 + 24]);
        let x = values(3 * 7 * 19, 6);
        let b = values(20, 7);
        let got = conv2d(&x, &wt, Some(&b), &s);
        let want = direct_conv(&x, &wt, Some(&b), &s);
        for (j, (g, e)) in got.iter().zip(&want).enumerate() {
            assert!((g - e).abs() < 1e-4, "at {j}: {g} vs {e}");
        }
    }

    #[test]
    fn a_batch_shares_one_plan_and_keeps_its_images_apart() {
        if !available() {
            eprintln!("no AVX-512 or AVX2 here: conv2d_batch not tested");
            return;
        }
        // One shape of each algorithm: Winograd (3x3, 80 tiles) and direct (7x7).
        for (i, (k, pad)) in [(3, 1), (7, 3)].into_iter().enumerate() {
            let s = ConvShape {
                c_in: 16,
                c_out: 12,
                h: 16,
                w: 20,
                k,
                pad,
            };
            assert_eq!(super::super::winograd::applies(&s), k == 3 && wide());
            let image = s.c_in * s.h * s.w;
            let x = values(3 * image, 20 + i as u32);
            let wt = values(s.c_out * s.c_in * k * k, 30 + i as u32);
            let b = values(s.c_out, 40);
            let got = conv2d_batch(&x, &wt, Some(&b), &s);
            let want: Vec<f32> = x
                .chunks(image)
                .flat_map(|one| direct_conv(one, &wt, Some(&b), &s))
                .collect();
            assert_eq!(got.len(), want.len());
            for (j, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!((g - e).abs() < 1e-4, "{s:?} at {j}: {g} vs {e}");
            }
        }
    }
}
