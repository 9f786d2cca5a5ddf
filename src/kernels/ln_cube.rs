//! The sums of LN over (C, H, W) as CubeCL kernels of toonsmith's own, each one custom
//! operation of burn's fusion stream ([`super::cube_op`]): each sample's mean and variance for
//! the forward ([`sample_var_mean`]), and the two per-(sample, channel) pixel sums of the
//! backward ([`channel_sums`], the formulas in [`super::ln_ops`]). The element-wise work around
//! them (normalise, scale and shift, leaky ReLU, the input gradient) stays burn's, which fuses
//! each such chain into one kernel. `TOONSMITH_GPU_LN=cube` ([`super::ln_ops::LnSums::Cube`]).
//!
//! Why: burn's untuned reduction gives each output one thread looping over the reduced axis, so
//! a long sum is one serial loop; [`super::ln_ops`] therefore sums in stages (rows, then
//! channels, then the sample), two to three launches per sum and several sums per LN (about 1000
//! reduction launches, 41 ms of an H200's 304 ms batch-8 training step, `docs/performance.md`,
//! session 17). Here each sum is the textbook two-level GPU reduction: a row of values (a sample,
//! or a (sample, channel) plane) is cut into chunks, one thread block per chunk, each thread
//! accumulating a strided (coalesced) subset in f32, the block's 256 partial sums added in
//! shared memory by a tree; a second launch adds each row's chunk results. The statistics take
//! one pass over memory: each block computes its chunk's mean and then the squared deviations
//! from it (the chunk is re-read from cache), and the second launch combines the chunks' means
//! and deviation sums exactly (Chan, Golub and LeVeque), so the variance has no
//! `E[x^2] - E[x]^2` cancellation; mean and variance come out of one operation, with no fills
//! or divisions around it (launches, not arithmetic, bound G's 256x256 forward on a GPU).

