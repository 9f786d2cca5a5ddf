//! `toonsmith video INPUT [-o OUT]`: a video cartoonized frame by frame, its audio kept.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use image::DynamicImage;
use indicatif::{ProgressBar, ProgressStyle};
use toonsmith::video::{self, EncodeConfig, FrameReader, FrameWriter, VideoInfo};

use crate::cartoonize::StyleArgs;

/// Cartoonize a video frame by frame (needs ffmpeg).
#[derive(Args)]
pub struct VideoArgs {
    /// The video file: any format ffmpeg reads.
    input: PathBuf,
    /// Output video; its extension picks the format (.mp4, .mkv, .mov: H.264 and AAC; .webm:
    /// VP9 and Opus). Default: cartoonized/<input file name>
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Quality of the encoded video, the codec's constant rate factor: lower is better and
    /// larger (18: close to visually lossless).
    #[arg(long, default_value_t = EncodeConfig::default().crf)]
    crf: u8,
    #[command(flatten)]
    style: StyleArgs,
}

pub fn run(args: VideoArgs) -> anyhow::Result<()> {
    let info = video::probe(&args.input)?;
    let out = match &args.out {
        Some(out) => out.clone(),
        None => Path::new("cartoonized").join(args.input.file_name().unwrap_or_default()),
    };
    if same_file(&out, &args.input) {
        bail!(
            "{}: the output would overwrite the input; give another -o",
            out.display()
        );
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let cartoonizer = args.style.cartoonizer()?;
    // Written under a temporary name and renamed at the end: a failed run leaves no truncated
    // video under the output's name.
    let partial = partial_path(&out);
    let result = convert(&args, &info, &partial, |frame| {
        Ok(cartoonizer
            .cartoonize(&DynamicImage::ImageRgb8(frame))?
            .into_rgb8())
    });
    let frames = match result {
        Ok(frames) => frames,
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            return Err(err);
        }
    };
    std::fs::rename(&partial, &out)
        .with_context(|| format!("cannot move {} to {}", partial.display(), out.display()))?;
    eprintln!("{frames} frames cartoonized into {}", out.display());
    Ok(())
}

/// Decodes, cartoonizes and encodes every frame into `partial`; the number of frames.
fn convert(
    args: &VideoArgs,
    info: &VideoInfo,
    partial: &Path,
    mut cartoonize: impl FnMut(image::RgbImage) -> anyhow::Result<image::RgbImage>,
) -> anyhow::Result<u64> {
    let mut reader = FrameReader::open(&args.input, info)?;
    let bar = progress(info.frames);
    let config = EncodeConfig { crf: args.crf };
    let mut writer: Option<FrameWriter> = None;
    let mut frames = 0;
    // Ctrl-C stops between frames; the caller then removes the unfinished file.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    while let Some(frame) = reader.next_frame()? {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted after {frames} frames; nothing written");
        }
        let cartoon = cartoonize(frame)
            .with_context(|| format!("{}: frame {frames}", args.input.display()))?;
        let writer = match &mut writer {
            Some(writer) => writer,
            // Opened at the first cartoon's size, which --max-side may have reduced.
            None => writer.insert(FrameWriter::create(
                partial,
                &VideoInfo {
                    width: cartoon.width(),
                    height: cartoon.height(),
                    ..info.clone()
                },
                &args.input,
                &config,
            )?),
        };
        writer.write(&cartoon)?;
        frames += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    match writer {
        Some(writer) => writer.finish()?,
        None => bail!("{}: no frame could be decoded", args.input.display()),
    }
    Ok(frames)
}

fn progress(frames: Option<u64>) -> ProgressBar {
    let (bar, template) = match frames {
        Some(n) => (
            ProgressBar::new(n),
            "video [{bar:30}] {pos}/{len} frames, {per_sec}, ETA {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "video {spinner} {pos} frames, {per_sec}",
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// `out` with `.part` before its extension, so that ffmpeg still knows the format.
fn partial_path(out: &Path) -> PathBuf {
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("mp4");
    out.with_extension(format!("part.{ext}"))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
