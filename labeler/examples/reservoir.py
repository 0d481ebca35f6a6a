"""Deterministic keys, bounded reservoirs and the sparse activation arena of the streaming collect.

Every reservoir entry has a 64-bit key: the high half is what ranks it (a window's max
activation, or a hash of (window, feature)), the low half the complement of the window id, so
two entries never tie and the earlier window wins a tie of the ranking value.  A reservoir
keeps the K largest keys it was offered; with a total order that set does not depend on the
order of the offers, which is what makes resumed, feature-sharded and corpus-sharded runs
produce the same result as one uninterrupted run (a merge is just another offer).

Per-token activations of kept entries live in an :class:`Arena` of (position, fp16 value)
pairs for the nonzero tokens only: a kept window of a sparse feature costs a few bytes instead
of ``ctx_len`` x 2.
"""

from __future__ import annotations

import numpy as np
import torch

P = 2_147_483_647  # 2**31 - 1: products of two values below it fit in int64
LOW = 0xFFFFFFFF  # the low 32 bits of a key: LOW - window
INVALID = -1


def mix(x):
    """Integer hash of values in [0, 2**31) (numpy or torch int64) -> [0, 2**31)."""
    if isinstance(x, torch.Tensor):
        # numpy's in-place int64 arithmetic is ~5x faster than torch's on CPU (the stream and
        # finalize hash every reservoir slot), and gives the same integers
        return torch.from_numpy(mix(x.numpy()))
    x = np.array(x, dtype=np.int64)  # a copy: the steps below work in place
    for c in (0x2545F491, 0x4F6CDD1D, 0x1B873593):
        x ^= x >> 13
        x *= c  # < 2**62: no int64 overflow
        x >>= 7
        x &= P
    return x


def feature_hash(features, seed: int):
    """Per-feature salt of the sampling hashes (numpy or torch int64 feature ids)."""
    return mix(features * 31 + 977 + seed % P)


def sample_hash(windows, fhash):
    """The uniform sampling key of (window, feature): broadcasting numpy or torch int64."""
    return mix(mix(windows % P) ^ fhash)


def pool_order_hash(windows, fhash):
    """Per-feature order of the shared random windows (a different stream than ``sample_hash``)."""
    return mix(mix((windows + 0x3C6EF372) % P) ^ fhash)


