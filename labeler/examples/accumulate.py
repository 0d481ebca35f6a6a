"""One streaming pass over windows, all features at once, in memory bounded by F x examples.

Every window goes to one split (train / valid / test) by a seeded hash of its id, so held-out
and explainer examples never share a window. Each split keeps its own reservoirs:

- ``top``: exact top-K windows by max activation (key = the window's max activation);
- ``random``: a uniform sample of activating windows (key = hash(window, feature, seed)),
  independent of batch boundaries, so a resumed run ends in exactly the same state;
- ``nonactivating``: a uniform sample of windows where the feature's max is <= 0.

A reservoir merges a batch with one ``topk`` over [F, K + B] keys and then copies per-token
activations only for the entries that changed: the evicted slots and the new candidates, paired
up per feature (each row has as many of one as of the other). Quantile-stratified samples are
chosen from the random reservoir when the store is read (see ``store.quantile_strata``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from labeler.activations.sae import Encoded

SPLITS = ("train", "valid", "test")
_P = 2_147_483_647  # 2**31 - 1: products of two values below it fit in int64
HIST_EDGES = np.concatenate([[0.0], np.logspace(-3, 3, 25)]).astype(np.float32)  # 25 bins over (0, inf)


@dataclass(frozen=True)
class SplitSizes:
    top: int
    random: int
    nonactivating: int


# train feeds the explainer (more random context), valid reranks best-of-N, test is for scoring.
DEFAULT_SIZES: dict[str, SplitSizes] = {
    "train": SplitSizes(top=20, random=40, nonactivating=20),
    "valid": SplitSizes(top=10, random=20, nonactivating=20),
    "test": SplitSizes(top=10, random=40, nonactivating=20),
}
DEFAULT_SPLIT_PERCENT = (70, 10, 20)


def mix(x):
    """Integer hash of values in [0, 2**31) (numpy or torch int64) -> [0, 2**31)."""
    for c in (0x2545F491, 0x4F6CDD1D, 0x1B873593):
        x = ((x ^ (x >> 13)) * c + 0x6B43A9B5) % _P
    return x


def split_of(windows, seed: int, percent: tuple[int, int, int] = DEFAULT_SPLIT_PERCENT):
    """0 (train), 1 (valid) or 2 (test) for each window id; numpy or torch int64 input."""
    bucket = mix((windows * 7919 + seed * 104_729 + 12_345) % _P) % 100
    return (bucket >= percent[0]).to(torch.int64) + (bucket >= percent[0] + percent[1]).to(torch.int64) \
        if isinstance(bucket, torch.Tensor) else \
        (bucket >= percent[0]).astype(np.int64) + (bucket >= percent[0] + percent[1]).astype(np.int64)


class Reservoir:
    """K best entries per feature by key; optionally each entry's per-token activations."""

    def __init__(self, n_features: int, k: int, ctx_len: int, *, key_dtype: torch.dtype, store_acts: bool):
        self.k = k
        self.invalid = -float("inf") if key_dtype.is_floating_point else -1
        self.key = torch.full((n_features, k), self.invalid, dtype=key_dtype)
        self.win = torch.full((n_features, k), -1, dtype=torch.int64)
        self.max = torch.zeros((n_features, k), dtype=torch.float32)
        self.acts = torch.zeros((n_features, k, ctx_len), dtype=torch.float16) if store_acts else None

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {f"{prefix}/key": self.key, f"{prefix}/win": self.win, f"{prefix}/max": self.max}
        if self.acts is not None:
            out[f"{prefix}/acts"] = self.acts
        return out

    def load(self, prefix: str, state: dict[str, torch.Tensor]) -> None:
        self.key.copy_(state[f"{prefix}/key"])
        self.win.copy_(state[f"{prefix}/win"])
        self.max.copy_(state[f"{prefix}/max"])
        if self.acts is not None:
            self.acts.copy_(state[f"{prefix}/acts"])

    def offer(self, cand_key: torch.Tensor, cand_win: torch.Tensor, cand_max: torch.Tensor, gather) -> None:
        """cand_key / cand_max [F, B]; cand_win [B]; gather(b, f) -> [n, ctx_len] activations."""
        if self.k == 0 or cand_key.shape[1] == 0:
            return
        # Only rows where some candidate beats the current worst kept entry can change.
        rows = (cand_key.amax(dim=1) > self.key.amin(dim=1)).nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            return
        old = self.key[rows]
        cand = cand_key[rows]
        merged = torch.cat([old, cand], dim=1)
        chosen = merged.topk(self.k, dim=1, sorted=False).indices
        keep = torch.zeros(merged.shape, dtype=torch.bool).scatter_(1, chosen, True)
        new_r, new_b = keep[:, self.k:].nonzero(as_tuple=True)
        ev_r, ev_s = (~keep[:, : self.k]).nonzero(as_tuple=True)
        # Row-major order pairs the i-th new candidate of a row with its i-th evicted slot.
        new_keys = cand[new_r, new_b]
        ok = new_keys != self.invalid  # an invalid candidate only ever replaces an empty slot
        new_r, new_b, ev_s, new_keys = new_r[ok], new_b[ok], ev_s[ok], new_keys[ok]
        if new_r.numel() == 0:
            return
        feats = rows[new_r]
        self.key[feats, ev_s] = new_keys
        self.win[feats, ev_s] = cand_win[new_b]
        self.max[feats, ev_s] = cand_max[feats, new_b]
        if self.acts is not None:
            self.acts[feats, ev_s] = gather(new_b, feats).to(torch.float16)


