//! The library's one error type. Every variant names the file, key or value it is about.

use std::path::PathBuf;

/// Errors of the toonsmith library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not a weights file of a format toonsmith reads.
    #[error("{path}: not a weights file toonsmith can read ({reason})")]
    NotWeights {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// A weights file lacks a tensor the network needs.
    #[error("{path}: missing tensor `{key}` (the file has {found} tensors{hint})")]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The tensor name the network expects.
        key: String,
        /// How many tensors the file holds.
        found: usize,
        /// Extra help, e.g. the keys that look closest.
        hint: String,
    },
    /// A tensor in a weights file has the wrong shape.
    #[error("{path}: tensor `{key}` has shape {found:?}, expected {expected:?}")]
    WrongShape {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        key: String,
        /// The shape the network needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor in a weights file has a data type toonsmith cannot convert.
    #[error("{path}: tensor `{key}` has unsupported dtype {dtype}")]
    WrongDtype {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        key: String,
        /// The dtype found.
        dtype: String,
    },
    /// A configuration value is outside its allowed range.
    #[error("invalid {field} {value} (expected {expected})")]
    InvalidConfig {
        /// The configuration field.
        field: &'static str,
        /// The value given.
        value: String,
        /// The allowed range, in words.
        expected: String,
    },
    /// A tensor given to a function has a shape it cannot handle.
    #[error("invalid input shape {shape:?} for {what} (expected {expected})")]
    InvalidShape {
        /// The function or network.
        what: &'static str,
        /// The shape received.
        shape: Vec<usize>,
        /// The accepted shapes, in words.
        expected: String,
    },
    /// An image file could not be decoded.
    #[error("{path}: cannot read image ({reason})")]
    Image {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// A folder holds fewer usable images than needed.
    #[error("{path}: {found} images found, at least {needed} needed ({what})")]
    TooFewImages {
        /// The folder.
        path: PathBuf,
        /// Images found.
        found: usize,
        /// Images needed.
        needed: usize,
        /// Why that many are needed.
        what: String,
    },
    /// A weights file holds NaN or infinite values.
    #[error(
        "{path}: tensor `{key}` holds {count} NaN or infinite values (weights of a training run \
         that diverged, or a damaged file)"
    )]
    NonFiniteWeights {
        /// The file.
        path: PathBuf,
        /// The tensor's key in the file.
        key: String,
        /// How many of its values are not finite.
        count: usize,
    },
    /// A configuration file could not be used.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        reason: String,
    },
    /// A checkpoint or run folder could not be used.
    #[error("{path}: {reason}")]
    Checkpoint {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A video could not be read or written.
    #[error("{path}: {reason}")]
    Video {
        /// The video file.
        path: PathBuf,
        /// What went wrong, with the tool's own words.
        reason: String,
    },
    /// An external program toonsmith needs is not installed.
    #[error("{tool} not found: {hint}")]
    MissingTool {
        /// The program.
        tool: String,
        /// How to get it.
        hint: String,
    },
    /// The GPU failed on its own thread (out of memory, a kernel that did not build): every
    /// result computed since is garbage (see [`crate::device::faults`]).
    #[error(
        "the device failed while {during}: {reason} (nothing computed after it can be \
         trusted; if it ran out of memory, use smaller images, tiles or batches)"
    )]
    Device {
        /// What toonsmith was doing, in words.
        during: String,
        /// The failure, as the device's thread reported it.
        reason: String,
    },
    /// The training data loader failed (a panic while decoding a batch).
    #[error("the data loader failed at step {step}: {reason}")]
    DataLoader {
        /// The step whose batch it was loading.
        step: usize,
        /// What went wrong.
        reason: String,
    },
    /// A loss became NaN or infinite.
    #[error("{name} loss is {value} at step {step}{last}")]
    NonFinite {
        /// The loss.
        name: String,
        /// Its value.
        value: f32,
        /// The training step.
        step: usize,
        /// The last good checkpoint, if any, in words.
        last: String,
    },
}

/// Result with the library's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The message a panic was raised with (`panic!`'s text), for an error that reports it.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

impl Error {
    /// Wraps an I/O error with the path it is about.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
