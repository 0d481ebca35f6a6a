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
    from labeler.core.config import Settings
    from labeler.core.naming import slugify
    from labeler.db import Repository
    from labeler.runs.runner import Runner
    from labeler.runs.spec import LabelSpec, make_job_spec
    from labeler.testing import make_tiny_store

    root = tmp_path_factory.mktemp("report-db")
    store_path = make_tiny_store(root / "store", n_features=48, tokens=4096)
    url = f"sqlite:///{root / 'labeler.db'}"
    repo = Repository.open(url)
    # Session-scoped (built before the per-test isolated settings): settings of its own.
    settings = Settings(data_dir=root / "data")
    runner = Runner(repo, settings)
    store = runner.stores.get(store_path)
    sae_id = repo.catalog.sae_id_for_store(store)
    counts = store.all_stats()["count"]
    features = [i for i in range(store.n_features) if counts[i] >= 3][:24]
    assert len(features) >= 12, "tiny store has too few live features for a meaningful report"
    for options in ({}, {"n_tokens": 1, "n_examples": 5}):
        label = LabelSpec(explainer="baseline", explainer_options=options, scorers=["simulation", "embedding"],
                          control=True)
        spec = make_job_spec(store_path, label, settings)
        spec.chunk_size = 12
        job = runner.run(runner.create_job(spec, features))
        assert job.sae_id == sae_id
        assert job.counts["done"] - job.counts["reused"] > 0, f"pipeline labeled nothing: {job.errors}"
    repo.close()
    return LabeledDb(url=url, store_path=store_path, sae_id=sae_id, model_slug=slugify(store.model_name),
                     sae_slug=slugify(store.sae_name), features=features)
