//! Helpers shared by the integration tests: the fixture file, deterministic weights that
//! `scripts/reference.py` derives the same way, and a relative-error check.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use burn_store::ModuleSnapshot;
use toonsmith::device::{CpuBackend, CPU};
use toonsmith::weights::{self, TensorFile};

pub mod training;

pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The tensors written by `scripts/reference.py`.
pub fn reference() -> TensorFile {
    TensorFile::read(&fixture_path("reference.safetensors")).expect("reference fixture")
}

pub fn tensor<const D: usize>(file: &TensorFile, key: &str) -> Tensor<CpuBackend, D> {
    let data = file
        .tensors
        .get(key)
        .unwrap_or_else(|| panic!("fixture has no {key}"));
    Tensor::from_data(data.clone(), &CPU)
}

pub fn values(file: &TensorFile, key: &str) -> Vec<f32> {
    file.tensors[key].clone().into_vec::<f32>().unwrap()
}

const M32: u64 = 0xFFFF_FFFF;

fn fnv1a(name: &str) -> u64 {
    name.bytes()
        .fold(0x811C_9DC5u64, |h, b| ((h ^ b as u64) * 0x0100_0193) & M32)
}

/// Same integer hash as `unit_values` in scripts/reference.py.
fn unit_values(name: &str, count: usize) -> impl Iterator<Item = f64> {
    let seed = fnv1a(name);
    (0..count as u64).map(move |i| {
        let mut x = (i * 2_654_435_761) & M32;
        x ^= seed;
        x = (x * 2_246_822_519) & M32;
        x ^= x >> 13;
        x = (x * 3_266_489_917) & M32;
        x ^= x >> 16;
        x as f64 / 4_294_967_296.0
    })
}

/// Norm scales (`norm.weight`, `bn.weight`, EfficientNet's `_bn1.weight`) and running
/// variances, which the formula keeps near 1.
fn is_scale(name: &str) -> bool {
    let efficientnet_bn = name.ends_with(".weight")
        && name
            .rsplit('.')
            .nth(1)
            .is_some_and(|layer| layer.starts_with("_bn"));
    efficientnet_bn
        || ["norm.weight", "bn.weight", "running_var"]
            .iter()
            .any(|s| name.ends_with(s))
}

/// Same values as `formula_tensor` in scripts/reference.py.
pub fn formula_tensor(name: &str, shape: &[usize]) -> TensorData {
    let count = shape.iter().product();
    let values: Vec<f32> = unit_values(name, count)
        .map(|u| {
            let u = 2.0 * u - 1.0;
            if shape.len() == 4 {
                let fan_in: usize = shape[1..].iter().product();
                (u * (3.0 / fan_in as f64).sqrt()) as f32
            } else if is_scale(name) {
                (1.0 + 0.2 * u) as f32
            } else {
                (u * 0.1) as f32
            }
        })
        .collect();
    TensorData::new(values, shape.to_vec())
}

/// Gives every tensor of `module` its formula value.
pub fn load_formula<B: Backend, M: ModuleSnapshot<B>>(module: &mut M) {
    let tensors: BTreeMap<String, TensorData> = module
        .collect(None, None, true)
        .iter()
        .map(|s| {
            (
                s.full_path(),
                formula_tensor(&s.full_path(), &s.shape.to_vec()),
            )
        })
        .collect();
    let file = TensorFile {
        path: PathBuf::from("<formula>"),
        tensors,
        metadata: HashMap::new(),
    };
    weights::apply(module, &file, |n| vec![n.to_string()]).expect("formula weights apply");
}

/// `max |got - want| / max |want|`.
pub fn relative_error<const D: usize>(
    got: Tensor<CpuBackend, D>,
    want: Tensor<CpuBackend, D>,
) -> f32 {
    assert_eq!(got.dims(), want.dims(), "shapes differ");
    let scale = want.clone().abs().max().into_scalar();
    let diff = (got - want).abs().max().into_scalar();
    diff / scale.max(f32::MIN_POSITIVE)
}

pub fn assert_close<const D: usize>(
    what: &str,
    got: Tensor<CpuBackend, D>,
    want: Tensor<CpuBackend, D>,
    tolerance: f32,
) {
    let err = relative_error(got, want);
    assert!(
        err < tolerance,
        "{what}: relative error {err:e} >= {tolerance:e}"
    );
}
