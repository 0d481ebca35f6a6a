"""Request dependencies: the repository, API-key checks and pagination."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, HTTPException, Query, Request, Security
from fastapi.security import APIKeyHeader

from labeler.db.repository import Repository

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="Needed for writes (settings.api_write_key) and, when "
                                          "settings.api_read_key is set, for reads too.")
MAX_LIMIT = 1000
MAX_OFFSET = 10_000_000


def get_repo(request: Request) -> Repository:
    return request.app.state.repo


def _settings(request: Request) -> Any:
    return request.app.state.settings


def _matches(given: str | None, expected: str | None) -> bool:
    return bool(given) and bool(expected) and secrets.compare_digest(given.encode(), expected.encode())


def require_read(request: Request, key: str | None = Security(API_KEY_HEADER)) -> None:
    s = _settings(request)
    if s.api_read_key and not (_matches(key, s.api_read_key) or _matches(key, s.api_write_key)):
        raise HTTPException(status_code=401, detail="reading needs a valid X-API-Key header")


def require_write(request: Request, key: str | None = Security(API_KEY_HEADER)) -> None:
    s = _settings(request)
    if not s.api_write_key:
        raise HTTPException(status_code=403, detail="write endpoints are disabled: set LABELER_API_WRITE_KEY "
                                                    "on the server and send it as X-API-Key")
    if not _matches(key, s.api_write_key):
        raise HTTPException(status_code=401, detail="writing needs a valid X-API-Key header")


@dataclass
class Page:
    limit: int
    offset: int

    def wrap(self, items: list) -> dict[str, Any]:
        """A page of a list; ``next_offset`` is null on the last page."""
        return {"items": items, "limit": self.limit, "offset": self.offset,
                "next_offset": self.offset + len(items) if len(items) == self.limit else None}


def pagination(limit: int = Query(100, ge=1, le=MAX_LIMIT, description="page size"),
               offset: int = Query(0, ge=0, le=MAX_OFFSET, description="items to skip")) -> Page:
    return Page(limit, offset)


PageDep = Depends(pagination)
