"""Hard negatives: windows that resemble a feature's activating ones but where it never fires.

Two sources, chosen once the whole corpus has been seen (so every run with the same settings,
sharded or not, picks the same windows):

- neighbours: the top windows of the feature's nearest features by decoder cosine (delphi's
  "neighbours"), in neighbour order;
- shared tokens: windows containing the tokens at the peaks of the feature's top examples.

A candidate is kept only if the feature's Bloom filter of activating windows does not hold it:
a Bloom filter has no false negatives, so a kept window is one where the feature certainly never
fired (a false positive only costs a candidate).
"""

from __future__ import annotations

import numpy as np

from labeler.examples.accumulate import BLOOM_WORDS, SPLITS, split_of
from labeler.examples.reservoir import sample_hash

NEIGHBOURS_USED = 8  # nearest features whose top windows are candidates
PEAK_TOKENS = 4  # distinct peak tokens per feature
PER_TOKEN = 16  # candidate windows per peak token


def quiet(bloom: np.ndarray, fhash: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """[c, m] True where window ``windows[r, j]`` (>= 0) is surely not an activating window of row r."""
    w = np.maximum(windows, 0).astype(np.int64)
    bits = sample_hash(w, fhash[:, None]) & 511
    words = np.take_along_axis(bloom, bits >> 6, axis=1)
    hit = (words >> (bits & 63)) & 1
    return (hit == 0) & (windows >= 0)


def first_unique(cands: np.ndarray, ok: np.ndarray, n: int) -> np.ndarray:
    """Per row, the first ``n`` distinct candidates where ``ok`` (-1 padded) [c, n] int32."""
    c, m = cands.shape
    vals = np.where(ok, cands, -1).astype(np.int64)
    order = np.argsort(vals, axis=1, kind="stable")
    sorted_v = np.take_along_axis(vals, order, axis=1)
    dup = np.zeros_like(sorted_v, dtype=bool)
    dup[:, 1:] = sorted_v[:, 1:] == sorted_v[:, :-1]
    keep_sorted = ~dup & (sorted_v >= 0)
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=1)
    rank = np.cumsum(keep, axis=1)
    out = np.full((c, n), -1, dtype=np.int32)
    r, j = np.nonzero(keep & (rank <= n))
    out[r, rank[r, j] - 1] = vals[r, j]
    return out


class TokenIndex:
    """Per split, the windows containing each token id (CSR over the vocabulary)."""

    def __init__(self, tokens: np.ndarray, seed: int, split_percent: tuple[int, int, int], chunk: int = 65536):
        n_windows = tokens.shape[0]
        split = split_of(np.arange(n_windows, dtype=np.int64), seed, split_percent)
        vocab = int(tokens.max()) + 1 if tokens.size else 1
        self.ptr, self.win = [], []
        for si in range(len(SPLITS)):
            ws = np.nonzero(split == si)[0]
            pairs = []
            for s in range(0, len(ws), chunk):
                w = ws[s:s + chunk]
                t = np.asarray(tokens[w], dtype=np.int64)
                pairs.append(np.unique(t * n_windows + w[:, None]))
            keys = np.unique(np.concatenate(pairs)) if pairs else np.zeros(0, dtype=np.int64)
            self.ptr.append(np.concatenate([[0], np.cumsum(np.bincount(keys // n_windows, minlength=vocab))]))
            self.win.append((keys % n_windows).astype(np.int64))
        self.vocab = vocab

    def candidates(self, si: int, toks: np.ndarray, offsets: np.ndarray, per_token: int) -> np.ndarray:
        """[c, T * per_token] windows of split ``si`` containing toks[r, t] (-1 padded), starting at a
        per-row offset so that features sharing a token get different windows."""
        ptr, win = self.ptr[si], self.win[si]
        t = np.clip(toks, 0, self.vocab - 1)
        start, length = ptr[t], ptr[t + 1] - ptr[t]
        j = np.arange(per_token)
        pos = (offsets[:, None, None] + j[None, None, :]) % np.maximum(length, 1)[..., None]
        out = np.where((length[..., None] > j) & (toks[..., None] >= 0), win[np.minimum(start[..., None] + pos,
                                                                                          max(len(win) - 1, 0))], -1) \
            if len(win) else np.full(toks.shape + (per_token,), -1)
        # interleave tokens: the first window of every token before the second of any
        return out.transpose(0, 2, 1).reshape(len(toks), -1)


def select(index: TokenIndex, *, fhash: np.ndarray, bloom: np.ndarray, peak_tokens: np.ndarray,
           top_windows: dict[str, np.ndarray], neighbours: np.ndarray | None, sizes: dict,
           chunk: int = 8192) -> dict[str, np.ndarray]:
    """Per split, [F, n] int32 hard-negative windows (-1 padded).  ``top_windows[split]`` [F, K]
    are every feature's top windows of that split, best first; ``peak_tokens`` [F, PEAK_TOKENS]."""
    F = len(fhash)
    out = {}
    for si, s in enumerate(SPLITS):
        n = int(sizes[s]["hard_negative"])
        res = np.full((F, n), -1, dtype=np.int32)
        if n == 0:
            out[s] = res
            continue
        for a in range(0, F, chunk):
            b = min(F, a + chunk)
            lists = []
            if neighbours is not None and neighbours.shape[1]:
                nb = neighbours[a:b, :NEIGHBOURS_USED].astype(np.int64)
                lists.append(np.where(nb[..., None] >= 0, top_windows[s][np.maximum(nb, 0)], -1).reshape(b - a, -1))
            offsets = (fhash[a:b] % 1_000_003).astype(np.int64)
            lists.append(index.candidates(si, peak_tokens[a:b], offsets, PER_TOKEN))
            bloom_c, fh = bloom[a:b], fhash[a:b]
            picks = [first_unique(c, quiet(bloom_c, fh, c), n) for c in lists]
            if len(picks) == 2:  # up to half from the neighbours, then shared tokens, then neighbours again
                picks = [picks[0][:, :(n + 1) // 2], picks[1], picks[0]]
            merged = np.concatenate(picks, axis=1)
            res[a:b] = first_unique(merged, merged >= 0, n)
        out[s] = res
    return out


def peak_token_sets(tokens_of_peaks: np.ndarray, k: int = PEAK_TOKENS) -> np.ndarray:
    """[F, k] most frequent distinct tokens per row of [F, K] peak tokens (-1 = none), ties: lower id."""
    F, K = tokens_of_peaks.shape
    out = np.full((F, k), -1, dtype=np.int64)
    rows = np.repeat(np.arange(F), K)
    t = tokens_of_peaks.reshape(-1).astype(np.int64)
    valid = t >= 0
    rows, t = rows[valid], t[valid]
    if not len(t):
        return out
    span = int(t.max()) + 1
    keys, counts = np.unique(rows * span + t, return_counts=True)
    r, tok = keys // span, keys % span
    order = np.lexsort((tok, -counts, r))
    r, tok = r[order], tok[order]
    first = np.ones(len(r), dtype=bool)
    first[1:] = r[1:] != r[:-1]
    idx = np.arange(len(r))
    rank = idx - np.maximum.accumulate(np.where(first, idx, 0))
    m = rank < k
    out[r[m], rank[m]] = tok[m]
    return out


assert BLOOM_WORDS * 64 == 512  # the hash above takes 9 bits
