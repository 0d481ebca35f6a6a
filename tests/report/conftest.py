"""A tiny store labeled through the real pipeline (two offline explainer configurations,
simulation + embedding scorers, shuffled controls), shared by the report and page tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class LabeledDb:
    url: str
    store_path: Path
    sae_id: int
    model_slug: str
    sae_slug: str
    features: list[int]


@pytest.fixture(scope="session")
def labeled_db(tmp_path_factory) -> LabeledDb:
    from labeler.core.naming import slugify
    from labeler.db import Repository
    from labeler.examples.store import FeatureStore
    from labeler.pipeline import LabelSpec, sae_id_for_store
    from labeler.report.runs import run_resumable
    from labeler.testing import make_tiny_store

    root = tmp_path_factory.mktemp("report-db")
    store_path = make_tiny_store(root / "store", n_features=48, tokens=4096)
    store = FeatureStore(store_path)
    url = f"sqlite:///{root / 'labeler.db'}"
    repo = Repository(url)
    repo.upgrade()
    sae_id = sae_id_for_store(repo, store)
    counts = store.all_stats()["count"]
    features = [i for i in range(store.n_features) if counts[i] >= 3][:24]
    assert len(features) >= 12, "tiny store has too few live features for a meaningful report"
    for options in ({}, {"n_tokens": 1, "n_examples": 5}):
        spec = LabelSpec(explainer="baseline", explainer_options=options, scorers=["simulation", "embedding"],
                         control=True)
        out = run_resumable(store, repo, sae_id, features, spec, spec.to_dict(), chunk=12)
        assert out.labeled, f"pipeline labeled nothing: {out.failed}"
    repo.close()
    return LabeledDb(url=url, store_path=store_path, sae_id=sae_id, model_slug=slugify(store.model_name),
                     sae_slug=slugify(store.sae_name), features=features)
