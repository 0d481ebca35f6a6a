"""End to end through the real openai client and labeler's LLM test server (logprobs on and
off, and prompt logprobs as vLLM serves them)."""

from __future__ import annotations

import json

import pytest

from labeler.core.errors import BudgetExceeded
from labeler.llm import SpendTracker, reset_process_state
from labeler.scoring import get_scorer
from labeler.testing.llm_server import TestLLMServer, prompt_text
from labeler.testing.oracle import install_scoring_rules

EXPLANATION = 'the token "bridge"'

pytestmark = pytest.mark.filterwarnings("ignore:no price known")


def _sims(server):
    return [r for r in server.requests if "You simulate one feature" in prompt_text(r)]


def _assert_held_out(record, server, result):
    test_windows = {e.window for e in record.select("test")}
    assert result.example_windows and set(result.example_windows) <= test_windows
    sent = "\n".join(prompt_text(r) for r in server.requests)
    for e in record.select("train") + record.select("valid"):
        if e.kind != "random":  # random windows are shared by design; their test copies are other windows
            assert "".join(e.tokens).strip() not in sent


async def test_simulation_one_text_per_call_sparse_shuffled(record, server, client_for):
    res = await get_scorer("simulation", client_for(server)).score(record, EXPLANATION)
    assert not res.failed, res.error
    assert (res.prompt_name, res.prompt_version) == ("score_simulation", "v2")
    assert res.details["answer_format"] == "sparse" and res.usage.calls == 10 and res.metrics["n_lost"] == 0
    assert res.value is not None and res.value > 0.9
    sims = _sims(server)
    assert len(sims) == 10
    # static prefix first: system + 2 few-shot pairs, identical in every call; the feature's text last
    assert all(len(r["messages"]) == 6 for r in sims)
    assert len({json.dumps(r["messages"][:5]) for r in sims}) == 1
    last = sims[0]["messages"][-1]["content"]
    assert last.startswith(f"Explanation: {EXPLANATION}\nText 1: ") and "\nTokens:\n1\t" in last
    assert "bridge" not in json.dumps(sims[0]["messages"][:5])  # few-shot examples are not about the trigger
    # seeded shuffled order: not top first, and the same for a control on the same feature
    kinds = {e.window: e.kind for e in record.examples}
    order = [kinds[w] for w in res.details["order"]]
    assert order != sorted(order, key=lambda k: k != "top")
    ctrl = await get_scorer("simulation", client_for(server)).score(record, 'the word "piano"', control=True)
    assert ctrl.details["order"] == res.details["order"]
    first = res.details["sequences"][0]
    ex = next(e for e in record.examples if e.window == first["window"] and e.split == "test")
    hits = [p for p, t in zip(first["predictions"], ex.tokens) if t == " bridge"]
    misses = [p for p, t in zip(first["predictions"], ex.tokens) if t != " bridge"]
    assert all(p == 0.0 for p in misses)  # unnamed tokens are exactly 0
    if server.logprobs_on:
        assert res.details["logprobs"] and res.details["point_values"] == 0
        assert all(p == pytest.approx(9.5) for p in hits)  # EV over exactly "0".."10" at the value
    else:
        assert not res.details["logprobs"] and all(p == 10.0 for p in hits)
    assert res.usage.completion_tokens < 0.3 * res.metrics["n_tokens"] * 3  # test-server tokens
    _assert_held_out(record, server, res)


@pytest.mark.parametrize("options", [{"answer_format": "lines"}, {"answer_format": "json"},
                                     {"answer_format": "sparse", "sequences_per_call": 3},
                                     {"prompt_version": "v1", "sequences_per_call": None}])
async def test_every_format_gives_the_same_score_on_the_oracle(record, server, client_for, options):
    ref = await get_scorer("simulation", client_for(server)).score(record, EXPLANATION)
    res = await get_scorer("simulation", client_for(server), **options).score(record, EXPLANATION)
    assert not res.failed, res.error
    assert res.value == pytest.approx(ref.value, abs=0.02)
    if options.get("prompt_version") == "v1":
        assert res.prompt_version == "v1" and res.usage.calls == 1
        assert res.details["answer_format"] == ("lines" if server.logprobs_on else "json")


