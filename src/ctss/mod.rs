//! The cartoon-texture-saliency-sampler (CTSS, Section III-B, Fig. 2b): from a mini-batch it
//! keeps the K patches with the most distinct edges, in grayscale, for D_patch.
//!
//! The pipeline, one function per equation: [`guided_filter`](fn@guided_filter) (Eq. 1) ->
//! [`edge::edge_magnitude`] and [`edge::min_max`] (Eq. 2) -> [`edge::high_pass`] (Eq. 3) ->
//! [`patches::PatchGrid`] (Eq. 4) -> [`patches::edge_intensity`] (Eq. 5) -> [`patches::top_k`]
//! (Eq. 6) -> [`patches::gather`] from the unfiltered images -> [`to_gray`].

pub mod edge;
pub mod guided_filter;
pub mod patches;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rand::Rng;

pub use guided_filter::guided_filter;
pub use patches::PatchGrid;

use crate::config::{CtssConfig, Preset, Stride};
use crate::error::Result;

/// The patches CTSS chose from one mini-batch.
#[derive(Debug, Clone)]
pub struct Sampled<B: Backend> {
    /// Grayscale patches, `[K, 1, l, l]`.
    pub patches: Tensor<B, 4>,
    /// Their indices in the grid, most edge-intense first.
    pub indices: Vec<usize>,
    /// The grid they come from.
    pub grid: PatchGrid,
}

impl<B: Backend> Sampled<B> {
    /// The patches at the same places of `images`, grayscale as `preset` makes them: the G step
    /// takes its generated patches where the D step's CTSS chose them on the same (detached)
    /// generated images, without computing their edges again (same values, same stride: same
    /// choice) and without reading them back from the device (a synchronisation).
    ///
    /// # Errors
    /// When `images` is not laid out as the grid these patches come from.
    pub fn same_places(&self, images: Tensor<B, 4>, preset: Preset) -> Result<Tensor<B, 4>> {
        let grid = PatchGrid::new(images.dims(), self.grid.size, self.grid.stride)?;
        if grid != self.grid {
            return Err(crate::error::Error::InvalidShape {
                what: "CTSS patches at chosen places",
                shape: images.dims().to_vec(),
                expected: format!("images laid out as the grid {:?}", self.grid),
            });
        }
        Ok(to_gray(
            patches::gather(images, &grid, &self.indices),
            preset,
        ))
    }
}

/// The strides of one training iteration: `(cartoon, generated)`.
///
/// Paper: one `s ~ U(min, max)` drawn per iteration and used for both mini-batches.
/// Official: fixed strides.
pub fn draw_strides(stride: &Stride, rng: &mut impl Rng) -> (usize, usize) {
    match *stride {
        Stride::Uniform { min, max } => {
            let s = rng.random_range(min..=max);
            (s, s)
        }
        Stride::Fixed { cartoon, generated } => (cartoon, generated),
    }
}

/// Eqs. (1)-(3): refined edge maps `E~` of a mini-batch, without gradient.
///
/// # Shapes
/// `[N, 3, H, W]` in `[-1, 1]` -> `[N, 1, H, W]` in `[0, 1]`.
pub fn edge_map<B: Backend>(images: Tensor<B, 4>, config: &CtssConfig) -> Tensor<B, 4> {
    let smooth = guided_filter(images.detach(), config.radius, config.epsilon);
    let coarse = edge::min_max(edge::edge_magnitude(smooth, config.preset), config.preset);
    edge::high_pass(coarse, config.d, config.n)
}

/// Eqs. (1)-(6) and the grayscale conversion: the top-K edge-distinct patches of `images`
/// with stride `stride`. Gradients flow to `images` through the chosen patches.
///
/// # Shapes
/// `[N, 3, H, W]` in `[-1, 1]` -> patches `[min(K, M), 1, l, l]`.
pub fn sample<B: Backend>(
    images: Tensor<B, 4>,
    config: &CtssConfig,
    stride: usize,
) -> Result<Sampled<B>> {
    let grid = PatchGrid::new(images.dims(), config.patch_size, stride)?;
    let edges = edge_map(images.clone(), config);
    let intensity = patches::edge_intensity(edges, &grid);
    let indices = patches::top_k(&intensity, config.k);
    let chosen = patches::gather(images, &grid, &indices);
    Ok(Sampled {
        patches: to_gray(chosen, config.preset),
        indices,
        grid,
    })
}

