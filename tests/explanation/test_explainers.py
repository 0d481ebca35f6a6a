"""Every explainer through the real openai client and the test server."""

from __future__ import annotations

import asyncio
import re

import pytest

from labeler.core.errors import BudgetExceeded, ConfigError
from labeler.explanation import EXPLAINERS, get_explainer
from labeler.explanation.formatting import clean_explanation, final_line, highlight, normalise, token_pairs
from labeler.testing import make_feature_record

pytestmark = pytest.mark.timeout(60)
LLM_EXPLAINERS = ["token_activation", "highlighted", "cot", "logits", "contrastive"]


def train_windows(record) -> set[int]:
    return {e.window for e in record.select("train")}


def last_user(server) -> str:
    return server.requests[-1]["messages"][-1]["content"]


@pytest.mark.parametrize("name", LLM_EXPLAINERS)
async def test_llm_explainer_produces_a_short_label_from_train_only(server, make_llm, name):
    record = make_feature_record(7, trigger=" bridge")
    llm = make_llm()
    exp = await get_explainer(name, llm).explain(record)
    assert not exp.failed, exp.error
    assert exp.text == 'the token "bridge"'
    assert exp.explainer == name and exp.llm_model == "gpt-4o-mini"
    assert exp.prompt_name == f"explain_{name}" and exp.prompt_version == "v2" and len(exp.prompt_hash) == 16
    assert exp.config["sampling"] == "mixed"
    assert exp.usage.calls == 1 and exp.usage.prompt_tokens > 0 and exp.usage.cost_usd > 0
    assert exp.example_windows and set(exp.example_windows) <= train_windows(record)
    # nothing from valid/test windows reaches the prompt
    prompt = last_user(server)
    held_out = {e.window for e in record.examples if e.split != "train"}
    assert not held_out & set(exp.example_windows)
    shown_texts = [e.text.strip() for e in record.examples if e.window in held_out]
    assert not any(t[:40] in prompt for t in shown_texts)


async def test_prompt_contents(server, make_llm):
    record = make_feature_record(2, trigger=" bridge")
    llm = make_llm()
    await get_explainer("highlighted", llm).explain(record)
    user = last_user(server)
    assert user.count("<<bridge>>") >= 10 and user.count("Values:") == 10
    levels = [int(v) for v in re.findall(r'"bridge"=(\d+)', user)]
    assert max(levels) >= 9 and min(levels) <= 4  # mixed sampling: top and weaker examples
    await get_explainer("token_activation", llm).explain(record)
    assert '"bridge"=' in last_user(server) and "<<" not in last_user(server)
    await get_explainer("logits", llm).explain(record)
    assert 'Promoted next tokens: "bridge", "bridges"' in last_user(server)
    assert last_user(server).count("Excerpt") == 3
    exp = await get_explainer("contrastive", llm).explain(record)
    assert "Feature not active:" in last_user(server) and "B4:" in last_user(server)
    negatives = {e.window for e in record.select("train", "nonactivating")}
    assert len(negatives & set(exp.example_windows)) == 4
    hard = await get_explainer("contrastive", llm, negatives="hard").explain(record)
    assert exp.config != hard.config and hard.config["negatives"] == "hard"
    hard_windows = {e.window for e in record.select("train", "hard_negative")}
    assert len(hard_windows & set(hard.example_windows)) == 4 and " bridge" in last_user(server).split("not active:")[1]
    # v1 stays loadable and renders as before
    await get_explainer("highlighted", llm, prompt_version="v1").explain(record)
    assert "<<green>>(1)" in last_user(server) and "Values:" not in last_user(server)  # 5 % marks, inline levels


async def test_v2_marks_values_newlines_and_few_shot(server, make_llm):
    from labeler.records import ActivationExample, FeatureRecord, FeatureStats

    ex = ActivationExample(window=1, tokens=["x", " =", " load", "(", "path", ")\n", "print", "\t", " y"],
                           activations=[0.0, 0.0, 10.0, 2.0, 0.4, 0.0, 0.0, 0.0, 3.5], kind="top")
    rec = FeatureRecord(0, FeatureStats(max=10.0), [ex])
    await get_explainer("highlighted", make_llm()).explain(rec)
    msgs = server.requests[-1]["messages"]
    user = msgs[-1]["content"]
    # marks at >= 30 % of this example's max (10 and 3.5, not 2 or 0.4), values listed apart
    assert user == 'Excerpt 1: x = <<load>>(path)↵print⇥ <<y>>\nValues: "load"=10, "y"=4'
    # three few-shot pairs, none about the test trigger, before the feature's excerpts
    assert len(msgs) == 8 and [m["role"] for m in msgs[1:7]] == ["user", "assistant"] * 3
    assert "bridge" not in " ".join(m["content"] for m in msgs[:7]).lower()
    rules = msgs[0]["content"]
    assert "do not list the example words" in rules and "Do not mention the markers" in rules
    await get_explainer("highlighted", make_llm(), mark_threshold=0.1).explain(rec)
    assert "<<load(>>path" in server.requests[-1]["messages"][-1]["content"]


async def test_cot_keeps_only_the_final_line(server, make_llm):
    exp = await get_explainer("cot", make_llm()).explain(make_feature_record(1))
    assert exp.text == 'the token "bridge"'
    assert "EXPLANATION" in exp.raw and "share one thing" in exp.raw and "share" not in exp.text


