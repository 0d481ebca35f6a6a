"""Hand-built feature records for unit tests of explainers and scorers (no model needed)."""

from __future__ import annotations

import random

from labeler.records import ActivationExample, FeatureRecord, FeatureStats

_WORDS = (
    "the of and to in is was for on that with as by at from it an be this which or are "
    "river bridge golden gate city water code bug error function value table chair music "
    "song piano guitar dog cat bird tree leaf green blue red yellow number one two three"
).split()


def make_feature_record(
    feature: int = 0,
    trigger: str = " bridge",
    *,
    ctx_len: int = 16,
    n_top: int = 10,
    n_random: int = 10,
    n_nonactivating: int = 10,
    splits: tuple[str, ...] = ("train", "valid", "test"),
    peak: float = 8.0,
    seed: int = 0,
) -> FeatureRecord:
    """A synthetic feature that fires on ``trigger`` tokens (activation ~ ``peak``) and nowhere else.

    Window ids are unique across splits and kinds, so disjointness checks are meaningful.
    """
    rng = random.Random(seed * 1000 + feature)
    examples: list[ActivationExample] = []
    window = feature * 100_000
    for split in splits:
        for kind, n in (("top", n_top), ("sample", n_random), ("nonactivating", n_nonactivating)):
            for j in range(n):
                tokens = [" " + rng.choice(_WORDS) for _ in range(ctx_len)]
                acts = [0.0] * ctx_len
                if kind != "nonactivating":
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
        examples = rest + top
    count = sum(1 for e in examples for a in e.activations if a > 0)
    all_acts = [a for e in examples for a in e.activations]
    stats = FeatureStats(
        count=count, tokens_seen=len(all_acts) * 10, max=max(all_acts),
        mean=sum(all_acts) / (len(all_acts) * 10),
        mean_active=sum(a for a in all_acts if a > 0) / max(count, 1),
        hist_edges=[0.0, 2.0, 4.0, 6.0, 8.0, 10.0], hist_counts=[count // 5] * 5,
    )
    return FeatureRecord(feature=feature, stats=stats, examples=examples,
                         promoted_tokens=[trigger.strip(), trigger.strip() + "s"],
                         suppressed_tokens=["the"])
