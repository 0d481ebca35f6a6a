"""An SAE row is a store's content, not its name: two different stores whose model and SAE
folders share names (the same tiny GPT-2 and SAE names, another seed) get two rows, two slugs,
their own explanations (real LLM calls), their own scores and their own pages; the same store
registered again, or moved, stays one row.  SQLite and PostgreSQL, real tiny stores."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from labeler.core.config import get_settings, reset_settings
from labeler.db import Repository
from labeler.examples.store import FeatureStore, StoreCache
from labeler.runs.runner import Runner
from labeler.runs.spec import LabelSpec, make_job_spec
from labeler.testing import oracle

N_FEATURES = 32


@pytest.fixture(scope="module")
def twin_stores(tmp_path_factory) -> tuple[Path, Path]:
    """Two real stores from folders of the same names (model-gpt2, sae-topk-32) with another
    seed: other model and SAE weights, other windows."""
    from labeler.testing.tiny import make_tiny_store

    root = tmp_path_factory.mktemp("twins")
    return tuple(Path(make_tiny_store(root / f"run{seed}" / "store", n_features=N_FEATURES, seed=seed,
                                      workdir=root / f"run{seed}" / "inputs"))
                 for seed in (0, 1))


@pytest.fixture
def repo(database_url):
    r = Repository.open(database_url)
    yield r
    r.close()


@pytest.fixture
def runner(repo, monkeypatch, llm_server):
    # the scoring area's simulator (explainer prompts get the server's default rule)
    llm_server.add_rule(oracle.is_simulation, oracle.simulation_reply)
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("LABELER_LLM_CACHE", "false")
    monkeypatch.setenv("LABELER_LLM_MAX_RETRIES", "0")
    monkeypatch.setenv("LABELER_CHUNK_SIZE", "4")
    reset_settings()
    return Runner(repo, get_settings())


@pytest.fixture
def llm_server():
    from labeler.testing.llm_server import TestLLMServer

    with TestLLMServer(latency_s=0.0, seed=1) as server:
        yield server


def alive(store: FeatureStore, n: int) -> list[int]:
    return [i for i in range(store.n_features) if store.feature(i).select("train", "top")][:n]


def test_collect_writes_a_content_identity(twin_stores):
    a, b = (FeatureStore(p) for p in twin_stores)
    assert (a.model_name, a.sae_name) == (b.model_name, b.sae_name) == ("model-gpt2", f"sae-topk-{N_FEATURES}")
    for s in (a, b):
        assert len(s.manifest["store_identity"]) == 32
        assert len(s.manifest["model"]["weights_fingerprint"]) == 64
        assert len(s.manifest["sae"]["weights_fingerprint"]) == 64
    assert a.manifest["store_identity"] != b.manifest["store_identity"]
    assert a.manifest["model"]["weights_fingerprint"] != b.manifest["model"]["weights_fingerprint"]
    assert a.manifest["sae"]["weights_fingerprint"] != b.manifest["sae"]["weights_fingerprint"]


def test_identity_follows_content_not_names_or_paths(twin_stores):
    import copy

    from labeler.examples.identity import store_identity

    store = FeatureStore(twin_stores[0])
    m, tokens = store.manifest, np.asarray(store.tokens)
    assert store_identity(m, tokens) == m["store_identity"]
    renamed = copy.deepcopy(m)
    renamed["model"].update(name="other", path_or_id="/elsewhere/model")
    renamed["sae"].update(name="other", path="/elsewhere/sae", source={"kind": "local", "path": "/elsewhere/sae"})
    renamed["identity"].update(model="/elsewhere/model", sae="/elsewhere/sae", corpus={"source": "/elsewhere/c"})
    assert store_identity(renamed, tokens) == m["store_identity"]
    for change in (lambda x: x["sae"].update(k=x["sae"]["k"] + 1), lambda x: x["identity"].update(seed=7),
                   lambda x: x["model"].update(dtype="bfloat16")):
        other = copy.deepcopy(m)
        change(other)
        assert store_identity(other, tokens) != m["store_identity"]
    assert store_identity(m, tokens[::-1]) != m["store_identity"]


def test_same_names_other_content_get_their_own_rows_and_slugs(repo, twin_stores, caplog):
    a, b = (FeatureStore(p) for p in twin_stores)
    first = repo.catalog.register_store(a)
    with caplog.at_level(logging.WARNING, logger="labeler.db.catalog"):
        second = repo.catalog.register_store(b)
    assert first != second
    ident_b = b.manifest["store_identity"]
    row_a, row_b = repo.catalog.sae(first), repo.catalog.sae(second)
    assert row_a.sae == f"sae-topk-{N_FEATURES}" and row_b.sae == f"sae-topk-{N_FEATURES}-{ident_b[:8]}"
    assert row_a.name == row_b.name  # the name stays a label of both
    assert row_a.store_path == str(a.path) and row_b.store_path == str(b.path)
    assert f"is already used by a different SAE (identity {a.manifest['store_identity']})" in caplog.text
    assert f"registered as 'sae-topk-{N_FEATURES}-{ident_b[:8]}'" in caplog.text
    # looked up by content, whichever order; the slugs are stable
    assert repo.catalog.sae_id_for_store(b) == second and repo.catalog.sae_id_for_store(a) == first
    assert repo.catalog.register_store(b) == second
    assert repo.catalog.sae(second).sae == row_b.sae
    assert repo.catalog.resolve_sae(f"model-gpt2/{row_b.sae}").id == second

    # the pages of each slug show that store's contexts
    from labeler.api.routes.pages import feature_context

    f = alive(b, 1)[0]
    stores = StoreCache()
    page_a = feature_context(repo, stores, "model-gpt2", row_a.sae, f)
    page_b = feature_context(repo, stores, "model-gpt2", row_b.sae, f)
    assert page_b["sae"].store_path == str(b.path) and page_a["sae"].store_path == str(a.path)
    assert page_b["top_ctx"] and page_b["top_ctx"] != page_a["top_ctx"]


def test_labeling_the_second_store_makes_its_own_calls_and_scores(runner, twin_stores, llm_server):
    a, b = (FeatureStore(p) for p in twin_stores)
    label = LabelSpec(explainer="highlighted", scorers=["simulation"])
    features = sorted(set(alive(a, N_FEATURES)) & set(alive(b, N_FEATURES)))[:3]

    def run(store: FeatureStore):
        runner.settings = get_settings()
        return runner.run(runner.create_job(make_job_spec(store.path, label, runner.settings), features))

    first = run(a)
    assert first.counts["done"] == len(features), first.errors
    explain_calls = lambda: sum(1 for r in llm_server.requests if "messages" in r and not oracle.is_simulation(r))
    calls_before = explain_calls()
    second = run(b)
    assert second.sae_id != first.sae_id
    assert second.counts["reused"] == 0
    assert explain_calls() - calls_before >= len(features)  # really explained, not "labeled" with the first store's work
    exp_a = {v.index: [e.id for e in v.explanations] for v in runner.repo.reads.features(first.sae_id, features)}
    for v in runner.repo.reads.features(second.sae_id, features):
        assert v.explanations and not set(e.id for e in v.explanations) & set(exp_a[v.index])
        assert all(e.job_id == second.id for e in v.explanations)
    scores_a = runner.repo.reads.results(first.sae_id, features)
    scores_b = runner.repo.reads.results(second.sae_id, features)
    assert scores_a.scores and scores_b.scores  # each store keeps its own scores
    ids_a = {s.explanation_id for s in scores_a.scores}
    assert not ids_a & {s.explanation_id for s in scores_b.scores}


def test_the_same_store_registered_twice_or_moved_is_one_row(repo, twin_stores, tmp_path):
    a = FeatureStore(twin_stores[0])
    sae_id = repo.catalog.register_store(a)
    assert repo.catalog.register_store(a) == sae_id
    moved = tmp_path / "moved" / "store"
    shutil.copytree(a.path, moved)
    assert repo.catalog.sae_id_for_store(FeatureStore(moved)) == sae_id
    assert repo.catalog.sae(sae_id).store_path == str(moved)  # the path follows the store
    assert repo.catalog.register_store(FeatureStore(a.path)) == sae_id
    assert repo.catalog.sae(sae_id).store_path == str(a.path)
    with repo.db.engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(sa.table("sae"))).scalar_one() == 1


def legacy_copy(src: Path, dest: Path) -> Path:
    """The store as collect wrote it before identities: no store_identity in its manifest."""
    shutil.copytree(src, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    del manifest["store_identity"]
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def test_old_stores_get_an_identity_from_settings_and_path_and_say_so(repo, twin_stores, tmp_path, caplog):
    old = FeatureStore(legacy_copy(twin_stores[0], tmp_path / "old"))
    with caplog.at_level(logging.WARNING, logger="labeler.db.catalog"):
        sae_id = repo.catalog.register_store(old)
    assert "has no content identity" in caplog.text and str(old.path) in caplog.text
    assert repo.catalog.sae_id_for_store(old) == sae_id == repo.catalog.register_store(old)
    other = FeatureStore(legacy_copy(twin_stores[1], tmp_path / "other"))
    assert repo.catalog.register_store(other) != sae_id  # another store of the same names


def test_migration_backfills_identities_from_manifests(database_url, twin_stores):
    from labeler.db.engine import upgrade
    from labeler.db.identity import identity_of, name_identity

    repo = Repository(database_url)
    upgrade(repo.db.engine, "0005")
    a, b = (FeatureStore(p) for p in twin_stores)
    with repo.db.engine.begin() as c:
        model_id = c.execute(sa.text("INSERT INTO subject_model (slug, name, created_at) "
                                     "VALUES ('model-gpt2', 'model-gpt2', CURRENT_TIMESTAMP) RETURNING id")).scalar_one()
        rows = [("with-identity", a.manifest, str(a.path)), ("legacy", {"config_hash": "abc"}, "/old/store"),
                ("by-name", None, None)]
        sae = sa.table("sae", sa.column("model_id"), sa.column("slug"), sa.column("name"), sa.column("n_features"),
                       sa.column("store_path"), sa.column("manifest", sa.JSON), sa.column("created_at"))
        for slug, manifest, path in rows:
            c.execute(sae.insert().values(model_id=model_id, slug=slug, name=slug, n_features=1, store_path=path,
                                          manifest=manifest, created_at=sa.func.current_timestamp()))
    repo.db.upgrade()
    with repo.db.engine.connect() as c:
        got = dict(c.execute(sa.text("SELECT slug, identity FROM sae")).all())
    assert got == {"with-identity": a.manifest["store_identity"],
                   "legacy": identity_of({"config_hash": "abc"}, "/old/store").value,
                   "by-name": name_identity("model-gpt2", "by-name")}
    # the registered store is found by its identity: no second row
    assert repo.catalog.sae_id_for_store(a) == repo.catalog.sae_id_for("model-gpt2", "with-identity")
    repo.close()


def test_concurrent_registrations_of_one_name_keep_identities_apart(repo):
    """Writers racing on one name: one row per identity, the first to commit keeps the plain slug."""
    import threading

    identities = ["a" * 32, "b" * 32] * 4
    got: dict[int, int] = {}
    start = threading.Barrier(len(identities))

    def register(i: int) -> None:
        start.wait()
        got[i] = repo.catalog.ensure_sae("m", "shared name", identity=identities[i], n_features=1)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(len(identities))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    by_identity = {identities[i]: {got[j] for j in got if identities[j] == identities[i]} for i in got}
    assert all(len(ids) == 1 for ids in by_identity.values()) and len(set(got.values())) == 2
    slugs = sorted(s.sae for s in repo.catalog.list_saes())
    assert slugs[0] == "shared-name" and slugs[1] in ("shared-name-aaaaaaaa", "shared-name-bbbbbbbb")


def test_a_suffixed_slug_that_is_taken_grows_longer(repo):
    ident = "c" * 32
    repo.catalog.ensure_sae("m", "sae", identity="d" * 32)
    repo.catalog.ensure_sae("m", f"sae-{ident[:8]}", identity="e" * 32)  # someone is literally named so
    sae_id = repo.catalog.ensure_sae("m", "sae", identity=ident)
    assert repo.catalog.sae(sae_id).sae == f"sae-{ident[:16]}"
    assert repo.catalog.ensure_sae("m", "sae", identity=ident) == sae_id  # found by identity again
