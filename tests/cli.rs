//! The real `toonsmith` binary: `train` on a smoke config, `--dry-run`, and its errors.

use std::collections::HashMap;
use std::path::Path;

use assert_cmd::Command;
use image::{Rgb, RgbImage};
use toonsmith::device::{CpuBackend, CPU};
use toonsmith::model::{VggConfig, VggLayout};

fn setup(root: &Path) -> std::path::PathBuf {
    for (folder, shift) in [("photos", 0u32), ("cartoons", 3)] {
        let dir = root.join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..2u32 {
            RgbImage::from_fn(64, 64, |x, y| {
                Rgb([((x / 8 + i + shift) * 40 % 256) as u8, (y * 4) as u8, 128])
            })
            .save(dir.join(format!("{i}.png")))
            .unwrap();
        }
    }
    let vgg = VggConfig {
        layout: VggLayout::Vgg16,
        ..VggConfig::default()
    }
    .init::<CpuBackend>(&CPU);
    toonsmith::weights::save(&vgg, &root.join("vgg.safetensors"), &HashMap::new()).unwrap();
    let config = root.join("smoke.toml");
    let text = format!(
        r#"[data]
photos = "{0}/photos"
cartoons = "{0}/cartoons"
size = 32

[schedule]
batch = 1
epochs = 2
init_epochs = 1

[ctss]
patch_size = 16
k = 2
stride = {{ kind = "uniform", min = 8, max = 12 }}

[vgg]
path = "{0}/vgg.safetensors"
layout = "vgg16"

[run]
dir = "{0}/runs"
sample_every = 2
"#,
        root.display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn train_writes_a_complete_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    Command::cargo_bin("toonsmith")
        .unwrap()
        .args(["train", "--config"])
        .arg(&config)
        .assert()
        .success();
    let run = dir.path().join("runs/001-tsa");
    for file in [
        "config.toml",
        "log.jsonl",
        "samples/step-00000002.png",
        "checkpoints/step-00000004/generator.safetensors",
    ] {
        assert!(run.join(file).exists(), "{file} missing");
    }
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 4);
    // The model file lists the generator and its config.
    let out = Command::cargo_bin("toonsmith")
        .unwrap()
        .arg("inspect")
        .arg(run.join("checkpoints/step-00000004/generator.safetensors"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("to_rgb.weight") && text.contains("toonsmith.generator"),
        "{text}"
    );
}

#[test]
fn dry_run_prints_the_resolved_config_and_parameter_counts() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    let out = Command::cargo_bin("toonsmith")
        .unwrap()
        .args(["train", "--dry-run", "--batch", "3", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("batch = 3") && text.contains("lambda_global = 300.0"),
        "{text}"
    );
    assert!(text.contains("1542723 parameters"), "{text}");
    assert!(
        !dir.path().join("runs").exists(),
        "a dry run must not start a run"
    );
}

#[test]
fn errors_name_the_problem_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[schedule]\nepoch = 3\n").unwrap();
    let out = Command::cargo_bin("toonsmith")
        .unwrap()
        .args(["train", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("epoch"), "{err}");

    let config = setup(dir.path());
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[vgg]\npath", "[vgg]\n#path");
    std::fs::write(&config, text).unwrap();
    let out = Command::cargo_bin("toonsmith")
        .unwrap()
        .args(["train", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--vgg PATH"));
}

#[test]
fn the_example_config_resolves_to_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/train.toml");
    let flags = toonsmith::train::config::Overrides::default();
    let config = toonsmith::train::config::resolve(Some(&path), &flags).unwrap();
    let mut expected = toonsmith::train::config::TrainConfig::default();
    expected.data.photos = "photos/train".into();
    expected.data.cartoons = "cartoons/train".into();
    assert_eq!(config, expected);
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/bundled.toml");
    let config = toonsmith::train::config::resolve(Some(&bundled), &flags).unwrap();
    assert_eq!((config.data.size, config.ctss.patch_size), (128, 48));
}

/// `--precision` names a bad format, and a reduced one is refused by the CPU build (which
/// computes in f32) with the reason, not ignored.
#[test]
fn precision_refuses_an_unknown_format_and_the_cpu_build() {
    let dir = tempfile::tempdir().unwrap();
    let run = |format: &str| {
        Command::cargo_bin("toonsmith")
            .unwrap()
            .args(["cartoonize", "--precision", format, "--out"])
            .arg(dir.path())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sunset.jpg"))
            .output()
            .unwrap()
    };
    let out = run("half");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("half") && err.contains("f16"), "{err}");
    let out = run("f16");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("f16") && err.contains("CPU"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

/// The GPU choices' variables are checked at start: a CubeCL-only choice in the CPU build and
/// an unknown value are refused with the variable named, not ignored.
#[test]
fn gpu_variables_are_checked_at_start() {
    let cases = [
        ("TOONSMITH_GPU_WGRAD", "implicit"),
        ("TOONSMITH_GPU_WGRAD", "fast"),
        ("TOONSMITH_GPU_LN", "cube"),
        ("TOONSMITH_GPU_CONV", "fast"),
    ];
    for (var, value) in cases {
        let out = Command::cargo_bin("toonsmith")
            .unwrap()
            .arg("info")
            .env(var, value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} accepted");
        assert!(
            err.contains(var) && err.contains(value),
            "{var}={value}: {err}"
        );
    }
    let out = Command::cargo_bin("toonsmith")
        .unwrap()
        .arg("info")
        .env("TOONSMITH_GPU_WGRAD", "windows")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
