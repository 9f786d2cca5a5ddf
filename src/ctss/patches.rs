//! Eqs. (4)-(6): sliding-window patches, their edge intensity, and the top-K selection.

use burn::tensor::backend::Backend;
use burn::tensor::module::avg_pool2d;
use burn::tensor::Tensor;

use crate::error::{Error, Result};

/// The sliding-window layout of Eq. (4) on a mini-batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchGrid {
    /// Images in the mini-batch, N.
    pub images: usize,
    /// Patch rows per image, `floor((H - l) / s) + 1`.
    pub rows: usize,
    /// Patch columns per image, `floor((W - l) / s) + 1`.
    pub cols: usize,
    /// Patch side l.
    pub size: usize,
    /// Stride s.
    pub stride: usize,
}

impl PatchGrid {
    /// The grid of `l x l` patches with stride `s` over `[N, C, H, W]`; an error when an image is
    /// smaller than a patch.
    pub fn new(dims: [usize; 4], size: usize, stride: usize) -> Result<Self> {
        let [n, _, h, w] = dims;
        if h < size || w < size || stride == 0 {
            return Err(Error::InvalidShape {
                what: "CTSS patch extraction",
                shape: dims.to_vec(),
                expected: format!("images of at least {size}x{size} (the patch size)"),
            });
        }
        Ok(Self {
            images: n,
            rows: (h - size) / stride + 1,
            cols: (w - size) / stride + 1,
            size,
            stride,
        })
    }

    /// M of Eq. (4): `N * rows * cols`.
    pub fn len(&self) -> usize {
        self.images * self.rows * self.cols
    }

    /// Whether the grid holds no patch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(image, top, left)` of patch `m` (patches numbered image by image, row-major).
    pub fn origin(&self, m: usize) -> (usize, usize, usize) {
        let per_image = self.rows * self.cols;
        let (image, rest) = (m / per_image, m % per_image);
        (
            image,
            (rest / self.cols) * self.stride,
            (rest % self.cols) * self.stride,
        )
    }
}

/// Eq. (5): `t_i = sum_{m,n} (e_p^i)_{m,n}`, the edge intensity of every patch.
///
/// # Shapes
/// `[N, 1, H, W]` -> `M` values, in the numbering of [`PatchGrid::origin`].
pub fn edge_intensity<B: Backend>(edges: Tensor<B, 4>, grid: &PatchGrid) -> Vec<f32> {
    let l = grid.size;
    let s = grid.stride;
    let mean = avg_pool2d(edges, [l, l], [s, s], [0, 0], true, false);
    let sums = mean * (l * l) as f32;
    sums.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default()
}

/// Eq. (6): indices of the `k` largest intensities, largest first (ties: lower index first).
/// Keeps all of them when `k >= M`.
pub fn top_k(intensity: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..intensity.len()).collect();
    order.sort_by(|&a, &b| intensity[b].total_cmp(&intensity[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// Cuts the chosen patches out of `images` (gradients flow through the cut).
///
/// # Shapes
/// `[N, C, H, W]` -> `[K, C, l, l]`.
pub fn gather<B: Backend>(
    images: Tensor<B, 4>,
    grid: &PatchGrid,
    indices: &[usize],
) -> Tensor<B, 4> {
    let l = grid.size;
    let channels = images.dims()[1];
    let patches = indices
        .iter()
        .map(|&m| {
            let (n, top, left) = grid.origin(m);
            images
                .clone()
                .slice([n..n + 1, 0..channels, top..top + l, left..left + l])
        })
        .collect();
    Tensor::cat(patches, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_counts_match_the_papers_formula() {
        // M = N (floor((H - l)/s) + 1)(floor((W - l)/s) + 1)
        let grid = PatchGrid::new([8, 3, 256, 256], 96, 48).unwrap();
        assert_eq!((grid.rows, grid.cols, grid.len()), (4, 4, 128));
        let grid = PatchGrid::new([8, 3, 256, 256], 96, 72).unwrap();
        assert_eq!(grid.len(), 8 * 3 * 3);
        assert_eq!(grid.origin(10), (1, 0, 72));
        assert!(PatchGrid::new([1, 3, 64, 256], 96, 48).is_err());
    }

    #[test]
    fn top_k_is_descending_and_stable() {
        assert_eq!(top_k(&[0.5, 2.0, 0.5, 3.0], 3), vec![3, 1, 0]);
        assert_eq!(top_k(&[1.0, 2.0], 5), vec![1, 0]);
    }
}
