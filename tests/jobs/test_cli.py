"""`labeler label / explain / score / submit / jobs` as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run(args: list[str], env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "labeler", *args], capture_output=True, text=True, env=env,
                          timeout=180)


def test_label_offline_then_jobs_json(tiny_store, alive_features, tmp_path):
    db = {"LABELER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    feats = ",".join(map(str, alive_features[:3]))
    out = run(["label", str(tiny_store), "--features", feats, "--scorers", "simulation", "--json"], db)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["status"] == "done" and info["counts"] == {"pending": 0, "done": 3, "failed": 0, "reused": 0}
    assert info["spec"]["label"]["explainer"] == "baseline"  # no endpoint: the offline explainer

    out = run(["jobs", str(info["id"])], db)
    assert out.returncode == 0 and "done 3" in out.stdout and "pending 0" in out.stdout

    out = run(["score", str(tiny_store), "--features", feats, "--scorers", "embedding"], db)
    assert out.returncode == 0, out.stderr
    assert "scored 3 feature(s); 0 failed" in out.stdout

    out = run(["jobs", "999", "--json"], db)
    assert out.returncode != 0 and "no job 999" in out.stderr


def test_llm_only_options_without_endpoint_fail_clearly(tiny_store, tmp_path):
    db = {"LABELER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    out = run(["explain", str(tiny_store), "--features", "0:2", "--explainer", "highlighted", "--llm", "gpt-4o-mini"], db)
    assert out.returncode == 2
    assert "needs an LLM endpoint" in out.stderr and "Traceback" not in out.stderr
    out = run(["label", str(tiny_store), "--features", "0:2", "--scorers", "detection"], db)
    assert out.returncode == 2 and "scorer 'detection' needs an LLM endpoint" in out.stderr


def test_submit_without_redis_says_how_to_run_locally(tiny_store, tmp_path):
    out = run(["submit", "--store", str(tiny_store), "--features", "0:4"],
              {"LABELER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"})
    assert out.returncode == 2
    assert "LABELER_REDIS_URL" in out.stderr and "labeler label" in out.stderr


def test_bad_feature_range_names_the_problem(tiny_store, tmp_path):
    out = run(["label", str(tiny_store), "--features", "0:9999"],
              {"LABELER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"})
    assert out.returncode == 2 and "out of range" in out.stderr


def test_explain_with_the_llm_test_server_prints_cost(tiny_store, alive_features, tmp_path, llm_server):
    env = {"LABELER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "OPENAI_BASE_URL": llm_server.base_url,
           "OPENAI_API_KEY": "k", "LABELER_LLM_CACHE": "false"}
    feats = ",".join(map(str, alive_features[:2]))
    out = run(["explain", str(tiny_store), "--features", feats, "--explainer", "highlighted"], env)
    assert out.returncode == 0, out.stderr
    assert "explained 2 feature(s)" in out.stdout and "prompt" in out.stdout and "$" in out.stdout
    assert llm_server.stats["chat"] >= 2
