"""The on-disk store written by ``labeler collect`` and read lazily by every later stage.

Layout (see docs/ARCHITECTURE.md)::

    manifest.json                 settings, model, SAE, corpus, versions, status
    tokens.npy                    int32 [n_windows, ctx_len] (memory-mapped when reading)
    vocab.json                    token id -> display string (no tokenizer needed to read)
    stats.safetensors             per-feature statistics [F] and histograms [F, bins]
    features/<start>-<end>.safetensors   per-split reservoirs of that feature range
    decoder.safetensors           unit-norm decoder directions [F, d_in] (absent for neurons)
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from labeler.core.errors import InputError
from labeler.records import ActivationExample, FeatureRecord, FeatureStats

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False))
    os.replace(tmp, path)


def save_safetensors_atomic(tensors: dict, path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def quantile_strata(maxes: np.ndarray, n_bins: int, per_bin: int) -> list[tuple[int, int]]:
    """Pick up to ``per_bin`` samples per quantile bin of max activation.

    ``maxes`` are the random sample's max activations in sampling order; returns
    (position in sample, bin) pairs, lowest bin first, sampling order within a bin.
    """
    if len(maxes) == 0:
        return []
    cuts = np.quantile(maxes, np.linspace(0, 1, n_bins + 1)[1:-1])
    bins = np.searchsorted(cuts, maxes, side="right")
    out: list[tuple[int, int]] = []
    for q in range(n_bins):
        pos = np.nonzero(bins == q)[0][:per_bin]
        out.extend((int(p), q) for p in pos)
    return out


class FeatureStore:
    """Read a finished store: ``feature(i)`` loads only the shard slice holding feature i."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        mpath = self.path / MANIFEST
        if not mpath.exists():
            raise InputError(f"{self.path} is not a labeler store (no {MANIFEST}); create one with `labeler collect`")
        try:
            self.manifest: dict = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"store {self.path}: {MANIFEST} is corrupt ({e})") from None
        if self.manifest.get("status") != "complete":
            raise InputError(
                f"store {self.path} is unfinished (status {self.manifest.get('status')!r}); "
                f"run the same `labeler collect` command again to resume it"
            )
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise InputError(f"store {self.path}: format_version {self.manifest.get('format_version')} is not supported")
        st = self.manifest["settings"]
        self.n_features: int = int(self.manifest["sae"]["n_features"])
        self.ctx_len: int = int(st["ctx_len"])
        self.shard_size: int = int(st["shard_size"])
        self.sizes: dict = st["sizes"]
        self._shards: OrderedDict[int, object] = OrderedDict()
        self._tokens = None
        self._vocab: list[str] | None = None
        self._stats: dict[str, np.ndarray] | None = None

    # -- names ---------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return str(self.manifest["model"]["name"])

    @property
    def sae_name(self) -> str:
        return str(self.manifest["sae"]["name"])

    @property
    def n_windows(self) -> int:
        return int(self.manifest["n_windows"])

    # -- lazy pieces ---------------------------------------------------------------------------
    @property
    def tokens(self) -> np.ndarray:
        if self._tokens is None:
            try:
                self._tokens = np.load(self.path / "tokens.npy", mmap_mode="r")
            except (OSError, ValueError) as e:
                raise InputError(f"store {self.path}: tokens.npy is missing or corrupt ({e})") from None
        return self._tokens

    @property
    def vocab(self) -> list[str]:
        if self._vocab is None:
            try:
                self._vocab = json.loads((self.path / "vocab.json").read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise InputError(f"store {self.path}: vocab.json is missing or corrupt ({e})") from None
        return self._vocab

    def _load_stats(self) -> dict[str, np.ndarray]:
        if self._stats is None:
            from safetensors.numpy import load_file

            try:
                self._stats = load_file(str(self.path / "stats.safetensors"))
            except Exception as e:
                raise InputError(f"store {self.path}: stats.safetensors is missing or corrupt ({e})") from None
        return self._stats

    def _shard(self, index: int):
        from safetensors import safe_open

        if index in self._shards:
            self._shards.move_to_end(index)
            return self._shards[index]
        start = index * self.shard_size
        end = min(start + self.shard_size, self.n_features)
        p = self.path / "features" / f"{start}-{end}.safetensors"
        try:
            handle = safe_open(str(p), framework="numpy")
        except Exception as e:
            raise InputError(f"store {self.path}: shard {p.name} is missing or corrupt ({e})") from None
        self._shards[index] = handle
        while len(self._shards) > 4:
            self._shards.popitem(last=False)
        return handle

    # -- public API ----------------------------------------------------------------------------
    def all_stats(self) -> dict[str, np.ndarray]:
        s = self._load_stats()
        seen = s["tokens_seen"].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            density = np.where(seen > 0, s["count"] / seen, 0.0)
        return {"count": s["count"].copy(), "density": density, "max": s["max"].copy(),
                "mean": s["mean"].copy(), "mean_active": s["mean_active"].copy()}

    def feature_stats(self, i: int) -> FeatureStats:
        s = self._load_stats()
        return FeatureStats(
            count=int(s["count"][i]), tokens_seen=int(s["tokens_seen"][i]), max=float(s["max"][i]),
            mean=float(s["mean"][i]), mean_active=float(s["mean_active"][i]),
            hist_edges=[float(x) for x in s["hist_edges"]],
            hist_counts=[int(x) for x in s["hist"][i]],
        )

    def decoder_directions(self) -> np.ndarray | None:
        p = self.path / "decoder.safetensors"
        if not p.exists():
            return None
        from safetensors.numpy import load_file

        try:
            return load_file(str(p))["directions"]
        except Exception as e:
            raise InputError(f"store {self.path}: decoder.safetensors is corrupt ({e})") from None

    def features(self, indices: Iterable[int]) -> Iterator[FeatureRecord]:
        for i in indices:
            yield self.feature(i)

    def feature(self, i: int) -> FeatureRecord:
        i = int(i)
        if not 0 <= i < self.n_features:
            raise InputError(f"feature {i} is out of range: the store has {self.n_features} features (0..{self.n_features - 1})")
        shard = self._shard(i // self.shard_size)
        row = i - (i // self.shard_size) * self.shard_size
        names = set(shard.keys())

        def get(name: str) -> np.ndarray | None:
            if name not in names:
                return None
            try:
                return shard.get_slice(name)[row : row + 1][0]
            except Exception as e:
                raise InputError(f"store {self.path}: cannot read {name} of feature {i} ({e})") from None

        n_q, per_q = int(self.manifest["settings"]["quantiles"]), int(self.manifest["settings"]["per_quantile"])
        examples: list[ActivationExample] = []
        for split in ("train", "valid", "test"):
            top_key, top_win, top_acts = get(f"{split}/top/key"), get(f"{split}/top/win"), get(f"{split}/top/acts")
            if top_win is not None:
                # descending activation; ties (same token in the same context) by window id
                order = [j for j in np.lexsort((top_win, -top_key)) if top_win[j] >= 0]
                examples += [self._example(top_win[j], top_acts[j], split, "top") for j in order]
            r_key, r_win, r_max, r_acts = (get(f"{split}/random/{x}") for x in ("key", "win", "max", "acts"))
            if r_win is not None:
                order = [j for j in np.argsort(-r_key, kind="stable") if r_win[j] >= 0]
                random_ex = [self._example(r_win[j], r_acts[j], split, "sample") for j in order]
                maxes = np.asarray([r_max[j] for j in order], dtype=np.float64)
                for pos, q in quantile_strata(maxes, n_q, per_q):
                    e = random_ex[pos]
                    examples.append(ActivationExample(window=e.window, tokens=e.tokens, activations=e.activations,
                                                      split=split, kind="quantile", quantile=q, token_ids=e.token_ids))  # type: ignore[arg-type]
                examples += random_ex
            n_key, n_win, n_acts = (get(f"{split}/nonactivating/{x}") for x in ("key", "win", "acts"))
            if n_win is not None:
                order = [j for j in np.argsort(-n_key, kind="stable") if n_win[j] >= 0]
                examples += [self._example(n_win[j], None if n_acts is None else n_acts[j], split, "nonactivating")
                             for j in order]
        vocab = self.vocab
        promoted = get("promoted")
        suppressed = get("suppressed")
        return FeatureRecord(
            feature=i, stats=self.feature_stats(i), examples=examples,
            promoted_tokens=[vocab[t] for t in promoted] if promoted is not None else [],
            suppressed_tokens=[vocab[t] for t in suppressed] if suppressed is not None else [],
        )

    def _example(self, window, acts, split: str, kind: str) -> ActivationExample:
        window = int(window)
        if not 0 <= window < self.n_windows:
            raise InputError(f"store {self.path}: window id {window} out of range (corrupt shard)")
        ids = self.tokens[window].tolist()
        vocab = self.vocab
        values = [0.0] * len(ids) if acts is None else [round(float(a), 4) for a in acts]
        return ActivationExample(window=window, tokens=[vocab[t] for t in ids], activations=values,
                                 split=split, kind=kind, token_ids=ids)  # type: ignore[arg-type]


class StoreCache:
    """Open stores by resolved path, each opened once (the runner, the API and the pages keep
    one of these: opening reads the manifest and statistics)."""

    def __init__(self) -> None:
        self._stores: dict[str, FeatureStore] = {}
        self._lock = threading.Lock()

    def get(self, path: str | Path) -> FeatureStore:
        key = str(Path(path).expanduser().resolve())
        with self._lock:
            store = self._stores.get(key)
        if store is None:
            store = FeatureStore(key)
            with self._lock:
                store = self._stores.setdefault(key, store)
        return store
