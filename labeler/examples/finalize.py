"""Write a finished store from the block states of a whole SAE (one run, or merged shards).

Everything written is in a canonical order (entries by key, pool entries by window and
position), so the files depend only on what was kept, never on how the work was split.
Blocks are written and dropped one at a time; what the hard negatives need afterwards
(top windows, peak tokens, Bloom filters) is a few hundred bytes per feature.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np
import torch

from labeler.examples import hard_negatives
from labeler.examples.accumulate import FIXED_SCALE, HIST_EDGES, SPLITS, BlockState, block_bounds, in_pool, split_of
from labeler.examples.identity import store_identity
from labeler.examples.neighbours import nearest_by_cosine
from labeler.examples.reservoir import gather_runs, key_window, rank_float
from labeler.examples.storage import Location
from labeler.examples.store import FORMAT_VERSION, MANIFEST, FeatureStore
from labeler.examples.stream import pool_rates


_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64",
           np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16", np.dtype(np.uint8): "U8"}


def _save(loc: Location, name: str, tensors: dict) -> None:
    """Write a safetensors file array by array (``safetensors.save_file`` first copies every
    array into one bytes object: for a 1M-feature decoder that is another 1.5 GB), then publish."""
    import json

    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    header, at = {}, 0
    for k, v in arrays.items():
        header[k] = {"dtype": _DTYPES[v.dtype], "shape": list(v.shape), "data_offsets": [at, at + v.nbytes]}
        at += v.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    p = loc.path(name)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(len(blob).to_bytes(8, "little"))
        fh.write(blob)
        for v in arrays.values():
            v.tofile(fh)
    tmp.replace(p)
    loc.put(name)


def _entries(blk: BlockState, s: str, kind: str):
    """Entries of one reservoir best first: (windows [n, k] int32, key [n, k], runs' pos/val, ptr)."""
    r = blk.res[(s, kind)]
    keys = r.keys(torch.arange(blk.n))
    keys, slot = torch.sort(keys, dim=1, descending=True, stable=True)
    wins = torch.where(keys >= 0, key_window(keys), -1).to(torch.int32)
    off = r.off.gather(1, slot).reshape(-1).to(torch.int64)
    nnz = torch.where(keys >= 0, r.nnz.gather(1, slot).to(torch.int64), 0).reshape(-1)
    idx = gather_runs(off, nnz)
    ptr = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(nnz, 0)])
    return wins, keys, blk.arena.pos[idx], blk.arena.val[idx], ptr


