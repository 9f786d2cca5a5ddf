//! The minimal filters of [`super`]: F(4, 3) and F(4, 2) (Lavin and Gray, CVPR 2016), each
//! as its `G` (applied to the weights once, in f64) and its `B^T`, `A^T` and `A` as vector code
//! on AVX-512 and AVX2 (the same operations in the same order on both).
//!
//! F(4, 3), Toom-Cook points 0, 1, -1, 2, -2 and infinity:
//!
//! ```text
//! B^T = [4  0 -5  0  1  0]   G = [ 1/4     0     0 ]   A^T = [1  1  1  1  1  0]
//!       [0 -4 -4  1  1  0]       [-1/6  -1/6  -1/6 ]         [0  1 -1  2 -2  0]
//!       [0  4 -4 -1  1  0]       [-1/6   1/6  -1/6 ]         [0  1  1  4  4  0]
//!       [0 -2 -1  2  1  0]       [1/24  1/12   1/6 ]         [0  1 -1  8 -8  1]
//!       [0  2 -1 -2  1  0]       [1/24 -1/12   1/6 ]
//!       [0  4  0 -5  0  1]       [   0     0     1 ]
//! ```
//!
//! F(4, 2), points 0, 1, -1, 1/2 and infinity (of the four-point sets with 0 and ±1, the one
//! with the smallest entries in `B^T` and `A^T`, the matrices that touch the data; derived by
//! the Toom-Cook construction in rational arithmetic):
//!
//! ```text
//! B^T = [1/2  -1  -1/2   1  0]   G = [   2     0 ]   A^T = [1  1  1   1   0]
//!       [  0 -1/2  1/2   1  0]       [   1     1 ]         [0  1 -1  1/2  0]
//!       [  0  1/2 -3/2   1  0]       [-1/3   1/3 ]         [0  1  1  1/4  0]
//!       [  0  -1    0    1  0]       [-8/3  -4/3 ]         [0  1 -1  1/8  1]
//!       [  0  1/2  -1  -1/2 1]       [   0     1 ]
//! ```

use super::M;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{__m256, __m512};

/// One minimal filter F(4, `K`) with `A = 4 + K - 1` transformed values, applied along both
/// axes.
pub(crate) trait Filter<const A: usize, const K: usize> {
    /// `G` (`A x K`), in f64.
    const G: [[f64; K]; A];

    /// `B^T d` of `A` vectors of tiles' values.
    ///
    /// # Safety
    /// AVX-512 is available.
    #[cfg(target_arch = "x86_64")]
    unsafe fn bt(d: [__m512; A]) -> [__m512; A];

    /// `A^T m` of `A` vectors of tiles' values.
    ///
    /// # Safety
    /// AVX-512 is available.
    #[cfg(target_arch = "x86_64")]
    unsafe fn at(m: [__m512; A]) -> [__m512; M];

    /// [`Filter::bt`] on AVX2's 8-float vectors (the same operations in the same order).
    ///
    /// # Safety
    /// AVX2 and FMA are available.
    #[cfg(target_arch = "x86_64")]
    unsafe fn bt8(d: [__m256; A]) -> [__m256; A];

    /// [`Filter::at`] on AVX2's 8-float vectors (the same operations in the same order).
    ///
    /// # Safety
    /// AVX2 and FMA are available.
    #[cfg(target_arch = "x86_64")]
    unsafe fn at8(m: [__m256; A]) -> [__m256; M];

    /// `A m` (the transpose of [`Filter::at8`]: `M` vectors in, `A` out) on AVX2: the
    /// weight gradient's transform of the output gradient ([`crate::kernels::winograd_grad`]).
    ///
    /// # Safety
    /// AVX2 and FMA are available.
    #[cfg(target_arch = "x86_64")]
    unsafe fn a8(m: [__m256; M]) -> [__m256; A];
}

/// F(4, 3).
pub(crate) struct F43;
/// F(4, 2).
pub(crate) struct F42;

