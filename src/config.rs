//! Configuration of the networks, the CTSS sampler and the losses as plain serde structs.
//!
//! `Default` is always the paper (Section IV-B/C); [`Preset::Official`] gives the values of the
//! authors' released code where it differs (see the table in README.md).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which description a component follows: the paper, or the authors' released code.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// The ICML 2022 paper (default).
    #[default]
    Paper,
    /// The authors' released TensorFlow code.
    Official,
}

/// How the patch stride `s` of Eq. (4) is chosen.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Stride {
    /// Paper, Section IV-B: drawn from U(min, max) (integers, both inclusive) at every iteration,
    /// the same stride for cartoons and generated images.
    Uniform {
        /// Default: 48.
        min: usize,
        /// Default: 72.
        max: usize,
    },
    /// Official code: fixed strides.
    Fixed {
        /// Stride on real cartoons. Official: 48.
        cartoon: usize,
        /// Stride on generated images. Official: 72.
        generated: usize,
    },
}

/// The cartoon-texture-saliency-sampler (Section III-B, Eqs. 1-6).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CtssConfig {
    /// Edge filters, min-max scope and grayscale rule: `paper` (4 Sobel-type filters on the channel
    /// mean, per-image min-max, luminance grayscale) or `official` (central differences on R,G,B
    /// weighted 1,2,1, min-max over the mini-batch, R+G+B with per-patch min-max).
    /// Default: paper.
    pub preset: Preset,
    /// Number of patches K kept from the mini-batch (Eq. 6). Default: 32 (official: 4 x batch).
    pub k: usize,
    /// Patch side l (Eq. 4). Default: 96.
    pub patch_size: usize,
    /// Patch stride s (Eq. 4). Default: uniform 48..=72.
    pub stride: Stride,
    /// Threshold d of the high-pass filter (Eq. 3). Default: 0.2.
    pub d: f64,
    /// Sharpness n of the high-pass filter (Eq. 3). Default: 2.
    pub n: f64,
    /// Radius r of the self-guided filter (Eq. 1). The paper is silent; default 1 as in the
    /// PyTorch port users run (official code: 5).
    pub radius: usize,
    /// Regulariser epsilon of the self-guided filter (Eq. 1), for images in [-1, 1]. The paper is
    /// silent; default 1e-2 as in the PyTorch port (official code: 0.2).
    pub epsilon: f64,
}

impl Default for CtssConfig {
    fn default() -> Self {
        Self {
            preset: Preset::Paper,
            k: 32,
            patch_size: 96,
            stride: Stride::Uniform { min: 48, max: 72 },
            d: 0.2,
            n: 2.0,
            radius: 1,
            epsilon: 1e-2,
        }
    }
}

impl CtssConfig {
    /// The released code's sampler for a mini-batch of `batch` images (K = 4 x batch).
    pub fn official(batch: usize) -> Self {
        Self {
            preset: Preset::Official,
            k: 4 * batch,
            stride: Stride::Fixed {
                cartoon: 48,
                generated: 72,
            },
            radius: 5,
            epsilon: 0.2,
            ..Self::default()
        }
    }

    /// Checks every field against its allowed range.
    pub fn validate(&self) -> Result<()> {
        positive("ctss.k", self.k)?;
        positive("ctss.patch_size", self.patch_size)?;
        match self.stride {
            Stride::Uniform { min, max } => {
                positive("ctss.stride.min", min)?;
                if max < min {
                    return Err(invalid("ctss.stride.max", max, format!(">= min ({min})")));
                }
            }
            Stride::Fixed { cartoon, generated } => {
                positive("ctss.stride.cartoon", cartoon)?;
                positive("ctss.stride.generated", generated)?;
            }
        }
        if !(self.d > 0.0 && self.d.is_finite()) {
            return Err(invalid("ctss.d", self.d, "a finite number > 0"));
        }
        if !(self.n > 0.0 && self.n.is_finite()) {
            return Err(invalid("ctss.n", self.n, "a finite number > 0"));
        }
        if !(self.epsilon > 0.0 && self.epsilon.is_finite()) {
            return Err(invalid("ctss.epsilon", self.epsilon, "a finite number > 0"));
        }
        Ok(())
    }
}

/// The weights of the objective, Eqs. (16) and (17), and the optional style losses of Table IV.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LossWeights {
    /// lambda_global of Eqs. (16)-(17). Default: 300.
    pub lambda_global: f64,
    /// lambda_local of Eqs. (16)-(17). Default: 300.
    pub lambda_local: f64,
    /// lambda_con of Eq. (16). Default: 1.5.
    pub lambda_con: f64,
    /// lambda_col of Eq. (16). Default: 15.
    pub lambda_col: f64,
    /// lambda_tv of Eq. (16). Default: 1.
    pub lambda_tv: f64,
    /// Weight of the Gram style loss (Table IV, ablation only). Default: 0 (off).
    pub lambda_gram: f64,
    /// Weight of the mean-std style loss (Table IV, ablation only). Default: 0 (off).
    pub lambda_mean_std: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            lambda_global: 300.0,
            lambda_local: 300.0,
            lambda_con: 1.5,
            lambda_col: 15.0,
            lambda_tv: 1.0,
            lambda_gram: 0.0,
            lambda_mean_std: 0.0,
        }
    }
}

impl LossWeights {
    /// Checks that every weight is finite and not negative.
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("loss.lambda_global", self.lambda_global),
            ("loss.lambda_local", self.lambda_local),
            ("loss.lambda_con", self.lambda_con),
            ("loss.lambda_col", self.lambda_col),
            ("loss.lambda_tv", self.lambda_tv),
            ("loss.lambda_gram", self.lambda_gram),
            ("loss.lambda_mean_std", self.lambda_mean_std),
        ];
        for (field, value) in fields {
            if !(value >= 0.0 && value.is_finite()) {
                return Err(invalid(field, value, "a finite number >= 0"));
            }
        }
        Ok(())
    }
}

fn positive(field: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(invalid(field, value, "an integer >= 1"));
    }
    Ok(())
}

pub(crate) fn invalid(
    field: &'static str,
    value: impl std::fmt::Display,
    expected: impl Into<String>,
) -> Error {
    Error::InvalidConfig {
        field,
        value: value.to_string(),
        expected: expected.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_papers() {
        let c = CtssConfig::default();
        assert_eq!((c.k, c.patch_size, c.d, c.n), (32, 96, 0.2, 2.0));
        assert_eq!(c.stride, Stride::Uniform { min: 48, max: 72 });
        let w = LossWeights::default();
        assert_eq!(
            (
                w.lambda_global,
                w.lambda_local,
                w.lambda_con,
                w.lambda_col,
                w.lambda_tv
            ),
            (300.0, 300.0, 1.5, 15.0, 1.0)
        );
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = serde_json::from_str::<CtssConfig>(r#"{"kk": 3}"#).unwrap_err();
        assert!(err.to_string().contains("kk"), "{err}");
    }

    #[test]
    fn validation_names_field_and_range() {
        let c = CtssConfig {
            stride: Stride::Uniform { min: 72, max: 48 },
            ..CtssConfig::default()
        };
        let msg = c.validate().unwrap_err().to_string();
        assert_eq!(msg, "invalid ctss.stride.max 48 (expected >= min (72))");
        assert!(CtssConfig::official(8).validate().is_ok());
        assert_eq!(CtssConfig::official(8).k, 32);
    }
}
