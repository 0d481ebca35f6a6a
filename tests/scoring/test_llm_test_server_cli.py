"""`labeler llm-test-server`, the command benchmarks and manual runs use, as a real process:
it answers the scoring prompts with the oracle (a simulation of the right explanation scores
high, a wrong one low) and the explainers with its default rule."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

from labeler.explanation import get_explainer
from labeler.llm import LLMClient, reset_process_state
from labeler.scoring import get_scorer
from labeler.testing import make_feature_record


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server_url():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "labeler", "llm-test-server", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"llm-test-server did not come up: {proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.2)
        reset_process_state()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
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
