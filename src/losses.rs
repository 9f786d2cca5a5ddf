//! The objective of Section III-C (Eqs. 7-17) and the style losses compared in Table IV.
//!
//! Every function returns a one-element tensor (`[1]`) so it can be weighted, summed and
//! differentiated.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::config::LossWeights;
use crate::model::Vgg;

/// Eq. (7): `L_con = || VGG_l(p) - VGG_l(G(p)) ||_1` (mean absolute difference of conv4_4
/// features).
///
/// # Shapes
/// `photo`, `fake`: `[N, 3, H, W]` in `[-1, 1]`.
pub fn content<B: Backend>(vgg: &Vgg<B>, photo: Tensor<B, 4>, fake: Tensor<B, 4>) -> Tensor<B, 1> {
    let target = vgg.forward(photo).detach();
    (target - vgg.forward(fake)).abs().mean()
}

/// Eqs. (9) and (12), LSGAN discriminator part: `E[(D(real) - 1)^2] + E[D(fake)^2]`.
pub fn lsgan_d<B: Backend>(real_scores: Tensor<B, 4>, fake_scores: Tensor<B, 4>) -> Tensor<B, 1> {
    (real_scores - 1.0).powi_scalar(2).mean() + fake_scores.powi_scalar(2).mean()
}

/// Eqs. (10) and (13), LSGAN generator part: `E[(D(fake) - 1)^2]`.
pub fn lsgan_g<B: Backend>(fake_scores: Tensor<B, 4>) -> Tensor<B, 1> {
    (fake_scores - 1.0).powi_scalar(2).mean()
}

/// CartoonGAN's edge-promoting adversarial loss (Table IV, `L^ep_adv_global`), discriminator
/// part in LSGAN form: edge-smoothed cartoons count as fake too,
/// `E[(D(c) - 1)^2] + E[D(e)^2] + E[D(G(p))^2]`. Its generator part is [`lsgan_g`].
pub fn edge_promoting_d<B: Backend>(
    real_scores: Tensor<B, 4>,
    smoothed_scores: Tensor<B, 4>,
    fake_scores: Tensor<B, 4>,
) -> Tensor<B, 1> {
    lsgan_d(real_scores, fake_scores) + smoothed_scores.powi_scalar(2).mean()
}

/// CartoonGAN's edge-smoothed cartoons (the negatives of [`edge_promoting_d`]): edges are
/// found (the paper's edge map, min-max normalised, above 0.2), dilated by 2 pixels, and a 5x5
/// Gaussian (sigma 1) replaces the pixels inside. CartoonGAN prepares this set once with Canny;
/// it is a function of the image, so toonsmith computes it per batch, without gradient.
///
/// # Shapes
/// `[N, 3, H, W]` in `[-1, 1]` -> the same.
pub fn edge_smooth<B: Backend>(cartoon: Tensor<B, 4>) -> Tensor<B, 4> {
    use crate::config::Preset;
    use crate::ctss::edge::{edge_magnitude, min_max};
    use burn::tensor::module::{conv2d, max_pool2d};
    use burn::tensor::ops::{ConvOptions, PadMode};

    let x = cartoon.detach();
    let device = x.device();
    let edges = min_max(edge_magnitude(x.clone(), Preset::Paper), Preset::Paper);
    let mask = max_pool2d(
        edges.greater_elem(0.2).float(),
        [5, 5],
        [1, 1],
        [2, 2],
        [1, 1],
        false,
    );
    let g1: Vec<f32> = (-2..=2)
        .map(|i: i32| (-(i * i) as f32 / 2.0).exp())
        .collect();
    let sum: f32 = g1.iter().sum();
    let kernel: Vec<f32> = g1
        .iter()
        .flat_map(|a| g1.iter().map(move |b| a * b / (sum * sum)))
        .collect();
    let kernel = Tensor::<B, 1>::from_floats(kernel.as_slice(), &device)
        .reshape([1, 1, 5, 5])
        .expand([3, 1, 5, 5]);
    let padded = x.clone().pad([(2, 2), (2, 2)], PadMode::Edge);
    let blurred = conv2d(
        padded,
        kernel,
        None,
        ConvOptions::new([1, 1], [0, 0], [1, 1], 3),
    );
    blurred * mask.clone() + x * (mask.neg() + 1.0)
}

