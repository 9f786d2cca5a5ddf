//! Eqs. (2)-(3): coarse edge maps from a constant 4-filter convolution, min-max normalised,
//! then sharpened by the high-pass filter h.

use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::Tensor;

use crate::config::Preset;

/// The paper's "improved Sobel" kernel F of Fig. 2(b): horizontal and vertical Sobel and the
/// two diagonal Sobel filters, applied to the channel mean (as the PyTorch port does).
pub const PAPER_FILTERS: [[[f32; 3]; 3]; 4] = [
    [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
    [[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]],
    [[-2.0, -1.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 1.0, 2.0]],
    [[0.0, 1.0, 2.0], [-1.0, 0.0, 1.0], [-2.0, -1.0, 0.0]],
];

/// The official code's filters: first-order central differences (vertical, horizontal) and
/// second-order differences `(-1, 2, -1)` (vertical, horizontal).
pub const OFFICIAL_FILTERS: [[[f32; 3]; 3]; 4] = [
    [[0.0, -1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
    [[0.0, 0.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]],
    [[0.0, -1.0, 0.0], [0.0, 2.0, 0.0], [0.0, -1.0, 0.0]],
    [[0.0, 0.0, 0.0], [-1.0, 2.0, -1.0], [0.0, 0.0, 0.0]],
];

/// The official code weighs the responses on R, G, B by 1, 2, 1.
pub const OFFICIAL_CHANNEL_WEIGHTS: [f32; 3] = [1.0, 2.0, 1.0];

/// Guard of the min-max denominator (a flat image has max = min).
pub const MINMAX_EPSILON: f32 = 1e-8;

/// Eq. (2) before normalisation: `sum_k |x (*) F_k|`.
///
/// Paper: the four filters on the channel mean, valid convolution, then a one-pixel border of
/// zeros. Official: the four filters on R, G, B (weights 1, 2, 1); the released code's border
/// handling is not documented, so the image is extended by replicating its edge pixels, which
/// keeps the image border from scoring as an edge.
///
/// # Shapes
/// `[N, 3, H, W]` -> `[N, 1, H, W]`, values >= 0.
pub fn edge_magnitude<B: Backend>(x: Tensor<B, 4>, preset: Preset) -> Tensor<B, 4> {
    let device = x.device();
    let responses = match preset {
        Preset::Paper => {
            let kernel = Tensor::<B, 3>::from_floats(PAPER_FILTERS, &device).reshape([4, 1, 3, 3]);
            let gray = x.mean_dim(1);
            let valid = conv2d(
                gray,
                kernel,
                None,
                ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
            );
            valid.abs().pad([(1, 1), (1, 1)], PadMode::Constant(0.0))
        }
        Preset::Official => {
            let filters =
                Tensor::<B, 3>::from_floats(OFFICIAL_FILTERS, &device).reshape([4, 1, 3, 3]);
            let weights = Tensor::<B, 1>::from_floats(OFFICIAL_CHANNEL_WEIGHTS, &device)
                .reshape([1, 3, 1, 1]);
            let kernel = filters.expand([4, 3, 3, 3]) * weights;
            let padded = x.pad([(1, 1), (1, 1)], PadMode::Edge);
            conv2d(
                padded,
                kernel,
                None,
                ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
            )
            .abs()
        }
    };
    responses.sum_dim(1)
}

/// Min-max normalisation of Eq. (2): to [0, 1] per image (paper) or over the whole mini-batch
/// (official).
///
/// # Shapes
/// `[N, 1, H, W]` -> `[N, 1, H, W]` in `[0, 1]`.
pub fn min_max<B: Backend>(e: Tensor<B, 4>, preset: Preset) -> Tensor<B, 4> {
    let [n, c, h, w] = e.dims();
    let rows = match preset {
        Preset::Paper => n,
        Preset::Official => 1,
    };
    let flat = e.reshape([rows, n * c * h * w / rows]);
    let lo = flat.clone().min_dim(1);
    let hi = flat.clone().max_dim(1);
    ((flat - lo.clone()) / (hi - lo + MINMAX_EPSILON)).reshape([n, c, h, w])
}

/// Eq. (3): `h(e) = 1 - 1 / (1 + (e / d)^n)`, a soft high-pass that keeps strong edges.
pub fn high_pass<B: Backend>(e: Tensor<B, 4>, d: f64, n: f64) -> Tensor<B, 4> {
    let ratio = (e / d).powf_scalar(n);
    (ratio.clone() / (ratio + 1.0)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{CpuBackend, CPU};

    #[test]
    fn flat_image_has_no_edges() {
        for preset in [Preset::Paper, Preset::Official] {
            let x = Tensor::<CpuBackend, 4>::full([2, 3, 12, 10], -0.3, &CPU);
            let e = high_pass(min_max(edge_magnitude(x, preset), preset), 0.2, 2.0);
            assert_eq!(e.abs().max().into_scalar(), 0.0, "{preset:?}");
        }
    }

    #[test]
    fn high_pass_matches_closed_form() {
        let e = Tensor::<CpuBackend, 4>::from_floats([[[[0.0, 0.1, 0.2, 1.0]]]], &CPU);
        let got = high_pass(e, 0.2, 2.0).into_data().to_vec::<f32>().unwrap();
        let want = [0.0, 1.0 - 1.0 / 1.25, 0.5, 1.0 - 1.0 / 26.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }
}
