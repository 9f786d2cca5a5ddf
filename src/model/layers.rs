//! Building blocks of Fig. 10: convolution (with optional spectral normalisation), the
//! layer normalisation "LN", leaky ReLU and x2 upsampling.

use burn::module::{Module, Param, RunningState};
use burn::tensor::activation::leaky_relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::{Distribution, Tensor};
use serde::{Deserialize, Serialize};

use crate::kernels;
use crate::kernels::ln_ops::sample_var_mean;
use crate::kernels::subpixel;

/// Slope of every leaky ReLU in Fig. 10 ("lRelu: leaky Relu with alpha = 0.2").
pub const LEAKY_SLOPE: f64 = 0.2;

/// How a convolution pads its input. The paper does not say.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// Zeros, `k/2` on every side, as PyTorch ports do (default).
    #[default]
    Zeros,
    /// Reflection, as the official code: TF "SAME" amounts, i.e. `k - stride` in total with the
    /// odd pixel at the bottom/right (a stride-2 3x3 pads only bottom and right).
    Reflect,
}

/// Weight initialisation (the paper is silent).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// He normal, std = sqrt(2 / fan_in): the official code's generator init.
    He,
    /// N(0, 0.02): the official code's (and DCGAN's) discriminator init.
    Normal002,
}

/// Settings of one [`Conv`].
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Square kernel side.
    pub kernel: usize,
    /// Stride (1 or 2 in Fig. 10).
    pub stride: usize,
    /// Groups; `c_in` for the depthwise convolution of the ResBlock.
    pub groups: usize,
    /// Whether the convolution has a bias.
    pub bias: bool,
    /// Padding rule.
    pub padding: Padding,
    /// Spectral normalisation of the weight (one power iteration per forward).
    pub spectral_norm: bool,
    /// Initialisation of the weight (the bias starts at zero).
    pub init: Init,
}

impl ConvSpec {
    /// A dense convolution with bias, zero padding, He init.
    pub fn new(c_in: usize, c_out: usize, kernel: usize, stride: usize) -> Self {
        Self {
            c_in,
            c_out,
            kernel,
            stride,
            groups: 1,
            bias: true,
            padding: Padding::Zeros,
            spectral_norm: false,
            init: Init::He,
        }
    }

    /// Builds the convolution on `device`.
    pub fn init<B: Backend>(self, device: &B::Device) -> Conv<B> {
        let fan_in = self.c_in / self.groups * self.kernel * self.kernel;
        let std = match self.init {
            Init::He => (2.0 / fan_in as f64).sqrt(),
            Init::Normal002 => 0.02,
        };
        let shape = [
            self.c_out,
            self.c_in / self.groups,
            self.kernel,
            self.kernel,
        ];
        let weight = Tensor::random(shape, Distribution::Normal(0.0, std), device);
        let u = self.spectral_norm.then(|| {
            let u = Tensor::<B, 1>::random([self.c_out], Distribution::Normal(0.0, 1.0), device);
            RunningState::new(l2_normalize(u))
        });
        Conv {
            weight: Param::from_tensor(weight),
            bias: self
                .bias
                .then(|| Param::from_tensor(Tensor::zeros([self.c_out], device))),
            u,
            stride: self.stride,
            groups: self.groups,
            padding: self.padding,
        }
    }
}

/// A 2-D convolution. Weight names follow PyTorch: `weight` `[C_out, C_in/groups, k, k]`,
/// `bias` `[C_out]`, and with spectral normalisation the persistent power-iteration vector `u`
/// `[C_out]` (PyTorch calls it `weight_u`).
#[derive(Module, Debug)]
pub struct Conv<B: Backend> {
    /// Kernel, `[C_out, C_in/groups, k, k]`.
    pub weight: Param<Tensor<B, 4>>,
    /// Bias, `[C_out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Left singular vector estimate of spectral normalisation, `[C_out]`.
    pub u: Option<RunningState<Tensor<B, 1>>>,
    #[module(skip)]
    stride: usize,
    #[module(skip)]
    groups: usize,
    #[module(skip)]
    padding: Padding,
}

