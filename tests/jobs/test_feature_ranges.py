"""``parse_feature_range``: lazy, bounds checked before anything is built, "" refused."""

from __future__ import annotations

import tracemalloc

import pytest

from labeler.core.errors import ConfigError
from labeler.core.naming import FeatureSelection, parse_feature_range


def test_forms_sorted_distinct_and_sequence_behaviour():
    sel = parse_feature_range("200:203, 7,1,0:3,2", 1000)
    assert list(sel) == [0, 1, 2, 7, 200, 201, 202] and len(sel) == 7
    assert sel[3] == 7 and sel[-1] == 202 and sel[1:3] == [1, 2] and 201 in sel and 150 not in sel
    assert sel == [0, 1, 2, 7, 200, 201, 202]
    assert list(parse_feature_range("all", 4)) == [0, 1, 2, 3] and list(parse_feature_range("2:", 4)) == [2, 3]
    assert list(parse_feature_range("5:5", 10)) == []  # an empty part is allowed; the job refuses no features


def test_a_range_past_the_sae_is_refused_without_allocating_it():
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match="feature index 16 is out of range: the SAE has 16 features"):
            parse_feature_range("0:10000000", 16)
        huge = parse_feature_range("0:1000000000")  # no bound given: still two integers
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(huge) == 10**9 and huge[-1] == 10**9 - 1 and isinstance(huge, FeatureSelection)
    assert peak < 1_000_000, peak


@pytest.mark.parametrize("spec,message", [("", "empty"), ("  ", "empty"), ("5:3", "backwards"), ("-1", ">= 0"),
                                          ("a:b", "cannot parse"), ("3:", "open end")])
def test_bad_ranges_say_why(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_feature_range(spec)
