"""Reference encoders written by hand from each format's documented math, in float64 numpy,
plus the check every architecture must pass (whole, by feature range, in small blocks)."""

from __future__ import annotations

import numpy as np
import torch

TOL = 1e-5
FORMAT_D_IN, FORMAT_F = 12, 40  # sizes of the SAE-format tests' random weights


def random_weights(d_in: int, n: int, seed: int = 1) -> dict[str, np.ndarray]:
    """SAELens-named tensors; decoder rows of unequal norms (so decoder-norm rescaling shows)."""
    rng = np.random.default_rng(seed)
    return {
        "W_enc": rng.standard_normal((d_in, n)).astype(np.float32),
        "b_enc": (0.3 * rng.standard_normal(n)).astype(np.float32),
        "W_dec": (rng.uniform(0.5, 2.0, (n, 1)) * rng.standard_normal((n, d_in))).astype(np.float32),
        "b_dec": (0.5 * rng.standard_normal(d_in)).astype(np.float32),
        "threshold": np.abs(rng.standard_normal(n)).astype(np.float32),
    }


def random_inputs(n: int, d_in: int, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d_in)).astype(np.float32)


def pre(x, W_enc, b_enc, *, b_dec=None):
    x = np.asarray(x, dtype=np.float64)
    if b_dec is not None:
        x = x - b_dec
    return x @ W_enc + (0 if b_enc is None else b_enc)


def relu(p):
    return np.maximum(p, 0.0)


def jumprelu(p, threshold):
    return np.where(p > threshold, np.maximum(p, 0.0), 0.0)


def topk(p, k):
    out = np.zeros_like(p)
    rows = np.arange(len(p))[:, None]
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    out[rows, top] = np.maximum(p[rows, top], 0.0)
    return out


def abstopk(p, k):
    out = np.zeros_like(p)
    rows = np.arange(len(p))[:, None]
    top = np.argsort(-np.abs(p), axis=1, kind="stable")[:, :k]
    out[rows, top] = p[rows, top]
    return out


def sides(signed, signs=("pos", "neg")):
    """Each latent's positive and negative sides as separate features (pos block first)."""
    return np.concatenate([np.maximum(signed if s == "pos" else -signed, 0.0) for s in signs], axis=1)


def gated(x, W_enc, b_gate, b_mag, r_mag, b_dec=None):
    h = pre(x, W_enc, None, b_dec=b_dec)
    return (h + b_gate > 0) * np.maximum(h * np.exp(r_mag) + b_mag, 0.0)


def groupmax(p, k):
    n, F = p.shape
    g = F // k
    out = np.zeros_like(p)
    r = np.maximum(p, 0.0).reshape(n, k, g)
    arg = r.argmax(-1)
    for gi in range(k):
        out[np.arange(n), gi * g + arg[:, gi]] = r[np.arange(n), gi, arg[:, gi]]
    return out


def dense(enc, x, features=None, block=None):
    kw = {} if block is None else {"block": block}
    return enc.encode(torch.as_tensor(np.asarray(x, dtype=np.float32)), features, **kw).to_dense().double().numpy()


def check(enc, x, ref) -> None:
    """The encoder equals the reference on all features, and on feature ranges encoded in
    blocks smaller than the range (the Encoder.encode contract)."""
    ref = np.asarray(ref)
    assert enc.n_features == ref.shape[1]
    assert np.abs(ref).sum() > 0 and (ref == 0).any(), "a reference that tests nothing"
    np.testing.assert_allclose(dense(enc, x), ref, rtol=TOL, atol=TOL)
    F = ref.shape[1]
    for a, b in ((0, F), (3, F // 2 + 1), (F - 4, F)):
        np.testing.assert_allclose(dense(enc, x, (a, b), block=5), ref[:, a:b], rtol=TOL, atol=TOL,
                                   err_msg=f"features [{a}, {b})")
