#!/usr/bin/env python3
"""Toom-Cook matrices of 1-D Winograd filters F(m, r) and their f32 rounding error.

    python3 scripts/winograd_points.py          (needs numpy)

Derives B^T, G and A^T exactly (rational arithmetic) from a set of finite points plus infinity
the way src/kernels/winograd4.rs and winograd_rows.rs build theirs, checks the identity
A^T [(G g) . (B^T d)] = (g * d)[0..m] exactly, and simulates in f32 a sum of 448 such terms
(64 input channels x 7 kernel rows: G's 7x7 tail) against f64, to choose the points: the
largest error over 2000 random tiles. It printed (session 24): F(2, 7) 2.9e-6; F(4, 7) with
±3/2 2.5e-5, with ±3 4.6e-5, with ±1/4 7.2e-5; F(4, 3) 3.5e-6; F(4, 2) 2.7e-6; outputs of
about 1.
"""
from fractions import Fraction as F
import random

import numpy as np


def poly_mul(p, q):
    out = [F(0)] * (len(p) + len(q) - 1)
    for i, x in enumerate(p):
        for j, y in enumerate(q):
            out[i + j] += x * y
    return out


def matrices(points, m, r):
    """B^T (a x a), G (a x r), A^T (m x a) for the finite `points` and infinity."""
    a = len(points) + 1
    bt = []
    for p in range(len(points)):
        c = [F(1)]
        for l, x in enumerate(points):
            if l != p:
                c = poly_mul(c, [-x, F(1)])
        bt.append(c + [F(0)] * (a - len(c)))
    c = [F(1)]
    for x in points:
        c = poly_mul(c, [-x, F(1)])
    bt.append(c)
    g = []
    for p, x in enumerate(points):
        f = F(1)
        for l, y in enumerate(points):
            if l != p:
                f *= x - y
        g.append([x ** k / f for k in range(r)])
    g.append([F(int(k == r - 1)) for k in range(r)])
    at = [[x ** i for x in points] + [F(int(i == m - 1))] for i in range(m)]
    return bt, g, at


def exact(bt, g, at, m, r):
    a = m + r - 1
    taps = [F(random.randint(-9, 9)) for _ in range(r)]
    d = [F(random.randint(-9, 9)) for _ in range(a)]
    for i in range(m):
        got = sum(at[i][p] * sum(g[p][k] * taps[k] for k in range(r))
                  * sum(bt[p][j] * d[j] for j in range(a)) for p in range(a))
        if got != sum(taps[k] * d[i + k] for k in range(r)):
            return False
    return True


def f32_error(points, m, r, terms=448, tiles=2000, seed=0):
    bt, g, at = (np.array([[float(x) for x in row] for row in mat]) for mat in matrices(points, m, r))
    rng = np.random.default_rng(seed)
    a = m + r - 1
    d = rng.uniform(-1, 1, (tiles, terms, a)).astype(np.float32)
    taps = (rng.uniform(-1, 1, (terms, r)) / np.sqrt(terms * r)).astype(np.float32)
    u = (taps.astype(np.float64) @ g.T).astype(np.float32)
    v = np.einsum('pj,tcj->tcp', bt.astype(np.float32), d)
    y = np.einsum('ip,tp->ti', at.astype(np.float32), np.einsum('cp,tcp->tp', u, v))
    windows = np.stack([d[:, :, i:i + r] for i in range(m)], 2).astype(np.float64)
    want = np.einsum('ck,tcik->ti', taps.astype(np.float64), windows)
    return float(np.abs(y - want).max())


def main():
    base = [F(0), F(1), F(-1), F(2), F(-2), F(1, 2), F(-1, 2)]
    candidates = [("F(2, 7)", base, 2, 7)] + [
        (f"F(4, 7) with ±{x}", base + [x, -x], 4, 7) for x in (F(3, 2), F(3), F(1, 4))]
    candidates += [("F(4, 3)", base[:5], 4, 3), ("F(4, 2)", base[:3] + [F(1, 2)], 4, 2)]
    for name, points, m, r in candidates:
        ok = exact(*matrices(points, m, r), m, r)
        print(f"{name}: identity {'exact' if ok else 'WRONG'}, f32 error {f32_error(points, m, r):.2g}")


if __name__ == "__main__":
    main()
