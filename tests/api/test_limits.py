"""Bad input the API must refuse with a 4xx, never a 5xx or a server that balloons: integers
past the database's, feature ranges far larger than the SAE, bodies over the size cap; and
what readers must not see (the server's paths)."""

from __future__ import annotations

import json
import tracemalloc

from pathlib import Path

import pytest

from labeler.core.config import Settings

from .conftest import WRITE_KEY

HUGE = 99999999999999999999  # past int64: SQLite raised OverflowError on it (a 500)
KEY = {"X-API-Key": WRITE_KEY}


def base(repo, sae_id) -> str:
    info = repo.catalog.sae(sae_id)
    return f"{info.model}/{info.sae}"


@pytest.fixture
def capped(api, tmp_path):
    """A second app on the same database with small caps: 2000-byte bodies, 4 features a job."""
    from fastapi.testclient import TestClient

    from labeler.api.app import create_app

    _, repo, sae_id = api
    settings = Settings(api_write_key=WRITE_KEY, data_dir=tmp_path, api_max_body_bytes=2000,
                        api_max_job_features=4)
    with TestClient(create_app(settings, repo=repo)) as client:
        yield client, repo, sae_id


def test_integers_past_the_database_are_422(api):
    client, repo, sae_id = api
    b = base(repo, sae_id)
    for url in (f"/features/{b}/9223372036854775808", f"/v1/features/{b}/9223372036854775808",
                f"/features/{b}?page={HUGE}", f"/v1/features/{b}/{HUGE}/neighbours",
                f"/v1/features/{b}?offset={HUGE}"):
        r = client.get(url)
        assert r.status_code == 422, (url, r.status_code, r.text[:300])
    r = client.post(f"/v1/features/{b}/batch", json={"indices": [HUGE]})
    assert r.status_code == 422 and "indices" in r.json()["message"]
    r = client.post(f"/features/{b}/{HUGE}/activations", content="text=hi")
    assert r.status_code == 422
    r = client.post("/v1/jobs", headers=KEY, json={"model": repo.catalog.sae(sae_id).model,
                                                   "sae": repo.catalog.sae(sae_id).sae, "features": [HUGE]})
    assert r.status_code == 422


def test_a_range_far_larger_than_the_sae_is_refused_without_building_it(api, tiny_store_path):
    client, repo, sae_id = api
    tracemalloc.start()
    try:
        r = client.post("/v1/jobs", headers=KEY, json={"store_path": str(tiny_store_path), "features": "0:30000000"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 400 and "out of range" in r.json()["detail"] and "16 features" in r.json()["detail"]
    assert peak < 20_000_000, f"refusing the range allocated {peak / 1e6:.0f} MB"  # main: over 1 GB
    info = repo.catalog.sae(sae_id)
    r = client.post("/v1/jobs", headers=KEY, json={"model": info.model, "sae": info.sae, "features": ""})
    assert r.status_code == 400 and "empty" in r.json()["detail"]


def test_too_many_features_for_one_job_is_413(capped, tiny_store_path):
    client, _, _ = capped
    r = client.post("/v1/jobs", headers=KEY, json={"store_path": str(tiny_store_path), "features": "0:5"})
    assert r.status_code == 413
    assert "5 features" in r.json()["detail"] and "LABELER_API_MAX_JOB_FEATURES" in r.json()["detail"]
    r = client.post("/v1/jobs", headers=KEY, json={"store_path": str(tiny_store_path), "features": [0, 1, 2, 3, 4]})
    assert r.status_code == 413


def test_a_body_over_the_cap_is_413_declared_or_streamed(capped):
    client, repo, sae_id = capped
    url = f"/v1/features/{base(repo, sae_id)}/batch"
    big = json.dumps({"indices": list(range(900))}).encode()
    assert len(big) > 2000
    r = client.post(url, content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "LABELER_API_MAX_BODY_BYTES" in r.json()["detail"]

    def chunks():  # no Content-Length: the cap counts what arrives
        for i in range(0, len(big), 500):
            yield big[i:i + 500]

    r = client.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "2000 bytes" in r.json()["detail"]
    r = client.post(f"/features/{base(repo, sae_id)}/1/activations", content=b"text=" + b"a" * 3000)
    assert r.status_code == 413
    small = client.post(url, json={"indices": [1, 2]})
    assert small.status_code == 200 and [f["index"] for f in small.json()["items"]] == [1, 2]


def test_readers_do_not_see_server_paths(api, tiny_store_path):
    client, repo, sae_id = api
    from labeler.runs.spec import LabelSpec, make_job_spec

    runner = client.app.state.runner
    job_id = runner.create_job(make_job_spec(tiny_store_path, LabelSpec(explainer="baseline"), runner.settings), [1])
    spec_store = str(runner.repo.jobs.info(job_id).spec["store"])
    repo.jobs.mark_feature(job_id, 1, "failed", error=f"InputError: store {spec_store}: shard is corrupt")
    for url in ("/v1/saes", f"/v1/jobs/{job_id}", "/v1/jobs", f"/v1/models/{repo.catalog.sae(sae_id).model}/saes"):
        text = client.get(url).text
        assert str(tiny_store_path) not in text and "store_path" not in text, url
    spec = client.get(f"/v1/jobs/{job_id}").json()["spec"]
    assert "store" not in spec and spec["label"]["explainer"] == "baseline"
    assert client.get(f"/v1/jobs/{job_id}").json()["errors"][0]["error"] == "InputError: store <store>: shard is corrupt"
    # the Neuronpedia export is meant to be published: the corpus is named, its server path is not
    import gzip
    import io
    import tarfile

    from labeler.examples.store import FeatureStore

    corpus = FeatureStore(tiny_store_path).manifest["corpus"]["source"]
    assert corpus.startswith("/")
    info = repo.catalog.sae(sae_id)
    r = client.get(f"/v1/export/{info.model}/{info.sae}", params={"format": "neuronpedia"})
    assert r.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    texts = {k: (gzip.decompress(v) if k.endswith(".gz") else v).decode() for k, v in files.items()}
    leaks = [k for k, t in texts.items() if str(tiny_store_path) in t or str(Path(corpus).parent) in t]
    assert not leaks, leaks
    source = next(json.loads(t.splitlines()[0]) for k, t in texts.items() if k.endswith("source.jsonl"))
    assert source["dataset"] == Path(corpus).name
