"""Stores in shared storage and parts on real workers: a collect written to a real local S3 server
(moto's, over HTTP) reads back equal to a local one, sharded parts included; a worker killed in the
middle of a part loses nothing: the queue redelivers the part and it resumes from its checkpoint."""

from __future__ import annotations

import threading
import time

import pytest

from labeler.core.config import get_settings, reset_settings
from labeler.db import Repository
from labeler.examples import FeatureStore
from labeler.examples.collect import run_collect
from labeler.examples.storage import Location
from labeler.runs.collect_jobs import run_sharded
from labeler.testing.api_process import free_port
from tests.collect.test_resume_and_cli import assert_same_store
from tests.collect.test_shards import gpt2_cfg, same_records



@pytest.fixture
def s3(monkeypatch, tmp_path):
    """moto's S3 server on a local port, a bucket, and the variables that point s3:// at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "LABELER_S3_ENDPOINT_URL": endpoint, "LABELER_STORE_CACHE": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="stores")
    yield endpoint
    server.stop()


def test_store_round_trip_through_s3(s3, inputs, corpus, gpt2_topk_sae, tmp_path, sqlite_url):
    import fsspec

    cfg = gpt2_cfg(inputs, corpus, gpt2_topk_sae)
    local = run_collect(cfg, tmp_path / "local", progress=False)
    url = run_collect(gpt2_cfg(inputs, corpus, gpt2_topk_sae), "s3://stores/run-1", progress=False)
    assert url == "s3://stores/run-1"
    fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": s3})
    names = {p.rsplit("/", 1)[-1] for p in fs.ls("stores/run-1")}
    assert {"manifest.json", "tokens.npy", "features", "neighbours.safetensors", "random.safetensors"} <= names
    assert "checkpoint" not in names  # nothing half-done is left behind
    # read back on "another machine": a fresh cache
    reader = FeatureStore(url)
    assert reader.loc.remote and reader.manifest["status"] == "complete"
    same_records(FeatureStore(local), reader)
    # a second run finds it complete in S3
    assert run_collect(gpt2_cfg(inputs, corpus, gpt2_topk_sae), url, progress=False, log=lambda *_: None) == url
    # parts in S3 (as workers on other machines write them) merge into the same store
    repo = Repository.open(sqlite_url)
    run_sharded(gpt2_cfg(inputs, corpus, gpt2_topk_sae), "s3://stores/run-2", feature_shards=2, corpus_shards=2,
                repo=repo, settings=get_settings(), log=lambda *_: None)
    same_records(FeatureStore(local), FeatureStore("s3://stores/run-2"))
    fetched = Location("s3://stores/run-2", cache_dir=tmp_path / "cache2")
    for name in ("tokens.npy", "stats.safetensors", "hard_negatives.safetensors"):
        fetched.fetch(name)
    assert (fetched.local / "tokens.npy").read_bytes() == (local / "tokens.npy").read_bytes()


@pytest.mark.redis
def test_killed_worker_part_is_redelivered_and_resumes(inputs, corpus, gpt2_topk_sae, tmp_path, redis_url,
                                                       postgres_url, monkeypatch):
    from tests.jobs.conftest import ROOT, Workers

    import os

    values = {"LABELER_DATABASE_URL": postgres_url, "LABELER_REDIS_URL": redis_url,
              "LABELER_VISIBILITY_TIMEOUT_S": "4"}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    reset_settings()
    env = {**os.environ, **values, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    workers = Workers(env, tmp_path)
    try:
        workers.start("a")
        # many small batches with a checkpoint after each: the kill lands in the middle of a part
        cfg = gpt2_cfg(inputs, corpus, gpt2_topk_sae, tokens=4800, batch_size=2, checkpoint_every_s=0)
        out = tmp_path / "queued"
        settings = get_settings()
        from labeler.runs.queue import CelerySender

        repo = Repository.open(settings.resolved_database_url)
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(out=run_sharded(
            cfg, str(out), feature_shards=2, corpus_shards=1, repo=repo, settings=settings,
            send=CelerySender(settings).collect_part, log=lambda *_: None, poll_s=0.2, timeout_s=240)))
        thread.start()
        deadline = time.monotonic() + 120
        positions = []
        while time.monotonic() < deadline and not positions:
            positions = [p for p in (out / "parts").glob("*/position.json")] if (out / "parts").exists() else []
            time.sleep(0.05)
        assert positions, workers.log("a")[-3000:]
        workers.kill("a")
        workers.start("b")
        thread.join(timeout=300)
        assert result.get("out") == str(out), workers.log("b")[-3000:]
        assert "resuming part" in workers.log("b")  # the killed part went on from its checkpoint
        job = repo.jobs.list()[0]
        assert job.spec["kind"] == "collect" and job.counts["done"] == 2 and job.status == "done"
    finally:
        workers.stop_all()
    single = run_collect(gpt2_cfg(inputs, corpus, gpt2_topk_sae, tokens=4800, batch_size=2), tmp_path / "single",
                         progress=False)
    assert_same_store(single, out)
