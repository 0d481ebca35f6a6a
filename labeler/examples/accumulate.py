"""One streaming pass over windows, all features of a range at once, in feature blocks.

Every window goes to one split (train / valid / test) by a seeded hash of its id, so held-out
and explainer examples never share a window. Per split and feature the state keeps

- ``top``: the exact top-K windows by max activation;
- ``sample``: a uniform sample of activating windows (key = hash(window, feature, seed));
- every feature's nonzero activations on the shared random windows (``pool``): the store's
  ``random`` and ``nonactivating`` examples come from those;
- a 512-bit Bloom filter of the windows where the feature fired: a window it does not hold is
  one where the feature certainly never fired (hard negatives are checked against it);
- statistics: counts, fixed-point sums (exact and order-free), max, histogram.

Each batch arrives as the nonzero (token, feature, value) triples of the block, so nothing is
ever [tokens, features] dense here. All reservoir keys are totally ordered (see
``reservoir``), every sum is an integer: merging the states of corpus slices gives exactly the
state of one pass over all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from labeler.examples.reservoir import (P, Arena, Reservoir, compose, feature_hash, float_rank, gather_runs, mix,
                                        sample_hash)

SPLITS = ("train", "valid", "test")
HIST_EDGES = np.concatenate([[0.0], np.logspace(-3, 3, 25)]).astype(np.float32)  # 25 bins over (0, inf)
FIXED_SCALE = 2.0 ** 20  # sums are kept as integers of value * 2**20: exact, in any order
BLOOM_WORDS = 8  # 512 bits per feature


@dataclass(frozen=True)
class SplitSizes:
    top: int  # exact top windows by max activation
    sample: int  # random activating windows
    random: int  # shared random windows shown as kind ``random`` (zeros included)
    nonactivating: int  # random windows where the feature never fires
    hard_negative: int  # windows resembling activating ones where the feature never fires


# train feeds the explainer (more context), valid reranks best-of-N, test is for scoring.
DEFAULT_SIZES: dict[str, SplitSizes] = {
    "train": SplitSizes(top=20, sample=40, random=0, nonactivating=20, hard_negative=10),
    "valid": SplitSizes(top=10, sample=20, random=20, nonactivating=20, hard_negative=10),
    "test": SplitSizes(top=10, sample=40, random=40, nonactivating=20, hard_negative=10),
}
DEFAULT_SPLIT_PERCENT = (70, 10, 20)


def split_of(windows, seed: int, percent: tuple[int, int, int] = DEFAULT_SPLIT_PERCENT):
    """0 (train), 1 (valid) or 2 (test) for each window id; numpy or torch int64 input."""
    bucket = mix((windows * 7919 + seed * 104_729 + 12_345) % P) % 100
    return (bucket >= percent[0]).to(torch.int64) + (bucket >= percent[0] + percent[1]).to(torch.int64) \
        if isinstance(bucket, torch.Tensor) else \
        (bucket >= percent[0]).astype(np.int64) + (bucket >= percent[0] + percent[1]).astype(np.int64)


def in_pool(windows, seed: int, split, rates):
    """Whether each window is one of the shared random windows: a seeded hash below its split's
    rate (numpy or torch; ``rates`` [3] float64, ``split`` from ``split_of``)."""
    h = mix((windows * 104_729 + seed * 7919 + 4242) % P)
    limit = rates[split] * P
    return h < (limit.to(torch.int64) if isinstance(limit, torch.Tensor) else limit.astype(np.int64))


class BlockState:
    """Everything kept for the features [start, start + n) of one block."""

    def __init__(self, start: int, n: int, seed: int, *, nonneg: bool, sizes: dict[str, SplitSizes],
                 ctx_len: int):
        self.start, self.n, self.seed, self.nonneg, self.L = start, n, seed, nonneg, ctx_len
        self.fhash = feature_hash(torch.arange(start, start + n, dtype=torch.int64), seed)
        self.arena = Arena()
        self.res: dict[tuple[str, str], Reservoir] = {}
        for s in SPLITS:
            self.res[(s, "top")] = Reservoir(n, sizes[s].top, hashed=False, acts=True)
            self.res[(s, "sample")] = Reservoir(n, sizes[s].sample, hashed=True, acts=True, fhash=self.fhash)
        nb = len(HIST_EDGES) - 1
        self.count = torch.zeros(n, dtype=torch.int64)  # tokens with activation > 0
        self.sum = torch.zeros(n, dtype=torch.int64)  # fixed point, all tokens
        self.pos_sum = torch.zeros(n, dtype=torch.int64) if not nonneg else self.sum
        self.nonzero = torch.zeros(n, dtype=torch.int64) if not nonneg else self.count
        self.max = torch.full((n,), -float("inf"), dtype=torch.float32)
        self.hist = torch.zeros((n, nb), dtype=torch.int64)
        self.active_windows = torch.zeros(n, dtype=torch.int64)
        self.bloom = torch.zeros((n, BLOOM_WORDS), dtype=torch.int64)
        self.pool: list[dict[str, torch.Tensor]] = []  # chunks of feat / win / pos / val

    @property
    def owners(self) -> list[Reservoir]:
        return list(self.res.values())

    # -- one batch -------------------------------------------------------------------------------
    def update(self, feat: torch.Tensor, tok: torch.Tensor, val: torch.Tensor, window_ids: torch.Tensor,
               pool_mask: torch.Tensor, split_percent: tuple[int, int, int]) -> None:
        """The block's nonzero activations of some batches: ``feat`` (relative to the block),
        ``tok`` (window * ctx_len + position, windows indexing ``window_ids``) and float32
        ``val``.  Each (feat, window) pair's tokens must be consecutive and in position order,
        as they are in one batch's triples sorted by (feat, tok) and in a concatenation of
        several such batches (a window is in one batch only); nothing else depends on order."""
        n, L, B = self.n, self.L, int(window_ids.numel())
        if feat.numel():
            self._token_stats(feat, val)
        if feat.numel() == 0:
            return
        w_local = tok // L
        pair_key = feat * B + w_local
        uniq, counts = torch.unique_consecutive(pair_key, return_counts=True)
        pair_start = torch.cumsum(counts, 0) - counts
        pair_id = torch.repeat_interleave(torch.arange(uniq.numel()), counts)
        pair_max = torch.full((uniq.numel(),), -float("inf")).scatter_reduce_(0, pair_id, val, "amax")
        if not self.nonneg:  # a window with some zero tokens has a max of at least 0
            pair_max = torch.where(counts < L, pair_max.clamp_min(0), pair_max)
        pair_f, pair_w = uniq // B, uniq % B
        win = window_ids[pair_w]
        active = pair_max > 0
        self.active_windows += torch.bincount(pair_f[active], minlength=n)
        pos16 = (tok % L).to(torch.int16)
        val16 = val.to(torch.float16)
        if bool(pool_mask.any()):
            m = pool_mask[w_local]
            self.pool.append({"feat": feat[m].to(torch.int32), "win": window_ids[w_local[m]].to(torch.int32),
                              "pos": pos16[m], "val": val16[m]})
        a = active.nonzero(as_tuple=True)[0]
        if a.numel() == 0:
            return
        af, aw = pair_f[a], win[a]
        h = sample_hash(aw, self.fhash[af])
        self._bloom_add(af, h)
        top_key = compose(float_rank(pair_max[a]), aw)
        sample_key = compose(h, aw)
        split = split_of(aw, self.seed, split_percent)

        def runs_of(pairs: torch.Tensor):
            idx = gather_runs(pair_start[pairs], counts[pairs])
            return pos16[idx], val16[idx], counts[pairs]

        for si, s in enumerate(SPLITS):
            sel = (split == si).nonzero(as_tuple=True)[0]
            if sel.numel() == 0:
                continue
            pairs = a[sel]
            for kind, keys in (("top", top_key[sel]), ("sample", sample_key[sel])):
                self.res[(s, kind)].offer(af[sel], keys, self.arena, lambda c, p=pairs: runs_of(p[c]), self.owners)

    def _token_stats(self, feat: torch.Tensor, val: torch.Tensor) -> None:
        n, nb = self.n, len(HIST_EDGES) - 1
        fixed = torch.round(val.double() * FIXED_SCALE).to(torch.int64)
        self.sum.index_add_(0, feat, fixed)
        pos = val > 0
        pf, pv = feat[pos], val[pos]
        if not self.nonneg:
            self.pos_sum.index_add_(0, pf, fixed[pos])
            self.nonzero += torch.bincount(feat, minlength=n)
        self.count += torch.bincount(pf, minlength=n)
        self.max = torch.maximum(self.max, torch.full((n,), -float("inf")).scatter_reduce_(0, feat, val, "amax"))
        inner = torch.from_numpy(HIST_EDGES[1:-1].copy())
        self.hist.view(-1).add_(torch.bincount(pf * nb + torch.bucketize(pv, inner), minlength=n * nb))

    def _bloom_add(self, rows: torch.Tensor, h: torch.Tensor) -> None:
        bits = (h & 511).numpy()
        flat = rows.numpy() * BLOOM_WORDS + (bits >> 6)
        masks = np.left_shift(np.int64(1), (bits & 63).astype(np.int64))
        order = np.argsort(flat, kind="stable")
        flat, masks = flat[order], masks[order]
        first = np.ones(len(flat), dtype=bool)
        first[1:] = flat[1:] != flat[:-1]
        starts = np.nonzero(first)[0]
        bloom = self.bloom.view(-1).numpy()
        bloom[flat[starts]] |= np.bitwise_or.reduceat(masks, starts)

    # -- state, merge ----------------------------------------------------------------------------
    def pool_entries(self) -> dict[str, torch.Tensor]:
        if not self.pool:
            return {"feat": torch.zeros(0, dtype=torch.int32), "win": torch.zeros(0, dtype=torch.int32),
                    "pos": torch.zeros(0, dtype=torch.int16), "val": torch.zeros(0, dtype=torch.float16)}
        if len(self.pool) > 1:
            self.pool = [{k: torch.cat([c[k] for c in self.pool]) for k in self.pool[0]}]
        return self.pool[0]

    def state(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for (s, kind), r in self.res.items():
            out.update(r.state(f"{s}/{kind}"))
        out.update({"arena/pos": self.arena.pos[:self.arena.used], "arena/val": self.arena.val[:self.arena.used],
                    "stats/count": self.count, "stats/sum": self.sum, "stats/max": self.max,
                    "stats/hist": self.hist, "stats/active_windows": self.active_windows, "bloom": self.bloom})
        if not self.nonneg:
            out.update({"stats/pos_sum": self.pos_sum, "stats/nonzero": self.nonzero})
        out.update({f"pool/{k}": v for k, v in self.pool_entries().items()})
        return out

    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Take over the tensors of a loaded checkpoint (no copy: they are this block's own now)."""
        for (s, kind), r in self.res.items():
            r.load(f"{s}/{kind}", state)
        self.arena.pos, self.arena.val = state["arena/pos"], state["arena/val"]
        self.arena.used = int(self.arena.pos.numel())
        self.count = state["stats/count"]
        self.sum = state["stats/sum"]
        self.pos_sum = state["stats/pos_sum"] if not self.nonneg else self.sum
        self.nonzero = state["stats/nonzero"] if not self.nonneg else self.count
        self.max = state["stats/max"]
        self.hist = state["stats/hist"]
        self.active_windows = state["stats/active_windows"]
        self.bloom = state["bloom"]
        self.pool = [{k: state[f"pool/{k}"] for k in ("feat", "win", "pos", "val")}]

    def absorb(self, state: dict[str, torch.Tensor]) -> None:
        """Merge the state of the same block over other windows (a corpus slice) into this one."""
        self.count += state["stats/count"]
        if not self.nonneg:
            self.pos_sum += state["stats/pos_sum"]
            self.nonzero += state["stats/nonzero"]
        self.sum += state["stats/sum"]
        self.max = torch.maximum(self.max, state["stats/max"])
        self.hist += state["stats/hist"]
        self.active_windows += state["stats/active_windows"]
        self.bloom |= state["bloom"]
        self.pool.append({k: state[f"pool/{k}"] for k in ("feat", "win", "pos", "val")})
        pos, val = state["arena/pos"], state["arena/val"]
        for (s, kind), r in self.res.items():
            if r.k == 0:
                continue
            other = Reservoir(self.n, r.k, hashed=r.hashed, acts=True, fhash=self.fhash)
            other.load(f"{s}/{kind}", state)
            keys = other.keys(torch.arange(self.n)).reshape(-1)
            valid = (keys >= 0).nonzero(as_tuple=True)[0]
            off, nnz = other.off.reshape(-1).to(torch.int64), other.nnz.reshape(-1).to(torch.int64)

            def runs_of(c: torch.Tensor, e=valid, off=off, nnz=nnz):
                idx = gather_runs(off[e[c]], nnz[e[c]])
                return pos[idx], val[idx], nnz[e[c]]

            r.offer(valid // r.k, keys[valid], self.arena, runs_of, self.owners)


class Accumulator:
    """The blocks of one feature range [start, stop) of an SAE, plus the stream position."""

    def __init__(self, start: int, stop: int, ctx_len: int, seed: int, *, nonneg: bool, block: int,
                 sizes: dict[str, SplitSizes] = DEFAULT_SIZES,
                 split_percent: tuple[int, int, int] = DEFAULT_SPLIT_PERCENT):
        self.start, self.stop, self.L, self.seed = start, stop, ctx_len, seed
        self.nonneg, self.sizes, self.split_percent, self.block = nonneg, sizes, split_percent, block
        self.bounds = block_bounds(start, stop, block)
        self.blocks = [BlockState(a, b - a, seed, nonneg=nonneg, sizes=sizes, ctx_len=ctx_len) for a, b in self.bounds]
        self.tokens_seen = 0
        self.windows_seen = 0

    def new_block(self, i: int) -> BlockState:
        a, b = self.bounds[i]
        return BlockState(a, b - a, self.seed, nonneg=self.nonneg, sizes=self.sizes, ctx_len=self.L)

    def advance(self, n_windows: int) -> None:
        self.windows_seen += n_windows
        self.tokens_seen += n_windows * self.L


def block_bounds(start: int, stop: int, block: int) -> list[tuple[int, int]]:
    """Blocks aligned to multiples of ``block`` in absolute feature ids, so every run that
    covers a feature encodes it in the same block (same arithmetic, same result)."""
    out, a = [], start
    while a < stop:
        b = min(stop, (a // block + 1) * block)
        out.append((a, b))
        a = b
    return out