/// Grayscale of the chosen patches. Paper: luminance `0.299 R + 0.587 G + 0.114 B` (range kept).
/// Official: `R + G + B`, then min-max of each patch to `[0, 1]`.
///
/// # Shapes
/// `[K, 3, l, l]` -> `[K, 1, l, l]`.
pub fn to_gray<B: Backend>(patches: Tensor<B, 4>, preset: Preset) -> Tensor<B, 4> {
    let device = patches.device();
    match preset {
        Preset::Paper => {
            let w =
                Tensor::<B, 1>::from_floats([0.299, 0.587, 0.114], &device).reshape([1, 3, 1, 1]);
            (patches * w).sum_dim(1)
        }
        Preset::Official => {
            let [k, _, h, w] = patches.dims();
            let flat = patches.sum_dim(1).reshape([k, h * w]);
            let lo = flat.clone().min_dim(1).detach();
            let hi = flat.clone().max_dim(1).detach();
            ((flat - lo.clone()) / (hi - lo + edge::MINMAX_EPSILON)).reshape([k, 1, h, w])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{CpuBackend, CPU};
    use burn::tensor::TensorData;
    use rand::SeedableRng;

    /// A flat gray batch with one sharp square drawn in image 1 at rows/cols 60..80.
    fn batch_with_square() -> Tensor<CpuBackend, 4> {
        let (n, h, w) = (2, 128, 128);
        let mut data = vec![0.0f32; n * 3 * h * w];
        for c in 0..3 {
            for y in 60..80 {
                for x in 60..80 {
                    data[((n - 1) * 3 + c) * h * w + y * w + x] = 0.9;
                }
            }
        }
        Tensor::from_data(TensorData::new(data, [n, 3, h, w]), &CPU)
    }

    #[test]
    fn top_patch_contains_the_drawn_edge() {
        for config in [
            CtssConfig {
                k: 3,
                patch_size: 32,
                ..CtssConfig::default()
            },
            CtssConfig {
                k: 3,
                patch_size: 32,
                ..CtssConfig::official(2)
            },
        ] {
            let sampled = sample(batch_with_square(), &config, 16).unwrap();
            let (image, top, left) = sampled.grid.origin(sampled.indices[0]);
            assert_eq!(image, 1, "{config:?}");
            // The patch covers part of the square's border.
            let covers = |o: usize| o < 80 && o + 32 > 60;
            assert!(covers(top) && covers(left), "{top} {left}");
            assert_eq!(sampled.patches.dims(), [3, 1, 32, 32]);
        }
    }

    /// The same places of the same images are the same patches; another layout is refused.
    #[test]
    fn same_places_regathers_the_chosen_patches() {
        let config = CtssConfig {
            k: 3,
            patch_size: 32,
            ..CtssConfig::default()
        };
        let sampled = sample(batch_with_square(), &config, 16).unwrap();
        let again = sampled
            .same_places(batch_with_square(), config.preset)
            .unwrap();
        let diff: f32 = (again - sampled.patches.clone()).abs().max().into_scalar();
        assert_eq!(diff, 0.0);
        let smaller = batch_with_square().slice([0..2, 0..3, 0..64, 0..128]);
        assert!(sampled.same_places(smaller, config.preset).is_err());
    }

    #[test]
    fn paper_stride_is_drawn_within_range() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let stride = Stride::Uniform { min: 48, max: 72 };
        for _ in 0..200 {
            let (a, b) = draw_strides(&stride, &mut rng);
            assert!((48..=72).contains(&a) && a == b);
        }
    }
}
