//! How the Winograd kernels read their input rows: the channel loop with the prefetch of the
//! plane [`super::PREFETCH`] ahead ([`for_planes`]), a row split into its column phases
//! (even/odd on AVX-512: [`gather`]; 2 or 4 phases on AVX2: [`gather_phases`]), zeros outside
//! the image, and the masks of partial vectors ([`lanes`], [`load_clipped`]).

use std::ops::Range;

use super::{GATHER, PREFETCH};
use crate::kernels::conv::LANES;
#[cfg(target_arch = "x86_64")]
use crate::kernels::micro::LANES8;

/// Asks for rows `rows` and columns `cols` of `plane` (`h x w`), both shifted back by `pad`
/// and clipped to the plane, to be brought into the cache.
pub(crate) fn prefetch(
    plane: &[f32],
    (h, w): (usize, usize),
    rows: Range<usize>,
    cols: Range<usize>,
    pad: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let (start, end) = (cols.start.saturating_sub(pad), (cols.end - pad).min(w));
        for y in rows.start.saturating_sub(pad)..(rows.end - pad).min(h) {
            let line = &plane[y * w..][start..end];
            for at in (0..line.len()).step_by(16) {
                // SAFETY: a prefetch of an address inside `line`.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(line[at..].as_ptr().cast()) };
            }
        }
    }
}

/// `f(c, plane)` for each channel plane of `planes` (`h x w` each) in order, after asking for
/// the `window` (rows, columns, padding, as [`prefetch`] takes them) of the plane [`PREFETCH`]
/// ahead: the channel loop of the Winograd transforms.
#[inline(always)]
pub(crate) fn for_planes(
    planes: &[f32],
    (h, w): (usize, usize),
    (rows, cols, pad): (Range<usize>, Range<usize>, usize),
    mut f: impl FnMut(usize, &[f32]),
) {
    for (c, plane) in planes.chunks_exact(h * w).enumerate() {
        if let Some(ahead) = planes.chunks_exact(h * w).nth(c + PREFETCH) {
            prefetch(ahead, (h, w), rows.clone(), cols.clone(), pad);
        }
        f(c, plane);
    }
}

/// Row `y` of `plane` (`h x w`; zeros when `y` is outside it), columns `first + 2 j` into
/// `even[j]` and `first + 2 j + 1` into `odd[j]` for `j` in `0..=n` (zeros outside the row).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn gather(
    plane: &[f32],
    (h, w): (usize, usize),
    y: isize,
    first: isize,
    n: usize,
    out: &mut [[f32; GATHER]; 2],
) {
    use std::arch::x86_64::*;
    let Some(y) = usize::try_from(y).ok().filter(|&y| y < h) else {
        *out = [[0.0; GATHER]; 2];
        return;
    };
    let line = &plane[y * w..][..w];
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for k in (0..2 * (n + 1)).step_by(2 * LANES) {
        // SAFETY: AVX-512 is enabled here.
        let [a, b] =
            [0, LANES].map(|half| unsafe { load_clipped(line, first + (k + half) as isize) });
        // SAFETY: `k / 2 + 16 <= n + 1 + 15 < GATHER`.
        unsafe {
            _mm512_storeu_ps(
                out[0].as_mut_ptr().add(k / 2),
                _mm512_permutex2var_ps(a, evens, b),
            );
            _mm512_storeu_ps(
                out[1].as_mut_ptr().add(k / 2),
                _mm512_permutex2var_ps(a, odds, b),
            );
        }
    }
}

/// The 16 floats of `line` from index `start`, zeros for those outside it.
///
/// # Safety
/// AVX-512 is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn load_clipped(line: &[f32], start: isize) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let w = line.len() as isize;
    if start >= 0 && start + LANES as isize <= w {
        // SAFETY: the 16 floats lie inside `line`.
        return unsafe { _mm512_loadu_ps(line.as_ptr().offset(start)) };
    }
    // Lanes whose index lies inside the line (a branch taken only at the ends of rows: the
    // mask's arithmetic cost more than the loads themselves).
    let lo = (-start).clamp(0, LANES as isize) as usize;
    let hi = (w - start).clamp(0, LANES as isize) as usize;
    let mask = lanes(hi) & !lanes(lo);
    // SAFETY: only lanes inside `line` are read (the masked-off lanes are not accessed); the
    // address itself is formed with wrapping arithmetic.
    unsafe { _mm512_maskz_loadu_ps(mask, line.as_ptr().wrapping_offset(start)) }
}

