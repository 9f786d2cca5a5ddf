//! End-to-end training on images made in a temp dir: a run folder is written, losses are
//! finite, and a run stopped and resumed gives the same losses, step for step, as one that ran
//! through.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use common::training::Fixture;
use toonsmith::device::{CpuBackend, CPU};
use toonsmith::train::config::TrainConfig;
use toonsmith::train::observer::Silent;
use toonsmith::train::{self, Outcome};
use toonsmith::Error;

mod common;

type B = burn::backend::Autodiff<CpuBackend>;

fn losses(run: &Path) -> Vec<(u64, String, serde_json::Value)> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["step"].as_u64().unwrap(),
                v["phase"].as_str().unwrap().to_string(),
                v["losses"].clone(),
            )
        })
        .collect()
}

/// Same steps, phases and loss names; values equal to 1e-5 relative (bit-identical in practice;
/// the margin only guards against reductions split differently across threads).
fn assert_same_losses(
    got: &[(u64, String, serde_json::Value)],
    want: &[(u64, String, serde_json::Value)],
) {
    assert_eq!(got.len(), want.len(), "different number of steps");
    for ((gs, gp, gl), (ws, wp, wl)) in got.iter().zip(want) {
        assert_eq!((gs, gp), (ws, wp));
        let (gl, wl) = (gl.as_object().unwrap(), wl.as_object().unwrap());
        assert_eq!(
            gl.keys().collect::<Vec<_>>(),
            wl.keys().collect::<Vec<_>>(),
            "step {gs}"
        );
        for (name, w) in wl {
            let (g, w) = (gl[name].as_f64().unwrap(), w.as_f64().unwrap());
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1e-3),
                "step {gs} {name}: resumed {g} vs {w}"
            );
        }
    }
}

fn run(config: TrainConfig) -> Outcome {
    train::train::<B>(config, &CPU, &mut Silent, &AtomicBool::new(false)).unwrap()
}

/// Weight initialisation draws from the backend's process-wide RNG (seeded by `train`), so the
/// tests of this file must not initialise networks at the same time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn trains_end_to_end_and_resumes_with_identical_losses() {
    let _guard = exclusive();
    let fx = Fixture::new();
    let through = run(fx.config("a"));
    assert_eq!(through.steps, 6);
    assert!(!through.stopped);
    let log = losses(&through.run_dir);
    assert_eq!(log.len(), 6);
    assert_eq!(log[1].1, "pretrain");
    assert_eq!(log[2].1, "adversarial");
    for (_, _, l) in &log {
        for (name, value) in l.as_object().unwrap() {
            assert!(value.as_f64().unwrap().is_finite(), "{name}");
        }
    }
    for key in [
        "d_total", "d_global", "d_local", "g_total", "g_global", "g_local", "content", "color",
        "tv",
    ] {
        assert!(log[5].2.get(key).is_some(), "missing {key}");
    }
    let folder = &through.run_dir;
    assert!(folder
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("001-"));
    assert!(folder.join("config.toml").exists());
    assert!(folder.join("samples/step-00000003.png").exists());
    assert!(through.checkpoint.join("generator.safetensors").exists());
    // Checkpoints at each epoch end (2, 4) and the last step.
    for step in [2, 4, 6] {
        assert!(
            folder
                .join(format!("checkpoints/step-{step:08}/opt_d.mpk"))
                .exists(),
            "{step}"
        );
    }

    // Stop mid-epoch after 3 steps, then resume to the end.
    let mut short = fx.config("b");
    short.run.max_steps = Some(3);
    let first = run(short);
    assert_eq!(first.steps, 3);
    let resumed = train::resume::<B>(
        &first.run_dir,
        None,
        &CPU,
        &mut Silent,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(resumed.steps, 6);
    assert_same_losses(&losses(&resumed.run_dir), &log);
}

#[test]
fn stop_flag_checkpoints_and_missing_inputs_are_clear_errors() {
    let _guard = exclusive();
    let fx = Fixture::new();
    let stopped =
        train::train::<B>(fx.config("c"), &CPU, &mut Silent, &AtomicBool::new(true)).unwrap();
    assert!(stopped.stopped);
    assert_eq!(stopped.steps, 1);
    assert!(stopped.checkpoint.join("position.json").exists());

    let mut no_vgg = fx.config("d");
    no_vgg.vgg.path = None;
    let err = train::train::<B>(no_vgg, &CPU, &mut Silent, &AtomicBool::new(false)).unwrap_err();
    assert!(err.to_string().contains("vgg19-dcbb9e9d.pth"), "{err}");

    let empty = fx.root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut config = fx.config("e");
    config.data.cartoons = empty.clone();
    let err = train::train::<B>(config, &CPU, &mut Silent, &AtomicBool::new(false)).unwrap_err();
    assert!(
        matches!(&err, Error::TooFewImages { path, found: 0, .. } if *path == empty),
        "{err}"
    );

    let mut config = fx.config("f");
    config.schedule.batch = 3;
    let err = train::train::<B>(config, &CPU, &mut Silent, &AtomicBool::new(false)).unwrap_err();
    assert!(
        err.to_string()
            .contains("2 images found, at least 3 needed"),
        "{err}"
    );
}

#[test]
fn unreadable_files_are_skipped_and_counted() {
    let _guard = exclusive();
    let fx = Fixture::new();
    std::fs::write(
        fx.root.join("photos/broken.jpg"),
        b"\xff\xd8\xff not really a jpeg",
    )
    .unwrap();
    let mut config = fx.config("g");
    config.run.max_steps = Some(3);
    let outcome = run(config);
    assert_eq!(outcome.steps, 3);
    assert_eq!(outcome.skipped_files, 1);
}

#[test]
fn every_ablation_of_tables_three_and_four_runs() {
    let _guard = exclusive();
    let fx = Fixture::new();
    /// (name, change, loss terms logged, loss terms absent)
    type Case = (
        &'static str,
        fn(&mut TrainConfig),
        &'static [&'static str],
        &'static [&'static str],
    );
    let cases: [Case; 5] = [
        (
            "no_patch",
            |c| c.ablation.patch_branch = false,
            &["d_global"],
            &["d_local", "g_local"],
        ),
        (
            "no_image",
            |c| c.ablation.image_branch = false,
            &["d_local", "g_local"],
            &["d_global"],
        ),
        (
            "all_patches",
            |c| c.ablation.ctss = false,
            &["d_local"],
            &[],
        ),
        (
            "edge_promoting",
            |c| c.ablation.edge_promoting = true,
            &["d_global"],
            &[],
        ),
        (
            "style_losses",
            |c| {
                c.loss.lambda_gram = 1.0;
                c.loss.lambda_mean_std = 1.0;
            },
            &["gram", "mean_std"],
            &[],
        ),
    ];
    for (name, change, present, absent) in cases {
        let mut config = fx.config(name);
        config.schedule.init_epochs = 0;
        config.run.max_steps = Some(1);
        change(&mut config);
        let outcome = run(config);
        let log = losses(&outcome.run_dir);
        let step = &log[0].2;
        for key in present {
            assert!(step.get(*key).is_some(), "{name}: {key} missing in {step}");
        }
        for key in absent {
            assert!(step.get(*key).is_none(), "{name}: {key} present in {step}");
        }
    }
}
