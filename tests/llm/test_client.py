"""LLMClient through the real openai client against our test server."""

from __future__ import annotations

import asyncio

import email.utils
import json
import socket
import time

import openai
import pytest

from labeler.core.errors import BudgetExceeded, LLMError
from labeler.llm import LLMClient, SpendTracker, get_llm
from labeler.llm.client import _parse_retry_after
from labeler.llm.pricing import cost_usd, load_prices, lookup

pytestmark = pytest.mark.timeout(60)
MSG = [{"role": "user", "content": "Excerpt 1: the <<bridge>>(9) over the river"}]


async def test_chat_returns_text_usage_and_cost(server, make_llm):
    llm = make_llm(cache=False)
    resp = await llm.chat(MSG, max_tokens=20)
    assert resp.text == 'the token "bridge"'
    assert resp.finish_reason == "stop" and not resp.cached
    assert resp.usage.prompt_tokens > 5 and resp.usage.completion_tokens == 5
    expected = (resp.usage.prompt_tokens * 0.15 + resp.usage.completion_tokens * 0.60) / 1e6
    assert resp.usage.cost_usd == pytest.approx(expected)
    assert llm.usage.calls == 1 and llm.usage.cost_usd == pytest.approx(expected)
    assert server.requests[-1]["model"] == "gpt-4o-mini" and server.requests[-1]["max_tokens"] == 20


@pytest.mark.parametrize("failure,counter", [
    ({"status": 429, "retry_after": 0.05}, "http_429"),
    ({"status": 429, "retry_after": 3600}, "http_429"),  # capped by retry_after_cap_s, or the test times out
    ({"status": 503}, "http_503"),
    ({"status": 500}, "http_500"),
    ({"hang": True}, "hang"),
    ({"broken_json": True}, "broken_json"),
])
async def test_transient_failures_are_retried(server, make_llm, failure, counter):
    llm = make_llm(cache=False, timeout_s=0.5)
    server.configure(hang_s=10)
    server.script(failure, failure, "recovered")
    resp = await llm.chat(MSG, max_tokens=20)
    assert resp.text == "recovered"
    assert server.stats[counter] == 2 and server.stats["chat"] == 3


async def test_retry_after_http_date_is_honoured_and_capped():
    in_30s = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < _parse_retry_after({"retry-after": in_30s}) <= 31
    assert _parse_retry_after({"retry-after": "7"}) == 7.0
    assert _parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert _parse_retry_after({"retry-after": "soon"}) is None


async def test_retries_exhausted_raise_llm_error_with_kind(server, make_llm):
    llm = make_llm(cache=False, max_retries=2)
    server.configure(fail_500=1.0)
    with pytest.raises(LLMError) as ei:
        await llm.chat(MSG, max_tokens=20)
    assert ei.value.kind == "http_500"
    assert server.stats["http_500"] == 3  # first try + 2 retries


async def test_connection_refused_is_retried_then_reported(make_llm):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = make_llm(cache=False, base_url=f"http://127.0.0.1:{port}/v1", max_retries=2)
    with pytest.raises(LLMError) as ei:
        await llm.chat(MSG, max_tokens=5)
    assert ei.value.kind == "connection" and "after 3 attempts" in str(ei.value)


@pytest.mark.parametrize("setup,kind", [({"api_key": "the-right-key"}, "http_401"),
                                        ({"models": ["some-other-model"]}, "http_404")])
async def test_hopeless_4xx_is_not_retried(server, make_llm, setup, kind):
    server.configure(**setup)
    llm = make_llm(cache=False)
    with pytest.raises(LLMError) as ei:
        await llm.chat(MSG, max_tokens=5)
    assert ei.value.kind == kind and "not retried" in str(ei.value)
    assert server.stats["chat"] == 1