impl<B: Backend> Conv<B> {
    /// # Shapes
    /// `[N, C_in, H, W]` -> `[N, C_out, H / stride, W / stride]` (H, W multiples of the stride).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let weight = self.weight_now();
        let k = weight.dims()[2];
        let bias = self.bias.as_ref().map(|b| b.val());
        let (x, pad) = match self.padding {
            Padding::Zeros => (x, k / 2),
            Padding::Reflect => {
                let total = k.saturating_sub(self.stride);
                let (before, after) = (total / 2, total - total / 2);
                (
                    x.pad([(before, after), (before, after)], PadMode::Reflect),
                    0,
                )
            }
        };
        self.convolve(x, weight, bias, pad, self.stride)
    }

    /// This convolution of `upsample_nearest2(x)` (Fig. 10's `Upsample_n` then this 3x3
    /// convolution): by the four sub-pixel phases of [`kernels::subpixel`] where it is a dense
    /// stride-1 3x3 (4/9 of the multiply-adds, and the upsampled input is never written),
    /// else by upsampling first. Reflection padding of the upsampled image is edge padding
    /// of `x`.
    ///
    /// # Shapes
    /// `[N, C_in, H, W]` -> `[N, C_out, 2H, 2W]`.
    pub fn forward_upsampled(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        if self.weight.dims()[2..] != [3, 3] || self.stride != 1 || self.groups != 1 {
            return self.forward(upsample_nearest2(x));
        }
        let weight = self.weight_now();
        let bias = self.bias.as_ref().map(|b| subpixel::phase_bias(b.val()));
        let (x, pad) = match self.padding {
            Padding::Zeros => (x, 1),
            Padding::Reflect => (x.pad([(1, 1), (1, 1)], PadMode::Edge), 0),
        };
        let z = self.convolve(x, subpixel::phase_weights(weight), bias, pad, 1);
        subpixel::interleave(z)
    }

    /// The weight as this forward uses it: spectrally normalised where the convolution is.
    fn weight_now(&self) -> Tensor<B, 4> {
        match &self.u {
            Some(u) => spectral_normalize(self.weight.val(), u),
            None => self.weight.val(),
        }
    }

    /// The convolution of `x` (zero-padded by `pad`) with `weight` at `stride`, by the kernel
    /// that suits the backend.
    fn convolve(
        &self,
        x: Tensor<B, 4>,
        weight: Tensor<B, 4>,
        bias: Option<Tensor<B, 1>>,
        pad: usize,
        stride: usize,
    ) -> Tensor<B, 4> {
        let (channels, k) = ([x.dims()[1], weight.dims()[0]], weight.dims()[2]);
        if kernels::depthwise::host_applies::<B>(self.groups, channels, [k, pad, stride]) {
            return kernels::depthwise::host_conv2d(x, weight, bias, pad);
        }
        if kernels::conv2d_applies::<B>(stride, self.groups) {
            return kernels::conv2d(x, weight, bias, pad, stride);
        }
        #[cfg(feature = "flex")]
        if kernels::conv2d_autodiff_applies::<B>(stride, self.groups) {
            return kernels::autodiff::conv2d(x, weight, bias, pad, stride);
        }
        if kernels::depthwise_applies::<B>(self.groups, x.dims()[1], weight.dims()[0]) {
            return kernels::depthwise::conv2d(x, weight, bias, pad, stride);
        }
        if kernels::gemm_conv_applies::<B>(self.groups) {
            return kernels::gemm_conv2d(x, weight, bias, pad, stride);
        }
        let options = ConvOptions::new([stride; 2], [pad; 2], [1, 1], self.groups);
        conv2d(x, weight, bias, options)
    }
}

/// Spectral normalisation (Miyato et al. 2018) with one power iteration, as PyTorch's
/// `spectral_norm` in training mode: `v = normalize(W^T u)`, `u = normalize(W v)` without
/// gradient, then `W / (u^T W v)` with gradient through `W`. The new `u` is stored.
fn spectral_normalize<B: Backend>(
    weight: Tensor<B, 4>,
    u_state: &RunningState<Tensor<B, 1>>,
) -> Tensor<B, 4> {
    let [c_out, c_in, kh, kw] = weight.dims();
    let w = weight.clone().reshape([c_out, c_in * kh * kw]);
    let w_const = w.clone().detach();
    let u = u_state.value_sync().detach().reshape([1, c_out]);
    let v = l2_normalize(u.matmul(w_const.clone()).reshape([c_in * kh * kw]));
    let u = l2_normalize(
        w_const
            .matmul(v.clone().reshape([c_in * kh * kw, 1]))
            .reshape([c_out]),
    );
    u_state.update(u.clone());
    let wv = w.matmul(v.reshape([c_in * kh * kw, 1])).reshape([c_out]);
    let sigma = (u * wv).sum();
    weight / sigma.reshape([1, 1, 1, 1])
}

