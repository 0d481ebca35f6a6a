"""One streaming pass over windows, all features at once, in memory bounded by F x examples.

Every window goes to one split (train / valid / test) by a seeded hash of its id, so held-out
and explainer examples never share a window. Each split keeps its own reservoirs:

- ``top``: exact top-K windows by max activation (key = the window's max activation);
- ``random``: a uniform sample of activating windows (key = hash(window, feature, seed)),
  independent of batch boundaries, so a resumed run ends in exactly the same state;
- ``nonactivating``: a uniform sample of windows where the feature's max is <= 0.

A reservoir keeps each feature's worst kept key (its floor) and that slot; a batch's candidates
above the floor replace the worst slot one at a time per feature (in rounds over all features
at once), and per-token activations are copied only for the entries that changed. Quantile-stratified samples are
chosen from the random reservoir when the store is read (see ``store.quantile_strata``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from labeler.activations.formats import Encoded

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
        x = (((x ^ (x >> 13)) * c) >> 7) & _P  # < 2**62 before the shift: no int64 overflow
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
        self._refresh_floor()

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
        self._refresh_floor()

    def _refresh_floor(self) -> None:
        """floor: the worst kept key of each feature; worst: its slot (where the next entry goes)."""
        if self.k:
            low = self.key.min(dim=1)
            self.floor, self.worst = low.values.clone(), low.indices.clone()
        else:
            self.floor = self.key.new_zeros(self.key.shape[0])
            self.worst = torch.zeros(self.key.shape[0], dtype=torch.int64)

    def offer(self, cand_key: torch.Tensor, cand_win: torch.Tensor, cand_max: torch.Tensor, gather) -> None:
        """cand_key / cand_max [F, B]; cand_win [B]; gather(b, f) -> [n, ctx_len] activations.

        Only candidates above their feature's current floor (worst kept key) matter; they are
        inserted in rounds, one per feature per round, each replacing that feature's worst slot,
        so the work is proportional to what actually changes, not to F x (K + B).
        """
        if self.k == 0 or cand_key.shape[1] == 0:
            return
        f_idx, b_idx = (cand_key > self.floor[:, None]).nonzero(as_tuple=True)
        if f_idx.numel() == 0:
            return
        keys = cand_key[f_idx, b_idx]  # nonzero() is row-major: grouped by feature already
        pos = torch.arange(f_idx.numel())
        first = torch.ones_like(f_idx, dtype=torch.bool)
        first[1:] = f_idx[1:] != f_idx[:-1]
        rank = pos - torch.cummax(torch.where(first, pos, 0), dim=0).values  # index within its feature
        by_round = torch.argsort(rank, stable=True)
        counts = torch.bincount(rank).tolist()
        start = 0
        for n in counts:
            take = by_round[start : start + n]
            start += n
            f, b, kk = f_idx[take], b_idx[take], keys[take]
            better = kk > self.floor[f]
            if not bool(better.all()):
                f, b, kk = f[better], b[better], kk[better]
                if f.numel() == 0:
                    continue
            slot = self.worst[f]
            self.key[f, slot] = kk
            self.win[f, slot] = cand_win[b]
            self.max[f, slot] = cand_max[f, b]
            if self.acts is not None:
                self.acts[f, slot] = gather(b, f).to(torch.float16)
            low = self.key[f].min(dim=1)
            self.floor[f] = low.values
            self.worst[f] = low.indices


class BatchActs:
    """Feature activations of one batch of windows [B, L, F], dense or TopK-sparse.

    For TopK SAEs, per-token rows are gathered from a scratch buffer laid out [B, F, L] that is
    filled with the batch's few nonzeros and cleared again afterwards (``release``), so no
    dense [tokens, F] tensor is ever built or zeroed.
    """

    def __init__(self, enc: Encoded, n_windows: int, ctx_len: int, scratch: torch.Tensor | None = None):
        self.B, self.L, self.F = n_windows, ctx_len, enc.n_features
        self.scratch = scratch
        self._pos: torch.Tensor | None = None
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
        if self._pos is None:
            B, L, F = self.B, self.L, self.F
            if self.scratch is None or self.scratch.numel() < B * F * L:
                self.scratch = torch.zeros(B * F * L, dtype=self.values.dtype)
            b_idx = torch.arange(B).view(B, 1, 1)
            l_idx = torch.arange(L).view(1, L, 1)
            self._pos = ((b_idx * F + self.indices) * L + l_idx).reshape(-1)
            self.scratch[self._pos] = self.values.reshape(-1)
        rows = self.scratch[: self.B * self.F * self.L].view(self.B, self.F, self.L)
        return rows[b, f]

    def release(self) -> torch.Tensor | None:
        """Zero what ``gather`` wrote and hand the scratch buffer back for the next batch."""
        if self._pos is not None:
            self.scratch[self._pos] = 0
            self._pos = None
        return self.scratch

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
            self.res[(s, "random")] = Reservoir(n_features, z.random, ctx_len, key_dtype=torch.int32, store_acts=True)
            # For SAEs a non-activating window is all zeros: no need to keep its activations.
            self.res[(s, "nonactivating")] = Reservoir(n_features, z.nonactivating, ctx_len,
                                                       key_dtype=torch.int32, store_acts=not nonneg)
        nb = len(HIST_EDGES) - 1
        self.count = torch.zeros(n_features, dtype=torch.int64)
        self.sum = torch.zeros(n_features, dtype=torch.float64)
        self.pos_sum = torch.zeros(n_features, dtype=torch.float64)
        self.max = torch.full((n_features,), -float("inf"), dtype=torch.float32)
        self.hist = torch.zeros((n_features, nb), dtype=torch.int64)
        self.tokens_seen = 0
        self.windows_seen = 0
        self._scratch: torch.Tensor | None = None
        self.feature_hash = mix(torch.arange(n_features, dtype=torch.int64) * 31 + 977 + seed % _P)

    def update(self, window_ids: torch.Tensor, enc: Encoded) -> None:
        acts = BatchActs(enc, len(window_ids), self.L, self._scratch)
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
            h = mix(mix(wins % _P)[None, :] ^ self.feature_hash[:, None]).to(torch.int32)  # [F, Bs] uniform keys
            self.res[(s, "random")].offer(torch.where(active, h, -1), wins, m, gather)
            self.res[(s, "nonactivating")].offer(torch.where(active, -1, h), wins, m, gather)
        self._scratch = acts.release()

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
