//! Stride-1 dense 2-D convolution for x86-64 CPUs with AVX-512, without im2col.
//!
//! The input is zero-padded once to `[C_in, H + 2p, W + 2p]`. Output pixel `(y, x)` of channel
//! `o` is then `sum over (c, ky, kx) of w[o, c, ky, kx] * xpad[c, y + ky, x + kx]`: for a run of
//! consecutive `x`, every term `(c, ky, kx)` reads a contiguous run of `xpad` at a fixed offset.
//! So the convolution is a matrix product `W [C_out, K] . B [K, pixels]` whose B is never
//! materialised: the micro-kernel keeps an 8-channel x 48-pixel block of outputs in 24 vector
//! registers and, for each of the `K = C_in k^2` terms, loads three 16-float vectors of `xpad`
//! at that term's offset and multiplies them by 8 broadcast weights. Weights are packed in
//! 8-channel panels so the broadcasts read memory in order. Rows of the output are shared out
//! to the rayon threads.
//!
//! burn-flex 0.21 convolves through im2col tiles of 512 pixels and a general matrix product
//! (`gemm`'s kernels), which reaches about a quarter of this CPU's peak; see
//! `docs/performance.md` for the measurements.

use rayon::prelude::*;

/// Output channels per micro-kernel call (rows of the register block).
pub(crate) const MR: usize = 8;
/// Floats per AVX-512 vector.
pub(crate) const LANES: usize = 16;
/// Vectors per micro-kernel call along a row (48 pixels).
const NV: usize = 3;
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
    /// that hide it): on 8-float vectors the direct convolution ([`micro_upto_avx2`]) and its
    /// weight gradient, F(4x4, 3x3) and F(4x4, 2x2) and their weight gradients (the latter
    /// AVX2's alone), F(4, 7) along rows, F(2x2, 3x3)'s weight gradient; F(2x2, 3x3)'s
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

    /// This instruction set's micro-kernel.
    pub(crate) fn micro_kernel(self) -> Micro {
        #[cfg(target_arch = "x86_64")]
        match self {
            Isa::Avx512 => micro_upto,
            Isa::Avx2 => micro_upto_avx2,
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no instruction set is detected off x86-64")
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

/// A micro-kernel: [`micro_upto`] or [`micro_upto_avx2`].
pub(crate) type Micro = unsafe fn(&Tile, *const f32, usize);

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

/// Where one micro-kernel call reads its weights and writes its outputs.
pub(crate) struct Tile<'a> {
    pub(crate) panel: &'a [f32],
    pub(crate) offsets: &'a [usize],
    pub(crate) bias: &'a [f32],
    pub(crate) dst: *mut f32,
    pub(crate) plane: usize,
    pub(crate) rows: usize,
}

/// [`micro`] on `n` pixels (1 to 48): as many vectors as they need, the last stored under a
/// mask.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn micro_upto(t: &Tile, src: *const f32, n: usize) {
    let nv = n.div_ceil(LANES);
    let tail = n - (nv - 1) * LANES;
    let mask = if tail == LANES {
        u16::MAX
    } else {
        (1u16 << tail) - 1
    };
    // SAFETY: as the caller's call of `micro` would be.
    match nv {
        1 => unsafe { micro::<1>(t, src, mask) },
        2 => unsafe { micro::<2>(t, src, mask) },
        _ => unsafe { micro::<NV>(t, src, mask) },
    }
}