/// `x / max(||x||, 1e-12)`, as `torch.nn.functional.normalize`.
fn l2_normalize<B: Backend>(x: Tensor<B, 1>) -> Tensor<B, 1> {
    let norm = x.clone().powi_scalar(2).sum().sqrt().clamp_min(1e-12);
    x / norm
}

/// Statistics of one LN over a whole image: mean and (biased) variance of its input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormStats {
    /// Mean over (C, H, W).
    pub mean: f64,
    /// Variance over (C, H, W).
    pub var: f64,
}

/// How the LN layers of a forward pass get their statistics. The generator's forward passes
/// are written once against this trait: [`OwnStats`] normalises each sample by its own
/// statistics (Fig. 10); tiled inference supplies statistics gathered over the whole image.
pub trait Normalizer<B: Backend> {
    /// Normalises `x`, the input of the next LN layer `ln` of the pass, then applies the leaky
    /// ReLU of `slope` if given; `None` ends the pass here.
    fn norm(
        &mut self,
        ln: &LayerNorm<B>,
        x: Tensor<B, 4>,
        slope: Option<f64>,
    ) -> Option<Tensor<B, 4>>;

    /// The input of the next LN layer when it is already known (tiled inference resuming a pass
    /// from an input it stashed): the unit then skips the convolution that would compute it.
    fn resume(&mut self) -> Option<Tensor<B, 4>> {
        None
    }
}

/// Each LN uses the statistics of its own input: the network of the paper.
pub struct OwnStats;

impl<B: Backend> Normalizer<B> for OwnStats {
    fn norm(
        &mut self,
        ln: &LayerNorm<B>,
        x: Tensor<B, 4>,
        slope: Option<f64>,
    ) -> Option<Tensor<B, 4>> {
        Some(ln.forward_act(x, slope))
    }
}

/// The output of a pass run with [`OwnStats`], which never ends a pass early.
pub(crate) fn own_stats_pass<B: Backend>(pass: Option<Tensor<B, 4>>) -> Tensor<B, 4> {
    match pass {
        Some(y) => y,
        None => unreachable!("OwnStats never ends a pass"),
    }
}

/// "LN" of Fig. 10: normalisation over (C, H, W) of each sample, then a per-channel scale and
/// shift. This is PyTorch's `GroupNorm(1, C)`, hence the names `weight` and `bias`.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Per-channel scale gamma, `[C]`, initialised to 1.
    pub weight: Param<Tensor<B, 1>>,
    /// Per-channel shift beta, `[C]`, initialised to 0.
    pub bias: Param<Tensor<B, 1>>,
    #[module(skip)]
    epsilon: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// A layer norm over `channels` channels; `epsilon` is 1e-5 in PyTorch's GroupNorm and
    /// 1e-12 in the official code.
    pub fn new(channels: usize, epsilon: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            epsilon,
        }
    }

    /// # Shapes
    /// `[N, C, H, W]` -> `[N, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_act(x, None)
    }

    /// LN, then the leaky ReLU of `slope` if given (one fused kernel on the CPU backend).
    pub fn forward_act(&self, x: Tensor<B, 4>, slope: Option<f64>) -> Tensor<B, 4> {
        if kernels::layer_norm_applies::<B>() {
            let (gamma, beta) = (self.weight.val(), self.bias.val());
            return kernels::layer_norm(x, gamma, beta, self.epsilon, None, slope);
        }
        #[cfg(feature = "flex")]
        if kernels::autodiff::is_cpu_autodiff::<B>() {
            let (gamma, beta) = (self.weight.val(), self.bias.val());
            return kernels::autodiff::layer_norm(x, gamma, beta, self.epsilon, slope);
        }
        if kernels::gpu_layer_norm_applies::<B>() {
            let (gamma, beta) = (self.weight.val(), self.bias.val());
            return kernels::gpu_layer_norm(x, gamma, beta, self.epsilon, slope);
        }
        act(self.forward_burn(x), slope)
    }

    fn forward_burn(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let c = x.dims()[1];
        let (var, mean) = sample_var_mean(x.clone());
        let normed = (x - mean) / (var + self.epsilon).sqrt();
        let scale = self.weight.val().reshape([1, c, 1, 1]);
        let shift = self.bias.val().reshape([1, c, 1, 1]);
        normed * scale + shift
    }

    /// LN with given statistics instead of those of `x` (exact when they are the statistics of
    /// the whole image `x` is a tile of), then the leaky ReLU of `slope` if given.
    pub fn forward_with_stats(
        &self,
        x: Tensor<B, 4>,
        stats: NormStats,
        slope: Option<f64>,
    ) -> Tensor<B, 4> {
        if kernels::layer_norm_applies::<B>() {
            let (gamma, beta) = (self.weight.val(), self.bias.val());
            let stats = Some((stats.mean, stats.var));
            return kernels::layer_norm(x, gamma, beta, self.epsilon, stats, slope);
        }
        let c = x.dims()[1];
        let inv_std = 1.0 / (stats.var + self.epsilon).sqrt();
        let scale = self.weight.val().reshape([1, c, 1, 1]) * inv_std;
        let shift = self.bias.val().reshape([1, c, 1, 1]);
        act((x - stats.mean) * scale + shift, slope)
    }
}

