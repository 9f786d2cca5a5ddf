//! Tiled inference with bounded memory that gives the untiled result.
//!
//! LN (Fig. 10) normalises over the whole image, so cartoonizing tiles independently would
//! change every tile's statistics. Once the statistics of all LN layers are fixed, though, LN is
//! a per-channel affine map and every output pixel depends only on input pixels within
//! [`Generator::receptive_radius`]; a tile with that much halo then reproduces the untiled output
//! in its core exactly (tile corners are multiples of 4, so the stride-2 grids line up).
//!
//! The statistics are gathered layer by layer. G's forward pass is a sequence of steps, one per
//! LN layer ([`Generator::step`]). Pass `k` runs every tile to the input of LN layer `k`, with
//! the statistics of layers `0..k` already known, and sums that input over the tile cores (which
//! partition the image) in f64. After one pass per LN layer, a last pass produces the output.
//!
//! Passes resume from kept states: when the states of all tiles before step `k` fit in
//! [`Tiling::cache_bytes`], pass `k` keeps them and the next pass starts there instead of at the
//! photo, so with room for every state the whole job costs about two forward passes (each step
//! once to gather its statistics, once to apply them). States that do not fit are recomputed
//! from the last kept one; with no room at all every pass starts from the photo, about L/2
//! forward passes for L LN layers, in the memory of one tile plus the image.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use image::RgbImage;
use rayon::prelude::*;

use crate::data::image_io::tensor_to_images;
use crate::kernels::norm::sums;
use crate::model::generator::State;
use crate::model::layers::{LayerNorm, NormStats, Normalizer, OwnStats};
use crate::model::Generator;

/// Tile geometry, in input pixels (both multiples of 4), and the room for kept states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// Side of the region each tile produces.
    pub core: usize,
    /// Context added around the core; at least the generator's receptive radius.
    pub halo: usize,
    /// Bytes the states kept between passes may take (f32, all tiles with their halos);
    /// 0: every pass starts from the photo.
    pub cache_bytes: usize,
}

/// One tile: its input region and its core, absolute coordinates `(y0, y1, x0, x1)`.
#[derive(Clone, Copy, Debug)]
struct Tile {
    input: [usize; 4],
    core: [usize; 4],
}

impl Tile {
    fn area(&self) -> usize {
        (self.input[1] - self.input[0]) * (self.input[3] - self.input[2])
    }

    /// The core relative to the tile's input.
    fn relative_core(&self) -> [usize; 4] {
        let [cy0, cy1, cx0, cx1] = self.core;
        let [y0, _, x0, _] = self.input;
        [cy0 - y0, cy1 - y0, cx0 - x0, cx1 - x0]
    }
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

/// Bytes per input pixel of the state after each step, measured on a small probe.
fn state_bytes_per_pixel<B: Backend>(g: &Generator<B>, device: &B::Device) -> Vec<f64> {
    let side = g.min_side();
    let mut state: State<B> = vec![Tensor::zeros([1, 3, side, side], device)];
    let mut sizes = Vec::with_capacity(g.steps());
    for i in 0..g.steps() {
        state = g
            .step(i, state, &mut OwnStats)
            .expect("OwnStats never ends a pass");
        let elements: usize = state.iter().map(|t| t.shape().num_elements()).sum();
        sizes.push((elements * size_of::<f32>()) as f64 / (side * side) as f64);
    }
    sizes
}

/// Known statistics for the steps before the target; at the target LN layer, sums its input
/// over the core and ends the pass. Without a target, known statistics throughout.
struct Gather<'a> {
    known: &'a [NormStats],
    target: Option<usize>,
    /// The LN layer the next call normalises (= the step being run).
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
        let [_, c, h, w] = x.dims();
        let scale = self.input_height / h;
        let [y0, y1, x0, x1] = self.core.map(|v| v / scale);
        let values = x.into_data().into_vec::<f32>().expect("f32 activations");
        let (sum, sum_sq) = values
            .par_chunks(h * w)
            .map(|plane| {
                plane[y0 * w..y1 * w]
                    .chunks(w)
                    .map(|row| sums(&row[x0..x1]))
                    .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
            })
            .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        self.sums[0] += sum;
        self.sums[1] += sum_sq;
        self.sums[2] += (c * (y1 - y0) * (x1 - x0)) as f64;
        None
    }
}

impl<'a> Gather<'a> {
    fn new(known: &'a [NormStats], target: Option<usize>, tile: &Tile) -> Self {
        Self {
            known,
            target,
            index: 0,
            core: tile.relative_core(),
            input_height: tile.input[1] - tile.input[0],
            sums: [0.0; 3],
        }
    }

    /// Runs steps `from..to` of `g` on `state`; `None` if the target ended the pass.
    fn run<B: Backend>(
        &mut self,
        g: &Generator<B>,
        mut state: State<B>,
        from: usize,
        to: usize,
    ) -> Option<State<B>> {
        self.index = from;
        for i in from..to {
            state = g.step(i, state, self)?;
            debug_assert_eq!(self.index, i + 1, "one LN layer per step");
        }
        Some(state)
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
    let steps = g.steps();
    let state_bytes = state_bytes_per_pixel(g, &image.device());
    let grid = tiles(h, w, tiling);
    let area: usize = grid.iter().map(Tile::area).sum();
    let photo = |t: &Tile| {
        let [y0, y1, x0, x1] = t.input;
        vec![image.clone().slice([0..1, 0..3, y0..y1, x0..x1])]
    };
    // `kept[t]`: tile t's state before step `kept_at` (the photo while `kept_at` is 0).
    let mut kept: Vec<Option<State<B>>> = vec![None; grid.len()];
    let mut kept_at = 0;
    let mut known = Vec::with_capacity(steps);
    for target in 0..steps {
        let keep =
            target > kept_at && state_bytes[target - 1] * area as f64 <= tiling.cache_bytes as f64;
        let mut sums = [0.0f64; 3];
        for (tile, slot) in grid.iter().zip(kept.iter_mut()) {
            let start = slot.clone().unwrap_or_else(|| photo(tile));
            let mut pass = Gather::new(&known, Some(target), tile);
            let state = pass
                .run(g, start, kept_at, target)
                .expect("no target before this step");
            if keep {
                *slot = Some(state.clone());
            }
            let _ = pass.run(g, state, target, target + 1);
            for (total, part) in sums.iter_mut().zip(pass.sums) {
                *total += part;
            }
        }
        if keep {
            kept_at = target;
        }
        let mean = sums[0] / sums[2];
        known.push(NormStats {
            mean,
            var: (sums[1] / sums[2] - mean * mean).max(0.0),
        });
    }
    let mut output = RgbImage::new(w as u32, h as u32);
    for (tile, slot) in grid.iter().zip(kept.iter_mut()) {
        let start = slot.take().unwrap_or_else(|| photo(tile));
        let mut pass = Gather::new(&known, None, tile);
        if let Some(y) = pass.run(g, start, kept_at, steps).and_then(|mut s| s.pop()) {
            let [ry0, ry1, rx0, rx1] = tile.relative_core();
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
        let grid = tiles(
            100,
            60,
            Tiling {
                core: 32,
                halo: 8,
                cache_bytes: 0,
            },
        );
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
