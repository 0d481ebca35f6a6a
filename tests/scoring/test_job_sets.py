"""A real job from the CLI (subprocess) through the LLM test server: explainer sampling and hard
negatives reach the stored explanations and scores, whose details say which sets were used."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from labeler.testing.llm_server import TestLLMServer
from labeler.testing.oracle import install_scoring_rules

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    from labeler.testing.tiny import make_tiny_store

    return make_tiny_store(tmp_path_factory.mktemp("sets-store") / "store", n_features=24)


def test_job_with_quantile_sampling_and_hard_negatives(tiny_store, tmp_path):
    from labeler.db import Repository
    from labeler.examples.store import FeatureStore

    store = FeatureStore(tiny_store)
    # features with quantile strata to sample from and hard negatives in the scored split
    # (feature 0 of the tiny store has none: its detection:hard would use 0, vacuously)
    alive = [i for i in range(store.n_features)
             if store.feature(i).select("train", "quantile") and store.feature(i).select("test", "hard_negative")][:3]
    assert len(alive) == 3, "tiny store has too few features with quantile strata and hard negatives"
    url = f"sqlite:///{tmp_path / 'sets.db'}"
    with TestLLMServer() as server:
        install_scoring_rules(server)
        env = dict(os.environ, OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="x", LABELER_DATABASE_URL=url)
        out = subprocess.run([sys.executable, "-m", "labeler", "label", str(tiny_store), "--features",
                              ",".join(map(str, alive)), "--explainer", "highlighted", "--explainer-sampling",
                              "quantiles", "--negatives", "hard", "--scorers", "simulation,detection", "--json"],
                             capture_output=True, text=True, env=env, timeout=240)
        assert out.returncode == 0, out.stderr
        info = json.loads(out.stdout)
        assert info["spec"]["label"]["scorers"] == ["simulation", "detection", "detection:hard"]
        assert info["spec"]["label"]["explainer_options"] == {"sampling": "quantiles"}
    repo = Repository(url)
    sae = repo.catalog.list_saes()[0]
    results = repo.reads.results(sae.id, alive)
    assert {e.feature for e in results.explanations} == set(alive)
    for f in alive:
        rec = store.feature(f)
        exp = repo.reads.feature(sae.id, f, with_details=True).explanations[0]
        assert exp.prompt_version == "v2"
        # the explainer was shown quantile-sampled train windows: every stratum, not just the top
        strata = {e.window: e.quantile for e in rec.select("train", "quantile")}
        top = [e.window for e in rec.select("train", "top")]
        assert len(exp.example_windows) == 10 and set(exp.example_windows) <= set(strata) | set(top)
        assert {strata.get(w) for w in exp.example_windows} >= set(strata.values())
        assert exp.example_windows != top[:10]
        scores = {s.method: s for s in exp.scores if not s.control}
        assert set(scores) == {"simulation", "detection", "detection:hard"}
        sim_sets = scores["simulation"].details["sets"]
        assert set(sim_sets) >= {"top"} and any(k in sim_sets for k in ("random", "sample"))
        assert scores["detection"].details["negatives"] == "random" and "nonactivating" in scores["detection"].details["sets"]
        hard = scores["detection:hard"]
        assert hard.details["negatives"] == "hard"
        used = hard.details["sets"]["hard_negative"]["got"]
        assert used > 0  # hard negatives were actually shown, not only asked for
        stored = {e.window for e in rec.examples if e.kind == "hard_negative" and e.split != "train"}
        assert len(set(hard.example_windows) & stored) == used
    repo.close()
