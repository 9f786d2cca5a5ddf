//! Layer normalisation over (C, H, W) (the paper's LN, PyTorch's `GroupNorm(1, C)`) in burn's
//! generic tensor ops, for the GPU backends: each sample's statistics in stages, and for
//! training one autodiff node with the closed-form backward. Through burn's autodiff the chain
//! of ops (staged statistics, normalisation, scale and shift, leaky ReLU) differentiates into
//! about 34 reductions per layer: 1523 of the 5113 launches of a batch-8 training step on an
//! H200 (`docs/performance.md`, session 16). The node's backward needs two sums per (sample,
//! channel) over the pixels, from which the per-channel parameter gradients and the per-sample
//! means of the input gradient follow by small sums:
//!
//! with `x^ = (x - mean) / std`, `y = act(gamma x^ + beta)`, `g` = dL/dy, `g' = g act'`:
//! - `dL/dbeta_c = sum_{n,h,w} g'`, `dL/dgamma_c = sum_{n,h,w} g' x^`;
//! - `dL/dx = (gamma g' - mean_{c,h,w}(gamma g') - x^ mean_{c,h,w}(gamma g' x^)) / std`.

use std::marker::PhantomData;
use std::sync::OnceLock;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::activation::leaky_relu;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::Tensor;

use super::float_tensor;
#[cfg(feature = "cube-ops")]
use super::same_type;
use crate::error::{Error, Result};

/// Biased variance and mean of each sample over (C, H, W), `[N, 1, 1, 1]` each: first per row
/// `(c, h)`, then per channel over its rows, then over the channels, each stage combined by
/// the law of total variance (groups have equal length, so the variance is the mean of the
/// group variances plus the variance of the group means; exact, and each stage is two-pass, so
/// no `E[x^2] - E[x]^2` cancellation).
///
/// Why not one `var_mean_bias` over `C*H*W`: a GPU backend gives each reduced row one thread
/// block, so a batch-1 1080p image (66 M values in the first LN) would be reduced by one block,
/// the weakness of PyTorch's `GroupNorm(1, C)` at batch 1. Why three stages, not two: burn's
/// untuned GPU reduction gives each output one thread looping over the reduced axis (the
/// `C*H` = 34560 row statistics of a 1080p LN took it 0.9-1.8 ms into one value, H200 profile
/// in `docs/performance.md`); here no stage reduces more than `max(W, H, C)` values into one.
/// Why rows first: along the contiguous axis each thread reads four values at a time; columns
/// first (the strided `H` axis) made the 1080p forward's reductions 14.7 ms instead of 10.0
/// (H200, session 17).
///
/// On the selected GPU backend with `TOONSMITH_GPU_LN=cube` ([`LnSums::Cube`]), by
/// [`super::ln_cube`]'s kernels instead.
pub(crate) fn sample_var_mean<B: Backend>(x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
    #[cfg(feature = "cube-ops")]
    if cube_sums::<B>(x.dims()[0]) {
        let (var, mean) = super::ln_cube::sample_var_mean(same_type(x));
        return (same_type(var), same_type(mean));
    }
    let [n, c, h, w] = x.dims();
    let (row_var, row_mean) = x.reshape([n, c * h, w]).var_mean_bias(2);
    let (channel_var, channel_mean) = combine_groups(row_var, row_mean, [n, c, h]);
    let (var, mean) = combine_groups(channel_var, channel_mean, [n, 1, c]);
    (var.reshape([n, 1, 1, 1]), mean.reshape([n, 1, 1, 1]))
}

/// Variance and mean of groups of equal size from those of their parts, `shape` = `[N, groups,
/// parts]` (the parts' statistics in order): `[N, groups, 1]` each.
fn combine_groups<B: Backend>(
    var: Tensor<B, 3>,
    mean: Tensor<B, 3>,
    shape: [usize; 3],
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let (var, mean) = (var.reshape(shape), mean.reshape(shape));
    let group_mean = mean.clone().mean_dim(2);
    let spread = (mean - group_mean.clone()).powi_scalar(2);
    ((var + spread).mean_dim(2), group_mean)
}

