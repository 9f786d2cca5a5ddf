//! The released code's colour chain, the alternative to the paper's vibrance (Section IV-C):
//! the cartoon's mean brightness matched to the photo's, then photo-editor style saturation,
//! contrast and lightness.
//!
//! The released code's per-style constants are not public where this was written, so each step
//! is a setting (Photoshop's slider scale, -1 to 1, 0 = off). Brightness matching follows the
//! AnimeGAN family's test scripts (which the authors' code builds on): scale all channels by the
//! ratio of mean luma (BT.601 weights). Saturation, contrast and lightness follow the classic
//! photo-editor definitions: saturation in HSL keeping each pixel's lightness, contrast around
//! mid-gray, lightness as a blend toward white or black.

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Settings of the released code's chain. Slider values run from -1 to 1; 0 leaves the step out.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OfficialColour {
    /// Scale the cartoon so its mean luma equals the photo's. Default: true.
    pub match_brightness: bool,
    /// HSL saturation slider. Default: 0.4 (the paper's +40%, on this slider's scale).
    pub saturation: f32,
    /// Contrast slider around mid-gray. Default: 0.
    pub contrast: f32,
    /// Lightness slider (toward white above 0, toward black below). Default: 0.
    pub lightness: f32,
}

impl Default for OfficialColour {
    fn default() -> Self {
        Self {
            match_brightness: true,
            saturation: 0.4,
            contrast: 0.0,
            lightness: 0.0,
        }
    }
}

impl OfficialColour {
    /// Checks that every slider lies in [-1, 1] and is a number.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("saturation", self.saturation),
            ("contrast", self.contrast),
            ("lightness", self.lightness),
        ] {
            if !(-1.0..=1.0).contains(&value) {
                return Err(format!("{name} {value} is outside -1 to 1"));
            }
        }
        Ok(())
    }
}

/// Darker cartoons than this mean luma (out of 255) are left as they are by brightness matching:
/// the ratio would divide by (nearly) zero.
const MIN_MEAN_LUMA: f64 = 0.5;