/// RGB in `[-1, 1]` to Y, U, V as in AnimeGAN (Eq. 14's reference \[7\]):
/// `Y = 0.299 R + 0.587 G + 0.114 B`, `U = 0.492 (B - Y)`, `V = 0.877 (R - Y)` on `[0, 1]` RGB.
///
/// # Shapes
/// `[N, 3, H, W]` -> three `[N, 1, H, W]`.
pub fn rgb_to_yuv<B: Backend>(rgb: Tensor<B, 4>) -> [Tensor<B, 4>; 3] {
    let [n, _, h, w] = rgb.dims();
    let unit = (rgb + 1.0) / 2.0;
    let channel = |c: usize| unit.clone().slice([0..n, c..c + 1, 0..h, 0..w]);
    let (r, g, b) = (channel(0), channel(1), channel(2));
    let y = r.clone() * 0.299 + g * 0.587 + b.clone() * 0.114;
    let u = (b - y.clone()) * 0.492;
    let v = (r - y.clone()) * 0.877;
    [y, u, v]
}

/// Huber loss with delta 1, averaged (PyTorch's `huber_loss` default):
/// `0.5 x^2` for `|x| < 1`, else `|x| - 0.5`.
pub fn huber<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, 1> {
    let abs = (a - b).abs();
    let quadratic = abs.clone().clamp_max(1.0);
    let linear = abs - quadratic.clone();
    (quadratic.powi_scalar(2) * 0.5 + linear).mean()
}

/// Eq. (14): `L_col = |Y(G(p)) - Y(p)|_1 + |U(G(p)) - U(p)|_H + |V(G(p)) - V(p)|_H`.
pub fn color<B: Backend>(photo: Tensor<B, 4>, fake: Tensor<B, 4>) -> Tensor<B, 1> {
    let [yp, up, vp] = rgb_to_yuv(photo);
    let [yf, uf, vf] = rgb_to_yuv(fake);
    (yf - yp).abs().mean() + huber(uf, up) + huber(vf, vp)
}

/// Eq. (15): mean squared horizontal plus mean squared vertical neighbour difference (averaged
/// over images and channels too).
///
/// # Shapes
/// `[N, C, H, W]` with H, W >= 2.
pub fn total_variation<B: Backend>(s: Tensor<B, 4>) -> Tensor<B, 1> {
    let [n, c, h, w] = s.dims();
    let dx =
        s.clone().slice([0..n, 0..c, 0..h, 1..w]) - s.clone().slice([0..n, 0..c, 0..h, 0..w - 1]);
    let dy = s.clone().slice([0..n, 0..c, 1..h, 0..w]) - s.slice([0..n, 0..c, 0..h - 1, 0..w]);
    dx.powi_scalar(2).mean() + dy.powi_scalar(2).mean()
}

/// Gram matrix of features, normalised by `C * H * W` (Gatys et al.; AnimeGAN's scaling).
///
/// # Shapes
/// `[N, C, H, W]` -> `[N, C, C]`.
pub fn gram<B: Backend>(features: Tensor<B, 4>) -> Tensor<B, 3> {
    let [n, c, h, w] = features.dims();
    let f = features.reshape([n, c, h * w]);
    f.clone().matmul(f.swap_dims(1, 2)) / (c * h * w) as f32
}

/// Gram loss of Table IV (`L_gram`, Gatys et al. \[8\] as used by AnimeGAN): L1 between the Gram
/// matrices of VGG features of the generated images and of the cartoons.
pub fn gram_loss<B: Backend>(
    fake_features: Tensor<B, 4>,
    cartoon_features: Tensor<B, 4>,
) -> Tensor<B, 1> {
    (gram(fake_features) - gram(cartoon_features.detach()))
        .abs()
        .mean()
}

/// Mean-std loss of Table IV (`L_mean_std`, Huang & Belongie \[23\]):
/// `||mu(f) - mu(c)||_2 + ||sigma(f) - sigma(c)||_2` over channels, averaged over the batch,
/// with `sigma = sqrt(var + 1e-5)` over H, W as AdaIN computes it.
pub fn mean_std_loss<B: Backend>(
    fake_features: Tensor<B, 4>,
    cartoon_features: Tensor<B, 4>,
) -> Tensor<B, 1> {
    let stats = |f: Tensor<B, 4>| {
        let [n, c, h, w] = f.dims();
        let (var, mean) = f.reshape([n, c, h * w]).var_mean_bias(2);
        (mean.reshape([n, c]), (var + 1e-5).sqrt().reshape([n, c]))
    };
    let (mf, sf) = stats(fake_features);
    let (mc, sc) = stats(cartoon_features.detach());
    let l2 = |d: Tensor<B, 2>| d.powi_scalar(2).sum_dim(1).sqrt().mean();
    l2(mf - mc) + l2(sf - sc)
}

