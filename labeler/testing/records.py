"""Hand-built feature records for unit tests of explainers and scorers (no model needed)."""

from __future__ import annotations

import random

import numpy as np

from labeler.examples.store import quantile_strata
from labeler.records import ActivationExample, FeatureRecord, FeatureStats

_WORDS = (
    "the of and to in is was for on that with as by at from it an be this which or are "
    "river bridge golden gate city water code bug error function value table chair music "
    "song piano guitar dog cat bird tree leaf green blue red yellow number one two three"
).split()

RANDOM_WINDOW_BASE = 900_000_000
"""Window ids of the shared random windows: the same ids (and texts) for every feature."""


def _filler(trigger: str) -> list[str]:
    """Words for the rest of a window: never the trigger, so only planted triggers look like it."""
    return [w for w in _WORDS if w != trigger.strip().lower()]


def _random_windows(split_no: int, split: str, n: int, ctx_len: int, trigger: str, peak: float,
                    fire_rate: float, seed: int) -> list[ActivationExample]:
    """Random corpus windows, the same for every feature of one ``seed``: a window holds the
    trigger (and so fires) with probability ``fire_rate``, else it is all zeros."""
    out = []
    words = _filler(trigger)
    for j in range(n):
        rng = random.Random(f"random-window:{seed}:{split}:{j}")  # no feature in the seed: shared
        tokens = [" " + rng.choice(words) for _ in range(ctx_len)]
        acts = [0.0] * ctx_len
        if rng.random() < fire_rate:
            pos = rng.randrange(ctx_len)
            tokens[pos] = trigger
            acts[pos] = round(peak * rng.uniform(0.3, 0.9), 4)
        out.append(ActivationExample(window=RANDOM_WINDOW_BASE + split_no * 100_000 + j, tokens=tokens,
                                     activations=acts, split=split, kind="random"))  # type: ignore[arg-type]
    return out


def make_feature_record(
    feature: int = 0,
    trigger: str = " bridge",
    *,
    ctx_len: int = 16,
    n_top: int = 10,
    n_sample: int = 10,
    n_random: int = 20,
    n_nonactivating: int = 10,
    n_hard_negative: int = 10,
    n_quantiles: int = 4,
    per_quantile: int = 3,
    random_fire_rate: float = 0.25,
    splits: tuple[str, ...] = ("train", "valid", "test"),
    peak: float = 8.0,
    seed: int = 0,
) -> FeatureRecord:
    """A synthetic feature that fires on ``trigger`` tokens (activation ~ ``peak``), with every
    example kind of :data:`labeler.records.ExampleKind` in every split:

    - ``top``: the strongest windows (1-3 triggers each), descending;
    - ``sample``: random activating windows (weaker: 20-70 % of the peak), and ``quantile``:
      the sample stratified into ``n_quantiles`` strata exactly as the store does it;
    - ``random``: random windows shared by every feature (see :func:`_random_windows`), all
      zeros unless the trigger was planted (rate ``random_fire_rate``);
    - ``nonactivating``: windows without the trigger;
    - ``hard_negative``: windows that *contain the trigger* in a context where the feature
      stays silent (as a context-dependent feature would): an explanation that only names the
      token is too broad for them.

    Window ids are unique across splits and kinds (the random ones are shared across features
    on purpose), so disjointness checks are meaningful.
    """
    rng = random.Random(seed * 1000 + feature)
    words = _filler(trigger)
    examples: list[ActivationExample] = []
    window = feature * 100_000
    for split_no, split in enumerate(splits):
        for kind, n in (("top", n_top), ("sample", n_sample), ("nonactivating", n_nonactivating),
                        ("hard_negative", n_hard_negative)):
            for j in range(n):
                tokens = [" " + rng.choice(words) for _ in range(ctx_len)]
                acts = [0.0] * ctx_len
                if kind == "hard_negative":
                    for pos in rng.sample(range(ctx_len), 1 + j % 2):
                        tokens[pos] = trigger  # the activating token, but no activation
                elif kind != "nonactivating":
                    n_hits = 1 + (j % 3 if kind == "top" else 0)
                    strength = peak * (1.0 - 0.04 * j) if kind == "top" else peak * rng.uniform(0.2, 0.7)
                    for pos in rng.sample(range(ctx_len), n_hits):
                        tokens[pos] = trigger
                        acts[pos] = round(strength * rng.uniform(0.8, 1.0), 4)
                        if pos + 1 < ctx_len:  # a little spill-over onto the next token
                            acts[pos + 1] = round(0.1 * acts[pos], 4)
                examples.append(ActivationExample(window=window, tokens=tokens, activations=acts,
                                                  split=split, kind=kind))  # type: ignore[arg-type]
                window += 1
        top = [e for e in examples if e.split == split and e.kind == "top"]
        top.sort(key=lambda e: -e.max_activation)
        rest = [e for e in examples if not (e.split == split and e.kind == "top")]
        sample = [e for e in rest if e.split == split and e.kind == "sample"]
        strata = quantile_strata(np.asarray([e.max_activation for e in sample]), n_quantiles, per_quantile)
        quantiles = [ActivationExample(window=sample[p].window, tokens=sample[p].tokens,
                                       activations=sample[p].activations, split=split, kind="quantile",
                                       quantile=q) for p, q in strata]  # type: ignore[arg-type]
        randoms = _random_windows(split_no, split, n_random, ctx_len, trigger, peak, random_fire_rate, seed)
        examples = rest + top + quantiles + randoms
    distinct = {(e.window, e.split): e for e in examples if e.kind != "quantile"}.values()
    count = sum(1 for e in distinct for a in e.activations if a > 0)
    all_acts = [a for e in distinct for a in e.activations]
    stats = FeatureStats(
        count=count, tokens_seen=len(all_acts) * 10, max=max(all_acts, default=0.0),
        mean=sum(all_acts) / max(len(all_acts) * 10, 1),
        mean_active=sum(a for a in all_acts if a > 0) / max(count, 1),
        hist_edges=[0.0, 2.0, 4.0, 6.0, 8.0, 10.0], hist_counts=[count // 5] * 5,
    )
    return FeatureRecord(feature=feature, stats=stats, examples=examples,
                         promoted_tokens=[trigger.strip(), trigger.strip() + "s"],
                         suppressed_tokens=["the"])
