//! Videos through `ffmpeg`: the frames are decoded to raw RGB on a pipe, cartoonized one by one
//! by the caller, and encoded back on another pipe with the source's audio.
//!
//! The paper treats photos only; its field cartoonizes videos frame by frame (AnimeGAN's and
//! White-box Cartoonization's video scripts read frames with OpenCV/ffmpeg and write them back),
//! and so does this module: each frame is a photo, with its own LN statistics. No pure-Rust crate
//! decodes the common codecs (H.264, HEVC, VP9, AV1), so `ffmpeg` and `ffprobe` must be on
//! `PATH` (Debian/Ubuntu: `apt install ffmpeg`); nothing is downloaded.

use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

use image::RgbImage;

use crate::error::{Error, Result};

/// What `ffprobe` says about a video's first video stream.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    /// Width of the decoded frames (after the rotation the file asks for).
    pub width: u32,
    /// Height of the decoded frames.
    pub height: u32,
    /// Frame rate as ffmpeg writes it, e.g. `30000/1001`.
    pub frame_rate: String,
    /// Number of frames, when the container says.
    pub frames: Option<u64>,
    /// Whether the file has an audio stream.
    pub audio: bool,
}

fn video_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Video {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Starts `tool` with `args`; a missing tool is an error that says how to get it.
fn spawn(tool: &str, args: &[&str], path: &Path, stdin: Stdio, stdout: Stdio) -> Result<Child> {
    Command::new(tool)
        .args(args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::MissingTool {
                tool: tool.to_string(),
                hint: "videos are read and written by ffmpeg and ffprobe; install them \
                       (Debian/Ubuntu: apt install ffmpeg) and put them on PATH"
                    .into(),
            },
            _ => video_error(path, format!("cannot start {tool}: {e}")),
        })
}

/// Reads a child's stderr on a thread (a full pipe would stall the child).
fn collect_stderr(child: &mut Child) -> Option<JoinHandle<String>> {
    let mut stderr = child.stderr.take()?;
    std::thread::Builder::new()
        .name("toonsmith-stderr".into())
        .spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        })
        .ok()
}

/// Waits for `child`; its failure becomes an error quoting its last stderr lines.
fn finish(
    tool: &str,
    mut child: Child,
    stderr: Option<JoinHandle<String>>,
    path: &Path,
) -> Result<()> {
    let status = child.wait().map_err(|e| Error::io(path, e))?;
    let text = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let tail: Vec<&str> = text.lines().rev().take(3).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(video_error(
        path,
        format!("{tool} failed ({status}): {}", tail.join(" / ")),
    ))
}

/// Probes `path` with `ffprobe`.
pub fn probe(path: &Path) -> Result<VideoInfo> {
    if !path.is_file() {
        return Err(video_error(path, "no such file"));
    }
    let file = path.to_string_lossy();
    let args = [
        "-v",
        "error",
        "-show_entries",
        "stream=codec_type,width,height,r_frame_rate,nb_frames:stream_side_data=rotation",
        "-of",
        "default=noprint_wrappers=0",
        &file,
    ];
    let mut child = spawn("ffprobe", &args, path, Stdio::null(), Stdio::piped())?;
    let stderr = collect_stderr(&mut child);
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout
            .read_to_string(&mut out)
            .map_err(|e| Error::io(path, e))?;
    }
    finish("ffprobe", child, stderr, path)?;
    parse_probe(&out).ok_or_else(|| video_error(path, "no video stream (ffprobe found none)"))
}

