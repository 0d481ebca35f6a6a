"""Steering and activations on your text: ``POST /v1/steer``, ``POST /v1/activations``, and the
feature page's two forms.

Both run the SAE's subject model, which the app keeps in ``app.state.subjects`` (one model per
process, loaded on first use).  Steering generates tokens, so it is keyed like every other write
(``X-API-Key``: the write key); reading activations is one bounded forward pass and is keyed
like reads.  The feature page's forms post to page routes here that render the page again with
the result: the pages stay script-free and work in any browser (and with curl).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from labeler.api.deps import RepoDep, SettingsDep, StoresDep, require_read, require_write
from labeler.api.routes.common import FeatureIndex, read_form, sae_or_404
from labeler.api.routes.login import require_read_page
from labeler.api.routes.pages import feature_context, templates
from labeler.api.schemas import ActivationsOut, ActivationsRequest, SteerOut, SteerRequest
from labeler.core.errors import InputError
from labeler.db import Repository
from labeler.examples.store import StoreCache
from labeler.report.highlight import highlight_tokens
from labeler.runs.subjects import SubjectCache

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["steering"])
pages = APIRouter(tags=["pages"], include_in_schema=False, dependencies=[Depends(require_read_page)])

def _subjects(request: Request) -> SubjectCache:
    return request.app.state.subjects


SubjectsDep = Annotated[SubjectCache, Depends(_subjects)]


def _subject(repo: Repository, stores: StoreCache, subjects: SubjectCache, model: str, sae: str, feature: int):
    """The SAE's subject model; 404 for an unknown SAE or feature, 422 when this server cannot
    load the store, its model or its SAE (the message says which)."""
    info = repo.catalog.sae(sae_or_404(repo, model, sae))
    if feature >= info.n_features:
        raise HTTPException(status_code=404, detail=f"{model}/{sae} has no feature {feature} "
                                                    f"(it has {info.n_features} features)")
    if not info.store_path:
        raise HTTPException(status_code=422, detail=f"{model}/{sae} has no registered store: the model, "
                                                    f"hookpoint and SAE are read from it")
    try:
        store = stores.get(info.store_path)
    except Exception as e:  # the reason names the server's path: logged, not shown to a reader
        log.info("store %s not readable here: %s", info.store_path, e)
        raise HTTPException(status_code=422, detail=f"{model}/{sae}: its collect store is not readable from "
                                                    f"this server") from None
    try:
        return subjects.get(store)
    except InputError as e:
        raise HTTPException(status_code=422, detail=str(e)) from None


def run_steer(repo: Repository, stores: StoreCache, subjects: SubjectCache, body: SteerRequest) -> SteerOut:
    from labeler.activations.steering import Intervention, steer

    subject = _subject(repo, stores, subjects, body.model, body.sae, body.feature)
    iv = (Intervention(body.feature, "add", body.strength) if body.strength is not None
          else Intervention(body.feature, "clamp", body.clamp))
    try:
        res = steer(subject, body.prompt, iv, max_new_tokens=body.max_new_tokens, samples=body.samples,
                    temperature=body.temperature, seed=body.seed)
    except InputError as e:  # an encoder model, a prompt too long for it
        raise HTTPException(status_code=422, detail=str(e)) from None
    return SteerOut(model=body.model, sae=body.sae, feature=body.feature, prompt=body.prompt, mode=iv.mode,
                    value=iv.value, steered=res.steered, unsteered=res.unsteered,
                    max_new_tokens=res.max_new_tokens, temperature=res.temperature, seed=res.seed)


def run_activations(repo: Repository, stores: StoreCache, subjects: SubjectCache,
                    body: ActivationsRequest) -> ActivationsOut:
    subject = _subject(repo, stores, subjects, body.model, body.sae, body.feature)
    try:
        tokens, values = subject.activations(body.text, body.feature)
    except InputError as e:
        raise HTTPException(status_code=422, detail=str(e)) from None
    return ActivationsOut(model=body.model, sae=body.sae, feature=body.feature, tokens=tokens, activations=values,
                          max_activation=max(values, default=0.0))


@router.post("/steer", response_model=SteerOut, dependencies=[Depends(require_write)])
def steer_feature(repo: RepoDep, stores: StoresDep, subjects: SubjectsDep, body: SteerRequest = Body(...)):
    """Continue a prompt with one feature steered and without it, same seed: ``strength`` adds that
    many units of the feature's decoder row at the hookpoint, ``clamp`` holds its activation
    there.  Decoder models only (422 for an encoder)."""
    return run_steer(repo, stores, subjects, body)


@router.post("/activations", response_model=ActivationsOut, dependencies=[Depends(require_read)])
def feature_activations(repo: RepoDep, stores: StoresDep, subjects: SubjectsDep,
                        body: ActivationsRequest = Body(...)):
    """The feature's activation on every token of your text (the model run to the hookpoint)."""
    return run_activations(repo, stores, subjects, body)


