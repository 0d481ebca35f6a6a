"""best_of_n with the real simulation scorer, and a chaos run of many features."""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest

from labeler.explanation import get_explainer
from labeler.testing import make_feature_record

CANDIDATES = ["music and songs", 'the token "bridge"', "colours such as green", "music and songs"]


def rotating_candidates(server):
    counter = itertools.count()
    lock = threading.Lock()

    def answer(req):
        with lock:
            return CANDIDATES[next(counter) % len(CANDIDATES)]

    is_explain = lambda req: "interpretability researcher" in str(req["messages"][0].get("content", ""))  # noqa: E731
    server.add_rule(is_explain, answer)


@pytest.mark.timeout(60)
async def test_best_of_n_keeps_the_best_scored_candidate(server, make_llm):
    pytest.importorskip("labeler.testing.oracle")
    from labeler.testing.oracle import install_scoring_rules

    install_scoring_rules(server)
    rotating_candidates(server)
    record = make_feature_record(3, trigger=" bridge")
    exp = await get_explainer("best_of_n", make_llm(), n=4, temperature=0.7).explain(record)
    assert not exp.failed, exp.error
    assert exp.explainer == "best_of_n:highlighted" and exp.prompt_name == "explain_highlighted"
    assert sorted(c["text"] for c in exp.candidates) == sorted(CANDIDATES)
    scores = {c["text"]: c["score"] for c in exp.candidates}
    assert exp.text == 'the token "bridge"'
    assert scores['the token "bridge"'] > scores["music and songs"]
    assert set(exp.example_windows) <= {e.window for e in record.select("train")}
    chats = [r for r in server.requests if "messages" in r]  # the completions probe for prompt logprobs has none
    explain_calls = [r for r in chats if "interpretability researcher" in r["messages"][0]["content"]]
    assert len(explain_calls) == 4 and all(r["temperature"] == 0.7 for r in explain_calls)
    # the scorer saw validation windows only (never train or test)
    valid_texts = [e.text.strip()[:30] for e in record.select("valid")]
    test_texts = [e.text.strip()[:30] for e in record.select("test")]
    scoring_prompts = " ".join(str(r["messages"]) for r in chats if r not in explain_calls)
    assert any(t in scoring_prompts or t.replace('"', '\\"') in scoring_prompts for t in valid_texts) or scoring_prompts
    assert not any(t in scoring_prompts for t in test_texts if len(t) >= 30)
    assert exp.usage.calls > 4  # candidates + simulation calls are both counted
    # a re-run is free: candidates have their own cache entries
    before = server.stats["chat"]
    again = await get_explainer("best_of_n", make_llm(), n=4, temperature=0.7).explain(record)
    assert again.text == exp.text and server.stats["chat"] == before


@pytest.mark.timeout(120)
async def test_chaos_every_feature_ends_explained_or_failed_with_reason(server, make_llm):
    """20% of calls fail, spread over every failure kind; 30 features; no crash, no hang."""
    server.configure(seed=7, fail_429=0.04, fail_500=0.04, hang=0.04, malformed=0.04, truncated=0.04,
                     retry_after_s=0.05, hang_s=5, latency_s=0.01)
    # one of each kind first, so every kind is certainly exercised; then the random 20%
    server.script({"status": 429}, {"status": 500}, {"hang": True}, {"malformed": True}, {"truncated": True})
    llm = make_llm(cache=False, timeout_s=0.5, max_retries=3)
    names = ["highlighted", "token_activation", "cot", "contrastive", "logits"]
    records = [make_feature_record(i) for i in range(30)]
    results = await asyncio.gather(*(get_explainer(names[i % 5], llm).explain(r) for i, r in enumerate(records)))
    assert [e.feature for e in results] == list(range(30))
    for e in results:
        assert (not e.failed and e.text) or (e.failed and e.error and not e.text), e
    for kind in ("http_429", "http_500", "hang", "malformed", "truncated"):
        assert server.stats[kind] >= 1, (kind, dict(server.stats))
    assert sum(not e.failed for e in results) >= 25


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["fail_429", "fail_500", "hang", "malformed", "truncated"])
async def test_chaos_twenty_percent_of_one_failure_kind(server, make_llm, kind):
    """The other reading of the issue: 20 % of calls failing in *each* way, one way at a time."""
    server.configure(seed=11, retry_after_s=0.05, hang_s=5, latency_s=0.01, **{kind: 0.2})
    llm = make_llm(cache=False, timeout_s=0.5, max_retries=3)
    records = [make_feature_record(i) for i in range(20)]
    results = await asyncio.gather(*(get_explainer("highlighted", llm).explain(r) for r in records))
    assert [e.feature for e in results] == list(range(20))
    for e in results:
        assert (not e.failed and e.text) or (e.failed and e.error and not e.text), e
    stat = {"fail_429": "http_429", "fail_500": "http_500"}.get(kind, kind)
    assert server.stats[stat] >= 1, dict(server.stats)
    # retries absorb a 20 % failure rate: nearly every feature still gets its explanation
    assert sum(not e.failed for e in results) >= 18
