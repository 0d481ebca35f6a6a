"""The one-row metadata files of a Neuronpedia source (model, source set, source, release) and
the config rows (explanation / score types and models) the export's rows refer to.

Neuronpedia creates these with Prisma (``create`` with the line as data): every key must be a
field of the model, required fields must be there, and a Json field may not be null (so
``saelensConfig`` is left out).  ``default*`` foreign keys are left out: the Model row is
created before the source set it would point at.
"""

from __future__ import annotations

import re
from typing import Any

from labeler.corpus.sources import public_corpus_name
from labeler.export.neuronpedia_rows import CREATOR_NAME, OFFLINE_SCORER, Source, np_slug

_LAYER = re.compile(r"(\d+)")
_NP_SAE_ID = re.compile(r"^([A-Za-z0-9_-]+)/(\d+|e)-([A-Za-z0-9_-]+)$")


def default_source(manifest: dict[str, Any], *, model_id: str | None = None, source_id: str | None = None,
                   creator_id: str | None = None, release: str | None = None) -> Source:
    """Neuronpedia names for a store: given ones, else the SAE's own Neuronpedia id where its
    files name one (SAELens ``neuronpedia_id``: ``gpt2-small/6-res-jb``), else
    ``{model}`` / ``{layer of the hook}-{SAE name}``."""
    sae_name = str(manifest["sae"]["name"])
    known = _NP_SAE_ID.match(sae_name)
    if known and model_id is None and source_id is None:
        model_id, source_id = known.group(1), f"{known.group(2)}-{known.group(3)}"
    model_id = np_slug(model_id or str(manifest["model"]["name"]).rsplit("/", 1)[-1])
    if source_id is None:
        hook = str(manifest["model"].get("hook") or "")
        layer = m.group(1) if (m := _LAYER.search(hook)) else ("e" if "emb" in hook else "0")
        source_id = f"{layer}-{np_slug(sae_name.rsplit('/', 1)[-1]).replace('_', '-')}"
    source_id = np_slug(source_id).replace("__", "_")
    if "-" not in source_id:
        from labeler.core.errors import InputError

        raise InputError(f"Neuronpedia source id {source_id!r} must look like LAYER-SET, e.g. 6-res-jb")
    kwargs = {"creator_id": creator_id} if creator_id else {}
    return Source(model_id=model_id, source_id=source_id, set_name=source_id.split("-", 1)[1], release=release,
                  **kwargs)


def model_row(src: Source, manifest: dict[str, Any]) -> dict[str, Any]:
    m = manifest["model"]
    name = str(m["name"])
    layer = src.source_id.split("-", 1)[0]
    layers = int(m.get("n_layers") or (int(layer) + 1 if layer.isdigit() else 1))
    return {"id": src.model_id, "displayNameShort": src.model_id, "displayName": name, "creatorId": src.creator_id,
            "dimension": int(m.get("d_model") or 0), "thinking": False, "visibility": "PUBLIC",
            "inferenceEnabled": False, "instruct": False, "layers": layers,
            "neuronsPerLayer": int(m.get("d_model") or 0), "owner": name.split("/", 1)[0] if "/" in name else name}


def sourceset_row(src: Source, manifest: dict[str, Any]) -> dict[str, Any]:
    sae = manifest["sae"]
    row = {"modelId": src.model_id, "name": src.set_name, "hasDashboards": True, "allowInferenceSearch": False,
           "visibility": "PUBLIC", "description": f"{sae['name']} ({sae.get('format') or 'SAE'}), labeled by labeler",
           "type": "", "creatorName": CREATOR_NAME, "urls": [], "creatorId": src.creator_id}
    if src.release:
        row["releaseName"] = src.release
    return row


def source_row(src: Source, manifest: dict[str, Any]) -> dict[str, Any]:
    corpus = manifest.get("corpus") or {}
    return {"id": src.source_id, "modelId": src.model_id, "hasDashboards": True, "inferenceEnabled": False,
            "visibility": "PUBLIC", "setName": src.set_name, "creatorId": src.creator_id,
            "num_prompts": int(manifest.get("n_windows") or 0),
            "num_tokens_in_prompt": int(manifest["settings"]["ctx_len"]),
            "dataset": public_corpus_name(str(corpus["source"])) if corpus.get("source") else None,
            "notes": f"hook {manifest['model'].get('hook')}; {manifest['sae']['n_features']} features; "
                     f"store config {manifest.get('config_hash')}"}


def release_row(src: Source) -> dict[str, Any]:
    return {"name": src.release, "visibility": "PUBLIC", "description": f"{src.release}, labeled by labeler",
            "descriptionShort": src.release, "urls": [], "creatorName": CREATOR_NAME, "creatorId": src.creator_id,
            "defaultSourceSetName": src.set_name, "defaultSourceId": src.source_id, "defaultUmapSourceIds": []}


def explanation_type_row(src: Source, name: str, explainer: str) -> dict[str, Any]:
    return {"name": name, "displayName": f"labeler {explainer}",
            "description": f"labeler's {explainer!r} explainer (prompt and options in each explanation's notes)",
            "featured": False, "isAttention": False, "creatorName": CREATOR_NAME, "creatorId": src.creator_id}


def score_type_row(src: Source, name: str, method: str) -> dict[str, Any]:
    return {"name": name, "displayName": f"labeler {method}",
            "description": f"labeler's {method!r} scorer on held-out examples",
            "scoreDescription": "higher is better; details (metrics, windows, prompt) in jsonDetails",
            "featured": False, "isAttention": False, "creatorName": CREATOR_NAME, "creatorId": src.creator_id}


def model_type_row(name: str) -> dict[str, Any]:
    """An ExplanationModelType or ExplanationScoreModel (same columns)."""
    what = "scores computed without an LLM" if name == OFFLINE_SCORER else f"the LLM {name}"
    return {"name": name, "displayName": name, "description": what, "featured": False,
            "creatorName": CREATOR_NAME}
