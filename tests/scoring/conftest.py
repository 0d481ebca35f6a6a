"""Scoring fixtures: a real LLM test server with the scoring oracle rules, a real client."""

from __future__ import annotations

import pytest

from labeler.llm import LLMClient, reset_process_state
from labeler.testing.llm_server import TestLLMServer
from labeler.testing.oracle import install_scoring_rules
from labeler.testing import make_feature_record

EXPLANATION = 'the token "bridge"'


@pytest.fixture
def record():
    return make_feature_record(3, trigger=" bridge")


@pytest.fixture(params=["on", "ignore"], ids=["logprobs", "no-logprobs"])
def server(request):
    reset_process_state()  # forget logprob probes of earlier servers
    with TestLLMServer(logprobs_mode=request.param) as s:
        install_scoring_rules(s)
        s.logprobs_on = request.param == "on"
        yield s
    reset_process_state()


@pytest.fixture
def lp_server():
    reset_process_state()
    with TestLLMServer(logprobs_mode="on") as s:
        install_scoring_rules(s)
        yield s
    reset_process_state()


def _client_for(server, **kw) -> LLMClient:
    kw.setdefault("cache", False)
    kw.setdefault("max_retries", 0)
    return LLMClient(model="test-model", base_url=server.base_url, api_key="x", role="scorer", **kw)


@pytest.fixture
def client_for():
    """``client_for(server, **LLMClient options)``: a real client for a test server."""
    return _client_for