/// Parses `ffprobe -show_entries stream=... -of default` output: the first video stream's
/// size, rate, frame count and rotation, and whether any audio stream follows.
fn parse_probe(text: &str) -> Option<VideoInfo> {
    let mut streams: Vec<Vec<(&str, &str)>> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line == "[STREAM]" {
            streams.push(Vec::new());
        } else if let (Some(stream), Some((key, value))) =
            (streams.last_mut(), line.split_once('='))
        {
            stream.push((key, value));
        }
    }
    let get = |s: &[(&str, &str)], key: &str| {
        s.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    };
    let audio = streams
        .iter()
        .any(|s| get(s, "codec_type").as_deref() == Some("audio"));
    let video = streams
        .iter()
        .find(|s| get(s, "codec_type").as_deref() == Some("video"))?;
    let (mut width, mut height): (u32, u32) = (
        get(video, "width")?.parse().ok()?,
        get(video, "height")?.parse().ok()?,
    );
    let rotation: i64 = get(video, "rotation")
        .and_then(|r| r.parse::<f64>().ok())
        .unwrap_or(0.0) as i64;
    if rotation.rem_euclid(180) == 90 {
        std::mem::swap(&mut width, &mut height);
    }
    let frame_rate = get(video, "r_frame_rate").filter(|r| r != "0/0")?;
    let frames = get(video, "nb_frames")
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0);
    (width > 0 && height > 0).then_some(VideoInfo {
        width,
        height,
        frame_rate,
        frames,
        audio,
    })
}

/// The decoded frames of a video, in order.
pub struct FrameReader {
    path: PathBuf,
    child: Option<Child>,
    stdout: ChildStdout,
    stderr: Option<JoinHandle<String>>,
    width: u32,
    height: u32,
}

impl FrameReader {
    /// Starts decoding `path`, whose size `info` gives.
    pub fn open(path: &Path, info: &VideoInfo) -> Result<Self> {
        let file = path.to_string_lossy();
        let args = [
            "-v",
            "error",
            "-nostdin",
            "-i",
            &file,
            "-map",
            "0:v:0",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-fps_mode",
            "passthrough",
            "-",
        ];
        let mut child = spawn("ffmpeg", &args, path, Stdio::null(), Stdio::piped())?;
        let stderr = collect_stderr(&mut child);
        let stdout = child.stdout.take().expect("stdout was piped");
        Ok(Self {
            path: path.to_path_buf(),
            child: Some(child),
            stdout,
            stderr,
            width: info.width,
            height: info.height,
        })
    }

    /// The next frame; `None` at the end. A truncated last frame or a decoder failure is an
    /// error naming the file.
    pub fn next_frame(&mut self) -> Result<Option<RgbImage>> {
        let mut buf = vec![0u8; self.width as usize * self.height as usize * 3];
        let mut filled = 0;
        while filled < buf.len() {
            match self.stdout.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&self.path, e)),
            }
        }
        if filled == 0 {
            if let Some(child) = self.child.take() {
                finish("ffmpeg", child, self.stderr.take(), &self.path)?;
            }
            return Ok(None);
        }
        if filled < buf.len() {
            return Err(video_error(
                &self.path,
                format!(
                    "the decoder's last frame is cut short ({filled} of {} bytes)",
                    buf.len()
                ),
            ));
        }
        Ok(RgbImage::from_raw(self.width, self.height, buf))
    }
}

impl Drop for FrameReader {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Encoder settings.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodeConfig {
    /// Constant rate factor of the video codec: lower is better and larger. Default 18, close to
    /// visually lossless for x264.
    pub crf: u8,
}

impl Default for EncodeConfig {
    fn default() -> Self {
        Self { crf: 18 }
    }
}

/// Codec arguments for the container `output` names: VP9 and Opus for `.webm`, H.264 and AAC
/// otherwise. Frames with an odd side are padded by one pixel (4:2:0 needs even sides).
fn codec_args(output: &Path, crf: u8) -> Vec<String> {
    let webm = output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("webm"));
    let (video, audio) = match webm {
        true => (
            vec!["-c:v", "libvpx-vp9", "-b:v", "0"],
            vec!["-c:a", "libopus"],
        ),
        false => (
            vec!["-c:v", "libx264", "-preset", "medium"],
            vec!["-c:a", "aac"],
        ),
    };
    let mut args: Vec<String> = video.into_iter().map(String::from).collect();
    args.extend([
        "-crf".into(),
        crf.to_string(),
        "-pix_fmt".into(),
        "yuv420p".into(),
    ]);
    args.extend(["-vf".into(), "pad=ceil(iw/2)*2:ceil(ih/2)*2".into()]);
    args.extend(audio.into_iter().map(String::from));
    args
}

