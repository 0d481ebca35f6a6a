"""Reads of features and their results, returning the view models of ``labeler.db.views``."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterator, Sequence

import sqlalchemy as sa

from labeler.core.errors import InputError
from labeler.db.catalog import T_SAE, sae_select, sae_view
from labeler.db.database import Database
from labeler.db.keys import iso
from labeler.db.models import ExplanationRow as ExplanationTable
from labeler.db.models import Feature, ScoreRow as ScoreTable
from labeler.db.views import (ExplanationRow, ExplanationView, FeatureRow, FeatureSummary, FeatureView, LabelRow,
                              LabelView, SaeResults, SaeView, ScoreRow, ScoreView, UsageView, configuration_name,
                              scored_method)

T_FEATURE = Feature.__table__
T_EXP = ExplanationTable.__table__
T_SCORE = ScoreTable.__table__

SORT_FIELDS = ("index", "score", "density", "max", "count")


def _usage(r: Any) -> UsageView:
    return UsageView(calls=r["calls"], prompt_tokens=r["prompt_tokens"], completion_tokens=r["completion_tokens"],
                     cost_usd=r["cost_usd"])


def summary(r: Any) -> FeatureSummary:
    stats = dict(r["stats"] or {})
    for k in ("count", "density", "max", "mean"):
        stats[k] = r[k]
    label = None
    if r["label_explanation_id"] is not None:
        label = LabelView(explanation_id=r["label_explanation_id"], text=r["label_text"], method=r["label_method"],
                          score=r["label_score"])
    return FeatureSummary(index=r["index"], stats=stats, label=label)


class Reads:
    def __init__(self, db: Database):
        self.db = db

    def _sae(self, c: sa.Connection, sae_id: int) -> SaeView | None:
        r = c.execute(sae_select().where(T_SAE.c.id == sae_id)).mappings().first()
        return sae_view(r) if r else None

    def _explanations(self, c: sa.Connection, sae_id: int, indices: Sequence[int], *,
                      with_details: bool) -> dict[int, list[ExplanationView]]:
        rows = c.execute(sa.select(T_EXP).where(T_EXP.c.sae_id == sae_id, T_EXP.c.feature_index.in_(list(indices)))
                         .order_by(T_EXP.c.feature_index, T_EXP.c.id)).mappings().all()
        if not rows:
            return {}
        cols = [col for col in T_SCORE.c if with_details or col.name != "details"]
        scores: dict[int, list[ScoreView]] = defaultdict(list)
        for s in c.execute(sa.select(*cols).where(T_SCORE.c.explanation_id.in_([r["id"] for r in rows]))
                           .order_by(T_SCORE.c.id)).mappings().all():
            scores[s["explanation_id"]].append(ScoreView(
                id=s["id"], method=s["method"], value=s["value"], metrics=s["metrics"] or {}, control=s["control"],
                llm_model=s["llm_model"], prompt_name=s["prompt_name"], prompt_version=s["prompt_version"],
                example_windows=s["example_windows"] or [], failed=s["failed"], error=s["error"], usage=_usage(s),
                created_at=iso(s["created_at"]), details=(s["details"] or {}) if with_details else None,
                options=s["options"] or {}))
        out: dict[int, list[ExplanationView]] = defaultdict(list)
        for r in rows:
            out[r["feature_index"]].append(ExplanationView(
                id=r["id"], feature=r["feature_index"], text=r["text"], explainer=r["explainer"],
                llm_model=r["llm_model"], prompt_name=r["prompt_name"], prompt_version=r["prompt_version"],
                prompt_hash=r["prompt_hash"], config=r["config"] or {}, config_hash=r["config_hash"],
                failed=r["failed"], error=r["error"], usage=_usage(r), example_windows=r["example_windows"] or [],
                candidates=r["candidates"] or [], job_id=r["job_id"], created_at=iso(r["created_at"]),
                scores=scores.get(r["id"], [])))
        return out

    def feature(self, sae_id: int, index: int, *, with_details: bool = False) -> FeatureView | None:
        """Statistics, the label and every explanation (with its scores) of one feature; None
        when the SAE has no such feature."""
        views = self.features(sae_id, [index], with_details=with_details)
        return views[0] if views else None

    def features(self, sae_id: int, indices: Sequence[int], *, with_details: bool = False) -> list[FeatureView]:
        """``feature`` for many features in four queries; unknown indices are left out."""
        indices = list(dict.fromkeys(int(i) for i in indices))
        if not indices:
            return []
        with self.db.read_engine.connect() as c:
            sae = self._sae(c, sae_id)
            if sae is None:
                return []
            feats = c.execute(sa.select(T_FEATURE).where(T_FEATURE.c.sae_id == sae_id,
                                                         T_FEATURE.c.index.in_(indices))).mappings().all()
            exps = self._explanations(c, sae_id, indices, with_details=with_details)
        by_index = {f["index"]: f for f in feats}
        return [FeatureView(model=sae.model, sae=sae.sae, explanations=exps.get(i, []),
                            **summary(by_index[i]).model_dump())
                for i in indices if i in by_index]

    def summaries(self, sae_id: int, indices: Sequence[int]) -> list[FeatureSummary]:
        """Statistics and labels of some features, in the order given; unknown ones left out."""
        indices = list(dict.fromkeys(int(i) for i in indices))
        if not indices:
            return []
        with self.db.read_engine.connect() as c:
            rows = c.execute(sa.select(T_FEATURE).where(T_FEATURE.c.sae_id == sae_id,
                                                        T_FEATURE.c.index.in_(indices))).mappings().all()
        by_index = {r["index"]: summary(r) for r in rows}
        return [by_index[i] for i in indices if i in by_index]

    def list_features(self, sae_id: int, *, min_score: float | None = None, max_score: float | None = None,
                      min_density: float | None = None, max_density: float | None = None,
                      method: str | None = None, has_label: bool | None = None, sort: str = "index",
                      limit: int = 100, offset: int = 0) -> list[FeatureSummary]:
        """Features of an SAE (statistics + label), filtered and sorted.  Score bounds apply to
        the label's score, or with ``method`` to that method's best non-control score."""
        desc = sort.startswith("-")
        field = sort.lstrip("-")
        if field not in SORT_FIELDS:
            raise InputError(f"cannot sort by {sort!r}: use one of {', '.join(SORT_FIELDS)} (prefix - for descending)")
        q = sa.select(T_FEATURE).where(*self._filters(sae_id, min_score, max_score, min_density, max_density,
                                                      method, has_label))
        col = {"index": T_FEATURE.c.index, "score": T_FEATURE.c.label_score, "density": T_FEATURE.c.density,
               "max": T_FEATURE.c.max, "count": T_FEATURE.c.count}[field]
        order = col.desc().nulls_last() if desc else col.asc().nulls_last()
        q = q.order_by(order, T_FEATURE.c.index).limit(limit).offset(offset)
        with self.db.read_engine.connect() as c:
            return [summary(r) for r in c.execute(q).mappings().all()]

    def count_features(self, sae_id: int, *, has_label: bool | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(T_FEATURE).where(
            *self._filters(sae_id, None, None, None, None, None, has_label))
        with self.db.read_engine.connect() as c:
            return int(c.execute(q).scalar_one())

    @staticmethod
    def _filters(sae_id: int, min_score: float | None, max_score: float | None, min_density: float | None,
                 max_density: float | None, method: str | None, has_label: bool | None) -> list[Any]:
        cond: list[Any] = [T_FEATURE.c.sae_id == sae_id]
        if min_density is not None:
            cond.append(T_FEATURE.c.density >= min_density)
        if max_density is not None:
            cond.append(T_FEATURE.c.density <= max_density)
        if has_label is True:
            cond.append(T_FEATURE.c.label_explanation_id.is_not(None))
        elif has_label is False:
            cond.append(T_FEATURE.c.label_explanation_id.is_(None))
        if method is None:
            if min_score is not None:
                cond.append(T_FEATURE.c.label_score >= min_score)
            if max_score is not None:
                cond.append(T_FEATURE.c.label_score <= max_score)
            return cond
        scored = [T_EXP.c.sae_id == T_FEATURE.c.sae_id, T_EXP.c.feature_index == T_FEATURE.c.index,
                  T_EXP.c.failed == sa.false(), T_SCORE.c.method == method, T_SCORE.c.control == sa.false(),
                  T_SCORE.c.failed == sa.false(), T_SCORE.c.value.is_not(None)]
        if min_score is not None:
            scored.append(T_SCORE.c.value >= min_score)
        if max_score is not None:
            scored.append(T_SCORE.c.value <= max_score)
        cond.append(sa.exists(sa.select(T_SCORE.c.id).join(T_EXP, T_EXP.c.id == T_SCORE.c.explanation_id)
                              .where(*scored)))
        return cond

    def labels_for(self, sae_id: int, indices: Sequence[int]) -> dict[int, str | None]:
        if not indices:
            return {}
        with self.db.read_engine.connect() as c:
            rows = c.execute(sa.select(T_FEATURE.c.index, T_FEATURE.c.label_text)
                             .where(T_FEATURE.c.sae_id == sae_id, T_FEATURE.c.index.in_(list(indices))))
            return {r.index: r.label_text for r in rows}

    def iter_labels(self, sae_id: int, *, batch_size: int = 2000) -> Iterator[LabelRow]:
        """Every feature of an SAE with its label and explanation provenance, in index order
        (keyset pagination, so memory stays flat for a million features)."""
        last = -1
        with self.db.read_engine.connect() as c:
            sae = self._sae(c, sae_id)
            if sae is None:
                return
            while True:
                rows = c.execute(
                    sa.select(T_FEATURE.c.index, T_FEATURE.c.density, T_FEATURE.c.max, T_FEATURE.c.count,
                              T_FEATURE.c.label_text, T_FEATURE.c.label_method, T_FEATURE.c.label_score,
                              T_EXP.c.id.label("exp_id"), T_EXP.c.explainer, T_EXP.c.llm_model,
                              T_EXP.c.prompt_name, T_EXP.c.prompt_version, T_EXP.c.prompt_hash,
                              T_EXP.c.created_at)
                    .outerjoin(T_EXP, T_EXP.c.id == T_FEATURE.c.label_explanation_id)
                    .where(T_FEATURE.c.sae_id == sae_id, T_FEATURE.c.index > last)
                    .order_by(T_FEATURE.c.index).limit(batch_size)).mappings().all()
                if not rows:
                    return
                for r in rows:
                    yield LabelRow(model=sae.model, sae=sae.sae, hook=sae.hook, index=r["index"],
                                   label=r["label_text"], label_method=r["label_method"],
                                   label_score=r["label_score"], explanation_id=r["exp_id"],
                                   explainer=r["explainer"], llm_model=r["llm_model"], prompt_name=r["prompt_name"],
                                   prompt_version=r["prompt_version"], prompt_hash=r["prompt_hash"],
                                   density=r["density"], max=r["max"], count=r["count"],
                                   created_at=iso(r["created_at"]))
                last = rows[-1]["index"]

    def results(self, sae_id: int, features: Sequence[int] | None = None) -> SaeResults:
        """Every feature, explanation and score of one SAE (optionally of some features only)."""
        fq = sa.select(T_FEATURE.c.index, T_FEATURE.c.density, T_FEATURE.c.max, T_FEATURE.c.count).where(
            T_FEATURE.c.sae_id == sae_id)
        eq = sa.select(T_EXP).where(T_EXP.c.sae_id == sae_id)
        sq = (sa.select(T_SCORE.c.explanation_id, T_SCORE.c.method, T_SCORE.c.options, T_SCORE.c.value,
                        T_SCORE.c.control, T_SCORE.c.cost_usd, T_SCORE.c.prompt_tokens,
                        T_SCORE.c.completion_tokens, T_SCORE.c.failed, T_EXP.c.feature_index)
              .join(T_EXP, T_EXP.c.id == T_SCORE.c.explanation_id).where(T_EXP.c.sae_id == sae_id))
        if features is not None:
            wanted = list(features)
            fq = fq.where(T_FEATURE.c.index.in_(wanted))
            eq = eq.where(T_EXP.c.feature_index.in_(wanted))
            sq = sq.where(T_EXP.c.feature_index.in_(wanted))
        with self.db.read_engine.connect() as c:
            sae = self._sae(c, sae_id)
            if sae is None:
                raise InputError(f"no SAE with id {sae_id} in the database")
            frows = {r.index: FeatureRow(index=r.index, density=r.density, max_activation=r.max, count=r.count)
                     for r in c.execute(fq)}
            erows = list(c.execute(eq.order_by(T_EXP.c.id)))
            srows = list(c.execute(sq.order_by(T_SCORE.c.id)))
        # Configurations that share explainer/model/prompt but differ in options get a hash suffix.
        hashes: dict[str, set[str]] = defaultdict(set)
        for r in erows:
            hashes[configuration_name(r.explainer, r.llm_model, r.prompt_version)].add(r.config_hash)

        def name(r: Any) -> str:
            base = configuration_name(r.explainer, r.llm_model, r.prompt_version)
            return configuration_name(r.explainer, r.llm_model, r.prompt_version,
                                      r.config_hash[:6] if len(hashes[base]) > 1 else None)

        exps = [ExplanationRow(id=r.id, feature=r.feature_index, configuration=name(r), explainer=r.explainer,
                               text=r.text, llm_model=r.llm_model, prompt_name=r.prompt_name,
                               prompt_version=r.prompt_version, config_hash=r.config_hash, job_id=r.job_id,
                               cost_usd=r.cost_usd or 0.0, prompt_tokens=r.prompt_tokens or 0,
                               completion_tokens=r.completion_tokens or 0, failed=bool(r.failed))
                for r in erows]
        configuration_of = {e.id: e.configuration for e in exps}
        scores = [ScoreRow(explanation_id=r.explanation_id, feature=r.feature_index,
                           configuration=configuration_of[r.explanation_id],
                           method=scored_method(r.method, r.options), value=r.value, control=bool(r.control),
                           cost_usd=r.cost_usd or 0.0, prompt_tokens=r.prompt_tokens or 0,
                           completion_tokens=r.completion_tokens or 0, failed=bool(r.failed))
                  for r in srows]
        return SaeResults(sae=sae, features=frows, explanations=exps, scores=scores)
