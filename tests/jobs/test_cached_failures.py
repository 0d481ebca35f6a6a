"""The response cache never serves a failure back (#16 item 2): after an endpoint answered
garbage, a rerun and --retry-failed ask the endpoint again; and a retry counts as one attempt."""

from __future__ import annotations

import pytest

from labeler.core.config import get_settings, reset_settings
from labeler.db import Repository
from labeler.runs.runner import Runner
from labeler.runs.spec import LabelSpec, make_job_spec

LABEL = LabelSpec(explainer="highlighted", scorers=["simulation"])


@pytest.fixture
def cached_runner(monkeypatch, llm_server, tmp_path):
    """In-process runner with the response cache ON (the default) against the test server."""
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("LABELER_LLM_MAX_RETRIES", "0")
    monkeypatch.setenv("LABELER_CHUNK_SIZE", "2")
    db = tmp_path / "labeler.db"
    monkeypatch.setenv("LABELER_DATABASE_URL", f"sqlite:///{db}")
    reset_settings()
    repo = Repository.open(f"sqlite:///{db}")
    yield Runner(repo, get_settings())
    repo.close()


def test_garbage_is_never_served_from_the_cache(tiny_store, alive_features, llm_server, cached_runner):
    features = alive_features[:4]
    llm_server.configure(malformed=1.0)
    spec = make_job_spec(tiny_store, LABEL, cached_runner.settings)
    first = cached_runner.create_job(spec, features)
    info = cached_runner.run(first)
    assert info.counts["failed"] == 4 and info.counts["done"] == 0
    assert all(e.attempts == 1 for e in info.errors), info.errors

    llm_server.configure(malformed=0.0)
    llm_server.reset_stats()
    rerun = cached_runner.create_job(spec, features)  # the same job again: reaches the endpoint
    info = cached_runner.run(rerun)
    assert info.counts["done"] == 4, info.errors
    assert llm_server.stats["chat"] >= 2 * len(features)  # explanations and simulations asked anew


def test_retry_failed_asks_the_endpoint_and_counts_one_attempt(tiny_store, alive_features, llm_server,
                                                               cached_runner, capsys):
    features = alive_features[:3]
    llm_server.configure(malformed=1.0)
    job_id = cached_runner.create_job(make_job_spec(tiny_store, LABEL, cached_runner.settings), features)
    cached_runner.run(job_id)
    cached_runner.retry_failed(job_id, queued=False)  # still garbage: fails again
    info = cached_runner.progress(job_id)
    assert info.counts["failed"] == 3 and {e.attempts for e in info.errors} == {2}  # was 3 after one retry

    llm_server.configure(malformed=0.0)
    llm_server.reset_stats()
    from labeler.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["label", str(tiny_store), "--retry-failed", str(job_id)])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert f"retried 3 failed feature(s) of job {job_id}" in out and "done 3" in out
    assert llm_server.stats["chat"] >= 2 * len(features)