use burn::tensor::{Shape, Tensor, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::cube_op::{self, CubeKernel, Runtime};
use crate::device::Selected;

/// Threads per block (the shared-memory tree below is written for it).
const BLOCK: u32 = 256;
/// Fewest values a block sums when a row is cut into chunks.
const MIN_CHUNK: usize = 4096;
/// Blocks enough to keep a large GPU's multiprocessors busy (132 on an H100, several blocks
/// each); rows are cut into chunks until their blocks number about this many.
const TARGET_BLOCKS: usize = 1024;

/// The sum of `value` over the block's 256 threads (every thread gets it).
#[cube]
fn block_sum(value: f32) -> f32 {
    let mut partial = SharedMemory::<f32>::new(256usize);
    let unit = UNIT_POS_X as usize;
    partial[unit] = value;
    sync_cube();
    let mut stride = 128usize;
    while stride > 0 {
        if unit < stride {
            partial[unit] = partial[unit] + partial[unit + stride];
        }
        sync_cube();
        stride /= 2;
    }
    partial[0]
}

/// Where the chunk starting at `start` ends: `chunk` values later, or at the row's `len`.
#[cube]
fn chunk_end(start: usize, chunk: usize, len: usize) -> usize {
    let mut end = start + chunk;
    if end > len {
        end = len;
    }
    end
}

/// How many values chunk `part` of a row of `len` holds (the last one may be short).
#[cube]
fn chunk_count(part: usize, chunk: usize, len: usize) -> f32 {
    f32::cast_from(chunk_end(part * chunk, chunk, len) - part * chunk)
}

/// The sum over the block of `x[base + i]` for `i` in `start..end`, each thread adding a
/// strided (coalesced) part (every thread gets it).
#[cube]
fn strided_sum(x: &Array<f32>, base: usize, start: usize, end: usize) -> f32 {
    let mut acc = f32::new(0.0);
    let mut i = start + UNIT_POS_X as usize;
    while i < end {
        acc += x[base + i];
        i += CUBE_DIM_X as usize;
    }
    block_sum(acc)
}

/// Block `(part, row)` writes `out[row * parts + part]`, the sum of the row's values
/// `x[row * len + i]`, `i` in `[part * chunk, (part + 1) * chunk)` (clipped to `len`).
#[cube(launch)]
fn chunk_sums_kernel(x: &Array<f32>, out: &mut Array<f32>, len: u32, chunk: u32) {
    let part = CUBE_POS_X as usize;
    let row = CUBE_POS_Y as usize;
    let len = len as usize;
    let start = part * chunk as usize;
    let end = chunk_end(start, chunk as usize, len);
    let total = strided_sum(x, row * len, start, end);
    if UNIT_POS_X == 0 {
        out[row * CUBE_COUNT_X as usize + part] = total;
    }
}

/// Block `(part, row)`: the mean and the sum of squared deviations from it (`M2`) of its chunk
/// of row `row` (the values `x[row * len + i]`, `i` in `[part * chunk, (part + 1) * chunk)`
/// clipped to `len`), in two passes over the chunk (its mean, then the deviations: no
/// `E[x^2] - E[x]^2` cancellation). With `whole` (one chunk per row) it writes the row's
/// statistics, `mean[row]` and `var[row]` = `M2 / len` (the biased variance); else the chunk's
/// moments, `mean[row * parts + part]` and `var[...]` = its `M2`, for
/// [`combine_moments_kernel`].
#[cube(launch)]
fn chunk_moments_kernel(
    x: &Array<f32>,
    mean: &mut Array<f32>,
    var: &mut Array<f32>,
    len: u32,
    chunk: u32,
    #[comptime] whole: bool,
) {
    let part = CUBE_POS_X as usize;
    let row = CUBE_POS_Y as usize;
    let len = len as usize;
    let start = part * chunk as usize;
    let end = chunk_end(start, chunk as usize, len);
    let base = row * len;
    let count = f32::cast_from(end - start);
    let centre = strided_sum(x, base, start, end) / count;
    let mut dev = f32::new(0.0);
    let mut j = start + UNIT_POS_X as usize;
    while j < end {
        let d = x[base + j] - centre;
        dev += d * d;
        j += CUBE_DIM_X as usize;
    }
    let m2 = block_sum(dev);
    if UNIT_POS_X == 0 {
        if whole {
            mean[row] = centre;
            var[row] = m2 / count;
        } else {
            let at = row * CUBE_COUNT_X as usize + part;
            mean[at] = centre;
            var[at] = m2;
        }
    }
}

/// Block `row` (one per row, the grid's first dimension): the row's mean and biased variance
/// from its `parts` chunks' moments (Chan, Golub and LeVeque's combination: the mean is the
/// chunks' means weighted by their counts, `M2 = sum M2_i + sum n_i (mean_i - mean)^2`) in
/// `chunk_mean` and `chunk_m2`; writes `mean[row]` and `var[row]` = `M2 / len`.
#[cube(launch)]
fn combine_moments_kernel(
    chunk_mean: &Array<f32>,
    chunk_m2: &Array<f32>,
    mean: &mut Array<f32>,
    var: &mut Array<f32>,
    len: u32,
    chunk: u32,
    parts: u32,
) {
    let row = CUBE_POS_X as usize;
    let (len, chunk, parts) = (len as usize, chunk as usize, parts as usize);
    let base = row * parts;
    let mut acc = f32::new(0.0);
    let mut p = UNIT_POS_X as usize;
    while p < parts {
        acc += chunk_count(p, chunk, len) * chunk_mean[base + p];
        p += CUBE_DIM_X as usize;
    }
    let total = f32::cast_from(len);
    let centre = block_sum(acc) / total;
    let mut m2 = f32::new(0.0);
    let mut q = UNIT_POS_X as usize;
    while q < parts {
        let d = chunk_mean[base + q] - centre;
        m2 += chunk_m2[base + q] + chunk_count(q, chunk, len) * d * d;
        q += CUBE_DIM_X as usize;
    }
    let m2 = block_sum(m2);
    if UNIT_POS_X == 0 {
        mean[row] = centre;
        var[row] = m2 / total;
    }
}

/// For LN's backward, block `(part, row)` with `row = n * channels + c` sums over its chunk of
/// the plane `(n, c)` (`len` pixels) `g'` and `g' x^` (module doc of [`super::ln_ops`]):
/// `x^ = (x - mean[n]) inv_std[n]`, `g' = g`, times `slope` where `gamma[c] x^ + beta[c]` is not
/// above zero if `act`. Writes `sum_g[row * parts + part]` and `sum_gx[...]`.
///
/// (`act` is a compile-time switch: its `if` stays apart from the run-time test.)
#[cube(launch)]
#[allow(clippy::too_many_arguments, clippy::collapsible_if)]
fn grad_sums_kernel(
    x: &Array<f32>,
    g: &Array<f32>,
    mean: &Array<f32>,
    inv_std: &Array<f32>,
    gamma: &Array<f32>,
    beta: &Array<f32>,
    sum_g: &mut Array<f32>,
    sum_gx: &mut Array<f32>,
    len: u32,
    chunk: u32,
    channels: u32,
    slope: f32,
    #[comptime] act: bool,
) {
    let part = CUBE_POS_X as usize;
    let row = CUBE_POS_Y as usize;
    let channels = channels as usize;
    let (n, c) = (row / channels, row % channels);
    let (centre, scale) = (mean[n], inv_std[n]);
    let (weight, shift) = (gamma[c], beta[c]);
    let len = len as usize;
    let start = part * chunk as usize;
    let end = chunk_end(start, chunk as usize, len);
    let base = row * len;
    let mut acc_g = f32::new(0.0);
    let mut acc_gx = f32::new(0.0);
    let mut i = start + UNIT_POS_X as usize;
    while i < end {
        let x_hat = (x[base + i] - centre) * scale;
        let mut grad = g[base + i];
        if act {
            if weight * x_hat + shift <= f32::new(0.0) {
                grad *= slope;
            }
        }
        acc_g += grad;
        acc_gx += grad * x_hat;
        i += CUBE_DIM_X as usize;
    }
    let total_g = block_sum(acc_g);
    let total_gx = block_sum(acc_gx);
    if UNIT_POS_X == 0 {
        let at = row * CUBE_COUNT_X as usize + part;
        sum_g[at] = total_g;
        sum_gx[at] = total_gx;
    }
}

/// Most rows one launch sums: the rows are the grid's second dimension, at most 65535 blocks on
/// CUDA (and Vulkan's minimum).
const MAX_ROWS: usize = 65_535;

/// Whether the kernels take `rows` rows (samples for the statistics, samples times channels for
/// the backward's sums); beyond, LN sums by burn's ops.
pub fn takes_rows(rows: usize) -> bool {
    rows <= MAX_ROWS
}

/// How many chunks to cut each of `rows` rows of `len` values into: blocks enough for the GPU
/// ([`TARGET_BLOCKS`]) but none summing fewer than [`MIN_CHUNK`] values (at least one chunk).
fn parts(rows: usize, len: usize) -> usize {
    let wanted = TARGET_BLOCKS.div_ceil(rows.max(1));
    wanted.min(len.div_ceil(MIN_CHUNK)).max(1)
}

/// The operation of [`chunk_sums_kernel`]: input `[sums]` (`[rows, len]`), output `[rows, parts]`.
#[derive(Debug)]
struct ChunkSums {
    rows: usize,
    len: usize,
    parts: usize,
}

impl CubeKernel for ChunkSums {
    fn run(&self, inputs: Vec<CubeTensor<Runtime>>) -> Vec<CubeTensor<Runtime>> {
        let [x] = contiguous(inputs);
        let out = empty_like(&x, [self.rows, self.parts]);
        chunk_sums_kernel::launch::<Runtime>(
            &x.client.clone(),
            CubeCount::Static(self.parts as u32, self.rows as u32, 1),
            CubeDim::new_1d(BLOCK),
            x.into_array_arg(),
            out.clone().into_array_arg(),
            self.len as u32,
            self.len.div_ceil(self.parts) as u32,
        );
        vec![out]
    }
}

/// The operation of [`chunk_moments_kernel`] (and [`combine_moments_kernel`] when a row is
/// cut into several chunks): input `[x]` (`rows` rows of `len` values), outputs the means and
/// the biased variances, `[rows]` each.
#[derive(Debug)]
struct Moments {
    rows: usize,
    len: usize,
    parts: usize,
}

impl CubeKernel for Moments {
    fn run(&self, inputs: Vec<CubeTensor<Runtime>>) -> Vec<CubeTensor<Runtime>> {
        let [x]: [CubeTensor<Runtime>; 1] = inputs
            .try_into()
            .unwrap_or_else(|_| unreachable!("registered with x"));
        // A row's statistics do not depend on the order of its values: a row stored as one
        // dense block in any order (a convolution's channels-last output seen as NCHW) is read
        // as it is, without the copy into NCHW order.
        let x = if dense_rows(x.meta.shape(), x.meta.strides()) {
            x
        } else {
            into_contiguous(x)
        };
        let client = x.client.clone();
        let (len, chunk) = (self.len as u32, self.len.div_ceil(self.parts) as u32);
        let grid = CubeCount::Static(self.parts as u32, self.rows as u32, 1);
        let block = CubeDim::new_1d(BLOCK);
        let [mean, var] = [(); 2].map(|_| empty_like(&x, [self.rows, 1, 1, 1]));
        // One chunk per row: the first kernel writes the statistics themselves.
        let whole = self.parts == 1;
        let chunks = if whole {
            [mean.clone(), var.clone()]
        } else {
            [(); 2].map(|_| empty_like(&x, [self.rows, self.parts]))
        };
        let [m, v] = chunks.each_ref().map(|t| t.clone().into_array_arg());
        chunk_moments_kernel::launch::<Runtime>(
            &client,
            grid,
            block,
            x.into_array_arg(),
            m,
            v,
            len,
            chunk,
            whole,
        );
        if whole {
            return vec![mean, var];
        }
        let [chunk_mean, chunk_m2] = chunks.map(|t| t.into_array_arg());
        let [m, v] = [&mean, &var].map(|t| t.clone().into_array_arg());
        combine_moments_kernel::launch::<Runtime>(
            &client,
            CubeCount::Static(self.rows as u32, 1, 1),
            block,
            chunk_mean,
            chunk_m2,
            m,
            v,
            len,
            chunk,
            self.parts as u32,
        );
        vec![mean, var]
    }
}

/// The operation of [`grad_sums_kernel`]: inputs `[x, g, mean, inv_std, gamma, beta]`, outputs
/// `[N * C, parts]` twice.
#[derive(Debug)]
struct GradSums {
    dims: [usize; 4],
    parts: usize,
    slope: Option<f64>,
}

impl CubeKernel for GradSums {
    fn run(&self, inputs: Vec<CubeTensor<Runtime>>) -> Vec<CubeTensor<Runtime>> {
        let [x, g, mean, inv_std, gamma, beta] = contiguous(inputs);
        let [n, c, h, w] = self.dims;
        let len = h * w;
        let sum_g = empty_like(&x, [n * c, self.parts]);
        let sum_gx = empty_like(&x, [n * c, self.parts]);
        grad_sums_kernel::launch::<Runtime>(
            &x.client.clone(),
            CubeCount::Static(self.parts as u32, (n * c) as u32, 1),
            CubeDim::new_1d(BLOCK),
            x.into_array_arg(),
            g.into_array_arg(),
            mean.into_array_arg(),
            inv_std.into_array_arg(),
            gamma.into_array_arg(),
            beta.into_array_arg(),
            sum_g.clone().into_array_arg(),
            sum_gx.clone().into_array_arg(),
            len as u32,
            len.div_ceil(self.parts) as u32,
            c as u32,
            self.slope.unwrap_or(1.0) as f32,
            self.slope.is_some(),
        );
        vec![sum_g, sum_gx]
    }
}

/// Whether a tensor of `shape` and `strides` stores each row (index along the first axis) as
/// one dense block of its binding, `row * len..(row + 1) * len` with `len` the product of the
/// other axes, in some order of its values: sorted by stride (size-1 axes aside), each axis's
/// stride is the span of those before it (no gaps, no two indices in one place), and the first
/// axis's stride is `len` (or there is one row). (A slice's offset is the binding's, so the
/// blocks start there.)
fn dense_rows(shape: &[usize], strides: &[usize]) -> bool {
    let len: usize = shape[1..].iter().product();
    let mut axes: Vec<(usize, usize)> = shape
        .iter()
        .copied()
        .zip(strides.iter().copied())
        .filter(|&(size, _)| size > 1)
        .collect();
    axes.sort_by_key(|&(_, stride)| stride);
    let mut span = 1;
    for (size, stride) in axes {
        if stride != span {
            return false;
        }
        span *= size;
    }
    shape[0] <= 1 || strides[0] == len
}

/// The inputs, contiguous (the kernels index them flat), as an array of `K`.
fn contiguous<const K: usize>(inputs: Vec<CubeTensor<Runtime>>) -> [CubeTensor<Runtime>; K] {
    let inputs: Vec<_> = inputs.into_iter().map(into_contiguous).collect();
    match inputs.try_into() {
        Ok(inputs) => inputs,
        Err(_) => unreachable!("registered with {K} inputs"),
    }
}

/// An uninitialised f32 tensor of `dims` on `like`'s device.
fn empty_like<const D: usize>(like: &CubeTensor<Runtime>, dims: [usize; D]) -> CubeTensor<Runtime> {
    empty_device_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::new(dims),
        like.dtype,
    )
}

