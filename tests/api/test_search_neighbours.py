"""Semantic search after `labeler db embed`, and nearest features served from the database."""

from __future__ import annotations

import shutil

from typer.testing import CliRunner


def base(repo, sae_id) -> str:
    info = repo.catalog.sae(sae_id)
    return f"{info.model}/{info.sae}"


def test_semantic_search_after_db_embed(api, database_url, isolated_settings):
    from labeler.cli import app

    client, repo, sae_id = api
    r = client.get("/v1/search", params={"q": "golden gate", "mode": "semantic"})
    assert r.status_code == 200 and r.json()["items"] == []  # nothing embedded: the GET embeds nothing

    res = CliRunner().invoke(app, ["db", "embed", "--url", database_url])
    assert res.exit_code == 0, res.output
    assert "embedded 3 explanations" in res.output and "3 vectors in a flat index" in res.output
    assert list((isolated_settings / "vector-index").rglob(f"sae{sae_id}-*.faiss"))  # saved for the server

    info = repo.catalog.sae(sae_id)
    for params in ({}, {"model": info.model, "sae": info.sae}):
        r = client.get("/v1/search", params={"q": "golden gate", "mode": "semantic", "limit": 2, **params})
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert [h["index"] for h in items][:1] == [1] and items[0]["score"] > items[1]["score"]
    assert client.get("/v1/search", params={"q": "x", "mode": "semantic", "offset": 9990,
                                            "limit": 20}).status_code == 400
    res = CliRunner().invoke(app, ["db", "embed", "--url", database_url, "--rebuild"])
    assert res.exit_code == 0 and "embedded 0 explanations" in res.output, res.output


def test_neighbours_endpoint(api):
    client, repo, sae_id = api
    b = base(repo, sae_id)
    r = client.get(f"/v1/features/{b}/1/neighbours", params={"limit": 5})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 5 and 1 not in [n["index"] for n in items]
    assert [n["cosine"] for n in items] == sorted((n["cosine"] for n in items), reverse=True)
    assert items == [{"index": i, "cosine": c, "label": repo.reads.labels_for(sae_id, [i]).get(i)}
                     for i, c in ((n["index"], n["cosine"]) for n in items)]
    assert len(client.get(f"/v1/features/{b}/1/neighbours").json()["items"]) == 10
    assert client.get(f"/v1/features/{b}/1/neighbours", params={"limit": 33}).status_code == 422
    assert client.get(f"/v1/features/{b}/999/neighbours").status_code == 404
    assert client.get("/v1/features/a/b/1/neighbours").status_code == 404


def test_feature_page_neighbours_need_no_store(database_url, tiny_store_path, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from labeler.api.app import create_app
    from labeler.core.config import get_settings, reset_settings
    from labeler.db import Repository
    from labeler.examples.store import FeatureStore

    monkeypatch.setenv("LABELER_DATABASE_URL", database_url)
    reset_settings()
    copy = tmp_path / "store"
    shutil.copytree(tiny_store_path, copy)
    repo = Repository.open(database_url)
    sae_id = repo.catalog.register_store(FeatureStore(copy))
    expected = repo.neighbours.of(sae_id, 2, limit=10)
    shutil.rmtree(copy)  # the server cannot read the store (it lives on another machine)
    with TestClient(create_app(get_settings(), repo=repo)) as client:
        page = client.get(f"/features/{base(repo, sae_id)}/2")
    assert page.status_code == 200
    assert 'id="neighbours"' in page.text and len(expected) == 10
    for index, _ in expected:
        assert f'/features/{base(repo, sae_id)}/{index}"' in page.text
    repo.close()
