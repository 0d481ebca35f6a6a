"""Prices of cached prompt tokens and the Batch API; reasoning models' request shapes."""

from __future__ import annotations

import pytest

from labeler.llm.params import is_reasoning_model, learn, Quirks
from labeler.llm.pricing import cost_usd, load_prices, lookup

pytestmark = pytest.mark.timeout(60)
MSG = [{"role": "user", "content": "Excerpt 1: the <<bridge>>(9) over the river"}]
REASONING = ["o1", "o1-mini", "o3", "o3-mini", "o4-mini", "gpt-5", "gpt-5-mini", "gpt-5-nano"]


def test_cached_and_batch_prices_follow_the_table_and_its_defaults(tmp_path):
    prices = load_prices(None)
    p = lookup("gpt-4.1-mini", prices)
    assert (p.input, p.cached_input, p.output) == (0.40, 0.10, 1.60)
    assert (p.batch_input, p.batch_output, p.batch_cached_input) == (0.20, 0.80, 0.05)
    # 1M prompt tokens of which 600k cached + 1M completion
    sync = cost_usd("gpt-4.1-mini", 1_000_000, 1_000_000, prices, cached_tokens=600_000)
    assert sync == pytest.approx(0.4 * 0.4 + 0.6 * 0.10 + 1.60)
    batch = cost_usd("gpt-4.1-mini", 1_000_000, 1_000_000, prices, cached_tokens=600_000, batch=True)
    assert batch == pytest.approx(sync / 2)
    assert lookup("gpt-4-turbo", prices).cached_input == 10.0  # no discount listed: billed as input
    extra = tmp_path / "p.yaml"
    extra.write_text("house-model: {input: 1.0, output: 2.0, batch_input: 0.9}\n")
    h = lookup("house-model", load_prices(str(extra)))
    assert (h.batch_input, h.batch_output, h.cached_input) == (0.9, 1.0, 1.0)


def test_reasoning_families_and_learning_from_the_400():
    assert all(is_reasoning_model(m) for m in REASONING + ["openai/o3-mini-2025-01-31", "gpt-5.1"])
    assert not any(is_reasoning_model(m) for m in ["gpt-4o-mini", "gpt-4.1", "gpt-5-chat-latest", "ollama/llama3"])
    q = learn(Quirks(), "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                        "'max_completion_tokens' instead.", "max_tokens")
    assert q == Quirks(completion_tokens_param=True)
    q = learn(q, "Unsupported value: 'temperature' does not support 0 with this model. Only the default (1) "
                 "value is supported.", "temperature")
    assert q.no_temperature
    assert learn(Quirks(), "Unsupported parameter: 'temperature' is not supported with this model.", None).no_temperature
    assert learn(q, "Invalid 'messages': empty array.", "messages") is None  # not about a parameter: no rewrite


async def test_every_model_of_the_price_table_works(server, make_llm):
    """The test server refuses max_tokens and temperature for the reasoning models as OpenAI does."""
    server.configure(reasoning_models=REASONING)
    for model in load_prices(None):
        llm = make_llm(model=model, cache=False)
        resp = await llm.chat(MSG, max_tokens=20)
        assert resp.text == 'the token "bridge"' and resp.usage.cost_usd > 0, model
        sent = server.requests[-1]
        if model in REASONING:
            assert "max_tokens" not in sent and "temperature" not in sent
            assert sent["max_completion_tokens"] == 20 + llm.reasoning_headroom_tokens
            assert sent["reasoning_effort"] == "low"
        else:
            assert sent["max_tokens"] == 20 and sent["temperature"] == 0.0
    assert server.stats["http_400"] == 0  # known by family: no call paid a refusal


async def test_an_unknown_reasoning_model_is_learned_from_its_400_once(server, make_llm):
    server.configure(reasoning_models=["acme-thinker"])
    llm = make_llm(model="acme-thinker", cache=False)
    assert (await llm.chat(MSG, max_tokens=20)).text == 'the token "bridge"'
    assert server.stats["http_400"] == 2  # max_tokens, then temperature
    assert (await llm.chat(MSG, max_tokens=20)).text == 'the token "bridge"'
    assert server.stats["http_400"] == 2 and server.stats["chat"] == 4  # remembered for the next calls
    assert await make_llm(model="acme-thinker").supports_logprobs() is False  # 403: no logprobs


async def test_cached_prompt_tokens_are_read_from_usage_and_priced(server, make_llm):
    server.configure(prompt_cache=True)
    static = "You explain features. " * 300  # 1200 test-server tokens: a cacheable prefix
    llm = make_llm(model="gpt-4.1-mini", cache=False)
    first = await llm.chat([{"role": "system", "content": static}, {"role": "user", "content": "<<bridge>> one"}],
                           max_tokens=20)
    second = await llm.chat([{"role": "system", "content": static}, {"role": "user", "content": "<<river>> two"}],
                            max_tokens=20)
    assert first.usage.cached_prompt_tokens == 0
    assert second.usage.cached_prompt_tokens == 1152  # whole 128-token steps of the shared prefix
    p = lookup("gpt-4.1-mini", load_prices(None))
    u = second.usage
    expected = ((u.prompt_tokens - 1152) * p.input + 1152 * p.cached_input + u.completion_tokens * p.output) / 1e6
    assert u.cost_usd == pytest.approx(expected) and u.cost_usd < first.usage.cost_usd
    assert llm.usage.cached_prompt_tokens == 1152
