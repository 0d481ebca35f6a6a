"""The evaluation harness on a tiny config: seeded sample, several configurations, one report."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from rich.console import Console

from labeler.core.config import get_settings
from labeler.core.errors import ConfigError, InputError
from labeler.runs.evaluate import load_eval_config, run_eval_file
from labeler.runs.sample import EvalSample, sample_features


def _config(tmp_path, store, **over) -> str:
    cfg = {
        "name": "tiny",
        "store": str(store),
        "sample": {"n": 10, "seed": 3, "min_count": 3},
        "scorers": ["simulation", "embedding"],
        "configurations": [
            {"name": "baseline", "explainer": "baseline"},
            {"name": "terse", "explainer": "baseline", "options": {"n_tokens": 1, "n_examples": 5}},
            {"name": "highlighted-llm", "explainer": "highlighted", "requires_llm": True},
        ],
        **over,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_sample_is_seeded_sorted_and_skips_dead_features():
    stats = {"count": np.array([0, 5, 5, 0, 5, 5, 5, 5, 1, 5])}
    a = sample_features(stats, 10, EvalSample(n=4, seed=1, min_count=3))
    assert a == sample_features(stats, 10, EvalSample(n=4, seed=1, min_count=3))
    assert a == sorted(a) and len(a) == 4 and not {0, 3, 8} & set(a)
    with pytest.raises(InputError, match="no feature fired"):
        sample_features(stats, 10, EvalSample(n=4, min_count=99))


def test_bad_configs_are_rejected_with_the_field_named(tmp_path, labeled_db):
    with pytest.raises(ConfigError, match="configurations"):
        load_eval_config(_config(tmp_path, labeled_db.store_path, configurations=[]))
    with pytest.raises(ConfigError, match="unique"):
        load_eval_config(_config(tmp_path, labeled_db.store_path, configurations=[
            {"name": "a", "explainer": "baseline"}, {"name": "a", "explainer": "baseline"}]))
    with pytest.raises(ConfigError, match="sample.n"):
        load_eval_config(_config(tmp_path, labeled_db.store_path, sample={"n": 0}))
    with pytest.raises(InputError, match="does not exist"):
        load_eval_config(tmp_path / "missing.yaml")


def test_eval_harness_compares_configurations_on_the_same_sample(tmp_path, labeled_db):
    cfg = _config(tmp_path, labeled_db.store_path)
    res = run_eval_file(cfg, get_settings(), Console(), out=tmp_path / "out")
    assert res.ran == ["baseline", "terse"]
    assert "highlighted-llm" in res.skipped and "OPENAI" in res.skipped["highlighted-llm"]
    summary = json.loads(res.report.json.read_text())
    assert summary["configurations"] == ["baseline", "terse"]  # arms named after the config
    assert summary["n_features"] == len(res.features) == 10
    pairs = [p for p in summary["paired"] if p["method"] == "embedding"]
    assert pairs and pairs[0]["a"] == "baseline" and pairs[0]["b"] == "terse" and pairs[0]["n"] == 10
    html = res.report.html.read_text()
    assert "chance (shuffled explanations)" in html and "terse" in html
    sample = json.loads((tmp_path / "out" / "sample.json").read_text())
    assert sample["features"] == res.features

    # Same config again (through the CLI): same sample, finished work reused, same arms.
    again = subprocess.run([sys.executable, "-m", "labeler", "eval", "--config", cfg, "--out", str(tmp_path / "out")],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reused 10 features" in again.stdout
    summary2 = json.loads(res.report.json.read_text())
    assert summary2["configurations"] == ["baseline", "terse"]
    assert summary2["n_explanations"] == summary["n_explanations"]
