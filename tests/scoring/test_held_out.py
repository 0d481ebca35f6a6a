"""Held-out sets as in the literature: top + truly random windows (zeros included), quantile
strata, hard negatives that never fire, each window once, and what was used recorded."""

from __future__ import annotations

import pytest

from labeler.records import FeatureRecord
from labeler.scoring import get_scorer
from labeler.scoring.base import held_out_mix, negative_examples, random_kind
from labeler.testing import make_feature_record
from labeler.testing.records import RANDOM_WINDOW_BASE


def test_random_windows_include_all_zero_ones_at_the_corpus_rate():
    rate = 0.25
    rec = make_feature_record(1, n_random=400, random_fire_rate=rate)
    windows = rec.select("test", "random")
    firing = sum(e.max_activation > 0 for e in windows) / len(windows)
    assert abs(firing - rate) < 0.06  # binomial sd at n=400: ~0.022
    zeros = [e for e in windows if e.max_activation == 0]
    assert zeros and all(all(a == 0 for a in e.activations) for e in zeros)
    # the same windows (ids and text) for every feature
    other = make_feature_record(7, n_random=400, random_fire_rate=rate)
    assert [e.window for e in other.select("test", "random")] == [e.window for e in windows]
    assert all(e.window >= RANDOM_WINDOW_BASE for e in windows)


def test_hard_negatives_never_fire_and_share_the_activating_token():
    rec = make_feature_record(2)
    hard = rec.select("test", "hard_negative")
    assert hard and all(e.max_activation == 0 for e in hard)
    assert all(" bridge" in e.tokens for e in hard)
    assert not any(" bridge" in e.tokens for e in rec.select("test", "nonactivating"))


def test_held_out_mix_takes_each_window_once_and_records_shortfalls():
    rec = make_feature_record(3)
    # a window stored as both top and sample (a rare feature's reservoirs overlap)
    top = rec.select("test", "top")[0]
    dup = type(top)(**{**top.to_dict(), "kind": "sample"})
    rec.examples.insert(0, dup)
    sets: dict = {}
    out = held_out_mix(rec, "test", [("top", 5), ("sample", 20), ("quantile", 3)], sets)
    assert len({e.window for e in out}) == len(out)
    assert sets["top"] == {"wanted": 5, "got": 5} and sets["sample"]["got"] < 20
    quantiles = [e.quantile for e in out if e.kind == "quantile"]
    assert len(set(quantiles)) == len(quantiles)  # one per stratum in turn, strongest first


def test_random_kind_and_negative_sets():
    rec = make_feature_record(4)
    assert random_kind(rec, "test", "auto") == "random"
    old = FeatureRecord(rec.feature, rec.stats, [e for e in rec.examples if e.kind != "random"])
    assert random_kind(old, "test", "auto") == "sample"  # a store from before the random set
    sets: dict = {}
    few_hard = FeatureRecord(rec.feature, rec.stats,
                             [e for e in rec.examples if e.kind != "hard_negative"] + rec.select("test", "hard_negative")[:3])
    negs = negative_examples(few_hard, "test", "hard", 8, sets)
    assert len(negs) == 8 and sets == {"hard_negative": {"wanted": 8, "got": 3},
                                       "nonactivating": {"wanted": 5, "got": 5}}


async def test_simulation_records_its_sets_and_uses_zero_windows():
    rec = make_feature_record(5, random_fire_rate=0.0)
    res = await get_scorer("simulation", n_quantile=4).score(rec, 'the token "bridge"')
    assert res.details["sets"] == {"top": {"wanted": 5, "got": 5}, "random": {"wanted": 5, "got": 5},
                                   "quantile": {"wanted": 4, "got": 4}}
    kinds = [s["kind"] for s in res.details["sequences"]]
    assert kinds.count("random") == 5 and kinds.count("quantile") == 4
    assert res.metrics["pearson_random"] is None and "real activations are constant" in res.details["undefined"]["pearson_random"]
    assert res.metrics["pearson_top"] is not None and res.metrics["pearson_quantile"] is not None
    old = FeatureRecord(rec.feature, rec.stats, [e for e in rec.examples if e.kind != "random"])
    res = await get_scorer("simulation").score(old, 'the token "bridge"')
    assert res.details["sets"]["sample"] == {"wanted": 5, "got": 5, "as_random": True}
    res = await get_scorer("simulation", random_set="random").score(old, 'the token "bridge"')
    assert res.failed and "no random windows" in res.error


@pytest.mark.parametrize("strategy", ["quantiles", "mixed"])
def test_explainer_sampling_reaches_every_stratum(strategy):
    from labeler.explanation.formatting import pick_train

    rec = make_feature_record(6, n_sample=30, per_quantile=5)
    shown = pick_train(rec, 10, strategy)
    strata = {e.quantile for e in shown if e.kind == "quantile"}
    assert strata == {0, 1, 2, 3}
    assert len({e.window for e in shown}) == len(shown) == 10
    kinds = [e.kind for e in shown]
    if strategy == "mixed":
        assert kinds.count("top") == 4 and kinds.count("sample") == 2
    top_only = pick_train(rec, 10, "top")
    assert all(e.kind == "top" for e in top_only)


def test_hard_negatives_topped_up_never_repeat_a_window():
    """A window stored as both a hard negative and a non-activating one (both never fire) is
    used once: the top-up excludes what the hard negatives already took."""
    rec = make_feature_record(8)
    hard = rec.select("test", "hard_negative")[:3]
    both = type(hard[0])(**{**hard[0].to_dict(), "kind": "nonactivating"})  # first in line for the top-up
    few_hard = FeatureRecord(rec.feature, rec.stats,
                             [both] + [e for e in rec.examples if e.kind != "hard_negative"] + hard)
    sets: dict = {}
    negs = negative_examples(few_hard, "test", "hard", 8, sets)
    windows = [e.window for e in negs]
    assert len(windows) == 8 and len(set(windows)) == 8
    assert windows[:3] == [e.window for e in hard] and windows.count(both.window) == 1
    assert sets == {"hard_negative": {"wanted": 8, "got": 3}, "nonactivating": {"wanted": 5, "got": 5}}
