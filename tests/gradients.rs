//! Properties of the full objective: G maps any 4k x 4k' batch to the same size in [-1, 1], and
//! gradients of L_gen (Eq. 16) reach every parameter of G, those of L_dis (Eq. 17) every
//! parameter of D_img and D_patch.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Tensor};
use toonsmith::config::{CtssConfig, LossWeights};
use toonsmith::device::CPU;
use toonsmith::losses::{self, GeneratorTerms};
use toonsmith::model::{DiscriminatorConfig, Generator, GeneratorConfig, VggConfig};
use toonsmith::{ctss, device::CpuBackend};

type B = burn::backend::Autodiff<CpuBackend>;

#[test]
fn generator_keeps_any_multiple_of_four_and_stays_in_range() {
    let paper = GeneratorConfig::default().init::<CpuBackend>(&CPU);
    let official = GeneratorConfig::official().init::<CpuBackend>(&CPU);
    check_sizes(&paper, &[(4, 8), (12, 20), (36, 28)]);
    check_sizes(&official, &[(8, 12), (12, 20), (36, 28)]);
    assert!(paper.check_input([1, 3, 30, 32]).is_err());
    assert!(paper.check_input([1, 3, 4, 32]).is_ok());
    assert!(official.check_input([1, 3, 4, 32]).is_err());
    assert!(official.check_input([1, 3, 32, 32]).is_ok());
}

fn check_sizes(g: &Generator<CpuBackend>, sizes: &[(usize, usize)]) {
    for &(h, w) in sizes {
        let x =
            Tensor::<CpuBackend, 4>::random([2, 3, h, w], Distribution::Uniform(-1.0, 1.0), &CPU);
        let y = g.forward(x);
        assert_eq!(y.dims(), [2, 3, h, w]);
        let (lo, hi) = (y.clone().min().into_scalar(), y.max().into_scalar());
        assert!(
            (-1.0..=1.0).contains(&lo) && (-1.0..=1.0).contains(&hi),
            "{lo} {hi}"
        );
    }
}

/// Counts the trainable parameters of a module that got no (or an all-zero) gradient.
struct WithoutGradient<'a> {
    grads: &'a <B as AutodiffBackend>::Gradients,
    trainable: usize,
    missing: Vec<Vec<usize>>,
}

impl ModuleVisitor<B> for WithoutGradient<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        if !tensor.is_require_grad() {
            return;
        }
        self.trainable += 1;
        let reached = tensor
            .grad(self.grads)
            .map(|g| g.abs().sum().into_scalar() > 0.0)
            .unwrap_or(false);
        if !reached {
            self.missing.push(tensor.dims().to_vec());
        }
    }
}

fn assert_all_reached<M: Module<B>>(
    what: &str,
    module: &M,
    grads: &<B as AutodiffBackend>::Gradients,
) {
    let mut check = WithoutGradient {
        grads,
        trainable: 0,
        missing: Vec::new(),
    };
    module.visit(&mut check);
    assert!(check.trainable > 0, "{what}: no trainable parameter");
    assert!(
        check.missing.is_empty(),
        "{what}: no gradient for parameters of shapes {:?}",
        check.missing
    );
}

fn ctss_config() -> CtssConfig {
    CtssConfig {
        k: 3,
        patch_size: 16,
        ..CtssConfig::default()
    }
}

#[test]
fn gradients_reach_every_parameter() {
    let g = GeneratorConfig::default().init::<B>(&CPU);
    let d_img_config = DiscriminatorConfig {
        spectral_norm: true,
        ..DiscriminatorConfig::image()
    };
    let d_patch_config = DiscriminatorConfig {
        spectral_norm: true,
        ..DiscriminatorConfig::patch()
    };
    let d_img = d_img_config.init::<B>(&CPU);
    let d_patch = d_patch_config.init::<B>(&CPU);
    let vgg = VggConfig::default().init::<B>(&CPU);
    let weights = LossWeights::default();
    let photo = Tensor::<B, 4>::random([2, 3, 32, 32], Distribution::Uniform(-1.0, 1.0), &CPU);
    let cartoon = Tensor::<B, 4>::random([2, 3, 32, 32], Distribution::Uniform(-1.0, 1.0), &CPU);
    let fake = g.forward(photo.clone());

    // Eq. (17): D step on detached fakes.
    let real_patches = ctss::sample(cartoon.clone(), &ctss_config(), 8)
        .unwrap()
        .patches;
    let fake_patches = ctss::sample(fake.clone().detach(), &ctss_config(), 8)
        .unwrap()
        .patches;
    let l_dis = losses::discriminator_total(
        &weights,
        losses::lsgan_d(d_img.forward(cartoon), d_img.forward(fake.clone().detach())),
        Some(losses::lsgan_d(
            d_patch.forward(real_patches),
            d_patch.forward(fake_patches),
        )),
    );
    let grads = l_dis.backward();
    assert_all_reached("D_img", &d_img, &grads);
    assert_all_reached("D_patch", &d_patch, &grads);
    assert!(photo.grad(&grads).is_none());

    // Eq. (16): G step.
    let fake_patches = ctss::sample(fake.clone(), &ctss_config(), 8)
        .unwrap()
        .patches;
    let terms = GeneratorTerms {
        adv_global: losses::lsgan_g(d_img.forward(fake.clone())),
        adv_local: Some(losses::lsgan_g(d_patch.forward(fake_patches))),
        content: losses::content(&vgg, photo.clone(), fake.clone()),
        color: losses::color(photo, fake.clone()),
        tv: losses::total_variation(fake),
        gram: None,
        mean_std: None,
    };
    let grads = terms.total(&weights).backward();
    assert_all_reached("G", &g, &grads);
    // VGG is frozen: it has no trainable parameter at all.
    let mut check = WithoutGradient {
        grads: &grads,
        trainable: 0,
        missing: Vec::new(),
    };
    vgg.visit(&mut check);
    assert_eq!(check.trainable, 0);
}