/// What the backward of [`layer_norm`] keeps: input, gamma, beta, each sample's mean and
/// `1 / std` (`[N, 1, 1, 1]`), the leaky ReLU's slope.
type State<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    Option<f64>,
);

#[derive(Debug)]
struct LayerNormAct<B>(PhantomData<B>);

impl<B: Backend> Backward<B, 3> for LayerNormAct<B> {
    type State = State<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let (x, gamma, beta, mean, inv_std, slope) = ops.state;
        let g = float_tensor(grads.consume::<B>(&ops.node));
        let x = float_tensor(x);
        let [gamma, beta] = [gamma, beta].map(float_tensor::<B, 1>);
        let [mean, inv_std] = [mean, inv_std].map(float_tensor::<B, 4>);
        let (dx, dgamma, dbeta) = backward(x, g, (gamma, beta), (mean, inv_std), slope);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, dx.into_primitive().tensor());
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, dgamma.into_primitive().tensor());
        }
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, dbeta.into_primitive().tensor());
        }
    }
}

/// `x^ = (x - mean) * inv_std`, its scaled and shifted `gamma x^ + beta` (before the
/// activation), for `gamma` and `beta` `[C]`.
fn normalise<B: Backend>(
    x: Tensor<B, 4>,
    (gamma, beta): (Tensor<B, 1>, Tensor<B, 1>),
    (mean, inv_std): (Tensor<B, 4>, Tensor<B, 4>),
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let c = x.dims()[1];
    let x_hat = (x - mean) * inv_std;
    let pre = x_hat.clone() * gamma.reshape([1, c, 1, 1]) + beta.reshape([1, c, 1, 1]);
    (x_hat, pre)
}

/// The closed-form gradients (module doc): `dL/dx`, `dL/dgamma`, `dL/dbeta`.
fn backward<B: Backend>(
    x: Tensor<B, 4>,
    g: Tensor<B, 4>,
    (gamma, beta): (Tensor<B, 1>, Tensor<B, 1>),
    (mean, inv_std): (Tensor<B, 4>, Tensor<B, 4>),
    slope: Option<f64>,
) -> (Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 1>) {
    let [n, c, h, w] = x.dims();
    let (params, stats) = ((gamma.clone(), beta), (mean, inv_std.clone()));
    let (x_hat, g_act) =
        x_hat_and_act_grad(x.clone(), g.clone(), params.clone(), stats.clone(), slope);
    let (sum_g, sum_g_xhat) = cube_channel_sums(x, g, params, stats, slope)
        .unwrap_or_else(|| pixel_sums(g_act.clone(), x_hat.clone()));
    let g = g_act;
    let gamma_row = gamma.clone().reshape([1, c]);
    let per_sample = |sums: Tensor<B, 2>| {
        (sums * gamma_row.clone())
            .sum_dim(1)
            .div_scalar((c * h * w) as f64)
            .reshape([n, 1, 1, 1])
    };
    let (mean_gg, mean_gg_xhat) = (per_sample(sum_g.clone()), per_sample(sum_g_xhat.clone()));
    let dx = (g * gamma.reshape([1, c, 1, 1]) - mean_gg - x_hat * mean_gg_xhat) * inv_std;
    let per_channel = |sums: Tensor<B, 2>| sums.sum_dim(0).reshape([c]);
    (dx, per_channel(sum_g_xhat), per_channel(sum_g))
}

/// `x^` and `g' = g act'(gamma x^ + beta)` (`g` itself without an activation).
fn x_hat_and_act_grad<B: Backend>(
    x: Tensor<B, 4>,
    g: Tensor<B, 4>,
    params: (Tensor<B, 1>, Tensor<B, 1>),
    stats: (Tensor<B, 4>, Tensor<B, 4>),
    slope: Option<f64>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let (x_hat, pre) = normalise(x, params, stats);
    let g = match slope {
        // act' = 1 above zero, `slope` below (PyTorch's choice at zero: `slope`).
        Some(slope) => {
            g * pre
                .greater_elem(0.0)
                .float()
                .mul_scalar(1.0 - slope)
                .add_scalar(slope)
        }
        None => g,
    };
    (x_hat, g)
}

