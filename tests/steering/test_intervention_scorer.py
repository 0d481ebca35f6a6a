"""The intervention scorer end to end: the real subject model steered on neutral prompts, the
real openai client over HTTP to labeler's LLM test server (with the intervention oracle), and
through a job of the runner, which hands the scorer the store's model."""

from __future__ import annotations

import json

import pytest

from labeler.core.errors import ConfigError, InputError
from labeler.examples.store import FeatureStore
from labeler.llm import LLMClient, reset_process_state
from labeler.scoring import get_scorer
from labeler.testing.intervention_oracle import install_intervention_rule, is_intervention
from labeler.testing.llm_server import TestLLMServer, prompt_text

pytestmark = pytest.mark.filterwarnings("ignore:no price known")
KL_TARGET = 2.0  # the tiny model's output is steerable to this without saturating


@pytest.fixture(params=["on", "ignore"], ids=["logprobs", "no-logprobs"])
def server(request):
    reset_process_state()
    with TestLLMServer(logprobs_mode=request.param) as s:
        install_intervention_rule(s)
        s.logprobs_on = request.param == "on"
        yield s
    reset_process_state()


def _client(server) -> LLMClient:
    return LLMClient(model="test-model", base_url=server.base_url, api_key="x", role="scorer", cache=False,
                     max_retries=0)


async def test_intervention_scores_the_planted_feature_and_counts_calls_and_tokens(server, subject, steer_store):
    store = FeatureStore(steer_store.path)
    record = store.feature(steer_store.planted)
    scorer = get_scorer("intervention", _client(server), subject=subject, kl_target=KL_TARGET)
    word = steer_store.word.strip()
    real = await scorer.score(record, f'the word "{word}"')
    assert not real.failed, real.error
    assert (real.prompt_name, real.prompt_version) == ("score_intervention", "v1")
    # every judged pair in one call; the calls and tokens are counted
    asked = [r for r in server.requests if is_intervention(r)]
    assert real.usage.calls == 1 == len(asked)
    assert real.usage.prompt_tokens > 100 and real.usage.completion_tokens > 0
    d = real.details
    assert d["kl_reached"] and d["kl"] == pytest.approx(KL_TARGET, rel=0.05) and d["strength"] > 0
    assert d["strength_trace"][-1][0] > 0 and real.metrics["strength"] == d["strength"]
    assert len(d["pairs"]) == 8 and real.metrics["n_judged"] == sum(not p["identical"] for p in d["pairs"])
    sent = prompt_text(asked[0])
    for p in d["pairs"]:  # identical pairs are not sent: they count 0.5
        assert (json.dumps(p["steered"], ensure_ascii=False) in sent) is not p["identical"]
    assert real.value >= 0.75, d["pairs"]  # the steered continuations say "return"
    assert {p["steered_position"] for p in d["pairs"]} == {1, 2}  # the order is shuffled
    if server.logprobs_on:
        assert d["mode"] == "logprobs" and 0.5 < real.metrics["steered_win_rate_soft"] < real.value
    else:
        assert d["mode"] == "answers" and real.metrics["steered_win_rate_soft"] is None

    control = await scorer.score(record, 'the word "zebra"', control=True)
    assert control.control and not control.failed
    shown = ("prompt", "steered", "unsteered", "steered_position")
    assert [[p[k] for k in shown] for p in control.details["pairs"]] == [[p[k] for k in shown] for p in d["pairs"]]
    assert control.details["strength"] == d["strength"]  # the steering was computed once, reused
    assert control.value < real.value


async def test_a_feature_that_moves_nothing_scores_chance_without_a_call(server, subject, steer_store):
    record = FeatureStore(steer_store.path).feature(steer_store.planted)
    scorer = get_scorer("intervention", _client(server), subject=subject, kl_target=50.0, max_strength=1e-4,
                        n_prompts=3)
    res = await scorer.score(record, "anything")
    assert not res.failed and res.value == 0.5 and res.usage.calls == 0
    assert not res.details["kl_reached"] and all(p["identical"] for p in res.details["pairs"])


def test_the_scorer_needs_a_decoder_subject(subject, encoder_store):
    from labeler.core.config import Settings
    from labeler.runs.subjects import SubjectCache

    llm = LLMClient(model="m", base_url="http://127.0.0.1:9/v1", api_key="x", role="scorer")
    with pytest.raises(ConfigError, match="subject model"):
        get_scorer("intervention", llm)
    bert = SubjectCache(Settings(device="cpu")).get(FeatureStore(encoder_store))
    with pytest.raises(InputError, match="encoder"):
        get_scorer("intervention", llm, subject=bert)
    with pytest.raises(ConfigError, match="kl_target"):
        get_scorer("intervention", llm, subject=subject, kl_target=0.0)
    with pytest.raises(ConfigError, match="unknown option"):
        get_scorer("intervention", llm, subject=subject, strength=3)


def test_a_job_hands_the_scorer_the_stores_model(monkeypatch, tmp_path, steer_store):
    """Through the runner: build_stages gives the scorer the store's subject model (the scorer
    class asks for it; the runner tests no name), scores land in the database with their
    strength and KL, and the job's usage counts the judge's calls and tokens."""
    from labeler.core.config import get_settings, reset_settings
    from labeler.db import Repository
    from labeler.runs.runner import Runner
    from labeler.runs.spec import LabelSpec, make_job_spec

    reset_process_state()
    with TestLLMServer() as server:
        install_intervention_rule(server)
        monkeypatch.setenv("LABELER_SCORER_BASE_URL", server.base_url)
        monkeypatch.setenv("LABELER_SCORER_API_KEY", "x")
        monkeypatch.setenv("LABELER_SCORER_MODEL", "test-model")
        monkeypatch.setenv("LABELER_LLM_CACHE", "false")
        monkeypatch.setenv("LABELER_DEVICE", "cpu")
        reset_settings()
        repo = Repository.open(f"sqlite:///{tmp_path / 'labeler.db'}")
        runner = Runner(repo, get_settings())
        store = runner.stores.get(steer_store.path)
        features = [f for f in range(store.n_features) if store.feature(f).select("train", "top")][:4]
        label = LabelSpec(explainer="baseline", scorers=["intervention"],
                          scorer_options={"intervention": {"kl_target": KL_TARGET, "n_prompts": 4}})
        spec = make_job_spec(steer_store.path, label, runner.settings)
        info = runner.run(runner.create_job(spec, features))
        assert info.counts["done"] == len(features), info.errors
        assert runner.subjects.loaded_model == store.manifest["model"]["path_or_id"]
        judged = [r for r in server.requests if is_intervention(r)]
        assert judged and info.tokens["calls"] == len(judged) and info.tokens["prompt"] > 0 and info.tokens["completion"] > 0
        sae_id = repo.catalog.sae_id_for_store(store)
        for f in features:
            view = repo.reads.feature(sae_id, f, with_details=True)
            scores = [s for e in view.explanations for s in e.scores if s.method == "intervention"]
            assert len(scores) == 1 and scores[0].value is not None
            assert scores[0].details["kl"] == pytest.approx(KL_TARGET, rel=0.05) or not scores[0].details["kl_reached"]
        repo.close()
    reset_process_state()
