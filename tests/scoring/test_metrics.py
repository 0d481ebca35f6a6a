"""Hand-worked numbers for every scoring metric, plus the undefined (constant/empty) cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from labeler.scoring import metrics as m


# --- Pearson / Spearman ---------------------------------------------------------------------

def test_pearson_hand_worked():
    # x - mean = [-1.5,-.5,.5,1.5], y - mean = [-1.5,.5,-.5,1.5]: sum xy = 4, sxx = syy = 5
    assert m.pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert m.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert m.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_pearson_negative_raw_activations():
    # raw negative activations are used as they are: an affine image still correlates perfectly
    assert m.pearson([-2.0, 0.0, 2.0], [0, 5, 10]) == pytest.approx(1.0)
    assert m.pearson([-1.0, -3.0, -2.0], [10, 0, 5]) == pytest.approx(1.0)
    assert m.pearson([-1.0, -3.0, -2.0], [0, 10, 5]) == pytest.approx(-1.0)


@pytest.mark.parametrize("x,y,reason", [
    ([], [], "at least 2"),
    ([1.0], [2.0], "at least 2"),
    ([3, 3, 3], [1, 2, 3], "x values are constant"),
    ([1, 2, 3], [0, 0, 0], "y values are constant"),
])
def test_pearson_undefined_has_reason_not_zero(x, y, reason):
    stat = m.correlation(x, y)
    assert stat.value is None and not stat.defined
    assert reason in stat.reason
    assert m.pearson(x, y) is None


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="differ in length"):
        m.pearson([1, 2], [1, 2, 3])


def test_spearman_with_ties_hand_worked():
    # ranks x = [1, 2.5, 2.5, 4]: sum dxdy = 4.5, sxx = 4.5, syy = 5
    assert m.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert m.spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)
    assert m.spearman([5, 5, 5], [1, 2, 3]) is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-100, 100), st.floats(-100, 100)), min_size=3, max_size=30))
def test_correlations_agree_with_scipy(pairs):
    x, y = np.array(pairs).T
    r = m.pearson(x, y)
    if r is None:
        assert np.ptp(x) < 1e-9 * max(1, np.abs(x).max()) or np.ptp(y) < 1e-9 * max(1, np.abs(y).max())
    else:
        assert r == pytest.approx(sps.pearsonr(x, y).statistic, abs=1e-6)
        assert m.spearman(x, y) == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-6)


# --- r² ---------------------------------------------------------------------------------------

def test_r_squared_cases():
    assert m.r_squared([1, 2, 3, 4], [1, 3, 2, 4]).value == pytest.approx(0.64)
    # scale mismatch does not matter: r² is of the best affine fit
    assert m.r_squared([0.0, 0.5, 1.0], [0, 5, 10]).value == pytest.approx(1.0)
    # constant predictions: the fit is the mean, explains nothing -> a true 0
    assert m.r_squared([1, 2, 3], [4, 4, 4]).value == 0.0
    st_ = m.r_squared([2, 2, 2], [1, 2, 3])
    assert st_.value is None and "real activations are constant" in st_.reason
    assert m.r_squared([], []).value is None


# --- score_simulation -------------------------------------------------------------------------

def test_score_simulation_hand_worked():
    real = [[0.0, 4.0], [0.0, 0.0, 2.0]]
    pred = [[0, 10], [1, 0, 5]]
    out = m.score_simulation(real, pred, ["top", "random"])
    # flattened: real [0,4,0,0,2] (mean 1.2), pred [0,10,1,0,5] (mean 3.2)
    # sum dxdy = 30.8, sxx = 12.8, syy = 74.8
    assert out["pearson"] == pytest.approx(30.8 / math.sqrt(12.8 * 74.8))
    assert out["r2"] == pytest.approx(30.8 ** 2 / (12.8 * 74.8))
    assert out["pearson_top"] == pytest.approx(1.0)  # two points
    # random only: real [0,0,2], pred [1,0,5]: sum dxdy = 6, sxx = 24/9, syy = 14
    assert out["pearson_random"] == pytest.approx(6 / math.sqrt(24 / 9 * 14))
    assert out["n_sequences"] == 2 and out["n_tokens"] == 5 and out["n_top"] == 1 and out["n_random"] == 1
    assert out["undefined"] == {}


def test_score_simulation_constant_predictions_and_missing_kind():
    out = m.score_simulation([[0.0, 3.0, -1.0]], [[5, 5, 5]], ["top"])
    assert out["pearson"] is None and "predictions are constant" in out["undefined"]["pearson"]
    assert out["r2"] == 0.0
    assert out["pearson_random"] is None and out["undefined"]["pearson_random"] == "no random sequences"


def test_score_simulation_constant_real_and_empty():
    out = m.score_simulation([[0.0, 0.0], [0.0]], [[1, 2], [3]], ["random", "random"])
    assert out["pearson"] is None and "real activations are constant" in out["undefined"]["pearson"]
    assert out["r2"] is None
    empty = m.score_simulation([], [], [])
    assert empty["pearson"] is None and empty["n_tokens"] == 0
    assert set(empty["undefined"]) >= {"pearson", "r2", "pearson_top", "pearson_random"}


def test_score_simulation_negative_activations():
    real = [[-1.0, -0.2, 3.0], [-0.5, 0.0, 0.0]]
    pred = [[0, 2, 10], [1, 2, 2]]
    out = m.score_simulation(real, pred, ["top", "random"])
    assert out["pearson"] == pytest.approx(sps.pearsonr(sum(real, []), sum(pred, [])).statistic)
    assert out["pearson"] > 0.9


def test_score_simulation_shape_errors():
    with pytest.raises(ValueError, match="sequence 0"):
        m.score_simulation([[1.0, 2.0]], [[1]], ["top"])
    with pytest.raises(ValueError, match="kinds"):
        m.score_simulation([[1.0]], [[1]], ["top", "random"])


# --- expected value -------------------------------------------------------------------------

def _reference_ev(top_logprobs: dict[str, float]) -> float:
    """OpenAI automated-interpretability's expected value, written out from its simulator:
    keep the entries whose token is exactly one of "0".."10", exponentiate, normalise among
    them, take sum(value * p); nothing kept gives 0.0."""
    valid = {str(i): i for i in range(11)}
    probs = {valid[t]: math.exp(lp) for t, lp in top_logprobs.items() if t in valid}
    total = sum(probs.values())
    return sum(v * p / total for v, p in probs.items()) if probs else 0.0


REFERENCE_CASES = [
    {"0": math.log(0.5), "5": math.log(0.25), "10": math.log(0.25), "x": math.log(0.9)},
    {"2": math.log(0.1), "4": math.log(0.1), "foo": math.log(0.8)},
    {" 2": math.log(0.6), "2": math.log(0.1), "3": math.log(0.1)},  # " 2" is not "2" for the reference
    {"\t7": -0.1, "7\n": -0.5, "unknown": -0.2},  # nothing exact: 0.0
    {"11": 0.0, "a": 0.0, "-1": -1.0}, {}, {"10": -0.01}, {"1": math.log(0.3), "10": math.log(0.3)},
]


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_expected_value_equals_openai_reference(case):
    assert m.expected_value(case) == pytest.approx(_reference_ev(case), abs=1e-12)


def test_expected_value_hand_worked_and_tolerant_step_is_separate():
    assert m.expected_value(REFERENCE_CASES[0]) == pytest.approx(0 * 0.5 + 5 * 0.25 + 10 * 0.25)
    assert m.expected_value({" 7": -0.01}) == 0.0  # exact tokens only
    tolerant, changed = m.tolerant_top_logprobs({" 7": math.log(0.3), "7": math.log(0.1), "x": math.log(0.6)})
    assert changed == 1 and math.exp(tolerant["7"]) == pytest.approx(0.4)  # variants summed, not max
    assert m.expected_value(tolerant) == pytest.approx(7.0)
    probs, mass = m.scale_distribution({"0": math.log(0.02), "x": math.log(0.98)})
    assert probs == {"0": pytest.approx(1.0)} and mass == pytest.approx(0.02)


def test_flattened_correlation_equals_numpy_over_concatenation():
    real = [[0.0, 3.0, 0.5], [0.0, 0.0, 0.0, 1.0], [2.0]]
    pred = [[0.0, 9.0, 1.0], [0.5, 0.0, 0.0, 3.0], [4.0]]
    out = m.score_simulation(real, pred, ["top", "random", "quantile"])
    flat_r, flat_p = sum(real, []), sum(pred, [])
    assert out["pearson"] == pytest.approx(np.corrcoef(flat_r, flat_p)[0, 1])
    assert out["pearson_random"] == pytest.approx(np.corrcoef(real[1], pred[1])[0, 1])
    assert out["n_quantile"] == 1 and out["pearson_quantile"] is None  # one token: undefined, with a reason
    assert "at least 2" in out["undefined"]["pearson_quantile"]


# --- classification -------------------------------------------------------------------------

def test_balanced_accuracy_hand_worked():
    # recall on positives 2/3, on negatives 1/1
    assert m.balanced_accuracy([1, 1, 1, 0], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    assert m.balanced_accuracy([1, 1], [1, 0]) is None  # no negatives: undefined
    assert m.balanced_accuracy([], []) is None


def test_precision_recall_f1_hand_worked():
    assert m.precision_recall_f1([1, 1, 0, 0], [1, 0, 1, 0]) == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    out = m.precision_recall_f1([1, 1, 0, 0], [1, 1, 1, 0])  # tp 2, fp 1, fn 0
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == 1.0 and out["f1"] == pytest.approx(0.8)
    assert m.precision_recall_f1([1, 0], [0, 0]) == {"precision": None, "recall": 0.0, "f1": 0.0}
    assert m.precision_recall_f1([0, 0], [0, 0]) == {"precision": None, "recall": None, "f1": None}
    with pytest.raises(ValueError, match="0/1"):
        m.f1([2, 0], [1, 0])


def test_auroc_hand_worked_with_ties():
    # pairs (pos, neg): (.9,.4) win, (.9,.1) win, (.4,.4) tie = 1/2, (.4,.1) win -> 3.5/4
    assert m.auroc([1, 1, 0, 0], [0.9, 0.4, 0.4, 0.1]) == pytest.approx(0.875)
    assert m.auroc([1, 0], [1, 0]) == 1.0
    assert m.auroc([1, 0], [0, 1]) == 0.0
    assert m.auroc([1, 1, 0], [3, 3, 3]) == 0.5
    st_ = m.auroc_stat([1, 1], [0.1, 0.2])
    assert st_.value is None and "both classes" in st_.reason
    assert m.auroc([], []) is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 4)), min_size=2, max_size=25))
def test_auroc_equals_pair_counting(rows):
    labels, scores = zip(*rows)
    pos = [s for l, s in rows if l]
    neg = [s for l, s in rows if not l]
    got = m.auroc(labels, scores)
    if not pos or not neg:
        assert got is None
        return
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    assert got == pytest.approx(wins / (len(pos) * len(neg)))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=3, max_size=20), st.floats(0.01, 100), st.floats(-100, 100))
def test_simulation_score_invariant_to_affine_rescaling_of_raw_activations(acts, scale, shift):
    pred = [float(i % 4) for i in range(len(acts))]
    a = m.score_simulation([acts], [pred], ["top"])["pearson"]
    b = m.score_simulation([[scale * x + shift for x in acts]], [pred], ["top"])["pearson"]
    if a is None or b is None:
        return  # constant input (possibly after float rounding): undefined both ways
    assert a == pytest.approx(b, abs=1e-6)
