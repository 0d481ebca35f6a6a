"""End to end through the real openai client and labeler's LLM test server (logprobs on and off)."""

from __future__ import annotations

import json

import pytest

from labeler.core.errors import BudgetExceeded
from labeler.llm import SpendTracker
from labeler.testing.llm_server import prompt_text
from labeler.scoring import get_scorer

EXPLANATION = 'the token "bridge"'

pytestmark = pytest.mark.filterwarnings("ignore:no price known")


def _assert_held_out(record, server, result):
    test_windows = {e.window for e in record.select("test")}
    assert result.example_windows and set(result.example_windows) <= test_windows
    sent = "\n".join(prompt_text(r) for r in server.requests)
    for e in record.select("train") + record.select("valid"):
        assert json.dumps(e.tokens, ensure_ascii=False) not in sent
        assert json.dumps("".join(e.tokens), ensure_ascii=False) not in sent


async def test_simulation_end_to_end(record, server, client_for):
    llm = client_for(server)
    res = await get_scorer("simulation", llm).score(record, EXPLANATION)
    assert not res.failed, res.error
    assert res.llm_model == "test-model"
    assert (res.prompt_name, res.prompt_version) == ("score_simulation", "v1")
    assert res.value is not None and res.value > 0.85
    # all 10 sequences packed into one call
    assert res.usage.calls == 1 and res.usage.prompt_tokens > 0 and res.usage.completion_tokens > 0
    sims = [r for r in server.requests if "You simulate one feature" in prompt_text(r)]
    assert len(sims) == 1
    first = res.details["sequences"][0]
    ex = next(e for e in record.examples if e.window == first["window"])
    hits = [p for p, t in zip(first["predictions"], ex.tokens) if t == " bridge"]
    misses = [p for p, t in zip(first["predictions"], ex.tokens) if t != " bridge"]
    if server.logprobs_on:
        assert res.details["mode"] == "logprobs" and res.details["point_values"] == 0
        # EV renormalised over "0".."10" only: (10*.6 + 8*.2) / .8 = 9.5 ; .05/.95 for misses
        assert hits and all(p == pytest.approx(9.5) for p in hits)
        assert all(p == pytest.approx(0.053, abs=1e-3) for p in misses)
        assert sims[0].get("logprobs") is True
    else:
        assert res.details["mode"] == "json"
        assert all(p == 10.0 for p in hits) and all(p == 0.0 for p in misses)
        assert sims[0].get("response_format") == {"type": "json_object"}
    _assert_held_out(record, server, res)


async def test_simulation_control_scores_lower_on_same_examples(record, lp_server, client_for):
    llm = client_for(lp_server)
    scorer = get_scorer("simulation", llm)
    real = await scorer.score(record, EXPLANATION)
    ctrl = await scorer.score(record, 'the word "piano"', control=True)
    assert ctrl.control and ctrl.example_windows == real.example_windows
    assert ctrl.value is None or ctrl.value < real.value - 0.5


async def test_simulation_call_cap(record, lp_server, client_for):
    res = await get_scorer("simulation", client_for(lp_server), max_sequences_per_call=3).score(record, EXPLANATION)
    assert not res.failed and res.usage.calls == 4 and res.details["calls_planned"] == 4
    assert res.metrics["n_sequences"] == 10 and res.value > 0.85


async def test_malformed_answer_is_retried_then_accepted(record, server, client_for):
    llm = client_for(server)
    await llm.supports_logprobs()  # probe first, so the scripted answer hits the scoring call
    server.script("this is not the format at all")
    res = await get_scorer("simulation", llm).score(record, EXPLANATION)
    assert not res.failed, res.error
    assert res.usage.calls == 2
    assert len(res.details["malformed_attempts"]) == 1
    # the retry shows the model its bad answer and what was wrong
    retry = [r for r in server.requests if "That answer is malformed" in prompt_text(r)]
    assert len(retry) == 1


async def test_always_malformed_becomes_a_failure(record, server, client_for):
    llm = client_for(server)
    await llm.supports_logprobs()
    server.script(*["garbage"] * 3)
    res = await get_scorer("simulation", llm, max_parse_retries=2).score(record, EXPLANATION)
    assert res.failed and res.value is None
    assert "malformed LLM answer after 3 attempt(s)" in res.error
    assert len(res.details["malformed_attempts"]) == 3 and res.usage.calls == 3


async def test_http_failure_becomes_a_failure_not_an_exception(record, server, client_for):
    llm = client_for(server)
    await llm.supports_logprobs()  # probe first, so the scripted errors hit the scoring calls
    server.script({"status": 500}, {"status": 500})
    for name in ("simulation", "detection"):
        res = await get_scorer(name, llm).score(record, EXPLANATION)
        assert res.failed and "LLM call failed" in res.error and res.value is None


