"""`labeler serve --url B` with settings naming database A: the API writes and reads B only."""

from __future__ import annotations

import httpx
import pytest

from labeler.core.config import get_settings, reset_settings
from labeler.db import Repository
from labeler.runs.runner import Runner
from labeler.runs.spec import LabelSpec, make_job_spec
from labeler.testing.api_process import free_port, labeler_process
from tests.jobs.conftest import ROOT

pytestmark = [pytest.mark.redis]


def test_a_job_posted_to_the_api_is_the_job_it_returns_and_lives_in_its_database(
        tiny_store, alive_features, tmp_path, redis_url, monkeypatch):
    url_a = f"sqlite:///{tmp_path / 'a.db'}"
    url_b = f"sqlite:///{tmp_path / 'b.db'}"
    # database A already has a job 1, of other features: an API reading A would answer with it
    monkeypatch.setenv("LABELER_DATABASE_URL", url_a)
    reset_settings()
    repo_a = Repository.open(url_a)
    runner_a = Runner(repo_a, get_settings())
    other = runner_a.create_job(make_job_spec(tiny_store, LabelSpec(), get_settings()), alive_features[:2])
    assert other == 1

    port = free_port()
    env = dict(LABELER_DATABASE_URL=url_a, LABELER_REDIS_URL=redis_url, LABELER_API_WRITE_KEY="w",
               PYTHONPATH=str(ROOT))
    base = f"http://127.0.0.1:{port}"
    with labeler_process(["serve", "--url", url_b, "--port", str(port)], ready_url=f"{base}/health",
                         log=tmp_path / "serve.log", env=env):
        features = alive_features[2:5]
        posted = httpx.post(f"{base}/v1/jobs", headers={"X-API-Key": "w"}, timeout=30,
                            json={"store_path": str(tiny_store), "features": features,
                                  "spec": {"explainer": "baseline", "scorers": ["simulation"]}})
        assert posted.status_code == 202, posted.text
        job_id = posted.json()["id"]
        got = httpx.get(f"{base}/v1/jobs/{job_id}", timeout=10).json()
        assert got["id"] == job_id and got["n_features"] == len(features)
        assert got["spec"]["label"]["explainer"] == "baseline"

    repo_b = Repository(url_b)
    assert sorted(repo_b.jobs.features(job_id)) == features  # the job lives in B...
    assert [j.id for j in repo_a.jobs.list()] == [other]  # ...and A is untouched
    assert sorted(repo_a.jobs.features(other)) == alive_features[:2]
    repo_a.close()
    repo_b.close()
