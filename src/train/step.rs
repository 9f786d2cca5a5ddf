//! One training iteration, as Section III-C describes it: phase 1 pre-trains G on `L_con`;
//! phase 2 takes a D step (Eq. 17) then a G step (Eq. 16) on the same mini-batch.

use std::collections::BTreeMap;

use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

use super::config::{AblationConfig, ScheduleConfig, TrainConfig};
use crate::config::{CtssConfig, LossWeights};
use crate::ctss;
use crate::error::Result;
use crate::losses::{self, GeneratorTerms};
use crate::model::{Discriminator, Generator, Vgg};

/// Both discriminators; Eq. (17) optimises them jointly with one Adam. Saved as `image.*` and
/// `patch.*`.
#[derive(Module, Debug)]
pub struct Discriminators<B: Backend> {
    /// D_img.
    pub image: Discriminator<B>,
    /// D_patch.
    pub patch: Discriminator<B>,
}

/// The Adam optimiser of a module.
pub type AdamOf<M, B> = OptimizerAdaptor<Adam, M, B>;

/// Adam with the paper's betas and TensorFlow's/PyTorch's epsilon 1e-8.
pub fn adam<B: AutodiffBackend, M: AutodiffModule<B>>(schedule: &ScheduleConfig) -> AdamOf<M, B> {
    AdamConfig::new()
        .with_beta_1(schedule.beta1 as f32)
        .with_beta_2(schedule.beta2 as f32)
        .with_epsilon(1e-8)
        .init()
}

/// Everything that changes during training.
pub struct Nets<B: AutodiffBackend> {
    /// G.
    pub g: Generator<B>,
    /// D_img and D_patch.
    pub d: Discriminators<B>,
    /// Adam of G in phase 1 (its own state, as in the AnimeGAN code the official code builds on).
    pub opt_init: AdamOf<Generator<B>, B>,
    /// Adam of G in phase 2.
    pub opt_g: AdamOf<Generator<B>, B>,
    /// Adam of both discriminators.
    pub opt_d: AdamOf<Discriminators<B>, B>,
}

impl<B: AutodiffBackend> Nets<B> {
    /// Freshly initialised networks of `config` (weights from the backend's RNG: seed it first)
    /// and fresh optimisers.
    pub fn new(config: &TrainConfig, device: &B::Device) -> Self {
        Self {
            g: config.generator.init(device),
            d: Discriminators {
                image: config.d_img.init(device),
                patch: config.d_patch.init(device),
            },
            opt_init: adam(&config.schedule),
            opt_g: adam(&config.schedule),
            opt_d: adam(&config.schedule),
        }
    }
}

/// The fixed parts of a step.
pub struct StepContext<B: AutodiffBackend> {
    /// The frozen content network.
    pub vgg: Vgg<B>,
    /// CTSS settings.
    pub ctss: CtssConfig,
    /// Loss weights.
    pub weights: LossWeights,
    /// Which branches and losses are on.
    pub ablation: AblationConfig,
    /// Learning rates and pre-training scale.
    pub schedule: ScheduleConfig,
}

/// Scalar losses of one step, by name, for logs.
pub type LossValues = BTreeMap<&'static str, f32>;

/// Loss values for the log, left on the device until the step has queued all its work and then
/// read in one transfer. Each read is a synchronisation: the host waits for the GPU's queue to
/// drain, then the GPU waits for the host to queue more. Read one by one between the ops (ten
/// per adversarial step), they left an H200 idle for about a quarter of a batch-8 step
/// (`docs/performance.md`, session 17).
struct PendingLosses<B: AutodiffBackend> {
    entries: Vec<(&'static str, Tensor<B::InnerBackend, 1>)>,
}

impl<B: AutodiffBackend> PendingLosses<B> {
    fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Keeps `value` (its value only: no graph) to be read as `name`.
    fn push(&mut self, name: &'static str, value: &Tensor<B, 1>) {
        self.entries.push((name, value.clone().inner()));
    }

