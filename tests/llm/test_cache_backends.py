"""The response cache in a SQLite file, in PostgreSQL and in Redis: shared by every client that
names the same place, and never holding an answer that failed validation."""

from __future__ import annotations

import pytest

from labeler.core.errors import ConfigError
from labeler.llm.cache import open_cache
from labeler.llm.types import RejectedAnswer

pytestmark = pytest.mark.timeout(60)
MSG = [{"role": "user", "content": "Excerpt 1: the <<bridge>>(9) over the river"}]


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def cache_location(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared-cache.sqlite'}"
    return request.getfixturevalue("postgres_url" if request.param == "postgres" else "redis_url")


async def test_workers_share_one_cache(server, make_llm, cache_location):
    worker_a = make_llm(cache_url=cache_location)
    worker_b = make_llm(cache_url=cache_location)
    first = await worker_a.chat(MSG, max_tokens=20)
    second = await worker_b.chat(MSG, max_tokens=20)
    assert not first.cached and second.cached and second.text == first.text
    assert second.usage.cost_usd == 0 and server.stats["chat"] == 1
    assert len(worker_b.cache_store) == 1


async def test_an_answer_that_failed_validation_is_not_kept_anywhere(server, make_llm, cache_location):
    llm = make_llm(cache_url=cache_location)
    server.script("#@!% garbage")

    def validate(resp):
        if "token" not in resp.text:
            raise ValueError("no explanation in the answer")

    with pytest.raises(RejectedAnswer):
        await llm.chat(MSG, max_tokens=20, validate=validate)
    assert len(llm.cache_store) == 0
    fresh = await make_llm(cache_url=cache_location).chat(MSG, max_tokens=20, validate=validate)
    assert not fresh.cached and server.stats["chat"] == 2


def test_batch_membership_roundtrip(cache_location):
    cache = open_cache(cache_location)
    try:
        cache.remember_batch(["k1", "k2"], "batch_1")
        assert cache.batch_of("k1") == "batch_1" and cache.batch_of("k3") is None
        cache.remember_batch(["k2"], "batch_2")
        cache.forget_batch(["k1"])
        assert cache.batch_of("k1") is None and cache.batch_of("k2") == "batch_2"
    finally:
        cache.close()


def test_settings_name_the_cache_and_bad_locations_are_refused(monkeypatch, redis_url):
    from labeler.core.config import reset_settings
    from labeler.llm import LLMClient

    monkeypatch.setenv("LABELER_LLM_CACHE_URL", redis_url)
    reset_settings()
    client = LLMClient.from_settings("explainer")
    assert client.cache_url == redis_url and type(client.cache_store).__name__ == "RedisResponseCache"
    with pytest.raises(ConfigError, match="neither a redis"):
        open_cache("not a url")