/// `MR x (V * 16)` outputs: every term's `V` input vectors times 8 broadcast weights, summed
/// in registers, plus the bias, stored with `mask` on the last vector.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn micro<const V: usize>(t: &Tile, src: *const f32, mask: u16) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); V]; MR];
    let mut a = t.panel.as_ptr();
    for &offset in t.offsets {
        // SAFETY: `src + offset + V * 16` stays inside the padded input (see `conv2d`).
        let b = unsafe { src.add(offset) };
        let mut bv = [_mm512_setzero_ps(); V];
        for (v, slot) in bv.iter_mut().enumerate() {
            *slot = unsafe { _mm512_loadu_ps(b.add(v * LANES)) };
        }
        for row in acc.iter_mut() {
            let w = _mm512_set1_ps(unsafe { *a });
            a = unsafe { a.add(1) };
            for v in 0..V {
                row[v] = _mm512_fmadd_ps(w, bv[v], row[v]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate().take(t.rows) {
        let bias = _mm512_set1_ps(t.bias[r]);
        let dst = unsafe { t.dst.add(r * t.plane) };
        for (v, value) in row.iter().enumerate() {
            let value = _mm512_add_ps(*value, bias);
            let at = unsafe { dst.add(v * LANES) };
            if v + 1 == V {
                unsafe { _mm512_mask_storeu_ps(at, mask, value) };
            } else {
                unsafe { _mm512_storeu_ps(at, value) };
            }
        }
    }
}

/// Floats per AVX2 vector.
pub(crate) const LANES8: usize = 8;
/// Output channels per AVX2 register block.
const ROWS_AVX2: usize = 4;

/// [`micro_upto`] on AVX2 and FMA: the same `MR x n` outputs (`n` up to 48, from the same
/// panels and offsets) in register blocks of 4 channels x 24 pixels ([`block_4x24`]: 12 of
/// AVX2's 16 registers accumulate, 3 hold the term's input vectors, 1 the broadcast weight),
/// and a last block of 4 x 16 ([`block_4x16`]) where 16 pixels or fewer are left; one pass
/// over the terms per block. Measured on 2 Zen 4 cores without AVX-512 (G's 256x256 forward,
/// all convolutions direct): intrinsics 4 x 16 388 ms, 8 x 8 413 ms, 4 x 24 643 ms (the
/// compiler kept an accumulator on the stack, hence the assembly).
///
/// # Safety
/// As [`micro_upto`]'s, with AVX2 and FMA in place of AVX-512: every term reads at most 48
/// floats from `src + offset` (24 per block of 24 pixels, 16 for the last block of 16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn micro_upto_avx2(t: &Tile, src: *const f32, n: usize) {
    let mut pixel = 0;
    while pixel < n {
        let base = src.wrapping_add(pixel);
        // SAFETY: the caller's (above).
        if n - pixel > 2 * LANES8 {
            unsafe { block_avx2::<3>(t, base, pixel, n, block_4x24) };
            pixel += 3 * LANES8;
        } else {
            unsafe { block_avx2::<2>(t, base, pixel, n, block_4x16) };
            pixel += 2 * LANES8;
        }
    }
}

/// Terms per pass of [`block_avx2`] over one group of rows: 128 terms of 24 pixels touch up to
/// 256 cache lines of input (16 KiB, half a Zen 4 core's L1), which the next group of rows
/// then finds in L1; over all terms at once, a 1x1 convolution from 256 channels (48 KiB per
/// block of 48 pixels) would read its input from L2 for the second group. Chosen by that
/// arithmetic: on 2 noisy Zen 4 cores, that layer (`conv_layers 64 64 256 256 1 1 0 1`) timed
/// the same both ways and as 4 x 16 (best of 6 runs 4.24-4.25 ms each).
const TERMS_L1: usize = 128;

/// Every row of the tile at pixels `pixel..n.min(pixel + V * 8)` (inputs at `base`): per chunk
/// of [`TERMS_L1`] terms, each group of 4 rows adds the chunk's products to its sums (`sums`,
/// [`block_4x16`] or [`block_4x24`]); then the sums are stored.
///
/// # Safety
/// AVX2 and FMA; as [`micro_upto_avx2`]'s, for this block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2<const V: usize>(
    t: &Tile,
    base: *const f32,
    pixel: usize,
    n: usize,
    sums: unsafe fn(Sums<V>, *const f32, &[usize], *const f32) -> Sums<V>,
) {
    use std::arch::x86_64::*;
    let groups = t.rows.div_ceil(ROWS_AVX2);
    let zeros = || [[_mm256_setzero_ps(); V]; ROWS_AVX2];
    // Rows `4 g..4 g + 4` of the panel's weights for the terms of chunk `c`.
    let weights = |c: usize, g: usize| {
        t.panel
            .as_ptr()
            .wrapping_add(c * TERMS_L1 * MR + g * ROWS_AVX2)
    };
    // The first chunk starts from zeros in registers: zeroing both groups' sums in memory
    // first was a 768-byte `memset` call per block (1.3% of the 1920x1080 forward).
    let mut chunks = t.offsets.chunks(TERMS_L1);
    let first = chunks.next().unwrap_or(&[]);
    let mut acc: [Sums<V>; MR / ROWS_AVX2] = std::array::from_fn(|g| match g < groups {
        // SAFETY: the caller's; `a` walks the panel's `MR` weights per term of the chunk.
        true => unsafe { sums(zeros(), base, first, weights(0, g)) },
        false => zeros(),
    });
    for (c, chunk) in chunks.enumerate() {
        for (g, acc) in acc.iter_mut().enumerate().take(groups) {
            // SAFETY: as above, for chunk `c + 1`.
            *acc = unsafe { sums(*acc, base, chunk, weights(c + 1, g)) };
        }
    }
    for (g, acc) in acc.iter().enumerate().take(groups) {
        // SAFETY: the caller's.
        unsafe { store_block(t, g * ROWS_AVX2, pixel, n, acc) };
    }
}

/// Four rows of `V` vectors of sums, each row the weights at `a + r` (stepping by `MR` per
/// term) times the `V * 8` inputs at `base + offset`.
#[cfg(target_arch = "x86_64")]
type Sums<const V: usize> = [[std::arch::x86_64::__m256; V]; ROWS_AVX2];

/// `acc` plus the products of a block of 4 channels x 16 pixels.
///
/// # Safety
/// AVX2 and FMA; every term reads 16 floats at `base + offset` and 4 at `a + term * MR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_4x16(
    mut acc: Sums<2>,
    base: *const f32,
    offsets: &[usize],
    mut a: *const f32,
) -> Sums<2> {
    use std::arch::x86_64::*;
    for &offset in offsets {
        // SAFETY: the caller's.
        unsafe {
            let x = [0, LANES8].map(|v| _mm256_loadu_ps(base.add(offset + v)));
            for (r, value) in acc.iter_mut().enumerate() {
                let w = _mm256_broadcast_ss(&*a.add(r));
                value[0] = _mm256_fmadd_ps(w, x[0], value[0]);
                value[1] = _mm256_fmadd_ps(w, x[1], value[1]);
            }
            a = a.add(MR);
        }
    }
    acc
}

