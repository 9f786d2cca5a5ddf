//! The FID Inception against pytorch-fid's own network (`scripts/reference_inception.py`),
//! same name-derived weights, same images: relative error < 1e-4.

mod common;

use common::*;
use toonsmith::device::{CpuBackend, CPU};
use toonsmith::model::inception::FidInception;
use toonsmith::weights::TensorFile;

#[test]
fn features_match_pytorch_fid() {
    let r = TensorFile::read(&fixture_path("inception.safetensors")).unwrap();
    let mut net = FidInception::<CpuBackend>::new(&CPU);
    load_formula(&mut net);
    let features = net.features(tensor(&r, "images"));
    assert_eq!(features.dims(), [2, 2048]);
    assert_close("inception", features, tensor(&r, "features"), 1e-4);
}
