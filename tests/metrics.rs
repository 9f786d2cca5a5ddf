//! FID and KID against NumPy/SciPy (`scripts/reference_metrics.py`): relative error < 1e-6.

use std::path::Path;

use toonsmith::metrics::{frechet_distance, kid, npz, FeatureStats};
use toonsmith::weights::TensorFile;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn fid_and_kid_match_scipy() {
    let file = TensorFile::read(&fixture("metrics_features.safetensors")).unwrap();
    let values = |k: &str| file.tensors[k].clone().into_vec::<f32>().unwrap();
    let (a, b) = (values("a"), values("b"));
    let dim = 64;
    let stats = |f: &[f32]| {
        let mut s = FeatureStats::new(dim);
        for chunk in f.chunks(dim * 32) {
            s.add(chunk);
        }
        s.gaussian()
    };
    let (ga, gb) = (stats(&a), stats(&b));
    let fid = frechet_distance(&ga, &gb);
    let want = values("fid")[0] as f64;
    assert!(
        ((fid - want) / want).abs() < 1e-6,
        "fid {fid} vs scipy {want}"
    );

    // One subset of all 200 rows: the full-set unbiased MMD^2 (row order does not matter).
    let k = kid(&a, &b, dim, 1, 1000, 0);
    let want = values("kid")[0] as f64;
    assert!(
        ((k.mean - want) / want).abs() < 1e-6,
        "kid {} vs {want}",
        k.mean
    );

    // The .npz numpy wrote holds the same statistics.
    let from_numpy = npz::load(&fixture("metrics_stats.npz")).unwrap();
    let err = (&from_numpy.sigma - &ga.sigma).abs().max() / ga.sigma.abs().max();
    assert!(err < 1e-6, "sigma relative error {err}");
    assert!((&from_numpy.mu - &ga.mu).abs().max() < 1e-6);
    assert!(frechet_distance(&from_numpy, &ga).abs() < 1e-6);
}

#[test]
fn identical_sets_have_zero_distance() {
    let a: Vec<f32> = (0..64 * 100)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0).sin())
        .collect();
    let mut s = FeatureStats::new(64);
    s.add(&a);
    let g = s.gaussian();
    let self_distance = frechet_distance(&g, &g);
    // 100 samples in 64 dimensions: sigma is nearly singular, rounding of its tiny eigenvalues
    // shows at ~1e-8 of the trace.
    assert!(
        self_distance.abs() < 1e-6 * g.sigma.trace(),
        "{self_distance} (trace {})",
        g.sigma.trace()
    );
    assert!(kid(&a, &a, 64, 10, 50, 1).mean.abs() < 0.05);
}
