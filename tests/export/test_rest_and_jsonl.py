"""`labeler export` and `GET /v1/export/...` write the same content: labeler's JSONL of
everything, and Neuronpedia's layout (a tar archive over REST)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest


@pytest.fixture
def client(labeled):
    from fastapi.testclient import TestClient

    from labeler.api.app import create_app
    from labeler.core.config import get_settings

    repo, sae_id, _, _ = labeled
    with TestClient(create_app(get_settings(), repo=repo)) as c:
        yield c, repo, sae_id


def run_cli(*args: str) -> None:
    from labeler.cli import main

    with pytest.raises(SystemExit) as e:
        main(["export", *args])
    assert e.value.code in (0, None)


def test_the_jsonl_of_everything(client, tmp_path):
    c, repo, sae_id = client
    info = repo.catalog.sae(sae_id)
    r = c.get(f"/v1/export/{info.model}/{info.sae}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert [x["index"] for x in rows] == list(range(24))
    two = rows[2]
    assert two["label"] == "the word number 2.\nsecond line" and two["label_method"] == "simulation"
    assert two["stats"]["density"] == pytest.approx(two["density"]) and "hist_counts" in two["stats"]
    highlighted = next(e for e in two["explanations"] if e["explainer"] == "highlighted")
    assert highlighted["prompt_name"] == "explain_highlighted" and highlighted["llm_model"] == "openai/gpt-4o-mini"
    methods = sorted((s["method"], s["control"], s["failed"]) for s in highlighted["scores"])
    assert methods == [("detection", False, False), ("detection", True, False), ("fuzzing", False, True),
                       ("simulation", False, False)]  # everything, controls and failures included
    five = rows[5]
    assert any(e["failed"] and e["error"] == "boom" for e in five["explanations"])
    labeled = [json.loads(x) for x in c.get(f"/v1/export/{info.model}/{info.sae}",
                                            params={"labeled_only": True}).text.splitlines()]
    assert [x["index"] for x in labeled] == list(range(20))

    out = tmp_path / "all.jsonl"
    run_cli("--sae", f"{info.model}/{info.sae}", "--out", str(out))
    assert [json.loads(x) for x in out.read_text().splitlines()] == rows  # the CLI writes the same
    assert c.get(f"/v1/export/{info.model}/{info.sae}", params={"format": "csv"}).status_code == 422
    assert c.get("/v1/export/a/b").status_code == 404


def test_rest_neuronpedia_is_the_cli_export_as_a_tar(client, tmp_path):
    c, repo, sae_id = client
    info = repo.catalog.sae(sae_id)
    params = {"format": "neuronpedia", "neuronpedia_model_id": "tiny-gpt2", "neuronpedia_source": "0-res-labeler"}
    r = c.get(f"/v1/export/{info.model}/{info.sae}", params=params)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        rest = {m.name.removeprefix("./"): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    out = tmp_path / "np"
    run_cli("--sae", f"{info.model}/{info.sae}", "--format", "neuronpedia", "--out", str(out),
            "--model-id", "tiny-gpt2", "--source-id", "0-res-labeler")
    cli = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert rest.keys() == cli.keys() and "tiny-gpt2/0-res-labeler/explanations/batch-0.jsonl.gz" in cli
    assert rest == cli  # byte for byte
    bad = c.get(f"/v1/export/{info.model}/{info.sae}", params={**params, "neuronpedia_source": "0/../x"})
    assert bad.status_code == 422