/// `acc` plus the products of a block of 4 channels x 24 pixels, the term loop in assembly
/// so that all 12 accumulators stay in registers (`ymm0`-`ymm11`; `ymm12`-`ymm14` the
/// inputs, `ymm15` the weight).
///
/// # Safety
/// AVX2 and FMA; every term reads 24 floats at `base + offset` and 4 at `a + term * MR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_4x24(acc: Sums<3>, base: *const f32, offsets: &[usize], a: *const f32) -> Sums<3> {
    use std::arch::{asm, x86_64::__m256};
    // The assembly steps the weights by 32 bytes (`MR` floats) and reads rows 0-3 of them.
    const { assert!(MR == 8 && ROWS_AVX2 == 4 && LANES8 == 8) };
    let (c0, c1, c2, c3, c4, c5): (__m256, __m256, __m256, __m256, __m256, __m256);
    let (c6, c7, c8, c9, c10, c11): (__m256, __m256, __m256, __m256, __m256, __m256);
    // SAFETY: the caller's; the loop reads only what the contract names and writes no memory.
    unsafe {
        asm!(
            "test {n}, {n}",
            "jz 3f",
            "2:",
            "mov {o}, qword ptr [{offs}]",
            "vmovups ymm12, ymmword ptr [{base} + 4*{o}]",
            "vmovups ymm13, ymmword ptr [{base} + 4*{o} + 32]",
            "vmovups ymm14, ymmword ptr [{base} + 4*{o} + 64]",
            "vbroadcastss ymm15, dword ptr [{a}]",
            "vfmadd231ps ymm0, ymm15, ymm12",
            "vfmadd231ps ymm1, ymm15, ymm13",
            "vfmadd231ps ymm2, ymm15, ymm14",
            "vbroadcastss ymm15, dword ptr [{a} + 4]",
            "vfmadd231ps ymm3, ymm15, ymm12",
            "vfmadd231ps ymm4, ymm15, ymm13",
            "vfmadd231ps ymm5, ymm15, ymm14",
            "vbroadcastss ymm15, dword ptr [{a} + 8]",
            "vfmadd231ps ymm6, ymm15, ymm12",
            "vfmadd231ps ymm7, ymm15, ymm13",
            "vfmadd231ps ymm8, ymm15, ymm14",
            "vbroadcastss ymm15, dword ptr [{a} + 12]",
            "vfmadd231ps ymm9, ymm15, ymm12",
            "vfmadd231ps ymm10, ymm15, ymm13",
            "vfmadd231ps ymm11, ymm15, ymm14",
            "add {offs}, 8",
            "add {a}, 32",
            "dec {n}",
            "jnz 2b",
            "3:",
            base = in(reg) base,
            offs = inout(reg) offsets.as_ptr() => _,
            a = inout(reg) a => _,
            n = inout(reg) offsets.len() => _,
            o = out(reg) _,
            inout("ymm0") acc[0][0] => c0,
            inout("ymm1") acc[0][1] => c1,
            inout("ymm2") acc[0][2] => c2,
            inout("ymm3") acc[1][0] => c3,
            inout("ymm4") acc[1][1] => c4,
            inout("ymm5") acc[1][2] => c5,
            inout("ymm6") acc[2][0] => c6,
            inout("ymm7") acc[2][1] => c7,
            inout("ymm8") acc[2][2] => c8,
            inout("ymm9") acc[3][0] => c9,
            inout("ymm10") acc[3][1] => c10,
            inout("ymm11") acc[3][2] => c11,
            out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
            options(nostack, readonly),
        );
    }
    [[c0, c1, c2], [c3, c4, c5], [c6, c7, c8], [c9, c10, c11]]
}