fn primitive<const D: usize>(t: Tensor<Selected, D>) -> burn::tensor::ops::FloatTensor<Selected> {
    t.into_primitive().tensor()
}

fn tensor<const D: usize>(t: burn::tensor::ops::FloatTensor<Selected>) -> Tensor<Selected, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// Each row's total of its chunk sums (`[rows, parts]` -> `[rows]`): the sums themselves when a
/// row was one chunk, else one more launch (per [`parts`] level).
fn chunks_total(sums: Tensor<Selected, 2>) -> Tensor<Selected, 1> {
    let [rows, len] = sums.dims();
    if len == 1 {
        return sums.reshape([rows]);
    }
    let parts = parts(rows, len);
    let op = ChunkSums { rows, len, parts };
    let shape = Shape::new([rows, parts]);
    let name = "toonsmith_ln_chunk_sums";
    chunks_total(tensor(cube_op::register_one(
        name,
        vec![primitive(sums)],
        shape,
        op,
    )))
}

/// Biased variance and mean of each sample over (C, H, W), `[N, 1, 1, 1]` each: one launch
/// when a sample is one chunk, else two ([`chunk_moments_kernel`], [`combine_moments_kernel`]).
/// `x` is read as it is stored (not reshaped: a reshape of a channels-last view would copy
/// it, [`dense_rows`]).
pub fn sample_var_mean(x: Tensor<Selected, 4>) -> (Tensor<Selected, 4>, Tensor<Selected, 4>) {
    let [n, c, h, w] = x.dims();
    let len = c * h * w;
    let op = Moments {
        rows: n,
        len,
        parts: parts(n, len),
    };
    let shapes = vec![Shape::new([n, 1, 1, 1]); 2];
    let [mean, var] = cube_op::register("toonsmith_ln_moments", vec![primitive(x)], shapes, op)
        .try_into()
        .unwrap_or_else(|_| unreachable!("registered with two outputs"));
    (tensor(var), tensor(mean))
}

