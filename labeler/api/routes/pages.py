"""Human-readable HTML pages: SAE list, feature browser/search, and one page per feature.

Plain server-rendered HTML (Jinja2) with inline CSS and SVG; no scripts, no external assets.
The feature page's steering panel and text box are forms posting to page routes
(``labeler.api.routes.steer``) that render this page again with their result.
The data is what the REST API returns (the same ``repo.reads`` views); contexts come from the
SAE's collect store when this server can read it, nearest features from the database.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from labeler.api.deps import MAX_OFFSET, RepoDep, StoresDep
from labeler.api.routes.common import FeatureIndex, sae_or_404
from labeler.api.routes.login import require_read_page
from labeler.db import Repository
from labeler.db.views import SaeView
from labeler.examples.store import FeatureStore, StoreCache
from labeler.report.highlight import contexts

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))

router = APIRouter(tags=["pages"], include_in_schema=False, dependencies=[Depends(require_read_page)])

PAGE_SIZE = 50
MAX_PAGE = MAX_OFFSET // PAGE_SIZE + 1  # the API's deepest offset; a larger page would overflow the database
N_NEIGHBOURS = 10


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        return f"{v:.{digits}g}" if (abs(v) < 1e-3 and v != 0) else f"{v:.{digits}f}"
    return str(v)


def _token(t: str) -> str:
    """A token as text: control characters escaped (a byte-level BPE has many), spaces kept."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in t)


templates.env.filters["fmt"] = _fmt
templates.env.filters["token"] = _token


def store_for(stores: StoreCache, sae: SaeView) -> FeatureStore | None:
    if not sae.store_path:
        return None
    try:
        return stores.get(sae.store_path)
    except Exception as e:  # the store may live on another machine: pages still work without it
        log.info("store %s not readable here: %s", sae.store_path, e)
        return None


def nearest_features(repo: Repository, sae_id: int, index: int, k: int = N_NEIGHBOURS) -> list[tuple[int, float]]:
    """The features whose decoder directions are most cosine-similar to ``index``'s: computed
    once with the store and imported when it was registered (``labeler.db.neighbours``), so
    a page never loads a decoder."""
    return repo.neighbours.of(sae_id, index, k)


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


def _sae_or_404(repo: RepoDep, model: str, sae: str) -> SaeView:
    # the API's lookup: names slugified first (which also keeps a NUL byte away from PostgreSQL)
    return repo.catalog.sae(sae_or_404(repo, model, sae))


@router.get("/", response_class=HTMLResponse)
def sae_list_page(request: Request, repo: RepoDep) -> HTMLResponse:
    return templates.TemplateResponse(request, "index.html", {"saes": repo.catalog.list_saes(limit=1000)})


@router.get("/features/{model}/{sae}", response_class=HTMLResponse)
def sae_features_page(request: Request, repo: RepoDep, model: str, sae: str,
                      q: str | None = Query(None, max_length=200, description="search the explanations"),
                      page: int = Query(1, ge=1, le=MAX_PAGE), labeled: bool = Query(False)) -> HTMLResponse:
    info = _sae_or_404(repo, model, sae)
    q = (q or "").strip()
    if q:
        hits = repo.search.text(q, sae_id=info.id, limit=PAGE_SIZE * 3)  # several explanations per feature
        items = repo.reads.summaries(info.id, list(dict.fromkeys(h.index for h in hits))[:PAGE_SIZE])
        total, pages = len(items), 1
    else:
        has_label = True if labeled else None
        items = repo.reads.list_features(info.id, has_label=has_label, limit=PAGE_SIZE,
                                         offset=(page - 1) * PAGE_SIZE)
        total = repo.reads.count_features(info.id, has_label=has_label)
        pages = max(1, math.ceil(total / PAGE_SIZE))
    return templates.TemplateResponse(request, "sae.html", {
        "sae": info, "items": items, "q": q, "page": page, "pages": pages, "total": total, "labeled": labeled,
        "n_labeled": repo.reads.count_features(info.id, has_label=True),
    })


def feature_context(repo: Repository, stores: StoreCache, model: str, sae: str, index: int) -> dict[str, Any]:
    """What feature.html shows of one feature (the steering routes render it with their results)."""
    info = _sae_or_404(repo, model, sae)
    view = repo.reads.feature(info.id, index)
    if view is None:
        raise HTTPException(status_code=404, detail=f"{model}/{sae} has no feature {index} "
                                                    f"(it has {info.n_features})")
    store = store_for(stores, info)
    top_ctx, sampled_ctx, promoted, suppressed = [], [], [], []
    if store is not None and 0 <= index < store.n_features:
        rec = store.feature(index)
        top_ctx = contexts(rec, ("top",), 10)
        sampled_ctx = contexts(rec, ("quantile", "sample"), 10)
        promoted, suppressed = rec.promoted_tokens, rec.suppressed_tokens
    neighbours = nearest_features(repo, info.id, index)
    labels = repo.reads.labels_for(info.id, [i for i, _ in neighbours])
    return {
        "sae": info, "index": index, "f": view, "explanations": list(reversed(view.explanations)),
        "top_ctx": top_ctx, "sampled_ctx": sampled_ctx, "store_available": store is not None,
        "promoted": promoted, "suppressed": suppressed,
        "model_class": (store.manifest.get("model") or {}).get("class") if store is not None else None,
        "neighbours": [(i, sim, labels.get(i)) for i, sim in neighbours],
        "hist": histogram_svg(view.stats.get("hist_edges") or [], view.stats.get("hist_counts") or []),
        "stats": view.stats,
    }


@router.get("/features/{model}/{sae}/{index}", response_class=HTMLResponse)
def feature_page(request: Request, repo: RepoDep, stores: StoresDep, model: str, sae: str,
                 index: int = FeatureIndex) -> HTMLResponse:
    return templates.TemplateResponse(request, "feature.html", feature_context(repo, stores, model, sae, index))