/// The backward's per (sample, channel) sums over the pixels of `g'` and `g' x^`, `[N, C]`
/// each, by [`super::ln_cube`]'s kernel (from `x` and `g`) where it runs (`cube_sums`), else
/// `None` ([`pixel_sums`] then).
#[cfg_attr(not(feature = "cube-ops"), allow(unused_variables))]
fn cube_channel_sums<B: Backend>(
    x: Tensor<B, 4>,
    g: Tensor<B, 4>,
    params: (Tensor<B, 1>, Tensor<B, 1>),
    stats: (Tensor<B, 4>, Tensor<B, 4>),
    slope: Option<f64>,
) -> Option<(Tensor<B, 2>, Tensor<B, 2>)> {
    #[cfg(feature = "cube-ops")]
    if cube_sums::<B>(x.dims()[0] * x.dims()[1]) {
        let params = (same_type(params.0), same_type(params.1));
        let stats = (same_type(stats.0), same_type(stats.1));
        let (sum_g, sum_gx) =
            super::ln_cube::channel_sums(same_type(x), same_type(g), params, stats, slope);
        return Some((same_type(sum_g), same_type(sum_gx)));
    }
    None
}

/// Sums of `g'` and `g' x^` per (sample, channel) over the pixels by burn's ops, `[N, C]`
/// each: over W, then H (see [`sample_var_mean`]): summed over `H * W` at once, burn's untuned
/// GPU reduction gave each of the `N * C` sums one thread looping over all pixels (training's
/// reductions took 103 ms of a 375 ms batch-8 step on an H200, 42 ms in two stages).
fn pixel_sums<B: Backend>(
    g_act: Tensor<B, 4>,
    x_hat: Tensor<B, 4>,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let [n, c, _, _] = x_hat.dims();
    let pixel_sum = |t: Tensor<B, 4>| t.sum_dim(3).sum_dim(2).reshape([n, c]);
    (pixel_sum(g_act.clone()), pixel_sum(g_act * x_hat))
}

/// The backward's sums ([`cube_channel_sums`]) by burn's ops, from `x` and `g`: the yardstick of
/// [`super::ln_cube`]'s tests.
#[cfg(all(test, feature = "cube-ops"))]
pub(crate) fn channel_sums_by_ops<B: Backend>(
    x: Tensor<B, 4>,
    g: Tensor<B, 4>,
    params: (Tensor<B, 1>, Tensor<B, 1>),
    stats: (Tensor<B, 4>, Tensor<B, 4>),
    slope: Option<f64>,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let (x_hat, g_act) = x_hat_and_act_grad(x, g, params, stats, slope);
    pixel_sums(g_act, x_hat)
}

/// How LN's sums run on the selected GPU backend (`TOONSMITH_GPU_LN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LnSums {
    /// burn's reductions, in stages (`sample_var_mean`, `channel_sums_by_ops`).
    Ops,
    /// toonsmith's CubeCL kernels (`super::ln_cube`): one block per chunk of a row, a
    /// shared-memory tree, two launches per sum. Builds with a CubeCL backend only.
    Cube,
}

/// Environment variable choosing [`LnSums::current`].
pub const LN_ENV: &str = "TOONSMITH_GPU_LN";

impl LnSums {
    /// The default: [`LnSums::Ops`] until the kernels have been timed on a GPU.
    pub const DEFAULT: Self = Self::Ops;

