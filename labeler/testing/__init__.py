"""Helpers for tests, benchmarks and demos: tiny models, tiny stores, hand-built records."""

from labeler.testing.records import make_feature_record

__all__ = ["make_feature_record"]
