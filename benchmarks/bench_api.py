"""API benchmark: latency of get-one-feature, full-text search, semantic search and nearest
features with N features + explanations (realistic label texts, benchmarks/api_corpus.py),
their embeddings and precomputed neighbours in PostgreSQL, through a real `labeler serve`
(uvicorn) over HTTP.

Prints JSON: load and index-build times, p50/p99 and requests/s per operation, and baselines
measured in the same run, with their ratios:
- get-one and neighbours: a raw SQL primary-key lookup, and GET /health over the same HTTP stack;
- semantic search: GET /health plus embedding the query in this process (the work no index can
  avoid); also one exact scan of every stored vector, the way semantic search worked before;
  recall@10 of the index against exact nearest neighbours;
- text search: the unbounded query (ts_rank over every match) in SQL, and how many of its top 20
  the served top 20 share.
Targets: p99 get-one < 20 ms, semantic < 100 ms, text < 50 ms.

    python benchmarks/bench_api.py                 # 1,000,000 rows
    python benchmarks/bench_api.py --rows 20000    # quick run

It creates a scratch database on the server and drops it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import sqlalchemy as sa

from api_corpus import QUERY_WORDS, ExplanationCorpus

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure this checkout's labeler

BLOCK = 50_000
N_NEIGHBOURS = 32
RECALL_QUERIES = 40
FULL_RANK_SQL = ("SELECT e.id FROM explanation e, websearch_to_tsquery('english', %s) q "
                 "WHERE e.text_fts @@ q AND NOT e.failed AND e.sae_id = %s "
                 "ORDER BY ts_rank(e.text_fts, q) DESC, e.id DESC LIMIT 20")


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def summary(lat_s: list[float], wall_s: float) -> dict:
    return {"n": len(lat_s), "p50_ms": round(percentile(lat_s, 50) * 1e3, 3),
            "p99_ms": round(percentile(lat_s, 99) * 1e3, 3), "mean_ms": round(statistics.mean(lat_s) * 1e3, 3),
            "requests_per_s": round(len(lat_s) / wall_s, 1)}


def timed(fn, n: int) -> dict:
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        s = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - s)
    return summary(lat, time.perf_counter() - t0)


def load(url: str, rows: int, corpus: ExplanationCorpus, model: str, queries: np.ndarray) -> dict:
    """Schema by migration; COPY explanations, scores, features and embeddings; import the
    neighbours through the real import.  Returns timings and the exact top-10 of ``queries``."""
    from labeler.db import Repository

    repo = Repository.open(url)
    sae_id = repo.catalog.ensure_sae("bench/model", "bench-sae", n_features=rows)
    rng = random.Random(0)
    t0 = time.perf_counter()
    raw = repo.db.engine.raw_connection()
    best = np.full((len(queries), 10), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 10), dtype=np.int64)
    try:
        cur = raw.driver_connection.cursor()
        with cur.copy('COPY explanation (id, sae_id, feature_index, key, text, explainer, llm_model, prompt_name, '
                      'prompt_version, prompt_hash, config, config_hash, calls, prompt_tokens, completion_tokens, '
                      'cost_usd, failed, candidates, example_windows, created_at) FROM STDIN') as cp:
            for start in range(0, rows, BLOCK):
                texts, _ = corpus.block(start, min(BLOCK, rows - start))
                for j, text in enumerate(texts):
                    i = start + j
                    cp.write_row((i + 1, sae_id, i, "k", text, "highlighted", "gpt-4o-mini", "explain_highlighted",
                                  "v1", "h", "{}", "c", 1, 500, 20, 0.0001, False, "[]", "[]", "2025-01-01"))
        t_exp = time.perf_counter()
        with cur.copy("COPY score (explanation_id, key, method, value, metrics, control, llm_model, calls, "
                      "prompt_tokens, completion_tokens, cost_usd, failed, example_windows, details, created_at) "
                      "FROM STDIN") as cp:
            for i in range(rows):
                cp.write_row((i + 1, "s", "simulation", rng.random(), "{}", False, "sim", 1, 800, 5, 0.0001,
                              False, "[]", "{}", "2025-01-01"))
        with cur.copy('COPY feature (sae_id, index, count, density, max, mean, stats, label_explanation_id, '
                      'label_method, label_score) FROM STDIN') as cp:
            for i in range(rows):
                d = rng.random() * 0.01
                cp.write_row((sae_id, i, int(d * 1e6), d, rng.random() * 10, d, '{"tokens_seen": 1000000}',
                              i + 1, "simulation", None))
        cur.execute("UPDATE feature f SET label_text = e.text, label_score = s.value FROM explanation e "
                    "JOIN score s ON s.explanation_id = e.id WHERE f.label_explanation_id = e.id")
        t_feat = time.perf_counter()
        with cur.copy("COPY explanation_embedding (explanation_id, sae_id, seq, model, dim, vector) "
                      "FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(["int4", "int4", "int8", "varchar", "int4", "bytea"])
            for start in range(0, rows, BLOCK):
                _, vecs = corpus.block(start, min(BLOCK, rows - start))
                for j, v in enumerate(vecs):
                    cp.write_row((start + j + 1, sae_id, start + j + 1, model, corpus.dim, v.tobytes()))
                sims = queries @ vecs.T  # exact nearest, kept as we go: [queries, block]
                ids = np.broadcast_to(np.arange(start + 1, start + 1 + len(vecs)), sims.shape)
                all_s, all_i = np.concatenate([best, sims], 1), np.concatenate([best_ids, ids], 1)
                top = np.argsort(-all_s, axis=1, kind="stable")[:, :10]
                best, best_ids = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
        for table in ("explanation", "score", "feature"):
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        raw.commit()
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    t_emb = time.perf_counter()
    nrng = np.random.default_rng(2)
    indices = nrng.integers(0, rows, (rows, N_NEIGHBOURS), dtype=np.int32)
    values = -np.sort(-nrng.random((rows, N_NEIGHBOURS), dtype=np.float32), axis=1)
    repo.neighbours.import_arrays(sae_id, indices, values, n_features=rows)
    t1 = time.perf_counter()
    repo.close()
    return {"sae_id": sae_id, "exact_top10": best_ids, "load_s": round(t1 - t0, 2),
            "explanations_copy_s": round(t_exp - t0, 2), "scores_features_labels_s": round(t_feat - t_exp, 2),
            "embeddings_copy_s": round(t_emb - t_feat, 2), "neighbours_import_s": round(t1 - t_emb, 2)}


def build_index(url: str, data_dir: Path, sae_id: int, model: str) -> dict:
    """What `labeler db embed` does after embedding: build and save the SAE's index."""
    from labeler.db import Repository
    from labeler.db.vector_index import VectorIndexes

    repo = Repository(url)
    t0 = time.perf_counter()
    index = VectorIndexes.in_data_dir(repo.db, data_dir).update(sae_id, model)
    out = {"index_build_s": round(time.perf_counter() - t0, 2), "index_kind": index.state.kind,
           "index_vectors": index.state.ntotal, "index_cells": int(getattr(index.index, "nlist", 0)),
           "index_probe": int(getattr(index.index, "nprobe", 0))}
    repo.close()
    return out


