"""A sharded collect as a job: one ledger row per part, run by Celery workers or here.

``labeler collect --feature-shards N --corpus-shards M`` plans N x M parts of one store
(``labeler.examples.shards``), records them as a job whose spec says ``kind: collect`` (so
``labeler jobs`` lists it, part by part as its "features"), runs them — one Celery task per part
on the workers when Redis is configured, one after the other in this process otherwise — and
merges them into the store.  A failed part is retried alone; a part whose worker died is
redelivered by the queue and resumes from its own checkpoint in the store.  Workers on other
machines reach the store through its path or fsspec URL.
"""

from __future__ import annotations

import time
import traceback
from typing import Callable

from labeler.core.config import Settings
from labeler.core.errors import InputError, LabelerError
from labeler.db import Repository
from labeler.examples.collect import CollectConfig
from labeler.examples.shards import PartSpec, config_from_dict, config_to_dict, merge, plan, prepare, run_part
from labeler.examples.stream import StateFolder

COLLECT_KIND = "collect"
MAX_ATTEMPTS = 3

PartSender = Callable[[int, int], None]
"""Queues one part of a collect job for a worker: ``send(job_id, part_index)``."""


def collect_spec(cfg: CollectConfig, out: str, parts: list[PartSpec]) -> dict:
    return {"kind": COLLECT_KIND, "name": f"collect {out}", "out": out, "config": config_to_dict(cfg),
            "parts": [p.to_dict() for p in parts]}


def _spec(repo: Repository, job_id: int) -> tuple[CollectConfig, str, list[PartSpec]]:
    info = repo.jobs.info(job_id)
    if info is None or info.spec.get("kind") != COLLECT_KIND:
        raise InputError(f"job {job_id} is not a collect job")
    return (config_from_dict(info.spec["config"]), info.spec["out"],
            [PartSpec.from_dict(p) for p in info.spec["parts"]])


def worker_device(requested: str, settings: Settings) -> str:
    """``cuda`` on a worker means the worker's own GPU: ``LABELER_DEVICE=cuda:N`` when set, else
    the prefork child's index modulo the visible GPUs (one GPU per worker process)."""
    if not requested.startswith("cuda") or ":" in requested:
        return requested
    own = settings.resolved_device()
    if own.startswith("cuda:"):
        return own
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n <= 1:
        return "cuda"
    from billiard.process import current_process

    index = getattr(current_process(), "index", 0) or 0
    return f"cuda:{int(index) % n}"


def run_part_of_job(repo: Repository, settings: Settings, job_id: int, index: int, *,
                    log=lambda *_: None) -> str:
    """Run one part and record the outcome: ``done`` or ``failed`` (with the reason)."""
    cfg, out, parts = _spec(repo, job_id)
    if repo.jobs.status(job_id) == "cancelled":
        return "cancelled"
    if repo.jobs.status(job_id) == "pending":
        repo.jobs.set_status(job_id, "running")
    cfg.device = worker_device(cfg.device, settings)
    try:
        run_part(cfg, out, parts[index], log=log)
    except Exception as e:  # recorded for `labeler jobs`; the coordinator retries the part alone
        reason = str(e) if isinstance(e, LabelerError) else f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
        repo.jobs.mark_feature(job_id, index, "failed", error=reason)
        return "failed"
    repo.jobs.mark_feature(job_id, index, "done")
    return "done"


def part_progress(cfg: CollectConfig, out: str, parts: list[PartSpec]) -> list[str]:
    """One line per part: windows done of its slice (read from its checkpoint in the store)."""
    from labeler.examples.storage import Location

    loc = Location(out)
    lines = []
    for i, p in enumerate(parts):
        pos = StateFolder(loc, p.prefix, writes_tokens=False, features=p.features).read_position() or {}
        total = p.windows[1] - p.windows[0]
        lines.append(f"part {i} features {p.features[0]}:{p.features[1]} windows {p.windows[0]}:{p.windows[1]}: "
                     f"{pos.get('status', 'pending')} {pos.get('windows_seen', 0)}/{total}")
    return lines


def run_sharded(cfg: CollectConfig, out: str, *, feature_shards: int, corpus_shards: int, repo: Repository,
                settings: Settings, send: PartSender | None = None, force: bool = False, log=print,
                poll_s: float = 1.0, timeout_s: float = 30 * 24 * 3600) -> str:
    """Plan, record, run (queued or here), retry failed parts alone, merge.  Returns the store."""
    loc, manifest = prepare(cfg, out, force=force, log=log)
    if manifest is None:
        return out
    parts = plan(cfg, int(manifest["sae"]["n_features"]), feature_shards, corpus_shards)
    job_id = repo.jobs.create(None, collect_spec(cfg, out, parts), range(len(parts)))
    for i, p in enumerate(parts):  # finished by an earlier, interrupted run of the same command
        pos = StateFolder(loc, p.prefix, writes_tokens=False, features=p.features).read_position()
        if pos and pos.get("status") == "done":
            repo.jobs.mark_feature(job_id, i, "done")
    log(f"collect job {job_id}: {len(parts)} part(s); follow it with `labeler jobs {job_id}`")
    repo.jobs.set_status(job_id, "running")
    pending = repo.jobs.features(job_id, status="pending")
    if send is None:
        for i in pending:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                if run_part_of_job(repo, settings, job_id, i, log=log) == "done":
                    break
                log(f"part {i} failed (attempt {attempt}): {repo.jobs.info(job_id).errors[-1].error}")
                if attempt < MAX_ATTEMPTS:
                    repo.jobs.mark_feature(job_id, i, "pending")
    else:
        _run_queued(repo, job_id, pending, send, cfg, out, parts, poll_s=poll_s, timeout_s=timeout_s, log=log)
    info = repo.jobs.info(job_id)
    if info.counts.get("failed"):
        repo.jobs.set_status(job_id, "failed")
        reasons = "; ".join(f"part {e.feature}: {e.error}" for e in info.errors)
        raise InputError(f"collect job {job_id}: {info.counts['failed']} part(s) failed after {MAX_ATTEMPTS} "
                         f"attempts ({reasons}); run the same command again to retry them")
    merge(cfg, out, log=log)
    repo.jobs.set_status(job_id, "done")
    return out


def _run_queued(repo: Repository, job_id: int, pending: list[int], send: PartSender, cfg: CollectConfig, out: str,
                parts: list[PartSpec], *, poll_s: float, timeout_s: float, log) -> None:
    for i in pending:
        send(job_id, i)
    deadline = time.monotonic() + timeout_s
    last_report = 0.0
    tries = {i: 1 for i in pending}
    while True:
        info = repo.jobs.info(job_id, max_errors=len(parts))
        for e in info.errors:
            if tries.get(e.feature, MAX_ATTEMPTS) < MAX_ATTEMPTS:
                log(f"part {e.feature} failed (attempt {tries[e.feature]}): {e.error}; retrying it alone")
                tries[e.feature] += 1
                repo.jobs.mark_feature(job_id, e.feature, "pending")
                send(job_id, e.feature)
        if info.counts.get("pending", 0) == 0 and all(tries.get(e.feature, MAX_ATTEMPTS) >= MAX_ATTEMPTS
                                                      for e in info.errors):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"collect job {job_id} not finished after {timeout_s}s: {info.counts}")
        if time.monotonic() - last_report > 30:
            for line in part_progress(cfg, out, parts):
                log(line)
            last_report = time.monotonic()
        time.sleep(poll_s)