/// LN's backward sums per (sample, channel) over the pixels, `[N, C]` each: of `g'` and of
/// `g' x^` (module doc of [`super::ln_ops`]), from the input `x`, the upstream gradient `g`,
/// `gamma` and `beta` (`[C]`), each sample's mean and `1 / std` (`[N, 1, 1, 1]`) and the leaky
/// ReLU's slope if any.
pub fn channel_sums(
    x: Tensor<Selected, 4>,
    g: Tensor<Selected, 4>,
    (gamma, beta): (Tensor<Selected, 1>, Tensor<Selected, 1>),
    (mean, inv_std): (Tensor<Selected, 4>, Tensor<Selected, 4>),
    slope: Option<f64>,
) -> (Tensor<Selected, 2>, Tensor<Selected, 2>) {
    let dims @ [n, c, h, w] = x.dims();
    let parts = parts(n * c, h * w);
    let op = GradSums { dims, parts, slope };
    let inputs = vec![
        primitive(x),
        primitive(g),
        primitive(mean.reshape([n])),
        primitive(inv_std.reshape([n])),
        primitive(gamma),
        primitive(beta),
    ];
    let shape = Shape::new([n * c, parts]);
    let [sum_g, sum_gx] = cube_op::register("toonsmith_ln_grad_sums", inputs, vec![shape; 2], op)
        .try_into()
        .unwrap_or_else(|_| unreachable!("registered with two outputs"));
    let total = |sums| chunks_total(tensor::<2>(sums)).reshape([n, c]);
    (total(sum_g), total(sum_gx))
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::device::{default_device, CpuBackend, CPU};
    use crate::kernels::ln_ops;
    use burn::tensor::{Distribution, ElementConversion};

    fn here<const D: usize>(t: &Tensor<CpuBackend, D>) -> Tensor<Selected, D> {
        Tensor::from_data(t.to_data(), &default_device())
    }

    fn back<const D: usize>(t: Tensor<Selected, D>) -> Tensor<CpuBackend, D> {
        Tensor::from_data(t.into_data(), &CPU)
    }

    fn max_rel<const D: usize>(got: Tensor<CpuBackend, D>, want: Tensor<CpuBackend, D>) -> f32 {
        let scale: f32 = want.clone().abs().max().into_scalar().elem();
        let diff: f32 = (got - want).abs().max().into_scalar().elem();
        diff / scale.max(1e-12)
    }

    /// Chunk counts: one chunk for short rows, many blocks for few long rows, never a chunk
    /// below the minimum.
    #[test]
    fn rows_are_cut_into_enough_chunks() {
        assert_eq!(parts(8, 100), 1);
        assert_eq!(parts(1, 66_355_200), TARGET_BLOCKS);
        assert_eq!(parts(8, 2_097_152), TARGET_BLOCKS / 8);
        assert_eq!(parts(256, 65_536), 4);
        assert!(65_536usize.div_ceil(parts(2, 65_536)) >= MIN_CHUNK);
        assert!(takes_rows(8 * 256) && takes_rows(MAX_ROWS) && !takes_rows(MAX_ROWS + 1));
    }

    /// The kernels' statistics equal the staged ones on the CPU, for shapes whose rows are one
    /// chunk, several chunks with a short last one, an offset far from zero (two-pass), and
    /// chunks with different means (their combination);
    /// from NCHW tensors and from channels-last ones seen as NCHW (a convolution's output),
    /// whose rows the kernel reads in place.
    #[test]
    fn statistics_equal_the_cpus() {
        for (dims, offset, ramp) in [
            ([2, 3, 5, 7], 0.0, 0.0),
            ([3, 8, 61, 67], 0.0, 0.0),
            ([1, 4, 129, 130], 100.0, 0.0),
            ([2, 2, 200, 100], 0.0, 0.05),
        ] {
            let x = Tensor::<CpuBackend, 4>::random(dims, Distribution::Normal(offset, 2.0), &CPU);
            // Chunks whose means differ (rows rising by `ramp`): the combination's spread term.
            let rows = Tensor::<CpuBackend, 1, burn::tensor::Int>::arange(0..dims[2] as i64, &CPU);
            let x = x + rows.float().reshape([1, 1, dims[2], 1]).mul_scalar(ramp);
            let (want_var, want_mean) = ln_ops::sample_var_mean(x.clone());
            let channels_last = here(&x.clone().permute([0, 2, 3, 1])).permute([0, 3, 1, 2]);
            for (layout, x) in [("NCHW", here(&x)), ("NHWC", channels_last)] {
                let (var, mean) = sample_var_mean(x);
                assert!(
                    max_rel(back(mean), want_mean.clone()) < 1e-5,
                    "{dims:?} {layout} mean"
                );
                assert!(
                    max_rel(back(var), want_var.clone()) < 1e-4,
                    "{dims:?} {layout} var"
                );
            }
        }
    }

    /// Rows read in place: dense layouts in any order with the rows outermost; not a slice of
    /// a larger buffer, a broadcast, or rows interleaved with other axes.
    #[test]
    fn dense_rows_are_told_apart() {
        let shape = [2, 3, 4, 5];
        assert!(dense_rows(&shape, &[60, 20, 5, 1]), "NCHW");
        assert!(dense_rows(&shape, &[60, 1, 15, 3]), "NHWC seen as NCHW");
        assert!(
            dense_rows(&[1, 3, 4, 5], &[7, 1, 15, 3]),
            "one row, any stride"
        );
        assert!(!dense_rows(&shape, &[1, 2, 30, 6]), "rows innermost");
        assert!(!dense_rows(&shape, &[60, 20, 5, 0]), "broadcast");
        assert!(!dense_rows(&shape, &[60, 20, 6, 1]), "padded rows");
        assert!(!dense_rows(&shape, &[120, 20, 5, 1]), "every other row");
    }

    /// The backward's sums equal the same sums by burn's ops on the CPU, with and without the
    /// leaky ReLU, over one chunk and several.
    #[test]
    fn channel_sums_equal_the_cpus() {
        for (dims, slope) in [
            ([2, 3, 5, 7], Some(0.2)),
            ([3, 5, 70, 90], Some(0.2)),
            ([2, 4, 64, 65], None),
        ] {
            let [n, c, _, _] = dims;
            let x = Tensor::<CpuBackend, 4>::random(dims, Distribution::Normal(0.5, 2.0), &CPU);
            let g = Tensor::<CpuBackend, 4>::random(dims, Distribution::Default, &CPU);
            let gamma = Tensor::<CpuBackend, 1>::random([c], Distribution::Normal(1.0, 0.5), &CPU);
            let beta = Tensor::<CpuBackend, 1>::random([c], Distribution::Default, &CPU);
            let (var, mean) = ln_ops::sample_var_mean(x.clone());
            let inv_std = var.add_scalar(1e-5).sqrt().recip();
            let (want_g, want_gx) = ln_ops::channel_sums_by_ops(
                x.clone(),
                g.clone(),
                (gamma.clone(), beta.clone()),
                (mean.clone(), inv_std.clone()),
                slope,
            );
            let (sum_g, sum_gx) = channel_sums(
                here(&x),
                here(&g),
                (here(&gamma), here(&beta)),
                (here(&mean), here(&inv_std)),
                slope,
            );
            assert_eq!(sum_g.dims(), [n, c]);
            assert!(max_rel(back(sum_g), want_g) < 1e-4, "{dims:?} sum g'");
            assert!(max_rel(back(sum_gx), want_gx) < 1e-4, "{dims:?} sum g' x^");
        }
    }
}
