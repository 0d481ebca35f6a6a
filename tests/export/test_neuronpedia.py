"""The Neuronpedia export, imported into a real PostgreSQL that has Neuronpedia's tables, with
the statements Neuronpedia's importer runs: no row lost, no constraint violated."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labeler.examples.store import FeatureStore
from labeler.export import BOT_USER_ID, Source, default_source, export_neuronpedia

from tests.export import importer

pytestmark = pytest.mark.postgres
SRC = Source(model_id="tiny-gpt2", source_id="0-res-labeler", set_name="res-labeler")


def export(repo, sae_id, store_path, out, source=SRC, **kw):
    return export_neuronpedia(repo, sae_id, FeatureStore(store_path), out, source, **kw)


def count(conn, table: str) -> int:
    return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


def test_import_into_neuronpedias_schema_keeps_every_row(labeled, postgres_url, tmp_path):
    repo, sae_id, store_path, _ = labeled
    out = tmp_path / "np"
    result = export(repo, sae_id, store_path, out, batch_size=10)
    conn = importer.connect(postgres_url)
    importer.create_schema(conn, BOT_USER_ID)
    importer.import_export(conn, out, SRC.model_id, SRC.source_id)

    src = out / SRC.model_id / SRC.source_id
    for folder, table in importer.BULK:
        files = sorted((src / folder).glob("batch-*.jsonl.gz"))
        lines = [line for f in files for line in importer.read_lines(f)]
        cols = set(importer.columns(conn, table))
        for f in files:  # the importer types every line by the first one's keys
            per_file = importer.read_lines(f)
            assert all(set(line) == set(per_file[0]) for line in per_file), f
            assert set(per_file[0]) <= cols, set(per_file[0]) - cols  # an unknown key would be dropped
        assert count(conn, table) == len(lines) == result.count(folder) > 0, table  # nothing swallowed
    assert len(list((src / "features").glob("*.gz"))) == 3  # 24 features in batches of 10
    assert count(conn, "Neuron") == 24 and count(conn, "Model") == count(conn, "Source") == 1

    store = FeatureStore(store_path)
    stats = store.all_stats()
    n = conn.execute('SELECT "frac_nonzero", "maxActApprox", "topkCosSimIndices", "pos_str", '
                     '"freq_hist_data_bar_heights", "sourceSetName" FROM "Neuron" WHERE "index" = %s',
                     ("7",)).fetchone()
    assert n[0] == pytest.approx(stats["density"][7]) and n[1] == pytest.approx(stats["max"][7])
    # the store keeps promoted tokens with their logit values: both are exported
    assert len(n[2]) == 10 and 7 not in n[2] and len(n[3]) == 10 and sum(n[4]) > 0 and n[5] == "res-labeler"
    assert conn.execute('SELECT count(*) FROM "Neuron" WHERE "pos_str" IS NULL OR "vector" IS NULL '
                        'OR "topkCosSimValues" IS NULL').fetchone()[0] == 0  # arrays are never null
    top = max((e for e in store.feature(7).examples if e.kind == "top"), key=lambda e: e.max_activation)
    a = conn.execute('SELECT "tokens", "values", "maxValue", "maxValueTokenIndex" FROM "Activation" '
                     'WHERE "index" = %s AND "dataIndex" = %s', ("7", str(top.window))).fetchone()
    assert a[0] == top.tokens and a[2] == pytest.approx(top.max_activation, abs=1e-4)
    assert a[1][a[3]] == pytest.approx(a[2])

    view = repo.reads.feature(sae_id, 2)
    e = conn.execute('SELECT "description", "typeName", "explanationModelName", "scoreV1", "authorId", "notes" '
                     'FROM "Explanation" WHERE "index" = %s AND "typeName" = %s', ("2", "labeler_highlighted")).fetchone()
    assert e[0] == "the word number 2. second line" and e[2] == "gpt-4o-mini" and e[4] == BOT_USER_ID
    assert e[3] == pytest.approx(0.7) and view.label.method == "simulation"  # the label's main score
    assert json.loads(e[5])["labeler"]["prompt_name"] == "explain_highlighted"
    assert count(conn, "Explanation") == 20 + 3  # the failed explanation is not exported
    scores = conn.execute('SELECT s."explanationScoreTypeName", s."value", s."explanationScoreModelName" '
                          'FROM "ExplanationScore" s JOIN "Explanation" x ON x."id" = s."explanationId" '
                          'WHERE x."index" = %s AND x."typeName" = %s ORDER BY 1', ("2", "labeler_highlighted")).fetchall()
    assert scores == [("labeler_detection", 0.8, "gpt-4o-mini"), ("labeler_simulation", pytest.approx(0.7),
                                                                 "gpt-4o-mini")]  # no control, no failed score
    usable = [s for v in repo.reads.features(sae_id, range(24)) for x in v.explanations if not x.failed
              for s in x.scores if not s.control and not s.failed and s.value is not None]
    assert count(conn, "ExplanationScore") == len(usable) >= 20
    assert result.requires["explanation_types"] == ["labeler_baseline", "labeler_highlighted"]

    importer.import_export(conn, out, SRC.model_id, SRC.source_id)  # importing again adds nothing
    assert [count(conn, t) for _, t in importer.BULK] == [24, result.count("activations"), 23, len(usable)]
    again = export(repo, sae_id, store_path, tmp_path / "again", batch_size=10)
    assert again.files == result.files  # deterministic ids and contents
    assert (tmp_path / "again" / SRC.model_id / SRC.source_id / "explanations" / "batch-0.jsonl.gz").read_bytes() \
        == (src / "explanations" / "batch-0.jsonl.gz").read_bytes()
    conn.close()


def test_a_release_and_its_foreign_keys(labeled, postgres_url, tmp_path):
    repo, sae_id, store_path, _ = labeled
    src = Source(model_id="tiny-gpt2", source_id="0-res-labeler", set_name="res-labeler", release="tiny-release")
    export(repo, sae_id, store_path, tmp_path / "np", src)
    conn = importer.connect(postgres_url)
    importer.create_schema(conn, BOT_USER_ID)
    importer.import_export(conn, tmp_path / "np", src.model_id, src.source_id)
    assert conn.execute('SELECT "releaseName" FROM "SourceSet"').fetchone()[0] == "tiny-release"
    assert conn.execute('SELECT "defaultSourceId" FROM "SourceRelease"').fetchone()[0] == "0-res-labeler"
    conn.close()


def test_the_importer_check_catches_what_neuronpedia_would_refuse(postgres_url):
    """The test's importer is strict where Neuronpedia is: an unknown key or a null Json field."""
    conn = importer.connect(postgres_url)
    importer.create_schema(conn, BOT_USER_ID)
    with pytest.raises(importer.PrismaRefusal, match="Unknown argument"):
        importer.create_if_absent(conn, "Model", {"id": "m", "layers": 1, "neuronsPerLayer": 1, "owner": "o",
                                                  "creatorId": BOT_USER_ID, "scores": []})
    with pytest.raises(importer.PrismaRefusal, match="must not be null"):
        importer.create_if_absent(conn, "Source", {"id": "0-x", "modelId": "m", "setName": "x",
                                                   "creatorId": BOT_USER_ID, "saelensConfig": None})
    conn.close()


