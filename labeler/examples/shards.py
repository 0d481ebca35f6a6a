"""A collect split into parts: feature ranges (memory per process) x corpus slices (throughput).

A part collects features [a, b) over windows [w0, w1) into ``parts/f<a>-<b>.w<w0>-<w1>/`` of
the store (a checkpointed state folder, ``status: done`` when finished).  When the parts cover
every feature and window, ``merge`` writes the store from them: block by block, the corpus
slices of a feature range are absorbed into one state, which equals the state of a single pass
(every reservoir keeps the top of a total order, every sum is an integer), and is written by the
same code as a single run's.

Parts are planned aligned to the accumulator's blocks (features) and to whole batches
(windows), so a part computes every activation with the same arithmetic as a single run.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from labeler.core.errors import ConfigError, InputError
from labeler.corpus import CorpusSpec
from labeler.examples.accumulate import Accumulator, SplitSizes, block_bounds
from labeler.examples.collect import (CollectConfig, base_manifest, check_existing, clear, config_hash, load_subject,
                                      open_encoder, record_failure, stream, write_outputs)
from labeler.examples.finalize import finalize_store, token_strings
from labeler.examples.storage import Location
from labeler.examples.store import MANIFEST
from labeler.examples.stream import InterruptFlag, Sink, StateFolder, pool_rates

PARTS = "parts"
_NAME = re.compile(r"^f(\d+)-(\d+)\.w(\d+)-(\d+)$")


@dataclass(frozen=True)
class PartSpec:
    features: tuple[int, int]
    windows: tuple[int, int]

    @property
    def name(self) -> str:
        return f"f{self.features[0]}-{self.features[1]}.w{self.windows[0]}-{self.windows[1]}"

    @property
    def prefix(self) -> str:
        return f"{PARTS}/{self.name}"

    @classmethod
    def parse(cls, name: str) -> "PartSpec | None":
        m = _NAME.match(name)
        return cls((int(m[1]), int(m[2])), (int(m[3]), int(m[4]))) if m else None

    def to_dict(self) -> dict:
        return {"features": list(self.features), "windows": list(self.windows)}

    @classmethod
    def from_dict(cls, d: dict) -> "PartSpec":
        return cls(tuple(d["features"]), tuple(d["windows"]))  # type: ignore[arg-type]


def parse_feature_range(text: str, n_features: int) -> tuple[int, int]:
    """``A:B`` -> (A, B), checked against the SAE's size."""
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text or "")
    if not m:
        raise ConfigError(f"--features {text!r}: give one range A:B of feature indices (e.g. 0:65536)")
    a, b = int(m[1]), int(m[2])
    if not a < b:
        raise ConfigError(f"--features {text!r}: the range is empty (need A < B)")
    if b > n_features:
        raise ConfigError(f"--features {text!r}: the SAE has {n_features} features (0..{n_features - 1})")
    return a, b


