"""The persistent LLM response cache, keyed by the full request, shared by every process that
names the same place:

- a SQL database by SQLAlchemy URL: the default SQLite file under the data dir (WAL, safe for
  the processes of one machine), or PostgreSQL (``LABELER_LLM_CACHE_URL`` set to the labeler
  database's URL shares it between the workers of every machine);
- Redis (``redis://...``): shared between machines too; every answer is one key, so mind the
  memory of a million-feature job (logprob answers are large), where PostgreSQL is the better home.

Only answers that passed the caller's validation are put here (``LLMClient.chat(validate=)``).
The cache also remembers which Batch API batch will answer a request (``batch_of``), so a job
that restarts while its batch runs waits for that batch instead of paying for a second one.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Iterable, Protocol

import sqlalchemy as sa

_META = sa.MetaData()
T_RESPONSES = sa.Table(
    "llm_response_cache", _META,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("response", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)
T_BATCHES = sa.Table(
    "llm_batch_request", _META,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("batch_id", sa.String(200), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)
REDIS_PREFIX = "labeler:llm-cache:"
REDIS_BATCH_PREFIX = "labeler:llm-batch:"


def request_key(request: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of everything that shapes the answer."""
    blob = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache(Protocol):
    """Answers by request key, and the batch that will answer a request."""

    def get(self, key: str) -> dict[str, Any] | None: ...
    def put(self, key: str, model: str, response: dict[str, Any]) -> None: ...
    def delete(self, key: str) -> None: ...
    def batch_of(self, key: str) -> str | None: ...
    def remember_batch(self, keys: Iterable[str], batch_id: str) -> None: ...
    def forget_batch(self, keys: Iterable[str]) -> None: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...


class SqlResponseCache:
    """The cache in two tables of a SQL database (created when missing)."""

    def __init__(self, url: str):
        self.url = url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(url, connect_args={"timeout": 30.0, "check_same_thread": False})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        _META.create_all(self.engine, checkfirst=True)
        self._upsert = self._insert_kind()

    def _insert_kind(self):
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert

    def _put_rows(self, table: sa.Table, rows: list[dict[str, Any]], update: list[str]) -> None:
        if not rows:
            return
        stmt = self._upsert(table).values(rows)
        stmt = stmt.on_conflict_do_update(index_elements=["key"], set_={c: stmt.excluded[c] for c in update})
        with self.engine.begin() as c:
            c.execute(stmt)

    def get(self, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            blob = c.execute(sa.select(T_RESPONSES.c.response).where(T_RESPONSES.c.key == key)).scalar_one_or_none()
        return json.loads(blob) if blob is not None else None

    def put(self, key: str, model: str, response: dict[str, Any]) -> None:
        self._put_rows(T_RESPONSES, [dict(key=key, model=model, response=json.dumps(response, ensure_ascii=False),
                                          created=time.time())], ["model", "response", "created"])

    def delete(self, key: str) -> None:
        with self.engine.begin() as c:
            c.execute(T_RESPONSES.delete().where(T_RESPONSES.c.key == key))

    def batch_of(self, key: str) -> str | None:
        with self.engine.connect() as c:
            return c.execute(sa.select(T_BATCHES.c.batch_id).where(T_BATCHES.c.key == key)).scalar_one_or_none()

    def remember_batch(self, keys: Iterable[str], batch_id: str) -> None:
        now = time.time()
        self._put_rows(T_BATCHES, [dict(key=k, batch_id=batch_id, created=now) for k in dict.fromkeys(keys)],
                       ["batch_id", "created"])

    def forget_batch(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            with self.engine.begin() as c:
                c.execute(T_BATCHES.delete().where(T_BATCHES.c.key.in_(keys)))

    def __len__(self) -> int:
        with self.engine.connect() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(T_RESPONSES)).scalar_one())

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers and one writer at a time, across processes
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class RedisResponseCache:
    """The cache as one Redis key per answer (and per batched request)."""

    def __init__(self, url: str):
        import redis

        self.url = url
        self._redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)

    def get(self, key: str) -> dict[str, Any] | None:
        blob = self._redis.get(REDIS_PREFIX + key)
        return json.loads(blob)["response"] if blob is not None else None

    def put(self, key: str, model: str, response: dict[str, Any]) -> None:
        self._redis.set(REDIS_PREFIX + key, json.dumps({"model": model, "response": response}, ensure_ascii=False))

    def delete(self, key: str) -> None:
        self._redis.delete(REDIS_PREFIX + key)

    def batch_of(self, key: str) -> str | None:
        value = self._redis.get(REDIS_BATCH_PREFIX + key)
        return value.decode() if value is not None else None

    def remember_batch(self, keys: Iterable[str], batch_id: str) -> None:
        with self._redis.pipeline(transaction=False) as p:
            for k in keys:
                p.set(REDIS_BATCH_PREFIX + k, batch_id)
            p.execute()

    def forget_batch(self, keys: Iterable[str]) -> None:
        keys = [REDIS_BATCH_PREFIX + k for k in keys]
        if keys:
            self._redis.delete(*keys)

    def __len__(self) -> int:
        return sum(1 for _ in self._redis.scan_iter(match=REDIS_PREFIX + "*", count=1000))

    def close(self) -> None:
        self._redis.close()


def cache_url(url: str | None, path: Path) -> str:
    """Where the cache lives: ``url`` when given, else the SQLite file at ``path``."""
    return url or f"sqlite:///{Path(path).expanduser().resolve()}"


def open_cache(url: str) -> SqlResponseCache | RedisResponseCache:
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisResponseCache(url)
    for plain in ("postgresql://", "postgres://"):  # the driver labeler installs
        if url.startswith(plain):
            url = "postgresql+psycopg://" + url[len(plain):]
    try:
        sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        from labeler.core.errors import ConfigError

        raise ConfigError(f"LLM cache location {url!r} is neither a redis:// URL nor a database URL "
                          "(e.g. sqlite:////path/llm_cache.sqlite or postgresql+psycopg://host/db)") from None
    return SqlResponseCache(url)
