"""labeler.testing helpers other areas build on."""

from __future__ import annotations

from labeler.examples import FeatureStore
from labeler.testing import make_tiny_store


def test_make_tiny_store_gives_usable_features(tmp_path):
    path = make_tiny_store(tmp_path / "store", workdir=tmp_path / "inputs")
    store = FeatureStore(path)
    assert store.n_features == 64 and store.manifest["status"] == "complete"
    stats = store.all_stats()
    assert (stats["count"] > 0).sum() > 32  # most features fire somewhere
    rec = store.feature(int(stats["count"].argmax()))
    for split in ("train", "valid", "test"):
        assert rec.select(split, "top"), split
    assert rec.select("train", "sample") and rec.select("test", "nonactivating")
    top = rec.select("train", "top")
    assert [e.max_activation for e in top] == sorted((e.max_activation for e in top), reverse=True)
    assert rec.promoted_tokens
    # a second call reuses the finished store
    assert make_tiny_store(tmp_path / "store", workdir=tmp_path / "inputs") == path
