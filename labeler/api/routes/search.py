"""Search over explanations: full text (PostgreSQL tsvector / SQLite FTS5) or semantic (MiniLM)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query

from labeler.api.deps import Page, PageDep, get_repo, require_read
from labeler.api.routes.common import sae_or_404
from labeler.api.schemas import SearchPage
from labeler.db.repository import Repository

router = APIRouter(prefix="/v1", tags=["search"], dependencies=[Depends(require_read)])


@router.get("/search", response_model=SearchPage)
def search(q: str = Query(..., min_length=1, max_length=500, description="words to look for"),
           mode: Literal["text", "semantic"] = Query("text"),
           model: str | None = Query(None, max_length=200, description="with sae: search one SAE only"),
           sae: str | None = Query(None, max_length=200),
           page: Page = PageDep, repo: Repository = Depends(get_repo)):
    if (model is None) != (sae is None):
        raise HTTPException(status_code=422, detail="give both model and sae, or neither")
    if not q.replace("\x00", "").strip():
        raise HTTPException(status_code=422, detail="the search query is empty")
    sae_id = sae_or_404(repo, model, sae) if model is not None else None
    if mode == "text":
        hits = repo.search_text(q, sae_id=sae_id, limit=page.limit, offset=page.offset)
    else:
        hits = repo.search_semantic(q, sae_id=sae_id, limit=page.limit, offset=page.offset)
    return {**page.wrap(hits), "mode": mode}
