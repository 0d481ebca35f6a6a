"""The label of a feature: which of its explanations represents it (docs/labels.md).

1. Candidates are the feature's explanations that did not fail and have non-empty text.
2. Methods are tried in the order ``LABEL_METHOD_ORDER`` (simulation first), then any other
   method alphabetically.  The first method for which at least one candidate has a usable
   score (not a control, not failed, value not NULL) decides: the candidate with the highest
   such value wins (its best value if scored more than once; ties go to the later one).
3. No candidate has any usable score: the most recently saved candidate is the label.
Failed explanations never become the label.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import sqlalchemy as sa

from labeler.db.models import ExplanationRow, Feature, ScoreRow

LABEL_METHOD_ORDER = ("simulation", "fuzzing", "detection", "embedding", "rubric")

T_FEATURE = Feature.__table__
T_EXP = ExplanationRow.__table__
T_SCORE = ScoreRow.__table__


def label_rule(candidates: Sequence[tuple[int, str, bool]], scores: Sequence[tuple[int, str, float | None, bool, bool]]
               ) -> tuple[int | None, str | None, float | None]:
    """Pick the label.  ``candidates``: (explanation id, text, failed); ``scores``: (explanation
    id, method, value, control, failed).  Returns (explanation id, method, score)."""
    usable = {i: text for i, text, failed in candidates if not failed and (text or "").strip()}
    if not usable:
        return None, None, None
    best_by_method: dict[str, dict[int, float]] = defaultdict(dict)
    for exp_id, method, value, control, failed in scores:
        if exp_id not in usable or control or failed or value is None or not math.isfinite(value):
            continue
        prev = best_by_method[method].get(exp_id)
        if prev is None or value > prev:
            best_by_method[method][exp_id] = value
    order = list(LABEL_METHOD_ORDER) + sorted(m for m in best_by_method if m not in LABEL_METHOD_ORDER)
    for method in order:
        values = best_by_method.get(method)
        if values:
            winner, value = max(values.items(), key=lambda kv: (kv[1], kv[0]))
            return winner, method, value
    return max(usable), None, None


def lock_feature(c: sa.Connection, dialect: str, sae_id: int, index: int) -> bool:
    """Serialise label updates of one feature: PostgreSQL locks its row (SQLite writers are
    already serialised by BEGIN IMMEDIATE).  False when the feature has no row."""
    q = sa.select(T_FEATURE.c.id).where(T_FEATURE.c.sae_id == sae_id, T_FEATURE.c.index == index)
    if dialect == "postgresql":
        q = q.with_for_update()
    return c.execute(q).first() is not None


def refresh_label(c: sa.Connection, sae_id: int, index: int) -> None:
    """Recompute one feature's denormalised label inside the caller's write transaction (which
    holds the feature's lock, see ``lock_feature``), so it always sees every committed write."""
    exps = c.execute(sa.select(T_EXP.c.id, T_EXP.c.text, T_EXP.c.failed)
                     .where(T_EXP.c.sae_id == sae_id, T_EXP.c.feature_index == index)).all()
    ids = [e.id for e in exps]
    scores = c.execute(sa.select(T_SCORE.c.explanation_id, T_SCORE.c.method, T_SCORE.c.value, T_SCORE.c.control,
                                 T_SCORE.c.failed).where(T_SCORE.c.explanation_id.in_(ids))).all() if ids else []
    best, method, value = label_rule([(e.id, e.text, e.failed) for e in exps], [tuple(s) for s in scores])
    text = next((e.text for e in exps if e.id == best), None)
    c.execute(T_FEATURE.update().where(T_FEATURE.c.sae_id == sae_id, T_FEATURE.c.index == index)
              .values(label_explanation_id=best, label_text=text, label_method=method, label_score=value))
