"""Search over explanations, full text (PostgreSQL tsvector / SQLite FTS5) or semantic (MiniLM
embeddings through the ANN index), and a feature's nearest features by decoder cosine."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from labeler.api.deps import PageDep, RepoDep, require_read
from labeler.api.routes.common import FeatureIndex, ModelSlug, SaeSlug, sae_or_404
from labeler.api.schemas import Neighbour, NeighbourList, SearchPage
from labeler.db.neighbours import N_NEIGHBOURS

router = APIRouter(prefix="/v1", tags=["search"], dependencies=[Depends(require_read)])


@router.get("/search", response_model=SearchPage)
def search(request: Request, page: PageDep, repo: RepoDep,
           q: str = Query(..., min_length=1, max_length=500, description="words to look for"),
           mode: Literal["text", "semantic"] = Query("text"),
           model: str | None = Query(None, max_length=200, description="with sae: search one SAE only"),
           sae: str | None = Query(None, max_length=200)):
    """Text: best-ranked among the newest matches (see ``labeler.db.search``).  Semantic: the
    nearest embedded explanations; ``labeler db embed`` embeds what was written without one."""
    if (model is None) != (sae is None):
        raise HTTPException(status_code=422, detail="give both model and sae, or neither")
    if not q.replace("\x00", "").strip():
        raise HTTPException(status_code=422, detail="the search query is empty")
    sae_id = sae_or_404(repo, model, sae) if model is not None else None
    if mode == "text":
        hits = repo.search.text(q, sae_id=sae_id, limit=page.limit, offset=page.offset)
    else:  # the embedding model loads on the first semantic search only
        hits = repo.search.semantic(q, request.app.state.embedder.get(), request.app.state.vector_indexes,
                                    sae_id=sae_id, limit=page.limit, offset=page.offset)
    return {**page.wrap(hits), "mode": mode}


@router.get("/features/{model}/{sae}/{index}/neighbours", response_model=NeighbourList)
def neighbours(repo: RepoDep, model: str = ModelSlug, sae: str = SaeSlug, index: int = FeatureIndex,
               limit: int = Query(10, ge=1, le=N_NEIGHBOURS, description="how many")):
    """The feature's nearest features by decoder cosine similarity, precomputed with the store."""
    sae_id = sae_or_404(repo, model, sae)
    found = repo.neighbours.of(sae_id, index, limit)
    if not found and repo.reads.labels_for(sae_id, [index]) == {}:
        raise HTTPException(status_code=404, detail=f"{model}/{sae} has no feature {index}")
    labels = repo.reads.labels_for(sae_id, [i for i, _ in found])
    return NeighbourList(items=[Neighbour(index=i, cosine=c, label=labels.get(i)) for i, c in found])
