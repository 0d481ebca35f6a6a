"""API benchmark: latency of "get one feature" and "search" with N features + explanations in
PostgreSQL, through a real `labeler serve` (uvicorn) over HTTP.

Prints JSON: load time, p50/p99 latency and requests/s per operation, plus baselines measured
in the same run (a raw SQL primary-key lookup, and GET /health through the same HTTP stack),
and their ratios.  Target: p99 of get-one < 20 ms.

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
import time
import uuid

import httpx
import sqlalchemy as sa

WORDS = ("river bridge golden gate city water code bug error function value table chair music song piano "
         "guitar dog cat bird tree leaf green blue red yellow number python loop quote comma legal medical "
         "french german date time year month names places verbs plural negation emotion sport football").split()


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


def load(url: str, rows: int) -> dict:
    """Schema by migration, then COPY features, explanations and one score each."""
    from labeler.db import Repository

    repo = Repository.open(url)
    sae_id = repo.catalog.ensure_sae("bench/model", "bench-sae", n_features=rows)
    rng = random.Random(0)
    t0 = time.perf_counter()
    raw = repo.db.engine.raw_connection()
    try:
        cur = raw.driver_connection.cursor()
        with cur.copy('COPY explanation (id, sae_id, feature_index, key, text, explainer, llm_model, prompt_name, '
                      'prompt_version, prompt_hash, config, config_hash, calls, prompt_tokens, completion_tokens, '
                      'cost_usd, failed, candidates, example_windows, created_at) FROM STDIN') as cp:
            for i in range(rows):
                text = " ".join(rng.choice(WORDS) for _ in range(6))
                cp.write_row((i + 1, sae_id, i, "k", text, "highlighted", "gpt-4o-mini", "explain_highlighted", "v1",
                              "h", "{}", "c", 1, 500, 20, 0.0001, False, "[]", "[]", "2025-01-01"))
        t_exp = time.perf_counter()
        with cur.copy("COPY score (explanation_id, key, method, value, metrics, control, llm_model, calls, "
                      "prompt_tokens, completion_tokens, cost_usd, failed, example_windows, details, created_at) "
                      "FROM STDIN") as cp:
            for i in range(rows):
                cp.write_row((i + 1, "s", "simulation", rng.random(), "{}", False, "sim", 1, 800, 5, 0.0001,
                              False, "[]", "{}", "2025-01-01"))
        t_score = time.perf_counter()
        with cur.copy('COPY feature (sae_id, index, count, density, max, mean, stats, label_explanation_id, '
                      'label_method, label_score) FROM STDIN') as cp:
            for i in range(rows):
                d = rng.random() * 0.01
                cp.write_row((sae_id, i, int(d * 1e6), d, rng.random() * 10, d, '{"tokens_seen": 1000000}',
                              i + 1, "simulation", None))
        cur.execute("UPDATE feature f SET label_text = e.text, label_score = s.value FROM explanation e "
                    "JOIN score s ON s.explanation_id = e.id WHERE f.label_explanation_id = e.id")
        for table in ("explanation", "score", "feature"):
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        raw.commit()
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    t1 = time.perf_counter()
    repo.close()
    return {"sae_id": sae_id, "load_s": round(t1 - t0, 2), "explanations_copy_s": round(t_exp - t0, 2),
            "scores_copy_s": round(t_score - t_exp, 2), "features_copy_and_label_s": round(t1 - t_score, 2)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--admin-url", default=os.environ.get("LABELER_TEST_POSTGRES",
                                                          "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--keep", action="store_true", help="do not drop the scratch database")
    args = ap.parse_args()

    name = f"labeler_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = args.admin_url.rsplit("/", 1)[0] + f"/{name}"
    server = None
    try:
        loaded = load(url, args.rows)
        rng = random.Random(1)
        port = free_port()
        env = {**os.environ, "LABELER_DATABASE_URL": url}
        server = subprocess.Popen([sys.executable, "-c", "from labeler.cli import main; main()", "serve",
                                   "--host", "127.0.0.1", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        base = f"http://127.0.0.1:{port}"
        client = httpx.Client(base_url=base, timeout=30)
        for _ in range(200):
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"server did not start: {server.stderr.read().decode()[-2000:] if server.stderr else ''}")

        def get_one():
            r = client.get(f"/v1/features/bench--model/bench-sae/{rng.randrange(args.rows)}", params={"contexts": 0})
            assert r.status_code == 200, r.text

        def search():
            r = client.get("/v1/search", params={"q": f"{rng.choice(WORDS)} {rng.choice(WORDS)}", "limit": 20,
                                                 "model": "bench--model", "sae": "bench-sae"})
            assert r.status_code == 200, r.text

        def health():
            assert client.get("/health").status_code == 200

        raw = sa.create_engine(url).raw_connection()
        cur = raw.driver_connection.cursor()

        def pk_lookup():
            cur.execute("SELECT * FROM feature WHERE id = %s", (rng.randrange(1, args.rows + 1),))
            cur.fetchone()

        for fn in (get_one, search, health, pk_lookup):  # warm caches and pools
            for _ in range(50):
                fn()
        n = args.requests
        results = {
            "rows": args.rows, **{k: v for k, v in loaded.items() if k != "sae_id"},
            "get_one_feature": timed(get_one, n),
            "search_text": timed(search, max(n // 4, 50)),
            "baseline_http_health": timed(health, n),
            "baseline_sql_pk_lookup": timed(pk_lookup, n),
        }
        raw.close()
        g, b, h = results["get_one_feature"], results["baseline_sql_pk_lookup"], results["baseline_http_health"]
        results["ratios"] = {
            "get_one_p99_vs_sql_pk_p99": round(g["p99_ms"] / b["p99_ms"], 1),
            "get_one_p50_vs_http_health_p50": round(g["p50_ms"] / h["p50_ms"], 2),
            "search_p50_vs_get_one_p50": round(results["search_text"]["p50_ms"] / g["p50_ms"], 2),
        }
        results["target_get_one_p99_ms"] = 20
        results["target_met"] = g["p99_ms"] < 20
        print(json.dumps(results, indent=2))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if not args.keep:
            with admin.connect() as c:
                c.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n "
                                  "AND pid <> pg_backend_pid()"), {"n": name})
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


if __name__ == "__main__":
    main()