async def test_unparseable_answers_are_retried_then_recorded_as_failure(server, make_llm):
    server.script("#@!%&*{}", "", {"malformed": True})
    exp = await get_explainer("highlighted", make_llm(), retries=2).explain(make_feature_record(1))
    assert exp.failed and exp.text == "" and "unparseable" in exp.error
    assert exp.raw and exp.usage.calls == 3 and server.stats["chat"] == 3
    # a retry that works is kept
    server.script("~~~", {"text": "the word bridge and", "finish_reason": "length"}, "bridges over rivers")
    exp = await get_explainer("highlighted", make_llm(), retries=2).explain(make_feature_record(2))
    assert not exp.failed and exp.text == "bridges over rivers" and exp.usage.calls == 3
    server.script("I think it is about water.\nNothing else.")
    exp = await get_explainer("cot", make_llm(), retries=0).explain(make_feature_record(3))
    assert exp.failed and "EXPLANATION" in exp.error and exp.raw.startswith("I think")


async def test_llm_errors_become_failures_and_budget_propagates(server, make_llm, tmp_path):
    server.configure(fail_500=1.0)
    exp = await get_explainer("highlighted", make_llm(max_retries=1)).explain(make_feature_record(1))
    assert exp.failed and "http_500" in exp.error
    server.configure(fail_500=0.0)
    import json

    prices = tmp_path / "p.json"
    # $1 a prompt token: one call's worst case is far over a $1 budget, so none is sent
    prices.write_text(json.dumps({"pricey": {"input": 1e6, "output": 0}, "fair": {"input": 1e3, "output": 0}}))
    sent = server.stats["chat"]
    with pytest.raises(BudgetExceeded):
        await get_explainer("highlighted", make_llm(model="pricey", prices_file=prices, budget_usd=1.0)).explain(
            make_feature_record(1))
    assert server.stats["chat"] == sent
    # $0.001 a token: the first call fits its worst case; what it spent leaves too little for a second
    llm = make_llm(model="fair", prices_file=prices, budget_usd=1.0)
    exp = await get_explainer("highlighted", llm).explain(make_feature_record(1))
    assert not exp.failed and 0 < exp.usage.cost_usd < 1.0
    with pytest.raises(BudgetExceeded):
        await get_explainer("highlighted", llm).explain(make_feature_record(2))
    assert server.stats["chat"] == sent + 1


async def test_rerun_is_served_from_cache(server, make_llm):
    record = make_feature_record(4)
    first = await get_explainer("highlighted", make_llm()).explain(record)
    again = await get_explainer("highlighted", make_llm()).explain(record)
    assert again.text == first.text and again.usage.cost_usd == 0 and again.usage.cached_calls == 1
    assert server.stats["chat"] == 1


def test_formatting_helpers():
    from labeler.explanation.formatting import display, mark_runs, marked_positions

    assert display("a\nb\tc\x07") == "a↵b⇥c\\u0007"
    assert marked_positions([0.0, 1.0, 3.0, 10.0], 0.3) == [2, 3]
    assert mark_runs([" the", " Golden", " Gate", " at"], {1, 2}) == "the <<Golden Gate>> at"
    assert normalise([0.0, 0.4, 4.0, 8.0, 12.0], 8.0) == [0, 0, 5, 10, 10]
    assert highlight([" the", " bridge", "s", " over"], [0, 8, 1, 0]) == "the <<bridge>>(8)<<s>>(1) over"
    assert token_pairs([" the", " bridge"], [0, 8]) == '"bridge"=8'
    assert clean_explanation('Explanation: "the word bridge".') == ("the word bridge", "")
    assert clean_explanation('- the token "cat"')[0] == 'the token "cat"'
    assert clean_explanation("x" * 10 + " " + "y" * 300, max_chars=50)[0] == "x" * 10
    assert clean_explanation("   ")[0] is None and clean_explanation("%%%###")[0] is None
    assert final_line("think\n**EXPLANATION:** cats")[0] == "cats"


def test_baseline_is_offline_and_deterministic():
    record = make_feature_record(5, trigger=" bridge")
    a = get_explainer("baseline").explain_sync(record)
    b = asyncio.run(get_explainer("baseline").explain(make_feature_record(5, trigger=" bridge")))
    assert a.text == b.text and a.text.startswith('"bridge"') and "(tokens)" in a.text
    assert a.llm_model is None and a.usage.calls == 0 and a.prompt_name == "baseline"
    assert set(a.example_windows) <= train_windows(record)
    other = get_explainer("baseline").explain_sync(make_feature_record(6, trigger=" Piano"))
    assert other.text.startswith('"Piano"')
    empty = make_feature_record(8, n_top=0, n_sample=0)
    assert get_explainer("baseline").explain_sync(empty).failed


def test_get_explainer_errors():
    assert set(EXPLAINERS) == {"token_activation", "highlighted", "cot", "logits", "contrastive",
                               "best_of_n", "baseline"}
    with pytest.raises(ConfigError, match="unknown explainer"):
        get_explainer("nope")
    with pytest.raises(ConfigError, match="needs an LLM endpoint"):
        get_explainer("highlighted")
    with pytest.raises(ConfigError, match="no option"):
        get_explainer("baseline", n_exampels=3)
    with pytest.raises(ConfigError, match="sampling='best'"):
        get_explainer("highlighted", object(), sampling="best")
    with pytest.raises(ConfigError, match="negatives='all'"):
        get_explainer("contrastive", object(), negatives="all")


async def test_explainer_with_the_configured_endpoint(server, monkeypatch):
    from labeler.core.config import reset_settings
    from labeler.llm import get_llm

    monkeypatch.setenv("LABELER_EXPLAINER_BASE_URL", server.base_url)
    monkeypatch.setenv("LABELER_EXPLAINER_API_KEY", "k")
    reset_settings()
    exp = await get_explainer("highlighted", get_llm("explainer")).explain(make_feature_record(1))
    assert exp.text == 'the token "bridge"' and server.stats["chat"] == 1
