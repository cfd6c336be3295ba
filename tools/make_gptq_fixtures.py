#!/usr/bin/env python3
"""make_gptq_fixtures.py: tests/data/quant/gptq.json, the reference GPTQ
rounding of one small problem for tests/c/test_gptq.c, computed with numpy
in fp64 from GPTQ's published formulation (Frantar et al. 2022, Algorithm
1 without lazy batches: U = chol(H^-1) upper, each column's error
(w_j - q_j) / U_jj moved onto the later columns along U's row j), which is
not the formulation src/quant/gptq.c uses (the upper Cholesky factor of H
itself): the test checks that both choose (almost) the same codes.

The problem is generated, not stored: X [T, K] and W [N, K] come from a
64-bit LCG whose values are multiples of 2^-10, combined so that every
fp32 value is exact (the C test rebuilds them bit for bit):
    z(t, k) = ((s >> 33) % 2001 - 1000) / 1024, s the LCG, row-major
    X[t, k] = (1 + k % 5) * (z(t, k) + z(t, (k + 1) % K) / 2 + z(t, 0) / 4), column DEAD all 0
    W[r, k] = ((s >> 33) % 2001 - 1000) / 1024, continuing the same LCG
H = X^T X; act order (decreasing H_jj, stable), dampening 1% of the mean
diagonal, a dead column's H_jj set to 1. Scales as round to nearest
(docs/quantization.md): s = max|w| / 127 (int8) or / 448 (fp8 e4m3).

Writes the codes (hex, row-major) and, per format, the output error
sum_r (w_r - q_r s_r) H (w_r - q_r s_r)^T of GPTQ and of round to nearest.

Usage: python3 tools/make_gptq_fixtures.py
"""
import json
import os

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.path.join(ROOT, "tests", "data", "quant", "gptq.json")
N, K, T, DEAD, SEED = 24, 200, 300, 7, 12345
MASK = (1 << 64) - 1


class Lcg:
    def __init__(self, seed):
        self.s = seed

    def next(self):
        self.s = (self.s * 6364136223846793005 + 1442695040888963407) & MASK
        return ((self.s >> 33) % 2001 - 1000) / 1024.0


def problem():
    g = Lcg(SEED)
    z = np.array([[g.next() for _ in range(K)] for _ in range(T)])
    X = np.zeros((T, K))
    for k in range(K):
        X[:, k] = (1 + k % 5) * (z[:, k] + z[:, (k + 1) % K] / 2 + z[:, 0] / 4)
    X[:, DEAD] = 0
    W = np.array([[g.next() for _ in range(K)] for _ in range(N)])
    assert np.array_equal(X.astype(np.float32), X) and np.array_equal(W.astype(np.float32), W)
    return X, W


def e4m3(v):
    """Nearest-even e4m3fn value of v (|v| <= 448 after saturation)."""
    v = np.clip(v, -448.0, 448.0)
    a = np.abs(v)
    e = np.maximum(np.floor(np.log2(np.maximum(a, 2.0 ** -9))), -6)
    step = 2.0 ** (e - 3)
    return np.sign(v) * np.round(a / step) * step


def e4m3_byte(x):
    """The e4m3fn byte of an exactly representable value x."""
    sign = 0x80 if x < 0 else 0
    a = abs(x)
    if a < 2.0 ** -6:
        return sign | int(round(a / 2.0 ** -9))
    e = int(np.floor(np.log2(a)))
    m = int(round((a / 2.0 ** e - 1) * 8))
    return sign | ((e + 7) << 3) | m


def code(v, fmt):
    """(code bytes, integer-or-e4m3 values) of v in units of the scale."""
    if fmt == "int8":
        c = np.clip(np.round(v), -127, 127)
        return c.astype(np.int8).view(np.uint8), c
    c = e4m3(v)
    return np.array([e4m3_byte(x) for x in c.ravel()], dtype=np.uint8).reshape(c.shape), c


def gptq(W, H, fmt):
    H = H.copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    scale = np.abs(W).astype(np.float32).max(1) / np.float32(127 if fmt == "int8" else 448)
    s = scale.astype(np.float64)
    order = np.argsort(-np.diag(H), kind="stable")
    Hp = H[order][:, order] + 0.01 * np.mean(np.diag(H)) * np.eye(K)
    U = np.linalg.cholesky(np.linalg.inv(Hp)).T
    w = W[:, order].copy()
    codes = np.zeros((N, K), dtype=np.uint8)
    values = np.zeros((N, K))
    for j in range(K):
        c, v = code(w[:, j] / s, fmt)
        codes[:, order[j]] = c
        values[:, order[j]] = v * s
        err = (w[:, j] - v * s) / U[j, j]
        w[:, j + 1:] -= np.outer(err, U[j, j + 1:])
    return codes, values, scale


def objective(W, values, H):
    D = W - values
    return float(np.einsum("rk,kl,rl->", D, H, D))


def main():
    X, W = problem()
    H = X.T @ X
    out = {"about": __doc__.split("\n")[0], "N": N, "K": K, "T": T, "dead": DEAD, "seed": SEED, "formats": {}}
    for fmt in ("int8", "fp8"):
        codes, values, scale = gptq(W, H, fmt)
        # round to nearest exactly as the C quantiser: w / s divided in fp32
        _, rtn = code((W.astype(np.float32) / scale[:, None]).astype(np.float64), fmt)
        out["formats"][fmt] = {"codes": codes.tobytes().hex(), "objective": objective(W, values, H),
                               "objective_nearest": objective(W, rtn * scale[:, None].astype(np.float64), H)}
        f = out["formats"][fmt]
        print(f"{fmt}: GPTQ output error {f['objective']:.4f}, round to nearest {f['objective_nearest']:.4f}")
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
