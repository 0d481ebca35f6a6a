"""POST /v1/steer, POST /v1/activations, the feature page's forms and the output tokens of
GET /v1/features, on a real app (SQLite) with the real tiny models: good and bad input."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass

import pytest

WRITE_KEY = "steer-key"


@dataclass
class Api:
    client: object
    repo: object
    slug: tuple[str, str]
    bert: tuple[str, str]
    gone: tuple[str, str]


def _slugs(store) -> tuple[str, str]:
    from labeler.core.naming import slugify

    return slugify(store.model_name), slugify(store.sae_name)


@pytest.fixture(scope="module")
def api(steer_store, encoder_store, tmp_path_factory):
    from fastapi.testclient import TestClient

    from labeler.api.app import create_app
    from labeler.core.config import Settings
    from labeler.db import Repository
    from labeler.examples.store import FeatureStore

    root = tmp_path_factory.mktemp("steer-api")
    gone = shutil.copytree(steer_store.path, root / "gone-store")  # its model is not on this machine
    manifest = json.loads((gone / "manifest.json").read_text())
    manifest["model"].update(name="gone-model", path_or_id=str(root / "no-such-model"))
    (gone / "manifest.json").write_text(json.dumps(manifest))
    repo = Repository.open(f"sqlite:///{root / 'labeler.db'}")
    stores = [FeatureStore(p) for p in (steer_store.path, encoder_store, gone)]
    for s in stores:
        repo.catalog.register_store(s)
    settings = Settings(api_write_key=WRITE_KEY, device="cpu", data_dir=root / "data")
    with TestClient(create_app(settings, repo=repo)) as client:
        yield Api(client, repo, *(_slugs(s) for s in stores))
    repo.close()


def _steer(api, slug=None, key=WRITE_KEY, **body):
    model, sae = slug or api.slug
    payload = {"model": model, "sae": sae, "feature": 5, "prompt": "I think that", **body}
    return api.client.post("/v1/steer", json=payload, headers={"X-API-Key": key} if key else {})


def test_steer_returns_steered_and_unsteered_continuations(api, steer_store, subject):
    from labeler.activations.steering import Intervention, steer

    r = _steer(api, feature=steer_store.planted, strength=10.0, max_new_tokens=8, temperature=0.0)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["mode"] == "add" and out["value"] == 10.0 and out["max_new_tokens"] == 8
    assert steer_store.word in out["steered"][0] and steer_store.word not in out["unsteered"][0]
    same = steer(subject, "I think that", Intervention(steer_store.planted, "add", 10.0), max_new_tokens=8,
                 temperature=0.0)
    assert (out["steered"], out["unsteered"]) == (same.steered, same.unsteered)
    clamp = _steer(api, feature=steer_store.planted, clamp=0.0, samples=2, seed=3).json()
    assert clamp["mode"] == "clamp" and len(clamp["steered"]) == len(clamp["unsteered"]) == 2


@pytest.mark.parametrize("body, where", [
    ({"strength": 1000.5}, "strength"), ({"clamp": -2000}, "clamp"), ({"strength": 1, "max_new_tokens": 65}, "max_new_tokens"),
    ({"strength": 1, "max_new_tokens": 0}, "max_new_tokens"), ({"strength": 1, "prompt": ""}, "prompt"),
    ({"strength": 1, "prompt": "x" * 2001}, "prompt"), ({"strength": 1, "samples": 5}, "samples"),
    ({"strength": 1, "temperature": -0.1}, "temperature"), ({}, "exactly one of"),
    ({"strength": 1, "clamp": 1}, "exactly one of"), ({"strength": 1, "feature": -1}, "feature"),
])
def test_out_of_bounds_input_is_a_422_naming_the_field(api, body, where):
    r = _steer(api, **body)
    assert r.status_code == 422 and where in r.json()["message"], r.text


def test_steering_errors_are_4xx_with_a_message(api):
    too_long = _steer(api, strength=1.0, prompt="a " * 999)  # within the characters, over the tokens
    assert too_long.status_code == 422 and "tokens long" in too_long.json()["detail"]
    unknown = _steer(api, strength=1.0, feature=10_000)
    assert unknown.status_code == 404 and "has no feature 10000" in unknown.json()["detail"]
    no_sae = _steer(api, slug=("nope", "nada"), strength=1.0)
    assert no_sae.status_code == 404 and "no SAE" in no_sae.json()["detail"]
    encoder = _steer(api, slug=api.bert, strength=1.0, feature=0)
    assert encoder.status_code == 422 and "encoder" in encoder.json()["detail"]
    gone = _steer(api, slug=api.gone, strength=1.0)
    assert gone.status_code == 422 and "cannot be loaded here" in gone.json()["detail"]
    assert _steer(api, key=None, strength=1.0).status_code == 401
    assert _steer(api, key="wrong", strength=1.0).status_code == 401


def test_steering_is_disabled_without_a_write_key(steer_store, tmp_path):
    from fastapi.testclient import TestClient

    from labeler.api.app import create_app
    from labeler.core.config import Settings
    from labeler.db import Repository

    repo = Repository.open(f"sqlite:///{tmp_path / 'labeler.db'}")
    with TestClient(create_app(Settings(data_dir=tmp_path), repo=repo)) as client:
        r = client.post("/v1/steer", json={"model": "m", "sae": "s", "feature": 1, "prompt": "x", "strength": 1})
    repo.close()
    assert r.status_code == 403 and "LABELER_API_WRITE_KEY" in r.json()["detail"]


def test_activations_on_your_text(api, subject):
    model, sae = api.slug
    r = api.client.post("/v1/activations", json={"model": model, "sae": sae, "feature": 3, "text": "def f(x): return x"})
    assert r.status_code == 200, r.text
    out = r.json()
    tokens, values = subject.activations("def f(x): return x", 3)
    assert (out["tokens"], out["activations"]) == (tokens, values) and "".join(tokens) == "def f(x): return x"
    assert out["max_activation"] == max(values)
    bert_model, bert_sae = api.bert
    enc = api.client.post("/v1/activations", json={"model": bert_model, "sae": bert_sae, "feature": 0,
                                                   "text": "the cat sat"})
    assert enc.status_code == 200 and enc.json()["tokens"]  # encoders can be read, not steered
    bad = api.client.post("/v1/activations", json={"model": model, "sae": sae, "feature": 99, "text": "x"})
    assert bad.status_code == 404
    empty = api.client.post("/v1/activations", json={"model": model, "sae": sae, "feature": 3, "text": ""})
    assert empty.status_code == 422


def test_features_carry_the_promoted_and_suppressed_tokens(api, steer_store):
    from labeler.examples.store import FeatureStore

    model, sae = api.slug
    record = FeatureStore(steer_store.path).feature(steer_store.planted)
    assert record.promoted_tokens and record.promoted_tokens[0] == steer_store.word  # the planted row's word
    for contexts in (0, 3):
        out = api.client.get(f"/v1/features/{model}/{sae}/{steer_store.planted}?contexts={contexts}").json()
        assert out["promoted_tokens"] == record.promoted_tokens
        assert out["suppressed_tokens"] == record.suppressed_tokens
        assert (out["contexts"] is None) == (contexts == 0)
    batch = api.client.post(f"/v1/features/{model}/{sae}/batch?contexts=1",
                            json={"indices": [steer_store.planted]}).json()
    assert batch["items"][0]["promoted_tokens"] == record.promoted_tokens
    page = api.client.get(f"/features/{model}/{sae}/{steer_store.planted}").text
    assert 'id="output-tokens"' in page and "return" in page


def test_the_page_forms_render_their_results(api, steer_store):
    model, sae = api.slug
    base = f"/features/{model}/{sae}/{steer_store.planted}"
    page = api.client.get(base).text
    assert 'id="steer-form"' in page and 'id="act-form"' in page and "<script" not in page
    ok = api.client.post(f"{base}/steer", data={"prompt": "I think that", "mode": "add", "value": "10",
                                                "max_new_tokens": "6", "temperature": "0", "api_key": WRITE_KEY})
    assert ok.status_code == 200 and 'id="steer-result"' in ok.text and "return" in ok.text
    assert WRITE_KEY not in ok.text  # the key is never echoed back
    bad_key = api.client.post(f"{base}/steer", data={"prompt": "x", "mode": "add", "value": "1", "api_key": "no"})
    assert bad_key.status_code == 401 and "valid X-API-Key" in bad_key.text
    bad_value = api.client.post(f"{base}/steer", data={"prompt": "x", "mode": "add", "value": "9999",
                                                       "api_key": WRITE_KEY})
    assert bad_value.status_code == 422
    assert re.search(r'id="steer-error">[^<]*less than or equal to 1000', bad_value.text)
    act = api.client.post(f"{base}/activations", data={"text": "def f(x): return x"})
    assert act.status_code == 200 and re.search(r'id="act-result">.*class="tok act"', act.text)
    assert ">def f(x): return x</textarea>" in act.text  # the box keeps the text
    missing = api.client.post(f"/features/{model}/{sae}/999/activations", data={"text": "x"})
    assert missing.status_code == 404
