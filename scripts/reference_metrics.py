"""NumPy/SciPy reference for toonsmith's FID and KID (tests/metrics.rs).

Writes tests/fixtures/metrics_features.safetensors (two correlated Gaussian feature sets and
the distances computed here) and tests/fixtures/metrics_stats.npz (pytorch-fid's format,
written by numpy.savez). The Fréchet distance follows pytorch-fid's calculate_frechet_distance
(scipy.linalg.sqrtm); KID follows torch-fidelity's unbiased MMD^2 with the cubic kernel.

    pip install numpy scipy safetensors && python3 scripts/reference_metrics.py
"""
import os
import numpy as np
from scipy import linalg
from safetensors.numpy import save_file

HERE = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


def frechet(mu1, s1, mu2, s2):
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def mmd2(x, y):
    d = x.shape[1]
    m = x.shape[0]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    a = kxx + kyy
    return ((a.sum() - np.diag(a).sum()) / (m - 1) - kxy.sum() * 2 / m) / m


def main():
    rng = np.random.default_rng(5)
    d, n = 64, 200
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    a = (rng.normal(size=(n, d)) @ mix).astype(np.float32)
    b = (rng.normal(size=(n, d)) @ (mix * 1.3) + 0.2).astype(np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    mu1, s1 = a64.mean(0), np.cov(a64, rowvar=False)
    mu2, s2 = b64.mean(0), np.cov(b64, rowvar=False)
    save_file({
        "a": a, "b": b,
        "fid": np.array([frechet(mu1, s1, mu2, s2)]),
        "kid": np.array([mmd2(a64, b64)]),
        "mu_a": mu1, "sigma_a": s1,
    }, os.path.join(HERE, "metrics_features.safetensors"))
    np.savez(os.path.join(HERE, "metrics_stats.npz"), mu=mu1, sigma=s1)
    print("fid", frechet(mu1, s1, mu2, s2), "kid", mmd2(a64, b64))


if __name__ == "__main__":
    main()
