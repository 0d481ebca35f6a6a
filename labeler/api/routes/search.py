"""Search over explanations: full text (PostgreSQL tsvector / SQLite FTS5) or semantic (MiniLM)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from labeler.api.deps import PageDep, RepoDep, require_read
from labeler.api.routes.common import sae_or_404
from labeler.api.schemas import SearchPage

router = APIRouter(prefix="/v1", tags=["search"], dependencies=[Depends(require_read)])


@router.get("/search", response_model=SearchPage)
def search(request: Request, page: PageDep, repo: RepoDep,
           q: str = Query(..., min_length=1, max_length=500, description="words to look for"),
           mode: Literal["text", "semantic"] = Query("text"),
           model: str | None = Query(None, max_length=200, description="with sae: search one SAE only"),
           sae: str | None = Query(None, max_length=200)):
    if (model is None) != (sae is None):
        raise HTTPException(status_code=422, detail="give both model and sae, or neither")
    if not q.replace("\x00", "").strip():
        raise HTTPException(status_code=422, detail="the search query is empty")
    sae_id = sae_or_404(repo, model, sae) if model is not None else None
    if mode == "text":
        hits = repo.search.text(q, sae_id=sae_id, limit=page.limit, offset=page.offset)
    else:  # the embedding model loads on the first semantic search only
        hits = repo.search.semantic(q, request.app.state.embedder.get(), sae_id=sae_id, limit=page.limit,
                                    offset=page.offset)
    return {**page.wrap(hits), "mode": mode}
