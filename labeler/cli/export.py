"""CLI: ``labeler export`` (labeler's JSONL of everything, or Neuronpedia's import layout)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from labeler.cli._app import app

console = Console(stderr=True)


@app.command("export")
def export_cmd(
    sae: str = typer.Option(..., "--sae", help="SAE to export: model-slug/sae-slug, a unique SAE slug, or its id."),
    format: str = typer.Option("labeler", "--format", help="labeler (JSONL of everything) or neuronpedia"),
    out: Path = typer.Option(..., "--out", help="labeler: the .jsonl file; neuronpedia: the folder to write"),
    database_url: Optional[str] = typer.Option(None, "--db", help="Database URL (default: the configured one)."),
    store: Optional[Path] = typer.Option(None, "--store", help="Collect store (default: the SAE's registered one)."),
    labeled_only: bool = typer.Option(False, "--labeled-only", help="labeler: skip unlabeled features"),
    model_id: Optional[str] = typer.Option(None, "--model-id", help="neuronpedia: Model.id (default: from the SAE)"),
    source_id: Optional[str] = typer.Option(None, "--source-id",
                                            help="neuronpedia: source id LAYER-SET, e.g. 6-res-jb (default: from "
                                                 "the SAE's neuronpedia_id, else the hook's layer and the SAE name)"),
    release: Optional[str] = typer.Option(None, "--release", help="neuronpedia: SourceRelease name (writes release.jsonl)"),
    creator_id: Optional[str] = typer.Option(None, "--creator-id",
                                             help="neuronpedia: user id authoring the rows (default: the bot user "
                                                  "every Neuronpedia instance seeds)"),
    neighbours: int = typer.Option(10, "--neighbours", min=0, help="neuronpedia: similar features per feature"),
    batch_size: int = typer.Option(1024, "--batch-size", min=1, help="neuronpedia: features per batch file"),
) -> None:
    """Export one SAE's features, explanations, scores and provenance."""
    from labeler.core.config import get_settings
    from labeler.core.errors import ConfigError
    from labeler.db import Repository
    from labeler.examples.store import FeatureStore
    from labeler.export import FORMATS, default_source, export_neuronpedia, feature_lines

    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}: use one of {', '.join(FORMATS)}")
    repo = Repository.open(database_url or get_settings().resolved_database_url)
    try:
        info = repo.catalog.resolve_sae(sae)
        if format == "labeler":
            out.parent.mkdir(parents=True, exist_ok=True)
            n = 0
            with out.open("w", encoding="utf-8") as f:
                for line in feature_lines(repo, info.id, labeled_only=labeled_only):
                    f.write(line)
                    n += 1
            console.print(f"wrote {n} feature(s) of {info.model}/{info.sae} to [bold]{out}[/]", highlight=False)
            return
        if store is None and not info.store_path:
            raise ConfigError(f"{info.model}/{info.sae} has no registered collect store: give --store DIR")
        fs = FeatureStore(store or info.store_path)
        src = default_source(fs.manifest, model_id=model_id, source_id=source_id, creator_id=creator_id,
                             release=release)
        from rich.progress import Progress

        with Progress(transient=True, console=console) as bar:
            task = bar.add_task(f"{src.model_id}/{src.source_id}", total=fs.n_features)
            result = export_neuronpedia(repo, info.id, fs, out, src, batch_size=batch_size, neighbours=neighbours,
                                        progress=lambda k: bar.advance(task, k))
    finally:
        repo.close()
    console.print(f"Neuronpedia export of {info.model}/{info.sae} as {src.model_id}/{src.source_id}: "
                  f"[bold]{result.source_dir}[/]\n  {result.count('features')} features, "
                  f"{result.count('activations')} activations, {result.count('explanations')} explanations, "
                  f"{result.count('explanation_scores')} scores; the target needs: "
                  f"user {', '.join(result.requires['users'])} and the types in {out / 'config'}", highlight=False)
