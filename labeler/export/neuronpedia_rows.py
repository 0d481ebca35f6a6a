"""One labeler feature as Neuronpedia rows: pure functions from the store's record and the
database's views to dicts whose keys are Neuronpedia's column names.

Neuronpedia's bulk import (``INSERT ... SELECT ... FROM jsonb_to_recordset``) takes its column
list from the *first* line of a file, so every line of one kind has the same keys, arrays are
always present (never null), integer columns get JSON integers, and no value is NaN.  Its
metadata import is Prisma ``create`` with the line as data: only real columns, no null for a
Json column.  Ids are deterministic (a hash of what the row stands for), so importing the same
export twice adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

from labeler.db.views import ExplanationView, ScoreView
from labeler.records import FeatureRecord

BOT_USER_ID = "clkht01d40000jv08hvalcvly"
"""The user every Neuronpedia instance seeds (its DEFAULT_CREATOR_ID): authors of the export's rows."""
CREATOR_NAME = "labeler"
OFFLINE_SCORER = "labeler-offline"
"""ExplanationScoreModel of scores made without an LLM (embedding, offline simulator)."""
_NP_ID = re.compile(r"[^a-z0-9_-]+")


def np_slug(text: str) -> str:
    """Neuronpedia ids are ``^[a-zA-Z0-9-_]+$`` and lowercased."""
    return _NP_ID.sub("-", text.lower()).strip("-") or "unnamed"


def row_id(prefix: str, *parts: Any) -> str:
    """A 25-character id (Neuronpedia's cuid length) that only depends on ``parts``."""
    digest = hashlib.sha256(json.dumps([prefix, *parts], default=str).encode()).hexdigest()
    return (prefix + digest)[:25]


def num(value: Any, default: float | None = 0.0) -> float | None:
    """A finite float, else ``default`` (NaN is not JSON, and the columns refuse it)."""
    if value is None:
        return default
    value = float(value)
    return value if math.isfinite(value) else default


def nums(values: Iterable[Any]) -> list[float]:
    return [float(num(v)) for v in values]  # type: ignore[arg-type]


@dataclass(frozen=True)
class Source:
    """Where the SAE goes in Neuronpedia and who authors the rows."""

    model_id: str
    """Model.id, e.g. ``gpt2-small``."""
    source_id: str
    """Source.id = Neuron.layer: ``{layer}-{set}``, e.g. ``6-res-jb``."""
    set_name: str
    """SourceSet.name = Source.setName = Neuron.sourceSetName, e.g. ``res-jb``."""
    creator_id: str = BOT_USER_ID
    """User id for creatorId / authorId / initiatedByUserId (must exist in the target)."""
    release: str | None = None
    """SourceRelease.name, when the SAE belongs to a published release."""


def type_name(explainer: str) -> str:
    return "labeler_" + np_slug(explainer.replace(":", "-"))


def score_type_name(method: str) -> str:
    return "labeler_" + np_slug(method)


def model_name(llm_model: str | None) -> str | None:
    """ExplanationModelType / ExplanationScoreModel name: the model id without its provider prefix."""
    return llm_model.rsplit("/", 1)[-1] if llm_model else None


def neuron_row(src: Source, index: int, *, density: float, max_act: float, hook: str | None,
               hist_edges: list[float], hist_counts: list[int], neighbours: tuple[list[int], list[float]],
               logits: tuple[list[str], list[float], list[str], list[float]]) -> dict[str, Any]:
    """A Neuron row: density, max activation, histogram, similar features, logit tokens."""
    nz = [i for i, c in enumerate(hist_counts) if c]
    lo, hi = (nz[0], nz[-1] + 1) if nz else (0, 0)  # the feature's own range, not the global one
    centres = [(hist_edges[i] + hist_edges[i + 1]) / 2 for i in range(lo, hi)] if len(hist_edges) > hi else []
    pos_str, pos_values, neg_str, neg_values = logits
    return {
        "modelId": src.model_id, "layer": src.source_id, "index": str(int(index)),
        "sourceSetName": src.set_name, "creatorId": src.creator_id,
        "maxActApprox": num(max_act), "frac_nonzero": num(density), "hookName": hook,
        "hasVector": False, "vector": [], "vectorLabel": None, "vectorDefaultSteerStrength": num(max_act),
        "topkCosSimIndices": [int(i) for i in neighbours[0]], "topkCosSimValues": nums(neighbours[1]),
        "neuron_alignment_indices": [], "neuron_alignment_values": [], "neuron_alignment_l1": [],
        "correlated_neurons_indices": [], "correlated_neurons_pearson": [], "correlated_neurons_l1": [],
        "correlated_features_indices": [], "correlated_features_pearson": [], "correlated_features_l1": [],
        "pos_str": list(pos_str), "pos_values": nums(pos_values), "neg_str": list(neg_str),
        "neg_values": nums(neg_values),
        "freq_hist_data_bar_heights": nums(hist_counts[lo:hi]) if centres else [],
        "freq_hist_data_bar_values": nums(centres),
        "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [], "decoder_weights_dist": [],
    }


