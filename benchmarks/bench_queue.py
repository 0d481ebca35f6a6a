"""Queue benchmark: features labeled per second with 1, 2 and 4 `labeler worker` processes.

LLM-bound part: the LLM test server answers after a fixed latency and each worker keeps at most
``--in-flight`` LLM calls waiting (LABELER_LLM_CONCURRENCY), so one worker's ceiling is
in_flight / (latency x LLM calls per feature) (calls per feature are counted at the server).  Scaling 1 -> 4 workers should be nearly linear;
target: ratio >= 3.5.

Overhead part: the test server at zero latency; the same job through the queue with one worker
versus in-process (`run_job_inprocess`) in this process; the difference per feature is what
the queue costs (task dispatch, status checks, worker bookkeeping).

Prints one JSON object.  Uses its own redis-server (free port), a scratch PostgreSQL database
(LABELER_TEST_POSTGRES admin URL) and a tiny store built here.

    python benchmarks/bench_queue.py                       # defaults: 96 features, 2 s latency
    python benchmarks/bench_queue.py --latency 0.5 --features 32

Timed runs start after a warm-up job on the same workers (first-chunk costs: store, database
and LLM connections, the logprob probe), so they measure steady-state throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ADMIN_URL = os.environ.get("LABELER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    import redis

    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                             "127.0.0.1", "--dir", str(workdir), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            redis.Redis(port=port).ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except Exception:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


class ScratchDatabases:
    """Fresh PostgreSQL databases (one per measurement, so no run skips another's work)."""

    def __init__(self) -> None:
        import sqlalchemy as sa

        self.sa = sa
        self.admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.names: list[str] = []

    def new(self) -> str:
        name = f"labeler_bench_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as c:
            c.execute(self.sa.text(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        from labeler.db import Repository

        Repository.open(url).close()
        return url

    def drop_all(self) -> None:
        with self.admin.connect() as c:
            for name in self.names:
                c.execute(self.sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
                c.execute(self.sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        self.admin.dispose()


def configure(env: dict[str, str]) -> None:
    from labeler.core.config import reset_settings

    os.environ.update(env)
    reset_settings()


def start_workers(n: int, env: dict[str, str], logdir: Path, concurrency: int = 1) -> list[subprocess.Popen]:
    procs, logs = [], []
    for i in range(n):
        log = logdir / f"worker-{n}-{i}.log"
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "labeler", "worker", "--concurrency", str(concurrency), "--pool", "threads",
             "--loglevel", "WARNING", "--hostname", f"bench{n}-{i}@%h"],
            env=env, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT))
    # ready when the worker has connected: celery prints "ready." at INFO, so ask the broker instead
    from labeler.core.config import get_settings
    from labeler.runs.queue import CelerySender

    app = CelerySender(get_settings()).app
    deadline = time.monotonic() + 120
    while True:
        replies = app.control.ping(timeout=0.5) or []
        if len(replies) >= n:
            return procs
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError(f"workers did not start: {[log.read_text()[-2000:] for log in logs]}")


def stop_workers(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def timed_job(store: Path, features: list[int], label, *, queued: bool) -> tuple[float, dict]:
    """Make, run and wait for one job on the current settings; (seconds, the job's state)."""
    from labeler.core.config import get_settings
    from labeler.db import Repository
    from labeler.runs.queue import CelerySender
    from labeler.runs.runner import Runner
    from labeler.runs.spec import make_job_spec

    settings = get_settings()
    repo = Repository.open(settings.resolved_database_url)
    runner = Runner(repo, settings, send=CelerySender(settings) if queued else None)
    spec = make_job_spec(store, label, settings)
    t0 = time.perf_counter()
    if queued:
        info = runner.wait(runner.submit(spec, features), timeout_s=3600, poll_s=0.05)
    else:
        info = runner.run(runner.create_job(spec, features))
    seconds = time.perf_counter() - t0
    repo.close()
    return seconds, info.model_dump()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--features", type=int, default=128)
    ap.add_argument("--latency", type=float, default=2.0, help="LLM test server latency (s)")
    ap.add_argument("--in-flight", type=int, default=8, help="LLM calls in flight per worker")
    ap.add_argument("--chunk-size", type=int, default=4)
    ap.add_argument("--worker-threads", type=int, default=2,
                    help="chunks a worker runs at once (each with in_flight / threads LLM calls)")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--overhead-features", type=int, default=32)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    os.environ.pop("OPENAI_API_KEY", None)
    from labeler.testing.llm_server import TestLLMServer
    from labeler.runs.spec import LabelSpec
    from labeler.testing import oracle
    from labeler.testing.tiny import make_tiny_store

    store = Path(make_tiny_store(work / "store", n_features=max(args.features, args.overhead_features)))
    redis_proc, redis_url = start_redis(work)
    dbs = ScratchDatabases()
    # max_tokens well above the test server's answers: no explainer retries for cut-off answers,
    # so every feature costs the same LLM rounds and the runs compare queue scaling only
    spec = LabelSpec(explainer="highlighted", explainer_options={"max_tokens": 200}, scorers=["simulation"])
    out: dict = {"benchmark": "queue", "features": args.features, "latency_s": args.latency,
                 "in_flight_per_worker": args.in_flight, "chunk_size": args.chunk_size,
                 "chunks_at_once_per_worker": args.worker_threads,
                 "cpu_cores": os.cpu_count(), "runs": {}}
    try:
        with TestLLMServer(latency_s=args.latency, seed=0) as server:
            server.add_rule(oracle.is_simulation, oracle.simulation_reply)
            base_env = {
                "LABELER_REDIS_URL": redis_url, "LABELER_DATA_DIR": str(work / "data"),
                "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "bench",
                "LABELER_LLM_CACHE": "false", "LABELER_LLM_CONCURRENCY": str(max(1, args.in_flight // args.worker_threads)),
                "LABELER_CHUNK_SIZE": str(args.chunk_size), "PYTHONPATH": str(ROOT),
            }
            features = list(range(args.features))
            for n in [int(x) for x in args.workers.split(",")]:
                env = dict(os.environ, **base_env, LABELER_DATABASE_URL=dbs.new())
                configure(env)
                procs = start_workers(n, env, work, args.worker_threads)
                try:
                    # warm-up (not timed): each worker's first chunk opens the store, the database
                    # and the LLM connections and probes logprob support; a different explainer
                    # option keeps its explanations from being reused by the timed job
                    warm = LabelSpec(explainer="highlighted", explainer_options={"n_examples": 9, "max_tokens": 200},
                                     scorers=["simulation"])
                    timed_job(store, features[: n * args.worker_threads * args.chunk_size], warm, queued=True)
                    calls_before = server.stats["chat"]
                    seconds, info = timed_job(store, features, spec, queued=True)
                finally:
                    stop_workers(procs)
                out["llm_calls_per_feature"] = round((server.stats["chat"] - calls_before) / len(features), 2)
                out["runs"][str(n)] = {"seconds": round(seconds, 3), "features_per_s": round(len(features) / seconds, 3),
                                       "done": info["counts"]["done"], "failed": info["counts"]["failed"],
                                       "failures": info.get("errors", [])[:3]}
            one = out["runs"].get("1", {}).get("features_per_s")
            # one worker's LLM-bound ceiling: in_flight calls every `latency` seconds
            ceiling = args.in_flight / (args.latency * out["llm_calls_per_feature"])
            if one:
                for n, r in out["runs"].items():
                    r["speedup_vs_1"] = round(r["features_per_s"] / one, 3)
                    r["fraction_of_ceiling"] = round(r["features_per_s"] / (ceiling * int(n)), 3)
            if "4" in out["runs"] and one:
                out["ratio_4_vs_1"] = out["runs"]["4"]["speedup_vs_1"]
                out["target_ratio"] = 3.5
                out["meets_target"] = out["ratio_4_vs_1"] >= 3.5

            # queue overhead: zero latency, one worker, same spec, versus in-process
            server.configure(latency_s=0.0)
            feats = list(range(args.overhead_features))
            env = dict(os.environ, **base_env, LABELER_DATABASE_URL=dbs.new())
            configure(env)
            procs = start_workers(1, env, work)
            try:
                timed_job(store, feats[: args.chunk_size], LabelSpec(
                    explainer="highlighted", explainer_options={"n_examples": 9, "max_tokens": 200}, scorers=["simulation"]), queued=True)
                t_queue, _ = timed_job(store, feats, spec, queued=True)
            finally:
                stop_workers(procs)
            configure(dict(base_env, LABELER_DATABASE_URL=dbs.new()))
            os.environ.pop("LABELER_REDIS_URL", None)
            configure({})
            timed_job(store, feats[: args.chunk_size], LabelSpec(
                explainer="highlighted", explainer_options={"n_examples": 9, "max_tokens": 200}, scorers=["simulation"]), queued=False)
            t_local, _ = timed_job(store, feats, spec, queued=False)
            out["overhead"] = {
                "features": len(feats), "queued_1_worker_s": round(t_queue, 3), "inprocess_s": round(t_local, 3),
                "queue_overhead_ms_per_feature": round(1000 * (t_queue - t_local) / len(feats), 2),
                "queued_vs_inprocess_time_ratio": round(t_queue / t_local, 3),
            }
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        dbs.drop_all()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
