"""Fixtures for the API tests: a tiny real store and an app on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

WRITE_KEY = "test-write-key"


@pytest.fixture(scope="session")
def tiny_store_path(tmp_path_factory):
    from labeler.testing import make_tiny_store

    return make_tiny_store(tmp_path_factory.mktemp("store") / "store", n_features=16)


def populate(repo, store_path) -> int:
    """Register the store and give a few features explanations and scores."""
    from labeler.examples.store import FeatureStore
    from labeler.records import Explanation, ScoreResult

    sae_id = repo.catalog.register_store(FeatureStore(store_path))
    texts = {1: "the Golden Gate Bridge and other bridges", 2: "Python function definitions",
             3: "numbers and counting"}
    for i, text in texts.items():
        eid = repo.results.save_explanation(sae_id, Explanation(feature=i, text=text, explainer="highlighted",
                                                        llm_model="gpt-x", prompt_name="explain_highlighted",
                                                        prompt_version="v1", prompt_hash="h"))
        repo.results.save_score(eid, ScoreResult(feature=i, method="simulation", value=i / 10, llm_model="sim"))
    repo.results.save_explanation(sae_id, Explanation(feature=4, text="", explainer="highlighted", failed=True, error="boom"))
    return sae_id


@pytest.fixture
def api(database_url, tiny_store_path, monkeypatch):
    """(TestClient, repo, sae_id) with writes keyed by WRITE_KEY."""
    from fastapi.testclient import TestClient

    from labeler.api.app import create_app
    from labeler.core.config import reset_settings, get_settings
    from labeler.db import Repository

    monkeypatch.setenv("LABELER_API_WRITE_KEY", WRITE_KEY)
    monkeypatch.setenv("LABELER_DATABASE_URL", database_url)
    reset_settings()
    repo = Repository.open(database_url)
    sae_id = populate(repo, tiny_store_path)
    app = create_app(get_settings(), repo=repo)
    with TestClient(app) as client:
        yield client, repo, sae_id
    repo.close()
