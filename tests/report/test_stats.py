"""Pure report statistics on hand-built rows (no database)."""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest
from scipy import stats as sps

from labeler.db.views import ExplanationRow, FeatureRow, ScoreRow
from labeler.report.data import ReportData
from labeler.report.render import render_report
from labeler.report.stats import (
    analyse, best_and_worst, bootstrap_ci, distributions, holm, paired_comparisons, paired_test, scorer_agreement,
)


def _data(n: int = 20, gap: float = 0.2, seed: int = 0) -> ReportData:
    rng = random.Random(seed)
    d = ReportData(title="t", model="m", sae="s")
    eid = 0
    for f in range(n):
        d.features[f] = FeatureRow(f, density=10 ** rng.uniform(-4, -1), max_activation=rng.uniform(1, 10))
        base = rng.uniform(0.2, 0.6)
        for label, shift in (("a", 0.0), ("b", gap)):
            eid += 1
            d.explanations.append(ExplanationRow(eid, f, label, label, f"text {f}{label}", cost_usd=0.01,
                                                 prompt_tokens=100, completion_tokens=10))
            d.scores.append(ScoreRow(eid, f, label, "simulation", base + shift + rng.gauss(0, 0.01)))
            d.scores.append(ScoreRow(eid, f, label, "embedding", base + shift + rng.gauss(0, 0.05)))
            d.scores.append(ScoreRow(eid, f, label, "simulation", rng.gauss(0, 0.05), control=True))
    return d


def test_paired_test_detects_a_consistent_difference_and_reports_n():
    a = _data(gap=0.2)
    an = analyse(a)
    sim = next(p for p in an.paired if p.method == "simulation")
    assert (sim.a, sim.b, sim.n) == ("a", "b", 20)
    assert sim.test == "wilcoxon"
    assert sim.p_value is not None and sim.p_value < 1e-3
    assert sim.b_wins == 20 and sim.mean_diff == pytest.approx(-0.2, abs=0.02)


def test_paired_test_without_difference_is_not_significant():
    an = analyse(_data(gap=0.0, seed=3))
    sim = next(p for p in an.paired if p.method == "simulation")
    assert sim.p_value is not None and sim.p_value > 0.01


def test_paired_test_falls_back_to_t_test_and_refuses_tiny_samples():
    test, _, p, note = paired_test([0.1, 0.2, 0.3], [0.2, 0.4, 0.5])
    assert test == "paired-t" and p is not None and "Wilcoxon" in note
    assert paired_test([0.1], [0.2])[0] == "none"
    assert paired_test([0.1, 0.2], [0.1, 0.2])[2] == 1.0


def test_chance_line_is_the_mean_of_control_scores_only():
    an = analyse(_data())
    chance = an.chance["simulation"]
    assert chance.n == 40
    assert abs(chance.mean) < 0.05  # controls are ~N(0, 0.05); real scores are >= 0.2
    assert "embedding" not in an.chance
    sim_b = next(d for d in an.distributions if d.method == "simulation" and d.label == "b")
    assert sim_b.n == 20 and sim_b.mean > 0.35


def test_agreement_and_primary_choice():
    d = _data()
    ag = scorer_agreement(d.scores, ["embedding", "simulation"])
    assert ag.rho[0][0] == 1.0 and ag.n[0][1] == 40
    assert ag.rho[0][1] is not None and ag.rho[0][1] > 0.5  # both track the same underlying quality
    an = analyse(d)
    assert an.primary_method == "simulation" and an.primary_label == "b"
    best, worst = best_and_worst(d, an.primary_method, an.primary_label, k=3)
    assert len(best) == 3 and len(worst) == 3
    assert min(v for _, v in best) > max(v for _, v in worst)
    assert not {f for f, _ in best} & {f for f, _ in worst}


def test_failed_and_nan_scores_are_counted_not_averaged():
    d = _data(n=4)
    d.scores.append(ScoreRow(999, 0, "a", "simulation", None, failed=True))
    d.scores.append(ScoreRow(998, 1, "a", "simulation", math.nan))
    an = analyse(d)
    sim_a = next(x for x in an.distributions if x.method == "simulation" and x.label == "a")
    assert sim_a.n == 4 and sim_a.n_failed == 1 and math.isfinite(sim_a.mean)


# -- Holm ----------------------------------------------------------------------------------


def test_holm_matches_a_hand_worked_example():
    # sorted: 0.005, 0.01, 0.03, 0.04 -> 4*0.005=0.02, 3*0.01=0.03, 2*0.03=0.06,
    # 1*0.04=0.04 raised to the running max 0.06; reported in input order
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # None is outside the family: m = 2 here, not 4
    assert holm([None, 0.01, None, 0.02]) == [None, pytest.approx(0.02), None, pytest.approx(0.02)]
    assert holm([]) == [] and holm([0.3]) == [0.3]


def test_holm_caps_at_one():
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # 2*0.5 = 1.0, then max(1.0, 0.6)
    assert holm([0.9, 0.02, 0.7]) == pytest.approx([1.0, 0.06, 1.0])


