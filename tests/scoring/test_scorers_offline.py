"""Scorers that run without an LLM (baseline simulation, embedding), parsing, options, controls."""

from __future__ import annotations

import pytest

from labeler.core.errors import ConfigError
from labeler.records import ActivationExample, FeatureRecord, FeatureStats
from labeler.scoring import SCORERS, get_scorer, pick_control_explanation
from labeler.scoring.base import MalformedAnswer, parse_json_list
from labeler.scoring.simulation import baseline_predictions, baseline_vocabulary

EXPLANATION = 'the token "bridge"'


def _windows(record, split):
    return {e.window for e in record.select(split)}


async def test_baseline_simulation_scores_named_trigger_high_and_uses_test_split_only(record):
    res = await get_scorer("simulation").score(record, EXPLANATION)
    assert not res.failed and res.method == "simulation" and res.llm_model is None
    assert res.value is not None and res.value > 0.8
    assert res.metrics["n_sequences"] == 10 and res.metrics["n_top"] == 5 and res.metrics["n_random"] == 5
    assert res.details["sets"]["random"] == {"wanted": 5, "got": 5}  # truly random windows
    assert set(res.example_windows) <= _windows(record, "test")
    assert not set(res.example_windows) & (_windows(record, "train") | _windows(record, "valid"))
    assert res.details["mode"] == "baseline" and res.usage.calls == 0
    preds = res.details["sequences"][0]["predictions"]
    ex = next(e for e in record.examples if e.window == res.details["sequences"][0]["window"])
    assert [p == 10.0 for p in preds] == [t == " bridge" for t in ex.tokens]


async def test_baseline_control_explanation_scores_lower(record):
    real = await get_scorer("simulation").score(record, EXPLANATION)
    ctrl = await get_scorer("simulation").score(record, 'the word "guitar"', control=True)
    assert ctrl.control and not real.control
    assert ctrl.example_windows == real.example_windows  # same examples: a fair chance line
    assert ctrl.value is None or ctrl.value < 0.3


async def test_baseline_predicting_nothing_is_undefined_not_zero(record):
    res = await get_scorer("simulation").score(record, "zzz qqq")
    assert res.value is None and not res.failed
    assert "predictions are constant" in res.details["undefined"]["pearson"]
    assert res.metrics["r2"] == 0.0


def test_baseline_vocabulary_rules():
    vocab = baseline_vocabulary('fires on "Golden Gate" and the word bridges in texts')
    assert "golden gate" in vocab and "bridges" in vocab and "bridge" in vocab
    assert "the" not in vocab and "word" not in vocab
    assert baseline_predictions("'the'", [[" the", " cat"]]) == [[10.0, 0.0]]  # quoted stopwords count


def test_baseline_negative_activations_scored_raw():
    ex = [ActivationExample(window=i, tokens=[" a", " bridge", " b"], activations=acts, split="test", kind=k)
          for i, (acts, k) in enumerate([([-1.0, 4.0, -0.5], "top"), ([-2.0, 1.0, -2.0], "sample")])]
    rec = FeatureRecord(feature=0, stats=FeatureStats(), examples=ex)
    import asyncio
    res = asyncio.run(get_scorer("simulation").score(rec, EXPLANATION))
    # real [-1,4,-.5,-2,1,-2] vs pred [0,10,0,0,10,0]: positive, computed on raw values
    from scipy.stats import pearsonr
    assert res.value == pytest.approx(pearsonr([-1, 4, -.5, -2, 1, -2], [0, 10, 0, 0, 10, 0]).statistic)


async def test_embedding_scorer_prefers_the_right_explanation(record):
    good = await get_scorer("embedding").score(record, "bridge")
    bad = await get_scorer("embedding").score(record, "piano music", control=True)
    assert not good.failed and good.llm_model is None
    assert good.value is not None and 0.5 < good.value <= 1.0
    assert bad.value is None or bad.value < good.value
    assert set(good.example_windows) <= _windows(record, "test")
    assert good.metrics["n_examples"] == 20
    kinds = [d["kind"] for d in good.details["examples"]]
    assert kinds.count("nonactivating") == 10
    hard = await get_scorer("embedding:hard").score(record, "bridge")
    assert hard.method == "embedding:hard" and hard.details["sets"]["hard_negative"] == {"wanted": 10, "got": 10}


