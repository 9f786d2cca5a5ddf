//! Section IV-C: "At inference time, we dynamically increase image natural saturation of the
//! generated results by 40%", the released code's colour chain as an alternative
//! ([`super::official_colour`]), and the `--strength` blend between photo and cartoon.

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

pub use super::official_colour::OfficialColour;

/// Which colour post-processing runs on the cartoon.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ColourChain {
    /// The paper's natural-saturation increase ([`PostConfig::vibrance`]).
    Paper,
    /// The released code's chain ([`PostConfig::official`]).
    Official,
    /// None: the generator's colours.
    None,
}

/// Post-processing of a cartoonized image.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PostConfig {
    /// Colour post-processing. Default: paper.
    pub colour: ColourChain,
    /// Natural-saturation (vibrance) increase of the paper's chain, 0.4 = +40%. Default: 0.4
    /// (Section IV-C).
    pub vibrance: f32,
    /// Settings of the released code's chain.
    pub official: OfficialColour,
    /// Blend of photo (0) and cartoon (1). Default: 1.
    pub strength: f32,
}

impl Default for PostConfig {
    fn default() -> Self {
        Self {
            colour: ColourChain::Paper,
            vibrance: 0.4,
            official: OfficialColour::default(),
            strength: 1.0,
        }
    }
}

impl PostConfig {
    /// No post-processing at all: the generator's output as it is.
    pub fn off() -> Self {
        Self {
            colour: ColourChain::None,
            ..Self::default()
        }
    }
}

/// Natural saturation, as photo editors' "vibrance": each pixel moves away from its luminance by
/// `1 + amount * (1 - s)`, where `s = (max - min) / max` is its HSV saturation, so dull colours
/// gain more than already saturated ones and grays stay gray. The paper names the operation but
/// not its formula; this is the usual definition.
pub fn vibrance(image: &mut RgbImage, amount: f32) {
    if amount == 0.0 {
        return;
    }
    for pixel in image.pixels_mut() {
        let [r, g, b] = pixel.0.map(|v| v as f32);
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        if max <= 0.0 || max == min {
            continue;
        }
        let saturation = (max - min) / max;
        let factor = 1.0 + amount * (1.0 - saturation);
        let luma = 0.299 * r + 0.587 * g + 0.114 * b;
        let push = |v: f32| (luma + (v - luma) * factor).round().clamp(0.0, 255.0) as u8;
        *pixel = Rgb([push(r), push(g), push(b)]);
    }
}

/// `photo * (1 - strength) + cartoon * strength`, in place on `cartoon`.
pub fn blend(cartoon: &mut RgbImage, photo: &RgbImage, strength: f32) {
    if strength >= 1.0 {
        return;
    }
    let s = strength.clamp(0.0, 1.0);
    for (c, p) in cartoon.pixels_mut().zip(photo.pixels()) {
        for k in 0..3 {
            c[k] = (p[k] as f32 * (1.0 - s) + c[k] as f32 * s).round() as u8;
        }
    }
}

/// Applies `config` to `cartoon` (made from `photo`).
pub fn apply(cartoon: &mut RgbImage, photo: &RgbImage, config: &PostConfig) {
    match config.colour {
        ColourChain::Paper => vibrance(cartoon, config.vibrance),
        ColourChain::Official => super::official_colour::apply(cartoon, photo, &config.official),
        ColourChain::None => {}
    }
    blend(cartoon, photo, config.strength);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saturation(p: &Rgb<u8>) -> f32 {
        let max = *p.0.iter().max().unwrap() as f32;
        let min = *p.0.iter().min().unwrap() as f32;
        (max - min) / max
    }

    #[test]
    fn vibrance_boosts_dull_colours_more_and_keeps_grays() {
        let mut image =
            RgbImage::from_vec(3, 1, vec![120, 100, 100, 250, 20, 20, 90, 90, 90]).unwrap();
        let before: Vec<f32> = image.pixels().map(saturation).collect();
        vibrance(&mut image, 0.4);
        let after: Vec<f32> = image.pixels().map(saturation).collect();
        assert!(after[0] > before[0] * 1.2, "{before:?} {after:?}");
        assert!(after[1] >= before[1] && after[1] - before[1] < after[0] - before[0]);
        assert_eq!(image.get_pixel(2, 0).0, [90, 90, 90]);
    }

    #[test]
    fn strength_zero_returns_the_photo_and_one_the_cartoon() {
        let photo = RgbImage::from_pixel(2, 2, Rgb([10, 20, 30]));
        let cartoon = RgbImage::from_pixel(2, 2, Rgb([200, 100, 0]));
        let mut none = cartoon.clone();
        blend(&mut none, &photo, 0.0);
        assert_eq!(none, photo);
        let mut half = cartoon.clone();
        blend(&mut half, &photo, 0.5);
        assert_eq!(half.get_pixel(0, 0).0, [105, 60, 15]);
        let mut full = cartoon.clone();
        blend(&mut full, &photo, 1.0);
        assert_eq!(full, cartoon);
    }
}
