//! Saving and loading weights: round trips, PyTorch files, torchvision key mapping, and clear
//! errors for wrong files.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use burn::tensor::{Distribution, Tensor};
use burn_store::ModuleSnapshot;
use common::*;
use toonsmith::device::{CpuBackend, CPU};
use toonsmith::model::{DiscriminatorConfig, GeneratorConfig, VggConfig, VggLayout};
use toonsmith::weights::{self, TensorFile};
use toonsmith::Error;

#[test]
fn generator_round_trips_through_safetensors_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.safetensors");
    let g = GeneratorConfig::default().init::<CpuBackend>(&CPU);
    let meta = HashMap::from([("toonsmith.kind".to_string(), "generator".to_string())]);
    weights::save(&g, &path, &meta).unwrap();

    let mut fresh = GeneratorConfig::default().init::<CpuBackend>(&CPU);
    let x = Tensor::<CpuBackend, 4>::random([1, 3, 16, 20], Distribution::Uniform(-1.0, 1.0), &CPU);
    assert!(relative_error(fresh.forward(x.clone()), g.forward(x.clone())) > 1e-3);
    let read = weights::load(&mut fresh, &path).unwrap();
    assert_eq!(
        read.get("toonsmith.kind").map(String::as_str),
        Some("generator")
    );
    assert_eq!(relative_error(fresh.forward(x.clone()), g.forward(x)), 0.0);
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn spectral_norm_vector_is_saved_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.safetensors");
    let config = DiscriminatorConfig {
        spectral_norm: true,
        ..DiscriminatorConfig::patch()
    };
    let d = config.init::<CpuBackend>(&CPU);
    weights::save(&d, &path, &HashMap::new()).unwrap();
    let mut fresh = config.init::<CpuBackend>(&CPU);
    weights::load(&mut fresh, &path).unwrap();
    let u = |d: &toonsmith::model::Discriminator<CpuBackend>| {
        d.layers[2].conv.u.as_ref().unwrap().value_sync()
    };
    assert_eq!(relative_error(u(&fresh), u(&d)), 0.0);
}

#[test]
fn pytorch_state_dict_loads_and_matches_reference() {
    let r = reference();
    let mut d = DiscriminatorConfig::patch().init::<CpuBackend>(&CPU);
    weights::load(&mut d, &fixture_path("d_patch_formula.pth")).unwrap();
    assert_close(
        "D_patch from .pth",
        d.forward(tensor(&r, "d_patch.input")),
        tensor(&r, "d_patch.output"),
        1e-4,
    );
}

#[test]
fn torchvision_vgg_keys_are_mapped() {
    for layout in [VggLayout::Vgg19, VggLayout::Vgg16] {
        let config = VggConfig {
            layout,
            ..VggConfig::default()
        };
        let mut expected = config.init::<CpuBackend>(&CPU);
        load_formula(&mut expected);
        // The same tensors under torchvision's names (`features.{j}.weight`).
        let indices = layout.torchvision_indices();
        let mut tensors = BTreeMap::new();
        for s in expected.collect(None, None, true) {
            let name = s.full_path();
            let parts: Vec<&str> = name.split('.').collect();
            let j = indices[parts[1].parse::<usize>().unwrap()];
            tensors.insert(
                format!("features.{j}.{}", parts[2]),
                formula_tensor(&name, &s.shape.to_vec()),
            );
        }
        let file = TensorFile {
            path: PathBuf::from("vgg.pth"),
            tensors,
            metadata: HashMap::new(),
        };
        let mut vgg = config.init::<CpuBackend>(&CPU);
        weights::apply(&mut vgg, &file, |n| weights::vgg_key_candidates(layout, n)).unwrap();
        let x =
            Tensor::<CpuBackend, 4>::random([1, 3, 16, 16], Distribution::Uniform(-1.0, 1.0), &CPU);
        assert_eq!(
            relative_error(vgg.forward(x.clone()), expected.forward(x)),
            0.0,
            "{layout:?}"
        );
    }
}

fn saved_patch_discriminator(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("d_patch.safetensors");
    let d = DiscriminatorConfig::patch().init::<CpuBackend>(&CPU);
    weights::save(&d, &path, &HashMap::new()).unwrap();
    path
}

#[test]
fn wrong_shape_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved_patch_discriminator(&dir);
    let mut d_img = DiscriminatorConfig::image().init::<CpuBackend>(&CPU);
    match weights::load(&mut d_img, &path) {
        Err(Error::WrongShape {
            key,
            expected,
            found,
            ..
        }) => {
            assert_eq!(key, "layers.0.conv.weight");
            assert_eq!((expected, found), (vec![32, 3, 3, 3], vec![16, 1, 3, 3]));
        }
        other => panic!("expected WrongShape, got {other:?}"),
    }
}

