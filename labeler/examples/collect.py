"""``labeler collect``: stream a corpus through model + SAE once and write a FeatureStore.

Checkpoints (accumulator state + position, one file replaced atomically) let an interrupted
run continue with the same command; the result is identical to an uninterrupted run because
windows, splits, reservoir keys and batch boundaries depend only on the configuration.
"""

from __future__ import annotations

import hashlib
import itertools
import signal
import sys
import threading
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from labeler.core.errors import ConfigError, InputError, StoreMismatchError
from labeler.corpus import CorpusSpec, frame_for, iter_texts, iter_windows
from labeler.examples.accumulate import (DEFAULT_SIZES, DEFAULT_SPLIT_PERCENT, HIST_EDGES, SPLITS, Accumulator,
                                         SplitSizes)
from labeler.examples.store import (FORMAT_VERSION, MANIFEST, FeatureStore, save_safetensors_atomic,
                                    write_json_atomic)

CHECKPOINT = "checkpoint.safetensors"


@dataclass
class CollectConfig:
    model: str
    hook: str
    sae: str = "neurons"
    corpus: CorpusSpec = field(default_factory=lambda: CorpusSpec("builtin"))
    hook_io: str = "output"
    tokens: int = 2_000_000
    ctx_len: int = 64
    batch_size: int = 32  # windows per forward pass
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    drop_bos: bool = False
    sizes: dict[str, SplitSizes] = field(default_factory=lambda: dict(DEFAULT_SIZES))
    split_percent: tuple[int, int, int] = DEFAULT_SPLIT_PERCENT
    quantiles: int = 4
    per_quantile: int = 5
    shard_size: int = 1024
    n_output_tokens: int = 10
    checkpoint_every_s: float = 60.0
    # The bookkeeping is many small tensor ops; one thread avoids OpenMP barrier stalls on busy
    # machines (measured 4-7x slower spikes with 2 threads on a shared 2-core box). None: torch's.
    accumulate_threads: int | None = 1

    def identity(self) -> dict:
        """Every setting that changes the result (device/checkpoint cadence do not)."""
        return {
            "model": self.model, "hook": self.hook, "hook_io": self.hook_io, "sae": self.sae,
            "corpus": self.corpus.describe(), "tokens": self.tokens, "ctx_len": self.ctx_len,
            "batch_size": self.batch_size, "seed": self.seed, "dtype": self.dtype, "drop_bos": self.drop_bos,
            "sizes": {k: asdict(v) for k, v in self.sizes.items()}, "split_percent": list(self.split_percent),
            "quantiles": self.quantiles, "per_quantile": self.per_quantile, "shard_size": self.shard_size,
        }

    def validate(self) -> None:
        if self.ctx_len < 1 or self.batch_size < 1 or self.tokens < self.ctx_len:
            raise ConfigError(f"need ctx_len >= 1, batch_size >= 1 and tokens >= ctx_len "
                              f"(got ctx_len={self.ctx_len}, batch_size={self.batch_size}, tokens={self.tokens})")
        if sum(self.split_percent) != 100 or min(self.split_percent) < 0:
            raise ConfigError(f"split percentages must be >= 0 and sum to 100 (got {self.split_percent})")


def config_hash(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} (store) vs {b!r} (now)")
    return out


def check_existing(out: Path, identity: dict, force: bool) -> str | None:
    """'complete' | 'partial' | None (fresh). Raises on a store of another configuration."""
    mpath = out / MANIFEST
    if not mpath.exists():
        if out.exists() and any(out.iterdir()) and not force:
            raise InputError(f"output folder {out} exists, is not empty and holds no labeler store; "
                             f"choose another --out (or --force to overwrite it)")
        return None
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        manifest = {}
    if force:
        return None
    old = manifest.get("identity", {})
    if manifest.get("config_hash") != config_hash(identity):
        diffs = _differences(old, identity) or ["(unreadable manifest)"]
        raise StoreMismatchError(
            f"store {out} was written with other settings: {'; '.join(diffs)}. "
            f"Use another --out, or --force to recompute it"
        )
    return "complete" if manifest.get("status") == "complete" else "partial"