    /// Every value, read in one transfer.
    fn read(self) -> LossValues {
        let (names, values): (Vec<_>, Vec<_>) = self.entries.into_iter().unzip();
        if values.is_empty() {
            return LossValues::new();
        }
        let data = Tensor::cat(values, 0).into_data();
        names.into_iter().zip(data.iter::<f32>()).collect()
    }
}

impl<B: AutodiffBackend> StepContext<B> {
    /// The settings of `config` around the content network `vgg`.
    pub fn new(config: &TrainConfig, vgg: Vgg<B>) -> Self {
        Self {
            vgg,
            ctss: config.ctss.clone(),
            weights: config.loss.clone(),
            ablation: config.ablation.clone(),
            schedule: config.schedule.clone(),
        }
    }

    /// Phase 1: minimise `init_loss_scale * L_con` (Eq. 7) with lr_init.
    pub fn pretrain(&self, nets: &mut Nets<B>, photo: Tensor<B, 4>) -> LossValues {
        let fake = nets.g.forward(photo.clone());
        let content = losses::content(&self.vgg, photo, fake);
        let total = content.clone() * self.schedule.init_loss_scale;
        let grads = GradientsParams::from_grads(total.backward(), &nets.g);
        nets.g = nets
            .opt_init
            .step(self.schedule.lr_init, nets.g.clone(), grads);
        let mut log = PendingLosses::new();
        log.push("content", &content);
        log.read()
    }

    /// Phase 2: a D step (Eq. 17) on detached fakes, then a G step (Eq. 16). `strides` are the
    /// CTSS strides of this iteration for `(cartoons, generated)`.
    pub fn adversarial(
        &self,
        nets: &mut Nets<B>,
        photo: Tensor<B, 4>,
        cartoon: Tensor<B, 4>,
        strides: (usize, usize),
    ) -> Result<LossValues> {
        let mut log = PendingLosses::new();
        let fake = nets.g.forward(photo.clone());
        let (l_dis, fake_patches) = self.discriminator_loss(
            &nets.d,
            cartoon.clone(),
            fake.clone().detach(),
            strides,
            &mut log,
        )?;
        log.push("d_total", &l_dis);
        let grads = GradientsParams::from_grads(l_dis.backward(), &nets.d);
        nets.d = nets.opt_d.step(self.schedule.lr_d, nets.d.clone(), grads);

        // G's losses differentiate through D, but only G's gradients are used: D's weights are
        // constants here (as `set_requires_grad(D, False)` in PyTorch GAN code), so their
        // gradients are never computed.
        let frozen_d = nets.d.clone().no_grad();
        let terms = self.generator_terms(&frozen_d, photo, cartoon, fake, fake_patches)?;
        let l_gen = terms.total(&self.weights);
        record_terms(&terms, &mut log);
        log.push("g_total", &l_gen);
        let grads = GradientsParams::from_grads(l_gen.backward(), &nets.g);
        nets.g = nets.opt_g.step(self.schedule.lr_g, nets.g.clone(), grads);
        Ok(log.read())
    }

    /// CTSS on `images` with this iteration's `stride` (all patches when the ablation turns
    /// CTSS off).
    fn patches(&self, images: Tensor<B, 4>, stride: usize) -> Result<ctss::Sampled<B>> {
        let config = if self.ablation.ctss {
            self.ctss.clone()
        } else {
            CtssConfig {
                k: usize::MAX,
                ..self.ctss.clone()
            }
        };
        ctss::sample(images, &config, stride)
    }