class BatchActs:
    """Feature activations of one batch of windows [B, L, F], dense or TopK-sparse."""

    def __init__(self, enc: Encoded, n_windows: int, ctx_len: int):
        self.B, self.L, self.F = n_windows, ctx_len, enc.n_features
        if enc.dense is not None:
            self.dense = enc.dense.reshape(n_windows, ctx_len, self.F)
            self.values = self.indices = None
        else:
            self.dense = None
            k = enc.values.shape[-1]
            self.values = enc.values.reshape(n_windows, ctx_len, k)
            self.indices = enc.indices.reshape(n_windows, ctx_len, k)

    def window_max(self) -> torch.Tensor:
        """[B, F] max over each window's tokens."""
        if self.dense is not None:
            return self.dense.amax(dim=1)
        out = torch.zeros(self.B, self.F, dtype=self.values.dtype)
        return out.scatter_reduce_(1, self.indices.reshape(self.B, -1), self.values.reshape(self.B, -1), "amax")

    def gather(self, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """[n, L] activations of feature f[i] over the tokens of window b[i]."""
        if self.dense is not None:
            return self.dense[b, :, f]
        hit = self.indices[b] == f[:, None, None]
        return (self.values[b] * hit).sum(dim=-1)

    def token_stats(self, nonneg: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(count > 0, sum, sum over positive, histogram counts [F, bins]) for this batch."""
        F, nb = self.F, len(HIST_EDGES) - 1
        inner = torch.from_numpy(HIST_EDGES[1:-1].copy())
        if self.dense is not None:
            flat = self.dense.reshape(-1, F)
            total = flat.sum(dim=0, dtype=torch.float64)
            pos_idx = (flat > 0).nonzero(as_tuple=True)
            feat, vals = pos_idx[1], flat[pos_idx]
            pos_sum = total if nonneg else torch.zeros(F, dtype=torch.float64).index_add_(0, feat, vals.double())
        else:
            v = self.values.reshape(-1)
            i = self.indices.reshape(-1)
            pos = v > 0
            feat, vals = i[pos], v[pos]
            total = torch.zeros(F, dtype=torch.float64).index_add_(0, feat, vals.double())
            pos_sum = total
        count = torch.bincount(feat, minlength=F)
        bins = torch.bucketize(vals, inner)
        hist = torch.bincount(feat * nb + bins, minlength=F * nb).reshape(F, nb)
        return count, total, pos_sum, hist


class Accumulator:
    """All per-feature state of a collect run; ``state()``/``load()`` for checkpoints."""

    def __init__(self, n_features: int, ctx_len: int, seed: int, *, nonneg: bool,
                 sizes: dict[str, SplitSizes] = DEFAULT_SIZES,
                 split_percent: tuple[int, int, int] = DEFAULT_SPLIT_PERCENT):
        self.F, self.L, self.seed, self.nonneg = n_features, ctx_len, seed, nonneg
        self.split_percent = split_percent
        self.sizes = sizes
        self.res: dict[tuple[str, str], Reservoir] = {}
        for s in SPLITS:
            z = sizes[s]
            self.res[(s, "top")] = Reservoir(n_features, z.top, ctx_len, key_dtype=torch.float32, store_acts=True)
            self.res[(s, "random")] = Reservoir(n_features, z.random, ctx_len, key_dtype=torch.int64, store_acts=True)
            # For SAEs a non-activating window is all zeros: no need to keep its activations.
            self.res[(s, "nonactivating")] = Reservoir(n_features, z.nonactivating, ctx_len,
                                                       key_dtype=torch.int64, store_acts=not nonneg)
        nb = len(HIST_EDGES) - 1
        self.count = torch.zeros(n_features, dtype=torch.int64)
        self.sum = torch.zeros(n_features, dtype=torch.float64)
        self.pos_sum = torch.zeros(n_features, dtype=torch.float64)
        self.max = torch.full((n_features,), -float("inf"), dtype=torch.float32)
        self.hist = torch.zeros((n_features, nb), dtype=torch.int64)
        self.tokens_seen = 0
        self.windows_seen = 0
        self.feature_hash = mix(torch.arange(n_features, dtype=torch.int64) * 31 + 977 + seed % _P)

    def update(self, window_ids: torch.Tensor, enc: Encoded) -> None:
        acts = BatchActs(enc, len(window_ids), self.L)
        count, total, pos_sum, hist = acts.token_stats(self.nonneg)
        self.count += count
        self.sum += total
        self.pos_sum += pos_sum
        self.hist += hist
        wmax = acts.window_max().T.contiguous()  # [F, B]
        self.max = torch.maximum(self.max, wmax.amax(dim=1))
        self.tokens_seen += acts.B * acts.L
        self.windows_seen += acts.B
        split = split_of(window_ids, self.seed, self.split_percent)
        for si, s in enumerate(SPLITS):
            cols = (split == si).nonzero(as_tuple=True)[0]
            if cols.numel() == 0:
                continue
            m = wmax[:, cols]
            wins = window_ids[cols]
            active = m > 0
            gather = lambda b, f, cols=cols: acts.gather(cols[b], f)  # noqa: E731
            self.res[(s, "top")].offer(torch.where(active, m, -float("inf")), wins, m, gather)
            h = mix(mix(wins % _P)[None, :] ^ self.feature_hash[:, None])  # [F, Bs] uniform keys
            self.res[(s, "random")].offer(torch.where(active, h, -1), wins, m, gather)
            self.res[(s, "nonactivating")].offer(torch.where(active, -1, h), wins, m, gather)

    def state(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for (s, kind), r in self.res.items():
            out.update(r.state(f"{s}/{kind}"))
        out.update({"stats/count": self.count, "stats/sum": self.sum, "stats/pos_sum": self.pos_sum,
                    "stats/max": self.max, "stats/hist": self.hist,
                    "position": torch.tensor([self.tokens_seen, self.windows_seen], dtype=torch.int64)})
        return out

    def load(self, state: dict[str, torch.Tensor]) -> None:
        for (s, kind), r in self.res.items():
            r.load(f"{s}/{kind}", state)
        self.count.copy_(state["stats/count"])
        self.sum.copy_(state["stats/sum"])
        self.pos_sum.copy_(state["stats/pos_sum"])
        self.max.copy_(state["stats/max"])
        self.hist.copy_(state["stats/hist"])
        self.tokens_seen, self.windows_seen = (int(v) for v in state["position"].tolist())