def _peak_positions(pos: torch.Tensor, val: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
    """Position of the largest value of each run (first on ties); -1 for empty runs."""
    n_runs = ptr.numel() - 1
    lengths = ptr[1:] - ptr[:-1]
    run = torch.repeat_interleave(torch.arange(n_runs), lengths)
    v = val.float()
    best = torch.full((n_runs,), -float("inf")).scatter_reduce_(0, run, v, "amax")
    at_best = v == best[run]
    big = torch.iinfo(torch.int64).max
    peak = torch.full((n_runs,), big, dtype=torch.int64).scatter_reduce_(
        0, run[at_best], pos[at_best].to(torch.int64), "amin")
    return torch.where(peak == big, -1, peak)


class StoreWriter:
    """Collects what the final steps need while blocks are written one by one."""

    def __init__(self, loc: Location, manifest: dict, *, shard_size: int, tokens: np.ndarray):
        self.loc, self.manifest, self.shard_size = loc, manifest, shard_size
        self.tokens = tokens
        self.stats: list[dict[str, np.ndarray]] = []
        self.fhash: list[np.ndarray] = []
        self.bloom: list[np.ndarray] = []
        self.top_windows: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        self.peaks: list[np.ndarray] = []
        self.files: list[list[int]] = []

    def write_block(self, blk: BlockState, output_tokens: dict[str, np.ndarray] | None) -> None:
        seen = int(self.manifest["tokens_seen"])
        arrays: dict[str, np.ndarray] = {}
        peak_tok = []
        for s in SPLITS:
            for kind in ("top", "sample"):
                wins, keys, pos, val, ptr = _entries(blk, s, kind)
                arrays[f"{s}/{kind}/win"] = wins.numpy()
                arrays[f"{s}/{kind}/ptr"] = ptr.numpy()
                arrays[f"{s}/{kind}/pos"] = pos.numpy()
                arrays[f"{s}/{kind}/val"] = val.numpy()
                if kind == "top":
                    arrays[f"{s}/top/max"] = np.where(wins.numpy() >= 0, rank_float((keys >> 32).numpy()), 0)
                    self.top_windows[s].append(wins.numpy())
                    peak = _peak_positions(pos, val, ptr).reshape(wins.shape).numpy()
                    w = wins.numpy()
                    ok = (w >= 0) & (peak >= 0)
                    t = np.full(w.shape, -1, dtype=np.int64)
                    t[ok] = self.tokens[w[ok], peak[ok]]
                    peak_tok.append(t)
        self.peaks.append(hard_negatives.peak_token_sets(np.concatenate(peak_tok, axis=1)))
        pool = blk.pool_entries()
        order = np.lexsort((pool["pos"].numpy(), pool["win"].numpy(), pool["feat"].numpy()))
        pf = pool["feat"].numpy()[order]
        pool_ptr = np.concatenate([[0], np.cumsum(np.bincount(pf, minlength=blk.n))]).astype(np.int64)
        count = blk.count.numpy()
        mx = blk.max.numpy()
        quiet_tokens = blk.nonzero.numpy() < seen  # some token had exactly 0
        self.stats.append({
            "count": count, "tokens_seen": np.full(blk.n, seen, dtype=np.int64),
            "max": np.where(quiet_tokens, np.maximum(mx, 0), mx).astype(np.float32),
            "mean": (blk.sum.numpy() / FIXED_SCALE / max(seen, 1)).astype(np.float32),
            "mean_active": (blk.pos_sum.numpy() / FIXED_SCALE / np.maximum(count, 1)).astype(np.float32),
            "hist": blk.hist.numpy(), "active_windows": blk.active_windows.numpy()})
        self.fhash.append(blk.fhash.numpy())
        self.bloom.append(blk.bloom.numpy())
        for a in range(0, blk.n, self.shard_size):
            b = min(blk.n, a + self.shard_size)
            part = {}
            for name, v in arrays.items():
                if name.endswith("/ptr"):
                    k = (len(v) - 1) // blk.n
                    lo, hi = int(v[a * k]), int(v[b * k])
                    part[name] = v[a * k:b * k + 1] - lo
                    stem = name[:-4]
                    part[f"{stem}/pos"] = arrays[f"{stem}/pos"][lo:hi]
                    part[f"{stem}/val"] = arrays[f"{stem}/val"][lo:hi]
                elif not name.endswith(("/pos", "/val")):
                    part[name] = v[a:b]
            lo, hi = int(pool_ptr[a]), int(pool_ptr[b])
            part["random/ptr"] = pool_ptr[a:b + 1] - lo
            for k in ("win", "pos", "val"):
                part[f"random/{k}"] = pool[k].numpy()[order][lo:hi]
            if output_tokens is not None:
                part.update({k: v[a:b] for k, v in output_tokens.items()})
            s0, e0 = blk.start + a, blk.start + b
            _save(self.loc, f"features/{s0}-{e0}.safetensors", part)
            self.files.append([s0, e0])

    def finish(self, *, decoder: torch.Tensor | None, n_neighbours: int, sizes: dict, seed: int,
               split_percent: tuple[int, int, int], pool_rates, neighbour_device: str = "cpu",
               log: Callable[[str], None] = print) -> None:
        st = {k: np.concatenate([s[k] for s in self.stats]) for k in self.stats[0]}
        st["hist_edges"] = HIST_EDGES
        _save(self.loc, "stats.safetensors", st)
        n_windows = int(self.manifest["n_windows"])
        ids = np.arange(n_windows, dtype=np.int64)
        pool = ids[in_pool(ids, seed, split_of(ids, seed, split_percent), np.asarray(pool_rates))]
        _save(self.loc, "random.safetensors", {"windows": pool.astype(np.int32)})
        neighbours = None
        if decoder is not None and n_neighbours > 0:
            t = time.monotonic()
            idx, val = nearest_by_cosine(decoder, n_neighbours, device=neighbour_device)
            _save(self.loc, "neighbours.safetensors", {"indices": idx.numpy(), "values": val.numpy()})
            neighbours = idx.numpy()
            self.manifest.setdefault("timing", {})["neighbours_s"] = round(time.monotonic() - t, 3)
        if self.manifest["sae"]["architecture"] != "neurons":
            index = hard_negatives.TokenIndex(self.tokens, seed, split_percent)
            hn = hard_negatives.select(index, fhash=np.concatenate(self.fhash), bloom=np.concatenate(self.bloom),
                                       peak_tokens=np.concatenate(self.peaks),
                                       top_windows={s: np.concatenate(v) for s, v in self.top_windows.items()},
                                       neighbours=neighbours, sizes=sizes)
            _save(self.loc, "hard_negatives.safetensors", hn)
        self.manifest.update({"status": "complete", "format_version": FORMAT_VERSION, "feature_files": self.files,
                              "neighbours": neighbours.shape[1] if neighbours is not None else 0})
        self.loc.write_json(MANIFEST, self.manifest)
        FeatureStore(self.loc.url)  # refuse to call it finished if it does not open


def write_tokens(loc: Location, chunks: Iterable[np.ndarray], n_windows: int, ctx_len: int) -> np.ndarray:
    """Concatenate token chunks (in window order) into ``tokens.npy``; returns it memory-mapped."""
    p = loc.path("tokens.npy")
    tmp = p.with_name("tokens.tmp.npy")
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int32, shape=(n_windows, ctx_len))
    at = 0
    for c in chunks:
        mm[at:at + len(c)] = c
        at += len(c)
    if at != n_windows:
        raise RuntimeError(f"token chunks cover {at} windows, expected {n_windows}")
    mm.flush()
    del mm
    tmp.replace(p)
    loc.put("tokens.npy")
    return np.load(p, mmap_mode="r")


