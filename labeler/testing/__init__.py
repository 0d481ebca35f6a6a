"""Helpers for tests, benchmarks and demos: tiny models, tiny stores, hand-built records."""

from labeler.testing.records import make_feature_record
from labeler.testing.tiny import make_tiny_model, make_tiny_sae, make_tiny_store, write_tiny_corpus

__all__ = ["make_feature_record", "make_tiny_model", "make_tiny_sae", "make_tiny_store", "write_tiny_corpus"]
