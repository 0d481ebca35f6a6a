"""Scoring math: pure functions over plain Python sequences (numpy inside, no LLM, no I/O).

Researchers can score their own simulations with it::

    from labeler.scoring import metrics

    real = [[0.0, 3.2, 0.0], [0.0, 0.0, 0.1]]          # raw activations, one list per sequence
    pred = [[0.0, 9.0, 1.0], [0.0, 0.5, 0.0]]          # simulated 0..10 values, same shapes
    out = metrics.score_simulation(real, pred, kinds=["top", "random"])
    out["pearson"]          # headline: Pearson over all tokens of all sequences flattened
    out["pearson_top"]      # top-activating sequences only
    out["undefined"]        # {metric name: reason} for every metric that is undefined

    metrics.expected_value({"0": -0.1, "10": -2.5, "x": -0.2})   # EV over exactly "0".."10"
    metrics.auroc([1, 1, 0, 0], [0.9, 0.4, 0.4, 0.1])             # 0.875 (ties count half)

Undefined results.  A statistic that is mathematically undefined for its input (Pearson with a
constant side, AUROC with only one class, anything on empty input) is returned as ``None`` --
never NaN, never a silent 0, never an exception.  The ``*_stat`` / :func:`correlation` forms
return a :class:`Stat` that also carries the reason, and :func:`score_simulation` lists every
undefined metric with its reason under ``"undefined"``.  Inputs of mismatched length are a
programming error and raise :class:`ValueError`.

Activations are used raw (not normalised): Pearson and r² are invariant to affine rescaling, so
negative or arbitrarily scaled activations are handled without any preprocessing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "Stat", "correlation", "pearson", "spearman", "r_squared", "score_simulation",
    "expected_value", "scale_distribution", "tolerant_top_logprobs", "SCALE_TOKENS", "SIMULATION_GROUPS", "confusion", "balanced_accuracy", "precision_recall_f1",
    "f1", "auroc", "auroc_stat",
]

# Relative tolerance below which a vector counts as constant (float noise is not variation).
_CONSTANT_RTOL = 1e-12

SCALE_TOKENS: tuple[str, ...] = tuple(str(i) for i in range(11))
"""The simulator's output vocabulary: "0" .. "10"."""


@dataclass(frozen=True)
class Stat:
    """A statistic that may be undefined: ``value`` is None exactly when ``reason`` is set."""

    value: float | None
    reason: str | None = None
    n: int = 0  # number of observations it was computed from

    @property
    def defined(self) -> bool:
        return self.value is not None