async def test_cache_hit_costs_nothing_and_survives_a_new_client(server, make_llm, tmp_path):
    first = await make_llm().chat(MSG, max_tokens=20)
    assert not first.cached and first.usage.cost_usd > 0
    again = make_llm()  # a new client (as in a re-run): same cache file
    hit = await again.chat(MSG, max_tokens=20)
    assert hit.cached and hit.text == first.text
    assert hit.usage.cost_usd == 0 and hit.usage.cached_calls == 1
    assert hit.usage.prompt_tokens == first.usage.prompt_tokens  # usage still reported
    assert again.usage.cost_usd == 0 and again.spend.spent_usd == 0
    assert server.stats["chat"] == 1
    # anything that shapes the answer is part of the key
    await again.chat(MSG, max_tokens=21)
    await again.chat(MSG, max_tokens=20, cache_salt="candidate1")
    await again.chat(MSG, max_tokens=20, temperature=0.5)
    assert server.stats["chat"] == 4
    # off means off
    off = make_llm(cache=False)
    await off.chat(MSG, max_tokens=20)
    assert server.stats["chat"] == 5


async def test_settings_turn_cache_off(server, monkeypatch):
    from labeler.core.config import Settings

    s = Settings(llm_base_url=server.base_url, llm_api_key="k", llm_cache=False)
    llm = get_llm("explainer", s)
    await llm.chat(MSG, max_tokens=20)
    await llm.chat(MSG, max_tokens=20)
    assert server.stats["chat"] == 2 and llm.cache_store is None


async def test_budget_cap_refuses_a_call_that_may_not_fit(server, make_llm, tmp_path):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"pricey-model": {"input": 1_000_000.0, "output": 1_000_000.0}}))  # $1 a token
    spend = SpendTracker()
    llm = make_llm(model="pricey-model", prices_file=prices, budget_usd=100.0, spend=spend, cache=False)
    answered = 0
    with pytest.raises(BudgetExceeded, match="budget"):
        for _ in range(50):
            await llm.chat(MSG, max_tokens=20)  # at most ~20 prompt + 20 completion tokens: $40
            answered += 1
    assert 1 <= answered < 50 and spend.spent_usd <= 100.0 and spend.reserved_usd == 0.0
    assert server.stats["chat"] == answered  # the refused call never reached the endpoint
    # shared by every client of the process (same tracker)
    with pytest.raises(BudgetExceeded):
        await make_llm(model="pricey-model", prices_file=prices, budget_usd=100.0, spend=spend, cache=False).chat(
            MSG, max_tokens=20)
    assert server.stats["chat"] == answered