    /// This choice's value of `TOONSMITH_GPU_LN`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ops => "ops",
            Self::Cube => "cube",
        }
    }

    /// Parses `ops`, or `cube` in a build with a CubeCL backend.
    pub fn parse(value: &str) -> Result<Self> {
        let offered: &[Self] = if cfg!(feature = "cube-ops") {
            &[Self::Ops, Self::Cube]
        } else {
            &[Self::Ops]
        };
        offered
            .iter()
            .copied()
            .find(|choice| choice.name() == value)
            .ok_or_else(|| Error::InvalidConfig {
                field: LN_ENV,
                value: value.into(),
                expected: if cfg!(feature = "cube-ops") {
                    "ops or cube".into()
                } else {
                    "ops (cube needs a build with a CubeCL backend: cuda, vulkan or wgpu)".into()
                },
            })
    }

    /// `TOONSMITH_GPU_LN` if set (an error naming it if it is not one of [`LnSums::parse`]'s),
    /// else `None`.
    pub fn from_env() -> Result<Option<Self>> {
        super::env_choice(LN_ENV, Self::parse)
    }

    /// [`LnSums::from_env`] read once, else [`LnSums::DEFAULT`] (an invalid value too: the
    /// program checks the variable at start).
    pub fn current() -> Self {
        static CHOICE: OnceLock<Option<LnSums>> = OnceLock::new();
        CHOICE
            .get_or_init(|| Self::from_env().ok().flatten())
            .unwrap_or(Self::DEFAULT)
    }
}

/// Whether LN's sums of `rows` rows on backend `B` run by [`super::ln_cube`]: `B` is the
/// selected GPU backend (inference, and inside the training node), [`LnSums::current`] is
/// [`LnSums::Cube`] and the kernels take that many rows ([`super::ln_cube::takes_rows`]).
#[cfg(feature = "cube-ops")]
fn cube_sums<B: Backend>(rows: usize) -> bool {
    std::any::TypeId::of::<B>() == std::any::TypeId::of::<crate::device::Selected>()
        && LnSums::current() == LnSums::Cube
        && super::ln_cube::takes_rows(rows)
}

