"""``labeler export --format neuronpedia``: one SAE as the files Neuronpedia's admin import reads.

Layout under ``out`` (the same as Neuronpedia's own exporter, so ``out`` can be synced to the
bucket prefix its importer lists, ``v1/``)::

    config/explanation_type.jsonl, explanation_model_type.jsonl,
           explanation_score_type.jsonl, explanation_score_model.jsonl   the names the rows use
    {modelId}/{sourceId}/model.jsonl, sourceset.jsonl, source.jsonl, release.jsonl (with a release)
    {modelId}/{sourceId}/features/batch-{n}.jsonl.gz            Neuron rows
    {modelId}/{sourceId}/activations/batch-{n}.jsonl.gz         Activation rows
    {modelId}/{sourceId}/explanations/batch-{n}.jsonl.gz        Explanation rows (scoreV1: main score)
    {modelId}/{sourceId}/explanation_scores/batch-{n}.jsonl.gz  ExplanationScore rows (every score)
    labeler-export.json                                         counts, ids, what the target must have

Batch ``n`` holds features ``[n * batch_size, (n + 1) * batch_size)`` in every folder (Neuronpedia
lists at most 1000 files per folder: 1024 features per batch covers 1,024,000 features).
Neuronpedia's admin import has no step for ExplanationScore rows; they are importable with the
same bulk statement as the other tables.  What the export cannot bring itself: the user its rows
name (by default the bot user every instance seeds) and the type names, listed in ``config/``
(in Neuronpedia's config format, which its config import upserts) and in ``labeler-export.json``.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from labeler.corpus.sources import public_corpus_name
from labeler.db import Repository
from labeler.export import neuronpedia_meta as meta
from labeler.export import neuronpedia_rows as rows
from labeler.export.neighbours import store_neighbours

BATCH_SIZE = 1024


@dataclass
class NeuronpediaExport:
    """What one export wrote."""

    out: Path
    source: rows.Source
    files: dict[str, int] = field(default_factory=dict)  # path under ``out`` -> rows
    requires: dict[str, list[str]] = field(default_factory=dict)  # what the target database must hold

    @property
    def source_dir(self) -> Path:
        return self.out / self.source.model_id / self.source.source_id

    def count(self, folder: str) -> int:
        return sum(n for p, n in self.files.items() if p.split("/")[-2] == folder)


def dumps(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def write_lines(path: Path, lines: list[dict[str, Any]], *, gz: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(dumps(r) + "\n" for r in lines)
    if gz:
        # Neuronpedia's compression level; mtime 0, so the same export gives the same bytes
        path.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=5, mtime=0))
    else:
        path.write_text(text, encoding="utf-8")


class _Logits:
    """Top promoted / suppressed tokens with their logit effects, when the store keeps the values
    (``promoted_values`` / ``suppressed_values`` next to the token ids in its shards); Neuronpedia
    shows tokens and values side by side, so tokens without values are not exported."""

    def __init__(self, store: Any):
        self.store = store
        self._handles: dict[int, Any] = {}

    def __call__(self, record: Any) -> tuple[list[str], list[float], list[str], list[float]]:
        from safetensors import safe_open

        path, row = self.store.feature_file(record.feature)
        if path not in self._handles:
            self._handles = {path: safe_open(str(path), framework="numpy")}
        handle = self._handles[path]
        if not {"promoted_values", "suppressed_values"} <= set(handle.keys()):
            return [], [], [], []
        pos = handle.get_slice("promoted_values")[row:row + 1][0].tolist()
        neg = handle.get_slice("suppressed_values")[row:row + 1][0].tolist()
        return (record.promoted_tokens[:len(pos)], pos[:len(record.promoted_tokens)],
                record.suppressed_tokens[:len(neg)], neg[:len(record.suppressed_tokens)])


def export_neuronpedia(repo: Repository, sae_id: int, store: Any, out: Path, source: rows.Source, *,
                       batch_size: int = BATCH_SIZE, neighbours: int = 10,
                       progress: Callable[[int], None] | None = None) -> NeuronpediaExport:
    """Write the SAE's Neuronpedia export under ``out``; ``progress(n)`` after each batch of n features."""
    manifest = store.manifest
    result = NeuronpediaExport(out=Path(out), source=source)
    stats = store.all_stats()
    near = store_neighbours(store, neighbours)
    logits = _Logits(store)
    hook = manifest["model"].get("hook")
    corpus_source = (manifest.get("corpus") or {}).get("source")
    data_source = public_corpus_name(str(corpus_source)) if corpus_source else None
    types: dict[str, str] = {}
    score_types: dict[str, str] = {}
    models: set[str] = set()
    score_models: set[str] = set()

    def put(rel: str, lines: list[dict[str, Any]], gz: bool = True) -> None:
        if lines:
            write_lines(result.out / rel, lines, gz=gz)
            result.files[rel] = len(lines)

    prefix = f"{source.model_id}/{source.source_id}"
    for n, start in enumerate(range(0, store.n_features, batch_size)):
        end = min(start + batch_size, store.n_features)
        views = {v.index: v for v in repo.reads.features(sae_id, range(start, end))}
        nb_idx, nb_val = near(start, end)
        neurons, acts, exps, scores = [], [], [], []
        for i in range(start, end):
            record = store.feature(i)
            neurons.append(rows.neuron_row(
                source, i, density=float(stats["density"][i]), max_act=float(stats["max"][i]), hook=hook,
                hist_edges=record.stats.hist_edges, hist_counts=record.stats.hist_counts,
                neighbours=(np.asarray(nb_idx[i - start]).tolist(), np.asarray(nb_val[i - start]).tolist()),
                logits=logits(record)))
            acts.extend(rows.activation_rows(source, record, data_source=data_source))
            view = views.get(i)
            method = view.label.method if view is not None and view.label is not None else None
            for e in (view.explanations if view is not None else []):
                if not rows.usable(e):
                    continue
                row = rows.explanation_row(source, i, e, method)
                exps.append(row)
                types[row["typeName"]] = e.explainer
                if row["explanationModelName"]:
                    models.add(row["explanationModelName"])
                for s in e.scores:
                    if rows.usable_score(s):
                        srow = rows.score_row(source, row["id"], s)
                        scores.append(srow)
                        score_types[srow["explanationScoreTypeName"]] = s.method
                        score_models.add(srow["explanationScoreModelName"])
        for folder, lines in (("features", neurons), ("activations", acts), ("explanations", exps),
                              ("explanation_scores", scores)):
            put(f"{prefix}/{folder}/batch-{n}.jsonl.gz", lines)
        if progress is not None:
            progress(end - start)

    if source.release:
        put(f"{prefix}/release.jsonl", [meta.release_row(source)], gz=False)
    put(f"{prefix}/model.jsonl", [meta.model_row(source, manifest)], gz=False)
    put(f"{prefix}/sourceset.jsonl", [meta.sourceset_row(source, manifest)], gz=False)
    put(f"{prefix}/source.jsonl", [meta.source_row(source, manifest)], gz=False)
    put("config/explanation_type.jsonl", [meta.explanation_type_row(source, t, e) for t, e in sorted(types.items())],
        gz=False)
    put("config/explanation_model_type.jsonl", [meta.model_type_row(m) for m in sorted(models)], gz=False)
    put("config/explanation_score_type.jsonl",
        [meta.score_type_row(source, t, m) for t, m in sorted(score_types.items())], gz=False)
    put("config/explanation_score_model.jsonl", [meta.model_type_row(m) for m in sorted(score_models)], gz=False)
    result.requires = {"users": [source.creator_id], "explanation_types": sorted(types),
                       "explanation_model_types": sorted(models), "explanation_score_types": sorted(score_types),
                       "explanation_score_models": sorted(score_models)}
    summary = {"format": "neuronpedia", "source": asdict(source), "files": result.files,
               "requires": result.requires, "store_config_hash": manifest.get("config_hash"),
               "notes": ["Neuronpedia's admin import reads model/sourceset/source/release, features, activations "
                         "and explanations; import explanation_scores with the same bulk statement.",
                         "The users and type names under 'requires' must exist in the target database: "
                         "config/*.jsonl holds the type rows in Neuronpedia's config format."]}
    (result.out / "labeler-export.json").write_text(json.dumps(summary, indent=2))
    return result

