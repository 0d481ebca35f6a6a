from __future__ import annotations

import pytest

from labeler.llm import LLMClient, SpendTracker, reset_process_state
from labeler.testing.llm_server import TestLLMServer


@pytest.fixture(autouse=True)
def fresh_llm_state():
    reset_process_state()
    yield
    reset_process_state()


@pytest.fixture
def server():
    with TestLLMServer(seed=1) as s:
        yield s


@pytest.fixture
async def make_llm(server, tmp_path):
    """Clients against the test server with short timeouts and fast backoff, a private spend
    tracker and a cache file in tmp_path (shared by clients of one test)."""
    clients: list[LLMClient] = []

    def make(**kw) -> LLMClient:
        opts = dict(model="gpt-4o-mini", base_url=server.base_url, api_key="sk-test", timeout_s=2.0,
                    max_retries=3, backoff_initial_s=0.01, backoff_max_s=0.05, retry_after_cap_s=0.2,
                    cache_path=tmp_path / "llm_cache.sqlite", spend=SpendTracker())
        opts.update(kw)
        c = LLMClient(**opts)
        clients.append(c)
        return c

    yield make
    for c in clients:  # close connections inside the test's event loop
        await c.aclose()
