"""Identifiers shared by the store, the database and the API."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Sequence
from itertools import chain

from labeler.core.errors import ConfigError

_SLUG_BAD = re.compile(r"[^a-z0-9._-]+")


def slugify(name: str) -> str:
    """URL-safe slug: ``EleutherAI/pythia-70m`` -> ``eleutherai--pythia-70m``."""
    s = name.strip().lower().replace("/", "--")
    s = _SLUG_BAD.sub("-", s).strip("-")
    return s or "unnamed"


class FeatureSelection(Sequence[int]):
    """Sorted, distinct feature indices kept as disjoint half-open spans: ``len``, iteration,
    membership and indexing without building the list, so ``0:1000000000`` costs two integers
    until someone iterates it (and bounds are checked before anyone can)."""

    def __init__(self, spans: Sequence[tuple[int, int]]) -> None:
        merged: list[list[int]] = []
        for lo, hi in sorted((lo, hi) for lo, hi in spans if lo < hi):
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self.spans: tuple[tuple[int, int], ...] = tuple((lo, hi) for lo, hi in merged)
        self._starts = [lo for lo, _ in self.spans]
        self._offsets = [0]  # how many indices come before each span
        for lo, hi in self.spans:
            self._offsets.append(self._offsets[-1] + hi - lo)

    def __len__(self) -> int:
        return self._offsets[-1]

    def __iter__(self) -> Iterator[int]:
        return chain.from_iterable(range(lo, hi) for lo, hi in self.spans)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        k = bisect.bisect_right(self._starts, value) - 1
        return k >= 0 and value < self.spans[k][1]

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("feature selection index out of range")
        k = bisect.bisect_right(self._offsets, i) - 1
        return self.spans[k][0] + i - self._offsets[k]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FeatureSelection):
            return self.spans == other.spans
        if isinstance(other, (list, tuple, range)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return "FeatureSelection(" + ",".join(f"{lo}:{hi}" for lo, hi in self.spans) + ")"

    @property
    def max(self) -> int | None:
        return self.spans[-1][1] - 1 if self.spans else None


def _int(text: str, part: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"cannot parse feature range {part!r}: use e.g. 0:500, 7, or 1,5,9") from None


def parse_feature_range(spec: str, n_features: int | None = None) -> FeatureSelection:
    """Parse ``"0:500"``, ``"7"``, ``"1,5,9"``, ``"0:100,200:210"`` or ``"all"`` into indices.

    Ranges are half-open like Python slices; an open end (``"100:"``) needs ``n_features``.
    Every part is checked against ``n_features`` before anything is built, and the result is
    lazy (``FeatureSelection``): a range larger than the SAE is refused, not allocated.  An empty
    ``spec`` is refused (``"all"`` says every feature on purpose).
    """
    spec = spec.strip()
    if not spec:
        raise ConfigError("the feature range is empty: give e.g. 0:500, 7, 1,5,9, or 'all' for every feature")
    if spec in ("all", ":"):
        if n_features is None:
            raise ConfigError("feature range 'all' needs the number of features")
        return FeatureSelection([(0, n_features)])
    spans: list[tuple[int, int]] = []
    for part in spec.split(","):
        part = part.strip()
        if ":" in part:
            lo_s, hi_s = part.split(":", 1)
            lo = _int(lo_s, part) if lo_s.strip() else 0
            if hi_s.strip():
                hi = _int(hi_s, part)
            elif n_features is not None:
                hi = n_features
            else:
                raise ConfigError(f"feature range {part!r} has an open end; give an end")
            if hi < lo:
                raise ConfigError(f"feature range {part!r} runs backwards: give A:B with A <= B")
        else:
            lo = _int(part, part)
            hi = lo + 1
        if lo < 0:
            raise ConfigError(f"feature indices must be >= 0 (got {spec!r})")
        if n_features is not None and hi > n_features:
            first_bad = max(lo, n_features)
            raise ConfigError(
                f"feature index {first_bad} is out of range: the SAE has {n_features} features (0..{n_features - 1})"
            )
        spans.append((lo, hi))
    return FeatureSelection(spans)
