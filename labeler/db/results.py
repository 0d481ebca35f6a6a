"""Results: explanations and scores, written idempotently, with their LLM spend.

Inserting an existing key is a no-op that returns the existing row's id, so a retried task
never duplicates work; the one exception is a stored *failure*, which a later attempt with the
same key replaces (a failure is not finished work).  Each write updates the feature's label in
the same transaction (``labeler.db.labels``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from labeler.core.errors import InputError
from labeler.db.database import Database
from labeler.db.keys import clean_text, config_hash, explanation_key, float_or_none, json_safe, score_key
from labeler.db.labels import lock_feature, refresh_label
from labeler.db.models import ExplanationRow, Feature, LlmUsageRow, ScoreRow, utcnow
from labeler.records import Explanation, LLMUsage, ScoreResult

T_FEATURE = Feature.__table__
T_EXP = ExplanationRow.__table__
T_SCORE = ScoreRow.__table__
T_USAGE = LlmUsageRow.__table__


def _key_of(exp: Explanation) -> tuple[dict, str, str]:
    cfg = json_safe(exp.config or {})
    chash = config_hash(cfg)
    key = explanation_key(exp.explainer, exp.llm_model, exp.prompt_name, exp.prompt_version, exp.prompt_hash, chash)
    return cfg, chash, key


def _spent(usage: LLMUsage) -> bool:
    return bool(usage.calls or usage.prompt_tokens or usage.cost_usd)


class Results:
    def __init__(self, db: Database):
        self.db = db

    def save_explanation(self, sae_id: int, exp: Explanation, job_id: int | None = None) -> int:
        """Store an explanation (or a failure); idempotent on its key.  Returns its id."""
        if not exp.explainer:
            raise InputError("an explanation needs an explainer name")
        cfg, chash, key = _key_of(exp)
        index = int(exp.feature)
        usage = exp.usage
        values = dict(
            sae_id=sae_id, feature_index=index, key=key, config=cfg, config_hash=chash,
            text=clean_text(exp.text or "") or "", explainer=exp.explainer, llm_model=exp.llm_model,
            prompt_name=exp.prompt_name, prompt_version=exp.prompt_version, prompt_hash=exp.prompt_hash,
            calls=usage.calls, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cost_usd=float(usage.cost_usd), failed=bool(exp.failed), error=clean_text(exp.error),
            raw=clean_text(exp.raw), candidates=json_safe(exp.candidates or []),
            example_windows=json_safe(exp.example_windows or []), job_id=job_id, created_at=utcnow(),
        )
        stmt = self.db.insert(T_EXP).values(**values)
        replace = {k: stmt.excluded[k] for k in values if k not in ("sae_id", "feature_index", "key")}
        # A stored failure is replaced by a later attempt; anything else stays as first written.
        stmt = stmt.on_conflict_do_update(index_elements=["sae_id", "feature_index", "key"], set_=replace,
                                          where=T_EXP.c.failed == sa.true()).returning(T_EXP.c.id)
        with self.db.engine.begin() as c:
            c.execute(self.db.insert(T_FEATURE).values(sae_id=sae_id, index=index)
                      .on_conflict_do_nothing(index_elements=["sae_id", "index"]))
            lock_feature(c, self.db.dialect, sae_id, index)
            new_id = c.execute(stmt).scalar_one_or_none()
            if new_id is None:  # the same work was finished before: keep it
                return c.execute(sa.select(T_EXP.c.id).where(
                    T_EXP.c.sae_id == sae_id, T_EXP.c.feature_index == index, T_EXP.c.key == key)).scalar_one()
            if _spent(usage):
                self._record_usage(c, job_id, sae_id, index, "explain", exp.llm_model, usage)
            refresh_label(c, sae_id, index)
        return new_id

    def stored_explanation(self, sae_id: int, exp_like: Explanation) -> tuple[int, str, list[int]] | None:
        """(id, text, example windows) of the finished explanation with ``exp_like``'s key, if any."""
        _, _, key = _key_of(exp_like)
        with self.db.read_engine.connect() as c:
            r = c.execute(sa.select(T_EXP.c.id, T_EXP.c.text, T_EXP.c.example_windows).where(
                T_EXP.c.sae_id == sae_id, T_EXP.c.feature_index == int(exp_like.feature), T_EXP.c.key == key,
                T_EXP.c.failed == sa.false())).first()
        if r is None or not (r.text or "").strip():
            return None
        return int(r.id), r.text, list(r.example_windows or [])

    def usable_explanations(self, sae_id: int, indices: list[int]) -> dict[int, list[tuple[int, str]]]:
        """Every finished explanation (id, text) of each feature, oldest first (``labeler score``)."""
        out: dict[int, list[tuple[int, str]]] = {i: [] for i in indices}
        if not indices:
            return out
        with self.db.read_engine.connect() as c:
            rows = c.execute(sa.select(T_EXP.c.id, T_EXP.c.feature_index, T_EXP.c.text).where(
                T_EXP.c.sae_id == sae_id, T_EXP.c.feature_index.in_(indices), T_EXP.c.failed == sa.false(),
                T_EXP.c.text != "").order_by(T_EXP.c.id)).all()
        for r in rows:
            out[r.feature_index].append((int(r.id), r.text))
        return out

    def find_score(self, exp_id: int, method: str, control: bool = False, llm_model: str | None = None,
                   prompt_version: str | None = None, options: dict | None = None) -> int | None:
        """Id of a finished (not failed) score with this key, else None."""
        key = score_key(method, control, llm_model, prompt_version, options)
        with self.db.read_engine.connect() as c:
            return c.execute(sa.select(T_SCORE.c.id).where(
                T_SCORE.c.explanation_id == exp_id, T_SCORE.c.key == key,
                T_SCORE.c.failed == sa.false())).scalar_one_or_none()

    def save_score(self, exp_id: int, result: ScoreResult) -> int:
        """Store a score of an explanation; idempotent on (explanation, method, control, LLM model,
        prompt version, non-default scorer options).  A stored failed score is replaced by a
        later attempt."""
        if not result.method:
            raise InputError("a score needs a method name")
        with self.db.read_engine.connect() as c:
            exp = c.execute(sa.select(T_EXP.c.sae_id, T_EXP.c.feature_index, T_EXP.c.job_id)
                            .where(T_EXP.c.id == exp_id)).first()
        if exp is None:
            raise InputError(f"cannot save a score: explanation {exp_id} does not exist")
        usage = result.usage
        key = score_key(result.method, result.control, result.llm_model, result.prompt_version, result.options)
        values = dict(
            explanation_id=exp_id, key=key, method=result.method, value=float_or_none(result.value),
            metrics=json_safe(result.metrics or {}), control=bool(result.control), llm_model=result.llm_model,
            prompt_name=result.prompt_name, prompt_version=result.prompt_version,
            example_windows=json_safe(result.example_windows or []), details=json_safe(result.details or {}),
            options=json_safe(result.options) if result.options else None,
            calls=usage.calls, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cost_usd=float(usage.cost_usd), failed=bool(result.failed), error=clean_text(result.error),
            created_at=utcnow(),
        )
        stmt = self.db.insert(T_SCORE).values(**values)
        replace = {k: stmt.excluded[k] for k in values if k not in ("explanation_id", "key")}
        stmt = stmt.on_conflict_do_update(index_elements=["explanation_id", "key"], set_=replace,
                                          where=T_SCORE.c.failed == sa.true()).returning(T_SCORE.c.id)
        with self.db.engine.begin() as c:
            lock_feature(c, self.db.dialect, exp.sae_id, exp.feature_index)
            new_id = c.execute(stmt).scalar_one_or_none()
            if new_id is None:
                return c.execute(sa.select(T_SCORE.c.id).where(T_SCORE.c.explanation_id == exp_id,
                                                               T_SCORE.c.key == key)).scalar_one()
            if _spent(usage):
                self._record_usage(c, exp.job_id, exp.sae_id, exp.feature_index, f"score:{result.method}",
                                   result.llm_model, usage)
            refresh_label(c, exp.sae_id, exp.feature_index)
        return new_id

    @staticmethod
    def _record_usage(c: sa.Connection, job_id: int | None, sae_id: int, index: int, purpose: str,
                      llm_model: str | None, usage: LLMUsage) -> None:
        c.execute(T_USAGE.insert().values(
            job_id=job_id, sae_id=sae_id, feature_index=index, purpose=purpose, llm_model=llm_model,
            calls=usage.calls, cached_calls=usage.cached_calls, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, cost_usd=float(usage.cost_usd), created_at=utcnow()))

    def usage_totals(self, *, job_id: int | None = None) -> dict[str, Any]:
        """LLM spend recorded with saved explanations and scores (optionally for one job)."""
        q = sa.select(sa.func.coalesce(sa.func.sum(T_USAGE.c.calls), 0),
                      sa.func.coalesce(sa.func.sum(T_USAGE.c.prompt_tokens), 0),
                      sa.func.coalesce(sa.func.sum(T_USAGE.c.completion_tokens), 0),
                      sa.func.coalesce(sa.func.sum(T_USAGE.c.cost_usd), 0.0))
        if job_id is not None:
            q = q.where(T_USAGE.c.job_id == job_id)
        with self.db.read_engine.connect() as c:
            r = c.execute(q).one()
        return {"calls": int(r[0]), "prompt_tokens": int(r[1]), "completion_tokens": int(r[2]), "cost_usd": float(r[3])}
