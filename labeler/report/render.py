"""Turn report data into report.html (self-contained), report.json and report.md."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

import labeler
from labeler.core.errors import InputError
from labeler.report import plots
from labeler.report.data import ReportData
from labeler.report.highlight import HighlightedContext, contexts
from labeler.report.stats import Analysis, analyse, best_and_worst

log = logging.getLogger(__name__)

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("labeler.report", "templates"),
    autoescape=jinja2.select_autoescape(["html", "html.j2"]),
    trim_blocks=True, lstrip_blocks=True,
)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"
    return str(v)


_ENV.filters["fmt"] = _fmt


def _ci(interval: Any) -> str:
    """``[low, high]`` of a confidence interval, ``[–]`` when there is none."""
    if interval is None or interval.low is None:
        return "[–]"
    return f"[{_fmt(interval.low)}, {_fmt(interval.high)}]"


_ENV.filters["ci"] = _ci

# What makes Markdown markup mid-line: emphasis, code, links/images, table cells, strikethrough,
# headings; a backslash first so escapes stay escapes.  (<, > and & become entities.)
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~#])")


def markdown_text(v: Any) -> str:
    """Text (an explanation, a title, a label) as literal Markdown: on one line (a newline could
    start a heading, a list or a raw HTML block), HTML as entities, markup characters escaped."""
    one_line = " ".join(str(v).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(one_line, quote=False))


_ENV.filters["md"] = markdown_text


@dataclass
class FeatureShowcase:
    feature: int
    score: float
    explanation: str
    density: float | None
    max_activation: float | None
    contexts: list[HighlightedContext] = field(default_factory=list)


@dataclass
class ReportPaths:
    html: Path
    json: Path
    md: Path


def _open_store(path: str | None):
    if not path:
        return None
    from labeler.examples.store import FeatureStore

    try:
        return FeatureStore(path)
    except (InputError, OSError) as e:  # contexts are a bonus, never a failure
        log.warning("no highlighted contexts: cannot open store %s (%s)", path, e)
        return None


def showcase(data: ReportData, analysis: Analysis, k: int = 5, n_contexts: int = 3
             ) -> tuple[list[FeatureShowcase], list[FeatureShowcase]]:
    best, worst = best_and_worst(data, analysis.primary_method, analysis.primary_label, k)
    store = _open_store(data.store_path)
    text_of = {e.feature: e.text for e in data.explanations if e.configuration == analysis.primary_label and not e.failed}

    def make(feature: int, score: float) -> FeatureShowcase:
        f = data.features.get(feature)
        ctx: list[HighlightedContext] = []
        if store is not None and 0 <= feature < store.n_features:
            ctx = contexts(store.feature(feature), ("top",), n_contexts)
        return FeatureShowcase(feature=feature, score=score, explanation=text_of.get(feature, ""),
                               density=f.density if f else None,
                               max_activation=f.max_activation if f else None, contexts=ctx)

    return [make(*kv) for kv in best], [make(*kv) for kv in worst]


def summary_json(data: ReportData, analysis: Analysis, best: list[FeatureShowcase],
                 worst: list[FeatureShowcase]) -> dict[str, Any]:
    def brief(s: FeatureShowcase) -> dict[str, Any]:
        return {"feature": s.feature, "score": s.score, "explanation": s.explanation,
                "density": s.density, "max_activation": s.max_activation}

    return {
        "title": data.title, "model": data.model, "sae": data.sae,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "labeler_version": labeler.__version__,
        "n_features": len({e.feature for e in data.explanations}),
        "n_explanations": len(data.explanations), "n_scores": len(data.scores),
        "configurations": data.labels, "scorers": data.methods,
        **analysis.to_dict(),
        "best": [brief(s) for s in best], "worst": [brief(s) for s in worst],
    }


def render_report(data: ReportData, out: str | Path) -> ReportPaths:
    """Write ``out`` (HTML) and ``.json`` / ``.md`` siblings; return their paths."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        out = out / "report.html" if (out.is_dir() or not out.suffix) else out.with_suffix(".html")
    if not data.explanations:
        raise InputError(f"nothing to report for {data.model}/{data.sae}: no explanations in the database yet "
                         "(run `labeler label` first)")
    out.parent.mkdir(parents=True, exist_ok=True)
    analysis = analyse(data)
    best, worst = showcase(data, analysis)

    figures: dict[str, Any] = {"distributions": {}, "paired": [], "vs_feature": {}}
    for method in data.methods:
        dists = [d for d in analysis.distributions if d.method == method]
        figures["distributions"][method] = plots.score_distribution(method, dists, analysis.chance.get(method))
        figures["vs_feature"][method] = plots.score_vs_feature(data, analysis, method)
    for p in analysis.paired:
        figures["paired"].append(plots.paired_scatter(data, p.method, p.a, p.b))
    figures["agreement"] = plots.agreement_heatmap(analysis.agreement) if len(data.methods) > 1 else None
    figures["costs"] = plots.cost_bars(analysis) if analysis.costs else None

    summary = summary_json(data, analysis, best, worst)
    ctx = dict(data=data, a=analysis, figures=figures, best=best, worst=worst, s=summary,
               chance_label=plots.CHANCE_LABEL)
    paths = ReportPaths(html=out, json=out.with_suffix(".json"), md=out.with_suffix(".md"))
    paths.html.write_text(_ENV.get_template("report.html.j2").render(**ctx), encoding="utf-8")
    paths.md.write_text(_ENV.get_template("report.md.j2").render(**ctx), encoding="utf-8")
    paths.json.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return paths
