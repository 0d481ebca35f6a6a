"""`labeler report` on a database filled by the real pipeline."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from labeler.report import build_report
from labeler.report.queries import load_report_data
from labeler.report.stats import per_feature_scores


def test_report_html_is_self_contained_with_plots_chance_line_and_paired_test(labeled_db, tmp_path):
    paths = build_report(labeled_db.url, f"{labeled_db.model_slug}/{labeled_db.sae_slug}", tmp_path / "r.html")
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


def test_report_json_and_markdown_summaries(labeled_db, tmp_path):
    paths = build_report(labeled_db.url, str(labeled_db.sae_id), tmp_path / "out" / "report.html")
    summary = json.loads(paths.json.read_text())
    assert summary["n_features"] == len(labeled_db.features)
    assert set(summary["scorers"]) == {"simulation", "embedding"}
    assert len(summary["configurations"]) == 2  # the two baseline variants, told apart by config hash
    paired = {p["method"]: p for p in summary["paired"]}
    # paired n = features with a defined score under both configurations (some scores are
    # undefined, e.g. simulation on constant activations)
    data = load_report_data(labeled_db.url, labeled_db.sae_id)
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
    from labeler.report.runs import balanced_chunks

    assert balanced_chunks(list(range(17)), 16) == [list(range(17))]
    assert balanced_chunks(list(range(18)), 16) == [list(range(16)), [16, 17]]
    assert balanced_chunks([5], 16) == [[5]]


def test_report_and_page_queries_on_postgres(labeled_db, postgres_url, tmp_path):
    from labeler.db import Repository
    from labeler.examples.store import FeatureStore
    from labeler.pipeline import LabelSpec, sae_id_for_store
    from labeler.report import queries
    from labeler.report.runs import run_resumable

    store = FeatureStore(labeled_db.store_path)
    repo = Repository(postgres_url)
    repo.upgrade()
    sae_id = sae_id_for_store(repo, store)
    feats = labeled_db.features[:8]
    spec = LabelSpec(explainer="baseline", scorers=["embedding"], control=True)
    first = run_resumable(store, repo, sae_id, feats, spec, {**spec.to_dict(), "t": 1}, chunk=8)
    again = run_resumable(store, repo, sae_id, feats, spec, {**spec.to_dict(), "t": 1}, chunk=8)
    assert len(first.labeled) == 8 and again.reused == feats and again.job_id is None

    paths = build_report(repo, sae_id, tmp_path / "pg.html")
    summary = json.loads(paths.json.read_text())
    assert summary["n_features"] == 8 and summary["chance"]["embedding"]["n"] == 8
    assert summary["paired"] == []  # one configuration: nothing to pair
    assert "Only one explainer configuration" in paths.html.read_text()

    (info,) = queries.list_saes(repo)
    assert info.n_labeled == 8 and info.store_path
    items, total = queries.list_features(repo, sae_id, labeled_only=True)
    assert total == 8 and all(i.label_text for i in items)
    word = next(w for i in items for w in re.findall(r"[A-Za-z]{2,}", i.label_text))
    hits = queries.search_features_text(repo, sae_id, word.upper())  # case-insensitive
    assert hits and all(word.lower() in (queries.feature_detail(repo, sae_id, h.index)["explanations"][0]["text"]
                                         .lower()) for h in hits[:1])
    repo.close()
