"""Identifiers shared by the store, the database and the API."""

from __future__ import annotations

import re

from labeler.core.errors import ConfigError

_SLUG_BAD = re.compile(r"[^a-z0-9._-]+")


def slugify(name: str) -> str:
    """URL-safe slug: ``EleutherAI/pythia-70m`` -> ``eleutherai--pythia-70m``."""
    s = name.strip().lower().replace("/", "--")
    s = _SLUG_BAD.sub("-", s).strip("-")
    return s or "unnamed"


def parse_feature_range(spec: str, n_features: int | None = None) -> list[int]:
    """Parse ``"0:500"``, ``"7"``, ``"1,5,9"``, ``"0:100,200:210"`` or ``"all"`` into indices.

    Ranges are half-open like Python slices; an open end (``"100:"``) needs ``n_features``.
    """
    spec = spec.strip()
    if spec in ("all", ":", ""):
        if n_features is None:
            raise ConfigError("feature range 'all' needs the number of features")
        return list(range(n_features))
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if ":" in part:
                lo_s, hi_s = part.split(":", 1)
                lo = int(lo_s) if lo_s else 0
                if hi_s:
                    hi = int(hi_s)
                elif n_features is not None:
                    hi = n_features
                else:
                    raise ConfigError(f"feature range {part!r} has an open end; give an end")
                out.extend(range(lo, hi))
            else:
                out.append(int(part))
        except ValueError:
            raise ConfigError(
                f"cannot parse feature range {part!r}: use e.g. 0:500, 7, or 1,5,9"
            ) from None
    if any(i < 0 for i in out):
        raise ConfigError(f"feature indices must be >= 0 (got {spec!r})")
    if n_features is not None:
        bad = [i for i in out if i >= n_features]
        if bad:
            raise ConfigError(
                f"feature index {bad[0]} is out of range: the SAE has {n_features} features (0..{n_features - 1})"
            )
    return sorted(dict.fromkeys(out))
