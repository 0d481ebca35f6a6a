"""Helpers shared by the /v1 routes."""

from __future__ import annotations

from fastapi import HTTPException, Path

from labeler.api.schemas import Context
from labeler.core.naming import slugify
from labeler.db import Repository
from labeler.examples.store import StoreCache

MAX_INDEX = 2**31 - 1
ModelSlug = Path(..., max_length=200, description="model slug, e.g. eleutherai--pythia-70m")
SaeSlug = Path(..., max_length=200, description="SAE slug")
FeatureIndex = Path(..., ge=0, le=MAX_INDEX, description="feature index")


def sae_or_404(repo: Repository, model: str, sae: str) -> int:
    """The SAE's id; names are slugified first, so ``EleutherAI/pythia-70m`` style names work."""
    sae_id = repo.catalog.sae_id_for(slugify(model), slugify(sae))
    if sae_id is None:
        raise HTTPException(status_code=404, detail=f"no SAE {model}/{sae}: see GET /v1/saes")
    return sae_id


def top_contexts(stores: StoreCache, store_path: str | None, index: int, n: int) -> tuple[list[Context] | None, str | None]:
    """Top-activating contexts of a feature from its collect store: (contexts, error)."""
    if n <= 0:
        return None, None
    if not store_path:
        return None, "the SAE has no registered store"
    try:
        store = stores.get(store_path)
        if index >= store.n_features:
            return None, f"the store has {store.n_features} features"
        rec = store.feature(index)
    except Exception as e:  # the store may live on another machine: the API still answers
        return None, f"store not readable here: {e}"
    top = sorted((e for e in rec.examples if e.kind == "top"), key=lambda e: -e.max_activation)[:n]
    return [Context(window=e.window, split=e.split, tokens=e.tokens, activations=e.activations,
                    max_activation=e.max_activation) for e in top], None