fn luma(p: [f32; 3]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

fn mean_luma(image: &RgbImage) -> f64 {
    let n = (image.width() as usize * image.height() as usize).max(1);
    let sum: f64 = image
        .pixels()
        .map(|p| luma(p.0.map(f32::from)) as f64)
        .sum();
    sum / n as f64
}

/// The factor that brings `cartoon`'s mean luma to `photo`'s; 1 for a (nearly) black cartoon.
pub fn brightness_ratio(cartoon: &RgbImage, photo: &RgbImage) -> f32 {
    let target = mean_luma(cartoon);
    if target < MIN_MEAN_LUMA {
        return 1.0;
    }
    (mean_luma(photo) / target) as f32
}

/// HSL saturation slider on one pixel (0-255 floats): lightness `(max + min) / 2` is kept; at +1
/// the colour becomes fully saturated, at -1 gray.
pub fn saturate(p: [f32; 3], amount: f32) -> [f32; 3] {
    let max = p[0].max(p[1]).max(p[2]);
    let min = p[0].min(p[1]).min(p[2]);
    if amount == 0.0 || max == min {
        return p;
    }
    let sum = (max + min) / 255.0;
    let light = sum / 2.0 * 255.0;
    let delta = (max - min) / 255.0;
    let s = if sum < 1.0 {
        delta / sum
    } else {
        delta / (2.0 - sum)
    };
    let gain = if amount >= 0.0 {
        let room = if amount + s >= 1.0 { s } else { 1.0 - amount };
        1.0 / room - 1.0
    } else {
        amount
    };
    p.map(|c| c + (c - light) * gain)
}

/// Contrast slider on one channel value: values move away from (above 0) or toward (below 0)
/// mid-gray 127.5; +1 is a threshold at mid-gray.
pub fn contrast(c: f32, amount: f32) -> f32 {
    const MID: f32 = 127.5;
    if amount > 0.0 {
        MID + (c - MID) / (1.0 - amount).max(1e-3)
    } else {
        MID + (c - MID) * (1.0 + amount)
    }
}

/// Lightness slider on one channel value: a blend toward white (above 0) or black (below 0).
pub fn lighten(c: f32, amount: f32) -> f32 {
    if amount >= 0.0 {
        c * (1.0 - amount) + 255.0 * amount
    } else {
        c * (1.0 + amount)
    }
}

/// Applies the chain to `cartoon` (made from `photo`), in place.
pub fn apply(cartoon: &mut RgbImage, photo: &RgbImage, settings: &OfficialColour) {
    let ratio = if settings.match_brightness {
        brightness_ratio(cartoon, photo)
    } else {
        1.0
    };
    for pixel in cartoon.pixels_mut() {
        let p = pixel.0.map(|v| (v as f32 * ratio).clamp(0.0, 255.0));
        let p = saturate(p, settings.saturation).map(|c| c.clamp(0.0, 255.0));
        let p = p.map(|c| {
            let c = contrast(c, settings.contrast).clamp(0.0, 255.0);
            lighten(c, settings.lightness).round().clamp(0.0, 255.0)
        });
        pixel.0 = p.map(|c| c as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn hsl_lightness(p: [f32; 3]) -> f32 {
        (p[0].max(p[1]).max(p[2]) + p[0].min(p[1]).min(p[2])) / 2.0
    }

    fn hsl_saturation(p: [f32; 3]) -> f32 {
        let max = p[0].max(p[1]).max(p[2]) / 255.0;
        let min = p[0].min(p[1]).min(p[2]) / 255.0;
        let l = (max + min) / 2.0;
        if max == min {
            0.0
        } else if l < 0.5 {
            (max - min) / (max + min)
        } else {
            (max - min) / (2.0 - max - min)
        }
    }

    #[test]
    fn saturation_keeps_lightness_and_grays_and_reaches_the_ends() {
        let colour = [150.0, 100.0, 90.0];
        let more = saturate(colour, 0.4);
        assert!((hsl_lightness(more) - hsl_lightness(colour)).abs() < 1e-3);
        assert!(
            hsl_saturation(more) > hsl_saturation(colour) * 1.3,
            "{more:?}"
        );
        let full = saturate(colour, 1.0);
        assert!((hsl_saturation(full) - 1.0).abs() < 1e-4, "{full:?}");
        let gray = saturate(colour, -1.0);
        assert!(gray
            .iter()
            .all(|&c| (c - hsl_lightness(colour)).abs() < 1e-3));
        assert_eq!(saturate([80.0; 3], 0.7), [80.0; 3]);
        assert_eq!(saturate(colour, 0.0), colour);
    }

    #[test]
    fn contrast_and_lightness_sliders() {
        assert_eq!(contrast(127.5, 0.6), 127.5);
        assert!(contrast(200.0, 0.5) > 200.0 && contrast(50.0, 0.5) < 50.0);
        assert!((contrast(200.0, -1.0) - 127.5).abs() < 1e-4);
        assert_eq!(contrast(90.0, 0.0), 90.0);
        assert_eq!(lighten(90.0, 1.0), 255.0);
        assert_eq!(lighten(90.0, -1.0), 0.0);
        assert_eq!(lighten(90.0, 0.0), 90.0);
        assert!((lighten(100.0, 0.5) - 177.5).abs() < 1e-4);
    }

    #[test]
    fn brightness_is_matched_to_the_photo_and_black_is_left_alone() {
        let photo = RgbImage::from_fn(4, 4, |x, y| Rgb([(40 * x) as u8, (30 * y) as u8, 120]));
        let mut cartoon = RgbImage::from_fn(4, 4, |x, y| Rgb([(20 * x) as u8, 10, (5 * y) as u8]));
        let settings = OfficialColour {
            saturation: 0.0,
            ..OfficialColour::default()
        };
        apply(&mut cartoon, &photo, &settings);
        assert!((mean_luma(&cartoon) - mean_luma(&photo)).abs() < 1.0);
        let mut black = RgbImage::new(3, 3);
        apply(&mut black, &photo, &OfficialColour::default());
        assert!(black.pixels().all(|p| p.0 == [0, 0, 0]));
    }

    #[test]
    fn sliders_outside_their_range_are_refused() {
        assert!(OfficialColour::default().validate().is_ok());
        let bad = OfficialColour {
            contrast: 1.5,
            ..OfficialColour::default()
        };
        assert!(bad.validate().unwrap_err().contains("contrast"));
        let nan = OfficialColour {
            lightness: f32::NAN,
            ..OfficialColour::default()
        };
        assert!(nan.validate().is_err());
    }
}
