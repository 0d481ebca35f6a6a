"""``labeler steer``: a feature's effect on what the model writes, steered beside unsteered."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer

from labeler.cli._app import app


@app.command()
def steer(
    store: Path = typer.Option(..., "--store", help="Collect store (its model, hookpoint and SAE are used)."),
    feature: int = typer.Option(..., "--feature", help="Feature index."),
    prompt: str = typer.Option(..., "--prompt", help="Text the model continues."),
    strength: Optional[float] = typer.Option(None, "--strength",
                                             help="Add this many units of the feature's decoder row."),
    clamp: Optional[float] = typer.Option(None, "--clamp", help="Hold the feature's activation at this value instead."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", help="Tokens to generate."),
    samples: int = typer.Option(1, "--samples", help="Continuations of each kind."),
    temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature (0: greedy)."),
    seed: int = typer.Option(0, "--seed", help="Both runs sample from this seed."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: settings)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print steered and unsteered continuations of a prompt side by side."""
    from rich.console import Console
    from rich.table import Table

    from labeler.activations.steering import Intervention, steer as run_steer
    from labeler.core.config import get_settings
    from labeler.core.errors import InputError
    from labeler.examples.store import FeatureStore
    from labeler.runs.subjects import SubjectCache

    if (strength is None) == (clamp is None):
        raise InputError("give exactly one of --strength (add the decoder row) or --clamp (hold the activation)")
    iv = Intervention(feature, "add", strength) if strength is not None else Intervention(feature, "clamp", clamp)
    fs = FeatureStore(store)
    fs.feature(feature)  # an unknown feature fails here, before the model loads
    settings = get_settings()
    if device:
        settings = settings.model_copy(update={"device": device})
    subject = SubjectCache(settings).get(fs)
    result = run_steer(subject, prompt, iv, max_new_tokens=max_new_tokens, samples=samples,
                       temperature=temperature, seed=seed)
    if as_json:
        print(json.dumps(asdict(result), indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{fs.model_name} · {fs.sae_name} · {iv.describe()} · seed {seed}", show_lines=True)
    table.add_column("unsteered", overflow="fold")
    table.add_column(f"steered ({iv.describe()})", overflow="fold")
    for plain, steered in zip(result.unsteered, result.steered):
        table.add_row(prompt + plain, prompt + steered)
    Console(soft_wrap=False).print(table, highlight=False, markup=False)
