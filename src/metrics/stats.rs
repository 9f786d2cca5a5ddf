//! Feature statistics and the Fréchet distance (Heusel et al. 2017), in f64 as pytorch-fid and
//! scipy compute them.

use nalgebra::{DMatrix, DVector, SymmetricEigen};

/// Streaming mean and covariance of feature vectors: memory O(d^2), any number of batches.
#[derive(Clone, Debug)]
pub struct FeatureStats {
    count: usize,
    sum: DVector<f64>,
    outer: DMatrix<f64>,
}

/// Mean and (unbiased, `N - 1`) covariance of a feature set, as pytorch-fid's `mu`, `sigma`.
#[derive(Clone, Debug, PartialEq)]
pub struct Gaussian {
    /// Mean, `d`.
    pub mu: DVector<f64>,
    /// Covariance, `d x d`.
    pub sigma: DMatrix<f64>,
    /// Number of feature vectors it was estimated from (0 if unknown, e.g. read from `.npz`).
    pub count: usize,
}

impl FeatureStats {
    /// Empty statistics of `dim`-dimensional features.
    pub fn new(dim: usize) -> Self {
        Self {
            count: 0,
            sum: DVector::zeros(dim),
            outer: DMatrix::zeros(dim, dim),
        }
    }

    /// Adds a batch of features, row-major `[n, dim]`.
    pub fn add(&mut self, features: &[f32]) {
        let dim = self.sum.len();
        let n = features.len() / dim;
        let batch = DMatrix::from_row_iterator(n, dim, features.iter().map(|&v| v as f64));
        self.sum += batch.row_sum().transpose();
        self.outer += batch.transpose() * &batch;
        self.count += n;
    }

    /// Feature vectors added so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Mean and unbiased covariance (`numpy.cov(rowvar=False)`).
    pub fn gaussian(&self) -> Gaussian {
        let n = self.count as f64;
        let mu = &self.sum / n.max(1.0);
        let sigma = (&self.outer - &mu * mu.transpose() * n) / (n - 1.0).max(1.0);
        Gaussian {
            mu,
            sigma,
            count: self.count,
        }
    }
}

fn symmetric_sqrt(m: &DMatrix<f64>) -> DMatrix<f64> {
    let eigen = SymmetricEigen::new(m.clone());
    let roots = eigen.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eigen.eigenvectors * DMatrix::from_diagonal(&roots) * eigen.eigenvectors.transpose()
}

/// Fréchet distance `|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))`.
///
/// `tr((S1 S2)^(1/2))` is computed as `sum sqrt(eig(S1^(1/2) S2 S1^(1/2)))`, a symmetric
/// positive semi-definite matrix similar to `S1 S2`, so the trace is the same as scipy's
/// `sqrtm(S1 @ S2)` gives, without its complex round-off.
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> f64 {
    let diff = &a.mu - &b.mu;
    let root = symmetric_sqrt(&a.sigma);
    let inner = &root * &b.sigma * &root;
    let inner = (&inner + inner.transpose()) * 0.5;
    let tr_covmean: f64 = SymmetricEigen::new(inner)
        .eigenvalues
        .iter()
        .map(|l| l.max(0.0).sqrt())
        .sum();
    diff.dot(&diff) + a.sigma.trace() + b.sigma.trace() - 2.0 * tr_covmean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_gaussians_have_the_closed_form() {
        // FD = |mu1-mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2 for diagonal covariances.
        let a = Gaussian {
            mu: DVector::from_vec(vec![0.0, 1.0, 2.0]),
            sigma: DMatrix::from_diagonal(&DVector::from_vec(vec![1.0, 4.0, 9.0])),
            count: 0,
        };
        let b = Gaussian {
            mu: DVector::from_vec(vec![1.0, 1.0, 0.0]),
            sigma: DMatrix::from_diagonal(&DVector::from_vec(vec![4.0, 1.0, 0.25])),
            count: 0,
        };
        let expected = 1.0 + 4.0 + (1.0f64 + 1.0 + 6.25);
        assert!((frechet_distance(&a, &b) - expected).abs() < 1e-10);
        assert!(frechet_distance(&a, &a).abs() < 1e-10);
    }

    #[test]
    fn streaming_matches_one_batch() {
        let features: Vec<f32> = (0..40).map(|i| ((i * 37 % 11) as f32).sin()).collect();
        let mut whole = FeatureStats::new(4);
        whole.add(&features);
        let mut parts = FeatureStats::new(4);
        parts.add(&features[..16]);
        parts.add(&features[16..]);
        let (a, b) = (whole.gaussian(), parts.gaussian());
        assert!((a.sigma - b.sigma).abs().max() < 1e-12 && (a.mu - b.mu).abs().max() < 1e-12);
    }
}
