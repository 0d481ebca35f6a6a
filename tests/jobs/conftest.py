"""Fixtures for the jobs area: a tiny real store, the LLM test server with scoring rules, a
private Redis server that tests may restart, and real `labeler worker` subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labeler.testing.api_process import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """A real collect store (tiny random model + SAE), shared by every test of the area."""
    from labeler.testing.tiny import make_tiny_store

    return Path(make_tiny_store(tmp_path_factory.mktemp("jobs-store") / "store", n_features=32))


@pytest.fixture(scope="session")
def alive_features(tiny_store) -> list[int]:
    """Features with activating train examples (the others fail fast: nothing to explain)."""
    from labeler.examples.store import FeatureStore

    store = FeatureStore(tiny_store)
    alive = [i for i in range(store.n_features) if store.feature(i).select("train", "top")]
    assert len(alive) >= 6, f"tiny store has too few live features: {alive}"
    return alive


def install_rules(server) -> None:
    """The scoring area's simulator and detection responders (explainer prompts get the
    server's default rule)."""
    from labeler.testing import oracle

    server.add_rule(oracle.is_simulation, oracle.simulation_reply)
    server.add_rule(oracle.is_detection, oracle.detection_reply)


@pytest.fixture
def llm_server():
    from labeler.testing.llm_server import TestLLMServer

    with TestLLMServer(latency_s=0.05, seed=1) as server:
        install_rules(server)
        yield server



class RedisServer:
    """A redis-server of our own (own port, own dir, append-only file) that can be restarted
    without touching the shared server."""

    def __init__(self, workdir: Path, *, persistent: bool = True):
        self.dir = workdir
        self.port = free_port()
        self.persistent = persistent  # False: a restart loses every key, queued messages included
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--appendonly", "yes" if self.persistent else "no",
             "--appendfsync", "always", "--save", "",
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError("private redis-server did not start")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # SIGTERM: redis flushes the AOF and exits
            self.proc.wait(timeout=20)
        self.proc = None

    def restart(self, down_s: float = 1.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


@pytest.fixture
def private_redis(tmp_path):
    """A private redis-server with an append-only file: a restart keeps queued messages."""
    yield from _private_redis(tmp_path, persistent=True)


@pytest.fixture
def volatile_redis(tmp_path):
    """A private redis-server without persistence: a restart loses every queued message."""
    yield from _private_redis(tmp_path, persistent=False)


def _private_redis(tmp_path: Path, *, persistent: bool):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    d = tmp_path / "redis"
    d.mkdir()
    server = RedisServer(d, persistent=persistent)
    server.start()
    yield server
    server.stop()


class Workers:
    """Real `labeler worker` subprocesses (threads pool, one process each)."""

    def __init__(self, env: dict[str, str], logdir: Path):
        self.env = env
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, concurrency: int = 1, wait: bool = True) -> subprocess.Popen:
        log = open(self.logdir / f"worker-{name}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "labeler", "worker", "--concurrency", str(concurrency), "--pool", "threads",
             "--loglevel", "INFO", "--hostname", f"{name}@%h"],
            env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        if wait:
            self.wait_ready(name)
        return proc

    def log(self, name: str) -> str:
        return (self.logdir / f"worker-{name}.log").read_text(errors="replace")

    def wait_ready(self, name: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while " ready." not in self.log(name):
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"worker {name} exited:\n{self.log(name)[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} not ready:\n{self.log(name)[-3000:]}")
            time.sleep(0.1)

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown handlers, no acks; the message it held must be redelivered."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture
def queue_env(monkeypatch, tmp_path, postgres_url, llm_server, isolated_settings):
    """Settings shared by this test process and its workers: PostgreSQL, the LLM test server,
    no response cache (every run really calls the LLM), a short visibility timeout.  An ``extra``
    value of None leaves that variable unset (the setting's default)."""

    def configure(redis_url: str, **extra: str | None) -> dict[str, str]:
        values = {
            "LABELER_DATABASE_URL": postgres_url,
            "LABELER_REDIS_URL": redis_url,
            "LABELER_DATA_DIR": str(isolated_settings),
            "OPENAI_BASE_URL": llm_server.base_url,
            "OPENAI_API_KEY": "test-key",
            "LABELER_LLM_CACHE": "false",
            "LABELER_LLM_MAX_RETRIES": "1",
            "LABELER_LLM_TIMEOUT_S": "5",
            "LABELER_VISIBILITY_TIMEOUT_S": "4",
            "LABELER_CHUNK_SIZE": "2",
            **extra,
        }
        from labeler.core.config import reset_settings

        unset = {k for k, v in values.items() if v is None}
        values = {k: v for k, v in values.items() if v is not None}
        for k in unset:
            monkeypatch.delenv(k, raising=False)
        for k, v in values.items():
            monkeypatch.setenv(k, v)
        reset_settings()
        env = {k: v for k, v in os.environ.items() if k not in unset}
        env.update(values)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    return configure


@pytest.fixture
def workers(tmp_path):
    holder: list[Workers] = []

    def make(env: dict[str, str]) -> Workers:
        w = Workers(env, tmp_path)
        holder.append(w)
        return w

    yield make
    for w in holder:
        w.stop_all()