def _clear(out: Path) -> None:
    for name in ("features", "checkpoint.safetensors", "tokens.npy", "tokens.partial.npy", "stats.safetensors",
                 "decoder.safetensors", "vocab.json", MANIFEST):
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def token_strings(tokenizer) -> list[str]:
    """Display string of every token id, with the leading space it has inside running text."""
    vocab_size = len(tokenizer)
    anchor = tokenizer("a", add_special_tokens=False)["input_ids"][:1] or [0]
    base = tokenizer.decode(anchor)
    pairs = tokenizer.batch_decode([anchor + [i] for i in range(vocab_size)], clean_up_tokenization_spaces=False)
    return [p[len(base):] if p.startswith(base) else tokenizer.decode([i]) for i, p in enumerate(pairs)]


def run_collect(cfg: CollectConfig, out: str | Path, *, force: bool = False, progress: bool = True,
                log=print) -> Path:
    """Collect (or resume, or skip when already complete) the store at ``out``."""
    from labeler.activations import HookedModel, load_encoder, load_model

    cfg.validate()
    out = Path(out)
    identity = cfg.identity()
    state = check_existing(out, identity, force)
    if state == "complete":
        log(f"store {out} is already complete for these settings (use --force to recompute)")
        return out
    if force or state is None:
        _clear(out) if out.exists() else None
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    t_load = time.monotonic()
    model, tokenizer = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    hooked = HookedModel(model, cfg.hook, cfg.hook_io)
    frame = frame_for(tokenizer, drop_bos=cfg.drop_bos)
    some_token = (tokenizer("a", add_special_tokens=False)["input_ids"] or [0])[0]
    probe = frame.wrap(np.full((1, 2), some_token, dtype=np.int64))
    d_model = int(hooked.activations(torch.from_numpy(probe)).shape[-1])  # the hookpoint's real width
    encoder = load_encoder(cfg.sae, hook=cfg.hook, d_model=d_model).to(hooked.device)
    nonneg = encoder.architecture != "neurons"

    n_target = max(1, cfg.tokens // cfg.ctx_len)
    manifest = {
        "format_version": FORMAT_VERSION, "status": "running", "config_hash": config_hash(identity),
        "identity": identity,
        "model": {"name": _model_name(cfg.model),
                  "path_or_id": cfg.model, "hook": cfg.hook, "hook_io": cfg.hook_io, "d_model": d_model,
                  "dtype": cfg.dtype, "class": type(model).__name__},
        "sae": encoder.describe(),
        "corpus": cfg.corpus.describe(),
        "settings": {"ctx_len": cfg.ctx_len, "tokens": cfg.tokens, "seed": cfg.seed, "batch_size": cfg.batch_size,
                     "splits": dict(zip(SPLITS, cfg.split_percent)), "sizes": {k: asdict(v) for k, v in cfg.sizes.items()},
                     "quantiles": cfg.quantiles, "per_quantile": cfg.per_quantile, "shard_size": cfg.shard_size,
                     "drop_bos": cfg.drop_bos, "frame": {"prefix": list(frame.prefix), "suffix": list(frame.suffix)},
                     "firing_threshold": 0.0},
        "versions": _versions(),
    }
    write_json_atomic(out / MANIFEST, manifest)

    acc = Accumulator(encoder.n_features, cfg.ctx_len, cfg.seed, nonneg=nonneg, sizes=cfg.sizes,
                      split_percent=cfg.split_percent)
    ckpt = out / CHECKPOINT
    tok_path = out / "tokens.partial.npy"
    # SIGINT becomes a flag before the partial token file exists, so a Ctrl-C at any point of
    # the stream lands between batches and is saved.
    stop = _InterruptFlag()
    try:
        if ckpt.exists() and tok_path.exists():
            acc.load(_load_checkpoint(ckpt))
            tokens_mm = np.lib.format.open_memmap(tok_path, mode="r+")
            log(f"resuming {out} from window {acc.windows_seen} ({acc.tokens_seen} tokens)")
        else:
            tokens_mm = np.lib.format.open_memmap(tok_path, mode="w+", dtype=np.int32, shape=(n_target, cfg.ctx_len))

        start_tokens = acc.tokens_seen
        windows = iter_windows(iter_texts(cfg.corpus), tokenizer, cfg.ctx_len)
        windows = itertools.islice(windows, acc.windows_seen, n_target)
        batches = _batched(windows, cfg.batch_size)
        bar = _progress(progress, n_target * cfg.ctx_len, acc.tokens_seen)
        t_stream = time.monotonic()
        manifest["timing"] = {"load_s": round(t_stream - t_load, 3)}
        last_ckpt = time.monotonic()
        content = frame.content_slice
        update_s = 0.0
        model_s = 0.0  # time in forward-to-hook + encode: the bare cost the benchmark compares with
        try:
            for ids in batches:
                start = acc.windows_seen
                tokens_mm[start : start + len(ids)] = ids
                t0 = time.perf_counter()
                x = hooked.activations(torch.from_numpy(frame.wrap(ids.astype(np.int64))))[:, content]
                enc = encoder.encode(x.reshape(-1, x.shape[-1]))
                t1 = time.perf_counter()
                model_s += t1 - t0
                with _threads(cfg.accumulate_threads):
                    acc.update(torch.arange(start, start + len(ids), dtype=torch.int64), _to_cpu(enc))
                update_s += time.perf_counter() - t1
                if bar is not None:
                    bar.update(len(ids) * cfg.ctx_len)
                if stop.requested:
                    # Ctrl-C lands between batches, where the state is consistent: keep all of it.
                    _save_checkpoint(acc, tokens_mm, ckpt)
                    print(f"interrupted: {acc.tokens_seen} tokens are saved in {ckpt}; "
                          "run the same command again to resume", file=sys.stderr, flush=True)
                    raise KeyboardInterrupt
                if time.monotonic() - last_ckpt > cfg.checkpoint_every_s:
                    _save_checkpoint(acc, tokens_mm, ckpt)
                    last_ckpt = time.monotonic()
        finally:
            if bar is not None:
                bar.close()
    finally:
        stop.restore()
    if acc.windows_seen == 0:
        raise InputError(f"corpus {cfg.corpus.source!r} is empty: it gave no window of {cfg.ctx_len} tokens")
    _save_checkpoint(acc, tokens_mm, ckpt)
    del tokens_mm
    manifest["timing"]["stream_s"] = round(time.monotonic() - t_stream, 3)
    manifest["timing"]["stream_tokens"] = acc.tokens_seen - start_tokens
    manifest["timing"]["model_and_encode_s"] = round(model_s, 3)
    manifest["timing"]["accumulate_s"] = round(update_s, 3)
    _finalize(out, cfg, acc, encoder, model, tokenizer, manifest)
    return out


class _InterruptFlag:
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


class _threads:
    """Temporarily set torch's intra-op thread count."""

    def __init__(self, n: int | None):
        self.n, self.before = n, torch.get_num_threads()

    def __enter__(self):
        if self.n and self.n != self.before:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.n and self.n != self.before:
            torch.set_num_threads(self.before)


def _model_name(model: str) -> str:
    """Hub ids as given; local folders by their name (their parent's when the folder is just 'model')."""
    p = Path(model).expanduser()
    if not p.exists():
        return model
    p = p.absolute()  # keep a symlink's own name (the demo names MiniLM that way)
    return p.parent.name if p.name.lower() in ("model", "models", "weights", "checkpoint") else p.name


def _batched(windows, size: int):
    while batch := list(itertools.islice(windows, size)):
        yield np.stack(batch)


def _to_cpu(enc):
    if enc.dense is not None and enc.dense.device.type != "cpu":
        enc.dense = enc.dense.float().cpu()
    if enc.values is not None and enc.values.device.type != "cpu":
        enc.values, enc.indices = enc.values.float().cpu(), enc.indices.cpu()
    return enc


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="tok", unit_scale=True, desc="collect", dynamic_ncols=True)