def activation_rows(src: Source, record: FeatureRecord, *, data_source: str | None) -> list[dict[str, Any]]:
    """One Activation row per context: the top contexts of every split (``binMin``/``binMax``
    -1, Neuronpedia's "top activations" group), then the quantile samples with their stratum's
    range of max activations."""
    chosen, seen = [], set()
    for kind in ("top", "quantile"):
        for e in record.examples:
            if e.kind == kind and e.window not in seen and e.activations:
                seen.add(e.window)
                chosen.append(e)
    strata: dict[int, list[float]] = {}
    for e in chosen:
        if e.kind == "quantile":
            strata.setdefault(int(e.quantile or 0), []).append(e.max_activation)
    rows = []
    for e in chosen:
        values = nums(e.activations)
        top = max(range(len(values)), key=values.__getitem__)
        if e.kind == "top":
            bin_min = bin_max = -1.0
        else:
            maxes = strata[int(e.quantile or 0)]
            bin_min, bin_max = num(min(maxes)), num(max(maxes))
        rows.append({
            "id": row_id("la", src.model_id, src.source_id, record.feature, e.window),
            "modelId": src.model_id, "layer": src.source_id, "index": str(record.feature),
            "creatorId": src.creator_id, "dataIndex": str(e.window), "dataSource": data_source,
            "tokens": list(e.tokens), "values": values, "maxValue": values[top], "maxValueTokenIndex": int(top),
            "minValue": min(values), "binMin": bin_min, "binMax": bin_max, "qualifyingTokenIndex": int(top),
        })
    return rows


def main_score(explanation: ExplanationView, method: str | None) -> float:
    """The explanation's best usable score of the method that decides the feature's label."""
    values = [s.value for s in explanation.scores
              if s.method == method and not s.control and not s.failed and num(s.value, None) is not None]
    return float(max(values)) if values else 0.0


def explanation_id(src: Source, index: int, e: ExplanationView) -> str:
    return row_id("lx", src.model_id, src.source_id, index, e.explainer, e.llm_model, e.prompt_name,
                  e.prompt_version, e.prompt_hash, e.config_hash)


def usable(e: ExplanationView) -> bool:
    return not e.failed and bool(e.text.strip())


def explanation_row(src: Source, index: int, e: ExplanationView, label_method: str | None) -> dict[str, Any]:
    """An Explanation row; labeler's provenance (prompt, configuration) goes in ``notes``."""
    text = " ".join(e.text.split()).rstrip(".")  # Neuronpedia's own convention: one line, no final stop
    notes = {"labeler": {"explainer": e.explainer, "llm_model": e.llm_model, "prompt_name": e.prompt_name,
                         "prompt_version": e.prompt_version, "prompt_hash": e.prompt_hash,
                         "config_hash": e.config_hash, "job_id": e.job_id, "score_method": label_method}}
    return {
        "id": explanation_id(src, index, e), "modelId": src.model_id, "layer": src.source_id,
        "index": str(int(index)), "authorId": src.creator_id, "description": text or e.text.strip(),
        "typeName": type_name(e.explainer), "explanationModelName": model_name(e.llm_model),
        "notes": json.dumps(notes, sort_keys=True), "scoreV1": main_score(e, label_method),
        "createdAt": e.created_at,
    }


def usable_score(s: ScoreView) -> bool:
    """Control scores measure another feature's text: they stay in labeler's own export."""
    return not s.control and not s.failed and num(s.value, None) is not None


def score_row(src: Source, explanation_np_id: str, s: ScoreView) -> dict[str, Any]:
    details = {"labeler_score_id": s.id, "metrics": {k: v for k, v in s.metrics.items() if isinstance(v, (int, float))
                                                     and math.isfinite(v)},
               "prompt_name": s.prompt_name, "prompt_version": s.prompt_version,
               "example_windows": s.example_windows}
    return {
        "id": row_id("ls", src.model_id, src.source_id, explanation_np_id, s.id),
        "initiatedByUserId": src.creator_id, "value": num(s.value), "explanationId": explanation_np_id,
        "explanationScoreTypeName": score_type_name(s.method),
        "explanationScoreModelName": model_name(s.llm_model) or OFFLINE_SCORER,
        "jsonDetails": json.dumps(details, sort_keys=True), "createdAt": s.created_at,
    }