def test_holm_is_monotone_in_the_raw_p_and_never_below_it():
    rng = random.Random(1)
    for _ in range(50):
        p = [rng.random() ** 3 for _ in range(rng.randint(2, 12))]
        adj = holm(p)
        assert all(r <= a <= 1.0 for r, a in zip(p, adj))
        for i in range(len(p)):
            for j in range(len(p)):
                if p[i] < p[j]:
                    assert adj[i] <= adj[j]


def _pair_scores(diffs: dict[str, list[float]]) -> list[ScoreRow]:
    """Per method: configuration "a" scores 0.5 + d, "b" scores 0.5, on one feature per d."""
    rows = []
    for method, ds in diffs.items():
        for f, d in enumerate(ds):
            rows += [ScoreRow(2 * f, f, "a", method, 0.5 + d), ScoreRow(2 * f + 1, f, "b", method, 0.5)]
    return rows


def test_paired_comparisons_holm_correct_over_every_scorer_as_one_family():
    scores = _pair_scores({"embedding": [0.1, 0.12, 0.08, 0.11, 0.09],  # 5 features: paired t
                           "simulation": [0.03, -0.02, 0.05, 0.01, -0.01]})
    emb, sim = paired_comparisons(scores, ["a", "b"], ["embedding", "simulation"])
    p_emb = sps.ttest_rel([0.6, 0.62, 0.58, 0.61, 0.59], [0.5] * 5).pvalue
    p_sim = sps.ttest_rel([0.53, 0.48, 0.55, 0.51, 0.49], [0.5] * 5).pvalue
    assert (emb.test, sim.test) == ("paired-t", "paired-t")
    assert emb.p_value == pytest.approx(p_emb) and sim.p_value == pytest.approx(p_sim)
    assert p_emb < p_sim
    assert emb.p_holm == pytest.approx(2 * p_emb)  # m = 2: the smaller doubled, the larger as is
    assert sim.p_holm == pytest.approx(max(2 * p_emb, p_sim))
    assert emb.significant and not sim.significant
    assert emb.mean_diff == pytest.approx(0.1) and emb.a_wins == 5


# -- bootstrap CI --------------------------------------------------------------------------


def test_bootstrap_ci_contains_the_mean_and_the_weighted_mean():
    rng = np.random.default_rng(2)
    for n in (5, 40, 300):
        x = rng.exponential(1.0, n)  # skewed: BCa is not symmetric about the mean
        ci = bootstrap_ci(x.tolist(), seed=f"m{n}")
        assert ci.method == "BCa" and ci.low < x.mean() < ci.high
        w = rng.uniform(0.01, 1.0, n)
        wci = bootstrap_ci(x.tolist(), w.tolist(), seed=f"w{n}")
        assert wci.low < np.average(x, weights=w) < wci.high


def test_weighted_bootstrap_ci_is_about_the_weighted_mean():
    # half the values 0 (weight 1), half 1 (weight 99): weighted mean 0.99, plain mean 0.5
    x = [0.0] * 20 + [1.0] * 20
    w = [1.0] * 20 + [99.0] * 20
    ci = bootstrap_ci(x, w, seed="w")
    assert ci.low < 0.99 < ci.high and ci.low > 0.9


def test_bootstrap_ci_is_deterministic_for_a_seed():
    x = np.random.default_rng(3).normal(0, 1, 50).tolist()
    assert bootstrap_ci(x, seed="s1") == bootstrap_ci(x, seed="s1")
    assert bootstrap_ci(x, seed="s1") != bootstrap_ci(x, seed="s2")
    # the whole seed counts, not its first 8 bytes: every configuration of one scorer
    # ("simulation|a", "simulation|b", ...) gets its own resampling
    assert bootstrap_ci(x, seed="simulation|a") != bootstrap_ci(x, seed="simulation|b")


def test_bootstrap_ci_width_shrinks_like_one_over_root_n():
    rng = np.random.default_rng(4)
    small, large = (bootstrap_ci(rng.normal(0, 1, n).tolist(), seed="n") for n in (25, 2500))
    w_small, w_large = small.high - small.low, large.high - large.low
    assert w_large == pytest.approx(2 * 1.96 / math.sqrt(2500), rel=0.15)  # sigma = 1
    assert 5 < w_small / w_large < 20  # sqrt(2500 / 25) = 10


def test_bootstrap_ci_covers_a_known_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(5)
    trials, n, mu = 400, 50, 1.0
    hits = 0
    for i in range(trials):
        ci = bootstrap_ci(rng.normal(mu, 1.0, n).tolist(), seed=f"c{i}")
        hits += ci.low <= mu <= ci.high
    # binomial sd at 400 trials: ~1.1 points; BCa at n=50 runs a little under nominal (~93 %)
    assert 0.90 <= hits / trials <= 0.985


