//! `toonsmith video` end to end on small clips made with ffmpeg's test sources. Without ffmpeg
//! on PATH these tests say so and return (`.ci/run` installs it, so CI runs them).

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::prelude::*;
use toonsmith::device::{CpuBackend, CPU};
use toonsmith::infer::{load_model, Cartoonizer, PostConfig};
use toonsmith::video::{self, FrameReader};
use toonsmith::weights::TensorFile;

fn has_ffmpeg() -> bool {
    let ok = |tool: &str| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let found = ok("ffmpeg") && ok("ffprobe");
    if !found {
        eprintln!("SKIPPED: ffmpeg/ffprobe not on PATH (apt install ffmpeg)");
    }
    found
}

/// A clip of `frames` frames of ffmpeg's test pattern, 37x27, 6 fps, with a tone if `audio`.
fn make_clip(path: &Path, frames: u32, audio: bool) {
    let video = "testsrc2=size=38x28:rate=6,format=rgb24,crop=37:27:0:0";
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-y", "-f", "lavfi", "-i", video]);
    if audio {
        cmd.args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=5",
            "-c:a",
            "aac",
        ]);
    }
    cmd.args([
        "-frames:v",
        &frames.to_string(),
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv444p",
        "-crf",
        "0",
    ]);
    cmd.arg(path);
    assert!(
        cmd.status().unwrap().success(),
        "ffmpeg could not make {}",
        path.display()
    );
}

fn frames(path: &Path) -> Vec<image::RgbImage> {
    let info = video::probe(path).unwrap();
    let mut reader = FrameReader::open(path, &info).unwrap();
    std::iter::from_fn(|| reader.next_frame().unwrap()).collect()
}

/// Mean absolute difference of BT.601 luma, in 1/255: what 4:2:0 video keeps at full
/// resolution (its chroma is halved both ways, which moves a 37x27 test pattern's colours a lot).
fn mean_abs_diff(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    let luma = |p: &image::Rgb<u8>| 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64;
    let sum: f64 = a
        .pixels()
        .zip(b.pixels())
        .map(|(x, y)| (luma(x) - luma(y)).abs())
        .sum();
    sum / a.pixels().len() as f64
}

/// Size (odd sides, not multiples of 4), frame count, rate and audio survive; each output
/// frame is the bundled model's cartoon of the same input frame, up to the encoder's loss.
#[test]
fn every_frame_is_cartoonized_in_order_with_the_audio_kept() {
    if !has_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mkv");
    make_clip(&clip, 5, true);
    let out: PathBuf = dir.path().join("out/cartoon.mp4");
    Command::cargo_bin("toonsmith")
        .unwrap()
        .args(["video", "--crf", "10", "-o"])
        .arg(&out)
        .arg(&clip)
        .assert()
        .success();
    let info = video::probe(&out).unwrap();
    // 4:2:0 output pads each odd side by one pixel.
    assert_eq!((info.width, info.height, info.audio), (38, 28, true));
    assert_eq!(info.frame_rate, "6/1");
    let (photos, cartoons) = (frames(&clip), frames(&out));
    assert_eq!((photos.len(), cartoons.len()), (5, 5));

    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default.safetensors");
    let g = load_model::<CpuBackend>(&TensorFile::read(&model).unwrap(), &CPU).unwrap();
    let cartoonizer = Cartoonizer::new(g, CPU, PostConfig::default());
    let expected: Vec<image::RgbImage> = photos
        .iter()
        .map(|photo| {
            cartoonizer
                .cartoonize(&image::DynamicImage::ImageRgb8(photo.clone()))
                .unwrap()
                .into_rgb8()
        })
        .collect();
    for (i, (photo, cartoon)) in photos.iter().zip(&cartoons).enumerate() {
        let cartoon = image::imageops::crop_imm(cartoon, 0, 0, 37, 27).to_image();
        let (to_expected, to_photo) = (
            mean_abs_diff(&cartoon, &expected[i]),
            mean_abs_diff(&cartoon, photo),
        );
        eprintln!(
            "frame {i}: {to_expected:.2}/255 from its cartoon, {to_photo:.2}/255 from its photo"
        );
        assert!(
            to_expected < 4.0,
            "frame {i}: {to_expected}/255 from the expected cartoon"
        );
        assert!(
            to_photo > 2.0 * to_expected,
            "frame {i} looks like the photo"
        );
        if i > 0 {
            assert!(
                mean_abs_diff(&cartoon, &expected[i - 1]) > to_expected,
                "frame {i} out of order"
            );
        }
    }
}

/// A file that is not a video, and a missing one, fail by name and leave no output behind.
#[test]
fn not_a_video_is_refused_by_name() {
    if !has_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("notes.mp4");
    std::fs::write(&bad, b"this is not a video").unwrap();
    let out = dir.path().join("out.mp4");
    for input in [bad.clone(), dir.path().join("missing.mp4")] {
        let result = Command::cargo_bin("toonsmith")
            .unwrap()
            .args(["video", "-o"])
            .arg(&out)
            .arg(&input)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success());
        let name = input.file_name().unwrap().to_string_lossy();
        assert!(stderr.contains(name.as_ref()), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![bad.file_name().unwrap().to_owned()]);
}