/// Rows `first..first + 4` (those below `t.rows`) of a block's sums plus their biases, stored
/// at pixels `pixel..n.min(pixel + V * 8)`, the last vector under a mask.
///
/// # Safety
/// AVX2; the tile's rows hold `n` pixels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn store_block<const V: usize>(
    t: &Tile,
    first: usize,
    pixel: usize,
    n: usize,
    acc: &Sums<V>,
) {
    use std::arch::x86_64::*;
    for (o, row) in (first..t.rows).zip(acc) {
        let bias = _mm256_set1_ps(t.bias[o]);
        for (v, value) in row.iter().enumerate() {
            let at = pixel + v * LANES8;
            if at >= n {
                break;
            }
            let value = _mm256_add_ps(*value, bias);
            // SAFETY: row `o` of the tile, pixels `at..n.min(at + 8)`.
            unsafe {
                let dst = t.dst.add(o * t.plane + at);
                store8(dst, at + LANES8 <= n, mask8(n - at), value);
            }
        }
    }
}

/// Stores `value` at `dst`: whole, or under `mask` (`whole` false: the last, partial vector of
/// a run). AMD's masked stores (`vmaskmovps`) are several times slower than whole ones: with
/// every store of the AVX2 Winograd transforms masked, F(4x4, 3x3) 64 -> 64 at 256x256 took
/// 21 ms instead of 16 (with its output transform's interleaving by shuffles).
///
/// # Safety
/// AVX2 is available; the 8 floats at `dst` (the masked ones where `whole` is false) are
/// writable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn store8(
    dst: *mut f32,
    whole: bool,
    mask: std::arch::x86_64::__m256i,
    value: std::arch::x86_64::__m256,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        if whole {
            _mm256_storeu_ps(dst, value);
        } else {
            _mm256_maskstore_ps(dst, mask, value);
        }
    }
}

/// AVX2 store mask of the first `n` of 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) fn mask8(n: usize) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let n = n.min(LANES8) as i32;
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
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

    /// The AVX2 micro-kernel, on any CPU with AVX2 (AVX-512 ones included, where the
    /// convolution itself runs the AVX-512 one), against scalar sums: every pixel count 1-48
    /// (full vectors, a masked last one), 3, 4, 5 and 8 rows, terms at scattered offsets: none
    /// (the bias alone), 7, and 300 (three chunks of [`TERMS_L1`], the last one short).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_micro_kernel_matches_scalar_sums() {
        if !isas_here().contains(&Isa::Avx2) {
            eprintln!("no AVX2 here: the AVX2 micro-kernel not tested");
            return;
        }
        let input = values(201 + 48 + 8, 11);
        let bias = values(MR, 13);
        let plane = 56;
        let term_sets = [
            vec![],
            vec![0usize, 5, 64, 67, 130, 200, 201],
            (0..300).map(|t| t * 37 % 202).collect(),
        ];
        for offsets in &term_sets {
            let panel = values(offsets.len() * MR, 12);
            for (rows, n) in [3, 4, 5, MR]
                .into_iter()
                .flat_map(|r| (1..=48).map(move |n| (r, n)))
            {
                // A sentinel in every place the kernel must not write.
                let mut out = vec![f32::NAN; MR * plane];
                let tile = Tile {
                    panel: &panel,
                    offsets,
                    bias: &bias,
                    dst: out.as_mut_ptr(),
                    plane,
                    rows,
                };
                // SAFETY: AVX2 and FMA were detected; each term reads at most 48 floats past
                // its offset, inside `input`; the tile's rows of `plane` are inside `out`.
                unsafe { micro_upto_avx2(&tile, input.as_ptr(), n) };
                for r in 0..MR {
                    for x in 0..plane {
                        let got = out[r * plane + x];
                        if r >= rows || x >= n {
                            assert!(got.is_nan(), "rows {rows} n {n}: wrote ({r}, {x})");
                            continue;
                        }
                        let want: f32 = bias[r]
                            + offsets
                                .iter()
                                .enumerate()
                                .map(|(t, &o)| panel[t * MR + r] * input[o + x])
                                .sum::<f32>();
                        let terms = offsets.len();
                        assert!(
                            (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                            "{terms} terms, rows {rows} n {n} ({r}, {x}): {got} vs {want}"
                        );
                    }
                }
            }
        }
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