def exact_scan_once(url: str, sae_id: int, query: np.ndarray) -> float:
    """Semantic search as it was: read every stored vector, one matrix product."""
    t0 = time.perf_counter()
    with sa.create_engine(url).connect() as c:
        vecs = c.execute(sa.text("SELECT vector FROM explanation_embedding WHERE sae_id = :s"), {"s": sae_id}).scalars()
        matrix = np.frombuffer(b"".join(vecs), dtype=np.float32).reshape(-1, len(query))
        np.argsort(-(matrix @ query))[:20]
    return round(time.perf_counter() - t0, 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(url: str, data_dir: Path) -> tuple[subprocess.Popen, httpx.Client]:
    port = free_port()
    env = {**os.environ, "LABELER_DATABASE_URL": url, "LABELER_DATA_DIR": str(data_dir),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen([sys.executable, "-c", "from labeler.cli import main; main()", "serve",
                               "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
    for _ in range(600):
        try:
            if client.get("/health").status_code == 200:
                return server, client
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"server did not start: {server.stderr.read().decode()[-2000:] if server.stderr else ''}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--admin-url", default=os.environ.get("LABELER_TEST_POSTGRES",
                                                          "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--keep", action="store_true", help="do not drop the scratch database")
    args = ap.parse_args()

    from labeler.db.embeddings import load_embedder

    embedder = load_embedder()
    corpus = ExplanationCorpus(embedder.embed)
    query_texts = corpus.query_texts(200)
    query_vecs = embedder.embed(query_texts[:RECALL_QUERIES])

    name = f"labeler_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = args.admin_url.rsplit("/", 1)[0] + f"/{name}"
    server = None
    data_dir = Path(tempfile.mkdtemp(prefix="labeler-bench-"))
    try:
        loaded = load(url, args.rows, corpus, embedder.name, query_vecs)
        sae_id = loaded.pop("sae_id")
        exact_top10 = loaded.pop("exact_top10")
        built = build_index(url, data_dir, sae_id, embedder.name)
        server, client = start_server(url, data_dir)
        rng = random.Random(1)
        scope = {"model": "bench--model", "sae": "bench-sae"}

        def get(path: str, **params) -> dict:
            r = client.get(path, params=params)
            assert r.status_code == 200, r.text
            return r.json()

        t0 = time.perf_counter()
        get("/v1/search", q=query_texts[0], mode="semantic", limit=20, **scope)
        first_semantic_s = round(time.perf_counter() - t0, 2)  # loads MiniLM and the saved index
        recall = [len({h["explanation_id"] for h in get("/v1/search", q=q, mode="semantic", limit=10, **scope)["items"]}
                      & set(exact.tolist())) / 10 for q, exact in zip(query_texts, exact_top10)]
        text_queries = QUERY_WORDS + query_texts[:80]

        def get_one():
            get(f"/v1/features/bench--model/bench-sae/{rng.randrange(args.rows)}", contexts=0)

        def search_text():
            get("/v1/search", q=rng.choice(text_queries), limit=20, **scope)

        def search_semantic():
            get("/v1/search", q=rng.choice(query_texts), mode="semantic", limit=20, **scope)

        def neighbours():
            get(f"/v1/features/bench--model/bench-sae/{rng.randrange(args.rows)}/neighbours", limit=10)

        def health():
            assert client.get("/health").status_code == 200

        def embed_query():
            embedder.embed([rng.choice(query_texts)])

        raw = sa.create_engine(url).raw_connection()
        cur = raw.driver_connection.cursor()

        def pk_lookup():
            cur.execute("SELECT * FROM feature WHERE id = %s", (rng.randrange(1, args.rows + 1),))
            cur.fetchone()

        def full_rank_text():
            cur.execute(FULL_RANK_SQL, (rng.choice(text_queries), sae_id))
            cur.fetchall()

        overlap, matches = [], []
        for q in text_queries:
            served = [h["explanation_id"] for h in get("/v1/search", q=q, limit=20, **scope)["items"]]
            cur.execute(FULL_RANK_SQL, (q, sae_id))
            full = [r[0] for r in cur.fetchall()]
            overlap.append(len(set(served) & set(full)) / max(len(full), 1))
            cur.execute("SELECT count(*) FROM explanation WHERE text_fts @@ websearch_to_tsquery('english', %s)", (q,))
            matches.append(cur.fetchone()[0])

        for fn in (get_one, search_text, search_semantic, neighbours, health, embed_query, pk_lookup):
            for _ in range(30):  # warm caches and pools
                fn()
        n = args.requests
        results = {
            "rows": args.rows, **loaded, **built, "first_semantic_request_s": first_semantic_s,
            "get_one_feature": timed(get_one, n),
            "search_text": timed(search_text, max(n // 4, 50)),
            "search_semantic": timed(search_semantic, max(n // 4, 50)),
            "neighbours": timed(neighbours, n),
            "baseline_http_health": timed(health, n),
            "baseline_embed_query": timed(embed_query, max(n // 4, 50)),
            "baseline_sql_pk_lookup": timed(pk_lookup, n),
            "baseline_sql_text_rank_every_match": timed(full_rank_text, 50),
            "semantic_recall_at_10": round(float(np.mean(recall)), 3),
            "text_top20_shared_with_full_ranking": round(float(np.mean(overlap)), 3),
            "text_query_matches": {"min": int(min(matches)), "median": int(statistics.median(matches)),
                                   "max": int(max(matches))},
            "semantic_exact_scan_once_s": exact_scan_once(url, sae_id, query_vecs[0]),
        }
        raw.close()
        r = results
        g, b, h = r["get_one_feature"], r["baseline_sql_pk_lookup"], r["baseline_http_health"]
        sem, emb, txt = r["search_semantic"], r["baseline_embed_query"], r["search_text"]
        r["ratios"] = {
            "get_one_p99_vs_sql_pk_p99": round(g["p99_ms"] / b["p99_ms"], 1),
            "get_one_p50_vs_http_health_p50": round(g["p50_ms"] / h["p50_ms"], 2),
            "semantic_p50_vs_health_plus_embed_p50": round(sem["p50_ms"] / (h["p50_ms"] + emb["p50_ms"]), 2),
            "neighbours_p50_vs_http_health_p50": round(r["neighbours"]["p50_ms"] / h["p50_ms"], 2),
            "text_p50_vs_sql_rank_every_match_p50": round(
                txt["p50_ms"] / r["baseline_sql_text_rank_every_match"]["p50_ms"], 3),
        }
        r["targets_ms"] = {"get_one_p99": 20, "semantic_p99": 100, "text_p99": 50}
        r["targets_met"] = {"get_one": g["p99_ms"] < 20, "semantic": sem["p99_ms"] < 100, "text": txt["p99_ms"] < 50}
        print(json.dumps(r, indent=2))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if not args.keep:
            with admin.connect() as c:
                c.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n "
                                  "AND pid <> pg_backend_pid()"), {"n": name})
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        else:
            print(f"kept database {name}", file=sys.stderr)
        admin.dispose()


if __name__ == "__main__":
    main()
