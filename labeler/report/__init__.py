"""Evaluation reports: one SAE's explanations and scores rendered as a self-contained HTML file
with ``.json`` and ``.md`` siblings.  Rendering only: loading is ``repo.reads.results``.
"""

from __future__ import annotations

from pathlib import Path

from labeler.db import Repository
from labeler.report.data import ReportData
from labeler.report.render import ReportPaths, render_report


def build_report(repo: Repository, sae_id: int, out: str | Path, *, title: str | None = None,
                 store_path: str | None = None, features: list[int] | None = None) -> ReportPaths:
    """Report on one SAE of ``repo`` (optionally on some of its features)."""
    data = ReportData.from_results(repo.reads.results(sae_id, features), title=title)
    if store_path:
        data.store_path = str(store_path)
    return render_report(data, out)


__all__ = ["build_report", "render_report", "ReportData", "ReportPaths"]