def test_bootstrap_ci_without_spread_or_data():
    assert bootstrap_ci([1.0]).method == "none" and bootstrap_ci([]).low is None
    const = bootstrap_ci([3.0, 3.0, 3.0])
    assert (const.low, const.high) == (3.0, 3.0)


# -- density-weighted means ----------------------------------------------------------------


def test_density_weighted_mean_and_kish_n_eff_by_hand():
    feats = {0: FeatureRow(0, density=0.01), 1: FeatureRow(1, density=0.03), 2: FeatureRow(2, density=0.06),
             3: FeatureRow(3, density=None)}
    scores = [ScoreRow(f, f, "a", "simulation", v) for f, v in enumerate([0.2, 0.4, 0.9, 0.5])]
    scores.append(ScoreRow(9, 0, "a", "simulation", 0.0, control=True))  # controls are not averaged
    (d,) = distributions(scores, feats)
    assert d.n == 4 and d.mean == pytest.approx(0.5)
    # (0.2*0.01 + 0.4*0.03 + 0.9*0.06) / 0.10 = 0.068 / 0.1; feature 3 has no density
    assert d.weighted_mean == pytest.approx(0.68)
    assert d.n_eff == pytest.approx(0.1 ** 2 / (0.01 ** 2 + 0.03 ** 2 + 0.06 ** 2))  # = 2.1739...
    assert d.weight_coverage == 0.75
    assert d.weighted_ci.low < 0.68 < d.weighted_ci.high


def test_density_weighted_mean_equals_numpy_average():
    rng = np.random.default_rng(6)
    n = 60
    dens = 10 ** rng.uniform(-5, -1, n)
    vals = rng.uniform(0, 1, n)
    feats = {f: FeatureRow(f, density=float(dens[f])) for f in range(n)}
    (d,) = distributions([ScoreRow(f, f, "a", "detection", float(vals[f])) for f in range(n)], feats)
    assert d.weighted_mean == pytest.approx(np.average(vals, weights=dens))
    assert d.n_eff == pytest.approx(dens.sum() ** 2 / (dens ** 2).sum())
    assert 1 <= d.n_eff < n  # log-uniform densities: a few features dominate
    assert d.mean == pytest.approx(vals.mean())


# -- what the rendered report shows --------------------------------------------------------


def _cells(row: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]


def _html_row(html: str, *first_cells: str) -> list[str]:
    for row in re.findall(r"<tr>(.*?)</tr>", html, re.S):
        cells = _cells(row)
        if tuple(cells[:len(first_cells)]) == first_cells:
            return cells
    raise AssertionError(f"no row starting {first_cells}")


def test_report_shows_each_mean_with_its_ci_and_the_holm_adjusted_p(tmp_path):
    """README (Reports): every mean carries a 95 % bootstrap CI, paired tests are Holm-corrected
    across the report, each mean has its density-weighted twin with Kish's n_eff."""
    from labeler.report.render import _ci, _fmt

    data = _data(n=20, gap=0.2)
    paths = render_report(data, tmp_path / "r.html")
    html, md = paths.html.read_text(), paths.md.read_text()
    an = analyse(data)
    for d in an.distributions:
        vals = [s.value for s in data.scores if (s.method, s.configuration) == (d.method, d.label) and not s.control]
        ci = bootstrap_ci(vals, seed=f"{d.method}|{d.label}")
        assert ci.low < float(np.mean(vals)) < ci.high
        cells = _html_row(html, d.label, d.method)
        assert cells[5] == f"{_fmt(float(np.mean(vals)))} {_ci(ci)}"
        assert cells[6] == f"{_fmt(d.weighted_mean)} {_ci(d.weighted_ci)}" and d.weighted_ci.low is not None
        assert cells[7] == _fmt(d.n_eff)
        assert f"| {_fmt(float(np.mean(vals)))} {_ci(ci)} |" in md
    # Exact two-sided Wilcoxon over 20 features: simulation has T = 0 (b wins all 20), so
    # p = 2 * 1/2**20; embedding has T = 1 (one a-win on the smallest difference; rank sets
    # with sum <= 1: {} and {1}), so p = 2 * 2/2**20. Holm over the two: the smaller doubled
    # (4/2**20), the larger at least that (4/2**20): simulation's Holm p is twice its raw p.
    raw = {"simulation": 2 / 2 ** 20, "embedding": 4 / 2 ** 20}
    assert len(an.paired) == 2
    for p in an.paired:
        assert (p.statistic, p.p_value) == (pytest.approx({"simulation": 0, "embedding": 1}[p.method]),
                                            pytest.approx(raw[p.method]))
        cells = _html_row(html, p.method, p.a, p.b)
        assert cells[11] == _fmt(raw[p.method]) and cells[12] == _fmt(4 / 2 ** 20)
        assert f"| {_fmt(raw[p.method])} | {_fmt(4 / 2 ** 20)} * |" in md
    assert _fmt(2 / 2 ** 20) != _fmt(4 / 2 ** 20)  # the raw and the adjusted p look different
