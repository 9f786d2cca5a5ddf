//! Eq. (1): the self-guided filter of He et al. (2010), each channel guiding itself.
//!
//! On the CPU backends an input without gradient (CTSS filters detached images) is filtered on
//! the host, plane by plane, with running window sums (`filter_plane`): burn-flex's
//! `avg_pool2d` visits every window pixel by pixel, and the filter of a 256x256 training batch
//! took 19 ms of burn's ops, 1% of a CPU training step, twice per step.

use burn::tensor::backend::Backend;
use burn::tensor::module::avg_pool2d;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::kernels::{host_backend, host_values};

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
    if host_backend::<B>() && !x.is_require_grad() {
        let (device, dims) = (x.device(), x.dims());
        let mut values = host_values(x);
        let plane = dims[2] * dims[3];
        if plane > 0 {
            values
                .par_chunks_mut(plane)
                .for_each(|p| filter_plane(p, [dims[2], dims[3]], radius, epsilon));
        }
        return Tensor::from_data(TensorData::new(values, dims), &device);
    }
    let mean = box_mean(x.clone(), radius);
    let var = box_mean(x.clone() * x.clone(), radius) - mean.clone() * mean.clone();
    let a = var.clone() / (var + epsilon);
    let b = mean.clone() - a.clone() * mean;
    box_mean(a, radius) * x + box_mean(b, radius)
}

/// Eq. (1) on one `h x w` plane in place: [`guided_filter`]'s steps, each box mean by
/// [`box_mean_plane`].
fn filter_plane(x: &mut [f32], [h, w]: [usize; 2], radius: usize, epsilon: f64) {
    let mean = box_mean_plane(x, [h, w], radius);
    let squares: Vec<f32> = x.iter().map(|v| v * v).collect();
    let mean_sq = box_mean_plane(&squares, [h, w], radius);
    let (a, b): (Vec<f32>, Vec<f32>) = mean
        .iter()
        .zip(&mean_sq)
        .map(|(&m, &sq)| {
            let var = sq - m * m;
            let a = var / (var + epsilon as f32);
            (a, m - a * m)
        })
        .unzip();
    let (a, b) = (
        box_mean_plane(&a, [h, w], radius),
        box_mean_plane(&b, [h, w], radius),
    );
    for ((v, a), b) in x.iter_mut().zip(a).zip(b) {
        *v = a * *v + b;
    }
}

/// [`box_mean`] of one `h x w` plane: the window sums along each row, then the sums of whole
/// rows of them down the columns, each a running sum in f64 (one value in, one out per step),
/// divided by the number of pixels of the window inside the plane (the product of the two
/// passes' counts).
fn box_mean_plane(x: &[f32], [h, w]: [usize; 2], radius: usize) -> Vec<f32> {
    let mut rows = vec![0.0f64; h * w];
    for (src, dst) in x.chunks(w).zip(rows.chunks_mut(w)) {
        window_sums(|i| f64::from(src[i]), w, radius, |i, sum| dst[i] = sum);
    }
    let count =
        |i: usize, n: usize| ((i + radius).min(n - 1) + 1 - i.saturating_sub(radius)) as f64;
    let across: Vec<f64> = (0..w).map(|j| count(j, w)).collect();
    let row = |y: usize| &rows[y * w..(y + 1) * w];
    let mut sums = vec![0.0f64; w];
    let add = |sums: &mut [f64], y: usize, sign: f64| {
        for (s, v) in sums.iter_mut().zip(row(y)) {
            *s += sign * v;
        }
    };
    for y in 0..radius.min(h) {
        add(&mut sums, y, 1.0);
    }
    let mut out = vec![0.0f32; h * w];
    for (y, dst) in out.chunks_mut(w).enumerate() {
        if y + radius < h {
            add(&mut sums, y + radius, 1.0);
        }
        if y > radius {
            add(&mut sums, y - radius - 1, -1.0);
        }
        let down = count(y, h);
        for ((d, s), a) in dst.iter_mut().zip(&sums).zip(&across) {
            *d = (s / (down * a)) as f32;
        }
    }
    out
}

/// For `i` in `0..n`: `put(i, sum of value(j) for |j - i| <= radius, 0 <= j < n)`.
fn window_sums(
    value: impl Fn(usize) -> f64,
    n: usize,
    radius: usize,
    mut put: impl FnMut(usize, f64),
) {
    let mut sum: f64 = (0..radius.min(n)).map(&value).sum();
    for i in 0..n {
        if i + radius < n {
            sum += value(i + radius);
        }
        if i > radius {
            sum -= value(i - radius - 1);
        }
        put(i, sum);
    }
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

    /// The host filter (taken for inputs without gradient) against burn's ops on the same
    /// values (`Autodiff` with a tracked input takes burn's ops), windows from 3x3 to larger
    /// than the image.
    #[test]
    fn host_filter_equals_burns_ops() {
        use burn::backend::Autodiff;
        type Ad = Autodiff<CpuBackend>;
        for (dims, radius) in [([2, 3, 13, 17], 1), ([1, 2, 9, 6], 2), ([1, 1, 4, 5], 5)] {
            let x = Tensor::<CpuBackend, 4>::random(dims, Distribution::Uniform(-1.0, 1.0), &CPU);
            let host = guided_filter(x.clone(), radius, 0.05);
            let tracked = Tensor::<Ad, 4>::from_data(x.to_data(), &CPU).require_grad();
            let ops = guided_filter(tracked, radius, 0.05).inner();
            let diff: f32 = (host.clone() - ops).abs().max().into_scalar();
            assert!(diff < 2e-6, "{dims:?} r{radius}: {diff}");
            let change: f32 = (host - x).abs().max().into_scalar();
            assert!(change > 1e-2, "the filter changed the image");
        }
    }

    #[test]
    fn window_sums_clip_at_the_ends() {
        let mut got = vec![];
        window_sums(|i| (i + 1) as f64, 5, 1, |_, s| got.push(s));
        assert_eq!(got, [3.0, 6.0, 9.0, 12.0, 9.0]);
        got.clear();
        window_sums(|i| (i + 1) as f64, 3, 4, |_, s| got.push(s));
        assert_eq!(got, [6.0, 6.0, 6.0]);
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
