//! The direct convolution's micro-kernels: one [`Tile`] of `MR x n` outputs (`n` up to 48
//! pixels of a row) as the sum over the panel's terms of a broadcast weight times the input
//! at the term's offset, plus the bias. Every algorithm's products run on them: the direct
//! convolution's rows ([`super::conv`]), the Winograd products ([`super::winograd`],
//! [`super::winograd4`], [`super::winograd_rows`]). AVX-512 ([`micro_upto`]: 8 channels x 3
//! vectors of 16 in 24 registers) and AVX2 with FMA ([`micro_upto_avx2`]: register blocks of
//! 4 channels x 24 pixels, the term loop in assembly), with the masked-store helpers the
//! Winograd output transforms share ([`store8`], [`mask8`]).

use super::conv::{Isa, LANES, MR, NV};

/// A micro-kernel: [`micro_upto`] or [`micro_upto_avx2`].
pub(crate) type Micro = unsafe fn(&Tile, *const f32, usize);

impl Isa {
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

/// Where one micro-kernel call reads its weights and writes its outputs.
pub(crate) struct Tile<'a> {
    /// The panel's weights, [`MR`] per term (term-major).
    pub(crate) panel: &'a [f32],
    /// Each term's offset from the call's input pointer.
    pub(crate) offsets: &'a [usize],
    /// [`MR`] biases.
    pub(crate) bias: &'a [f32],
    /// The first output of the tile's first channel.
    pub(crate) dst: *mut f32,
    /// Floats from one channel's outputs to the next's.
    pub(crate) plane: usize,
    /// Channels written (at most [`MR`]).
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
/// [`block_4x16`] or [`block_4x24`]; the first chunk's from zero); then the sums are stored.
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
    let mut acc: [Sums<V>; MR / ROWS_AVX2] = std::array::from_fn(|g| {
        if g < groups {
            // SAFETY: the caller's; the weights step by the panel's `MR` per term of the chunk.
            unsafe { sums(zeros(), base, first, weights(0, g)) }
        } else {
            zeros()
        }
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
    use crate::kernels::conv::{isas_here, Isa};
    use crate::kernels::test_values::values;

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
}
