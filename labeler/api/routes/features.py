"""Features: one, a batch, a filtered list; and the JSONL export of an SAE's labels."""

from __future__ import annotations

import json
from typing import Iterator, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse

from labeler.api.deps import Page, PageDep, get_repo, require_read
from labeler.api.routes.common import FeatureIndex, ModelSlug, SaeSlug, sae_or_404, top_contexts
from labeler.api.schemas import BatchOut, BatchRequest, FeatureOut, FeaturePage
from labeler.db.repository import Repository

router = APIRouter(prefix="/v1", tags=["features"], dependencies=[Depends(require_read)])

SortKey = Literal["index", "-index", "score", "-score", "density", "-density", "max", "-max", "count", "-count"]


@router.post("/features/{model}/{sae}/batch", response_model=BatchOut)
def get_features_batch(model: str = ModelSlug, sae: str = SaeSlug, body: BatchRequest = Body(...),
                       contexts: int = Query(0, ge=0, le=20, description="top contexts per feature"),
                       repo: Repository = Depends(get_repo)):
    """Several features by index (at most 1000); unknown indices are listed in ``missing``."""
    sae_id = sae_or_404(repo, model, sae)
    if any(i < 0 for i in body.indices):
        raise HTTPException(status_code=422, detail="feature indices must be >= 0")
    views = repo.features_view(sae_id, body.indices)
    found = {v["index"] for v in views}
    if contexts:
        store_path = (repo.sae_info(sae_id) or {}).get("store_path")
        for v in views:
            v["contexts"], v["contexts_error"] = top_contexts(store_path, v["index"], contexts)
    return {"items": views, "missing": [i for i in dict.fromkeys(body.indices) if i not in found]}


@router.get("/features/{model}/{sae}/{index}", response_model=FeatureOut)
def get_feature(model: str = ModelSlug, sae: str = SaeSlug, index: int = FeatureIndex,
                contexts: int = Query(10, ge=0, le=100, description="top contexts from the store (0: none)"),
                details: bool = Query(False, description="include per-example score details"),
                repo: Repository = Depends(get_repo)):
    """Statistics, the label, every explanation with its scores, and top contexts."""
    sae_id = sae_or_404(repo, model, sae)
    view = repo.feature_view(sae_id, index, with_details=details)
    if view is None:
        info = repo.sae_info(sae_id) or {}
        raise HTTPException(status_code=404, detail=f"{model}/{sae} has no feature {index} "
                                                    f"(it has {info.get('n_features', 0)} features)")
    if contexts:
        store_path = (repo.sae_info(sae_id) or {}).get("store_path")
        view["contexts"], view["contexts_error"] = top_contexts(store_path, index, contexts)
    return view


@router.get("/features/{model}/{sae}", response_model=FeaturePage)
def list_features(model: str = ModelSlug, sae: str = SaeSlug,
                  min_score: float | None = Query(None, ge=-1e9, le=1e9, description="label score (or `method` score) >="),
                  max_score: float | None = Query(None, ge=-1e9, le=1e9),
                  min_density: float | None = Query(None, ge=0, le=1),
                  max_density: float | None = Query(None, ge=0, le=1),
                  method: str | None = Query(None, max_length=50, pattern=r"^[a-z0-9_:.-]+$",
                                             description="only features with a score of this method (in range)"),
                  has_label: bool | None = Query(None),
                  sort: SortKey = Query("index", description="field, prefix - for descending"),
                  page: Page = PageDep, repo: Repository = Depends(get_repo)):
    """Features of an SAE with their statistics and label, filtered and sorted."""
    sae_id = sae_or_404(repo, model, sae)
    items = repo.list_features(sae_id, min_score=min_score, max_score=max_score, min_density=min_density,
                               max_density=max_density, method=method, has_label=has_label, sort=sort,
                               limit=page.limit, offset=page.offset)
    return page.wrap(items)


def neuronpedia_record(row: dict, model_id: str, source_id: str) -> dict:
    """One explanation in Neuronpedia's explanation-export shape."""
    return {
        "modelId": model_id,
        "layer": source_id,
        "index": str(row["index"]),
        "description": row["label_text"],
        "explanationModelName": row["llm_model"] or row["explainer"],
        "typeName": f"labeler-{row['explainer']}",
        "scores": ([{"method": row["label_method"], "value": row["label_score"]}]
                   if row["label_method"] else []),
    }


@router.get("/export/{model}/{sae}", tags=["export"],
            responses={200: {"content": {"application/x-ndjson": {}},
                             "description": "one JSON object per line"}})
def export_labels(model: str = ModelSlug, sae: str = SaeSlug,
                  format: Literal["labeler", "neuronpedia"] = Query("labeler"),
                  labeled_only: bool = Query(False, description="labeler format: skip unlabeled features"),
                  neuronpedia_model_id: str | None = Query(None, max_length=200,
                                                           description="Neuronpedia modelId (default: model slug)"),
                  neuronpedia_source: str | None = Query(None, max_length=200,
                                                         description="Neuronpedia source/layer id (default: SAE slug)"),
                  repo: Repository = Depends(get_repo)):
    """Stream every feature's label as JSON Lines.  ``neuronpedia``: one explanation object per
    labeled feature (modelId, layer, index, description, explanationModelName, typeName)."""
    sae_id = sae_or_404(repo, model, sae)
    info = repo.sae_info(sae_id) or {}
    model_id = neuronpedia_model_id or info.get("model", model)
    source_id = neuronpedia_source or info.get("sae", sae)

    def lines() -> Iterator[str]:
        for row in repo.iter_labels(sae_id):
            if format == "neuronpedia":
                if row["label_text"]:
                    yield json.dumps(neuronpedia_record(row, model_id, source_id)) + "\n"
            elif row["label_text"] or not labeled_only:
                yield json.dumps({
                    "model": row["model"], "sae": row["sae"], "hook": row["hook"], "index": row["index"],
                    "label": row["label_text"], "label_method": row["label_method"],
                    "label_score": row["label_score"], "explanation_id": row["exp_id"],
                    "explainer": row["explainer"], "llm_model": row["llm_model"],
                    "prompt_name": row["prompt_name"], "prompt_version": row["prompt_version"],
                    "prompt_hash": row["prompt_hash"], "density": row["density"], "max": row["max"],
                    "count": row["count"], "created_at": row["created_at"],
                }) + "\n"

    filename = f"{info.get('model', model)}__{info.get('sae', sae)}.{format}.jsonl"
    return StreamingResponse(lines(), media_type="application/x-ndjson",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})
