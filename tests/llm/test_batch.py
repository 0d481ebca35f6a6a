"""Batch API mode through the real openai client against the test server's /v1/files and /v1/batches."""

from __future__ import annotations

import asyncio

import pytest

from labeler.core.errors import LLMError
from labeler.llm.batch import BatchOptions
from labeler.llm.pricing import cost_usd, load_prices

pytestmark = pytest.mark.timeout(60)
FAST = BatchOptions(collect_s=0.05, poll_s=0.02, line_retries=2)


def msg(word: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Excerpt 1: the <<{word}>>(9) over the river"}]


async def test_requests_of_a_round_share_one_batch_and_are_joined_by_custom_id(server, make_llm):
    llm = make_llm(mode="batch", batch=FAST, cache=False)
    words = [f"w{i}" for i in range(12)]
    answers = await asyncio.gather(*(llm.chat(msg(w), max_tokens=20) for w in words))
    assert [a.text for a in answers] == [f'the token "{w}"' for w in words]  # output file is reversed
    assert server.stats["batches"] == 1 and server.stats["batch_lines"] == 12 and server.stats["chat"] == 0
    sync_price = cost_usd("gpt-4o-mini", answers[0].usage.prompt_tokens, answers[0].usage.completion_tokens,
                          load_prices(None))
    assert answers[0].usage.cost_usd == pytest.approx(sync_price / 2)  # half price


async def test_failed_and_expired_lines_are_submitted_again(server, make_llm):
    llm = make_llm(mode="batch", batch=FAST, cache=False)
    server.script({"status": 500}, {"status": 429})  # the first two lines answered go to the error file
    answers = await asyncio.gather(*(llm.chat(msg(f"a{i}"), max_tokens=20) for i in range(6)))
    assert all(a.text.startswith("the token") for a in answers)
    assert server.stats["batches"] == 2 and server.stats["batch_lines"] == 8
    server.reset_stats()
    server.configure(batch_expire=0.5, seed=3)
    answers = await asyncio.gather(*(llm.chat(msg(f"b{i}"), max_tokens=20) for i in range(6)))
    assert all(a.text.startswith("the token") for a in answers)
    assert server.stats["batches"] >= 2


async def test_a_line_that_keeps_failing_raises_llm_error_and_a_refused_one_at_once(server, make_llm):
    llm = make_llm(mode="batch", batch=FAST, cache=False)
    server.configure(fail_500=1.0)
    with pytest.raises(LLMError) as ei:
        await llm.chat(msg("x"), max_tokens=20)
    assert ei.value.kind == "http_500" and server.stats["batches"] == 3  # first try + 2 resubmissions
    server.configure(fail_500=0.0, models=["another-model"])
    with pytest.raises(LLMError) as ei:
        await llm.chat(msg("y"), max_tokens=20)
    assert ei.value.kind == "http_404" and server.stats["batches"] == 4


async def test_reasoning_models_in_batch_mode(server, make_llm):
    server.configure(reasoning_models=["o4-mini", "acme-thinker"])
    answer = await make_llm(model="o4-mini", mode="batch", batch=FAST, cache=False).chat(msg("z"), max_tokens=20)
    assert answer.text == 'the token "z"' and "max_completion_tokens" in server.requests[-1]
    learner = make_llm(model="acme-thinker", mode="batch", batch=FAST, cache=False)
    assert (await learner.chat(msg("q"), max_tokens=20)).text == 'the token "q"'
    assert server.stats["batches"] == 4  # o4-mini once; acme-thinker: max_tokens, temperature, then the answer


async def test_a_restarted_process_waits_for_the_batch_it_already_paid_for(server, make_llm):
    """The cache remembers which batch answers a request: a second client (another process after
    a crash) finds the running batch instead of submitting the request again."""
    server.configure(batch_latency_s=0.5)
    first = make_llm(mode="batch", batch=FAST)
    task = asyncio.ensure_future(first.chat(msg("paid"), max_tokens=20))
    while server.stats["batches"] == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    task.cancel()  # the process "dies" while the batch runs
    second = make_llm(mode="batch", batch=FAST)
    answer = await second.chat(msg("paid"), max_tokens=20)
    assert answer.text == 'the token "paid"' and server.stats["batches"] == 1
    again = await make_llm(mode="batch", batch=FAST).chat(msg("paid"), max_tokens=20)
    assert again.cached and server.stats["batches"] == 1


async def test_validation_applies_to_batch_answers(server, make_llm):
    from labeler.llm.types import RejectedAnswer

    llm = make_llm(mode="batch", batch=FAST)
    server.script("garbage #@!")

    def validate(resp):
        if not resp.text.startswith("the token"):
            raise ValueError("not an explanation")

    with pytest.raises(RejectedAnswer):
        await llm.chat(msg("v"), max_tokens=20, validate=validate)
    assert len(llm.cache_store) == 0
    assert (await llm.chat(msg("v"), max_tokens=20, validate=validate)).text == 'the token "v"'
    assert server.stats["batches"] == 2
