"""Fixtures for the storage tests: an upgraded repository on SQLite and on PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest

from labeler.records import FeatureStats


class DuckStore:
    """The part of labeler.examples.store.FeatureStore that register_store reads."""

    def __init__(self, n_features: int = 8, model: str = "Org/Tiny-Model", sae: str = "res 0",
                 path: str = "/stores/duck"):
        self.n_features = n_features
        self.model_name = model
        self.sae_name = sae
        self.path = path
        self.manifest = {"status": "complete", "model": {"name": model, "path_or_id": "org/tiny", "hook": "h.0"},
                         "sae": {"name": sae, "format": "saelens", "n_features": n_features}}

    def all_stats(self) -> dict[str, np.ndarray]:
        n = self.n_features
        return {"count": np.arange(n) * 10, "density": np.linspace(0.0, 0.7, n),
                "max": np.arange(n, dtype=np.float32) + 1.0, "mean": np.full(n, 0.25, dtype=np.float32)}

    def decoder_directions(self):
        return None  # a neuron basis: no nearest features

    def neighbours(self):
        return None  # a neuron basis: no decoder, no neighbours

    def features(self, indices):
        from labeler.records import FeatureRecord

        for i in indices:
            yield FeatureRecord(feature=i, stats=FeatureStats(count=i * 10, tokens_seen=100, max=i + 1.0, mean=0.25,
                                                              hist_edges=[0.0, 1.0, 2.0], hist_counts=[i, 1]))


@pytest.fixture
def duck_store() -> DuckStore:
    return DuckStore()


@pytest.fixture
def repo(database_url):
    from labeler.db import Repository

    r = Repository(database_url)
    r.db.upgrade()
    yield r
    r.close()