def _as_vector(x: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _is_constant(v: np.ndarray) -> bool:
    if v.size == 0:
        return True
    spread = float(v.max() - v.min())
    return spread <= _CONSTANT_RTOL * max(1.0, float(np.abs(v).max()))


def _paired(x, y, xname: str, yname: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_vector(x, xname), _as_vector(y, yname)
    if a.shape != b.shape:
        raise ValueError(f"{xname} and {yname} differ in length ({a.size} vs {b.size})")
    return a, b


def _pearson_arrays(a: np.ndarray, b: np.ndarray, aname: str, bname: str) -> Stat:
    n = int(a.size)
    if n < 2:
        return Stat(None, f"needs at least 2 values (got {n})", n)
    if _is_constant(a):
        return Stat(None, f"{aname} are constant", n)
    if _is_constant(b):
        return Stat(None, f"{bname} are constant", n)
    a0, b0 = a - a.mean(), b - b.mean()
    r = float(np.dot(a0, b0) / math.sqrt(float(np.dot(a0, a0)) * float(np.dot(b0, b0))))
    return Stat(max(-1.0, min(1.0, r)), None, n)


def correlation(x: Sequence[float], y: Sequence[float], method: str = "pearson",
                *, xname: str = "x values", yname: str = "y values") -> Stat:
    """Pearson or Spearman correlation with the reason when it is undefined.

    Undefined (``value=None``) for fewer than 2 pairs or when either side is constant.
    Spearman is Pearson on average ranks (ties share their mean rank).
    """
    a, b = _paired(x, y, xname, yname)
    if method == "spearman":
        if a.size >= 2:
            a, b = rankdata(a), rankdata(b)
    elif method != "pearson":
        raise ValueError(f"unknown correlation method {method!r}: use 'pearson' or 'spearman'")
    return _pearson_arrays(a, b, xname, yname)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation coefficient, or None when undefined (see :func:`correlation`)."""
    return correlation(x, y, "pearson").value


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (ties averaged), or None when undefined."""
    return correlation(x, y, "spearman").value


def r_squared(real: Sequence[float], predicted: Sequence[float]) -> Stat:
    """Coefficient of determination of ``real`` by the best affine function of ``predicted``.

    The simulator's 0..10 scale and the raw activation scale differ, so an unfitted
    ``1 - SSE/SST`` would mostly measure the scale mismatch.  We fit ``real ~ a*pred + b`` by least
    squares and report ``1 - SSE/SST`` of that fit, which equals Pearson² when both vary.
    Defined cases beyond that: predictions constant while real varies -> 0.0 (the best affine
    fit is the mean and explains nothing; a true zero, not a placeholder).
    Undefined: fewer than 2 values, or real activations constant (nothing to explain).
    """
    a, b = _paired(real, predicted, "real activations", "predictions")
    n = int(a.size)
    if n < 2:
        return Stat(None, f"needs at least 2 values (got {n})", n)
    if _is_constant(a):
        return Stat(None, "real activations are constant (no variance to explain)", n)
    if _is_constant(b):
        return Stat(0.0, None, n)
    r = _pearson_arrays(a, b, "real activations", "predictions").value
    assert r is not None
    return Stat(r * r, None, n)


SIMULATION_GROUPS = ("top", "random", "quantile", "sample", "nonactivating", "hard_negative")
"""Example kinds that get their own correlation in :func:`score_simulation`."""


def score_simulation(
    real_per_sequence: Sequence[Sequence[float]],
    predicted_per_sequence: Sequence[Sequence[float]],
    kinds: Sequence[str] | None = None,
) -> dict:
    """Score one simulation: real activations vs simulated values, sequence by sequence.

    ``kinds[i]`` names sequence i's example kind ("top", "random", "quantile", ...; all "top"
    when omitted).  Returns a dict with:

    - ``pearson``: the headline -- Pearson over all tokens of all sequences flattened together
      (OpenAI's aggregate: one correlation over the concatenation, not a mean of per-sequence
      ones);
    - ``pearson_<kind>`` / ``r2_<kind>`` for each kind of :data:`SIMULATION_GROUPS` present
      (``pearson_top``, ``pearson_random`` always appear, None with a reason when absent);
    - ``r2``: :func:`r_squared` over all tokens; ``spearman``: rank correlation over all tokens;
    - ``n_sequences``, ``n_tokens``, ``n_<kind>`` (``n_top``, ``n_random`` always);
    - ``undefined``: ``{metric: reason}`` for each metric whose value is None.

    A sequence whose prediction length differs from its activation length raises ValueError.
    """
    if len(real_per_sequence) != len(predicted_per_sequence):
        raise ValueError(f"{len(real_per_sequence)} real sequences but {len(predicted_per_sequence)} predicted")
    kinds = list(kinds) if kinds is not None else ["top"] * len(real_per_sequence)
    if len(kinds) != len(real_per_sequence):
        raise ValueError(f"{len(kinds)} kinds for {len(real_per_sequence)} sequences")
    for i, (r, p) in enumerate(zip(real_per_sequence, predicted_per_sequence)):
        if len(r) != len(p):
            raise ValueError(f"sequence {i}: {len(r)} activations but {len(p)} predictions")

    def flat(selected: list[int], which) -> np.ndarray:
        parts = [np.asarray(which[i], dtype=np.float64).reshape(-1) for i in selected]
        return np.concatenate(parts) if parts else np.zeros(0)

    groups = {"": list(range(len(kinds)))}
    for kind in SIMULATION_GROUPS:
        idx = [i for i, k in enumerate(kinds) if k == kind]
        if idx or kind in ("top", "random"):
            groups["_" + kind] = idx
    out: dict = {}
    undefined: dict[str, str] = {}
    for suffix, idx in groups.items():
        real, pred = flat(idx, real_per_sequence), flat(idx, predicted_per_sequence)
        if not idx:
            what = suffix.lstrip("_") or "any"
            for name in ("pearson", "r2"):
                out[name + suffix] = None
                undefined[name + suffix] = f"no {what} sequences"
            continue
        stats = {
            "pearson": _pearson_arrays(_as_vector(real, "real activations"), _as_vector(pred, "predictions"),
                                       "real activations", "predictions"),
            "r2": r_squared(real, pred),
        }
        if suffix == "":
            stats["spearman"] = correlation(real, pred, "spearman", xname="real activations",
                                            yname="predictions")
        for name, st in stats.items():
            out[name + suffix] = st.value
            if st.reason:
                undefined[name + suffix] = st.reason
    out["n_sequences"] = len(kinds)
    out["n_tokens"] = int(sum(len(r) for r in real_per_sequence))
    for suffix, idx in groups.items():
        if suffix:
            out["n" + suffix] = len(idx)
    out["undefined"] = undefined
    return out


def scale_distribution(top_logprobs: Mapping[str, float], scale: Sequence[str] = SCALE_TOKENS
                       ) -> tuple[dict[str, float], float]:
    """(probabilities over the scale tokens, renormalised; their total probability mass before
    renormalising).  Exact token match only, as OpenAI's reference: ``" 2"`` is not ``"2"``."""
    allowed = set(scale)
    probs = {tok: math.exp(lp) for tok, lp in top_logprobs.items()
             if tok in allowed and lp is not None and math.isfinite(lp)}
    mass = sum(probs.values())
    if mass <= 0:
        return {}, 0.0
    return {k: v / mass for k, v in probs.items()}, mass


def expected_value(top_logprobs: Mapping[str, float], scale: Sequence[str] = SCALE_TOKENS) -> float:
    """Expected value over the scale tokens "0".."10", exactly as OpenAI's reference scoring
    (automated-interpretability, ``simulator.py``): only tokens that are exactly one of the scale
    strings count, their probabilities are renormalised among themselves, and when none is
    present the value is 0.0.  Tolerant matching (" 7" as "7") is a separate, visible step:
    :func:`tolerant_top_logprobs`, whose changes a caller records."""
    probs, _ = scale_distribution(top_logprobs, scale)
    return float(sum(float(k) * p for k, p in probs.items()))


def tolerant_top_logprobs(top_logprobs: Mapping[str, float], scale: Sequence[str] = SCALE_TOKENS
                          ) -> tuple[dict[str, float], int]:
    """Alternatives with surrounding whitespace stripped from scale tokens (``" 7"``, ``"\t7"``,
    ``"7\n"`` -> ``"7"``), variants of one value summed (they are distinct tokens with disjoint
    probability), other tokens kept as they are.  Returns (new mapping, how many entries were
    changed): chat models often write a value with its leading space in one token."""
    allowed = set(scale)
    probs: dict[str, float] = {}
    changed = 0
    for tok, lp in top_logprobs.items():
        if lp is None or not math.isfinite(lp):
            continue
        key = tok.strip() if tok.strip() in allowed else tok
        changed += key != tok
        probs[key] = probs.get(key, 0.0) + math.exp(lp)
    return {k: math.log(v) for k, v in probs.items() if v > 0}, changed


def _binary(y: Sequence, name: str) -> np.ndarray:
    arr = np.asarray(y).reshape(-1)
    if arr.size and not np.isin(arr.astype(np.float64), (0.0, 1.0)).all():
        raise ValueError(f"{name} must contain only 0/1 (or False/True)")
    return arr.astype(bool)


def confusion(y_true: Sequence, y_pred: Sequence) -> dict[str, int]:
    """Counts ``tp``, ``fp``, ``tn``, ``fn`` for binary labels (1 = positive)."""
    t, p = _binary(y_true, "y_true"), _binary(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length ({t.size} vs {p.size})")
    return {"tp": int((t & p).sum()), "fp": int((~t & p).sum()),
            "tn": int((~t & ~p).sum()), "fn": int((t & ~p).sum())}


def balanced_accuracy(y_true: Sequence, y_pred: Sequence) -> float | None:
    """Mean of the recall on positives and the recall on negatives.

    None when either class is absent from ``y_true`` (one of the two recalls is undefined).
    """
    c = confusion(y_true, y_pred)
    pos, neg = c["tp"] + c["fn"], c["tn"] + c["fp"]
    if pos == 0 or neg == 0:
        return None
    return 0.5 * (c["tp"] / pos + c["tn"] / neg)


def precision_recall_f1(y_true: Sequence, y_pred: Sequence) -> dict[str, float | None]:
    """Precision, recall and F1 of the positive class.

    precision is None when nothing was predicted positive; recall is None when there are no
    positives; F1 = 2TP / (2TP + FP + FN) is None only when both of those hold (no positives
    anywhere), and a real 0.0 when positives exist but none were found.
    """
    c = confusion(y_true, y_pred)
    tp, fp, fn = c["tp"], c["fp"], c["fn"]
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    denom = 2 * tp + fp + fn
    return {"precision": precision, "recall": recall, "f1": (2 * tp / denom) if denom else None}


def f1(y_true: Sequence, y_pred: Sequence) -> float | None:
    """F1 of the positive class (see :func:`precision_recall_f1`)."""
    return precision_recall_f1(y_true, y_pred)["f1"]


def auroc_stat(labels: Sequence, scores: Sequence[float]) -> Stat:
    """Area under the ROC curve via the Mann-Whitney U statistic, ties counted as half.

    AUROC = P(score of a random positive > score of a random negative) + 0.5 * P(tie).
    Undefined when either class is empty.
    """
    y = _binary(labels, "labels")
    s = _as_vector(scores, "scores")
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length ({y.size} vs {s.size})")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return Stat(None, f"needs both classes (got {n_pos} positive, {n_neg} negative)", int(y.size))
    ranks = rankdata(s)  # average ranks: a tie contributes 1/2
    u = float(ranks[y].sum()) - n_pos * (n_pos + 1) / 2.0
    return Stat(u / (n_pos * n_neg), None, int(y.size))


def auroc(labels: Sequence, scores: Sequence[float]) -> float | None:
    """AUROC (see :func:`auroc_stat`), None when undefined."""
    return auroc_stat(labels, scores).value