def compose(rank: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """64-bit key from a non-negative 31/32-bit ranking value and a window id (ties: lower window)."""
    return (rank.to(torch.int64) << 32) | (LOW - windows.to(torch.int64))


def key_window(key):
    """The window id inside a key (numpy or torch)."""
    return LOW - (key & LOW)


def float_rank(values: torch.Tensor) -> torch.Tensor:
    """Positive float32 values as int32 bit patterns: same order, exact round trip."""
    return values.to(torch.float32).contiguous().view(torch.int32)


def rank_float(rank) -> np.ndarray:
    """Inverse of ``float_rank`` for the high halves of keys (numpy)."""
    return np.asarray(rank, dtype=np.int64).astype(np.int32).view(np.float32)


class Arena:
    """Variable-length (position, value) runs of kept entries, appended and compacted in bulk."""

    def __init__(self, capacity: int = 4096):
        self.pos = torch.zeros(capacity, dtype=torch.int16)
        self.val = torch.zeros(capacity, dtype=torch.float16)
        self.used = 0

    def append(self, pos: torch.Tensor, val: torch.Tensor, owners: list["Reservoir"]) -> int:
        """Store runs; returns their start offset.  When full: grows while the runs are mostly
        live (a plain copy keeps every offset), else compacts the live runs (a gather)."""
        n = int(pos.numel())
        capacity = self.pos.numel()
        if self.used + n > capacity:
            live = sum(int(r.nnz.sum()) for r in owners if r.nnz is not None)
            if 2 * (live + n) > capacity:
                self._grow(max(2 * capacity, 2 * (self.used + n)))
            else:
                self._compact(owners, capacity)  # at least half of it comes free
        start = self.used
        self.pos[start:start + n] = pos
        self.val[start:start + n] = val
        self.used += n
        return start

    def _grow(self, capacity: int) -> None:
        for name in ("pos", "val"):
            old = getattr(self, name)
            new = torch.zeros(capacity, dtype=old.dtype)
            new[:self.used] = old[:self.used]
            setattr(self, name, new)

    def _compact(self, owners: list["Reservoir"], capacity: int) -> None:
        pos = torch.zeros(capacity, dtype=torch.int16)
        val = torch.zeros(capacity, dtype=torch.float16)
        used = 0
        for r in owners:
            if r.nnz is None:
                continue
            lengths = r.nnz.reshape(-1).to(torch.int64)
            src = gather_runs(r.off.reshape(-1).to(torch.int64), lengths)
            n = src.numel()
            pos[used:used + n] = self.pos[src]
            val[used:used + n] = self.val[src]
            r.off.view(-1)[:] = (used + torch.cumsum(lengths, 0) - lengths).to(torch.int32)
            used += n
        self.pos, self.val, self.used = pos, val, used


def gather_runs(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Indices of the concatenated runs [starts[i], starts[i] + lengths[i])."""
    # numpy: np.repeat is ~3x faster than torch's repeat_interleave on CPU (compaction and
    # every offer gather runs)
    s, n = starts.numpy().astype(np.int64, copy=False), lengths.numpy().astype(np.int64, copy=False)
    total = int(n.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.int64)
    run_start = np.cumsum(n) - n
    return torch.from_numpy(np.arange(total, dtype=np.int64) + np.repeat(s - run_start, n))


def _rank_in_row(rows: torch.Tensor, per_row: torch.Tensor) -> torch.Tensor:
    """0, 1, 2... within each row for ``rows`` sorted ascending, ``per_row`` entries of each row."""
    return torch.arange(rows.numel()) - (torch.cumsum(per_row, 0) - per_row)[rows]


class Reservoir:
    """The ``k`` largest keys per feature (rows) of one feature block.

    ``hashed`` reservoirs store only window ids (the key is ``sample_hash`` of window and
    feature, recomputed when needed); others store the key itself.  With ``acts`` each entry
    owns a run in the block's arena (``off``, ``nnz``).
    """

    def __init__(self, n: int, k: int, *, hashed: bool, acts: bool, fhash: torch.Tensor | None = None):
        self.n, self.k, self.hashed = n, k, hashed
        self.fhash = fhash
        if hashed:
            self.win = torch.full((n, k), INVALID, dtype=torch.int32)
            self.key = None
        else:
            self.key = torch.full((n, k), INVALID, dtype=torch.int64)
            self.win = None
        self.off = torch.zeros((n, k), dtype=torch.int32) if acts else None
        self.nnz = torch.zeros((n, k), dtype=torch.int16) if acts else None
        self.floor = torch.full((n,), INVALID, dtype=torch.int64)  # every slot is empty

    # -- keys ------------------------------------------------------------------------------------
    def keys(self, rows: torch.Tensor) -> torch.Tensor:
        """[len(rows), k] int64 keys of the entries in ``rows`` (INVALID for empty slots)."""
        if not self.hashed:
            return self.key[rows]
        w = self.win[rows].to(torch.int64)
        k = compose(sample_hash(w.clamp_min(0), self.fhash[rows][:, None]), w)
        return torch.where(w >= 0, k, INVALID)

    def _refresh(self, rows: torch.Tensor) -> None:
        """Recompute the floor of ``rows``."""
        self.floor[rows] = self.keys(rows).min(dim=1).values

    # -- offers ----------------------------------------------------------------------------------
    def offer(self, rows: torch.Tensor, keys: torch.Tensor, arena: Arena | None = None, runs=None,
              owners: list["Reservoir"] | None = None) -> None:
        """Offer candidates (``rows`` in any order, ``keys`` int64).  ``runs(idx)`` gives the
        (positions, values, lengths) of candidates ``idx`` for the arena.

        Each row offered to keeps the k best of what it held and what it was offered, in one
        vectorised step (the set does not depend on the order of offers; which slot holds
        which entry does, and nothing reads that order: the store sorts by key)."""
        if self.k == 0 or rows.numel() == 0:
            return
        keep = keys > self.floor[rows]
        if not bool(keep.any()):
            return
        cand = keep.nonzero(as_tuple=True)[0]
        rows, keys = rows[cand], keys[cand]
        # best first within each row, and at most k of them: the rest could never be kept
        order = torch.from_numpy(np.lexsort((-keys.numpy(), rows.numpy())))  # numpy: torch's CPU sort is slow
        rows, keys, cand = rows[order], keys[order], cand[order]
        rows_u, at, counts = torch.unique_consecutive(rows, return_inverse=True, return_counts=True)
        n_rows, k = rows_u.numel(), self.k
        rank = _rank_in_row(at, counts)
        sel = rank < k
        at, keys, cand, rank = at[sel], keys[sel], cand[sel], rank[sel]
        held = self.keys(rows_u)  # [rows, k]: hashed once per offer (the hashing is the cost)
        offered = torch.full((n_rows, k), INVALID, dtype=torch.int64)
        offered[at, rank] = keys
        offered_cand = torch.zeros((n_rows, k), dtype=torch.int64)
        offered_cand[at, rank] = cand
        best = torch.topk(torch.cat([held, offered], dim=1), k, dim=1)
        self.floor[rows_u] = best.values.min(dim=1).values
        kept = torch.zeros((n_rows, 2 * k), dtype=torch.bool).scatter_(1, best.indices, True)
        incoming = kept[:, k:] & (offered >= 0)
        free = ~(kept[:, :k] & (held >= 0))  # slots whose entry was not kept, or empty
        # the j-th incoming entry of a row takes that row's j-th free slot (there are enough:
        # k = kept held entries + kept offered ones)
        in_row, in_col = incoming.nonzero(as_tuple=True)
        free_row, free_slot = free.nonzero(as_tuple=True)
        slot_of = torch.zeros((n_rows, k), dtype=torch.int64)
        slot_of[free_row, _rank_in_row(free_row, free.sum(dim=1))] = free_slot
        slot = slot_of[in_row, _rank_in_row(in_row, incoming.sum(dim=1))]
        f, kk, c = rows_u[in_row], offered[in_row, in_col], offered_cand[in_row, in_col]
        if self.hashed:
            self.win[f, slot] = key_window(kk).to(torch.int32)
        else:
            self.key[f, slot] = kk
        if self.off is None:
            return
        flat = f * k + slot
        pos, val, lengths = runs(c)
        start = arena.append(pos, val, owners)
        self.off.view(-1)[flat] = (start + torch.cumsum(lengths, 0) - lengths).to(torch.int32)
        self.nnz.view(-1)[flat] = lengths.to(torch.int16)

    # -- checkpoints -----------------------------------------------------------------------------
    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {f"{prefix}/win": self.win} if self.hashed else {f"{prefix}/key": self.key}
        if self.off is not None:
            out[f"{prefix}/off"] = self.off
            out[f"{prefix}/nnz"] = self.nnz
        return out

    def load(self, prefix: str, state: dict[str, torch.Tensor]) -> None:
        if self.hashed:
            self.win = state[f"{prefix}/win"]
        else:
            self.key = state[f"{prefix}/key"]
        if self.off is not None:
            self.off = state[f"{prefix}/off"]
            self.nnz = state[f"{prefix}/nnz"]
        if self.k:
            self._refresh(torch.arange(self.n))
