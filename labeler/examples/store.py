"""The on-disk store written by ``labeler collect`` and read lazily by every later stage.

Layout (see docs/ARCHITECTURE.md); a folder, or an fsspec URL (``s3://...``) read through a
local cache::

    manifest.json                 settings, model, SAE, corpus, versions, status, feature_files
    tokens.npy                    int32 [n_windows, ctx_len] (memory-mapped when reading)
    vocab.json                    token id -> display string (no tokenizer needed to read)
    stats.safetensors             per-feature statistics [F] and histograms [F, bins]
    features/<start>-<end>.safetensors   per split: top and sample windows with their nonzero
                                  activations (ptr/pos/val), each feature's nonzero activations
                                  on the shared random windows, promoted/suppressed tokens
    random.safetensors            the shared random windows (every split)
    hard_negatives.safetensors    per split [F, n] windows where the feature never fires
    neighbours.safetensors        indices int32 [F, N], values float32 [F, N]: nearest features
                                  by decoder cosine, best first, self excluded
    decoder.safetensors           unit-norm decoder directions [F, d_in] (absent for neurons)
"""

from __future__ import annotations

import bisect
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from labeler.core.errors import InputError
from labeler.examples.reservoir import feature_hash, pool_order_hash
from labeler.examples.storage import Location, is_url
from labeler.records import ActivationExample, FeatureRecord, FeatureStats