/// The G step differentiates through a frozen copy of D (`no_grad`, as `StepContext` does): G's
/// gradient is the same as through the trainable D, and D gets none.
#[test]
fn g_step_through_frozen_d_gives_the_same_g_gradient() {
    let g = GeneratorConfig::default().init::<B>(&CPU);
    let d = DiscriminatorConfig {
        spectral_norm: false,
        ..DiscriminatorConfig::image()
    }
    .init::<B>(&CPU);
    let photo = Tensor::<B, 4>::random([1, 3, 32, 32], Distribution::Uniform(-1.0, 1.0), &CPU);
    let stem_grad = |d: &toonsmith::model::Discriminator<B>| {
        let grads = losses::lsgan_g(d.forward(g.forward(photo.clone()))).backward();
        let Generator::Paper(paper) = &g else {
            unreachable!("the default G is the paper's")
        };
        let grad = paper
            .stem
            .conv
            .weight
            .val()
            .grad(&grads)
            .expect("G's stem is reached");
        let mut d_weights = WithoutGradient {
            grads: &grads,
            trainable: 0,
            missing: Vec::new(),
        };
        d.visit(&mut d_weights);
        (grad, d_weights.trainable)
    };
    let (through_trainable, trainable) = stem_grad(&d);
    let (through_frozen, frozen_trainable) = stem_grad(&d.clone().no_grad());
    assert!(trainable > 0);
    assert_eq!(
        frozen_trainable, 0,
        "the frozen copy has no trainable parameter"
    );
    let diff: f32 = (through_trainable.clone() - through_frozen)
        .abs()
        .max()
        .into_scalar();
    let scale: f32 = through_trainable.abs().max().into_scalar();
    assert!(scale > 0.0 && diff <= 1e-6 * scale, "{diff} vs {scale}");
}

/// The D step scores real and fake in one pass (`Discriminator::forward_each`): the same scores
/// and the same D gradient of Eq. (17) as one pass each, since LN's statistics are per image.
#[test]
fn d_scores_batches_stacked_as_it_does_each_alone() {
    let d = DiscriminatorConfig::patch().init::<B>(&CPU);
    let batch = |n| Tensor::<B, 4>::random([n, 1, 24, 24], Distribution::Uniform(0.0, 1.0), &CPU);
    let (real, fake) = (batch(3), batch(2));
    let stem_grad = |loss: Tensor<B, 1>| {
        let grads = loss.backward();
        d.layers[0]
            .conv
            .weight
            .val()
            .grad(&grads)
            .expect("D's stem is reached")
    };
    let [real_s, fake_s] = d.forward_each([real.clone(), fake.clone()]);
    let (real_alone, fake_alone) = (d.forward(real), d.forward(fake));
    assert_eq!(real_s.dims(), [3, 1, 3, 3]);
    assert_eq!(fake_s.dims(), [2, 1, 3, 3]);
    for (stacked, alone) in [(&real_s, &real_alone), (&fake_s, &fake_alone)] {
        let diff: f32 = (stacked.clone() - alone.clone()).abs().max().into_scalar();
        assert!(diff <= 1e-5, "scores {diff} apart");
    }
    let together = stem_grad(losses::lsgan_d(real_s, fake_s));
    let apart = stem_grad(losses::lsgan_d(real_alone, fake_alone));
    let diff: f32 = (together.clone() - apart).abs().max().into_scalar();
    let scale: f32 = together.abs().max().into_scalar();
    assert!(scale > 0.0 && diff <= 1e-5 * scale, "{diff} vs {scale}");
}