async def test_prompt_logprobs_are_probed_and_chosen(record, client_for):
    reset_process_state()
    with TestLLMServer(prompt_logprobs=True) as s:
        install_scoring_rules(s)
        res = await get_scorer("simulation", client_for(s)).score(record, EXPLANATION)
        assert not res.failed, res.error
        assert res.details["answer_format"] == "prompt_logprobs" and res.prompt_name == "score_simulation_echo"
        echoes = [r for r in s.requests if r.get("echo")]
        assert len(echoes) == 11 and all(r["max_tokens"] == 0 for r in echoes)  # 1 probe + 10 texts
        assert res.usage.completion_tokens == 0 and res.value > 0.9
        ev = res.details["sequences"][0]["predictions"]
        assert set(round(p, 3) for p in ev) <= {9.5, 0.053}
    reset_process_state()
    with TestLLMServer() as s:  # OpenAI-like: echo refused, the chat formats are used
        install_scoring_rules(s)
        res = await get_scorer("simulation", client_for(s)).score(record, EXPLANATION)
        assert res.details["answer_format"] == "sparse" and s.stats["http_400"] == 1
        from labeler.core.errors import ConfigError
        with pytest.raises(ConfigError, match="no prompt logprobs"):
            await get_scorer("simulation", client_for(s), answer_format="prompt_logprobs").score(record, EXPLANATION)


async def test_malformed_answer_retry_sends_only_the_error(record, server, client_for):
    llm = client_for(server)
    await llm.supports_logprobs()
    server.script("this is not the format at all")
    res = await get_scorer("simulation", llm, shuffle=False, sequences_per_call=None).score(record, EXPLANATION)
    assert not res.failed, res.error
    assert res.usage.calls == 2 and len(res.details["malformed_attempts"]) == 1
    retry = [r for r in server.requests if "could not be used" in prompt_text(r)]
    assert len(retry) == 1
    assert "this is not the format" not in prompt_text(retry[0])  # not the bad answer again
    assert [m["role"] for m in retry[0]["messages"][-2:]] == ["user", "user"]


async def test_a_bad_text_costs_that_text_not_the_feature(record, server, client_for):
    from labeler.explanation.formatting import display

    llm = client_for(server)
    bad = record.select("test", "top")[0]
    marker = f"Text 1: {display(bad.text).strip()}\n"
    server.add_rule(lambda req: marker in prompt_text(req), lambda req: "garbage")  # every attempt at one text
    res = await get_scorer("simulation", llm, max_parse_retries=2).score(record, EXPLANATION)
    assert not res.failed and res.metrics["n_lost"] == 1 and res.metrics["n_sequences"] == 9
    assert res.details["lost"][0]["window"] == bad.window
    assert "malformed LLM answer after 3 attempt(s)" in res.details["lost"][0]["error"]
    server.add_rule(lambda req: "You simulate" in prompt_text(req), lambda req: "garbage")
    res = await get_scorer("simulation", llm, max_parse_retries=0).score(record, 'the word "zebra"')
    assert res.failed and "no held-out text could be simulated" in res.error


async def test_truncated_answer_is_retried_with_a_larger_token_limit(record, lp_server, client_for):
    llm = client_for(lp_server)
    await llm.supports_logprobs()
    lp_server.script({"truncated": True})
    res = await get_scorer("simulation", llm, sequences_per_call=None).score(record, EXPLANATION)
    assert not res.failed, res.error
    sims = _sims(lp_server)
    assert len(sims) == 2 and sims[1]["max_tokens"] == 2 * sims[0]["max_tokens"]
    assert "cut off" in res.details["malformed_attempts"][0]["error"]


