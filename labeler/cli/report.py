"""CLI: ``labeler report``, ``labeler eval`` and ``labeler demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from labeler.cli._app import app

console = Console()


@app.command("report")
def report_cmd(
    sae: str = typer.Option(..., "--sae", help="SAE to report on: model-slug/sae-slug, a unique SAE slug, or its id."),
    out: Path = typer.Option(Path("report.html"), "--out", help="HTML file to write; .json and .md go next to it."),
    database_url: Optional[str] = typer.Option(None, "--db", help="Database URL (default: the configured one)."),
    store: Optional[Path] = typer.Option(None, "--store", help="Collect store for highlighted contexts (default: the one registered with the SAE)."),
    features: Optional[str] = typer.Option(None, "--features", help="Only these features, e.g. 0:100."),
    title: Optional[str] = typer.Option(None, "--title", help="Report title."),
) -> None:
    """Write a self-contained HTML evaluation report (+ JSON and Markdown summaries) for one SAE."""
    from labeler.core.config import get_settings
    from labeler.core.naming import parse_feature_range
    from labeler.db import Repository
    from labeler.report import build_report

    repo = Repository.open(database_url or get_settings().resolved_database_url)
    info = repo.catalog.resolve_sae(sae)
    feats = parse_feature_range(features, info.n_features) if features is not None else None  # "" is refused
    with console.status("building report..."):
        paths = build_report(repo, info.id, out, title=title, store_path=str(store) if store else None,
                             features=feats)
    repo.close()
    console.print(f"report: [bold]{paths.html}[/] (open it in a browser; no network needed)")
    console.print(f"summaries: {paths.json}, {paths.md}")


@app.command("eval")
def eval_cmd(
    config: Path = typer.Option(..., "--config", help="Evaluation config YAML (see eval/configs/)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: from the config, else under the data dir)."),
    database_url: Optional[str] = typer.Option(None, "--db", help="Database URL (default: a SQLite file in the output folder)."),
) -> None:
    """Run several explainer/scorer/LLM configurations on one seeded feature sample and compare them."""
    from labeler.core.config import get_settings
    from labeler.runs.evaluate import run_eval_file

    result = run_eval_file(config, get_settings(), console, out=out, database_url=database_url)
    console.print(f"comparison report: [bold]{result.report.html}[/]")


@app.command("demo")
def demo_cmd(
    out: Optional[Path] = typer.Option(None, "--out", help="Working folder (default: <data dir>/demo)."),
    features: int = typer.Option(64, "--features", min=1, help="How many features to label."),
    tokens: int = typer.Option(60_000, "--tokens", min=1000, help="Corpus tokens to train the SAE on and collect from."),
    sae_features: int = typer.Option(512, "--sae-features", min=8, help="Width of the SAE trained on the spot."),
    serve: bool = typer.Option(False, "--serve", help="Serve the API and feature pages afterwards."),
    port: Optional[int] = typer.Option(None, "--port", help="API port for --serve (default: settings.api_port)."),
) -> None:
    """Offline end-to-end demo: MiniLM + a tiny SAE + baseline labels + report (+ API with --serve)."""
    from labeler.core.config import get_settings
    from labeler.runs.demo import DemoOptions, run_demo

    run_demo(DemoOptions(out=out, n_features=features, tokens=tokens, sae_features=sae_features,
                         serve=serve, port=port), get_settings(), console)