/// Encodes frames into a video file, with the audio of a source video.
pub struct FrameWriter {
    path: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Option<JoinHandle<String>>,
    width: u32,
    height: u32,
}

impl FrameWriter {
    /// Starts encoding `output` (overwritten) at the size and rate of `info`, taking the audio
    /// of `source` if it has any.
    pub fn create(
        output: &Path,
        info: &VideoInfo,
        source: &Path,
        config: &EncodeConfig,
    ) -> Result<Self> {
        let size = format!("{}x{}", info.width, info.height);
        let source = source.to_string_lossy().into_owned();
        let mut args: Vec<String> = [
            "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        args.extend([
            size,
            "-r".into(),
            info.frame_rate.clone(),
            "-i".into(),
            "-".into(),
        ]);
        if info.audio {
            args.extend([
                "-i".into(),
                source,
                "-map".into(),
                "0:v".into(),
                "-map".into(),
                "1:a?".into(),
            ]);
        }
        args.extend(codec_args(output, config.crf));
        args.extend(["-shortest".into(), output.to_string_lossy().into_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = spawn("ffmpeg", &args, output, Stdio::piped(), Stdio::null())?;
        let stderr = collect_stderr(&mut child);
        let stdin = child.stdin.take();
        Ok(Self {
            path: output.to_path_buf(),
            child,
            stdin,
            stderr,
            width: info.width,
            height: info.height,
        })
    }

    /// Appends a frame of the video's size.
    pub fn write(&mut self, frame: &RgbImage) -> Result<()> {
        if frame.dimensions() != (self.width, self.height) {
            return Err(video_error(
                &self.path,
                format!(
                    "frame of {}x{} given to a {}x{} video",
                    frame.width(),
                    frame.height(),
                    self.width,
                    self.height
                ),
            ));
        }
        let stdin = self.stdin.as_mut().expect("open until finish");
        stdin.write_all(frame.as_raw()).map_err(|e| match e.kind() {
            ErrorKind::BrokenPipe => video_error(&self.path, "the encoder stopped early"),
            _ => Error::io(&self.path, e),
        })
    }

    /// Closes the stream and waits for the encoder; its failure is an error naming the file.
    pub fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        finish("ffmpeg", self.child, self.stderr.take(), &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_gives_the_video_stream_and_audio() {
        let text = "[STREAM]\ncodec_type=video\nwidth=1920\nheight=1080\nr_frame_rate=30000/1001\n\
                    nb_frames=240\n[/STREAM]\n[STREAM]\ncodec_type=audio\nr_frame_rate=0/0\n\
                    nb_frames=N/A\n[/STREAM]\n";
        let info = parse_probe(text).unwrap();
        assert_eq!(
            info,
            VideoInfo {
                width: 1920,
                height: 1080,
                frame_rate: "30000/1001".into(),
                frames: Some(240),
                audio: true,
            }
        );
    }

    #[test]
    fn rotated_phone_videos_decode_upright() {
        let text = "[STREAM]\ncodec_type=video\nwidth=1920\nheight=1080\nr_frame_rate=30/1\n\
                    nb_frames=N/A\n[SIDE_DATA]\nrotation=-90\n[/SIDE_DATA]\n[/STREAM]\n";
        let info = parse_probe(text).unwrap();
        assert_eq!(
            (info.width, info.height, info.frames, info.audio),
            (1080, 1920, None, false)
        );
    }

    #[test]
    fn audio_only_files_have_no_video() {
        assert_eq!(parse_probe("[STREAM]\ncodec_type=audio\n[/STREAM]\n"), None);
        assert_eq!(parse_probe(""), None);
    }

    #[test]
    fn webm_gets_vp9_and_others_h264() {
        let webm = codec_args(Path::new("a.WebM"), 20);
        assert!(webm.iter().any(|a| a == "libvpx-vp9") && webm.iter().any(|a| a == "20"));
        assert!(codec_args(Path::new("a.mp4"), 18)
            .iter()
            .any(|a| a == "libx264"));
    }
}