fn act<B: Backend>(x: Tensor<B, 4>, slope: Option<f64>) -> Tensor<B, 4> {
    match slope {
        Some(slope) => leaky_relu(x, slope),
        None => x,
    }
}

/// `Conv -> LN -> lRelu` (the last two optional), the unit of Fig. 10.
#[derive(Module, Debug)]
pub struct ConvNormAct<B: Backend> {
    /// The convolution.
    pub conv: Conv<B>,
    /// The layer norm, absent where Fig. 10 has none.
    pub norm: Option<LayerNorm<B>>,
    #[module(skip)]
    act: bool,
}

impl<B: Backend> ConvNormAct<B> {
    /// Builds `conv`, LN (if `norm`) with `ln_epsilon`, and lRelu (if `act`).
    pub fn new(spec: ConvSpec, norm: bool, act: bool, ln_epsilon: f64, device: &B::Device) -> Self {
        Self {
            norm: norm.then(|| LayerNorm::new(spec.c_out, ln_epsilon, device)),
            conv: spec.init(device),
            act,
        }
    }

    /// # Shapes
    /// As [`Conv::forward`].
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        own_stats_pass(self.forward_with(x, &mut OwnStats))
    }

    /// As [`ConvNormAct::forward`], with LN statistics from `normalizer`; `None` if it ended
    /// the pass.
    pub fn forward_with(
        &self,
        x: Tensor<B, 4>,
        normalizer: &mut impl Normalizer<B>,
    ) -> Option<Tensor<B, 4>> {
        self.norm_act(|| self.conv.forward(x), normalizer)
    }

    /// As [`ConvNormAct::forward_with`] on `upsample_nearest2(x)`, the upsampling folded into
    /// the convolution ([`Conv::forward_upsampled`]).
    ///
    /// # Shapes
    /// `[N, C_in, H, W]` -> `[N, C_out, 2H, 2W]`.
    pub fn forward_upsampled_with(
        &self,
        x: Tensor<B, 4>,
        normalizer: &mut impl Normalizer<B>,
    ) -> Option<Tensor<B, 4>> {
        self.norm_act(|| self.conv.forward_upsampled(x), normalizer)
    }

    /// LN and lRelu (where this unit has them) on the convolution's output `conv()`, which
    /// `normalizer` may supply instead.
    fn norm_act(
        &self,
        conv: impl FnOnce() -> Tensor<B, 4>,
        normalizer: &mut impl Normalizer<B>,
    ) -> Option<Tensor<B, 4>> {
        let slope = self.act.then_some(LEAKY_SLOPE);
        let Some(norm) = &self.norm else {
            return Some(act(conv(), slope));
        };
        let x = normalizer.resume().unwrap_or_else(conv);
        normalizer.norm(norm, x, slope)
    }
}

