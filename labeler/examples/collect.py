"""``labeler collect``: stream a corpus through model + SAE once and write a FeatureStore.

Checkpoints (block states + token chunks, ``position.json`` written last) let an interrupted
run continue with the same command; the result is identical to an uninterrupted run because
windows, splits, reservoir keys and batch boundaries depend only on the configuration, and
every reservoir keeps the largest keys of a total order (see ``reservoir``).

``run_collect_many`` feeds several SAEs from one forward pass (stopped at the deepest hook);
``labeler.examples.shards`` splits one collect into feature ranges and corpus slices.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from labeler.core.errors import ConfigError, InputError, StoreMismatchError
from labeler.corpus import CorpusSpec, frame_for, iter_texts, iter_windows
from labeler.examples.accumulate import DEFAULT_SIZES, DEFAULT_SPLIT_PERCENT, SPLITS, Accumulator, SplitSizes
from labeler.examples.finalize import finalize_store
from labeler.examples.identity import encoder_fingerprint, model_fingerprint
from labeler.examples.neighbours import DEFAULT_NEIGHBOURS
from labeler.examples.storage import Location
from labeler.examples.store import FORMAT_VERSION, MANIFEST
from labeler.examples.stream import InterruptFlag, Sink, StateFolder, pool_rates

CHECKPOINT = "checkpoint"
SHARED_FIELDS = ("model", "corpus", "tokens", "ctx_len", "batch_size", "seed", "device", "dtype", "drop_bos")


@dataclass
class CollectConfig:
    model: str
    hook: str
    sae: str = "neurons"
    hook_name: str | None = None  # the name the hook was given as (a TransformerLens name): recorded only
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
    shard_size: int = 1024  # features per file of the store
    random_pool: int = 256  # shared random windows per split (SAEs; neurons keep only what they show)
    neighbours: int = DEFAULT_NEIGHBOURS  # nearest features by decoder cosine kept per feature
    block: int = 16384  # features per block of the accumulator (and per dense encode)
    n_output_tokens: int = 10
    checkpoint_every_s: float = 60.0
    # Torch threads for the bookkeeping (None: torch's own).  It takes 2^20 nonzeros at a time
    # (stream.UPDATE_NONZEROS), big enough for threads to pay: on 2 cores it ran 1.4x faster with
    # both than with one.  1 suits a machine whose cores are busy with other work.
    accumulate_threads: int | None = None

    def identity(self) -> dict:
        """Every setting that changes the result (device, checkpoint cadence and sharding do not)."""
        return {
            "model": self.model, "hook": self.hook, "hook_io": self.hook_io, "sae": self.sae,
            "corpus": self.corpus.describe(), "tokens": self.tokens, "ctx_len": self.ctx_len,
            "batch_size": self.batch_size, "seed": self.seed, "dtype": self.dtype, "drop_bos": self.drop_bos,
            "sizes": {k: asdict(v) for k, v in self.sizes.items()}, "split_percent": list(self.split_percent),
            "quantiles": self.quantiles, "per_quantile": self.per_quantile, "shard_size": self.shard_size,
            "random_pool": self.random_pool, "neighbours": self.neighbours, "block": self.block,
            "format_version": FORMAT_VERSION,
        }

    def validate(self) -> None:
        if self.ctx_len < 1 or self.batch_size < 1 or self.tokens < self.ctx_len:
            raise ConfigError(f"need ctx_len >= 1, batch_size >= 1 and tokens >= ctx_len "
                              f"(got ctx_len={self.ctx_len}, batch_size={self.batch_size}, tokens={self.tokens})")
        if self.ctx_len > 32767:
            raise ConfigError(f"ctx_len {self.ctx_len} is too long (at most 32767 tokens per window)")
        if sum(self.split_percent) != 100 or min(self.split_percent) < 0:
            raise ConfigError(f"split percentages must be >= 0 and sum to 100 (got {self.split_percent})")
        if self.block < 1 or self.shard_size < 1 or self.block % self.shard_size and self.shard_size < self.block:
            raise ConfigError(f"block ({self.block}) must be a multiple of shard_size ({self.shard_size})")

    @property
    def n_target(self) -> int:
        return max(1, self.tokens // self.ctx_len)

    def pool_sizes(self, nonneg: bool) -> dict[str, int]:
        """Shared random windows per split: enough for the random and nonactivating examples
        (neurons, active on every token, keep no more than that)."""
        need = {s: self.sizes[s].random + self.sizes[s].nonactivating for s in SPLITS}
        return {s: max(self.random_pool, need[s]) if nonneg else need[s] for s in SPLITS}


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


def check_existing(loc: Location, identity: dict, force: bool) -> str | None:
    """'complete' | 'partial' | None (fresh). Raises on a store of another configuration."""
    try:
        manifest = loc.read_json(MANIFEST)
    except InputError:
        manifest = {}
    if manifest is None:
        if not loc.is_empty_or_missing() and not force:
            raise InputError(f"output folder {loc} exists, is not empty and holds no labeler store; "
                             f"choose another --out (or --force to overwrite it)")
        return None
    if force:
        return None
    if manifest.get("format_version") != FORMAT_VERSION and manifest.get("status") == "complete":
        raise StoreMismatchError(f"store {loc} has format_version {manifest.get('format_version')}, this labeler "
                                 f"writes {FORMAT_VERSION}; use another --out, or --force to recompute it")
    old = manifest.get("identity", {})
    if manifest.get("config_hash") != config_hash(identity):
        diffs = _differences(old, identity) or ["(unreadable manifest)"]
        raise StoreMismatchError(
            f"store {loc} was written with other settings: {'; '.join(diffs)}. "
            f"Use another --out, or --force to recompute it"
        )
    return "complete" if manifest.get("status") == "complete" else "partial"


def record_failure(loc: Location, manifest: dict, error: Exception) -> None:
    """A collect stopped by bad input (a corpus that is not UTF-8 text, an empty one): the
    manifest says so, with the reason, instead of looking like a collect still running.  The
    same command resumes once the input is fixed."""
    loc.write_json(MANIFEST, {**manifest, "status": "failed", "error": str(error)})


def clear(loc: Location) -> None:
    for name in ("features", CHECKPOINT, "parts", "tokens.npy", "stats.safetensors", "decoder.safetensors",
                 "random.safetensors", "hard_negatives.safetensors", "neighbours.safetensors", "vocab.json", MANIFEST):
        loc.remove(name)


@dataclass
class Subject:
    """The loaded model, tokenizer and hookpoints shared by every SAE of a run."""

    model: object
    tokenizer: object
    hooked: object
    frame: object
    widths: list[int]
    weights_fingerprint: str  # of the model's weights as loaded (labeler.examples.identity)


def load_subject(cfgs: list[CollectConfig]) -> Subject:
    from labeler.activations import HookedModel, load_model

    first = cfgs[0]
    model, tokenizer = load_model(first.model, device=first.device, dtype=first.dtype)
    points = list(dict.fromkeys((c.hook, c.hook_io) for c in cfgs))
    hooked = HookedModel(model, points[0][0], points[0][1], also=tuple(points[1:]))
    frame = frame_for(tokenizer, drop_bos=first.drop_bos)
    some_token = (tokenizer("a", add_special_tokens=False)["input_ids"] or [0])[0]
    probe = frame.wrap(np.full((1, 2), some_token, dtype=np.int64))
    widths = [int(x.shape[-1]) for x in hooked.activations_all(torch.from_numpy(probe))]
    return Subject(model, tokenizer, hooked, frame, widths, model_fingerprint(model))


def base_manifest(cfg: CollectConfig, subject: Subject, encoder, d_model: int) -> dict:
    identity = cfg.identity()
    return {
        "format_version": FORMAT_VERSION, "status": "running", "config_hash": config_hash(identity),
        "identity": identity,
        "model": {"name": model_name(cfg.model), "path_or_id": cfg.model, "hook": cfg.hook, "hook_io": cfg.hook_io,
                  "hook_name": cfg.hook_name,
                  "d_model": d_model, "dtype": cfg.dtype, "class": type(subject.model).__name__,
                  "weights_fingerprint": subject.weights_fingerprint,
                  # the Hub commit the weights came from (None for a local folder)
                  "revision": getattr(getattr(subject.model, "config", None), "_commit_hash", None)},
        "sae": encoder.describe(),
        "corpus": cfg.corpus.describe(),
        "settings": {"ctx_len": cfg.ctx_len, "tokens": cfg.tokens, "seed": cfg.seed, "batch_size": cfg.batch_size,
                     "splits": dict(zip(SPLITS, cfg.split_percent)), "split_percent": list(cfg.split_percent),
                     "sizes": {k: asdict(v) for k, v in cfg.sizes.items()},
                     "quantiles": cfg.quantiles, "per_quantile": cfg.per_quantile, "shard_size": cfg.shard_size,
                     "random_pool": cfg.random_pool, "block": cfg.block,
                     "drop_bos": cfg.drop_bos,
                     "frame": {"prefix": list(subject.frame.prefix), "suffix": list(subject.frame.suffix)},
                     "firing_threshold": 0.0},
        "versions": versions(),
    }


def open_encoder(cfg: CollectConfig, subject: Subject, d_model: int):
    from labeler.activations import load_encoder

    encoder = load_encoder(cfg.sae, hook=cfg.hook, d_model=d_model)
    # fingerprinted where it was loaded (the CPU), before it moves; lands in manifest["sae"]
    encoder.options["weights_fingerprint"] = encoder_fingerprint(encoder)
    return encoder.to(subject.hooked.device)


def write_outputs(encoder, subject: Subject, loc: Location, prefix: str, start: int, stop: int,
                  n_tokens: int) -> None:
    """Unit decoder rows and promoted/suppressed tokens of features [start, stop) into the state
    folder, then drop the decoder from memory (collect itself never needs it)."""
    from labeler.activations import output_embedding
    from labeler.examples.finalize import _save

    if encoder.W_dec is None:
        return
    W = encoder.W_dec[start:stop]
    unit = torch.empty(W.shape, dtype=torch.float32)
    for s in range(0, W.shape[0], 8192):
        w = W[s:s + 8192].float()
        unit[s:s + 8192] = (w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu()
    _save(loc, f"{prefix}/decoder.safetensors", {"directions": unit.numpy()})
    del unit
    W_U = output_embedding(subject.model)
    if W_U is not None and W_U.shape[1] == encoder.d_in and n_tokens > 0:
        out = output_tokens(W, W_U.detach().float(), n_tokens)
        _save(loc, f"{prefix}/output_tokens.safetensors", {k: v.numpy() for k, v in out.items()})
    encoder.W_dec = None


@torch.inference_mode()
def output_tokens(W_dec: torch.Tensor, W_U: torch.Tensor, k: int, chunk: int = 512) -> dict[str, torch.Tensor]:
    """Top promoted / suppressed token ids (int32) of each decoder direction through the
    unembedding, with their logit effects (float32)."""
    k = min(k, W_U.shape[0])
    parts: dict[str, list[torch.Tensor]] = {"promoted": [], "promoted_values": [], "suppressed": [],
                                            "suppressed_values": []}
    for s in range(0, W_dec.shape[0], chunk):
        logits = W_dec[s:s + chunk].float().to(W_U.device) @ W_U.T
        for name, sign in (("promoted", 1), ("suppressed", -1)):
            v, i = (sign * logits).topk(k, dim=1)
            parts[name].append(i.to(torch.int32).cpu())
            parts[f"{name}_values"].append((sign * v).float().cpu())
    return {name: torch.cat(v) for name, v in parts.items()}


def stream(subject: Subject, cfg: CollectConfig, sinks: list[Sink], first: int, stop: int, *,
           progress: bool, stop_flag: InterruptFlag) -> float:
    """Feed windows [first + min position, stop) to every sink; checkpoints on a timer and on
    Ctrl-C. Returns the stream's wall time."""
    start = first + min(s.acc.windows_seen for s in sinks)
    windows = itertools.islice(iter_windows(iter_texts(cfg.corpus), subject.tokenizer, cfg.ctx_len), start, stop)
    bar = _progress(progress, (stop - first) * cfg.ctx_len, (start - first) * cfg.ctx_len)
    content = subject.frame.content_slice
    t0 = last = time.monotonic()
    at = start
    try:
        while batch := list(itertools.islice(windows, cfg.batch_size)):
            ids = np.stack(batch)
            wids = torch.arange(at, at + len(ids), dtype=torch.int64)
            xs = subject.hooked.activations_all(torch.from_numpy(subject.frame.wrap(ids.astype(np.int64))))
            for sink in sinks:
                if first + sink.acc.windows_seen > at:  # resumed further than the others
                    continue
                sink.folder.add_tokens(ids)
                sink.feed(xs[sink.hook_index][:, content], wids)
            at += len(ids)
            if bar is not None:
                bar.update(len(ids) * cfg.ctx_len)
            if stop_flag.requested:
                for sink in sinks:
                    sink.checkpoint()
                print(f"interrupted: {sinks[0].acc.tokens_seen} tokens are saved in {sinks[0].folder.loc}; "
                      "run the same command again to resume", file=sys.stderr, flush=True)
                raise KeyboardInterrupt
            if time.monotonic() - last > cfg.checkpoint_every_s:
                for sink in sinks:
                    sink.checkpoint()
                last = time.monotonic()
        for sink in sinks:
            sink.flush()
    finally:
        if bar is not None:
            bar.close()
    return time.monotonic() - t0


