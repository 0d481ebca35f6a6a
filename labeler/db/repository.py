"""All database reads and writes go through ``Repository``.

Writes are idempotent: explanations are keyed by (SAE, feature, explainer, LLM model, prompt
name/version/hash, config hash) and scores by (explanation, method, control, LLM model, prompt
version).  Inserting an existing key is a no-op that returns the existing row's id, so a
retried task never duplicates work.  One exception: a stored *failure* is replaced when the
same key later succeeds (a failure is not finished work).

"The label" of a feature (``label_rule`` below, documented in docs/labels.md):
1. Candidates are the feature's explanations that did not fail and have non-empty text.
2. Methods are tried in the order ``LABEL_METHOD_ORDER`` (simulation first).  The first method
   for which at least one candidate has a usable score (not a control, not failed, value not
   NULL) decides: the candidate with the highest such value wins (its best value if scored
   more than once).
3. No candidate has any usable score: the most recently saved candidate is the label (with no
   score).  Ties are broken by the most recently saved explanation.
Failed explanations never become the label.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any, Iterable, Iterator, Sequence

import sqlalchemy as sa

from labeler.core.errors import InputError
from labeler.core.naming import slugify
from labeler.db import engine as _engine
from labeler.db.models import (
    ExplanationEmbedding,
    ExplanationRow,
    Feature,
    Job,
    JobFeature,
    LlmUsageRow,
    Sae,
    ScoreRow,
    SubjectModel,
    utcnow,
)
from labeler.records import Explanation, LLMUsage, ScoreResult

LABEL_METHOD_ORDER = ("simulation", "fuzzing", "detection", "embedding", "rubric")
JOB_STATUSES = ("pending", "running", "cancelled", "done", "failed")
FEATURE_STATUSES = ("pending", "done", "failed")
SORT_FIELDS = ("index", "score", "density", "max", "count")

T_MODEL = SubjectModel.__table__
T_SAE = Sae.__table__
T_FEATURE = Feature.__table__
T_EXP = ExplanationRow.__table__
T_SCORE = ScoreRow.__table__
T_EMB = ExplanationEmbedding.__table__
T_JOB = Job.__table__
T_JOBF = JobFeature.__table__
T_USAGE = LlmUsageRow.__table__


# --------------------------------------------------------------------------------------------
# keys


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def config_hash(config: dict | None) -> str:
    return _sha(config or {})


def explanation_key(explainer: str, llm_model: str | None, prompt_name: str | None,
                    prompt_version: str | None, prompt_hash: str | None, cfg_hash: str) -> str:
    return _sha(["exp", explainer, llm_model, prompt_name, prompt_version, prompt_hash, cfg_hash])


def score_key(method: str, control: bool, llm_model: str | None, prompt_version: str | None) -> str:
    return _sha(["score", method, bool(control), llm_model, prompt_version])


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _usage(obj: Any) -> LLMUsage:
    if obj is None:
        return LLMUsage()
    if isinstance(obj, LLMUsage):
        return obj
    if isinstance(obj, dict):
        return LLMUsage.from_dict({k: v for k, v in obj.items() if k in LLMUsage.__dataclass_fields__})
    return LLMUsage(**{k: getattr(obj, k, 0) for k in LLMUsage.__dataclass_fields__})


def _json_safe(obj: Any) -> Any:
    """JSON columns: dataclasses, numpy scalars and NaN (-> None) made storable everywhere."""
    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except (TypeError, ValueError):
            return obj.tolist() if hasattr(obj, "tolist") else str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _float_or_none(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _clean_text(s: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL characters."""
    return s.replace("\x00", "") if isinstance(s, str) else s


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() + "Z" if dt is not None else None


