//! Tiled inference with bounded memory that gives the untiled result.
//!
//! LN (Fig. 10) normalises over the whole image, so cartoonizing tiles independently would
//! change every tile's statistics. Once the statistics of all LN layers are fixed, though, LN is
//! a per-channel affine map and every output pixel depends only on input pixels within
//! [`Generator::receptive_radius`]; a tile with that much halo then reproduces the untiled output
//! in its core exactly (tile corners are multiples of 4, so the stride-2 grids line up).
//!
//! The statistics are gathered layer by layer: pass `k` runs every tile up to the input of LN
//! layer `k`, with the statistics of layers `0..k` already known, and sums that input over the
//! tile cores (which partition the image) in f64. After one pass per LN layer, a last pass
//! produces the output. The cost is a few untiled forwards (most LN layers sit early in the
//! network or at low resolution); the memory is that of one tile plus the image.

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};
use image::RgbImage;

use crate::data::image_io::tensor_to_images;
use crate::model::layers::{LayerNorm, NormStats, Normalizer, OwnStats};
use crate::model::Generator;

/// Tile geometry, in input pixels (both multiples of 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// Side of the region each tile produces.
    pub core: usize,
    /// Context added around the core; at least the generator's receptive radius.
    pub halo: usize,
}

/// One tile: its input region and its core, absolute coordinates `(y0, y1, x0, x1)`.
#[derive(Clone, Copy, Debug)]
struct Tile {
    input: [usize; 4],
    core: [usize; 4],
}

fn tiles(h: usize, w: usize, tiling: Tiling) -> Vec<Tile> {
    let span = |start: usize, len: usize| {
        let end = (start + tiling.core).min(len);
        (
            start,
            end,
            start.saturating_sub(tiling.halo),
            (end + tiling.halo).min(len),
        )
    };
    let mut out = Vec::new();
    for cy in (0..h).step_by(tiling.core) {
        for cx in (0..w).step_by(tiling.core) {
            let (cy0, cy1, y0, y1) = span(cy, h);
            let (cx0, cx1, x0, x1) = span(cx, w);
            out.push(Tile {
                input: [y0, y1, x0, x1],
                core: [cy0, cy1, cx0, cx1],
            });
        }
    }
    out
}

/// Counts the LN layers of a forward pass.
struct Count(usize);

impl<B: Backend> Normalizer<B> for Count {
    fn norm(
        &mut self,
        ln: &LayerNorm<B>,
        x: Tensor<B, 4>,
        slope: Option<f64>,
    ) -> Option<Tensor<B, 4>> {
        self.0 += 1;
        OwnStats.norm(ln, x, slope)
    }
}

/// Known statistics for the first layers; at layer `target`, sums its input over the core and
/// ends the pass. Without a target, a full pass with known statistics.
struct Gather<'a> {
    known: &'a [NormStats],
    target: Option<usize>,
    index: usize,
    /// Core relative to the tile's input, `(y0, y1, x0, x1)`, in input pixels.
    core: [usize; 4],
    input_height: usize,
    sums: [f64; 3],
}

impl<B: Backend> Normalizer<B> for Gather<'_> {
    fn norm(
        &mut self,
        ln: &LayerNorm<B>,
        x: Tensor<B, 4>,
        slope: Option<f64>,
    ) -> Option<Tensor<B, 4>> {
        let index = self.index;
        self.index += 1;
        if Some(index) != self.target {
            return Some(ln.forward_with_stats(x, self.known[index], slope));
        }
        let [_, c, h, _] = x.dims();
        let scale = self.input_height / h;
        let [y0, y1, x0, x1] = self.core.map(|v| v / scale);
        let core = x.slice([0..1, 0..c, y0..y1, x0..x1]);
        let sum: f32 = core.clone().sum().into_scalar().elem();
        let sum_sq: f32 = core.powi_scalar(2).sum().into_scalar().elem();
        self.sums[0] += sum as f64;
        self.sums[1] += sum_sq as f64;
        self.sums[2] += (c * (y1 - y0) * (x1 - x0)) as f64;
        None
    }
}

/// The generator on `image` (`[1, 3, H, W]`, H and W multiples of 4) tile by tile, equal to the
/// untiled output up to floating-point summation order.
pub fn generate_tiled<B: Backend>(
    g: &Generator<B>,
    image: Tensor<B, 4>,
    tiling: Tiling,
) -> RgbImage {
    let [_, _, h, w] = image.dims();
    let device = image.device();
    let mut count = Count(0);
    let probe = Tensor::<B, 4>::zeros([1, 3, g.min_side(), g.min_side()], &device);
    let _ = g.forward_with(probe, &mut count);
    let grid = tiles(h, w, tiling);
    let cut = |t: &Tile| {
        let [y0, y1, x0, x1] = t.input;
        image.clone().slice([0..1, 0..3, y0..y1, x0..x1])
    };
    let relative = |t: &Tile| {
        let [cy0, cy1, cx0, cx1] = t.core;
        [
            cy0 - t.input[0],
            cy1 - t.input[0],
            cx0 - t.input[2],
            cx1 - t.input[2],
        ]
    };
    let mut known = Vec::with_capacity(count.0);
    for target in 0..count.0 {
        let mut sums = [0.0f64; 3];
        for tile in &grid {
            let mut gather = Gather {
                known: &known,
                target: Some(target),
                index: 0,
                core: relative(tile),
                input_height: tile.input[1] - tile.input[0],
                sums: [0.0; 3],
            };
            let _ = g.forward_with(cut(tile), &mut gather);
            for (total, part) in sums.iter_mut().zip(gather.sums) {
                *total += part;
            }
        }
        let mean = sums[0] / sums[2];
        known.push(NormStats {
            mean,
            var: (sums[1] / sums[2] - mean * mean).max(0.0),
        });
    }
    let mut output = RgbImage::new(w as u32, h as u32);
    for tile in &grid {
        let [ry0, ry1, rx0, rx1] = relative(tile);
        let mut fixed = Gather {
            known: &known,
            target: None,
            index: 0,
            core: [ry0, ry1, rx0, rx1],
            input_height: tile.input[1] - tile.input[0],
            sums: [0.0; 3],
        };
        if let Some(y) = g.forward_with(cut(tile), &mut fixed) {
            let core = y.slice([0..1, 0..3, ry0..ry1, rx0..rx1]);
            let part = tensor_to_images(core).remove(0);
            image::imageops::replace(&mut output, &part, tile.core[2] as i64, tile.core[0] as i64);
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_partition_the_image_and_inputs_stay_inside() {
        let grid = tiles(100, 60, Tiling { core: 32, halo: 8 });
        assert_eq!(grid.len(), 4 * 2);
        let area: usize = grid
            .iter()
            .map(|t| (t.core[1] - t.core[0]) * (t.core[3] - t.core[2]))
            .sum();
        assert_eq!(area, 100 * 60);
        assert!(grid
            .iter()
            .all(|t| t.input[0] <= t.core[0] && t.input[1] >= t.core[1] && t.input[1] <= 100));
        assert_eq!(grid[3].input, [24, 72, 24, 60]);
    }
}