/// LN over (C, H, W) with `epsilon`, per-channel `gamma` and `beta`, then the leaky ReLU of
/// `slope` if given, as one autodiff node (backward in the module doc).
///
/// # Shapes
/// `x` `[N, C, H, W]`, `gamma` and `beta` `[C]` -> `[N, C, H, W]`.
pub fn layer_norm<B: Backend>(
    x: Tensor<Autodiff<B>, 4>,
    gamma: Tensor<Autodiff<B>, 1>,
    beta: Tensor<Autodiff<B>, 1>,
    epsilon: f64,
    slope: Option<f64>,
) -> Tensor<Autodiff<B>, 4> {
    let [x, gamma, beta] = [
        x.into_primitive().tensor(),
        gamma.into_primitive().tensor(),
        beta.into_primitive().tensor(),
    ];
    let x_in = float_tensor::<B, 4>(x.primitive.clone());
    let (var, mean) = sample_var_mean(x_in.clone());
    let inv_std = var.add_scalar(epsilon).sqrt().recip();
    let params = (
        float_tensor::<B, 1>(gamma.primitive.clone()),
        float_tensor::<B, 1>(beta.primitive.clone()),
    );
    let (_, pre) = normalise(x_in, params.clone(), (mean.clone(), inv_std.clone()));
    let y = match slope {
        Some(slope) => leaky_relu(pre, slope),
        None => pre,
    };
    let y = y.into_primitive().tensor();
    let out = match LayerNormAct::<B>(PhantomData)
        .prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = (
                x.primitive.clone(),
                params.0.into_primitive().tensor(),
                params.1.into_primitive().tensor(),
                mean.into_primitive().tensor(),
                inv_std.into_primitive().tensor(),
                slope,
            );
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    float_tensor(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{CpuBackend, CPU};
    use burn::tensor::Distribution;

    type AD = Autodiff<CpuBackend>;

    /// `TOONSMITH_GPU_LN`'s values: each choice's name parses back; `cube` only where a CubeCL
    /// backend is built in; anything else is refused naming the variable.
    #[test]
    fn ln_sums_names_parse() {
        assert_eq!(LnSums::parse("ops").unwrap(), LnSums::Ops);
        assert_eq!(LnSums::parse("cube").is_ok(), cfg!(feature = "cube-ops"));
        let err = LnSums::parse("fused").unwrap_err().to_string();
        assert!(err.contains(LN_ENV) && err.contains("fused"), "{err}");
    }

    /// The row-then-combine statistics against a direct f64 computation over each whole sample
    /// (here on the CPU; on a GPU they are what LN uses), with a mean far from zero and rows
    /// whose means differ, so a missing spread term or cancellation would show.
    #[test]
    fn sample_statistics_combine_stages_exactly() {
        let dims = [2, 3, 5, 7];
        let base = Tensor::<CpuBackend, 4>::random(dims, Distribution::Normal(100.0, 0.5), &CPU);
        let ramp = Tensor::<CpuBackend, 1, burn::tensor::Int>::arange(0..15, &CPU)
            .float()
            .reshape([1, 3, 5, 1])
            .mul_scalar(0.3);
        let x = base + ramp;
        let (var, mean) = sample_var_mean(x.clone());
        let values: Vec<f32> = x.into_data().to_vec().unwrap();
        let got_mean: Vec<f32> = mean.into_data().to_vec().unwrap();
        let got_var: Vec<f32> = var.into_data().to_vec().unwrap();
        for (i, sample) in values.chunks(3 * 5 * 7).enumerate() {
            let m = sample.iter().map(|&v| v as f64).sum::<f64>() / sample.len() as f64;
            let v =
                sample.iter().map(|&s| (s as f64 - m).powi(2)).sum::<f64>() / sample.len() as f64;
            assert!((got_mean[i] as f64 - m).abs() < 1e-4 * m.abs(), "mean {i}");
            assert!(
                (got_var[i] as f64 - v).abs() < 1e-3 * v,
                "var {i}: {} vs {v}",
                got_var[i]
            );
        }
    }

    /// The node's output and input, gamma and beta gradients against burn's autodiff through
    /// the same LN written as plain ops, with and without the leaky ReLU, at batch 1 and 3.
    #[test]
    fn gradients_match_autodiff_through_the_ops() {
        for (dims, slope) in [([3, 4, 5, 6], Some(0.2)), ([1, 3, 7, 4], None)] {
            let c = dims[1];
            let x = Tensor::<CpuBackend, 4>::random(dims, Distribution::Normal(1.0, 2.0), &CPU);
            let gamma = Tensor::<CpuBackend, 1>::random([c], Distribution::Normal(1.0, 0.5), &CPU);
            let beta = Tensor::<CpuBackend, 1>::random([c], Distribution::Normal(0.0, 0.5), &CPU);
            let upstream =
                Tensor::<CpuBackend, 4>::random(dims, Distribution::Normal(0.0, 1.0), &CPU);
            let run = |node: bool| {
                let xa = Tensor::<AD, 4>::from_inner(x.clone()).require_grad();
                let ga = Tensor::<AD, 1>::from_inner(gamma.clone()).require_grad();
                let ba = Tensor::<AD, 1>::from_inner(beta.clone()).require_grad();
                let y = if node {
                    layer_norm(xa.clone(), ga.clone(), ba.clone(), 1e-5, slope)
                } else {
                    let (var, mean) = sample_var_mean(xa.clone());
                    let normed = (xa.clone() - mean) / (var + 1e-5).sqrt();
                    let pre = normed * ga.clone().reshape([1, c, 1, 1])
                        + ba.clone().reshape([1, c, 1, 1]);
                    match slope {
                        Some(s) => leaky_relu(pre, s),
                        None => pre,
                    }
                };
                let grads = (y.clone() * Tensor::from_inner(upstream.clone()))
                    .sum()
                    .backward();
                [
                    y.inner().flatten::<1>(0, 3),
                    xa.grad(&grads).expect("dx").flatten::<1>(0, 3),
                    ga.grad(&grads).expect("dgamma"),
                    ba.grad(&grads).expect("dbeta"),
                ]
            };
            let (ours, theirs) = (run(true), run(false));
            for (name, (a, b)) in ["y", "dx", "dgamma", "dbeta"]
                .iter()
                .zip(ours.into_iter().zip(theirs))
            {
                // The primitives' own shapes: a gradient of the wrong rank would broadcast.
                let shapes = (a.to_data().shape, b.to_data().shape);
                assert_eq!(shapes.0, shapes.1, "{name} {dims:?} shape");
                let diff: f32 = (a - b).abs().max().into_scalar();
                assert!(diff < 1e-4, "{name} {dims:?} slope {slope:?}: {diff}");
            }
        }
    }
}
