"""``GET /v1/export/{model}/{sae}``: the same exports as ``labeler export``.

``format=labeler`` streams labeler's JSONL of everything (one feature per line); ``format=
neuronpedia`` answers a tar archive of Neuronpedia's import layout (``labeler.export.neuronpedia``).
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask

from labeler.api.deps import RepoDep, StoresDep, require_read
from labeler.api.routes.common import ModelSlug, SaeSlug, sae_or_404
from labeler.export import default_source, export_neuronpedia, feature_lines

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["export"], dependencies=[Depends(require_read)])

@router.get("/export/{model}/{sae}",
            responses={200: {"content": {"application/x-ndjson": {}, "application/x-tar": {}},
                             "description": "labeler: one JSON object per line; neuronpedia: a tar archive"}})
def export_sae(repo: RepoDep, stores: StoresDep, model: str = ModelSlug, sae: str = SaeSlug,
               format: Literal["labeler", "neuronpedia"] = Query("labeler"),
               labeled_only: bool = Query(False, description="labeler format: skip unlabeled features"),
               neuronpedia_model_id: str | None = Query(None, max_length=200, pattern=r"^[A-Za-z0-9_-]+$",
                                                        description="Neuronpedia modelId (default: from the SAE)"),
               neuronpedia_source: str | None = Query(None, max_length=200, pattern=r"^[A-Za-z0-9_-]+$",
                                                      description="Neuronpedia source id LAYER-SET, e.g. 6-res-jb"),
               release: str | None = Query(None, max_length=200, description="Neuronpedia release name"),
               creator_id: str | None = Query(None, max_length=200, pattern=r"^[A-Za-z0-9_-]+$",
                                              description="Neuronpedia user id authoring the rows")):
    """Every feature of an SAE: labeler's JSONL, or Neuronpedia's import files."""
    sae_id = sae_or_404(repo, model, sae)
    info = repo.catalog.sae(sae_id)
    if format == "labeler":
        return StreamingResponse(feature_lines(repo, sae_id, labeled_only=labeled_only),
                                 media_type="application/x-ndjson",
                                 headers={"Content-Disposition":
                                          f'attachment; filename="{info.model}__{info.sae}.labeler.jsonl"'})
    try:
        store = stores.get(info.store_path or "")
    except Exception as e:  # the store may live on another machine; its path is not the reader's business
        log.info("store %s not readable here: %s", info.store_path, e)
        raise HTTPException(status_code=409, detail="the SAE's collect store is not readable from this server, "
                                                    "so its Neuronpedia export cannot be built here") from None
    source = default_source(store.manifest, model_id=neuronpedia_model_id, source_id=neuronpedia_source,
                            creator_id=creator_id, release=release)
    work = Path(tempfile.mkdtemp(prefix="labeler-np-export-"))
    try:
        export_neuronpedia(repo, sae_id, store, work / "export", source)
        archive = work / "export.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(work / "export", arcname=".")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return FileResponse(archive, media_type="application/x-tar",
                        filename=f"{source.model_id}__{source.source_id}.neuronpedia.tar",
                        background=BackgroundTask(shutil.rmtree, work, ignore_errors=True))