async def test_concurrent_calls_never_overshoot_the_cap_together(server, make_llm, tmp_path):
    """Each call holds its worst case while in flight: 30 calls at once against room for a few."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"pricey-model": {"input": 1_000_000.0, "output": 1_000_000.0}}))
    server.configure(latency_s=0.2)
    spend = SpendTracker()
    llm = make_llm(model="pricey-model", prices_file=prices, budget_usd=200.0, spend=spend, cache=False)
    results = await asyncio.gather(*(llm.chat([{"role": "user", "content": f"q{i}"}], max_tokens=20)
                                     for i in range(30)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    answered = [r for r in results if not isinstance(r, BaseException)]
    assert refused and answered and len(refused) + len(answered) == 30
    assert spend.spent_usd <= 200.0 and spend.reserved_usd == 0.0
    assert server.stats["chat"] == len(answered)


def test_price_table_lookup_and_unknown_model_warns_once(tmp_path):
    prices = load_prices(None)
    assert lookup("gpt-4o-mini-2024-07-18", prices) == lookup("gpt-4o-mini", prices)
    assert lookup("openai/gpt-4o", prices) == lookup("gpt-4o", prices)
    with pytest.warns(UserWarning, match="no price known"):
        assert cost_usd("mystery-model-x", 1000, 1000, prices) == 0.0
    extra = tmp_path / "p.yaml"
    extra.write_text("mystery-model-x: {input: 2.0, output: 4.0}\n")
    assert cost_usd("mystery-model-x", 1_000_000, 1_000_000, load_prices(str(extra))) == pytest.approx(6.0)
    bad = tmp_path / "bad.json"
    bad.write_text('{"m": {"input": "cheap"}}')
    from labeler.core.errors import ConfigError

    with pytest.raises(ConfigError, match="'m'"):
        load_prices(str(bad))


@pytest.mark.parametrize("mode,expected", [("on", True), ("ignore", False), ("error", False)])
async def test_logprob_support_is_probed_once(server, make_llm, mode, expected):
    server.configure(logprobs_mode=mode)
    llm = make_llm()
    assert await llm.supports_logprobs() is expected
    assert await make_llm().supports_logprobs() is expected
    assert server.stats["chat"] == 1


async def test_logprobs_are_parsed(server, make_llm):
    resp = await make_llm().chat(MSG, max_tokens=20, logprobs=True, top_logprobs=3)
    assert resp.logprobs and "".join(t.token for t in resp.logprobs) == resp.text
    assert all(len(t.top) == 3 and t.top[t.token] == t.logprob for t in resp.logprobs)


async def test_concurrency_cap_limits_requests_in_flight(server, make_llm):
    import asyncio

    server.configure(latency_s=0.1)
    llm = make_llm(cache=False, concurrency=3)
    await asyncio.gather(*(llm.chat([{"role": "user", "content": f"q{i}"}], max_tokens=5) for i in range(12)))
    assert server.stats["chat"] == 12
    assert server.stats["max_in_flight"] == 3


async def test_completions_and_models_endpoints(server):
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    comp = await client.completions.create(model="m", prompt="the <<cat>>(5) sat", max_tokens=10, logprobs=2)
    assert comp.choices[0].text == 'the token "cat"'
    assert comp.usage.completion_tokens == 5 and len(comp.choices[0].logprobs.top_logprobs[0]) == 2
    models = await client.models.list()
    assert [m.id for m in models.data] == ["test-model"]
    await client.close()


async def test_rules_and_truncation(server, make_llm):
    from labeler.testing.llm_server import Reply, add_rule, remove_rule

    responder = lambda req: Reply("4 4 4", logprobs=[("4", -0.1, {"4": -0.1, "5": -2.5})] * 1)  # noqa: E731
    add_rule(lambda req: "simulate" in json.dumps(req), responder)
    try:
        resp = await make_llm(cache=False).chat([{"role": "user", "content": "simulate this"}], logprobs=True,
                                                top_logprobs=2)
        assert resp.text == "4 4 4" and resp.logprobs[0].top == {"4": -0.1, "5": -2.5}
    finally:
        remove_rule(responder)
    server.add_rule(lambda req: True, lambda req: "one two three four five six")
    cut = await make_llm(cache=False).chat(MSG, max_tokens=3)
    assert cut.text == "one two three" and cut.truncated


def test_get_llm_is_none_offline_and_per_role(monkeypatch):
    from labeler.core.config import reset_settings

    assert get_llm("explainer") is None
    monkeypatch.setenv("LABELER_SIMULATOR_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("LABELER_SIMULATOR_MODEL", "sim-model")
    reset_settings()
    assert get_llm("explainer") is None
    sim = get_llm("simulator")
    assert isinstance(sim, LLMClient) and sim.base_url == "http://127.0.0.1:9/v1" and sim.model == "sim-model"
    assert get_llm("simulator", model="other").model == "other"


async def test_an_answer_the_caller_rejects_is_never_cached(server, make_llm):
    from labeler.llm.types import RejectedAnswer

    msgs = [{"role": "user", "content": "Say something."}]

    def reject(resp):
        raise ValueError("not what I asked for")

    server.script("garbage")
    with pytest.raises(RejectedAnswer) as info:
        await make_llm().chat(msgs, validate=reject)
    assert info.value.response.text == "garbage" and "not what I asked" in str(info.value.error)
    server.script("a good answer")
    resp = await make_llm().chat(msgs, validate=lambda r: None)  # a new client, the same cache file
    assert not resp.cached and resp.text == "a good answer" and server.stats["chat"] == 2
    assert (await make_llm().chat(msgs)).cached  # a usable answer is kept


async def test_a_cached_answer_that_fails_validation_is_asked_again(server, make_llm):
    msgs = [{"role": "user", "content": "Say something."}]
    server.script("old bad answer")
    await make_llm().chat(msgs)  # cached without a check (as answers were before validation)
    server.script("fresh answer")

    def must_be_fresh(resp):
        if resp.text != "fresh answer":
            raise ValueError("stale")

    resp = await make_llm().chat(msgs, validate=must_be_fresh)
    assert resp.text == "fresh answer" and not resp.cached and server.stats["chat"] == 2