async def test_realistic_slips_parse(record, client_for):
    reset_process_state()
    with TestLLMServer() as s:
        install_scoring_rules(s, perturb={"preamble": 1.0, "no_colon": 1.0, "quotes": 1.0})
        for fmt in ("sparse", "lines"):
            res = await get_scorer("simulation", client_for(s), answer_format=fmt).score(record, EXPLANATION)
            assert not res.failed and res.metrics["n_lost"] == 0, (fmt, res.details["lost"])
            assert res.details["tolerated"]["skipped_lines"] == 10
        assert s.oracle_slips["preamble"] == 20


async def test_http_failure_and_budget(record, server, client_for):
    llm = client_for(server)
    await llm.supports_logprobs()
    server.script({"status": 500}, {"status": 500})
    res = await get_scorer("detection", llm).score(record, EXPLANATION)
    assert res.failed and "LLM call failed" in res.error and res.value is None
    spend = SpendTracker()
    spend.add(5.0)
    with pytest.raises(BudgetExceeded):
        await get_scorer("simulation", client_for(server, budget_usd=1.0, spend=spend),
                         use_logprobs=False).score(record, EXPLANATION)


async def test_detection_five_per_call_cropped_with_few_shot(record, server, client_for):
    res = await get_scorer("detection", client_for(server), context_tokens=8).score(record, EXPLANATION)
    assert not res.failed, res.error
    assert res.metrics["n_examples"] == 20 and res.metrics["n_positive"] == 10 and res.metrics["recall"] == 1.0
    assert res.usage.calls == 4 and res.prompt_version == "v2"
    call = [r for r in server.requests if "is active anywhere in it" in prompt_text(r)][0]
    assert len(call["messages"]) == 6  # system + two few-shot pairs + the texts
    texts = [ln.split(": ", 1)[1] for ln in call["messages"][-1]["content"].splitlines() if ln.startswith("Text ")]
    assert len(texts) == 5 and all(len(t.split()) <= 8 for t in texts) and not texts[0].startswith('"')
    assert res.value == pytest.approx(1.0)
    if server.logprobs_on:
        assert res.metrics["auroc"] is not None
    hard = await get_scorer("detection:hard", client_for(server)).score(record, EXPLANATION)
    assert hard.method == "detection:hard" and hard.details["sets"]["hard_negative"]["got"] == 10
    assert hard.value < res.value  # the hard negatives contain "bridge": too broad an explanation is caught
    _assert_held_out(record, server, res)


async def test_fuzzing_never_shows_one_context_twice(record, server, client_for):
    res = await get_scorer("fuzzing", client_for(server)).score(record, EXPLANATION)
    assert not res.failed, res.error
    assert res.metrics["n_examples"] == 20 and res.metrics["n_positive"] == 10 and res.value == pytest.approx(1.0)
    windows = [d["window"] for d in res.details["examples"]]
    assert len(set(windows)) == len(windows)
    for d in res.details["examples"]:
        ex = next(e for e in record.examples if e.window == d["window"] and e.split == "test")
        assert (d["target"] == 1.0) == (ex.max_activation > 0) and d["highlighted"]
    hard = await get_scorer("fuzzing", client_for(server), negatives="hard").score(record, EXPLANATION)
    assert hard.method == "fuzzing:hard" and hard.value < res.value
    ctrl = await get_scorer("fuzzing", client_for(server)).score(record, 'the word "piano"', control=True)
    assert ctrl.value is not None and ctrl.value <= 0.6


async def test_rubric_and_intruder(record, server, client_for):
    res = await get_scorer("rubric", client_for(server)).score(record, EXPLANATION)
    assert not res.failed and res.value > 0.5 and res.metrics["n_examples"] == 15
    intr = await get_scorer("intruder", client_for(server)).score(record, EXPLANATION)
    assert not intr.failed and intr.metrics["n_rounds"] == 5 and intr.metrics["chance"] == 0.2
    assert intr.value == 1.0 and intr.details["use_explanation"] is False
    assert all(r["intruder"] == r["guess"] for r in intr.details["rounds"])
    hard = await get_scorer("intruder:hard", client_for(server)).score(record, EXPLANATION)
    assert hard.value < intr.value  # marks on "bridge" where it does not fire fool the reader
