"""Features: one, a batch, a filtered list (exports: ``labeler.api.routes.export``)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query

from labeler.api.deps import PageDep, RepoDep, StoresDep, require_read
from labeler.api.routes.common import FeatureIndex, ModelSlug, SaeSlug, sae_or_404, store_fields
from labeler.api.schemas import BatchOut, BatchRequest, FeatureOut, FeaturePage

router = APIRouter(prefix="/v1", tags=["features"], dependencies=[Depends(require_read)])

SortKey = Literal["index", "-index", "score", "-score", "density", "-density", "max", "-max", "count", "-count"]


@router.post("/features/{model}/{sae}/batch", response_model=BatchOut)
def get_features_batch(repo: RepoDep, stores: StoresDep, model: str = ModelSlug, sae: str = SaeSlug,
                       body: BatchRequest = Body(...),
                       contexts: int = Query(0, ge=0, le=20, description="top contexts per feature")):
    """Several features by index (at most 1000); unknown indices are listed in ``missing``.  With
    ``contexts`` > 0 each also gets its store's promoted / suppressed tokens."""
    sae_id = sae_or_404(repo, model, sae)
    items = [FeatureOut(**v.model_dump()) for v in repo.reads.features(sae_id, body.indices)]
    found = {v.index for v in items}
    if contexts:
        store_path = repo.catalog.sae(sae_id).store_path
        for v in items:
            for key, value in store_fields(stores, store_path, v.index, contexts).items():
                setattr(v, key, value)
    return BatchOut(items=items, missing=[i for i in dict.fromkeys(body.indices) if i not in found])


@router.get("/features/{model}/{sae}/{index}", response_model=FeatureOut)
def get_feature(repo: RepoDep, stores: StoresDep, model: str = ModelSlug, sae: str = SaeSlug,
                index: int = FeatureIndex,
                contexts: int = Query(10, ge=0, le=100, description="top contexts from the store (0: none)"),
                details: bool = Query(False, description="include per-example score details")):
    """Statistics, the label, every explanation with its scores, top contexts, and the tokens the
    feature's decoder direction promotes and suppresses most (from the store)."""
    sae_id = sae_or_404(repo, model, sae)
    view = repo.reads.feature(sae_id, index, with_details=details)
    info = repo.catalog.sae(sae_id)
    if view is None:
        raise HTTPException(status_code=404, detail=f"{model}/{sae} has no feature {index} "
                                                    f"(it has {info.n_features} features)")
    return FeatureOut(**view.model_dump(), **store_fields(stores, info.store_path, index, contexts))


@router.get("/features/{model}/{sae}", response_model=FeaturePage)
def list_features(page: PageDep, repo: RepoDep, model: str = ModelSlug, sae: str = SaeSlug,
                  min_score: float | None = Query(None, ge=-1e9, le=1e9, description="label score (or `method` score) >="),
                  max_score: float | None = Query(None, ge=-1e9, le=1e9),
                  min_density: float | None = Query(None, ge=0, le=1),
                  max_density: float | None = Query(None, ge=0, le=1),
                  method: str | None = Query(None, max_length=50, pattern=r"^[a-z0-9_:.-]+$",
                                             description="only features with a score of this method (in range)"),
                  has_label: bool | None = Query(None),
                  sort: SortKey = Query("index", description="field, prefix - for descending")):
    """Features of an SAE with their statistics and label, filtered and sorted."""
    sae_id = sae_or_404(repo, model, sae)
    items = repo.reads.list_features(sae_id, min_score=min_score, max_score=max_score, min_density=min_density,
                                     max_density=max_density, method=method, has_label=has_label, sort=sort,
                                     limit=page.limit, offset=page.offset)
    return page.wrap(items)

