"""The seeded feature sample the demo and the eval harness label."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from labeler.core.errors import InputError


class EvalSample(BaseModel):
    """Which features to label: ``n`` live ones drawn with ``seed``."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(32, ge=1, description="how many features")
    seed: int = Field(0, description="the same seed always draws the same features")
    features: str | None = Field(None, description='range to draw from, e.g. "0:512" (default: every feature)')
    min_count: int = Field(1, ge=0, description="skip features that fired fewer times (dead features)")


def sample_features(stats: dict[str, np.ndarray], n_features: int, sample: EvalSample) -> list[int]:
    """A seeded, sorted sample of live features: the same config always picks the same ones."""
    from labeler.core.naming import parse_feature_range

    pool = parse_feature_range(sample.features, n_features) if sample.features else list(range(n_features))
    counts = np.asarray(stats.get("count", np.ones(n_features)))
    pool = [i for i in pool if counts[i] >= sample.min_count]
    if not pool:
        raise InputError(f"no feature fired at least {sample.min_count} time(s) in the sample range; "
                         "collect more tokens or lower sample.min_count")
    rng = np.random.default_rng(sample.seed)
    k = min(sample.n, len(pool))
    return sorted(int(i) for i in rng.choice(np.asarray(pool), size=k, replace=False))