def token_strings(tokenizer) -> list[str]:
    """Display string of every token id, with the leading space it has inside running text."""
    vocab_size = len(tokenizer)
    anchor = tokenizer("a", add_special_tokens=False)["input_ids"][:1] or [0]
    base = tokenizer.decode(anchor)
    pairs = tokenizer.batch_decode([anchor + [i] for i in range(vocab_size)], clean_up_tokenization_spaces=False)
    return [p[len(base):] if p.startswith(base) else tokenizer.decode([i]) for i, p in enumerate(pairs)]


def finalize_store(loc: Location, manifest: dict, cfg, tokenizer_or_vocab, folders: list,
                   *, blocks=None, output_folders: list | None = None,
                   pieces: list[tuple[int, int]] | None = None) -> None:
    """``cfg`` is the run's CollectConfig. Write the store from the state folders (corpus slices of one feature range each, or the
    in-memory ``blocks`` of a single run), then publish it."""
    from safetensors.numpy import load_file

    t0 = time.monotonic()
    token_folders = [f for f in folders if f.writes_tokens]
    chunks = sorted((a, b, f.loc.fetch(name)) for f in token_folders for a, b, name in f.token_files())
    n_windows = chunks[-1][1] if chunks else 0
    tokens = write_tokens(loc, (np.load(p) for _, _, p in chunks), n_windows, cfg.ctx_len)
    vocab = tokenizer_or_vocab if isinstance(tokenizer_or_vocab, list) else token_strings(tokenizer_or_vocab)
    loc.write_json("vocab.json", vocab)
    manifest.update({"tokens_seen": n_windows * cfg.ctx_len, "n_windows": n_windows,
                     "store_identity": store_identity(manifest, tokens)})
    writer = StoreWriter(loc, manifest, shard_size=cfg.shard_size, tokens=tokens)
    nonneg = manifest["sae"]["architecture"] != "neurons"
    out_folders = output_folders if output_folders is not None else [(0, folders[0])]
    decoders, outputs = [], {}
    for start, f in out_folders:
        if f.loc.exists(f"{f.prefix}/decoder.safetensors"):
            decoders.append((start, load_file(str(f.loc.fetch(f"{f.prefix}/decoder.safetensors")))["directions"]))
        if f.loc.exists(f"{f.prefix}/output_tokens.safetensors"):
            outputs[start] = load_file(str(f.loc.fetch(f"{f.prefix}/output_tokens.safetensors")))
    out_starts = sorted(outputs)
    F = int(manifest["sae"]["n_features"])
    if pieces is None:
        pieces = blocks.bounds if blocks is not None else block_bounds(0, F, cfg.block)
    for i, (a, b) in enumerate(pieces):
        if blocks is not None:
            blk = blocks.blocks[i]
            blocks.blocks[i] = None  # type: ignore[call-overload]  # written: free it
        else:
            blk = _merged_block(folders, a, b, cfg, nonneg)
        o = None
        if out_starts:
            s0 = max(s for s in out_starts if s <= a)
            o = {k: v[a - s0:b - s0] for k, v in outputs[s0].items()}
        writer.write_block(blk, o)
        del blk
    decoder = None
    if decoders:
        decoders.sort(key=lambda t: t[0])
        if len(decoders) == 1:
            decoder = torch.from_numpy(decoders.pop()[1])
        else:  # filled piece by piece: never two full copies at once
            full = np.empty((F, decoders[0][1].shape[1]), dtype=np.float32)
            while decoders:
                start, d = decoders.pop(0)
                full[start:start + len(d)] = d
                del d
            decoder = torch.from_numpy(full)
        _save(loc, "decoder.safetensors", {"directions": decoder.numpy()})
    manifest.setdefault("timing", {})
    writer.finish(decoder=decoder, n_neighbours=cfg.neighbours, sizes=manifest["settings"]["sizes"], seed=cfg.seed,
                  split_percent=cfg.split_percent, pool_rates=pool_rates(cfg.pool_sizes(nonneg), cfg.n_target,
                                                                         cfg.split_percent),
                  neighbour_device=cfg.device)
    manifest["timing"]["finalize_s"] = round(time.monotonic() - t0, 3)
    loc.write_json(MANIFEST, manifest)
    for name in ("checkpoint", "parts"):  # the state folders are in the store now
        loc.remove(name)


def _merged_block(folders: list, a: int, b: int, cfg, nonneg: bool) -> BlockState:
    """The block [a, b) absorbed from every state folder (corpus slice) that holds it."""
    blk = BlockState(a, b - a, cfg.seed, nonneg=nonneg, sizes=cfg.sizes, ctx_len=cfg.ctx_len)
    for f in folders:
        fa, fb = f.position["features"]
        if fa <= a and b <= fb:
            blk.absorb(f.load_block(a, b))
    return blk