#[test]
fn missing_key_is_named_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved_patch_discriminator(&dir);
    let mut file = TensorFile::read(&path).unwrap();
    file.tensors.remove("layers.2.norm.bias");
    let mut d = DiscriminatorConfig::patch().init::<CpuBackend>(&CPU);
    let err = weights::apply(&mut d, &file, |n| vec![n.to_string()]).unwrap_err();
    assert!(
        matches!(&err, Error::MissingKey { key, .. } if key == "layers.2.norm.bias"),
        "{err}"
    );
    assert!(err.to_string().contains("d_patch.safetensors"), "{err}");
}

#[test]
fn non_finite_weights_are_named_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved_patch_discriminator(&dir);
    let mut file = TensorFile::read(&path).unwrap();
    let key = "layers.2.norm.bias";
    let shape = file.tensors[key].shape.to_vec();
    let mut values = file.tensors[key].to_vec::<f32>().unwrap();
    values[0] = f32::NAN;
    values[1] = f32::INFINITY;
    file.tensors
        .insert(key.into(), burn::tensor::TensorData::new(values, shape));
    let mut d = DiscriminatorConfig::patch().init::<CpuBackend>(&CPU);
    let err = weights::apply(&mut d, &file, |n| vec![n.to_string()]).unwrap_err();
    assert!(
        matches!(&err, Error::NonFiniteWeights { key: k, count: 2, .. } if k == key),
        "{err}"
    );
    assert!(err.to_string().contains("d_patch.safetensors"), "{err}");
}

#[test]
fn not_a_weights_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = DiscriminatorConfig::patch().init::<CpuBackend>(&CPU);
    let text = dir.path().join("notes.safetensors");
    std::fs::write(&text, "these are not weights").unwrap();
    let err = weights::load(&mut d, &text).unwrap_err();
    assert!(matches!(err, Error::NotWeights { .. }), "{err}");

    let good = saved_patch_discriminator(&dir);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = weights::load(&mut d, &truncated).unwrap_err();
    assert!(matches!(err, Error::NotWeights { .. }), "{err}");

    let fake_pth = dir.path().join("broken.pth");
    std::fs::write(&fake_pth, b"PK\x03\x04garbage").unwrap();
    let err = weights::load(&mut d, &fake_pth).unwrap_err();
    assert!(err.to_string().contains("broken.pth"), "{err}");

    let err = weights::load(&mut d, &dir.path().join("absent.safetensors")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

/// Loads a real converted VGG16 (see scripts/convert_hed_vgg16.py) when
/// `TOONSMITH_VGG16=path` is set: `cargo test --test weights -- --ignored`.
#[test]
#[ignore = "needs a converted VGG16 file in TOONSMITH_VGG16"]
fn converted_hed_vgg16_loads() {
    let path = PathBuf::from(std::env::var("TOONSMITH_VGG16").expect("TOONSMITH_VGG16"));
    let config = VggConfig {
        layout: VggLayout::Vgg16,
        input: toonsmith::model::VggInput::Caffe,
    };
    let mut vgg = config.init::<CpuBackend>(&CPU);
    weights::load_vgg(&mut vgg, &path).unwrap();
    let x = Tensor::<CpuBackend, 4>::random([1, 3, 32, 32], Distribution::Uniform(-1.0, 1.0), &CPU);
    let y = vgg.forward(x);
    assert_eq!(y.dims(), [1, 512, 4, 4]);
    assert!(y.abs().mean().into_scalar().is_finite());
}

/// A transposed view saved by PyTorch (`scripts/reference_efficientnet.py`), where
/// `w[i, j, k] = 6 k + 2 j + i`: both file formats read back in row-major order.
#[test]
fn permuted_views_read_in_row_major_order() {
    let mut want = Vec::new();
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..4 {
                want.push((6 * k + 2 * j + i) as f32);
            }
        }
    }
    for name in ["permuted_zip.pth", "permuted_legacy.pth"] {
        let file = TensorFile::read(&fixture_path(name)).unwrap();
        let w = &file.tensors["w"];
        assert_eq!(w.shape.to_vec(), vec![2, 3, 4], "{name}");
        assert_eq!(w.clone().into_vec::<f32>().unwrap(), want, "{name}");
        let c = file.tensors["c"].clone().into_vec::<f32>().unwrap();
        assert_eq!(c, vec![0.0, 1.0, 2.0, 3.0, 4.0], "{name}");
    }
}
