"""Human-readable HTML pages: SAE list, feature browser/search, and one page per feature.

Plain server-rendered HTML (Jinja2) with inline CSS and SVG; no scripts, no external assets.
Data comes from the database (read-only queries in ``labeler.report.queries``) and, for
contexts and nearest neighbours, from the SAE's collect store when it is reachable.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from labeler.report import queries
from labeler.report.highlight import contexts

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))

def _read_access(request: Request) -> None:
    """Pages follow the API's read key when one is set (header X-API-Key)."""
    try:
        from labeler.api.deps import require_read
    except ImportError:  # API area not installed: nothing to enforce
        return
    require_read(request, request.headers.get("X-API-Key"))


router = APIRouter(tags=["pages"], include_in_schema=False, dependencies=[Depends(_read_access)])

PAGE_SIZE = 50
N_NEIGHBOURS = 10


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        return f"{v:.{digits}g}" if (abs(v) < 1e-3 and v != 0) else f"{v:.{digits}f}"
    return str(v)


templates.env.filters["fmt"] = _fmt


def db_source(request: Request) -> Any:
    """The app's repository when it has one, else the configured database URL."""
    state = request.app.state
    for attr in ("repo", "repository"):
        if getattr(state, attr, None) is not None:
            return getattr(state, attr)
    if getattr(state, "database_url", None):
        return state.database_url
    from labeler.core.config import get_settings

    return get_settings().resolved_database_url


@lru_cache(maxsize=8)
def _open_store(path: str):
    from labeler.examples.store import FeatureStore

    return FeatureStore(path)


def store_for(sae: queries.SaeInfo):
    if not sae.store_path:
        return None
    try:
        return _open_store(sae.store_path)
    except Exception as e:  # the store may live on another machine: pages still work without it
        log.info("store %s not readable here: %s", sae.store_path, e)
        return None


@lru_cache(maxsize=8)
def _unit_decoder(path: str) -> np.ndarray | None:
    d = _open_store(path).decoder_directions()
    if d is None:
        return None
    d = np.asarray(d, dtype=np.float32)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


def nearest_features(sae: queries.SaeInfo, index: int, k: int = N_NEIGHBOURS) -> list[tuple[int, float]]:
    """Features whose decoder directions have the highest cosine similarity with ``index``'s."""
    if store_for(sae) is None:
        return []
    dec = _unit_decoder(sae.store_path)  # type: ignore[arg-type]
    if dec is None or not 0 <= index < len(dec):
        return []
    sims = dec @ dec[index]
    sims[index] = -np.inf
    k = min(k, len(sims) - 1)
    if k <= 0:
        return []
    top = np.argpartition(-sims, k - 1)[:k]
    top = top[np.argsort(-sims[top])]
    return [(int(i), float(sims[i])) for i in top]


def histogram_svg(edges: list[float], counts: list[int], width: int = 360, height: int = 110) -> Markup:
    """A tiny inline SVG bar chart (log-scaled counts so rare high activations stay visible)."""
    if not counts or len(edges) != len(counts) + 1 or not any(counts):
        return Markup('<p class="note">no histogram recorded</p>')
    # Only the bins between the first and last non-empty one: fixed global edges would
    # otherwise squeeze a feature's whole range into a few pixels.
    nz = [i for i, c in enumerate(counts) if c]
    lo, hi = nz[0], nz[-1] + 1
    counts, edges = list(counts[lo:hi]), list(edges[lo:hi + 1])
    logc = [math.log1p(c) for c in counts]
    top = max(logc) or 1.0
    bw = width / len(counts)
    bars = []
    for i, (c, lc) in enumerate(zip(counts, logc)):
        h = (height - 18) * lc / top
        bars.append(f'<rect x="{i * bw:.1f}" y="{height - 18 - h:.1f}" width="{max(bw - 1, 1):.1f}" height="{h:.1f}" '
                    f'fill="#e67e22"><title>[{edges[i]:.3g}, {edges[i + 1]:.3g}): {c}</title></rect>')
    axis = (f'<text x="0" y="{height - 4}" font-size="10">{edges[0]:.3g}</text>'
            f'<text x="{width}" y="{height - 4}" font-size="10" text-anchor="end">{edges[-1]:.3g}</text>')
    return Markup(f'<svg class="hist" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
                  f'role="img" aria-label="activation histogram">{"".join(bars)}{axis}</svg>')