FORMAT_VERSION = 2
NEIGHBOURS_COMPUTE_MAX = 32_768  # F^2 work: computed on demand only for stores up to this size
MANIFEST = "manifest.json"
_SPLITS = ("train", "valid", "test")


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
    """Read a finished store: ``feature(i)`` loads only the slices of the file holding feature i."""

    def __init__(self, path: str | Path):
        self.loc = Location(path)
        self.path = self.loc.local if not self.loc.remote else self.loc.url
        manifest = self.loc.read_json(MANIFEST, refresh=True) if self.loc.exists(MANIFEST) else None
        if manifest is None:
            raise InputError(f"{self.loc} is not a labeler store (no {MANIFEST}); create one with `labeler collect`")
        self.manifest: dict = manifest
        if self.manifest.get("status") == "failed":
            raise InputError(f"store {self.loc}: its collect failed ({self.manifest.get('error')}); fix that and run "
                             f"the same `labeler collect` command again")
        if self.manifest.get("status") != "complete":
            raise InputError(
                f"store {self.loc} is unfinished (status {self.manifest.get('status')!r}); "
                f"run the same `labeler collect` command again to resume it"
            )
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise InputError(f"store {self.loc}: format_version {self.manifest.get('format_version')} is not supported "
                             f"(this labeler reads version {FORMAT_VERSION}); collect it again with --force")
        st = self.manifest["settings"]
        self.n_features: int = int(self.manifest["sae"]["n_features"])
        self.ctx_len: int = int(st["ctx_len"])
        self.sizes: dict = st["sizes"]
        self.seed: int = int(st["seed"])
        self.files: list[list[int]] = [list(map(int, f)) for f in self.manifest["feature_files"]]
        self._starts = [f[0] for f in self.files]
        self._shards: OrderedDict[int, object] = OrderedDict()
        self._tokens = None
        self._vocab: list[str] | None = None
        self._stats: dict[str, np.ndarray] | None = None
        self._pool: dict[str, np.ndarray] | None = None
        self._extra: dict[str, object] = {}
        self._lock = threading.Lock()

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
    def _local(self, name: str) -> Path:
        try:
            return self.loc.fetch(name)
        except OSError as e:
            raise InputError(f"store {self.loc}: cannot read {name} ({e})") from None

    @property
    def tokens(self) -> np.ndarray:
        if self._tokens is None:
            try:
                self._tokens = np.load(self._local("tokens.npy"), mmap_mode="r")
            except (OSError, ValueError) as e:
                raise InputError(f"store {self.loc}: tokens.npy is missing or corrupt ({e})") from None
        return self._tokens

    @property
    def vocab(self) -> list[str]:
        if self._vocab is None:
            try:
                self._vocab = json.loads(self._local("vocab.json").read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise InputError(f"store {self.loc}: vocab.json is missing or corrupt ({e})") from None
        return self._vocab

    def _tensors(self, name: str, *, optional: bool = False) -> dict[str, np.ndarray] | None:
        """A whole small safetensors file (cached); None when optional and absent."""
        if name not in self._extra:
            from safetensors.numpy import load_file

            if optional and not self.loc.exists(name):
                self._extra[name] = None
            else:
                try:
                    self._extra[name] = load_file(str(self._local(name)))
                except InputError:
                    raise
                except Exception as e:
                    raise InputError(f"store {self.loc}: {name} is missing or corrupt ({e})") from None
        return self._extra[name]  # type: ignore[return-value]

    def _load_stats(self) -> dict[str, np.ndarray]:
        if self._stats is None:
            self._stats = self._tensors("stats.safetensors")
        return self._stats

    def _shard(self, index: int):
        from safetensors import safe_open

        with self._lock:
            if index in self._shards:
                self._shards.move_to_end(index)
                return self._shards[index]
        start, end = self.files[index]
        name = f"features/{start}-{end}.safetensors"
        try:
            handle = safe_open(str(self._local(name)), framework="numpy")
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"store {self.loc}: shard {name} is missing or corrupt ({e})") from None
        with self._lock:
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
        d = self._tensors("decoder.safetensors", optional=True)
        return None if d is None else d["directions"]

    def neighbours(self, *, compute_max_features: int = NEIGHBOURS_COMPUTE_MAX) -> tuple[np.ndarray, np.ndarray] | None:
        """(indices int32 [F, N], values float32 [F, N]) by decoder cosine, best first, itself
        excluded: collect's ``neighbours.safetensors``.  A store collected without them (e.g. a
        million latents on CPU) has them computed here when it has at most
        ``compute_max_features`` features; None for neurons and for larger stores."""
        d = self._tensors("neighbours.safetensors", optional=True)
        if d is not None:
            return d["indices"], d["values"]
        directions = self.decoder_directions()
        if directions is None or len(directions) > compute_max_features:
            return None
        import torch

        from labeler.examples.neighbours import nearest_by_cosine

        unit = torch.from_numpy(np.asarray(directions, dtype=np.float32))
        unit = unit / unit.norm(dim=1, keepdim=True).clamp_min(1e-12)
        indices, values = nearest_by_cosine(unit)
        return indices.numpy(), values.numpy()

    def feature_file(self, i: int) -> tuple[Path, int]:
        """The local file holding feature i's arrays (features/<start>-<end>.safetensors) and its
        row there."""
        fi = bisect.bisect_right(self._starts, int(i)) - 1
        start, end = self.files[fi]
        return self._local(f"features/{start}-{end}.safetensors"), int(i) - start

    def features(self, indices: Iterable[int]) -> Iterator[FeatureRecord]:
        for i in indices:
            yield self.feature(i)

    def feature(self, i: int) -> FeatureRecord:
        i = int(i)
        if not 0 <= i < self.n_features:
            raise InputError(f"feature {i} is out of range: the store has {self.n_features} features (0..{self.n_features - 1})")
        fi = bisect.bisect_right(self._starts, i) - 1
        shard = self._shard(fi)
        row = i - self.files[fi][0]
        names = set(shard.keys())

        def get(name: str, lo: int, hi: int) -> np.ndarray:
            if name not in names:
                raise InputError(f"store {self.loc}: {name} is missing from the shard of feature {i}")
            try:
                return shard.get_slice(name)[lo:hi]
            except Exception as e:
                raise InputError(f"store {self.loc}: cannot read {name} of feature {i} ({e})") from None

        def runs(stem: str, k: int) -> list[np.ndarray]:
            """Dense per-token activations of this feature's k entries of ``stem``."""
            ptr = get(f"{stem}/ptr", row * k, row * k + k + 1)
            pos, val = get(f"{stem}/pos", int(ptr[0]), int(ptr[-1])), get(f"{stem}/val", int(ptr[0]), int(ptr[-1]))
            out = []
            for j in range(k):
                a = np.zeros(self.ctx_len, dtype=np.float32)
                lo, hi = int(ptr[j] - ptr[0]), int(ptr[j + 1] - ptr[0])
                a[pos[lo:hi].astype(np.int64)] = val[lo:hi]
                out.append(a)
            return out

        n_q, per_q = int(self.manifest["settings"]["quantiles"]), int(self.manifest["settings"]["per_quantile"])
        examples: list[ActivationExample] = []
        pool_acts = self._pool_acts(get, row)
        hard = self._tensors("hard_negatives.safetensors", optional=True)
        for split in _SPLITS:
            z = self.sizes[split]
            for kind in ("top", "sample"):
                k = int(z[kind])
                if k == 0:
                    continue
                wins = get(f"{split}/{kind}/win", row, row + 1)[0]
                acts = runs(f"{split}/{kind}", k)
                got = [self._example(w, a, split, kind) for w, a in zip(wins, acts) if w >= 0]
                if kind == "sample":
                    maxes = np.asarray([max(e.activations) for e in got], dtype=np.float64)
                    for p, q in quantile_strata(maxes, n_q, per_q):
                        e = got[p]
                        examples.append(ActivationExample(window=e.window, tokens=e.tokens, activations=e.activations,
                                                          split=split, kind="quantile", quantile=q,  # type: ignore[arg-type]
                                                          token_ids=e.token_ids))
                examples += got
            examples += self._pool_examples(i, split, z, pool_acts)
            if hard is not None:
                examples += [self._example(w, None, split, "hard_negative") for w in hard[split][i] if w >= 0]
        vocab = self.vocab
        promoted = get("promoted", row, row + 1)[0] if "promoted" in names else None
        suppressed = get("suppressed", row, row + 1)[0] if "suppressed" in names else None
        return FeatureRecord(
            feature=i, stats=self.feature_stats(i), examples=examples,
            promoted_tokens=[vocab[t] for t in promoted] if promoted is not None else [],
            suppressed_tokens=[vocab[t] for t in suppressed] if suppressed is not None else [],
        )

    def _pool_acts(self, get, row: int) -> dict[int, np.ndarray]:
        """This feature's activations on the shared random windows it has nonzeros on."""
        ptr = get("random/ptr", row, row + 2)
        lo, hi = int(ptr[0]), int(ptr[1])
        wins, pos, val = get("random/win", lo, hi), get("random/pos", lo, hi), get("random/val", lo, hi)
        out: dict[int, np.ndarray] = {}
        for w in np.unique(wins):
            a = np.zeros(self.ctx_len, dtype=np.float32)
            m = wins == w
            a[pos[m].astype(np.int64)] = val[m]
            out[int(w)] = a
        return out

    def _pool_examples(self, i: int, split: str, z: dict, acts: dict[int, np.ndarray]) -> list[ActivationExample]:
        """``random`` (held-out splits) then ``nonactivating`` (the quiet ones among them: a zero
        ``random`` window can be both), from the shared random windows in this feature's own
        seeded order."""
        if self._pool is None:
            from labeler.examples.accumulate import split_of

            w = self._tensors("random.safetensors")["windows"].astype(np.int64)
            self._pool = {"windows": w, "split": split_of(w, self.seed, tuple(self.manifest["settings"]["split_percent"]))}
        si = _SPLITS.index(split)
        w = self._pool["windows"][self._pool["split"] == si]
        order = np.argsort(-pool_order_hash(w, feature_hash(np.int64(i), self.seed)), kind="stable")
        w = w[order]
        n_random = int(z["random"]) if split != "train" else 0
        out = [self._example(x, acts.get(int(x)), split, "random") for x in w[:n_random]]
        quiet = [x for x in w if (a := acts.get(int(x))) is None or float(a.max()) <= 0]
        out += [self._example(x, acts.get(int(x)), split, "nonactivating") for x in quiet[:int(z["nonactivating"])]]
        return out

    def _example(self, window, acts, split: str, kind: str) -> ActivationExample:
        window = int(window)
        if not 0 <= window < self.n_windows:
            raise InputError(f"store {self.loc}: window id {window} out of range (corrupt shard)")
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
        key = str(path) if is_url(path) else str(Path(path).expanduser().resolve())
        with self._lock:
            store = self._stores.get(key)
        if store is None:
            store = FeatureStore(key)
            with self._lock:
                store = self._stores.setdefault(key, store)
        return store
