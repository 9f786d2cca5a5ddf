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
//! Passes resume from what the tiles kept: their states before the target step and, room
//! permitting, the target LN layer's input, stashed when the pass summed it, so that the next
//! pass normalises it with the now-known statistics instead of convolving again. All of it
//! counts against [`Tiling::cache_bytes`]; when the new states do not fit, the tiles stay at
//! their last kept ones and the next pass recomputes from there. With room for every state and
//! stash each convolution runs once, the cost of one forward pass plus the halos; with room for
//! the states alone each runs twice; with no room at all every pass starts from the photo,
//! about L/2 forward passes for L LN layers, in the memory of one tile plus the image.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use image::RgbImage;
use rayon::prelude::*;

use crate::data::image_io::tensor_to_images;
use crate::kernels::host_slice;
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

/// Bytes per input pixel, measured on a small probe run: of the state after each step, and of
/// each LN layer's input (what a pass stashes to resume mid-step).
struct Footprint {
    state: Vec<f64>,
    stash: Vec<f64>,
}

/// [`OwnStats`] that records the size of each LN input.
struct Probe {
    pixels: f64,
    stash: Vec<f64>,
}

impl<B: Backend> Normalizer<B> for Probe {
    fn norm(
        &mut self,
        ln: &LayerNorm<B>,
        x: Tensor<B, 4>,
        slope: Option<f64>,
    ) -> Option<Tensor<B, 4>> {
        self.stash
            .push((x.shape().num_elements() * size_of::<f32>()) as f64 / self.pixels);
        OwnStats.norm(ln, x, slope)
    }
}

impl Footprint {
    fn of<B: Backend>(g: &Generator<B>, device: &B::Device) -> Self {
        let side = g.min_side();
        let pixels = (side * side) as f64;
        let mut probe = Probe {
            pixels,
            stash: Vec::with_capacity(g.steps()),
        };
        let mut state: State<B> = vec![Tensor::zeros([1, 3, side, side], device)];
        let mut sizes = Vec::with_capacity(g.steps());
        for i in 0..g.steps() {
            state = g
                .step(i, state, &mut probe)
                .expect("Probe never ends a pass");
            let elements: usize = state.iter().map(|t| t.shape().num_elements()).sum();
            sizes.push((elements * size_of::<f32>()) as f64 / pixels);
        }
        Self {
            state: sizes,
            stash: probe.stash,
        }
    }

    /// Bytes per input pixel of the state before step `step` (the photo before step 0: not
    /// kept, free).
    fn state_before(&self, step: usize) -> f64 {
        match step {
            0 => 0.0,
            _ => self.state[step - 1],
        }
    }
}

/// What a tile's next pass starts from: its state before step `kept_at` (`None`: the photo)
/// and, if stashed, the input of LN layer `kept_at`, so that step `kept_at` skips its
/// convolution. All tiles are kept at the same step.
struct Kept<B: Backend> {
    state: Option<State<B>>,
    stash: Option<Tensor<B, 4>>,
}

impl<B: Backend> Kept<B> {
    fn photo() -> Self {
        Self {
            state: None,
            stash: None,
        }
    }
}

/// What every tile keeps at the end of the pass that gathers LN layer `target`'s statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Keep {
    /// Its state before step `target` and the LN input: the next pass convolves once less.
    Stash,
    /// Its state before step `target`.
    State,
    /// What it kept before (an earlier state).
    Old,
}

impl Keep {
    /// The choice for a pass whose new states take `states` bytes (all tiles) and whose LN
    /// inputs take `stashes`. All tiles choose alike: a state moved forward saves whole steps in
    /// every later pass, a stash one convolution in the next, so stashes come only when every
    /// state fits beside them. (Keeping some tiles' states and not others' fills the budget in
    /// more passes but saved little at 3840x2160, where the decoder's states are the large ones,
    /// and the memory it holds through the decoder adds to its working set: 2.6 GiB peak instead
    /// of 1.5 at the default budget.)
    fn choose(budget: f64, states: f64, stashes: f64) -> Self {
        if states + stashes <= budget {
            Keep::Stash
        } else if states <= budget {
            Keep::State
        } else {
            Keep::Old
        }
    }
}

/// Known statistics for the steps before the target; at the target LN layer, sums its input
/// over the core, stashes it if asked and ends the pass. Without a target, known statistics
/// throughout.
struct Gather<'a, B: Backend> {
    known: &'a [NormStats],
    target: Option<usize>,
    /// The LN layer the next call normalises (= the step being run).
    index: usize,
    /// Core relative to the tile's input, `(y0, y1, x0, x1)`, in input pixels.
    core: [usize; 4],
    input_height: usize,
    sums: [f64; 3],
    /// A stashed LN input and its layer, handed to the unit that would compute it.
    resume: Option<(usize, Tensor<B, 4>)>,
    /// Whether to keep the target LN layer's input,
    stash_target: bool,
    /// and that input, once the pass reached it.
    stashed: Option<Tensor<B, 4>>,
    /// LN inputs computed (not resumed) so far: the convolutions run.
    computed: usize,
}

