"""Evaluation reports (HTML + JSON + Markdown), the evaluation harness and the offline demo.

``build_report(db, sae, out)`` reads an SAE's explanations and scores from the database and
writes a self-contained HTML report with ``.json`` and ``.md`` siblings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labeler.report.render import ReportPaths, render_report


def build_report(source: Any, sae: str | int, out: str | Path, *, title: str | None = None,
                 store_path: str | None = None, features: list[int] | None = None) -> ReportPaths:
    """Report on one SAE. ``source``: a database URL, engine or Repository."""
    import sqlalchemy as sa

    from labeler.core.errors import InputError
    from labeler.report.queries import load_report_data

    try:
        data = load_report_data(source, sae, title=title, features=features)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as e:
        raise InputError(f"cannot read the labeler tables ({e.orig}); run `labeler db upgrade` and "
                         "`labeler label` first") from None
    if store_path:
        data.store_path = str(store_path)
    return render_report(data, out)


__all__ = ["build_report", "render_report", "ReportPaths"]
