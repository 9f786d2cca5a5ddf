//! EfficientNet-Lite0 against the `efficientnet_lite_pytorch` package's network
//! (`scripts/reference_efficientnet.py`), same name-derived weights, same images; its legacy
//! `.pth` loading path; and (ignored unless TOONSMITH_EFFICIENTNET points at
//! `efficientnet-lite0-57934424.pth`) the real ImageNet weights against PyTorch.

mod common;

use burn::tensor::Tensor;
use common::*;
use toonsmith::device::{CpuBackend, CPU};
use toonsmith::error::Error;
use toonsmith::model::efficientnet::{EfficientNetLite0, EFFICIENTNET_FEATURES};
use toonsmith::weights::{self, TensorFile};

fn fixture() -> TensorFile {
    TensorFile::read(&fixture_path("efficientnet.safetensors")).unwrap()
}

#[test]
fn features_match_pytorch() {
    let r = fixture();
    let mut net = EfficientNetLite0::<CpuBackend>::new(&CPU);
    load_formula(&mut net);
    let features = net.features(tensor(&r, "images"));
    assert_eq!(features.dims(), [2, EFFICIENTNET_FEATURES]);
    assert_close("efficientnet", features, tensor(&r, "features"), 1e-4);
}

#[test]
fn legacy_pth_reads_and_a_partial_file_is_named() {
    let path = fixture_path("efficientnet_stem_legacy.pth");
    let file = TensorFile::read(&path).unwrap();
    let stem = &file.tensors["_conv_stem.weight"];
    assert_eq!(stem.shape.to_vec(), vec![32, 3, 3, 3]);
    let expected = formula_tensor("_conv_stem.weight", &[32, 3, 3, 3]);
    assert_eq!(
        stem.clone().into_vec::<f32>().unwrap(),
        expected.into_vec::<f32>().unwrap()
    );
    let mut net = EfficientNetLite0::<CpuBackend>::new(&CPU);
    match weights::load(&mut net, &path) {
        Err(Error::MissingKey { path: p, key, .. }) => {
            assert_eq!(p, path);
            assert!(key.starts_with("_blocks.0."), "{key}");
        }
        other => panic!("expected a missing key, got {other:?}"),
    }
}

#[test]
#[ignore = "needs TOONSMITH_EFFICIENTNET=efficientnet-lite0-57934424.pth"]
fn real_weights_match_pytorch() {
    let path = std::env::var("TOONSMITH_EFFICIENTNET").expect("TOONSMITH_EFFICIENTNET");
    let mut net = EfficientNetLite0::<CpuBackend>::new(&CPU);
    weights::load(&mut net, std::path::Path::new(&path)).unwrap();
    let r = fixture();
    let image: Tensor<CpuBackend, 4> = tensor(&r, "real_image");
    let features = net.features(image / 255.0);
    assert_close("real weights", features, tensor(&r, "real_features"), 1e-4);
}
