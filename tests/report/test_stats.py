"""Pure report statistics on hand-built rows (no database)."""

from __future__ import annotations

import math
import random

import pytest

from labeler.db.views import ExplanationRow, FeatureRow, ScoreRow
from labeler.report.data import ReportData
from labeler.report.stats import analyse, best_and_worst, paired_test, scorer_agreement


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
