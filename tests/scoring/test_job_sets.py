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
    alive = [i for i in range(store.n_features) if store.feature(i).select("train", "quantile")][:3]
    assert alive, "tiny store has no feature with quantile strata"
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
    view = repo.reads.feature(sae.id, alive[0], with_details=True)
    exp = view.explanations[0]
    assert exp.prompt_version == "v2"
    scores = {s.method: s for s in exp.scores if not s.control}
    assert set(scores) == {"simulation", "detection", "detection:hard"}
    sim_sets = scores["simulation"].details["sets"]
    assert set(sim_sets) >= {"top"} and any(k in sim_sets for k in ("random", "sample"))
    assert scores["detection"].details["negatives"] == "random" and "nonactivating" in scores["detection"].details["sets"]
    hard = scores["detection:hard"].details
    assert hard["negatives"] == "hard" and "hard_negative" in hard["sets"]
    repo.close()
