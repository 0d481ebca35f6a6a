"""`labeler llm-test-server`, the command benchmarks and manual runs use, as a real process:
it answers the scoring prompts with the oracle (a simulation of the right explanation scores
high, a wrong one low) and the explainers with its default rule."""

from __future__ import annotations

import pytest

from labeler.explanation import get_explainer
from labeler.llm import LLMClient, reset_process_state
from labeler.scoring import get_scorer
from labeler.testing import make_feature_record
from labeler.testing.api_process import free_port, labeler_process


@pytest.fixture
def server_url(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    with labeler_process(["llm-test-server", "--port", str(port)], ready_url=f"{url}/models",
                         log=tmp_path / "llm-server.log"):
        reset_process_state()
        yield url
    reset_process_state()


async def test_the_command_answers_explainers_and_scores_with_the_oracle(server_url):
    llm = LLMClient(model="test-model", base_url=server_url, api_key="x", cache=False, max_retries=0)
    record = make_feature_record(3, trigger=" bridge")
    exp = await get_explainer("highlighted", llm).explain(record)
    assert not exp.failed and exp.text, exp.error
    right = await get_scorer("simulation", llm).score(record, 'the token "bridge"')
    wrong = await get_scorer("simulation", llm).score(record, "recipes for soup")
    assert not right.failed and not wrong.failed, (right.error, wrong.error)
    assert right.value > 0.9 and (wrong.value is None or wrong.value < 0.5), (right.value, wrong.value)
