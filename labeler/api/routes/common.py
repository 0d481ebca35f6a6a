"""Helpers shared by the /v1 routes."""

from __future__ import annotations

import logging
from typing import Any

from urllib.parse import parse_qs

from fastapi import HTTPException, Path, Request

from labeler.api.schemas import MAX_INDEX, Context
from labeler.core.naming import slugify
from labeler.db import Repository
from labeler.examples.store import StoreCache
from labeler.records import FeatureRecord

log = logging.getLogger(__name__)
MAX_FORM_BYTES = 16_384
ModelSlug = Path(..., max_length=200, description="model slug, e.g. eleutherai--pythia-70m")
SaeSlug = Path(..., max_length=200, description="SAE slug")
FeatureIndex = Path(..., ge=0, le=MAX_INDEX, description="feature index")


def sae_or_404(repo: Repository, model: str, sae: str) -> int:
    """The SAE's id; names are slugified first, so ``EleutherAI/pythia-70m`` style names work."""
    sae_id = repo.catalog.sae_id_for(slugify(model), slugify(sae))
    if sae_id is None:
        raise HTTPException(status_code=404, detail=f"no SAE {model}/{sae}: see GET /v1/saes")
    return sae_id


def store_record(stores: StoreCache, store_path: str | None, index: int) -> tuple[FeatureRecord | None, str | None]:
    """A feature's record from its collect store: (record, why it is not available)."""
    if not store_path:
        return None, "the SAE has no registered store"
    try:
        store = stores.get(store_path)
        if index >= store.n_features:
            return None, f"the store has {store.n_features} features"
        return store.feature(index), None
    except Exception as e:  # the store may live on another machine: the API still answers
        # The reason names the server's path: logged for the operator, not shown to readers.
        log.info("store %s not readable here: %s", store_path, e)
        return None, "the SAE's collect store is not readable from this server"


def store_fields(stores: StoreCache, store_path: str | None, index: int, n_contexts: int) -> dict[str, Any]:
    """What ``FeatureOut`` adds from the store: top contexts (``n_contexts`` > 0) and the
    decoder direction's top promoted / suppressed tokens (None when the store is not readable)."""
    rec, error = store_record(stores, store_path, index)
    if rec is None:
        return {"contexts_error": error if n_contexts > 0 else None}
    out: dict[str, Any] = {"promoted_tokens": rec.promoted_tokens, "suppressed_tokens": rec.suppressed_tokens}
    if n_contexts > 0:
        top = sorted((e for e in rec.examples if e.kind == "top"), key=lambda e: -e.max_activation)[:n_contexts]
        out["contexts"] = [Context(window=e.window, split=e.split, tokens=e.tokens, activations=e.activations,
                                   max_activation=e.max_activation) for e in top]
    return out


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the pages' forms; last value of a repeated field wins)."""
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise HTTPException(status_code=413, detail=f"the form is larger than {MAX_FORM_BYTES} bytes")
    fields = parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in fields.items()}
