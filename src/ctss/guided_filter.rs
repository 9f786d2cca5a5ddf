//! Eq. (1): the self-guided filter of He et al. (2010), each channel guiding itself.

use burn::tensor::backend::Backend;
use burn::tensor::module::avg_pool2d;
use burn::tensor::Tensor;

/// Mean over the `(2r+1) x (2r+1)` window around each pixel, normalised by the number of
/// pixels inside the image (borders average fewer pixels, no zero padding leaks in).
///
/// # Shapes
/// `[N, C, H, W]` -> `[N, C, H, W]`.
pub fn box_mean<B: Backend>(x: Tensor<B, 4>, radius: usize) -> Tensor<B, 4> {
    let k = 2 * radius + 1;
    avg_pool2d(x, [k, k], [1, 1], [radius, radius], false, false)
}

/// Eq. (1): `F_gf(x, x)`, the guided filter with the image as its own guide:
/// `a = var / (var + eps)`, `b = mean - a * mean`, `out = box(a) * x + box(b)`.
///
/// # Shapes
/// `[N, C, H, W]` -> `[N, C, H, W]`, any value range (`epsilon` is relative to it).
pub fn guided_filter<B: Backend>(x: Tensor<B, 4>, radius: usize, epsilon: f64) -> Tensor<B, 4> {
    let mean = box_mean(x.clone(), radius);
    let var = box_mean(x.clone() * x.clone(), radius) - mean.clone() * mean.clone();
    let a = var.clone() / (var + epsilon);
    let b = mean.clone() - a.clone() * mean;
    box_mean(a, radius) * x + box_mean(b, radius)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{CpuBackend, CPU};
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn constant_image_is_unchanged() {
        let x = Tensor::<CpuBackend, 4>::full([2, 3, 9, 7], 0.37, &CPU);
        let y = guided_filter(x.clone(), 2, 1e-2);
        y.into_data()
            .assert_approx_eq::<f32>(&x.into_data(), Tolerance::absolute(1e-6));
    }

    #[test]
    fn smooths_noise() {
        let x =
            Tensor::<CpuBackend, 4>::random([1, 1, 32, 32], Distribution::Normal(0.0, 0.05), &CPU);
        let y = guided_filter(x.clone(), 2, 0.2);
        let energy = |t: Tensor<CpuBackend, 4>| t.powi_scalar(2).mean().into_scalar();
        assert!(energy(y) < 0.2 * energy(x));
    }
}
