"""Semantic search through the ANN index: embeddings written outside of searches, an index that
follows the table incrementally, persists, notices when it no longer matches, and finds what
a brute-force scan finds."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import sqlalchemy as sa

from labeler.core.errors import InputError
from labeler.db.ann import AnnIndex, IndexPolicy
from labeler.db.vector_index import VectorIndexes
from labeler.db.vectors import Vectors
from labeler.records import Explanation


def exp(feature: int, text: str) -> Explanation:
    return Explanation(feature=feature, text=text, explainer="highlighted", llm_model="gpt-x",
                       prompt_name="explain_highlighted", prompt_version="v1", prompt_hash="abc")


@pytest.fixture(scope="module")
def embedder():
    from labeler.db.embeddings import load_embedder

    return load_embedder()


def clustered(n: int, dim: int = 32, clusters: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.4 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def add_vectors(repo, sae_id: int, vectors: np.ndarray, model: str = "toy", first: int = 0) -> list[int]:
    """Explanation rows plus their stored vectors (no embedding model needed)."""
    ids = [repo.results.save_explanation(sae_id, exp(first + i, f"text {first + i}")) for i in range(len(vectors))]
    Vectors(repo.db).write(model, [(i, sae_id, v) for i, v in zip(ids, vectors)])
    return ids


def test_semantic_search_embeds_nothing_while_searching(repo, embedder, tmp_path):
    sae_id = repo.catalog.ensure_sae("m", "s", n_features=4)
    other = repo.catalog.ensure_sae("m", "other", n_features=1)
    repo.results.save_explanation(sae_id, exp(0, "famous suspension bridges in San Francisco"))
    repo.results.save_explanation(sae_id, exp(1, "Python programming syntax and code"))
    repo.results.save_explanation(sae_id, exp(2, "cats, dogs and other pets"))
    failed = Explanation(feature=3, text="", explainer="highlighted", failed=True, error="boom")
    repo.results.save_explanation(sae_id, failed)
    repo.results.save_explanation(other, exp(0, "kittens playing with yarn"))
    indexes = VectorIndexes(Vectors(repo.db), tmp_path / "idx", sync_interval_s=0)

    assert repo.search.semantic("the golden gate", embedder, indexes, sae_id=sae_id) == []  # not embedded yet
    assert repo.search.embed_missing(embedder, max_rows=2) == 2  # resumable: a bounded run keeps its rows
    assert repo.search.embed_missing(embedder) == 2  # the rest; the failed one has no text to embed
    assert repo.search.embed_missing(embedder) == 0

    hits = repo.search.semantic("the golden gate", embedder, indexes, sae_id=sae_id, limit=3)
    assert [h.index for h in hits][:1] == [0] and hits[0].score > hits[1].score
    assert {h.sae for h in hits} == {"s"}
    both = repo.search.semantic("kittens and puppies", embedder, indexes, limit=2)  # every SAE
    assert {(h.sae, h.index) for h in both} == {("other", 0), ("s", 2)}
    assert [h.index for h in repo.search.semantic("kittens and puppies", embedder, indexes, sae_id=sae_id,
                                                  limit=1, offset=1)] != [2]  # the second page
    with pytest.raises(InputError, match="at most"):
        repo.search.semantic("x", embedder, indexes, limit=100, offset=10_000)


def test_index_follows_new_embeddings_and_persists(repo, embedder, tmp_path):
    sae_id = repo.catalog.ensure_sae("m", "s", n_features=10)
    for i, text in enumerate(["rivers and lakes", "football matches", "stock markets"]):
        repo.results.save_explanation(sae_id, exp(i, text))
    repo.search.embed_missing(embedder)
    indexes = VectorIndexes(Vectors(repo.db), tmp_path / "idx", sync_interval_s=0)
    assert repo.search.semantic("soccer", embedder, indexes, sae_id=sae_id, limit=1)[0].index == 1
    index = indexes.update(sae_id, embedder.name)
    assert index.state.ntotal == 3 and indexes.path((sae_id, embedder.name)).exists()

    # a new explanation, embedded right after it is saved (what a job's chunk does)
    repo.results.save_explanation(sae_id, exp(7, "soccer games"))
    assert repo.search.embed_features(embedder, sae_id, [7]) == 1
    assert repo.search.semantic("soccer", embedder, indexes, sae_id=sae_id, limit=1)[0].index == 7
    assert indexes._indexes[(sae_id, embedder.name)] is index and index.state.ntotal == 4  # added, not rebuilt

    # another process opens the saved index (3 vectors) and catches up to the table (4)
    again = VectorIndexes(Vectors(repo.db), tmp_path / "idx")
    assert again.update(sae_id, embedder.name).state.ntotal == 4
    assert repo.search.semantic("soccer", embedder, again, sae_id=sae_id, limit=1)[0].index == 7

    # deleted explanations: the saved index no longer matches the table and is rebuilt
    with repo.db.engine.begin() as c:
        c.execute(sa.text("DELETE FROM explanation WHERE feature_index = 7"))
    fresh = VectorIndexes(Vectors(repo.db), tmp_path / "idx")
    assert fresh.update(sae_id, embedder.name).state.ntotal == 3
    assert [h.index for h in repo.search.semantic("soccer", embedder, fresh, sae_id=sae_id)][0] == 1


def test_index_of_another_database_at_the_same_path_is_not_used(repo, tmp_path):
    sae_id = repo.catalog.ensure_sae("m", "s", n_features=50)
    add_vectors(repo, sae_id, clustered(40))
    foreign = AnnIndex.empty(32)
    foreign.add(np.arange(1000, 1040), clustered(40, seed=9), np.arange(1, 41))  # same size, other ids
    indexes = VectorIndexes(Vectors(repo.db), tmp_path / "idx")
    foreign.save(indexes.path((sae_id, "toy")))
    index = indexes.update(sae_id, "toy")
    ids, _ = index.search(clustered(40)[0], 5)
    assert set(ids.tolist()) <= set(range(1, 41)) and ids.size == 5


def test_approximate_index_finds_what_brute_force_finds():
    vectors = clustered(6000)
    policy = IndexPolicy(flat_max=500)
    index = AnnIndex.trained(vectors[::4], len(vectors), policy)
    index.add(np.arange(len(vectors)), vectors, np.arange(1, len(vectors) + 1))
    assert index.state.kind == "ivf" and index.index.nprobe < index.index.nlist  # visits a few cells only
    queries = clustered(50, seed=3)
    recall = []
    for q in queries:
        ids, sims = index.search(q, 10)
        exact = np.argsort(-(vectors @ q))[:10]
        recall.append(len(set(ids.tolist()) & set(exact.tolist())) / 10)
        assert np.all(np.diff(sims) <= 1e-6)  # best first
        assert abs(sims[0] - vectors[ids[0]] @ q) < 0.02  # 8-bit codes: close to the exact cosine
    assert np.mean(recall) >= 0.9
    assert not index.needs_rebuild(6000, policy) and index.needs_rebuild(4 * 6000 + 1, policy)


def test_index_switches_to_approximate_as_the_table_grows(repo, tmp_path):
    sae_id = repo.catalog.ensure_sae("m", "s", n_features=5000)
    vectors = clustered(1200, seed=1)
    policy = IndexPolicy(flat_max=300, train_per_cell=40)
    indexes = VectorIndexes(Vectors(repo.db), tmp_path / "idx", policy=policy, sync_interval_s=0, sync_rows=500)
    ids = add_vectors(repo, sae_id, vectors[:200])
    assert indexes.update(sae_id, "toy").state.kind == "flat"
    ids += add_vectors(repo, sae_id, vectors[200:], first=200)
    hits = indexes.search([sae_id], "toy", vectors[1100], 5)  # a search catches up (500 rows at a time) ...
    index = indexes._indexes[(sae_id, "toy")]
    assert index.state.kind == "ivf" and index.state.ntotal >= 700  # ... and rebuilt past flat_max
    assert indexes.update(sae_id, "toy").state.ntotal == 1200
    hits = indexes.search([sae_id], "toy", vectors[1100], 5)
    assert hits[0][0] == ids[1100] and hits[0][1] > 0.99


def test_an_index_that_syncs_during_concurrent_writes_misses_nothing(repo, tmp_path):
    """Rows are numbered in commit order, so catching up 'after the watermark' never skips a
    row that a slower writer commits later."""
    sae_id = repo.catalog.ensure_sae("m", "s", n_features=10_000)
    n_writers, batches, per_batch = 4, 12, 5
    exp_ids = [[repo.results.save_explanation(sae_id, exp(w * 1000 + j, f"t{w}-{j}"))
                for j in range(batches * per_batch)] for w in range(n_writers)]
    vectors = clustered(n_writers * batches * per_batch, seed=4)
    indexes = VectorIndexes(Vectors(repo.db), None, sync_interval_s=0)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            store = Vectors(repo.db)
            for b in range(batches):
                rows = [(exp_ids[w][b * per_batch + j], sae_id, vectors[(w * batches + b) * per_batch + j])
                        for j in range(per_batch)]
                store.write("toy", rows)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(n_writers)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        indexes.search([sae_id], "toy", vectors[0], 3)  # syncs while the writers commit
    for t in threads:
        t.join()
    assert not errors, errors
    index = indexes.update(sae_id, "toy")
    assert index.state.kind == "flat"
    expected = sorted(i for ids in exp_ids for i in ids)
    assert sorted(faiss_ids(index)) == expected  # every row once: none skipped, none twice
    with repo.db.engine.connect() as c:
        seqs = c.execute(sa.text("SELECT seq FROM explanation_embedding")).scalars().all()
    assert len(set(seqs)) == len(seqs) == len(expected)


def faiss_ids(index: AnnIndex) -> list[int]:
    import faiss

    return faiss.vector_to_array(index.index.id_map).tolist()
