"""`labeler report` on a database filled by the real pipeline."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from labeler.db import Repository
from labeler.report import build_report
from labeler.report.data import ReportData
from labeler.report.stats import per_feature_scores


@pytest.fixture
def repo(labeled_db):
    repo = Repository.open(labeled_db.url)
    yield repo
    repo.close()


def test_report_html_is_self_contained_with_plots_chance_line_and_paired_test(labeled_db, repo, tmp_path):
    info = repo.catalog.resolve_sae(f"{labeled_db.model_slug}/{labeled_db.sae_slug}")
    assert info.id == labeled_db.sae_id
    paths = build_report(repo, info.id, tmp_path / "r.html")
    html = paths.html.read_text()
    # plots are embedded images, one per scorer distribution at least
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', html)) >= 4
    assert "chance (shuffled explanations)" in html
    assert "Explainer versus explainer" in html and ("wilcoxon" in html or "paired-t" in html)
    assert "Agreement between scorers" in html and "Spearman" in html
    # no external resources at all
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)
    assert "http://" not in html and "https://" not in html
    # best features show highlighted contexts from the store
    assert 'class="tok act"' in html


def test_report_json_and_markdown_summaries(labeled_db, repo, tmp_path):
    info = repo.catalog.resolve_sae(str(labeled_db.sae_id))
    paths = build_report(repo, info.id, tmp_path / "out" / "report.html")
    summary = json.loads(paths.json.read_text())
    assert summary["n_features"] == len(labeled_db.features)
    assert set(summary["scorers"]) == {"simulation", "embedding"}
    assert len(summary["configurations"]) == 2  # the two baseline variants, told apart by config hash
    paired = {p["method"]: p for p in summary["paired"]}
    # paired n = features with a defined score under both configurations (some scores are
    # undefined, e.g. simulation on constant activations)
    data = ReportData.from_results(repo.reads.results(labeled_db.sae_id))
    for method in ("simulation", "embedding"):
        a, b = (per_feature_scores(data.scores, method, lab) for lab in summary["configurations"])
        assert paired[method]["n"] == len(set(a) & set(b)) > len(labeled_db.features) // 2
    assert paired["simulation"]["test"] in ("wilcoxon", "paired-t", "none")
    chance = summary["chance"]["simulation"]
    assert chance["n"] > 0 and chance["mean"] is not None
    sim_means = [d["mean"] for d in summary["distributions"] if d["method"] == "simulation"]
    assert max(sim_means) > chance["mean"]  # real labels beat shuffled ones
    assert summary["best"] and summary["best"][0]["explanation"]
    md = paths.md.read_text()
    assert "| configuration | scorer |" in md and "## Paired comparisons" in md
    assert f"**#{summary['best'][0]['feature']}**" in md


def test_report_cli_and_clear_error_for_unknown_sae(labeled_db, tmp_path):
    env_db = ["--db", labeled_db.url]
    ok = subprocess.run([sys.executable, "-m", "labeler", "report", "--sae", labeled_db.sae_slug,
                         "--out", str(tmp_path / "cli.html"), *env_db], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "cli.html").exists() and (tmp_path / "cli.json").exists() and (tmp_path / "cli.md").exists()
    bad = subprocess.run([sys.executable, "-m", "labeler", "report", "--sae", "nope/nothing",
                          "--out", str(tmp_path / "x.html"), *env_db], capture_output=True, text=True)
    assert bad.returncode != 0
    assert "no SAE 'nope/nothing'" in bad.stderr and labeled_db.sae_slug in bad.stderr
    assert "Traceback" not in bad.stderr


def test_balanced_chunks_never_leave_a_feature_alone():
    from labeler.runs.runner import chunked

    assert chunked(list(range(17)), 16) == [list(range(17))]
    assert chunked(list(range(18)), 16) == [list(range(16)), [16, 17]]
    assert chunked([5], 16) == [[5]]


def test_report_and_page_queries_on_postgres(labeled_db, postgres_url, tmp_path):
    from labeler.core.config import get_settings
    from labeler.runs.runner import Runner
    from labeler.runs.spec import LabelSpec, make_job_spec

    repo = Repository.open(postgres_url)
    settings = get_settings()
    runner = Runner(repo, settings)
    store = runner.stores.get(labeled_db.store_path)
    sae_id = repo.catalog.sae_id_for_store(store)
    feats = labeled_db.features[:8]
    spec = make_job_spec(labeled_db.store_path, LabelSpec(explainer="baseline", scorers=["embedding"], control=True),
                         settings, name="t1")
    spec.chunk_size = 8
    first = runner.run(runner.create_job(spec, feats))
    n_explanations = len(repo.reads.results(sae_id).explanations)
    # The same spec again: a new job that takes every feature over from the first, computing nothing.
    again = runner.run(runner.create_job(spec, feats))
    assert first.counts["done"] == 8 and first.counts["reused"] == 0 and first.sae_id == sae_id
    assert again.id != first.id and again.status == "done"
    assert again.counts["reused"] == 8 and again.counts["done"] == 8 and again.counts["pending"] == 0
    assert again.tokens["calls"] == 0 and len(repo.reads.results(sae_id).explanations) == n_explanations

    paths = build_report(repo, sae_id, tmp_path / "pg.html")
    summary = json.loads(paths.json.read_text())
    assert summary["n_features"] == 8 and summary["chance"]["embedding"]["n"] == 8
    assert summary["paired"] == []  # one configuration: nothing to pair
    assert "Only one explainer configuration" in paths.html.read_text()

    (info,) = repo.catalog.list_saes()
    assert info.n_labeled == 8 and info.store_path
    items = repo.reads.list_features(sae_id, has_label=True)
    total = repo.reads.count_features(sae_id, has_label=True)
    assert total == 8 == len(items) and all(i.label and i.label.text for i in items)
    word = next(w for i in items for w in re.findall(r"[A-Za-z]{2,}", i.label.text))
    hits = repo.search.text(word.upper(), sae_id=sae_id)  # case-insensitive
    assert hits and all(word.lower() in repo.reads.feature(sae_id, h.index).explanations[0].text.lower()
                        for h in hits[:1])
    repo.close()
