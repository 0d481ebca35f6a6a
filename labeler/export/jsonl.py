"""``labeler export --format labeler``: everything stored for one SAE as JSON Lines, one object
per feature in index order (documented in docs/export.md):

- the label and its provenance, flat (as the feature list shows it): ``model``, ``sae``, ``hook``,
  ``index``, ``label``, ``label_method``, ``label_score``, ``explanation_id``, ``explainer``,
  ``llm_model``, ``prompt_name``, ``prompt_version``, ``prompt_hash``, ``density``, ``max``,
  ``count``, ``created_at``;
- ``stats``: every statistic collect kept (count, density, max, mean, histogram ...);
- ``explanations``: every explanation (failed ones too, with their error), each with its
  provenance (explainer, LLM, prompt name/version/hash, options, job, tokens and cost, the
  windows shown) and every score (method, value, metrics, control flag, LLM, prompt, held-out
  windows, tokens and cost).

Memory stays flat: features are read in pages (keyset pagination).
"""

from __future__ import annotations

import json
from typing import Iterator

from labeler.db import Repository

PAGE = 500


def feature_lines(repo: Repository, sae_id: int, *, labeled_only: bool = False, page: int = PAGE) -> Iterator[str]:
    """One JSON line per feature (only labeled ones with ``labeled_only``)."""
    batch = []
    for row in repo.reads.iter_labels(sae_id, batch_size=page):
        if labeled_only and not row.label:
            continue
        batch.append(row)
        if len(batch) == page:
            yield from _lines(repo, sae_id, batch)
            batch = []
    if batch:
        yield from _lines(repo, sae_id, batch)


def _lines(repo: Repository, sae_id: int, rows: list) -> Iterator[str]:
    views = {v.index: v for v in repo.reads.features(sae_id, [r.index for r in rows])}
    for r in rows:
        out = r.model_dump()
        view = views.get(r.index)
        out["stats"] = view.stats if view is not None else {}
        out["explanations"] = [e.model_dump() for e in view.explanations] if view is not None else []
        yield json.dumps(out, ensure_ascii=False, default=str) + "\n"