async def test_budget_exceeded_propagates(record, lp_server, client_for):
    spend = SpendTracker()
    spend.add(5.0)
    llm = client_for(lp_server, budget_usd=1.0, spend=spend)
    with pytest.raises(BudgetExceeded):
        await get_scorer("simulation", llm, use_logprobs=False).score(record, EXPLANATION)


async def test_detection_end_to_end(record, server, client_for):
    res = await get_scorer("detection", client_for(server)).score(record, EXPLANATION)
    assert not res.failed, res.error
    assert res.metrics["n_examples"] == 20 and res.metrics["n_positive"] == 10
    # activating contexts all contain the trigger; the oracle says 1 for those, so recall is 1
    assert res.metrics["recall"] == 1.0
    assert res.value == pytest.approx(res.metrics["balanced_accuracy"]) and res.value > 0.6
    assert res.usage.calls == 2  # batches of 10
    answers = [d["answer"] for d in res.details["examples"]]
    assert len(answers) == 20 and set(answers) <= {0, 1}
    # shuffled: activating and non-activating are interleaved, not in blocks
    targets = [d["target"] for d in res.details["examples"]]
    assert targets != sorted(targets) and targets != sorted(targets, reverse=True)
    if server.logprobs_on:
        assert res.details["mode"] == "logprobs" and res.metrics["auroc"] is not None
        assert {d["p"] for d in res.details["examples"]} <= {0.8, 0.3}
    else:
        assert res.metrics["auroc"] is None and "needs logprobs" in res.details["undefined"]["auroc"]
    _assert_held_out(record, server, res)


async def test_fuzzing_end_to_end(record, server, client_for):
    res = await get_scorer("fuzzing", client_for(server)).score(record, EXPLANATION)
    assert not res.failed, res.error
    assert res.metrics["n_examples"] == 20 and res.metrics["n_positive"] == 10
    assert res.value == pytest.approx(1.0)
    if server.logprobs_on:
        assert res.metrics["auroc"] == pytest.approx(1.0)
    ctrl = await get_scorer("fuzzing", client_for(server)).score(record, 'the word "piano"', control=True)
    assert ctrl.value is not None and ctrl.value <= 0.6
    _assert_held_out(record, server, res)


async def test_rubric_end_to_end(record, server, client_for):
    res = await get_scorer("rubric", client_for(server)).score(record, EXPLANATION)
    assert not res.failed, res.error
    assert res.metrics["n_examples"] == 15
    assert res.value is not None and res.value > 0.5
    assert res.metrics["pearson"] is not None
    ratings = {d["answer"] for d in res.details["examples"]}
    assert ratings <= {0, 1, 2, 3}
    _assert_held_out(record, server, res)


async def test_use_logprobs_true_without_support_is_a_config_error(record, client_for):
    from labeler.core.errors import ConfigError
    from labeler.llm import reset_process_state
    from labeler.testing.llm_server import TestLLMServer

    reset_process_state()
    with TestLLMServer(logprobs_mode="ignore") as s:
        with pytest.raises(ConfigError, match="returns no logprobs"):
            await get_scorer("simulation", client_for(s), use_logprobs=True).score(record, EXPLANATION)


async def test_truncated_answer_is_retried_with_a_larger_token_limit(record, lp_server, client_for):
    llm = client_for(lp_server)
    await llm.supports_logprobs()
    lp_server.script({"truncated": True})
    res = await get_scorer("simulation", llm).score(record, EXPLANATION)
    assert not res.failed, res.error
    sims = [r for r in lp_server.requests if "You simulate one feature" in prompt_text(r)]
    assert len(sims) == 2 and sims[1]["max_tokens"] == 2 * sims[0]["max_tokens"]
    assert "cut off" in res.details["malformed_attempts"][0]["error"]


async def test_endpoint_rejecting_response_format_is_asked_without_it(record, client_for):
    from labeler.llm import reset_process_state
    from labeler.testing.llm_server import TestLLMServer
    from labeler.testing.oracle import install_scoring_rules

    reset_process_state()
    with TestLLMServer(logprobs_mode="ignore") as s:
        install_scoring_rules(s)
        llm = client_for(s)
        await llm.supports_logprobs()
        s.script({"status": 400})
        res = await get_scorer("simulation", llm).score(record, EXPLANATION)
        assert not res.failed, res.error
        assert res.details["mode"] == "json"
        sims = [r for r in s.requests if "You simulate one feature" in prompt_text(r)]
        assert [("response_format" in r) for r in sims] == [True, False]
