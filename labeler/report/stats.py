"""Pure statistics behind a report: distributions, chance lines, paired tests, agreement.

Every mean carries a bootstrap confidence interval (95 %, BCa; percentile where BCa is
undefined or too slow); paired comparisons are Holm-corrected across the whole report (one
family: every scorer and pair of configurations); score means weighted by feature density
sit beside the plain ones, with Kish's effective number of features."""

from __future__ import annotations

import hashlib
import math
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats as sps

from labeler.db.views import FeatureRow, ScoreRow
from labeler.report.data import ReportData

# The scorer whose value ranks best/worst features when present (most informative first).
PREFERRED_METHODS = ("simulation", "detection", "fuzzing", "embedding", "rubric", "intruder")


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _clean(x: float | None) -> float | None:
    """JSON-safe float: NaN/inf become None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


CONFIDENCE = 0.95
ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 2000
BCA_MAX_N = 5000  # BCa's jackknife is O(n^2): above this the percentile interval is used


@dataclass
class Interval:
    """A bootstrap confidence interval of a mean (``CONFIDENCE``), or why there is none."""

    low: float | None = None
    high: float | None = None
    method: str = "none"  # "BCa" | "percentile" | "none"
    note: str = ""


def bootstrap_ci(values: list[float], weights: list[float] | None = None, seed: str = "") -> Interval:
    """Bootstrap CI of the (optionally weighted) mean, resampling features; BCa, with the
    percentile interval where BCa is undefined (constant data) or too slow (n > BCA_MAX_N)."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return Interval(note=f"needs at least 2 values (have {x.size})")
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(seed.encode(), digest_size=8).digest(), "little"))
    if weights is None:
        data: tuple = (x,)

        def stat(a, axis=-1):
            return np.mean(a, axis=axis)
    else:
        data = (x, np.asarray(weights, dtype=float))

        def stat(a, w, axis=-1):
            return np.sum(a * w, axis=axis) / np.sum(w, axis=axis)
    methods = ("BCa", "percentile") if x.size <= BCA_MAX_N else ("percentile",)
    for method in methods:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sps.bootstrap(data, stat, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=CONFIDENCE,
                                method=method, paired=weights is not None, vectorized=True, rng=rng)
        low, high = _clean(res.confidence_interval.low), _clean(res.confidence_interval.high)
        if low is not None and high is not None:
            return Interval(low, high, method)
    mean = _clean(float(stat(*data)))
    return Interval(mean, mean, "percentile", "constant values")


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (input order; None stays None, outside the family)."""
    idx = sorted((i for i, p in enumerate(p_values) if p is not None), key=lambda i: p_values[i])  # type: ignore[arg-type,return-value]
    m = len(idx)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))  # type: ignore[arg-type]
        out[i] = running
    return out


@dataclass
class Distribution:
    method: str
    label: str
    n: int
    n_failed: int
    n_undefined: int  # scored, but the metric is undefined (e.g. constant activations)
    mean: float | None
    median: float | None
    std: float | None
    ci: Interval = field(default_factory=Interval)  # of the mean
    weighted_mean: float | None = None  # weighted by feature density (firing rate)
    weighted_ci: Interval = field(default_factory=Interval)
    n_eff: float | None = None  # Kish's effective number of features under the density weights
    weight_coverage: float | None = None  # features with a known density / features scored
    values: list[float] = field(repr=False, default_factory=list)


@dataclass
class ChanceLine:
    """Mean score of shuffled (another feature's) explanations: what a useless label gets."""

    method: str
    n: int
    mean: float | None
    ci: Interval = field(default_factory=Interval)
    values: list[float] = field(repr=False, default_factory=list)


@dataclass
class PairedComparison:
    method: str
    a: str
    b: str
    n: int  # features scored under both configurations
    mean_a: float | None
    mean_b: float | None
    mean_diff: float | None  # a - b
    a_wins: int
    b_wins: int
    test: str  # "wilcoxon" | "paired-t" | "none"
    statistic: float | None
    p_value: float | None
    note: str = ""
    diff_ci: Interval = field(default_factory=Interval)  # bootstrap CI of the mean per-feature difference
    p_holm: float | None = None  # Holm-adjusted over every comparison of the report
    significant: bool = False  # p_holm < ALPHA


@dataclass
class Agreement:
    methods: list[str]
    rho: list[list[float | None]]  # Spearman, methods x methods
    n: list[list[int]]


@dataclass
class Correlation:
    method: str
    against: str  # "density" | "max_activation"
    n: int
    rho: float | None
    p_value: float | None


@dataclass
class CostSummary:
    label: str
    n_features: int
    explain_cost_usd: float
    score_cost_usd: float
    tokens: int
    cost_per_feature: float
    tokens_per_feature: float


@dataclass
class Analysis:
    distributions: list[Distribution]
    chance: dict[str, ChanceLine]
    paired: list[PairedComparison]
    agreement: Agreement
    correlations: list[Correlation]
    costs: list[CostSummary]
    primary_method: str | None
    primary_label: str | None

    def to_dict(self) -> dict[str, Any]:
        def strip(d: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in d.items() if k != "values"}

        return {
            "primary_method": self.primary_method,
            "primary_label": self.primary_label,
            "distributions": [strip(asdict(d)) for d in self.distributions],
            "chance": {m: strip(asdict(c)) for m, c in self.chance.items()},
            "paired": [asdict(p) for p in self.paired],
            "agreement": asdict(self.agreement),
            "correlations": [asdict(c) for c in self.correlations],
            "costs": [asdict(c) for c in self.costs],
        }


def distributions(scores: list[ScoreRow], features: dict[int, FeatureRow] | None = None) -> list[Distribution]:
    """Per (scorer, configuration): n, mean with its bootstrap CI, median, std, and the mean
    weighted by feature density beside the plain one (a label that is good on the features
    that fire most is worth more per token of text)."""
    groups: dict[tuple[str, str], list[ScoreRow]] = defaultdict(list)
    for s in scores:
        if not s.control:
            groups[(s.method, s.configuration)].append(s)
    out = []
    for (method, label), rows in sorted(groups.items()):
        ok = [r for r in rows if not r.failed and _finite(r.value)]
        vals = [float(r.value) for r in ok]  # type: ignore[arg-type]
        arr = np.asarray(vals, dtype=float)
        d = Distribution(
            method=method, label=label, n=len(vals), n_failed=sum(1 for r in rows if r.failed),
            n_undefined=sum(1 for r in rows if not r.failed and not _finite(r.value)),
            mean=_clean(arr.mean()) if len(arr) else None,
            median=_clean(np.median(arr)) if len(arr) else None,
            std=_clean(arr.std(ddof=1)) if len(arr) > 1 else None,
            ci=bootstrap_ci(vals, seed=f"{method}|{label}"), values=vals,
        )
        density = {f: row.density for f, row in (features or {}).items() if _finite(row.density) and row.density > 0}
        pairs = [(float(r.value), density[r.feature]) for r in ok if r.feature in density]  # type: ignore[arg-type]
        if pairs:
            v, w = (np.asarray(x, dtype=float) for x in zip(*pairs))
            d.weighted_mean = _clean(float((v * w).sum() / w.sum()))
            d.n_eff = _clean(float(w.sum() ** 2 / (w ** 2).sum()))
            d.weight_coverage = len(pairs) / len(vals)
            d.weighted_ci = bootstrap_ci(v.tolist(), w.tolist(), seed=f"{method}|{label}|density")
        out.append(d)
    return out


def chance_lines(scores: list[ScoreRow]) -> dict[str, ChanceLine]:
    groups: dict[str, list[float]] = defaultdict(list)
    for s in scores:
        if s.control and not s.failed and _finite(s.value):
            groups[s.method].append(float(s.value))  # type: ignore[arg-type]
    return {m: ChanceLine(method=m, n=len(v), mean=_clean(float(np.mean(v))), values=v,
                          ci=bootstrap_ci(v, seed=f"{m}|chance"))
            for m, v in sorted(groups.items())}


def per_feature_scores(scores: list[ScoreRow], method: str, label: str) -> dict[int, float]:
    """One value per feature (mean when a configuration scored a feature more than once)."""
    acc: dict[int, list[float]] = defaultdict(list)
    for s in scores:
        if s.method == method and s.configuration == label and not s.control and not s.failed and _finite(s.value):
            acc[s.feature].append(float(s.value))  # type: ignore[arg-type]
    return {f: float(np.mean(v)) for f, v in acc.items()}


def paired_test(a: list[float], b: list[float]) -> tuple[str, float | None, float | None, str]:
    """Wilcoxon signed-rank on paired scores; paired t-test when Wilcoxon is undefined.

    Returns (test name, statistic, p-value, note).
    """
    n = len(a)
    if n < 2:
        return "none", None, None, f"needs at least 2 paired features (have {n})"
    diffs = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if np.allclose(diffs, 0.0):
        return "none", None, 1.0, "identical scores on every feature"
    if np.count_nonzero(diffs) >= 6:  # below that Wilcoxon cannot reach p < 0.05 anyway
        try:
            res = sps.wilcoxon(a, b, zero_method="wilcox")
            return "wilcoxon", _clean(res.statistic), _clean(res.pvalue), ""
        except ValueError as e:  # e.g. all differences zero after ties
            note = f"wilcoxon undefined ({e}); paired t-test instead"
    else:
        note = "too few non-zero differences for Wilcoxon; paired t-test instead"
    res = sps.ttest_rel(a, b)
    return "paired-t", _clean(res.statistic), _clean(res.pvalue), note


def paired_comparisons(scores: list[ScoreRow], labels: list[str], methods: list[str]) -> list[PairedComparison]:
    out = []
    for method in methods:
        per_label = {lab: per_feature_scores(scores, method, lab) for lab in labels}
        for a, b in combinations(labels, 2):
            common = sorted(set(per_label[a]) & set(per_label[b]))
            if not common:
                continue
            va = [per_label[a][f] for f in common]
            vb = [per_label[b][f] for f in common]
            test, stat, p, note = paired_test(va, vb)
            diffs = np.subtract(va, vb)
            out.append(PairedComparison(
                method=method, a=a, b=b, n=len(common),
                mean_a=_clean(np.mean(va)), mean_b=_clean(np.mean(vb)),
                mean_diff=_clean(np.mean(diffs)),
                a_wins=sum(x > y for x, y in zip(va, vb)), b_wins=sum(y > x for x, y in zip(va, vb)),
                test=test, statistic=stat, p_value=p, note=note,
                diff_ci=bootstrap_ci(diffs.tolist(), seed=f"{method}|{a}|{b}"),
            ))
    # one family: every comparison of the report (scorers x configuration pairs)
    for c, adjusted in zip(out, holm([c.p_value for c in out])):
        c.p_holm = adjusted
        c.significant = adjusted is not None and adjusted < ALPHA
    return out


def scorer_agreement(scores: list[ScoreRow], methods: list[str]) -> Agreement:
    """Spearman correlation between scorers over the explanations both scored."""
    by_exp: dict[int, dict[str, float]] = defaultdict(dict)
    for s in scores:
        if not s.control and not s.failed and _finite(s.value):
            by_exp[s.explanation_id][s.method] = float(s.value)  # type: ignore[arg-type]
    k = len(methods)
    rho: list[list[float | None]] = [[None] * k for _ in range(k)]
    n: list[list[int]] = [[0] * k for _ in range(k)]
    for i, mi in enumerate(methods):
        for j, mj in enumerate(methods):
            pairs = [(v[mi], v[mj]) for v in by_exp.values() if mi in v and mj in v]
            n[i][j] = len(pairs)
            if i == j:
                rho[i][j] = 1.0 if pairs else None
            elif len(pairs) >= 3:
                x, y = zip(*pairs)
                if np.ptp(x) > 0 and np.ptp(y) > 0:
                    rho[i][j] = _clean(sps.spearmanr(x, y).statistic)
    return Agreement(methods=list(methods), rho=rho, n=n)


def feature_correlations(data: ReportData, methods: list[str], label: str | None) -> list[Correlation]:
    out = []
    if label is None:
        return out
    for method in methods:
        per_f = per_feature_scores(data.scores, method, label)
        for attr in ("density", "max_activation"):
            pairs = [(getattr(data.features[f], attr), v) for f, v in per_f.items()
                     if f in data.features and _finite(getattr(data.features[f], attr))]
            rho = p = None
            if len(pairs) >= 3:
                x, y = zip(*pairs)
                if np.ptp(x) > 0 and np.ptp(y) > 0:
                    r = sps.spearmanr(x, y)
                    rho, p = _clean(r.statistic), _clean(r.pvalue)
            out.append(Correlation(method=method, against=attr, n=len(pairs), rho=rho, p_value=p))
    return out


def cost_summaries(data: ReportData) -> list[CostSummary]:
    label_of = {e.id: e.configuration for e in data.explanations}
    out = []
    for label in data.labels:
        exps = [e for e in data.explanations if e.configuration == label]
        feats = {e.feature for e in exps}
        explain_cost = sum(e.cost_usd for e in exps)
        sc = [s for s in data.scores if label_of.get(s.explanation_id) == label]
        score_cost = sum(s.cost_usd for s in sc)
        tokens = sum(e.prompt_tokens + e.completion_tokens for e in exps) + sum(
            s.prompt_tokens + s.completion_tokens for s in sc)
        nf = max(len(feats), 1)
        out.append(CostSummary(label=label, n_features=len(feats), explain_cost_usd=explain_cost,
                               score_cost_usd=score_cost, tokens=tokens,
                               cost_per_feature=(explain_cost + score_cost) / nf, tokens_per_feature=tokens / nf))
    return out


def primary_method(methods: list[str]) -> str | None:
    for m in PREFERRED_METHODS:
        if m in methods:
            return m
    return methods[0] if methods else None


def analyse(data: ReportData) -> Analysis:
    methods, labels = data.methods, data.labels
    pm = primary_method(methods)
    dists = distributions(data.scores, data.features)
    # The primary configuration: the one with the best mean primary score (what a user would pick).
    pl = None
    cands = [d for d in dists if d.method == pm and d.mean is not None]
    if cands:
        pl = max(cands, key=lambda d: (d.mean, d.n)).label
    elif labels:
        pl = labels[0]
    return Analysis(
        distributions=dists, chance=chance_lines(data.scores),
        paired=paired_comparisons(data.scores, labels, methods),
        agreement=scorer_agreement(data.scores, methods),
        correlations=feature_correlations(data, methods, pl),
        costs=cost_summaries(data), primary_method=pm, primary_label=pl,
    )


def best_and_worst(data: ReportData, method: str | None, label: str | None, k: int = 5
                   ) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """The k best and k worst features by the primary score of the primary configuration."""
    if method is None or label is None:
        return [], []
    ranked = sorted(per_feature_scores(data.scores, method, label).items(), key=lambda kv: (-kv[1], kv[0]))
    best = ranked[:k]
    worst = [kv for kv in reversed(ranked[-k:]) if kv not in best] if len(ranked) > k else []
    return best, worst
