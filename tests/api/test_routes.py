"""Every route of the REST API against SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest

from labeler.db.engine import head_revision

from .conftest import WRITE_KEY


def base(repo, sae_id) -> str:
    info = repo.catalog.sae(sae_id)
    return f"{info.model}/{info.sae}"


def test_health_version_openapi(api):
    client, repo, _ = api
    assert client.get("/health").json()["status"] == "ok"
    v = client.get("/version").json()
    assert v["version"] and v["schema_revision"] == head_revision() == "0009"
    spec = client.get("/openapi.json").json()
    assert "/v1/features/{model}/{sae}/{index}" in spec["paths"]
    assert "X-API-Key" in json.dumps(spec["components"]["securitySchemes"])


def test_catalog(api):
    client, repo, sae_id = api
    info = repo.catalog.sae(sae_id)
    models = client.get("/v1/models").json()
    assert [m["model"] for m in models["items"]] == [info.model]
    assert models["items"][0]["n_saes"] == 1
    saes = client.get("/v1/saes").json()["items"]
    assert saes[0]["sae"] == info.sae and saes[0]["n_features"] == 16
    assert "store_path" not in saes[0]  # the server's filesystem is not the reader's business
    assert client.get(f"/v1/models/{info.model}/saes").json()["items"][0]["sae"] == info.sae
    assert client.get("/v1/saes", params={"model": "nope"}).json()["items"] == []
    r = client.get("/v1/models/nope/saes")
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    assert client.get("/v1/models", params={"limit": 0}).status_code == 422
    assert client.get("/v1/models", params={"limit": 5000}).status_code == 422


def test_get_one_feature(api):
    client, repo, sae_id = api
    b = base(repo, sae_id)
    r = client.get(f"/v1/features/{b}/1")
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["index"] == 1
    assert f["label"]["text"] == "the Golden Gate Bridge and other bridges"
    assert f["label"]["method"] == "simulation" and f["label"]["score"] == pytest.approx(0.1)
    assert f["stats"]["count"] is not None and "hist_counts" in f["stats"]
    assert f["explanations"][0]["scores"][0]["method"] == "simulation"
    assert f["contexts"], f.get("contexts_error")  # top contexts read from the real store
    acts = [c["max_activation"] for c in f["contexts"]]
    assert acts == sorted(acts, reverse=True)
    assert len(f["contexts"][0]["tokens"]) == len(f["contexts"][0]["activations"])
    assert client.get(f"/v1/features/{b}/1", params={"contexts": 0}).json()["contexts"] is None
    # per-example score details only when asked for (the field is always there, null otherwise)
    assert f["explanations"][0]["scores"][0]["details"] is None
    d = client.get(f"/v1/features/{b}/1", params={"details": True}).json()
    assert d["explanations"][0]["scores"][0]["details"] is not None
    # a failed explanation is shown as such, and is no label
    f4 = client.get(f"/v1/features/{b}/4").json()
    assert f4["label"] is None and f4["explanations"][0]["failed"] and f4["explanations"][0]["error"] == "boom"
    # unlabeled feature: stats only
    f0 = client.get(f"/v1/features/{b}/0").json()
    assert f0["explanations"] == [] and f0["label"] is None


def test_get_one_feature_errors(api):
    client, repo, sae_id = api
    b = base(repo, sae_id)
    r = client.get(f"/v1/features/{b}/999")
    assert r.status_code == 404 and "16 features" in r.json()["detail"]
    assert client.get("/v1/features/nope/nope/1").status_code == 404
    r = client.get(f"/v1/features/{b}/-1")
    assert r.status_code == 422 and "index" in r.json()["message"]
    assert client.get(f"/v1/features/{b}/abc").status_code == 422
    assert client.get(f"/v1/features/{b}/99999999999999").status_code == 422


def test_batch(api):
    client, repo, sae_id = api
    b = base(repo, sae_id)
    r = client.post(f"/v1/features/{b}/batch", json={"indices": [3, 1, 999, 3]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [f["index"] for f in body["items"]] == [3, 1]
    assert body["missing"] == [999]
    with_ctx = client.post(f"/v1/features/{b}/batch", params={"contexts": 2}, json={"indices": [2]}).json()
    assert len(with_ctx["items"][0]["contexts"]) <= 2 and with_ctx["items"][0]["contexts"]
    assert client.post(f"/v1/features/{b}/batch", json={"indices": []}).status_code == 422
    assert client.post(f"/v1/features/{b}/batch", json={"indices": list(range(1001))}).status_code == 422
    assert client.post(f"/v1/features/{b}/batch", json={"indices": [-1]}).status_code == 422
    assert client.post(f"/v1/features/{b}/batch", json={"nope": 1}).status_code == 422


def test_list_features(api):
    client, repo, sae_id = api
    b = base(repo, sae_id)
    idx = lambda r: [f["index"] for f in r.json()["items"]]  # noqa: E731
    r = client.get(f"/v1/features/{b}", params={"limit": 5})
    assert idx(r) == [0, 1, 2, 3, 4] and r.json()["next_offset"] == 5
    r = client.get(f"/v1/features/{b}", params={"limit": 5, "offset": 15})
    assert idx(r) == [15] and r.json()["next_offset"] is None
    assert idx(client.get(f"/v1/features/{b}", params={"has_label": True, "sort": "-score"})) == [3, 2, 1]
    assert idx(client.get(f"/v1/features/{b}", params={"min_score": 0.15, "max_score": 0.25})) == [2]
    assert idx(client.get(f"/v1/features/{b}", params={"method": "simulation", "min_score": 0.25})) == [3]
    assert idx(client.get(f"/v1/features/{b}", params={"method": "detection"})) == []
    dens = client.get(f"/v1/features/{b}", params={"sort": "-density", "limit": 16}).json()["items"]
    values = [f["stats"]["density"] for f in dens]
    assert values == sorted(values, reverse=True)
    r = client.get(f"/v1/features/{b}", params={"sort": "colour"})
    assert r.status_code == 422
    assert client.get(f"/v1/features/{b}", params={"min_density": 2}).status_code == 422


def test_search(api):
    client, repo, sae_id = api
    info = repo.catalog.sae(sae_id)
    r = client.get("/v1/search", params={"q": "bridges"})
    assert r.status_code == 200, r.text
    hits = r.json()["items"]
    assert [h["index"] for h in hits] == [1] and hits[0]["is_label"]
    r = client.get("/v1/search", params={"q": "function", "model": info.model, "sae": info.sae})
    assert [h["index"] for h in r.json()["items"]] == [2]
    repo.search.embed_missing(client.app.state.embedder.get())  # `labeler db embed`: never inside a GET
    r = client.get("/v1/search", params={"q": "golden gate", "mode": "semantic", "limit": 2})
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["index"] == 1 and r.json()["mode"] == "semantic"
    assert client.get("/v1/search", params={"q": ""}).status_code == 422
    assert client.get("/v1/search", params={"q": "   "}).status_code == 422
    assert client.get("/v1/search", params={"q": "x", "model": info.model}).status_code == 422
    assert client.get("/v1/search", params={"q": "x", "model": "a", "sae": "b"}).status_code == 404
    assert client.get("/v1/search", params={"q": "x", "mode": "magic"}).status_code == 422
    assert client.get("/v1/search", params={"q": '"( AND'}).status_code == 200


def test_jobs_need_the_write_key(api):
    client, repo, sae_id = api
    info = repo.catalog.sae(sae_id)
    body = {"model": info.model, "sae": info.sae, "features": "0:2", "spec": {"explainer": "baseline"}}
    assert client.post("/v1/jobs", json=body).status_code == 401
    assert client.post("/v1/jobs", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/v1/jobs/1/cancel").status_code == 401
    h = {"X-API-Key": WRITE_KEY}
    assert client.post("/v1/jobs", json={"features": "0:2"}, headers=h).status_code == 422
    r = client.post("/v1/jobs", json={**body, "features": "0:99"}, headers=h)
    assert r.status_code == 400 and "out of range" in r.json()["detail"]
    r = client.post("/v1/jobs", json={**body, "spec": {"colour": "red"}}, headers=h)
    assert r.status_code == 400 and "colour" in r.json()["detail"]
    assert client.get("/v1/jobs/12345").status_code == 404
    assert client.get("/v1/jobs/0").status_code == 422
    assert client.post("/v1/jobs/12345/cancel", headers=h).status_code == 404


def test_submit_follow_and_cancel_a_job(api, redis_url, monkeypatch):
    _, repo, sae_id = api
    from fastapi.testclient import TestClient

    from labeler.api.app import create_app
    from labeler.core.config import get_settings, reset_settings

    # The app binds its runner (and the runner its queue) when it is created: an app of its own,
    # on the same repository, created with Redis configured.
    monkeypatch.setenv("LABELER_REDIS_URL", redis_url)
    reset_settings()
    info = repo.catalog.sae(sae_id)
    h = {"X-API-Key": WRITE_KEY}
    with TestClient(create_app(get_settings(), repo=repo)) as client:
        r = client.post("/v1/jobs", json={"model": info.model, "sae": info.sae, "features": [5, 6, 7],
                                          "spec": {"explainer": "baseline", "scorers": ["simulation"]}}, headers=h)
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["n_features"] == 3 and job["counts"]["pending"] == 3
        import redis

        assert redis.Redis.from_url(redis_url).llen("labeler") >= 1  # chunks were queued for workers
        followed = client.get(f"/v1/jobs/{job['id']}").json()
        assert followed["id"] == job["id"] and followed["status"] in ("pending", "running")
        assert [j["id"] for j in client.get("/v1/jobs").json()["items"]] == [job["id"]]
        r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=h)
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert client.get("/v1/jobs", params={"status": "cancelled"}).json()["items"][0]["id"] == job["id"]
        assert client.get("/v1/jobs", params={"status": "weird"}).status_code == 422


def test_writes_disabled_without_a_configured_key(api):
    client, _, _ = api
    client.app.state.settings = client.app.state.settings.model_copy(update={"api_write_key": None})
    r = client.post("/v1/jobs", json={"features": "0:1"}, headers={"X-API-Key": "anything"})
    assert r.status_code == 403 and "LABELER_API_WRITE_KEY" in r.json()["detail"]


def test_read_key(api):
    client, repo, sae_id = api
    client.app.state.settings = client.app.state.settings.model_copy(update={"api_read_key": "reader"})
    b = base(repo, sae_id)
    assert client.get(f"/v1/features/{b}/1").status_code == 401
    assert client.get("/v1/models").status_code == 401
    assert client.get(f"/v1/features/{b}/1", headers={"X-API-Key": "reader"}).status_code == 200
    assert client.get("/v1/models", headers={"X-API-Key": WRITE_KEY}).status_code == 200  # writers may read
    assert client.get("/health").status_code == 200  # monitors need no key