def test_stored_neighbours_and_logit_values_are_used(labeled, store_copy, tmp_path):
    from safetensors.numpy import load_file, save_file

    repo, sae_id, _, _ = labeled
    n = FeatureStore(store_copy).n_features
    idx = np.stack([(np.arange(5) + i + 1) % n for i in range(n)]).astype(np.int32)
    save_file({"indices": idx, "values": np.full((n, 5), 0.25, np.float32)}, str(store_copy / "neighbours.safetensors"))
    shard = next((store_copy / "features").glob("*.safetensors"))
    tensors = load_file(str(shard))
    k = tensors["promoted"].shape[1]
    tensors["promoted_values"] = np.tile(np.linspace(3, 1, k, dtype=np.float32), (n, 1))
    tensors["suppressed_values"] = -tensors["promoted_values"]
    save_file(tensors, str(shard))
    out = tmp_path / "np"
    export(repo, sae_id, store_copy, out, neighbours=3)
    rows = importer.read_lines(out / SRC.model_id / SRC.source_id / "features" / "batch-0.jsonl.gz")
    assert rows[4]["topkCosSimIndices"] == [5, 6, 7] and rows[4]["topkCosSimValues"] == [0.25] * 3
    record = FeatureStore(store_copy).feature(4)
    assert rows[4]["pos_str"] == record.promoted_tokens and rows[4]["pos_values"][0] == pytest.approx(3.0)
    assert rows[4]["neg_str"] == record.suppressed_tokens and rows[4]["neg_values"][0] == pytest.approx(-3.0)


def test_computed_neighbours_match_brute_force(export_store):
    from labeler.export.neighbours import store_neighbours

    store = FeatureStore(export_store)
    dec = store.decoder_directions().astype(np.float64)
    unit = dec / np.linalg.norm(dec, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    idx, val = store_neighbours(store, 4)(3, 9)
    for row, i in enumerate(range(3, 9)):
        assert list(idx[row]) == list(np.argsort(-sims[i], kind="stable")[:4])
        assert np.allclose(val[row], np.sort(sims[i])[::-1][:4], atol=1e-5)


def test_source_names_come_from_the_sae_or_the_hook():
    manifest = {"model": {"name": "gpt2", "hook": "transformer.h.6"}, "sae": {"name": "gpt2-small/6-res-jb"}}
    assert default_source(manifest) == Source("gpt2-small", "6-res-jb", "res-jb")
    manifest = {"model": {"name": "EleutherAI/Pythia-70m", "hook": "gpt_neox.layers.3"}, "sae": {"name": "my_SAE 16k"}}
    src = default_source(manifest, creator_id="u1", release="r")
    assert (src.model_id, src.source_id, src.set_name, src.creator_id, src.release) == \
        ("pythia-70m", "3-my-sae-16k", "my-sae-16k", "u1", "r")
    assert default_source(manifest, model_id="pythia-70m-deduped", source_id="3-res-sm").source_id == "3-res-sm"