    /// Eq. (17), with the edge-promoting term when enabled; and CTSS's choice on the generated
    /// images (when the patch branch is on), which the G step takes again.
    fn discriminator_loss(
        &self,
        d: &Discriminators<B>,
        cartoon: Tensor<B, 4>,
        fake: Tensor<B, 4>,
        strides: (usize, usize),
        log: &mut PendingLosses<B>,
    ) -> Result<(Tensor<B, 1>, Option<ctss::Sampled<B>>)> {
        // Real and fake are scored in one pass of each D (`forward_each`).
        let global = self.ablation.image_branch.then(|| {
            if self.ablation.edge_promoting {
                let smoothed = losses::edge_smooth(cartoon.clone());
                let [real, smoothed, fake_s] =
                    d.image
                        .forward_each([cartoon.clone(), smoothed, fake.clone()]);
                losses::edge_promoting_d(real, smoothed, fake_s)
            } else {
                let [real, fake_s] = d.image.forward_each([cartoon.clone(), fake.clone()]);
                losses::lsgan_d(real, fake_s)
            }
        });
        let (local, fake_patches) = match self.ablation.patch_branch {
            true => {
                let real_patches = self.patches(cartoon, strides.0)?.patches;
                let fake_patches = self.patches(fake, strides.1)?;
                let [real, fake_p] = d
                    .patch
                    .forward_each([real_patches, fake_patches.patches.clone()]);
                (Some(losses::lsgan_d(real, fake_p)), Some(fake_patches))
            }
            false => (None, None),
        };
        if let Some(g) = &global {
            log.push("d_global", g);
        }
        if let Some(l) = &local {
            log.push("d_local", l);
        }
        let zero = || Tensor::zeros([1], &device_of(&d.image));
        let global = global.unwrap_or_else(zero);
        let total = losses::discriminator_total(&self.weights, global, local);
        Ok((total, fake_patches))
    }

    /// The terms of Eq. (16); the local one on the patches of `fake` where the D step's CTSS
    /// chose them (`fake_patches`, present when the patch branch is on).
    fn generator_terms(
        &self,
        d: &Discriminators<B>,
        photo: Tensor<B, 4>,
        cartoon: Tensor<B, 4>,
        fake: Tensor<B, 4>,
        fake_patches: Option<ctss::Sampled<B>>,
    ) -> Result<GeneratorTerms<B>> {
        let device = fake.device();
        let adv_global = match self.ablation.image_branch {
            true => losses::lsgan_g(d.image.forward(fake.clone())),
            false => Tensor::zeros([1], &device),
        };
        let adv_local = match fake_patches {
            Some(chosen) => {
                let patches = chosen.same_places(fake.clone(), self.ctss.preset)?;
                Some(losses::lsgan_g(d.patch.forward(patches)))
            }
            None => None,
        };
        let w = &self.weights;
        let style = w.lambda_gram > 0.0 || w.lambda_mean_std > 0.0;
        let (gram, mean_std) = if style {
            let (f_fake, f_cart) = (self.vgg.forward(fake.clone()), self.vgg.forward(cartoon));
            (
                (w.lambda_gram > 0.0).then(|| losses::gram_loss(f_fake.clone(), f_cart.clone())),
                (w.lambda_mean_std > 0.0).then(|| losses::mean_std_loss(f_fake, f_cart)),
            )
        } else {
            (None, None)
        };
        Ok(GeneratorTerms {
            adv_global,
            adv_local,
            content: losses::content(&self.vgg, photo.clone(), fake.clone()),
            color: losses::color(photo, fake.clone()),
            tv: losses::total_variation(fake),
            gram,
            mean_std,
        })
    }
}

fn device_of<B: Backend>(d: &Discriminator<B>) -> B::Device {
    d.out.weight.val().device()
}

fn record_terms<B: AutodiffBackend>(terms: &GeneratorTerms<B>, log: &mut PendingLosses<B>) {
    log.push("g_global", &terms.adv_global);
    log.push("content", &terms.content);
    log.push("color", &terms.color);
    log.push("tv", &terms.tv);
    let optional = [
        ("g_local", &terms.adv_local),
        ("gram", &terms.gram),
        ("mean_std", &terms.mean_std),
    ];
    for (name, term) in optional {
        if let Some(t) = term {
            log.push(name, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{CpuBackend, CPU};
    use burn::backend::Autodiff;

    /// The values read in one transfer come back under their own names.
    #[test]
    fn pending_losses_read_each_value_under_its_name() {
        let mut log = PendingLosses::<Autodiff<CpuBackend>>::new();
        assert!(PendingLosses::<Autodiff<CpuBackend>>::new()
            .read()
            .is_empty());
        let value = |v: f32| Tensor::from_floats([v], &CPU).require_grad();
        log.push("tv", &value(0.25));
        log.push("content", &(value(2.0) * 3.0));
        log.push("color", &value(-1.5));
        let read = log.read();
        assert_eq!(read.len(), 3);
        assert_eq!(
            (read["tv"], read["content"], read["color"]),
            (0.25, 6.0, -1.5)
        );
    }
}
