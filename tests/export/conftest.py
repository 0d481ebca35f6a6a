"""Fixtures for the export tests: a tiny real store, labeled in a real SQLite database by a real
offline job plus LLM-made rows (several explanations per feature, scores of several methods,
a control score, a failed score, a failed explanation)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def export_store(tmp_path_factory):
    from labeler.testing import make_tiny_store

    return make_tiny_store(tmp_path_factory.mktemp("export-store") / "store", n_features=24)


def label(repo, store_path, settings) -> int:
    """A job of the offline baseline explainer and simulator (with control scores), then LLM-made
    explanations and scores saved the way jobs save them."""
    from labeler.records import Explanation, ScoreResult
    from labeler.runs.runner import Runner
    from labeler.runs.spec import LabelSpec, make_job_spec

    runner = Runner(repo, settings)
    spec = make_job_spec(store_path, LabelSpec(explainer="baseline", scorers=["simulation"], control=True), settings)
    job_id = runner.create_job(spec, range(20))
    assert runner.run(job_id).counts["done"] == 20
    sae_id = repo.catalog.sae_id_for_store(runner.stores.get(store_path))
    for i in (1, 2, 3):
        exp_id = repo.results.save_explanation(sae_id, Explanation(
            feature=i, text=f"the word number {i}.\nsecond line", explainer="highlighted",
            llm_model="openai/gpt-4o-mini", prompt_name="explain_highlighted", prompt_version="v1",
            prompt_hash="abc"))
        repo.results.save_score(exp_id, ScoreResult(feature=i, method="simulation", value=0.5 + i / 10,
                                                    llm_model="gpt-4o-mini", metrics={"pearson": 0.5 + i / 10}))
        repo.results.save_score(exp_id, ScoreResult(feature=i, method="detection", value=0.8, llm_model="gpt-4o-mini"))
        repo.results.save_score(exp_id, ScoreResult(feature=i, method="fuzzing", value=None, failed=True,
                                                    error="malformed", llm_model="gpt-4o-mini"))
        repo.results.save_score(exp_id, ScoreResult(feature=i, method="detection", value=0.5, control=True,
                                                    llm_model="gpt-4o-mini"))
    repo.results.save_explanation(sae_id, Explanation(feature=5, text="", explainer="highlighted", failed=True,
                                                      error="boom", llm_model="gpt-4o-mini"))
    return sae_id


@pytest.fixture
def labeled(export_store, tmp_path, monkeypatch):
    """(repo, sae_id, store path, database URL), the database a SQLite file of this test."""
    from labeler.core.config import get_settings, reset_settings
    from labeler.db import Repository

    url = f"sqlite:///{tmp_path / 'labeler.db'}"
    monkeypatch.setenv("LABELER_DATABASE_URL", url)
    reset_settings()
    repo = Repository.open(url)
    sae_id = label(repo, export_store, get_settings())
    yield repo, sae_id, export_store, url
    repo.close()


@pytest.fixture
def store_copy(export_store, tmp_path):
    """A copy of the store that a test may add files to."""
    dst = tmp_path / "store-copy"
    shutil.copytree(export_store, dst)
    return dst