/// The terms of `L_gen` (Eq. 16) for one generator step, unweighted.
#[derive(Debug, Clone)]
pub struct GeneratorTerms<B: Backend> {
    /// `L^G_adv_global`, Eq. (10).
    pub adv_global: Tensor<B, 1>,
    /// `L^G_adv_local`, Eq. (13); `None` without the patch branch.
    pub adv_local: Option<Tensor<B, 1>>,
    /// `L_con`, Eq. (7).
    pub content: Tensor<B, 1>,
    /// `L_col`, Eq. (14).
    pub color: Tensor<B, 1>,
    /// `L_tv`, Eq. (15).
    pub tv: Tensor<B, 1>,
    /// `L_gram` (Table IV), when enabled.
    pub gram: Option<Tensor<B, 1>>,
    /// `L_mean_std` (Table IV), when enabled.
    pub mean_std: Option<Tensor<B, 1>>,
}

impl<B: Backend> GeneratorTerms<B> {
    /// Eq. (16): `L_gen = l_global L^G_global + l_local L^G_local + l_con L_con + l_col L_col +
    /// l_tv L_tv` (+ the weighted style losses of Table IV when present).
    pub fn total(&self, w: &LossWeights) -> Tensor<B, 1> {
        let mut total = self.adv_global.clone() * w.lambda_global
            + self.content.clone() * w.lambda_con
            + self.color.clone() * w.lambda_col
            + self.tv.clone() * w.lambda_tv;
        let optional = [
            (&self.adv_local, w.lambda_local),
            (&self.gram, w.lambda_gram),
            (&self.mean_std, w.lambda_mean_std),
        ];
        for (term, weight) in optional {
            if let Some(term) = term {
                total = total + term.clone() * weight;
            }
        }
        total
    }
}

/// Eq. (17): `L_dis = l_global L^D_global + l_local L^D_local` (`local` absent without the
/// patch branch).
pub fn discriminator_total<B: Backend>(
    w: &LossWeights,
    global: Tensor<B, 1>,
    local: Option<Tensor<B, 1>>,
) -> Tensor<B, 1> {
    let total = global * w.lambda_global;
    match local {
        Some(local) => total + local * w.lambda_local,
        None => total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{CpuBackend, CPU};

    fn scalar(t: Tensor<CpuBackend, 1>) -> f32 {
        t.into_scalar()
    }

    #[test]
    fn lsgan_closed_form() {
        let real = Tensor::<CpuBackend, 4>::from_floats([[[[1.0, 0.0]]]], &CPU);
        let fake = Tensor::<CpuBackend, 4>::from_floats([[[[0.5, -0.5]]]], &CPU);
        // (0 + 1)/2 + (0.25 + 0.25)/2
        assert!((scalar(lsgan_d(real, fake.clone())) - 0.75).abs() < 1e-7);
        // (0.25 + 2.25)/2
        assert!((scalar(lsgan_g(fake)) - 1.25).abs() < 1e-7);
    }

    #[test]
    fn huber_both_branches() {
        let a = Tensor::<CpuBackend, 1>::from_floats([0.5, 3.0], &CPU);
        let b = Tensor::<CpuBackend, 1>::zeros([2], &CPU);
        // (0.125 + 2.5) / 2
        assert!((scalar(huber(a, b)) - 1.3125).abs() < 1e-7);
    }

    #[test]
    fn edge_smoothing_blurs_edges_and_keeps_flat_areas() {
        // Left half -1, right half +1: a vertical edge at column 8.
        let mut v = vec![-1.0f32; 3 * 16 * 16];
        for (i, x) in v.iter_mut().enumerate() {
            if i % 16 >= 8 {
                *x = 1.0;
            }
        }
        let x = Tensor::<CpuBackend, 4>::from_data(
            burn::tensor::TensorData::new(v, [1, 3, 16, 16]),
            &CPU,
        );
        let y = edge_smooth(x.clone()).into_data().to_vec::<f32>().unwrap();
        assert_eq!(y[16 * 4], -1.0); // far left untouched
        assert_eq!(y[16 * 4 + 15], 1.0); // far right untouched
        assert!(
            y[16 * 4 + 7] > -0.9 && y[16 * 4 + 8] < 0.9,
            "{:?}",
            &y[64..80]
        ); // edge blurred
    }

    #[test]
    fn tv_of_a_ramp() {
        // Columns 0,1,2: horizontal diffs all 1, vertical 0.
        let s = Tensor::<CpuBackend, 4>::from_floats([[[[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]]], &CPU);
        assert!((scalar(total_variation(s)) - 1.0).abs() < 1e-7);
    }

    #[test]
    fn color_loss_vanishes_on_identical_images_only() {
        let x = Tensor::<CpuBackend, 4>::random(
            [1, 3, 4, 4],
            burn::tensor::Distribution::Uniform(-1.0, 1.0),
            &CPU,
        );
        assert_eq!(scalar(color(x.clone(), x.clone())), 0.0);
        assert!(scalar(color(x.clone(), x.neg())) > 0.01);
    }
}