impl<B: Backend> Normalizer<B> for Gather<'_, B> {
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
        let stashed = self.stash_target.then(|| x.clone());
        let values = host_slice(x);
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
        self.stashed = stashed;
        None
    }

    fn resume(&mut self) -> Option<Tensor<B, 4>> {
        match self.resume.take() {
            Some((at, x)) if at == self.index => Some(x),
            other => {
                self.resume = other;
                self.computed += 1;
                None
            }
        }
    }
}

impl<'a, B: Backend> Gather<'a, B> {
    /// A pass of `tile` resuming from `kept` (at step `kept_at`), up to `target` (stashing its
    /// input if `stash_target`) or, without a target, to the output.
    fn new(
        known: &'a [NormStats],
        target: Option<usize>,
        stash_target: bool,
        tile: &Tile,
        (kept_at, kept): (usize, &Kept<B>),
    ) -> Self {
        Self {
            known,
            target,
            index: 0,
            core: tile.relative_core(),
            input_height: tile.input[1] - tile.input[0],
            sums: [0.0; 3],
            resume: kept.stash.clone().map(|x| (kept_at, x)),
            stash_target,
            stashed: None,
            computed: 0,
        }
    }

    /// Runs steps `from..to` of `g` on `state`; `None` if the target ended the pass.
    fn run(
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
    run_tiled(g, image, tiling).0
}

/// [`generate_tiled`], and the number of convolutions (LN inputs) it computed, all tiles.
fn run_tiled<B: Backend>(
    g: &Generator<B>,
    image: Tensor<B, 4>,
    tiling: Tiling,
) -> (RgbImage, usize) {
    let [_, _, h, w] = image.dims();
    let steps = g.steps();
    let footprint = Footprint::of(g, &image.device());
    let grid = tiles(h, w, tiling);
    let photo = |t: &Tile| {
        let [y0, y1, x0, x1] = t.input;
        vec![image.clone().slice([0..1, 0..3, y0..y1, x0..x1])]
    };
    let area = grid.iter().map(Tile::area).sum::<usize>() as f64;
    let mut kept: Vec<Kept<B>> = grid.iter().map(|_| Kept::photo()).collect();
    let mut kept_at = 0;
    let mut known = Vec::with_capacity(steps);
    let mut computed = 0;
    for target in 0..steps {
        let keep = Keep::choose(
            tiling.cache_bytes as f64,
            footprint.state_before(target) * area,
            footprint.stash[target] * area,
        );
        let mut sums = [0.0f64; 3];
        for (tile, slot) in grid.iter().zip(kept.iter_mut()) {
            let start = slot.state.clone().unwrap_or_else(|| photo(tile));
            let stash = keep == Keep::Stash;
            let mut pass = Gather::new(&known, Some(target), stash, tile, (kept_at, slot));
            let state = pass
                .run(g, start, kept_at, target)
                .expect("no target before this step");
            let _ = pass.run(g, state.clone(), target, target + 1);
            if keep != Keep::Old {
                *slot = Kept {
                    state: (target > 0).then_some(state),
                    stash: pass.stashed.take(),
                };
            }
            computed += pass.computed;
            for (total, part) in sums.iter_mut().zip(pass.sums) {
                *total += part;
            }
        }
        if keep != Keep::Old {
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
        let start = slot.state.take().unwrap_or_else(|| photo(tile));
        let mut pass = Gather::new(&known, None, false, tile, (kept_at, slot));
        let y = pass.run(g, start, kept_at, steps).and_then(|mut s| s.pop());
        computed += pass.computed;
        if let Some(y) = y {
            let [ry0, ry1, rx0, rx1] = tile.relative_core();
            let core = y.slice([0..1, 0..3, ry0..ry1, rx0..rx1]);
            let part = tensor_to_images(core).remove(0);
            image::imageops::replace(&mut output, &part, tile.core[2] as i64, tile.core[0] as i64);
        }
    }
    (output, computed)
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

    #[test]
    fn states_come_before_stashes() {
        assert_eq!(Keep::choose(10.0, 6.0, 4.0), Keep::Stash);
        assert_eq!(Keep::choose(10.0, 6.0, 4.5), Keep::State);
        assert_eq!(Keep::choose(10.0, 10.5, 0.0), Keep::Old);
        assert_eq!(Keep::choose(0.0, 0.0, 1.0), Keep::State);
    }

    /// With room for everything each LN input (each convolution) is computed once per tile; with
    /// none, pass `k` recomputes layers `0..=k`; both give the same image.
    #[test]
    fn stashes_spare_the_second_convolution() {
        use crate::device::{CpuBackend, CPU};
        let g = crate::model::GeneratorConfig::default().init::<CpuBackend>(&CPU);
        let image = Tensor::<CpuBackend, 4>::random(
            [1, 3, 64, 48],
            burn::tensor::Distribution::Uniform(-1.0, 1.0),
            &CPU,
        );
        let tiling = |cache_bytes| Tiling {
            core: 32,
            halo: g.receptive_radius(),
            cache_bytes,
        };
        let (all, computed_all) = run_tiled(&g, image.clone(), tiling(usize::MAX));
        let (none, computed_none) = run_tiled(&g, image, tiling(0));
        let (tiles, steps) = (4, g.steps());
        assert_eq!(computed_all, tiles * steps);
        assert_eq!(computed_none, tiles * (steps * (steps + 1) / 2 + steps));
        assert_eq!(all, none);
    }
}