def check_many(cfgs: list[CollectConfig]) -> None:
    for c in cfgs[1:]:
        diff = [f for f in SHARED_FIELDS if getattr(c, f) != getattr(cfgs[0], f)]
        if diff:
            raise ConfigError(f"SAEs collected in one pass must share {', '.join(SHARED_FIELDS)}; "
                              f"these differ: {', '.join(diff)}")


def run_collect(cfg: CollectConfig, out: str | Path, *, force: bool = False, progress: bool = True,
                log=print) -> Path | str:
    """Collect (or resume, or skip when already complete) the store at ``out``."""
    return run_collect_many([cfg], [out], force=force, progress=progress, log=log)[0]


def run_collect_many(configs: list[CollectConfig], outs: list[str | Path], *, force: bool = False,
                     progress: bool = True, log=print) -> list[Path | str]:
    """Several SAEs of one model in one pass over the corpus (one forward per batch, stopped at the
    deepest hook), each to its own store; the stores equal those of separate runs."""
    if len(configs) != len(outs) or not configs:
        raise ConfigError("run_collect_many needs one output store per config")
    for c in configs:
        c.validate()
    check_many(configs)
    locs = [Location(o) for o in outs]
    if len({str(loc) for loc in locs}) != len(locs):
        raise ConfigError("each SAE needs its own output store")
    todo = []
    for cfg, loc in zip(configs, locs):
        state = check_existing(loc, cfg.identity(), force)
        if state == "complete":
            log(f"store {loc} is already complete for these settings (use --force to recompute)")
            continue
        if force or state is None:
            clear(loc)
        todo.append((cfg, loc))
    if todo:
        # SIGINT becomes a flag before anything is written, so a Ctrl-C at any point lands
        # between batches and is saved
        stop_flag = InterruptFlag()
        try:
            _collect(todo, progress=progress, log=log, stop_flag=stop_flag)
        finally:
            stop_flag.restore()
    return [loc.local if not loc.remote else loc.url for loc in locs]