/// Nearest-neighbour x2 upsampling (Fig. 10, "Upsample_n").
///
/// # Shapes
/// `[N, C, H, W]` -> `[N, C, 2H, 2W]`.
pub fn upsample_nearest2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    if kernels::layer_norm_applies::<B>() {
        return kernels::upsample_nearest2(x);
    }
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h, 1, w, 1])
        .expand([n, c, h, 2, w, 2])
        .reshape([n, c, 2 * h, 2 * w])
}

/// TF1's legacy bilinear x2 resize (`tf.image.resize_images`, no corner alignment, no half-pixel
/// centres), used by the official code: along each axis `out[2i] = in[i]` and
/// `out[2i+1] = (in[i] + in[min(i+1, n-1)]) / 2`.
///
/// # Shapes
/// `[N, C, H, W]` -> `[N, C, 2H, 2W]`.
pub fn upsample_tf1_bilinear2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let x = interleave_midpoints(x, 2);
    interleave_midpoints(x, 3)
}

/// Doubles axis `dim` (2 or 3) of `x`, inserting the mean of each element and its successor (the
/// last element repeated at the border).
fn interleave_midpoints<B: Backend>(x: Tensor<B, 4>, dim: usize) -> Tensor<B, 4> {
    let dims = x.dims();
    let n = dims[dim];
    let next = if n > 1 {
        let tail = x.clone().narrow(dim, 1, n - 1);
        let last = x.clone().narrow(dim, n - 1, 1);
        Tensor::cat(vec![tail, last], dim)
    } else {
        x.clone()
    };
    let mid = (x.clone() + next) / 2.0;
    let mut out_dims = dims;
    out_dims[dim] = 2 * n;
    Tensor::stack::<5>(vec![x, mid], dim + 1).reshape(out_dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{CpuBackend, CPU};
    use burn::tensor::{TensorData, Tolerance};

    #[test]
    fn layer_norm_has_zero_mean_unit_variance_per_sample() {
        let x = Tensor::<CpuBackend, 4>::random([2, 3, 4, 5], Distribution::Normal(3.0, 2.0), &CPU);
        let y = LayerNorm::new(3, 1e-5, &CPU).forward(x);
        let flat = y.reshape([2, 60]);
        let (var, mean) = flat.var_mean_bias(1);
        mean.into_data()
            .assert_approx_eq::<f32>(&TensorData::from([[0.0], [0.0]]), Tolerance::absolute(1e-5));
        var.into_data()
            .assert_approx_eq::<f32>(&TensorData::from([[1.0], [1.0]]), Tolerance::absolute(1e-3));
    }

    /// The generic LN (what GPU backends run) against the CPU's fused kernel, with a non-trivial
    /// scale and shift, so a broadcasting slip in either shows.
    #[test]
    fn generic_layer_norm_matches_the_cpu_kernel() {
        let x = Tensor::<CpuBackend, 4>::random([2, 3, 6, 5], Distribution::Normal(2.0, 3.0), &CPU);
        let mut ln = LayerNorm::new(3, 1e-5, &CPU);
        ln.weight = Param::from_tensor(Tensor::from_data([0.5, -1.0, 2.0], &CPU));
        ln.bias = Param::from_tensor(Tensor::from_data([0.1, 0.2, -0.3], &CPU));
        let generic = ln.forward_burn(x.clone());
        let kernel = ln.forward(x);
        generic
            .into_data()
            .assert_approx_eq::<f32>(&kernel.into_data(), Tolerance::absolute(1e-4));
    }

    #[test]
    fn upsample_repeats_each_pixel() {
        let x = Tensor::<CpuBackend, 4>::from_data([[[[1.0, 2.0], [3.0, 4.0]]]], &CPU);
        let y = upsample_nearest2(x);
        let expected = TensorData::from([[[
            [1.0, 1.0, 2.0, 2.0],
            [1.0, 1.0, 2.0, 2.0],
            [3.0, 3.0, 4.0, 4.0],
            [3.0, 3.0, 4.0, 4.0],
        ]]]);
        y.into_data().assert_eq(&expected, false);
    }

    #[test]
    fn tf1_bilinear_interleaves_midpoints_and_clamps_the_edge() {
        let x = Tensor::<CpuBackend, 4>::from_data([[[[0.0, 2.0], [4.0, 8.0]]]], &CPU);
        let expected = TensorData::from([[[
            [0.0, 1.0, 2.0, 2.0],
            [2.0, 3.5, 5.0, 5.0],
            [4.0, 6.0, 8.0, 8.0],
            [4.0, 6.0, 8.0, 8.0],
        ]]]);
        upsample_tf1_bilinear2(x)
            .into_data()
            .assert_eq(&expected, false);
    }

    #[test]
    fn reflect_stride2_pads_bottom_right_only() {
        // A 3x3 kernel picking the bottom-right tap: output (i, j) = padded[2i+2, 2j+2].
        let mut spec = ConvSpec::new(1, 1, 3, 2);
        spec.padding = Padding::Reflect;
        spec.bias = false;
        let mut conv = spec.init::<CpuBackend>(&CPU);
        let mut k = [[[[0.0f32; 3]; 3]; 1]; 1];
        k[0][0][2][2] = 1.0;
        conv.weight = Param::from_tensor(Tensor::from_data(k, &CPU));
        let x = Tensor::<CpuBackend, 4>::from_data([[[[1.0, 2.0], [3.0, 4.0]]]], &CPU);
        // Padded (bottom/right, reflect): [[1,2,1],[3,4,3],[1,2,1]] -> tap (2,2) = 1.
        conv.forward(x)
            .into_data()
            .assert_eq(&TensorData::from([[[[1.0f32]]]]), false);
    }

    /// `I - 2 a a^T / |a|^2`: an orthogonal (Householder) matrix, as rows.
    fn householder(a: &[f32]) -> Vec<Vec<f32>> {
        let norm2: f32 = a.iter().map(|x| x * x).sum();
        (0..a.len())
            .map(|i| {
                (0..a.len())
                    .map(|j| f32::from(u8::from(i == j)) - 2.0 * a[i] * a[j] / norm2)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn spectral_norm_makes_largest_singular_value_one() {
        // A dense weight with a known spectrum: W = U diag(s) V^T with Householder U (6x6)
        // and V (36x36), so sigma_max(W) = 2 exactly and W / sigma must have sigma_max 1.
        let s = [2.0f32, 1.0, 0.8, 0.5, 0.3, 0.1];
        let u = householder(&[1.0, -2.0, 0.5, 3.0, 1.5, -1.0]);
        let v = householder(
            &(0..36)
                .map(|i| (i as f32 * 0.7).sin() + 0.2)
                .collect::<Vec<_>>(),
        );
        let w: Vec<f32> = (0..6)
            .flat_map(|i| {
                let (u, v) = (&u, &v);
                (0..36).map(move |j| (0..6).map(|k| u[i][k] * s[k] * v[j][k]).sum::<f32>())
            })
            .collect();
        let mut spec = ConvSpec::new(4, 6, 3, 1);
        spec.spectral_norm = true;
        let mut conv = spec.init::<CpuBackend>(&CPU);
        conv.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [6, 4, 3, 3]), &CPU));
        // One power iteration per forward; the gap sigma_2 / sigma_1 = 1/2 converges fast.
        let x = Tensor::<CpuBackend, 4>::zeros([1, 4, 3, 3], &CPU);
        for _ in 0..30 {
            let _ = conv.forward(x.clone());
        }
        let normalized = spectral_normalize(conv.weight.val(), conv.u.as_ref().unwrap());
        // W / sigma_est, so the ratio of Frobenius norms is the estimated sigma.
        let frobenius = |t: Tensor<CpuBackend, 4>| t.powi_scalar(2).sum().sqrt().into_scalar();
        let scale = frobenius(conv.weight.val()) / frobenius(normalized.clone());
        assert!(
            (scale - 2.0).abs() < 1e-4,
            "estimated sigma = {scale}, true 2"
        );
        let n = normalized.reshape([6, 36]);
        // Largest eigenvalue of N N^T by power iteration from a fresh start: must be 1.
        let nnt = n.clone().matmul(n.transpose());
        let mut e = Tensor::<CpuBackend, 2>::ones([6, 1], &CPU);
        for _ in 0..100 {
            let next = nnt.clone().matmul(e);
            e = next.clone() / next.powi_scalar(2).sum().sqrt().reshape([1, 1]);
        }
        let lambda = (e.clone().transpose().matmul(nnt.matmul(e))).into_scalar();
        assert!(
            (lambda.sqrt() - 1.0).abs() < 1e-4,
            "sigma = {}",
            lambda.sqrt()
        );
    }
}
