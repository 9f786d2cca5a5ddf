//! A failure on the device's own thread becomes an error where results leave the device.
//!
//! CubeCL catches a panic of its device thread (an allocation that does not fit, for one) and
//! goes on, leaving garbage in every tensor computed after it. These tests stand in for that
//! thread with one named as CubeCL names it (`DSD-4-0`, Vulkan's) that panics, since the CPU
//! backend has no device thread. The
//! fault is kept for the rest of the process, so everything is checked in one test, in order.

use std::sync::atomic::AtomicBool;

use image::{DynamicImage, Rgb, RgbImage};
use toonsmith::device::{faults, CpuBackend, CPU};
use toonsmith::infer::{Cartoonizer, PostConfig};
use toonsmith::model::GeneratorConfig;
use toonsmith::train::{self, observer::Silent};
use toonsmith::Error;

mod common;

fn photo() -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(40, 24, |x, y| {
        Rgb([(x * 6) as u8, (y * 10) as u8, ((x + y) * 3) as u8])
    }))
}

#[test]
fn a_device_thread_panic_stops_cartoonizing_and_training() {
    let fx = common::training::Fixture::new();
    let g = GeneratorConfig::default().init::<CpuBackend>(&CPU);
    let cartoonizer = Cartoonizer::new(g, CPU, PostConfig::default());
    cartoonizer.cartoonize(&photo()).unwrap();

    // Another thread's panic (a test's, a worker's, an unnamed one) stops that thread: not a fault.
    panic_on(Some("worker"), "not the device");
    panic_on(None, "a rayon-like worker");
    assert!(faults::check("anything").is_ok());
    cartoonizer.cartoonize(&photo()).unwrap();

    panic_on(Some("DSD-4-0"), "cannot allocate 140 MB");

    let err = cartoonizer.cartoonize(&photo()).unwrap_err();
    let text = err.to_string();
    assert!(faults::is_fault(&err), "{text}");
    assert!(text.contains("cartoonizing a 40x24 image"), "{text}");
    assert!(text.contains("cannot allocate 140 MB"), "{text}");
    assert!(
        text.contains("device_faults.rs"),
        "where it panicked: {text}"
    );

    // Training stops at its first step, and publishes no checkpoint.
    let config = fx.config("runs");
    let runs = config.run.dir.clone();
    type B = burn::backend::Autodiff<CpuBackend>;
    let err = train::train::<B>(config, &CPU, &mut Silent, &AtomicBool::new(false)).unwrap_err();
    assert!(
        matches!(&err, Error::Device { during, .. } if during == "training step 1"),
        "{err}"
    );
    let published: Vec<_> = walk(&runs)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
        })
        .collect();
    assert!(published.is_empty(), "{published:?}");
}

/// Runs a thread named `name` (unnamed if `None`) that panics with `message`, to its end.
fn panic_on(name: Option<&str>, message: &'static str) {
    let mut builder = std::thread::Builder::new();
    if let Some(name) = name {
        builder = builder.name(name.into());
    }
    let thread = builder.spawn(move || panic!("{message}")).unwrap();
    assert!(thread.join().is_err());
}

/// Every path under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}
