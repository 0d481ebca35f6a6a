"""Read-only queries for reports and feature pages (plain SQLAlchemy on labeler.db.models).

They take a SQLAlchemy engine, a database URL, or a ``Repository`` (its ``engine``), so
reports work against SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from labeler.core.errors import InputError
from labeler.db import models as m
from labeler.report.data import ExplanationRow, FeatureRow, ReportData, ScoreRow, config_label


@lru_cache(maxsize=16)
def _engine_for_url(url: str) -> sa.Engine:
    from labeler.db.engine import make_engines

    return make_engines(url)[1]  # the read engine (SQLite: never blocks writers)


def engine_of(source: Any) -> sa.Engine:
    if isinstance(source, sa.Engine):
        return source
    if isinstance(source, str):
        return _engine_for_url(source)
    for attr in ("read_engine", "reader", "engine"):
        eng = getattr(source, attr, None)
        if isinstance(eng, sa.Engine):
            return eng
    url = getattr(source, "url", None)
    if isinstance(url, str):
        return _engine_for_url(url)
    raise TypeError(f"need an engine, a database URL or a Repository, got {type(source).__name__}")


@dataclass
class SaeInfo:
    id: int
    model_slug: str
    model_name: str
    slug: str
    name: str
    hook: str | None
    n_features: int
    store_path: str | None
    n_labeled: int = 0


def list_saes(source: Any) -> list[SaeInfo]:
    S, M, F = m.Sae.__table__, m.SubjectModel.__table__, m.Feature.__table__
    labeled = (sa.select(F.c.sae_id, sa.func.count().label("n"))
               .where(F.c.label_text.is_not(None)).group_by(F.c.sae_id).subquery())
    q = (sa.select(S.c.id, M.c.slug.label("model_slug"), M.c.name.label("model_name"), S.c.slug, S.c.name,
                   S.c.hook, S.c.n_features, S.c.store_path, sa.func.coalesce(labeled.c.n, 0).label("n_labeled"))
         .join(M, M.c.id == S.c.model_id).outerjoin(labeled, labeled.c.sae_id == S.c.id)
         .order_by(M.c.slug, S.c.slug))
    with engine_of(source).connect() as c:
        return [SaeInfo(**dict(r._mapping)) for r in c.execute(q)]


def resolve_sae(source: Any, spec: str | int) -> SaeInfo:
    """Find an SAE by id, ``model_slug/sae_slug`` or a unique SAE slug; InputError otherwise."""
    saes = list_saes(source)
    spec_s = str(spec).strip()
    if spec_s.isdigit():
        hits = [s for s in saes if s.id == int(spec_s)]
    elif "/" in spec_s:
        model, _, sae = spec_s.rpartition("/")
        hits = [s for s in saes if s.model_slug == model and s.slug == sae]
    else:
        hits = [s for s in saes if s.slug == spec_s]
    if len(hits) == 1:
        return hits[0]
    known = ", ".join(f"{s.model_slug}/{s.slug} (id {s.id})" for s in saes) or "none (run `labeler label` first)"
    if not hits:
        raise InputError(f"no SAE {spec_s!r} in the database; known SAEs: {known}")
    raise InputError(f"SAE slug {spec_s!r} is ambiguous; use model/sae: {known}")


def load_report_data(source: Any, sae: SaeInfo | str | int, *, title: str | None = None,
                     features: list[int] | None = None) -> ReportData:
    """Every feature, explanation and score of one SAE (optionally only some features)."""
    info = sae if isinstance(sae, SaeInfo) else resolve_sae(source, sae)
    F, E, Sc = m.Feature.__table__, m.ExplanationRow.__table__, m.ScoreRow.__table__
    fq = sa.select(F.c.index, F.c.density, F.c.max, F.c.count).where(F.c.sae_id == info.id)
    eq = sa.select(E).where(E.c.sae_id == info.id)
    sq = (sa.select(Sc.c.explanation_id, Sc.c.method, Sc.c.value, Sc.c.control, Sc.c.cost_usd,
                    Sc.c.prompt_tokens, Sc.c.completion_tokens, Sc.c.failed, E.c.feature_index)
          .join(E, E.c.id == Sc.c.explanation_id).where(E.c.sae_id == info.id))
    if features is not None:
        fq = fq.where(F.c.index.in_(features))
        eq = eq.where(E.c.feature_index.in_(features))
        sq = sq.where(E.c.feature_index.in_(features))
    with engine_of(source).connect() as c:
        frows = {r.index: FeatureRow(index=r.index, density=r.density, max_activation=r.max, count=r.count)
                 for r in c.execute(fq)}
        erows = list(c.execute(eq.order_by(E.c.id)))
        srows = list(c.execute(sq.order_by(Sc.c.id)))

    # Configurations that share explainer/model/prompt but differ in options get a hash suffix.
    hashes: dict[str, set[str]] = defaultdict(set)
    for r in erows:
        hashes[config_label(r.explainer, r.llm_model, r.prompt_version)].add(r.config_hash)
    exps = []
    for r in erows:
        base = config_label(r.explainer, r.llm_model, r.prompt_version)
        label = config_label(r.explainer, r.llm_model, r.prompt_version,
                             r.config_hash[:6] if len(hashes[base]) > 1 else None)
        exps.append(ExplanationRow(
            id=r.id, feature=r.feature_index, label=label, explainer=r.explainer, text=r.text,
            llm_model=r.llm_model, prompt_name=r.prompt_name, prompt_version=r.prompt_version,
            config_hash=r.config_hash, job_id=r.job_id, cost_usd=r.cost_usd or 0.0, prompt_tokens=r.prompt_tokens or 0,
            completion_tokens=r.completion_tokens or 0, failed=bool(r.failed)))
    label_of = {e.id: e.label for e in exps}
    scores = [ScoreRow(explanation_id=r.explanation_id, feature=r.feature_index, label=label_of[r.explanation_id],
                       method=r.method, value=r.value, control=bool(r.control), cost_usd=r.cost_usd or 0.0,
                       prompt_tokens=r.prompt_tokens or 0, completion_tokens=r.completion_tokens or 0,
                       failed=bool(r.failed))
              for r in srows]
    return ReportData(title=title or f"{info.model_name} / {info.name}", model=info.model_slug, sae=info.slug,
                      features=frows, explanations=exps, scores=scores, store_path=info.store_path)


# --- feature pages -----------------------------------------------------------------------------

@dataclass
class FeatureListItem:
    index: int
    density: float | None
    max: float | None
    label_text: str | None
    label_method: str | None
    label_score: float | None


def _item(r: Any) -> FeatureListItem:
    return FeatureListItem(index=r.index, density=r.density, max=r.max, label_text=r.label_text,
                           label_method=r.label_method, label_score=r.label_score)


def list_features(source: Any, sae_id: int, *, offset: int = 0, limit: int = 50,
                  labeled_only: bool = False) -> tuple[list[FeatureListItem], int]:
    F = m.Feature.__table__
    cond = [F.c.sae_id == sae_id]
    if labeled_only:
        cond.append(F.c.label_text.is_not(None))
    cols = (F.c.index, F.c.density, F.c.max, F.c.label_text, F.c.label_method, F.c.label_score)
    with engine_of(source).connect() as c:
        total = c.execute(sa.select(sa.func.count()).select_from(F).where(*cond)).scalar_one()
        rows = c.execute(sa.select(*cols).where(*cond).order_by(F.c.index).offset(offset).limit(limit))
        return [_item(r) for r in rows], int(total)


def search_features_text(source: Any, sae_id: int, query: str, limit: int = 50) -> list[FeatureListItem]:
    """Features whose explanations contain every word of ``query`` (case-insensitive).

    The fallback when the API offers no search of its own; best label score first.
    """
    F, E = m.Feature.__table__, m.ExplanationRow.__table__
    words = [w for w in query.lower().split() if w]
    if not words:
        return []
    matching = sa.select(E.c.feature_index).where(E.c.sae_id == sae_id, E.c.failed.is_(False),
                                                  *[sa.func.lower(E.c.text).contains(w, autoescape=True) for w in words])
    q = (sa.select(F.c.index, F.c.density, F.c.max, F.c.label_text, F.c.label_method, F.c.label_score)
         .where(F.c.sae_id == sae_id, F.c.index.in_(matching))
         .order_by(sa.func.coalesce(F.c.label_score, -1e9).desc(), F.c.index).limit(limit))
    with engine_of(source).connect() as c:
        return [_item(r) for r in c.execute(q)]


def labels_for(source: Any, sae_id: int, indices: list[int]) -> dict[int, str | None]:
    F = m.Feature.__table__
    if not indices:
        return {}
    with engine_of(source).connect() as c:
        rows = c.execute(sa.select(F.c.index, F.c.label_text).where(F.c.sae_id == sae_id, F.c.index.in_(indices)))
        return {r.index: r.label_text for r in rows}


def feature_detail(source: Any, sae_id: int, index: int) -> dict[str, Any] | None:
    """The feature row plus its explanations (newest first), each with its scores."""
    F, E, Sc = m.Feature.__table__, m.ExplanationRow.__table__, m.ScoreRow.__table__
    with engine_of(source).connect() as c:
        f = c.execute(sa.select(F).where(F.c.sae_id == sae_id, F.c.index == index)).first()
        if f is None:
            return None
        exps = list(c.execute(sa.select(E).where(E.c.sae_id == sae_id, E.c.feature_index == index)
                              .order_by(E.c.id.desc())))
        ids = [e.id for e in exps]
        scores = list(c.execute(sa.select(Sc).where(Sc.c.explanation_id.in_(ids)).order_by(Sc.c.method))) if ids else []
    by_exp: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for s in scores:
        by_exp[s.explanation_id].append({"method": s.method, "value": s.value, "control": bool(s.control),
                                         "llm_model": s.llm_model, "failed": bool(s.failed), "error": s.error})
    return {
        "feature": dict(f._mapping),
        "explanations": [{**{k: e._mapping[k] for k in ("id", "text", "explainer", "llm_model", "prompt_name",
                                                         "prompt_version", "failed", "error", "cost_usd")},
                          "label": config_label(e.explainer, e.llm_model, e.prompt_version),
                          "scores": by_exp.get(e.id, [])} for e in exps],
    }


def list_features_by_index(source: Any, sae_id: int, indices: list[int]) -> list[FeatureListItem]:
    F = m.Feature.__table__
    if not indices:
        return []
    q = (sa.select(F.c.index, F.c.density, F.c.max, F.c.label_text, F.c.label_method, F.c.label_score)
         .where(F.c.sae_id == sae_id, F.c.index.in_(indices)))
    with engine_of(source).connect() as c:
        return [_item(r) for r in c.execute(q)]