def _collect(todo: list[tuple[CollectConfig, Location]], *, progress: bool, log, stop_flag: InterruptFlag) -> None:
    t_load = time.monotonic()
    cfgs = [c for c, _ in todo]
    torch.manual_seed(cfgs[0].seed)
    subject = load_subject(cfgs)
    points = list(dict.fromkeys((c.hook, c.hook_io) for c in cfgs))
    sinks, manifests = [], []
    for cfg, loc in todo:
        hi = points.index((cfg.hook, cfg.hook_io))
        encoder = open_encoder(cfg, subject, subject.widths[hi])
        manifest = base_manifest(cfg, subject, encoder, subject.widths[hi])
        loc.write_json(MANIFEST, manifest)
        nonneg = encoder.architecture != "neurons"
        acc = Accumulator(0, encoder.n_features, cfg.ctx_len, cfg.seed, nonneg=nonneg, block=cfg.block,
                          sizes=cfg.sizes, split_percent=cfg.split_percent)
        folder = StateFolder(loc, CHECKPOINT, writes_tokens=True, features=(0, encoder.n_features))
        if folder.resume(acc):
            log(f"resuming {loc} from window {acc.windows_seen} ({acc.tokens_seen} tokens)")
            encoder.W_dec = None
        else:
            write_outputs(encoder, subject, loc, CHECKPOINT, 0, encoder.n_features, cfg.n_output_tokens)
        rates = pool_rates(cfg.pool_sizes(nonneg), cfg.n_target, cfg.split_percent)
        sinks.append(Sink(encoder, acc, folder, hi, rates, cfg.accumulate_threads))
        manifests.append(manifest)
    load_s = time.monotonic() - t_load
    seen_before = [s.acc.tokens_seen for s in sinks]
    try:
        stream_s = stream(subject, cfgs[0], sinks, 0, cfgs[0].n_target, progress=progress, stop_flag=stop_flag)
        if any(sink.acc.windows_seen == 0 for sink in sinks):
            raise InputError(f"corpus {cfgs[0].corpus.source!r} is empty: it gave no window of {cfgs[0].ctx_len} tokens")
    except InputError as e:
        for (_, loc), manifest in zip(todo, manifests):
            record_failure(loc, manifest, e)
        raise
    for (cfg, loc), sink, manifest, before in zip(todo, sinks, manifests, seen_before):
        sink.folder.flush_tokens()
        manifest["timing"] = {"load_s": round(load_s, 3), "stream_s": round(stream_s, 3),
                              "stream_tokens": sink.acc.tokens_seen - before,
                              "encode_s": round(sink.model_s, 3), "accumulate_s": round(sink.update_s, 3)}
        sink.encoder.W_enc = None  # the encoder's work is done: make room for the neighbour search
        finalize_store(loc, manifest, cfg, subject.tokenizer, [sink.folder], blocks=sink.acc)
        log(f"store {loc} is complete")


def model_name(model: str) -> str:
    """Hub ids as given; local folders by their name (their parent's when the folder is just 'model')."""
    p = Path(model).expanduser()
    if not p.exists():
        return model
    p = p.absolute()  # keep a symlink's own name (the demo names MiniLM that way)
    return p.parent.name if p.name.lower() in ("model", "models", "weights", "checkpoint") else p.name


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="tok", unit_scale=True, desc="collect", dynamic_ncols=True)


def versions() -> dict[str, str]:
    import transformers

    import labeler

    return {"labeler": labeler.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__}