/// Row `y` of `plane` (`h x w`; zeros when `y` is outside it) split into its `Q` column
/// phases (2 or 4) on AVX2 (the AVX2 paths' [`gather`] and [`crate::kernels::winograd4::gather4`]):
/// column `first + Q j + q` into `out[q][j]` for `j` in `0..=n` (zeros outside the row). Runs of
/// 8 tiles are split by shuffles, those over an end of the row loaded under a mask of the
/// columns inside it (once scalar throughout: 4% of a training step).
///
/// # Safety
/// AVX2 is available; `n + 8 <= GATHER`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn gather_phases<const Q: usize>(
    plane: &[f32],
    (h, w): (usize, usize),
    y: isize,
    first: isize,
    n: usize,
    out: &mut [[f32; GATHER]; Q],
) {
    let Some(y) = usize::try_from(y).ok().filter(|&y| y < h) else {
        *out = [[0.0; GATHER]; Q];
        return;
    };
    use std::arch::x86_64::*;
    let line = plane[y * w..][..w].as_ptr();
    let span = (Q * LANES8) as isize;
    for j in (0..=n).step_by(LANES8) {
        let x = first + (Q * j) as isize;
        // SAFETY: whole loads lie inside the row; a run over an end of it loads only the
        // lanes inside it (masked lanes are not accessed, and read as zero); `j + 8 <= n + 8
        // <= GATHER`.
        unsafe {
            let v: [__m256; Q] = if x >= 0 && x + span <= w as isize {
                std::array::from_fn(|k| _mm256_loadu_ps(line.offset(x).add(k * LANES8)))
            } else {
                std::array::from_fn(|k| {
                    let at = x + (k * LANES8) as isize;
                    let columns = _mm256_add_epi32(
                        _mm256_set1_epi32(at as i32),
                        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                    );
                    let inside = _mm256_and_si256(
                        _mm256_cmpgt_epi32(columns, _mm256_set1_epi32(-1)),
                        _mm256_cmpgt_epi32(_mm256_set1_epi32(w as i32), columns),
                    );
                    _mm256_maskload_ps(line.wrapping_offset(at), inside)
                })
            };
            split8::<Q>(v, out, j);
        }
    }
}

/// `8 Q` consecutive floats (`v`) split into their `Q` phases (2 or 4), stored at
/// `out[q][j..j + 8]`.
///
/// # Safety
/// AVX2 is available; `j + 8 <= GATHER`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn split8<const Q: usize>(
    v: [std::arch::x86_64::__m256; Q],
    out: &mut [[f32; GATHER]; Q],
    j: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        let store = |q: usize, value: __m256, out: &mut [[f32; GATHER]; Q]| {
            _mm256_storeu_ps(out[q].as_mut_ptr().add(j), value)
        };
        if Q == 2 {
            // Within 128-bit lanes: [a0 a2 b0 b2 | a4 a6 b4 b6]; then the 64-bit pairs in order.
            let evens = _mm256_shuffle_ps::<0b10_00_10_00>(v[0], v[1]);
            let odds = _mm256_shuffle_ps::<0b11_01_11_01>(v[0], v[1]);
            let order = |x: __m256| {
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(x)))
            };
            store(0, order(evens), out);
            store(1, order(odds), out);
        } else {
            // A 4x4 transpose within each 128-bit lane gives phase q of vectors 0-3 as
            // [v0 v1 v2 v3 | v0 v1 v2 v3] (first and second tile of each); then in tile order.
            let (t0, t1) = (
                _mm256_unpacklo_ps(v[0], v[1]),
                _mm256_unpackhi_ps(v[0], v[1]),
            );
            let (t2, t3) = (
                _mm256_unpacklo_ps(v[2], v[3]),
                _mm256_unpackhi_ps(v[2], v[3]),
            );
            let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            let phases = [
                _mm256_shuffle_ps::<0b01_00_01_00>(t0, t2),
                _mm256_shuffle_ps::<0b11_10_11_10>(t0, t2),
                _mm256_shuffle_ps::<0b01_00_01_00>(t1, t3),
                _mm256_shuffle_ps::<0b11_10_11_10>(t1, t3),
            ];
            for (q, phase) in phases.into_iter().enumerate() {
                store(q, _mm256_permutevar8x32_ps(phase, order), out);
            }
        }
    }
}

/// Store mask of the first `n` lanes (all for `n >= 16`).
pub(crate) fn lanes(n: usize) -> u16 {
    if n >= LANES {
        u16::MAX
    } else {
        (1u16 << n) - 1
    }
}
