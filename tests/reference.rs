//! toonsmith against the independent PyTorch reference (`scripts/reference.py`): networks to a
//! relative error < 1e-4, patch indices exactly, losses to < 1e-5.

mod common;

use burn::tensor::Tensor;
use common::*;
use toonsmith::config::CtssConfig;
use toonsmith::ctss;
use toonsmith::device::{CpuBackend, CPU};
use toonsmith::losses;
use toonsmith::model::{DiscriminatorConfig, GeneratorConfig, VggConfig, VggInput};

/// G with the formula weights on the fixture's `{key}.input` against its `{key}.output`.
fn assert_generator_matches(key: &str) {
    let r = reference();
    let mut g = GeneratorConfig::default().init::<CpuBackend>(&CPU);
    load_formula(&mut g);
    let out = g.forward(tensor(&r, &format!("{key}.input")));
    assert_close("G", out, tensor(&r, &format!("{key}.output")), 1e-4);
}

#[test]
fn generator_matches_reference() {
    assert_generator_matches("generator");
}

#[test]
fn generator_matches_reference_at_a_larger_size() {
    // 160x176: the host convolution's large-image algorithms run (F(4x4, 3x3) at full size,
    // F(4x4, 2x2) for the upsampling to it).
    assert_generator_matches("generator.large");
}

#[test]
fn image_discriminator_with_spectral_norm_matches_reference() {
    let r = reference();
    let config = DiscriminatorConfig {
        spectral_norm: true,
        ..DiscriminatorConfig::image()
    };
    let mut d = config.init::<CpuBackend>(&CPU);
    load_formula(&mut d);
    let x: Tensor<CpuBackend, 4> = tensor(&r, "d_img.input");
    assert_close(
        "D_img 1st",
        d.forward(x.clone()),
        tensor(&r, "d_img.output1"),
        1e-4,
    );
    assert_close("D_img 2nd", d.forward(x), tensor(&r, "d_img.output2"), 1e-4);
    let u = d.layers[0].conv.u.as_ref().unwrap().value_sync();
    assert_close("persistent u", u, tensor(&r, "d_img.layers.0.conv.u"), 1e-4);
}

#[test]
fn patch_discriminator_matches_reference() {
    let r = reference();
    let mut d = DiscriminatorConfig::patch().init::<CpuBackend>(&CPU);
    load_formula(&mut d);
    let out = d.forward(tensor(&r, "d_patch.input"));
    assert_eq!(out.dims(), [3, 1, 3, 3]);
    assert_close("D_patch", out, tensor(&r, "d_patch.output"), 1e-4);
}

#[test]
fn vgg_matches_reference_in_both_input_conventions() {
    let r = reference();
    for (input, key) in [
        (VggInput::Torchvision, "vgg.output_torchvision"),
        (VggInput::Caffe, "vgg.output_caffe"),
    ] {
        let config = VggConfig {
            input,
            ..VggConfig::default()
        };
        let mut vgg = config.init::<CpuBackend>(&CPU);
        load_formula(&mut vgg);
        assert_close(
            key,
            vgg.forward(tensor(&r, "vgg.input")),
            tensor(&r, key),
            1e-4,
        );
    }
}

#[test]
fn guided_filter_matches_reference() {
    let r = reference();
    for (radius, eps) in [(1, 1e-2), (5, 0.2)] {
        let out = ctss::guided_filter(tensor(&r, "ctss.input"), radius, eps);
        assert_close(
            "guided",
            out,
            tensor(&r, &format!("guided.r{radius}")),
            1e-5,
        );
    }
}

fn ctss_configs() -> [(&'static str, CtssConfig, usize); 2] {
    [
        (
            "paper",
            CtssConfig {
                k: 5,
                patch_size: 32,
                ..CtssConfig::default()
            },
            20,
        ),
        (
            "official",
            CtssConfig {
                k: 4,
                patch_size: 32,
                ..CtssConfig::official(1)
            },
            16,
        ),
    ]
}

#[test]
fn ctss_edges_indices_and_patches_match_reference() {
    let r = reference();
    for (name, config, stride) in ctss_configs() {
        let images: Tensor<CpuBackend, 4> = tensor(&r, "ctss.input");
        let edges = ctss::edge_map(images.clone(), &config);
        assert_close(name, edges, tensor(&r, &format!("ctss.{name}.edges")), 1e-4);
        let sampled = ctss::sample(images, &config, stride).unwrap();
        let want: Vec<usize> = values(&r, &format!("ctss.{name}.indices"))
            .iter()
            .map(|&v| v as usize)
            .collect();
        assert_eq!(sampled.indices, want, "{name} indices");
        assert_close(
            name,
            sampled.patches,
            tensor(&r, &format!("ctss.{name}.patches")),
            1e-5,
        );
    }
}

#[test]
fn losses_match_reference() {
    let r = reference();
    let t4 = |k: &str| -> Tensor<CpuBackend, 4> { tensor(&r, k) };
    let (photo, fake, cartoon) = (t4("loss.photo"), t4("loss.fake"), t4("loss.cartoon"));
    let mut vgg = VggConfig::default().init::<CpuBackend>(&CPU);
    load_formula(&mut vgg);
    let (f_fake, f_cart) = (vgg.forward(fake.clone()), vgg.forward(cartoon));
    let (real_s, fake_s) = (t4("loss.real_scores"), t4("loss.fake_scores"));
    let (real_p, fake_p) = (t4("loss.real_patch_scores"), t4("loss.fake_patch_scores"));
    let terms = losses::GeneratorTerms {
        adv_global: losses::lsgan_g(fake_s.clone()),
        adv_local: Some(losses::lsgan_g(fake_p.clone())),
        content: losses::content(&vgg, photo.clone(), fake.clone()),
        color: losses::color(photo, fake.clone()),
        tv: losses::total_variation(fake),
        gram: None,
        mean_std: None,
    };
    let weights = Default::default();
    let computed = [
        ("content", terms.content.clone()),
        ("color", terms.color.clone()),
        ("tv", terms.tv.clone()),
        ("gram", losses::gram_loss(f_fake.clone(), f_cart.clone())),
        ("mean_std", losses::mean_std_loss(f_fake, f_cart)),
        ("lsgan_d", losses::lsgan_d(real_s.clone(), fake_s.clone())),
        ("lsgan_g", terms.adv_global.clone()),
        (
            "edge_promoting_d",
            losses::edge_promoting_d(real_s.clone(), t4("loss.smoothed_scores"), fake_s.clone()),
        ),
        ("l_gen", terms.total(&weights)),
        (
            "l_dis",
            losses::discriminator_total(
                &weights,
                losses::lsgan_d(real_s, fake_s),
                Some(losses::lsgan_d(real_p, fake_p)),
            ),
        ),
    ];
    for (name, value) in computed {
        assert_close(name, value, tensor(&r, &format!("loss.value.{name}")), 1e-5);
    }
}

#[test]
fn official_generator_matches_reference() {
    let r = reference();
    let mut g = GeneratorConfig::official().init::<CpuBackend>(&CPU);
    load_formula(&mut g);
    let out = g.forward(tensor(&r, "generator.input"));
    assert_close(
        "official G",
        out,
        tensor(&r, "generator_official.output"),
        1e-4,
    );
}