def plan(cfg: CollectConfig, n_features: int, feature_shards: int, corpus_shards: int) -> list[PartSpec]:
    """Feature ranges on block boundaries (on file boundaries, or even, for small SAEs; any range
    computes the same values, since blocks are always encoded whole), corpus slices on batch
    boundaries."""
    if feature_shards < 1 or corpus_shards < 1:
        raise ConfigError("--feature-shards and --corpus-shards must be at least 1")
    if feature_shards > n_features:
        raise ConfigError(f"--feature-shards {feature_shards}: the SAE has only {n_features} features")
    unit = next(u for u in (cfg.block, cfg.shard_size, 1) if n_features >= feature_shards * u)
    units = -(-n_features // unit)
    cuts = [min(n_features, round(i * units / feature_shards) * unit) for i in range(feature_shards + 1)]
    batches = -(-cfg.n_target // cfg.batch_size)
    if corpus_shards > batches:
        raise ConfigError(f"--corpus-shards {corpus_shards}: {cfg.n_target} windows make only {batches} batches "
                          f"of {cfg.batch_size}")
    wcuts = [min(cfg.n_target, round(i * batches / corpus_shards) * cfg.batch_size) for i in range(corpus_shards + 1)]
    return [PartSpec((cuts[i], cuts[i + 1]), (wcuts[j], wcuts[j + 1]))
            for i in range(feature_shards) for j in range(corpus_shards)]


def existing_parts(loc: Location) -> list[PartSpec]:
    return [p for p in (PartSpec.parse(n) for n in loc.listdir(PARTS)) if p is not None]


def check_overlap(new: PartSpec, existing: list[PartSpec]) -> None:
    """A part must not share features and windows with another part of the store."""
    for p in existing:
        if p == new:
            continue
        if p.features[0] < new.features[1] and new.features[0] < p.features[1] and \
                p.windows[0] < new.windows[1] and new.windows[0] < p.windows[1]:
            raise InputError(f"features {new.features[0]}:{new.features[1]} overlap the part "
                             f"{p.features[0]}:{p.features[1]} already in this store (windows {p.windows[0]}:"
                             f"{p.windows[1]}); collect the remaining ranges only, or use --force to start over")


def prepare(cfg: CollectConfig, out: str | Path, *, force: bool, log=print) -> tuple[Location, dict | None]:
    """Check or write the store's manifest (loading model and SAE to describe them); returns the
    location and the manifest, or None when the store is already complete."""
    cfg.validate()
    loc = Location(out)
    state = check_existing(loc, cfg.identity(), force)
    if state == "complete":
        log(f"store {loc} is already complete for these settings (use --force to recompute)")
        return loc, None
    if force or state is None:
        clear(loc)
    manifest = loc.read_json(MANIFEST)
    if manifest is None:
        subject = load_subject([cfg])
        encoder = open_encoder(cfg, subject, subject.widths[0])
        manifest = base_manifest(cfg, subject, encoder, subject.widths[0])
        loc.write_json(MANIFEST, manifest)
    return loc, manifest


def run_part(cfg: CollectConfig, out: str | Path, part: PartSpec, *, progress: bool = False, log=print) -> None:
    """Collect one part into the store's parts folder (resuming its checkpoint)."""
    loc = Location(out)
    manifest = loc.read_json(MANIFEST)
    if manifest is None or manifest.get("config_hash") != config_hash(cfg.identity()):
        raise InputError(f"store {loc} was not prepared for these settings (missing or other manifest)")
    a, b = part.features
    folder = StateFolder(loc, part.prefix, writes_tokens=a == 0, features=part.features, first_window=part.windows[0])
    pos = folder.read_position()
    if pos and pos.get("status") == "done":
        log(f"part {part.name} of {loc} is already done")
        return
    stop_flag = InterruptFlag()
    try:
        subject = load_subject([cfg])
        encoder = open_encoder(cfg, subject, subject.widths[0])
        nonneg = encoder.architecture != "neurons"
        acc = Accumulator(a, b, cfg.ctx_len, cfg.seed, nonneg=nonneg, block=cfg.block, sizes=cfg.sizes,
                          split_percent=cfg.split_percent)
        if folder.resume(acc):
            log(f"resuming part {part.name} of {loc} from window {part.windows[0] + acc.windows_seen}")
            encoder.W_dec = None
        elif part.windows[0] == 0:
            write_outputs(encoder, subject, loc, part.prefix, a, b, cfg.n_output_tokens)
            if a == 0:
                loc.write_json(f"{part.prefix}/vocab.json", token_strings(subject.tokenizer))
        else:
            encoder.W_dec = None
        sink = Sink(encoder, acc, folder, 0, pool_rates(cfg.pool_sizes(nonneg), cfg.n_target, cfg.split_percent),
                    cfg.accumulate_threads)
        try:
            stream(subject, cfg, [sink], part.windows[0], part.windows[1], progress=progress, stop_flag=stop_flag)
        except InputError as e:
            record_failure(loc, manifest, e)
            raise
        sink.checkpoint(status="done")
    finally:
        stop_flag.restore()


def coverage(parts: list[PartSpec], n_features: int) -> tuple[list[tuple[int, int]], str | None]:
    """(feature ranges, None) when the parts tile every feature; else (ranges, what is missing)."""
    ranges = sorted({p.features for p in parts})
    at, gaps = 0, []
    for a, b in ranges:
        if a > at:
            gaps.append(f"{at}:{a}")
        at = max(at, b)
    if at < n_features:
        gaps.append(f"{at}:{n_features}")
    return ranges, (", ".join(gaps) or None)


def merge(cfg: CollectConfig, out: str | Path, *, log=print) -> bool:
    """Write the store from its finished parts when they cover everything; False (and what is
    missing, logged) when not yet."""
    loc = Location(out)
    manifest = loc.read_json(MANIFEST)
    parts = existing_parts(loc)
    folders = []
    for p in parts:
        f = StateFolder(loc, p.prefix, writes_tokens=p.features[0] == 0, features=p.features,
                        first_window=p.windows[0])
        pos = f.read_position()
        if not pos or pos.get("status") != "done":
            log(f"part {p.name} is not finished yet")
            return False
        f.position = pos
        folders.append(f)
    F = int(manifest["sae"]["n_features"])
    ranges, missing = coverage(parts, F)
    if missing:
        log(f"store {loc}: features {missing} are not collected yet (run them with --features)")
        return False
    last_window = max(f.position["first_window"] + f.position["windows_seen"] for f in folders)
    for r in ranges:
        got = sorted((f.position["first_window"], f.position["first_window"] + f.position["windows_seen"])
                     for f in folders if tuple(f.position["features"]) == r)
        at = 0
        for w0, w1 in got:
            if w0 != at:
                raise InputError(f"store {loc}: the parts of features {r[0]}:{r[1]} do not cover windows "
                                 f"{at}:{w0}")
            at = w1
        if at != last_window:
            raise InputError(f"store {loc}: the parts of features {r[0]}:{r[1]} end at window {at}, others at "
                             f"{last_window}")
    vocab_part = next(f for f in folders if f.position["features"][0] == 0 and f.position["first_window"] == 0)
    vocab = loc.read_json(f"{vocab_part.prefix}/vocab.json")
    pieces = [bb for a, b in ranges for bb in block_bounds(a, b, cfg.block)]
    outputs = [(f.position["features"][0], f) for f in folders if f.position["first_window"] == 0]
    finalize_store(loc, manifest, cfg, vocab, folders, output_folders=outputs, pieces=pieces)
    log(f"store {loc} is complete ({len(parts)} parts merged)")
    return True


def config_to_dict(cfg: CollectConfig) -> dict:
    d = asdict(cfg)
    d["split_percent"] = list(cfg.split_percent)
    return d


def config_from_dict(d: dict) -> CollectConfig:
    d = dict(d)
    d["corpus"] = CorpusSpec(**d["corpus"])
    d["sizes"] = {k: SplitSizes(**v) for k, v in d["sizes"].items()}
    d["split_percent"] = tuple(d["split_percent"])
    return CollectConfig(**d)