async def test_empty_split_and_empty_explanation_fail_cleanly(record):
    only_train = FeatureRecord(feature=1, stats=FeatureStats(), examples=record.select("train"))
    res = await get_scorer("simulation").score(only_train, EXPLANATION)
    assert res.failed and "no top/random examples in split 'test'" in res.error
    res = await get_scorer("simulation").score(record, "   ")
    assert res.failed and "empty explanation" in res.error


async def test_scoring_on_train_is_refused(record):
    with pytest.raises(ConfigError, match="held-out"):
        await get_scorer("simulation").score(record, EXPLANATION, split="train")


def test_get_scorer_errors():
    assert set(SCORERS) == {"simulation", "detection", "fuzzing", "embedding", "rubric", "intruder",
                            "intruder_embedding", "intervention"}
    with pytest.raises(ConfigError, match="unknown scorer 'simulation:hard'"):
        get_scorer("simulation:hard")
    with pytest.raises(ConfigError, match="negatives must be one of"):
        get_scorer("embedding", negatives="hardest")
    with pytest.raises(ConfigError, match="unknown scorer 'simulate'"):
        get_scorer("simulate")
    with pytest.raises(ConfigError, match="unknown option.*'n_tops'"):
        get_scorer("simulation", n_tops=3)
    with pytest.raises(ConfigError, match="needs an LLM endpoint"):
        get_scorer("detection")
    with pytest.raises(ConfigError, match="sequences_per_call"):
        get_scorer("simulation", sequences_per_call=0)
    with pytest.raises(ConfigError, match="answer_format must be one of"):
        get_scorer("simulation", answer_format="xml")
    with pytest.raises(ConfigError, match="option 'n_top' of scorer 'simulation' must be int, not 'five'"):
        get_scorer("simulation", n_top="five")
    with pytest.raises(ConfigError, match="must be int"):
        get_scorer("embedding", n_nonactivating=True)
    assert get_scorer("simulation", sequences_per_call=None, seed=3).options.seed == 3


def test_pick_control_explanation():
    texts = {0: "zero", 1: "one", 2: "two", 3: ""}
    picks = {f: pick_control_explanation(f, texts, seed=0) for f in range(3)}
    assert all(picks[f] != texts[f] and picks[f] for f in range(3))
    assert picks == {f: pick_control_explanation(f, texts, seed=0) for f in range(3)}  # deterministic
    assert pick_control_explanation(0, {0: "zero"}) is None
    assert pick_control_explanation(0, {0: "zero", 1: " "}) is None


# --- answer parsing -------------------------------------------------------------------------


def test_parse_json_list():
    assert parse_json_list("Answer: [1, 0, 1]", 3, {0, 1}, "answers") == [1, 0, 1]
    with pytest.raises(MalformedAnswer, match="list of 3"):
        parse_json_list("[1, 0]", 3, {0, 1}, "answers")
    with pytest.raises(MalformedAnswer, match="item 2"):
        parse_json_list("[1, 2, 0]", 3, {0, 1}, "answers")
    with pytest.raises(MalformedAnswer, match="no JSON list"):
        parse_json_list("yes", 1, {0, 1}, "answers")


async def test_options_that_change_the_measurement_are_part_of_the_score(record, lp_server, client_for):
    """Another seed or example count is another piece of work (its own score row, see
    tests/db/test_repository.py); a retry policy, or hard negatives (named in the method), are not."""
    assert get_scorer("simulation").key_options == {}
    res = await get_scorer("simulation", seed=1, n_top=3, max_parse_retries=5).score(record, EXPLANATION)
    assert res.options == {"seed": 1, "n_top": 3}
    hard = get_scorer("detection:hard", client_for(lp_server), n_top=4)
    assert hard.method == "detection:hard" and hard.key_options == {"n_top": 4}