# -- the feature page's forms ----------------------------------------------------------------

def _message(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err['msg']}" if where else str(err["msg"]).removeprefix("Value error, "))
    return "; ".join(parts)


def _render(request: Request, repo: Repository, stores: StoreCache, model: str, sae: str, index: int,
            panel: str, form: dict[str, str], compute) -> HTMLResponse:
    ctx = feature_context(repo, stores, model, sae, index)
    status = 200
    try:
        ctx[panel] = compute(ctx)
    except HTTPException as e:
        status, ctx[f"{panel}_error"] = e.status_code, str(e.detail)
    except ValidationError as e:
        status, ctx[f"{panel}_error"] = 422, _message(e)
    ctx[f"{panel}_form"] = form
    return templates.TemplateResponse(request, "feature.html", ctx, status_code=status)


@pages.post("/features/{model}/{sae}/{index}/steer", response_class=HTMLResponse)
async def steer_form(request: Request, repo: RepoDep, stores: StoresDep, subjects: SubjectsDep,
                     settings: SettingsDep, model: str, sae: str, index: int = FeatureIndex) -> HTMLResponse:
    form = await read_form(request)

    def compute(_ctx: dict) -> dict:
        require_write(settings, form.get("api_key") or None)
        mode = form.get("mode", "add")
        if mode not in ("add", "clamp"):
            raise HTTPException(status_code=422, detail=f"mode must be 'add' or 'clamp', not {mode!r}")
        body = SteerRequest(model=model, sae=sae, feature=index, prompt=form.get("prompt", ""),
                            **{"strength" if mode == "add" else "clamp": form.get("value", "")},
                            max_new_tokens=form.get("max_new_tokens") or 24,
                            temperature=form.get("temperature") or 0.0, seed=form.get("seed") or 0)
        out = run_steer(repo, stores, subjects, body)
        return {"out": out, "rows": list(zip(out.unsteered, out.steered))}

    shown = {k: v for k, v in form.items() if k != "api_key"}  # the key is checked, never echoed back
    return await run_in_threadpool(_render, request, repo, stores, model, sae, index, "steer", shown, compute)


@pages.post("/features/{model}/{sae}/{index}/activations", response_class=HTMLResponse)
async def activations_form(request: Request, repo: RepoDep, stores: StoresDep, subjects: SubjectsDep,
                           model: str, sae: str, index: int = FeatureIndex) -> HTMLResponse:
    form = await read_form(request)

    def compute(ctx: dict) -> dict:
        out = run_activations(repo, stores, subjects,
                              ActivationsRequest(model=model, sae=sae, feature=index, text=form.get("text", "")))
        scale = max(float(ctx["stats"].get("max") or 0.0), out.max_activation)
        return {"out": out, "html": highlight_tokens(out.tokens, out.activations, scale)}

    return await run_in_threadpool(_render, request, repo, stores, model, sae, index, "act", form, compute)