def _sae_or_404(source: Any, model: str, sae: str) -> queries.SaeInfo:
    for s in queries.list_saes(source):
        if s.model_slug == model and s.slug == sae:
            return s
    raise HTTPException(status_code=404, detail=f"no SAE {model}/{sae}")


def _search(request: Request, source: Any, sae: queries.SaeInfo, q: str, limit: int) -> list[queries.FeatureListItem]:
    """Use the repository's search when it offers one, else a plain text match on explanations."""
    repo_search = getattr(source, "search_text", None)
    if callable(repo_search):
        try:
            hits = repo_search(q, sae_id=sae.id, limit=limit * 3)  # several explanations per feature
            indices = list(dict.fromkeys(int(h["index"]) for h in hits))[:limit]
            by_index = {i.index: i for i in queries.list_features_by_index(source, sae.id, indices)}
            return [by_index[i] for i in indices if i in by_index]
        except Exception as e:  # fall back rather than fail the page
            log.warning("repository search failed (%s); using text search", e)
    return queries.search_features_text(source, sae.id, q, limit=limit)


@router.get("/", response_class=HTMLResponse)
def sae_list_page(request: Request) -> HTMLResponse:
    saes = queries.list_saes(db_source(request))
    return templates.TemplateResponse(request, "index.html", {"saes": saes})


@router.get("/features/{model}/{sae}", response_class=HTMLResponse)
def sae_features_page(request: Request, model: str, sae: str,
                      q: str | None = Query(None, max_length=200, description="search the explanations"),
                      page: int = Query(1, ge=1), labeled: bool = Query(False)) -> HTMLResponse:
    source = db_source(request)
    info = _sae_or_404(source, model, sae)
    q = (q or "").strip()
    if q:
        items = _search(request, source, info, q, limit=PAGE_SIZE)
        total, pages = len(items), 1
    else:
        items, total = queries.list_features(source, info.id, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE,
                                             labeled_only=labeled)
        pages = max(1, math.ceil(total / PAGE_SIZE))
    return templates.TemplateResponse(request, "sae.html", {
        "sae": info, "items": items, "q": q, "page": page, "pages": pages, "total": total, "labeled": labeled,
    })


@router.get("/features/{model}/{sae}/{index}", response_class=HTMLResponse)
def feature_page(request: Request, model: str, sae: str, index: int) -> HTMLResponse:
    source = db_source(request)
    info = _sae_or_404(source, model, sae)
    detail = queries.feature_detail(source, info.id, index)
    if detail is None:
        raise HTTPException(status_code=404, detail=f"{model}/{sae} has no feature {index} "
                                                    f"(it has {info.n_features})")
    store = store_for(info)
    top_ctx, sampled_ctx = [], []
    if store is not None and 0 <= index < store.n_features:
        rec = store.feature(index)
        top_ctx = contexts(rec, ("top",), 10)
        sampled_ctx = contexts(rec, ("quantile", "random"), 10)
    neighbours = nearest_features(info, index)
    labels = queries.labels_for(source, info.id, [i for i, _ in neighbours])
    stats = detail["feature"].get("stats") or {}
    return templates.TemplateResponse(request, "feature.html", {
        "sae": info, "index": index, "f": detail["feature"], "explanations": detail["explanations"],
        "top_ctx": top_ctx, "sampled_ctx": sampled_ctx, "store_available": store is not None,
        "neighbours": [(i, sim, labels.get(i)) for i, sim in neighbours],
        "hist": histogram_svg(stats.get("hist_edges") or [], stats.get("hist_counts") or []),
        "stats": stats,
    })