impl Filter<6, 3> for F43 {
    const G: [[f64; 3]; 6] = [
        [0.25, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn bt(d: [__m512; 6]) -> [__m512; 6] {
        use std::arch::x86_64::*;
        let (two, four, five) = (
            _mm512_set1_ps(2.0),
            _mm512_set1_ps(4.0),
            _mm512_set1_ps(5.0),
        );
        let d4_d2 = _mm512_sub_ps(d[4], d[2]);
        let d1_d3 = _mm512_sub_ps(d[1], d[3]);
        [
            // 4 d0 - 5 d2 + d4
            _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4])),
            // -4 (d1 + d2) + d3 + d4
            _mm512_fnmadd_ps(four, _mm512_add_ps(d[1], d[2]), _mm512_add_ps(d[3], d[4])),
            // 4 (d1 - d2) - d3 + d4
            _mm512_fmadd_ps(four, _mm512_sub_ps(d[1], d[2]), _mm512_sub_ps(d[4], d[3])),
            // -2 (d1 - d3) - d2 + d4
            _mm512_fnmadd_ps(two, d1_d3, d4_d2),
            // 2 (d1 - d3) - d2 + d4
            _mm512_fmadd_ps(two, d1_d3, d4_d2),
            // 4 d1 - 5 d3 + d5
            _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5])),
        ]
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn at(m: [__m512; 6]) -> [__m512; M] {
        use std::arch::x86_64::*;
        let (two, four, eight) = (
            _mm512_set1_ps(2.0),
            _mm512_set1_ps(4.0),
            _mm512_set1_ps(8.0),
        );
        let (sum12, diff12) = (_mm512_add_ps(m[1], m[2]), _mm512_sub_ps(m[1], m[2]));
        let (sum34, diff34) = (_mm512_add_ps(m[3], m[4]), _mm512_sub_ps(m[3], m[4]));
        [
            _mm512_add_ps(_mm512_add_ps(m[0], sum12), sum34),
            _mm512_fmadd_ps(two, diff34, diff12),
            _mm512_fmadd_ps(four, sum34, sum12),
            _mm512_add_ps(_mm512_fmadd_ps(eight, diff34, diff12), m[5]),
        ]
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn bt8(d: [__m256; 6]) -> [__m256; 6] {
        use std::arch::x86_64::*;
        let (two, four, five) = (
            _mm256_set1_ps(2.0),
            _mm256_set1_ps(4.0),
            _mm256_set1_ps(5.0),
        );
        let d4_d2 = _mm256_sub_ps(d[4], d[2]);
        let d1_d3 = _mm256_sub_ps(d[1], d[3]);
        [
            _mm256_fmadd_ps(four, d[0], _mm256_fnmadd_ps(five, d[2], d[4])),
            _mm256_fnmadd_ps(four, _mm256_add_ps(d[1], d[2]), _mm256_add_ps(d[3], d[4])),
            _mm256_fmadd_ps(four, _mm256_sub_ps(d[1], d[2]), _mm256_sub_ps(d[4], d[3])),
            _mm256_fnmadd_ps(two, d1_d3, d4_d2),
            _mm256_fmadd_ps(two, d1_d3, d4_d2),
            _mm256_fmadd_ps(four, d[1], _mm256_fnmadd_ps(five, d[3], d[5])),
        ]
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn at8(m: [__m256; 6]) -> [__m256; M] {
        use std::arch::x86_64::*;
        let (two, four, eight) = (
            _mm256_set1_ps(2.0),
            _mm256_set1_ps(4.0),
            _mm256_set1_ps(8.0),
        );
        let (sum12, diff12) = (_mm256_add_ps(m[1], m[2]), _mm256_sub_ps(m[1], m[2]));
        let (sum34, diff34) = (_mm256_add_ps(m[3], m[4]), _mm256_sub_ps(m[3], m[4]));
        [
            _mm256_add_ps(_mm256_add_ps(m[0], sum12), sum34),
            _mm256_fmadd_ps(two, diff34, diff12),
            _mm256_fmadd_ps(four, sum34, sum12),
            _mm256_add_ps(_mm256_fmadd_ps(eight, diff34, diff12), m[5]),
        ]
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn a8(m: [__m256; M]) -> [__m256; 6] {
        use std::arch::x86_64::*;
        let four = _mm256_set1_ps(4.0);
        // Even and odd parts at the points 1 and 2: m0 + m2, m1 + m3, m0 + 4 m2, 2 (m1 + 4 m3).
        let (even1, odd1) = (_mm256_add_ps(m[0], m[2]), _mm256_add_ps(m[1], m[3]));
        let even2 = _mm256_fmadd_ps(four, m[2], m[0]);
        let half_odd2 = _mm256_fmadd_ps(four, m[3], m[1]);
        let odd2 = _mm256_add_ps(half_odd2, half_odd2);
        [
            m[0],
            _mm256_add_ps(even1, odd1),
            _mm256_sub_ps(even1, odd1),
            _mm256_add_ps(even2, odd2),
            _mm256_sub_ps(even2, odd2),
            m[3],
        ]
    }
}

impl Filter<5, 2> for F42 {
    const G: [[f64; 2]; 5] = [
        [2.0, 0.0],
        [1.0, 1.0],
        [-1.0 / 3.0, 1.0 / 3.0],
        [-8.0 / 3.0, -4.0 / 3.0],
        [0.0, 1.0],
    ];

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn bt(d: [__m512; 5]) -> [__m512; 5] {
        use std::arch::x86_64::*;
        let half = _mm512_set1_ps(0.5);
        let d3_d1 = _mm512_sub_ps(d[3], d[1]);
        [
            // (d0 - d2) / 2 + d3 - d1
            _mm512_fmadd_ps(half, _mm512_sub_ps(d[0], d[2]), d3_d1),
            // (d2 - d1) / 2 + d3
            _mm512_fmadd_ps(half, _mm512_sub_ps(d[2], d[1]), d[3]),
            // (d1 - d2) / 2 - d2 + d3
            _mm512_fmadd_ps(half, _mm512_sub_ps(d[1], d[2]), _mm512_sub_ps(d[3], d[2])),
            // d3 - d1
            d3_d1,
            // (d1 - d3) / 2 - d2 + d4
            _mm512_fnmadd_ps(half, d3_d1, _mm512_sub_ps(d[4], d[2])),
        ]
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn at(m: [__m512; 5]) -> [__m512; M] {
        use std::arch::x86_64::*;
        let (sum12, diff12) = (_mm512_add_ps(m[1], m[2]), _mm512_sub_ps(m[1], m[2]));
        [
            _mm512_add_ps(_mm512_add_ps(m[0], sum12), m[3]),
            _mm512_fmadd_ps(_mm512_set1_ps(0.5), m[3], diff12),
            _mm512_fmadd_ps(_mm512_set1_ps(0.25), m[3], sum12),
            _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(0.125), m[3], diff12), m[4]),
        ]
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn bt8(d: [__m256; 5]) -> [__m256; 5] {
        use std::arch::x86_64::*;
        let half = _mm256_set1_ps(0.5);
        let d3_d1 = _mm256_sub_ps(d[3], d[1]);
        [
            _mm256_fmadd_ps(half, _mm256_sub_ps(d[0], d[2]), d3_d1),
            _mm256_fmadd_ps(half, _mm256_sub_ps(d[2], d[1]), d[3]),
            _mm256_fmadd_ps(half, _mm256_sub_ps(d[1], d[2]), _mm256_sub_ps(d[3], d[2])),
            d3_d1,
            _mm256_fnmadd_ps(half, d3_d1, _mm256_sub_ps(d[4], d[2])),
        ]
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn at8(m: [__m256; 5]) -> [__m256; M] {
        use std::arch::x86_64::*;
        let (sum12, diff12) = (_mm256_add_ps(m[1], m[2]), _mm256_sub_ps(m[1], m[2]));
        [
            _mm256_add_ps(_mm256_add_ps(m[0], sum12), m[3]),
            _mm256_fmadd_ps(_mm256_set1_ps(0.5), m[3], diff12),
            _mm256_fmadd_ps(_mm256_set1_ps(0.25), m[3], sum12),
            _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(0.125), m[3], diff12), m[4]),
        ]
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn a8(m: [__m256; M]) -> [__m256; 5] {
        use std::arch::x86_64::*;
        let (even1, odd1) = (_mm256_add_ps(m[0], m[2]), _mm256_add_ps(m[1], m[3]));
        // m0 + m1 / 2 + m2 / 4 + m3 / 8, by Horner's rule.
        let half = _mm256_set1_ps(0.5);
        let inner = _mm256_fmadd_ps(half, m[3], m[2]);
        let inner = _mm256_fmadd_ps(half, inner, m[1]);
        [
            m[0],
            _mm256_add_ps(even1, odd1),
            _mm256_sub_ps(even1, odd1),
            _mm256_fmadd_ps(half, inner, m[0]),
            m[3],
        ]
    }
}
