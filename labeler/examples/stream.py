"""The streaming engine shared by every kind of collect run (one store, several SAEs, a shard).

A :class:`Sink` is one SAE's feature range fed from one hookpoint: it turns each batch's
encoding into the nonzero (token, feature, value) triples of every feature block and hands
them to the block states.  Its :class:`StateFolder` is the checkpoint (and, for a shard, the
finished result): one file per block of one generation, the tokens of the windows seen so far
in chunk files, and ``position.json`` written last, naming the generation that is complete.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from labeler.core.errors import InputError
from labeler.examples.accumulate import SPLITS, Accumulator, in_pool, split_of
from labeler.examples.storage import Location


# Much of the bookkeeping's cost is per call (a few dozen tensor operations per block and
# reservoir), so batches are handed to it together once this many nonzeros are pending: at 16k
# latents (65k nonzeros a batch) 2^16 -> 2^18 -> 2^20 took it from 4.4 s to 2.9 s to 2.3 s per
# 131k tokens; the pending triples and their temporaries cost ~150 MB at 2^20 (2^22: 700 MB, slower).
UPDATE_NONZEROS = 1 << 20


@dataclass
class Sink:
    """One SAE (encoder) over features [acc.start, acc.stop), reading hookpoint ``hook_index``.

    ``feed`` encodes a batch; the block states take the pending batches' nonzeros together
    (``flush``): the kept sets, sums and filters do not depend on how batches are grouped, so
    the result is the same, and ``acc`` counts a window only once its nonzeros are in."""

    encoder: object
    acc: Accumulator
    folder: "StateFolder"
    hook_index: int = 0
    pool_rates: torch.Tensor = field(default_factory=lambda: torch.ones(3))
    update_threads: int | None = None  # torch threads for the bookkeeping (None: torch's own, as the encode)
    model_s: float = 0.0  # seconds in encode (for the manifest's timing)
    update_s: float = 0.0
    # per pending batch: its window ids, pool mask and, per block, (feat, tok, val) sorted by (feat, tok)
    pending: list = field(default_factory=list)
    pending_nnz: int = 0

    def feed(self, x: torch.Tensor, window_ids: torch.Tensor) -> None:
        """x [B, L, d] at the hookpoint, window_ids [B] int64."""
        acc, enc = self.acc, self.encoder
        xs = x.reshape(-1, x.shape[-1])
        split = split_of(window_ids, acc.seed, acc.split_percent)
        pool_mask = in_pool(window_ids, acc.seed, split, self.pool_rates)
        t0 = time.perf_counter()
        per_block = []
        if enc.arch.select:  # selections (TopK and kin) come back sparse: encode them once
            coded = enc.encode(xs, features=(acc.start, acc.stop))
            values, indices = coded.values, coded.indices
            keep = values > 0
            tok = torch.arange(xs.shape[0], device=values.device)[:, None].expand_as(indices)[keep]
            feat, val = indices[keep], values[keep].float()
            feat, tok, val = feat.cpu(), tok.cpu(), val.cpu()
            # numpy's stable sort: torch's CPU argsort is many times slower on these sizes
            order = torch.from_numpy(np.argsort((feat * xs.shape[0] + tok).numpy(), kind="stable"))
            feat, tok, val = feat[order], tok[order], val[order]
            cuts = torch.searchsorted(feat, torch.tensor([a - acc.start for a, _ in acc.bounds] + [acc.stop - acc.start]))
            for i, blk in enumerate(acc.blocks):
                s, e = int(cuts[i]), int(cuts[i + 1])
                per_block.append((feat[s:e] - (blk.start - acc.start), tok[s:e], val[s:e]))
        else:
            for blk in acc.blocks:
                # encode the whole aligned block this one lies in: every run that covers a feature
                # computes it with the same matmul shape, hence bit for bit the same value
                lo = blk.start // acc.block * acc.block
                hi = min(enc.n_features, lo + acc.block)
                dense = enc.encode(xs, features=(lo, hi)).dense[:, blk.start - lo:blk.start - lo + blk.n].T
                nz = (dense > 0) if blk.nonneg else (dense != 0)
                feat, tok = nz.nonzero(as_tuple=True)
                val = dense[feat, tok].float()
                per_block.append((feat.cpu(), tok.cpu(), val.cpu()))
        self.model_s += time.perf_counter() - t0
        self.pending.append((window_ids, pool_mask, per_block))
        self.pending_nnz += sum(int(f.numel()) for f, _, _ in per_block)
        if self.pending_nnz >= UPDATE_NONZEROS:
            self.flush()

    def checkpoint(self, *, status: str = "running") -> None:
        """The pending batches into the state, then the state into its folder."""
        self.flush()
        self.folder.save(self.acc, status=status)

    def flush(self) -> None:
        """Hand the pending batches to the block states (before a checkpoint, and at the end)."""
        if not self.pending:
            return
        t0 = time.perf_counter()
        acc, L = self.acc, self.acc.L
        window_ids = torch.cat([w for w, _, _ in self.pending])
        pool_mask = torch.cat([m for _, m, _ in self.pending])
        offsets = np.cumsum([0] + [int(w.numel()) * L for w, _, _ in self.pending[:-1]])
        with threads(self.update_threads):
            for i, blk in enumerate(acc.blocks):
                parts = [batch[i] for _, _, batch in self.pending]
                feat = torch.cat([f for f, _, _ in parts])
                tok = torch.cat([t + int(off) for (_, t, _), off in zip(parts, offsets)])
                val = torch.cat([v for _, _, v in parts])  # no re-sort: see BlockState.update
                blk.update(feat, tok, val, window_ids, pool_mask, acc.split_percent)
        acc.advance(int(window_ids.numel()))
        self.pending, self.pending_nnz = [], 0
        self.update_s += time.perf_counter() - t0


def pool_rates(pool_sizes: dict[str, int], n_target: int, split_percent: tuple[int, int, int]) -> torch.Tensor:
    """Per split, the share of its windows that are shared random windows."""
    return torch.tensor([min(1.0, pool_sizes[s] / max(1.0, n_target * pct / 100)) if pct else 0.0
                         for s, pct in zip(SPLITS, split_percent)], dtype=torch.float64)


class StateFolder:
    """A sink's checkpoint in its store: ``<prefix>/position.json``, ``<prefix>/gen-<g>/block-<a>-<b>``
    and ``<prefix>/tokens/<w0>-<w1>.npy`` (only when ``writes_tokens``)."""

    def __init__(self, loc: Location, prefix: str, *, writes_tokens: bool, features: tuple[int, int],
                 first_window: int = 0):
        self.loc, self.prefix, self.writes_tokens = loc, prefix, writes_tokens
        self.first_window = first_window
        self.pending_tokens: list[np.ndarray] = []
        self.position: dict = {"gen": 0, "windows_seen": 0, "tokens_seen": 0, "token_chunks": [],
                               "status": "running", "features": list(features), "first_window": first_window}

    def read_position(self) -> dict | None:
        return self.loc.read_json(f"{self.prefix}/position.json")

    def add_tokens(self, ids: np.ndarray) -> None:
        if self.writes_tokens:
            self.pending_tokens.append(np.asarray(ids, dtype=np.int32))

    def _write_tokens(self) -> list[list[int]]:
        """Token chunks so far, the pending windows written as a new chunk file."""
        chunks = list(self.position["token_chunks"])
        if self.pending_tokens:
            ids = np.concatenate(self.pending_tokens)
            w0 = chunks[-1][1] if chunks else self.first_window
            name = f"{self.prefix}/tokens/{w0}-{w0 + len(ids)}.npy"
            self.loc.path(name).parent.mkdir(parents=True, exist_ok=True)
            np.save(self.loc.path(name), ids)
            self.loc.put(name)
            chunks.append([w0, w0 + len(ids)])
            self.pending_tokens = []
        return chunks

    def flush_tokens(self) -> None:
        """Write the pending tokens without a new generation (the end of a run that finalizes
        from memory: a crash after this still resumes from the last full checkpoint)."""
        self.position = {**self.position, "token_chunks": self._write_tokens()}

    def save(self, acc: Accumulator, *, status: str = "running") -> None:
        """Write every block of ``acc`` as a new generation, then the pointer to it."""
        from safetensors.torch import save_file

        gen = int(self.position["gen"]) + 1
        for blk in acc.blocks:
            name = f"{self.prefix}/gen-{gen}/block-{blk.start}-{blk.start + blk.n}.safetensors"
            p = self.loc.path(name)
            p.parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in blk.state().items()}, str(p))
            self.loc.put(name)
        chunks = self._write_tokens()
        old = self.position["gen"]
        self.position = {**self.position, "gen": gen, "windows_seen": acc.windows_seen,
                         "tokens_seen": acc.tokens_seen, "token_chunks": chunks, "status": status}
        self.loc.write_json(f"{self.prefix}/position.json", self.position)
        if old:
            self.loc.remove(f"{self.prefix}/gen-{old}")

    def load_block(self, start: int, stop: int, position: dict | None = None) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        gen = (position or self.position)["gen"]
        name = f"{self.prefix}/gen-{gen}/block-{start}-{stop}.safetensors"
        try:
            return load_file(str(self.loc.fetch(name)))
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"checkpoint {self.loc}/{name} is corrupt ({e}); rerun with --force to start over") from None

    def resume(self, acc: Accumulator) -> bool:
        """Load the last complete generation into ``acc``; False when there is none."""
        pos = self.read_position()
        if not pos or not pos.get("gen"):
            return False
        for i, blk in enumerate(acc.blocks):
            fresh = acc.new_block(i)
            fresh.load(self.load_block(blk.start, blk.start + blk.n, pos))
            acc.blocks[i] = fresh
        acc.windows_seen, acc.tokens_seen = int(pos["windows_seen"]), int(pos["tokens_seen"])
        self.position = pos
        return True

    def token_files(self) -> list[tuple[int, int, str]]:
        return [(int(a), int(b), f"{self.prefix}/tokens/{a}-{b}.npy") for a, b in self.position["token_chunks"]]


class InterruptFlag:
    """Turn SIGINT into a flag checked between batches (a second Ctrl-C interrupts at once)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class threads:
    """Temporarily set torch's intra-op thread count."""

    def __init__(self, n: int | None):
        self.n, self.before = n, torch.get_num_threads()

    def __enter__(self):
        if self.n and self.n != self.before:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.n and self.n != self.before:
            torch.set_num_threads(self.before)
