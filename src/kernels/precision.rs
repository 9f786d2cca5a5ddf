//! The number format of the convolutions' operands in GPU inference (gathered windows,
//! [`super::im2col`], or CubeCL's implicit GEMM, `super::implicit_gemm`): f32 (the default) or
//! f16, set once for the process at the program's edge ([`Precision::set_current`]). With f16
//! the (padded) input and the weight are cast once per convolution, and the product runs on the
//! f16 tensor-core path with f32 accumulation (CubeCL's matmul and implicit GEMM accumulate f16
//! operands in f32); the product is f32 again before the bias, so LN, activations and
//! everything between convolutions stay f32. This is the mixed precision of the field's inference tools (PyTorch's autocast casts
//! convolution operands, keeps normalisation in f32). Training always runs f32.
//!
//! bf16 is not offered: with its 8-bit significand the bundled model's cartoon of
//! `examples/sunset.jpg` moved by up to 5 levels of 255 from f32's (f16: at most 1, the bound
//! the project sets for a reduced-precision path; H200, `examples/gpu_precision`, session 17).

use std::sync::atomic::{AtomicU8, Ordering};

use burn::tensor::DType;

use crate::error::{Error, Result};

/// [`Precision::current`] as its discriminant.
static CURRENT: AtomicU8 = AtomicU8::new(Precision::F32 as u8);

/// The format of the convolution operands in GPU inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Precision {
    /// Operands as they are (f32).
    #[default]
    F32 = 0,
    /// IEEE half: 10 mantissa bits, range +-65504.
    F16 = 1,
}

impl Precision {
    /// The format named `value`: `f32` or `f16`.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            other => Err(Error::InvalidConfig {
                field: "precision",
                value: other.into(),
                expected: "f32 or f16".into(),
            }),
        }
    }

    /// The format in use: F32 until [`Precision::set_current`] says otherwise.
    pub fn current() -> Self {
        match CURRENT.load(Ordering::Relaxed) {
            1 => Self::F16,
            _ => Self::F32,
        }
    }

    /// Makes this the format of every later GPU inference convolution of the process (the
    /// program's `--precision`, the bench's `TOONSMITH_GPU_PRECISION`).
    pub fn set_current(self) {
        CURRENT.store(self as u8, Ordering::Relaxed);
    }

    /// The dtype operands are cast to, `None` for f32 (no cast).
    pub fn operand_dtype(self) -> Option<DType> {
        match self {
            Self::F32 => None,
            Self::F16 => Some(DType::F16),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_formats_and_names_the_setting_otherwise() {
        assert_eq!(Precision::parse("f32").unwrap(), Precision::F32);
        assert_eq!(Precision::parse("f16").unwrap(), Precision::F16);
        assert_eq!(Precision::F16.operand_dtype(), Some(DType::F16));
        assert_eq!(Precision::F32.operand_dtype(), None);
        assert!(Precision::parse("bf16").is_err());
        for p in [Precision::F32, Precision::F16] {
            assert_eq!(Precision::parse(&p.to_string()).unwrap(), p);
        }
        let err = Precision::parse("half").unwrap_err().to_string();
        assert!(err.contains("precision") && err.contains("half"), "{err}");
    }
}
