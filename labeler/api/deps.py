"""Request dependencies (``Annotated`` aliases): the app's repository, runner, settings and
embedder, API-key checks and pagination.  Everything lives in ``app.state``, set by create_app."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import Depends, HTTPException, Query, Request, Security
from fastapi.security import APIKeyHeader

from labeler.core.config import Settings
from labeler.db import Repository
from labeler.examples.store import StoreCache
from labeler.runs.runner import Runner

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="Needed for writes (settings.api_write_key) and, when "
                                          "settings.api_read_key is set, for reads too.")
# A browser cannot send the header: the pages' login (labeler.api.routes.login) stores the key
# in this HttpOnly, SameSite=Strict cookie, and reads accept it like the header.
READ_COOKIE = "labeler_key"
MAX_LIMIT = 1000
MAX_OFFSET = 10_000_000


def _repo(request: Request) -> Repository:
    return request.app.state.repo


def _runner(request: Request) -> Runner:
    return request.app.state.runner


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _stores(request: Request) -> StoreCache:
    return request.app.state.runner.stores


class LazyEmbedder:
    """The sentence-embedding model, loaded on the first semantic search (it takes seconds)."""

    def __init__(self) -> None:
        self._embedder: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        from labeler.db.embeddings import load_embedder

        with self._lock:
            if self._embedder is None:
                self._embedder = load_embedder()
            return self._embedder


def _embedder(request: Request) -> Any:
    return request.app.state.embedder.get()


RepoDep = Annotated[Repository, Depends(_repo)]
RunnerDep = Annotated[Runner, Depends(_runner)]
SettingsDep = Annotated[Settings, Depends(_settings)]
StoresDep = Annotated[StoreCache, Depends(_stores)]
EmbedderDep = Annotated[Any, Depends(_embedder)]


def _matches(given: str | None, expected: str | None) -> bool:
    return bool(given) and bool(expected) and secrets.compare_digest(given.encode(), expected.encode())


def read_key_ok(settings: Settings, key: str | None) -> bool:
    """Whether ``key`` may read: anything when no read key is set, else the read or write key."""
    return not settings.api_read_key or _matches(key, settings.api_read_key) or _matches(key, settings.api_write_key)


def can_read(request: Request, settings: Settings, header_key: str | None) -> bool:
    """The X-API-Key header or the login cookie (writes take the header only: a cookie rides
    along with requests the user did not mean to make)."""
    cookie = request.cookies.get(READ_COOKIE)
    return read_key_ok(settings, header_key) or read_key_ok(settings, unquote(cookie) if cookie else None)


def require_read(request: Request, settings: SettingsDep, key: str | None = Security(API_KEY_HEADER)) -> None:
    if not can_read(request, settings, key):
        raise HTTPException(status_code=401, detail="reading needs a valid X-API-Key header "
                                                    "(in a browser: open /login)")


def require_write(settings: SettingsDep, key: str | None = Security(API_KEY_HEADER)) -> None:
    if not settings.api_write_key:
        raise HTTPException(status_code=403, detail="write endpoints are disabled: set LABELER_API_WRITE_KEY "
                                                    "on the server and send it as X-API-Key")
    if not _matches(key, settings.api_write_key):
        raise HTTPException(status_code=401, detail="writing needs a valid X-API-Key header")


@dataclass
class Pagination:
    limit: int
    offset: int

    def wrap(self, items: list) -> dict[str, Any]:
        """A page of a list; ``next_offset`` is null on the last page."""
        return {"items": items, "limit": self.limit, "offset": self.offset,
                "next_offset": self.offset + len(items) if len(items) == self.limit else None}


def _pagination(limit: int = Query(100, ge=1, le=MAX_LIMIT, description="page size"),
                offset: int = Query(0, ge=0, le=MAX_OFFSET, description="items to skip")) -> Pagination:
    return Pagination(limit, offset)


PageDep = Annotated[Pagination, Depends(_pagination)]