def _save_checkpoint(acc: Accumulator, tokens_mm: np.memmap, path: Path) -> None:
    tokens_mm.flush()  # tokens of every window counted in the state are on disk first
    save_safetensors_atomic(acc.state(), path)


def _load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:
        raise InputError(f"checkpoint {path} is corrupt ({e}); rerun with --force to start over") from None


def _versions() -> dict[str, str]:
    import transformers

    import labeler

    return {"labeler": labeler.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__}


def _finalize(out: Path, cfg: CollectConfig, acc: Accumulator, encoder, model, tokenizer, manifest: dict) -> None:
    from labeler.activations import output_embedding

    t_final = time.monotonic()
    n = acc.windows_seen
    partial = out / "tokens.partial.npy"
    full = np.load(partial, mmap_mode="r")
    if full.shape[0] == n:
        del full
        partial.replace(out / "tokens.npy")
    else:
        np.save(out / "tokens.npy", np.ascontiguousarray(full[:n]))
        del full
        partial.unlink()
    write_json_atomic(out / "vocab.json", token_strings(tokenizer))

    F = encoder.n_features
    seen = acc.tokens_seen
    stats = {
        "count": acc.count.numpy(), "tokens_seen": np.full(F, seen, dtype=np.int64),
        "max": acc.max.numpy(),  # for neurons this can be negative
        "mean": (acc.sum / max(seen, 1)).float().numpy(),
        "mean_active": (acc.pos_sum / acc.count.clamp_min(1)).float().numpy(),
        "hist": acc.hist.numpy(), "hist_edges": HIST_EDGES,
    }
    from safetensors.numpy import save_file as np_save

    np_save({k: np.ascontiguousarray(v) for k, v in stats.items()}, str(out / "stats.safetensors"))

    promoted = suppressed = None
    W_U = output_embedding(model)
    if encoder.W_dec is not None and W_U is not None and W_U.shape[1] == encoder.d_in and cfg.n_output_tokens > 0:
        promoted, suppressed = _output_tokens(encoder.W_dec, W_U.detach().float().cpu(), cfg.n_output_tokens)

    (out / "features").mkdir(exist_ok=True)
    state = acc.state()
    for start in range(0, F, cfg.shard_size):
        end = min(start + cfg.shard_size, F)
        shard = {k: v[start:end] for k, v in state.items() if not k.startswith(("stats/", "position"))}
        if promoted is not None:
            shard["promoted"], shard["suppressed"] = promoted[start:end], suppressed[start:end]
        save_safetensors_atomic(shard, out / "features" / f"{start}-{end}.safetensors")
    unit = encoder.unit_decoder()
    if unit is not None:
        save_safetensors_atomic({"directions": unit.float().cpu()}, out / "decoder.safetensors")
    manifest.setdefault("timing", {})["finalize_s"] = round(time.monotonic() - t_final, 3)
    manifest.update({"status": "complete", "tokens_seen": seen, "n_windows": n,
                     "output_tokens": promoted is not None})
    write_json_atomic(out / MANIFEST, manifest)
    (out / CHECKPOINT).unlink(missing_ok=True)
    FeatureStore(out)  # refuse to call it finished if it does not open


@torch.inference_mode()
def _output_tokens(W_dec: torch.Tensor, W_U: torch.Tensor, k: int, chunk: int = 1024):
    """Top promoted / suppressed token ids of each decoder direction through the unembedding."""
    W_dec = W_dec.float().cpu()
    k = min(k, W_U.shape[0])
    pro, sup = [], []
    for s in range(0, W_dec.shape[0], chunk):
        logits = W_dec[s : s + chunk] @ W_U.T
        pro.append(logits.topk(k, dim=1).indices)
        sup.append((-logits).topk(k, dim=1).indices)
    return torch.cat(pro), torch.cat(sup)