def _usage_dict(row: Any) -> dict[str, Any]:
    return {"calls": row.calls, "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens, "cost_usd": row.cost_usd}


# --------------------------------------------------------------------------------------------


class Repository:
    """Typed access to the labeler database (SQLite file by default, PostgreSQL by URL)."""

    def __init__(self, url: str | None = None):
        if url is None:
            from labeler.core.config import get_settings

            url = get_settings().resolved_database_url
        self.url = _engine.normalize_url(url)
        self.engine, self.read_engine = _engine.make_engines(self.url)
        self.dialect = self.engine.dialect.name

    def __repr__(self) -> str:
        return f"Repository({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()

    # --- schema -----------------------------------------------------------------------------

    def upgrade(self, revision: str = "head") -> None:
        """Apply Alembic migrations (``labeler db upgrade``)."""
        _engine.upgrade(self.engine, revision)

    def current_revision(self) -> str | None:
        return _engine.current_revision(self.read_engine)

    def _require_schema(self) -> None:
        if self.current_revision() is None:
            raise InputError(f"the database {self!r} has no labeler schema: run `labeler db upgrade` first")

    # --- dialect helpers --------------------------------------------------------------------

    def _insert(self, table: sa.Table):
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    # --- models, SAEs, features ---------------------------------------------------------------

    def ensure_model(self, name: str, path_or_id: str | None = None, conn: sa.Connection | None = None) -> int:
        slug = slugify(name)

        def run(c: sa.Connection) -> int:
            c.execute(self._insert(T_MODEL).values(slug=slug, name=name, path_or_id=path_or_id,
                                                   created_at=utcnow())
                      .on_conflict_do_nothing(index_elements=["slug"]))
            return c.execute(sa.select(T_MODEL.c.id).where(T_MODEL.c.slug == slug)).scalar_one()

        if conn is not None:
            return run(conn)
        with self.engine.begin() as c:
            return run(c)

    def ensure_sae(self, model_name: str, sae_name: str, *, n_features: int = 0, hook: str | None = None,
                   format: str | None = None, store_path: str | None = None, manifest: dict | None = None,
                   model_path_or_id: str | None = None) -> int:
        """Create or update an SAE row (and its model); returns the SAE id."""
        with self.engine.begin() as c:
            model_id = self.ensure_model(model_name, model_path_or_id, conn=c)
            values = dict(model_id=model_id, slug=slugify(sae_name), name=sae_name, hook=hook, format=format,
                          n_features=int(n_features), store_path=store_path,
                          manifest=_json_safe(manifest) if manifest is not None else None, created_at=utcnow())
            stmt = self._insert(T_SAE).values(**values)
            stmt = stmt.on_conflict_do_update(
                index_elements=["model_id", "slug"],
                set_={k: stmt.excluded[k] for k in ("name", "hook", "format", "n_features", "store_path", "manifest")},
            )
            c.execute(stmt)
            return c.execute(sa.select(T_SAE.c.id).where(T_SAE.c.model_id == model_id,
                                                         T_SAE.c.slug == values["slug"])).scalar_one()

    def register_store(self, store: Any, *, full_stats: bool | None = None, batch_size: int = 5000) -> int:
        """Upsert the subject model, the SAE and one row per feature with its statistics.

        ``full_stats``: also read every feature record for the full statistics (histogram,
        mean over firing tokens); default: only for stores with at most 65,536 features, since
        it reads the whole store.  Idempotent: re-registering updates, never duplicates."""
        manifest = dict(store.manifest)
        model_m = manifest.get("model", {}) or {}
        sae_m = manifest.get("sae", {}) or {}
        n = int(store.n_features)
        store_path = getattr(store, "path", None) or getattr(store, "root", None)
        sae_id = self.ensure_sae(
            store.model_name, store.sae_name, n_features=n, hook=model_m.get("hook"),
            format=sae_m.get("format"), store_path=str(store_path) if store_path else None,
            manifest=manifest, model_path_or_id=model_m.get("path_or_id"),
        )
        arrays = {k: list(v) for k, v in (store.all_stats() or {}).items()}
        for k, v in arrays.items():
            if len(v) != n:
                raise InputError(f"store statistics {k!r} have {len(v)} entries but the SAE has {n} features")
        if full_stats is None:
            full_stats = n <= 65_536
        records: dict[int, dict] = {}
        if full_stats and hasattr(store, "features"):
            for rec in store.features(range(n)):
                records[rec.feature] = rec.stats.to_dict()

        def row(i: int) -> dict[str, Any]:
            stats = {k: _json_safe(v[i]) for k, v in arrays.items()}
            stats.update(_json_safe(records.get(i, {})))
            count = stats.get("count")
            return dict(sae_id=sae_id, index=i, count=int(count) if count is not None else None,
                        density=_float_or_none(stats.get("density")), max=_float_or_none(stats.get("max")),
                        mean=_float_or_none(stats.get("mean")), stats=stats)

        self._upsert_features(sae_id, (row(i) for i in range(n)), batch_size)
        return sae_id

    def _upsert_features(self, sae_id: int, rows: Iterable[dict], batch_size: int = 5000) -> None:
        stmt = self._insert(T_FEATURE)
        stmt = stmt.on_conflict_do_update(
            index_elements=["sae_id", "index"],
            set_={k: stmt.excluded[k] for k in ("count", "density", "max", "mean", "stats")},
        )
        batch: list[dict] = []
        for r in rows:
            batch.append(r)
            if len(batch) >= batch_size:
                with self.engine.begin() as c:
                    c.execute(stmt, batch)
                batch = []
        if batch:
            with self.engine.begin() as c:
                c.execute(stmt, batch)

    def upsert_feature_stats(self, sae_id: int, index: int, stats: dict[str, Any]) -> None:
        """Set one feature's statistics (FeatureStats.to_dict()-like)."""
        stats = _json_safe(stats)
        self._upsert_features(sae_id, [dict(sae_id=sae_id, index=int(index),
                                            count=stats.get("count"), density=_float_or_none(stats.get("density")),
                                            max=_float_or_none(stats.get("max")),
                                            mean=_float_or_none(stats.get("mean")), stats=stats)])

    def sae_id_for(self, model_slug: str, sae_slug: str) -> int | None:
        with self.read_engine.connect() as c:
            return c.execute(
                sa.select(T_SAE.c.id).join(T_MODEL, T_MODEL.c.id == T_SAE.c.model_id)
                .where(T_MODEL.c.slug == model_slug, T_SAE.c.slug == sae_slug)
            ).scalar_one_or_none()

    def sae_info(self, sae_id: int) -> dict | None:
        with self.read_engine.connect() as c:
            r = c.execute(self._sae_select().where(T_SAE.c.id == sae_id)).mappings().first()
            return self._sae_dict(r) if r else None

    @staticmethod
    def _sae_select():
        return (sa.select(T_SAE, T_MODEL.c.slug.label("model_slug"), T_MODEL.c.name.label("model_name"))
                .join(T_MODEL, T_MODEL.c.id == T_SAE.c.model_id))

    @staticmethod
    def _sae_dict(r: Any) -> dict:
        return {"id": r["id"], "model": r["model_slug"], "model_name": r["model_name"], "sae": r["slug"],
                "name": r["name"], "hook": r["hook"], "format": r["format"], "n_features": r["n_features"],
                "store_path": r["store_path"], "created_at": _iso(r["created_at"])}

    def list_models(self, limit: int = 100, offset: int = 0) -> list[dict]:
        with self.read_engine.connect() as c:
            rows = c.execute(
                sa.select(T_MODEL.c.id, T_MODEL.c.slug, T_MODEL.c.name, T_MODEL.c.path_or_id,
                          sa.func.count(T_SAE.c.id).label("n_saes"))
                .outerjoin(T_SAE, T_SAE.c.model_id == T_MODEL.c.id)
                .group_by(T_MODEL.c.id).order_by(T_MODEL.c.slug).limit(limit).offset(offset)
            ).mappings().all()
        return [{"model": r["slug"], "name": r["name"], "path_or_id": r["path_or_id"], "n_saes": r["n_saes"]}
                for r in rows]

    def list_saes(self, model_slug: str | None = None, limit: int = 100, offset: int = 0) -> list[dict]:
        q = self._sae_select().order_by(T_MODEL.c.slug, T_SAE.c.slug).limit(limit).offset(offset)
        if model_slug is not None:
            q = q.where(T_MODEL.c.slug == model_slug)
        with self.read_engine.connect() as c:
            return [self._sae_dict(r) for r in c.execute(q).mappings().all()]

    def model_exists(self, model_slug: str) -> bool:
        with self.read_engine.connect() as c:
            return c.execute(sa.select(T_MODEL.c.id).where(T_MODEL.c.slug == model_slug)).first() is not None

    # --- explanations and scores ---------------------------------------------------------------

    def _explanation_values(self, sae_id: int, exp: Any) -> dict[str, Any]:
        cfg = _json_safe(_get(exp, "config") or {})
        chash = config_hash(cfg)
        key = explanation_key(_get(exp, "explainer"), _get(exp, "llm_model"), _get(exp, "prompt_name"),
                              _get(exp, "prompt_version"), _get(exp, "prompt_hash"), chash)
        return dict(sae_id=sae_id, feature_index=int(_get(exp, "feature")), key=key, config=cfg, config_hash=chash)

    def save_explanation(self, sae_id: int, exp: Explanation, job_id: int | None = None) -> int:
        """Store an explanation (or a failure); idempotent on its key.  Returns its id."""
        if not _get(exp, "explainer"):
            raise InputError("an explanation needs an explainer name")
        base = self._explanation_values(sae_id, exp)
        usage = _usage(_get(exp, "usage"))
        failed = bool(_get(exp, "failed", False))
        values = dict(
            base, text=_clean_text(_get(exp, "text") or "") or "", explainer=exp.explainer, llm_model=exp.llm_model,
            prompt_name=exp.prompt_name, prompt_version=exp.prompt_version, prompt_hash=exp.prompt_hash,
            calls=usage.calls, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cost_usd=float(usage.cost_usd), failed=failed, error=_clean_text(exp.error), raw=_clean_text(exp.raw),
            candidates=_json_safe(exp.candidates or []), example_windows=_json_safe(exp.example_windows or []),
            job_id=job_id, created_at=utcnow(),
        )
        stmt = self._insert(T_EXP).values(**values)
        replace = {k: stmt.excluded[k] for k in values if k not in ("sae_id", "feature_index", "key")}
        # A stored failure is replaced by a later attempt; anything else stays as first written.
        stmt = stmt.on_conflict_do_update(index_elements=["sae_id", "feature_index", "key"], set_=replace,
                                          where=T_EXP.c.failed == sa.true()).returning(T_EXP.c.id)
        with self.engine.begin() as c:
            self._ensure_feature_row(c, sae_id, values["feature_index"])
            new_id = c.execute(stmt).scalar_one_or_none()
            if new_id is None:
                return c.execute(sa.select(T_EXP.c.id).where(
                    T_EXP.c.sae_id == sae_id, T_EXP.c.feature_index == base["feature_index"],
                    T_EXP.c.key == base["key"])).scalar_one()
            if usage.calls or usage.prompt_tokens or usage.cost_usd:
                self._record_usage(c, job_id, sae_id, base["feature_index"], "explain", exp.llm_model, usage)
        self._refresh_label(sae_id, base["feature_index"])
        return new_id

    def find_explanation(self, sae_id: int, exp_like: Any) -> int | None:
        """Id of a finished (not failed) explanation with the same key, else None."""
        base = self._explanation_values(sae_id, exp_like)
        with self.read_engine.connect() as c:
            return c.execute(sa.select(T_EXP.c.id).where(
                T_EXP.c.sae_id == sae_id, T_EXP.c.feature_index == base["feature_index"],
                T_EXP.c.key == base["key"], T_EXP.c.failed == sa.false())).scalar_one_or_none()

    def find_score(self, exp_id: int, method: str, control: bool = False, llm_model: str | None = None,
                   prompt_version: str | None = None) -> int | None:
        """Id of a finished (not failed) score with this key, else None."""
        key = score_key(method, control, llm_model, prompt_version)
        with self.read_engine.connect() as c:
            return c.execute(sa.select(T_SCORE.c.id).where(
                T_SCORE.c.explanation_id == exp_id, T_SCORE.c.key == key,
                T_SCORE.c.failed == sa.false())).scalar_one_or_none()

    def save_score(self, exp_id: int, result: ScoreResult) -> int:
        """Store a score of an explanation; idempotent on (explanation, method, control, LLM model,
        prompt version).  A stored failed score is replaced by a later attempt."""
        if not result.method:
            raise InputError("a score needs a method name")
        with self.read_engine.connect() as c:
            exp = c.execute(sa.select(T_EXP.c.sae_id, T_EXP.c.feature_index, T_EXP.c.job_id)
                            .where(T_EXP.c.id == exp_id)).first()
        if exp is None:
            raise InputError(f"cannot save a score: explanation {exp_id} does not exist")
        usage = _usage(result.usage)
        key = score_key(result.method, result.control, result.llm_model, result.prompt_version)
        values = dict(
            explanation_id=exp_id, key=key, method=result.method, value=_float_or_none(result.value),
            metrics=_json_safe(result.metrics or {}), control=bool(result.control), llm_model=result.llm_model,
            prompt_name=result.prompt_name, prompt_version=result.prompt_version,
            example_windows=_json_safe(result.example_windows or []), details=_json_safe(result.details or {}),
            calls=usage.calls, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cost_usd=float(usage.cost_usd), failed=bool(result.failed), error=_clean_text(result.error),
            created_at=utcnow(),
        )
        stmt = self._insert(T_SCORE).values(**values)
        replace = {k: stmt.excluded[k] for k in values if k not in ("explanation_id", "key")}
        stmt = stmt.on_conflict_do_update(index_elements=["explanation_id", "key"], set_=replace,
                                          where=T_SCORE.c.failed == sa.true()).returning(T_SCORE.c.id)
        with self.engine.begin() as c:
            new_id = c.execute(stmt).scalar_one_or_none()
            if new_id is None:
                return c.execute(sa.select(T_SCORE.c.id).where(T_SCORE.c.explanation_id == exp_id,
                                                               T_SCORE.c.key == key)).scalar_one()
            if usage.calls or usage.prompt_tokens or usage.cost_usd:
                self._record_usage(c, exp.job_id, exp.sae_id, exp.feature_index, f"score:{result.method}",
                                   result.llm_model, usage)
        self._refresh_label(exp.sae_id, exp.feature_index)
        return new_id

    def _ensure_feature_row(self, c: sa.Connection, sae_id: int, index: int) -> None:
        c.execute(self._insert(T_FEATURE).values(sae_id=sae_id, index=index)
                  .on_conflict_do_nothing(index_elements=["sae_id", "index"]))

    @staticmethod
    def _record_usage(c: sa.Connection, job_id, sae_id, feature_index, purpose, llm_model, usage: LLMUsage) -> None:
        c.execute(T_USAGE.insert().values(
            job_id=job_id, sae_id=sae_id, feature_index=feature_index, purpose=purpose, llm_model=llm_model,
            calls=usage.calls, cached_calls=usage.cached_calls, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, cost_usd=float(usage.cost_usd), created_at=utcnow()))

    # --- the label -------------------------------------------------------------------------------

    @staticmethod
    def label_rule(explanations: Sequence[dict]) -> tuple[dict | None, str | None, float | None]:
        """Pick the label among explanation dicts (each with ``id``, ``failed``, ``text`` and
        ``scores``: dicts with ``method``, ``value``, ``control``, ``failed``).  Returns
        (explanation, method, score).  See the module docstring for the rule."""
        candidates = [e for e in explanations if not e["failed"] and (e["text"] or "").strip()]
        if not candidates:
            return None, None, None
        best_by_method: dict[str, dict[int, float]] = defaultdict(dict)
        for e in candidates:
            for s in e.get("scores", []):
                if s["control"] or s["failed"] or s["value"] is None or not math.isfinite(s["value"]):
                    continue
                prev = best_by_method[s["method"]].get(e["id"])
                if prev is None or s["value"] > prev:
                    best_by_method[s["method"]][e["id"]] = s["value"]
        order = list(LABEL_METHOD_ORDER) + sorted(m for m in best_by_method if m not in LABEL_METHOD_ORDER)
        by_id = {e["id"]: e for e in candidates}
        for method in order:
            values = best_by_method.get(method)
            if values:
                winner = max(values.items(), key=lambda kv: (kv[1], kv[0]))  # tie: the later id
                return by_id[winner[0]], method, winner[1]
        return max(candidates, key=lambda e: e["id"]), None, None

    def _refresh_label(self, sae_id: int, feature_index: int) -> None:
        """Recompute the denormalised label of one feature.  Runs in its own transaction after
        the write committed, holding the feature row lock (PostgreSQL) or the write lock
        (SQLite), so the last refresh always sees every committed explanation and score."""
        with self.engine.begin() as c:
            lock = sa.select(T_FEATURE.c.id).where(T_FEATURE.c.sae_id == sae_id, T_FEATURE.c.index == feature_index)
            if self.dialect == "postgresql":
                lock = lock.with_for_update()
            if c.execute(lock).first() is None:
                return
            exps = self._explanations(c, sae_id, [feature_index], with_details=False).get(feature_index, [])
            best, method, value = self.label_rule(exps)
            c.execute(T_FEATURE.update().where(T_FEATURE.c.sae_id == sae_id, T_FEATURE.c.index == feature_index)
                      .values(label_explanation_id=best["id"] if best else None,
                              label_text=best["text"] if best else None, label_method=method, label_score=value))

    # --- reading features --------------------------------------------------------------------------

    def _explanations(self, c: sa.Connection, sae_id: int, indices: Sequence[int], *,
                      with_details: bool = False, with_raw: bool = False) -> dict[int, list[dict]]:
        rows = c.execute(sa.select(T_EXP).where(T_EXP.c.sae_id == sae_id, T_EXP.c.feature_index.in_(list(indices)))
                         .order_by(T_EXP.c.feature_index, T_EXP.c.id)).mappings().all()
        if not rows:
            return {}
        ids = [r["id"] for r in rows]
        cols = [c_ for c_ in T_SCORE.c if with_details or c_.name != "details"]
        scores: dict[int, list[dict]] = defaultdict(list)
        for s in c.execute(sa.select(*cols).where(T_SCORE.c.explanation_id.in_(ids))
                           .order_by(T_SCORE.c.id)).mappings().all():
            d = {"id": s["id"], "method": s["method"], "value": s["value"], "metrics": s["metrics"] or {},
                 "control": s["control"], "llm_model": s["llm_model"], "prompt_name": s["prompt_name"],
                 "prompt_version": s["prompt_version"], "example_windows": s["example_windows"] or [],
                 "failed": s["failed"], "error": s["error"], "usage": _usage_dict(s),
                 "created_at": _iso(s["created_at"])}
            if with_details:
                d["details"] = s["details"] or {}
            scores[s["explanation_id"]].append(d)
        out: dict[int, list[dict]] = defaultdict(list)
        for r in rows:
            d = {"id": r["id"], "feature": r["feature_index"], "text": r["text"], "explainer": r["explainer"],
                 "llm_model": r["llm_model"], "prompt_name": r["prompt_name"], "prompt_version": r["prompt_version"],
                 "prompt_hash": r["prompt_hash"], "config": r["config"] or {}, "config_hash": r["config_hash"],
                 "failed": r["failed"], "error": r["error"], "usage": _usage_dict(r),
                 "example_windows": r["example_windows"] or [], "candidates": r["candidates"] or [],
                 "job_id": r["job_id"], "created_at": _iso(r["created_at"]), "scores": scores.get(r["id"], [])}
            if with_raw:
                d["raw"] = r["raw"]
            out[r["feature_index"]].append(d)
        return out

    @staticmethod
    def _feature_head(r: Any) -> dict:
        stats = dict(r["stats"] or {})
        for k in ("count", "density", "max", "mean"):
            stats[k] = r[k]
        label = None
        if r["label_explanation_id"] is not None:
            label = {"explanation_id": r["label_explanation_id"], "text": r["label_text"],
                     "method": r["label_method"], "score": r["label_score"]}
        return {"index": r["index"], "stats": stats, "label": label}

    def feature_view(self, sae_id: int, index: int, *, with_details: bool = False) -> dict | None:
        """Statistics, the label and every explanation (with its scores) of one feature;
        None when the SAE has no such feature."""
        views = self.features_view(sae_id, [index], with_details=with_details)
        return views[0] if views else None

    def features_view(self, sae_id: int, indices: Sequence[int], *, with_details: bool = False) -> list[dict]:
        """``feature_view`` for many features in three queries; unknown indices are left out."""
        indices = list(dict.fromkeys(int(i) for i in indices))
        if not indices:
            return []
        with self.read_engine.connect() as c:
            sae = c.execute(self._sae_select().where(T_SAE.c.id == sae_id)).mappings().first()
            if sae is None:
                return []
            feats = c.execute(sa.select(T_FEATURE).where(T_FEATURE.c.sae_id == sae_id,
                                                         T_FEATURE.c.index.in_(indices))).mappings().all()
            exps = self._explanations(c, sae_id, indices, with_details=with_details)
        by_index = {f["index"]: f for f in feats}
        out = []
        for i in indices:
            if i not in by_index:
                continue
            view = {"model": sae["model_slug"], "sae": sae["slug"], "sae_id": sae_id, **self._feature_head(by_index[i])}
            view["explanations"] = exps.get(i, [])
            out.append(view)
        return out

    def list_features(self, sae_id: int, *, min_score: float | None = None, max_score: float | None = None,
                      min_density: float | None = None, max_density: float | None = None,
                      method: str | None = None, has_label: bool | None = None, sort: str = "index",
                      limit: int = 100, offset: int = 0) -> list[dict]:
        """Features of an SAE (statistics + label), filtered and sorted.  Score bounds apply to
        the label's score, or with ``method`` to that method's best non-control score."""
        desc = sort.startswith("-")
        field = sort.lstrip("-")
        if field not in SORT_FIELDS:
            raise InputError(f"cannot sort by {sort!r}: use one of {', '.join(SORT_FIELDS)} (prefix - for descending)")
        q = sa.select(T_FEATURE).where(T_FEATURE.c.sae_id == sae_id)
        if min_density is not None:
            q = q.where(T_FEATURE.c.density >= min_density)
        if max_density is not None:
            q = q.where(T_FEATURE.c.density <= max_density)
        if has_label is True:
            q = q.where(T_FEATURE.c.label_explanation_id.is_not(None))
        elif has_label is False:
            q = q.where(T_FEATURE.c.label_explanation_id.is_(None))
        if method is not None:
            cond = [T_EXP.c.sae_id == T_FEATURE.c.sae_id, T_EXP.c.feature_index == T_FEATURE.c.index,
                    T_EXP.c.failed == sa.false(), T_SCORE.c.method == method, T_SCORE.c.control == sa.false(),
                    T_SCORE.c.failed == sa.false(), T_SCORE.c.value.is_not(None)]
            if min_score is not None:
                cond.append(T_SCORE.c.value >= min_score)
            if max_score is not None:
                cond.append(T_SCORE.c.value <= max_score)
            q = q.where(sa.exists(sa.select(T_SCORE.c.id).join(T_EXP, T_EXP.c.id == T_SCORE.c.explanation_id)
                                  .where(*cond)))
        else:
            if min_score is not None:
                q = q.where(T_FEATURE.c.label_score >= min_score)
            if max_score is not None:
                q = q.where(T_FEATURE.c.label_score <= max_score)
        col = {"index": T_FEATURE.c.index, "score": T_FEATURE.c.label_score, "density": T_FEATURE.c.density,
               "max": T_FEATURE.c.max, "count": T_FEATURE.c.count}[field]
        order = col.desc().nulls_last() if desc else col.asc().nulls_last()
        q = q.order_by(order, T_FEATURE.c.index).limit(limit).offset(offset)
        with self.read_engine.connect() as c:
            return [self._feature_head(r) for r in c.execute(q).mappings().all()]

    # --- search ------------------------------------------------------------------------------------

    def search_text(self, query: str, *, sae_id: int | None = None, limit: int = 20, offset: int = 0) -> list[dict]:
        """Full-text search over explanation text (PostgreSQL tsvector / SQLite FTS5), best first."""
        query = _clean_text(query or "").strip()
        if not query:
            raise InputError("the search query is empty")
        params: dict[str, Any] = {"q": query, "limit": limit, "offset": offset}
        sae_filter = ""
        if sae_id is not None:
            sae_filter = " AND e.sae_id = :sae_id"
            params["sae_id"] = sae_id
        if self.dialect == "postgresql":
            sql = ("SELECT e.id, e.sae_id, e.feature_index, e.text, e.explainer, e.llm_model, "
                   "ts_rank(e.text_fts, q) AS rank "  # stored tsvector (migration 0002)
                   "FROM explanation e, websearch_to_tsquery('english', :q) q "
                   "WHERE e.text_fts @@ q AND NOT e.failed" + sae_filter +
                   " ORDER BY rank DESC, e.id LIMIT :limit OFFSET :offset")
        else:
            words = [w for w in _fts_words(query)]
            if not words:
                return []
            params["q"] = " ".join('"' + w.replace('"', '""') + '"' for w in words)
            sql = ("SELECT e.id, e.sae_id, e.feature_index, e.text, e.explainer, e.llm_model, "
                   "-explanation_fts.rank AS rank FROM explanation_fts "
                   "JOIN explanation e ON e.id = explanation_fts.rowid "
                   "WHERE explanation_fts MATCH :q AND NOT e.failed" + sae_filter +
                   " ORDER BY explanation_fts.rank, e.id LIMIT :limit OFFSET :offset")
        with self.read_engine.connect() as c:
            rows = c.execute(sa.text(sql), params).mappings().all()
            return self._hits(c, rows)

    def _hits(self, c: sa.Connection, rows: Sequence[Any], score_key_: str = "rank") -> list[dict]:
        sae_ids = {r["sae_id"] for r in rows}
        saes = {}
        if sae_ids:
            saes = {r["id"]: r for r in c.execute(self._sae_select().where(T_SAE.c.id.in_(sae_ids))).mappings()}
        label_ids = set()
        if rows:
            pairs = {(r["sae_id"], r["feature_index"]) for r in rows}
            feats = c.execute(sa.select(T_FEATURE.c.sae_id, T_FEATURE.c.index, T_FEATURE.c.label_explanation_id)
                              .where(T_FEATURE.c.label_explanation_id.in_([r["id"] for r in rows]))).all()
            label_ids = {f.label_explanation_id for f in feats if (f.sae_id, f.index) in pairs}
        return [{"explanation_id": r["id"], "model": saes[r["sae_id"]]["model_slug"], "sae": saes[r["sae_id"]]["slug"],
                 "index": r["feature_index"], "text": r["text"], "explainer": r["explainer"],
                 "llm_model": r["llm_model"], "is_label": r["id"] in label_ids,
                 "score": float(r[score_key_]) if r[score_key_] is not None else None} for r in rows]

    def embed_missing(self, *, sae_id: int | None = None, max_rows: int = 20_000, batch_size: int = 256) -> int:
        """Compute and store sentence embeddings for explanations that have none yet."""
        from labeler.db.embeddings import get_embedder

        embedder = get_embedder()
        q = (sa.select(T_EXP.c.id, T_EXP.c.text).outerjoin(T_EMB, T_EMB.c.explanation_id == T_EXP.c.id)
             .where(T_EMB.c.explanation_id.is_(None), T_EXP.c.failed == sa.false(), T_EXP.c.text != "")
             .order_by(T_EXP.c.id).limit(max_rows))
        if sae_id is not None:
            q = q.where(T_EXP.c.sae_id == sae_id)
        with self.read_engine.connect() as c:
            todo = c.execute(q).all()
        done = 0
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            vectors = embedder.embed([t for _, t in chunk])
            rows = [dict(explanation_id=i, model=embedder.name, dim=int(v.shape[0]), vector=v.tobytes())
                    for (i, _), v in zip(chunk, vectors)]
            with self.engine.begin() as c:
                c.execute(self._insert(T_EMB).on_conflict_do_nothing(index_elements=["explanation_id"]), rows)
            done += len(rows)
        return done

    def search_semantic(self, query: str, *, sae_id: int | None = None, limit: int = 20,
                        offset: int = 0) -> list[dict]:
        """Cosine similarity between the query's embedding and explanation embeddings (computed
        lazily, see ``embed_missing``), best first."""
        import numpy as np

        from labeler.db.embeddings import get_embedder

        query = _clean_text(query or "").strip()
        if not query:
            raise InputError("the search query is empty")
        embedder = get_embedder()
        self.embed_missing(sae_id=sae_id)
        q = (sa.select(T_EMB.c.explanation_id, T_EMB.c.vector).join(T_EXP, T_EXP.c.id == T_EMB.c.explanation_id)
             .where(T_EMB.c.model == embedder.name))
        if sae_id is not None:
            q = q.where(T_EXP.c.sae_id == sae_id)
        with self.read_engine.connect() as c:
            stored = c.execute(q).all()
            if not stored:
                return []
            ids = np.array([r[0] for r in stored])
            matrix = np.frombuffer(b"".join(r[1] for r in stored), dtype=np.float32).reshape(len(stored), -1)
            qv = embedder.embed([query])[0]
            sims = matrix @ qv
            order = np.lexsort((ids, -sims))[offset:offset + limit]
            picked = {int(ids[i]): float(sims[i]) for i in order}
            rows = c.execute(sa.select(T_EXP.c.id, T_EXP.c.sae_id, T_EXP.c.feature_index, T_EXP.c.text,
                                       T_EXP.c.explainer, T_EXP.c.llm_model)
                             .where(T_EXP.c.id.in_(list(picked)))).mappings().all()
            rows = sorted(({**r, "rank": picked[r["id"]]} for r in rows), key=lambda r: (-r["rank"], r["id"]))
            return self._hits(c, rows)

    # --- export ------------------------------------------------------------------------------------

    def iter_labels(self, sae_id: int, *, batch_size: int = 2000) -> Iterator[dict]:
        """Every feature of an SAE with its label and explanation provenance, in index order
        (keyset pagination, so memory stays flat for a million features)."""
        last = -1
        with self.read_engine.connect() as c:
            sae = c.execute(self._sae_select().where(T_SAE.c.id == sae_id)).mappings().first()
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
                    yield {"model": sae["model_slug"], "sae": sae["slug"], "hook": sae["hook"], **dict(r),
                           "created_at": _iso(r["created_at"])}
                last = rows[-1]["index"]

    # --- jobs ----------------------------------------------------------------------------------------

    def create_job(self, sae_id: int | None, spec: dict, features: Sequence[int]) -> int:
        """A job row plus one pending row per feature; returns the job id."""
        feats = list(dict.fromkeys(int(f) for f in features))
        now = utcnow()
        with self.engine.begin() as c:
            job_id = c.execute(T_JOB.insert().values(sae_id=sae_id, status="pending", spec=_json_safe(spec),
                                                     n_features=len(feats), created_at=now, updated_at=now)
                               .returning(T_JOB.c.id)).scalar_one()
            for start in range(0, len(feats), 10_000):
                c.execute(T_JOBF.insert(), [dict(job_id=job_id, feature_index=f, status="pending", attempts=0,
                                                 calls=0, prompt_tokens=0, completion_tokens=0, cost_usd=0.0,
                                                 updated_at=now) for f in feats[start:start + 10_000]])
        return job_id

    def mark_feature(self, job_id: int, feature: int, status: str, error: str | None = None,
                     usage: LLMUsage | dict | None = None) -> None:
        """Record a feature's outcome in a job.  Idempotent: the usage is set (not added), and a
        feature that is ``done`` stays done when a late duplicate reports a failure."""
        if status not in FEATURE_STATUSES:
            raise InputError(f"unknown feature status {status!r}: use one of {', '.join(FEATURE_STATUSES)}")
        u = _usage(usage)
        now = utcnow()
        values = dict(job_id=job_id, feature_index=int(feature), status=status, error=_clean_text(error), attempts=1,
                      calls=u.calls, prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                      cost_usd=float(u.cost_usd), updated_at=now)
        stmt = self._insert(T_JOBF).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["job_id", "feature_index"],
            set_={"status": stmt.excluded.status, "error": stmt.excluded.error,
                  "attempts": T_JOBF.c.attempts + 1, "calls": stmt.excluded.calls,
                  "prompt_tokens": stmt.excluded.prompt_tokens, "completion_tokens": stmt.excluded.completion_tokens,
                  "cost_usd": stmt.excluded.cost_usd, "updated_at": stmt.excluded.updated_at},
            where=sa.or_(T_JOBF.c.status != "done", stmt.excluded.status == "done"),
        )
        with self.engine.begin() as c:
            if c.execute(sa.select(T_JOB.c.id).where(T_JOB.c.id == job_id)).first() is None:
                raise InputError(f"job {job_id} does not exist")
            c.execute(stmt)
            c.execute(T_JOB.update().where(T_JOB.c.id == job_id).values(updated_at=now))

    def set_job_status(self, job_id: int, status: str) -> None:
        if status not in JOB_STATUSES:
            raise InputError(f"unknown job status {status!r}: use one of {', '.join(JOB_STATUSES)}")
        with self.engine.begin() as c:
            res = c.execute(T_JOB.update().where(T_JOB.c.id == job_id).values(status=status, updated_at=utcnow()))
            if res.rowcount == 0:
                raise InputError(f"job {job_id} does not exist")

    def job_features(self, job_id: int, status: str | None = None) -> list[int]:
        q = sa.select(T_JOBF.c.feature_index).where(T_JOBF.c.job_id == job_id).order_by(T_JOBF.c.feature_index)
        if status is not None:
            if status not in FEATURE_STATUSES:
                raise InputError(f"unknown feature status {status!r}: use one of {', '.join(FEATURE_STATUSES)}")
            q = q.where(T_JOBF.c.status == status)
        with self.read_engine.connect() as c:
            return [r[0] for r in c.execute(q)]

    def job_info(self, job_id: int, *, max_errors: int = 20) -> dict | None:
        """Status, per-status counts, tokens, cost and the first errors of a job; None if unknown."""
        with self.read_engine.connect() as c:
            job = c.execute(sa.select(T_JOB).where(T_JOB.c.id == job_id)).mappings().first()
            if job is None:
                return None
            counts = {s: 0 for s in FEATURE_STATUSES}
            for status, n in c.execute(sa.select(T_JOBF.c.status, sa.func.count()).where(T_JOBF.c.job_id == job_id)
                                       .group_by(T_JOBF.c.status)):
                counts[status] = n
            tot = c.execute(sa.select(sa.func.coalesce(sa.func.sum(T_JOBF.c.calls), 0),
                                      sa.func.coalesce(sa.func.sum(T_JOBF.c.prompt_tokens), 0),
                                      sa.func.coalesce(sa.func.sum(T_JOBF.c.completion_tokens), 0),
                                      sa.func.coalesce(sa.func.sum(T_JOBF.c.cost_usd), 0.0))
                            .where(T_JOBF.c.job_id == job_id)).one()
            errors = c.execute(sa.select(T_JOBF.c.feature_index, T_JOBF.c.error, T_JOBF.c.attempts)
                               .where(T_JOBF.c.job_id == job_id, T_JOBF.c.status == "failed")
                               .order_by(T_JOBF.c.feature_index).limit(max_errors)).all()
            sae = None
            if job["sae_id"] is not None:
                s = c.execute(self._sae_select().where(T_SAE.c.id == job["sae_id"])).mappings().first()
                sae = s and {"model": s["model_slug"], "sae": s["slug"]}
        return {
            "id": job["id"], "sae_id": job["sae_id"], "model": sae and sae["model"], "sae": sae and sae["sae"],
            "status": job["status"], "spec": job["spec"] or {}, "n_features": job["n_features"], "counts": counts,
            "tokens": {"calls": int(tot[0]), "prompt": int(tot[1]), "completion": int(tot[2])},
            "cost_usd": float(tot[3]),
            "errors": [{"feature": e.feature_index, "error": e.error, "attempts": e.attempts} for e in errors],
            "created_at": _iso(job["created_at"]), "updated_at": _iso(job["updated_at"]),
        }

    def list_jobs(self, *, status: str | None = None, limit: int = 50, offset: int = 0) -> list[dict]:
        q = sa.select(T_JOB.c.id).order_by(T_JOB.c.id.desc()).limit(limit).offset(offset)
        if status is not None:
            q = q.where(T_JOB.c.status == status)
        with self.read_engine.connect() as c:
            ids = [r[0] for r in c.execute(q)]
        return [info for i in ids if (info := self.job_info(i, max_errors=0)) is not None]

    def usage_totals(self, *, job_id: int | None = None) -> dict[str, Any]:
        """LLM spend recorded with saved explanations and scores (optionally for one job)."""
        q = sa.select(sa.func.coalesce(sa.func.sum(T_USAGE.c.calls), 0),
                      sa.func.coalesce(sa.func.sum(T_USAGE.c.prompt_tokens), 0),
                      sa.func.coalesce(sa.func.sum(T_USAGE.c.completion_tokens), 0),
                      sa.func.coalesce(sa.func.sum(T_USAGE.c.cost_usd), 0.0))
        if job_id is not None:
            q = q.where(T_USAGE.c.job_id == job_id)
        with self.read_engine.connect() as c:
            r = c.execute(q).one()
        return {"calls": int(r[0]), "prompt_tokens": int(r[1]), "completion_tokens": int(r[2]), "cost_usd": float(r[3])}

    def ping(self) -> bool:
        with self.read_engine.connect() as c:
            return c.execute(sa.text("SELECT 1")).scalar_one() == 1


def _fts_words(query: str) -> list[str]:
    import re

    return re.findall(r"\w+", query, flags=re.UNICODE)[:32]
