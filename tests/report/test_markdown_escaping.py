"""The Markdown summary escapes what came from an LLM or a user (explanations, titles, labels):
raw HTML or Markdown in an explanation must not become markup wherever report.md is rendered."""

from __future__ import annotations

from labeler.db import Repository
from labeler.records import Explanation, ScoreResult
from labeler.report import build_report

EVIL = ('<script>alert(1)</script> [click](http://evil.example) **bold** `code` | pipe\n'
        '# a heading\n<img src=x onerror=alert(2)>')


def test_explanations_and_titles_are_escaped_in_markdown(tmp_path):
    from labeler.examples.store import FeatureStore
    from labeler.testing import make_tiny_store

    repo = Repository.open(f"sqlite:///{tmp_path / 'r.db'}")
    sae_id = repo.catalog.register_store(FeatureStore(make_tiny_store(tmp_path / "store", n_features=16)))
    for i in range(1, 7):
        eid = repo.results.save_explanation(sae_id, Explanation(feature=i, text=f"{EVIL} {i}", explainer="baseline",
                                                                prompt_name="p", prompt_version="v1", prompt_hash="h"))
        repo.results.save_score(eid, ScoreResult(feature=i, method="simulation", value=i / 10, llm_model="sim"))
    paths = build_report(repo, sae_id, tmp_path / "report.html", title="<b>t</b> *x*")
    repo.close()
    md = paths.md.read_text()
    assert md.count("&lt;script&gt;") >= 6  # every best/worst line, escaped
    for raw in ("<script>", "<img", "<b>", " [click](http", " **bold**", " `code`", "\n# a heading"):
        assert raw not in md, raw
    assert r"\[click\]" in md and r"\*\*bold\*\*" in md and r"\| pipe" in md
    assert md.startswith(r"# &lt;b&gt;t&lt;/b&gt; \*x\*")
    # the HTML report was already autoescaped; it stays so
    assert "<script>alert" not in paths.html.read_text()
