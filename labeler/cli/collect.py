"""CLI commands of the collect stage: ``collect``, ``inspect``, ``train-sae``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from labeler.cli._app import app  # noqa: F401


def _device(device: Optional[str]) -> str:
    from labeler.core.config import get_settings

    if device in (None, "auto"):
        return get_settings().resolved_device()  # LABELER_DEVICE, "auto" picks CUDA when present
    return device


@app.command()
def collect(
    model: str = typer.Option(..., "--model", help="Hub id or local path of a transformers model."),
    hook: Optional[str] = typer.Option(None, "--hook", help="Module (transformer.h.6, model.layers.12) or TransformerLens "
                                       "hook name (blocks.6.hook_resid_pre); default: where the SAE says it reads."),
    sae: List[str] = typer.Option(["neurons"], "--sae", help="Local SAE folder/file, Hugging Face repo id (ORG/REPO), "
                                  "SAELens release name, or 'neurons'. Repeat for several SAEs in one pass."),
    sae_id: Optional[List[str]] = typer.Option(None, "--sae-id", help="The SAE inside the repo or release: a subfolder "
                                               "(layers.10, layer_20/width_16k/average_l0_71) or a release's SAE id. "
                                               "Repeat for several SAEs of one repo in one pass."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit of the SAE's Hub repo."),
    signs: Optional[str] = typer.Option(None, "--signs", help="neurons: pos, neg or pos,neg (each side its own feature)."),
    corpus: str = typer.Option("builtin", "--corpus", help="File, folder, Hugging Face dataset name, or 'builtin'."),
    out: str = typer.Option(..., "--out", help="Store directory (or fsspec URL, e.g. s3://bucket/store) to write "
                            "or resume; with several SAEs, the folder holding one store per SAE."),
    hook_io: Optional[str] = typer.Option(None, "--hook-io", help="Read the module's 'output' or 'input' (default: "
                                          "what the hook name or the SAE implies, else output)."),
    tokens: int = typer.Option(2_000_000, "--tokens", help="Corpus tokens to process."),
    ctx_len: int = typer.Option(64, "--ctx-len", help="Tokens per window (special tokens excluded)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Windows per forward pass."),
    seed: int = typer.Option(0, "--seed"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: settings)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32, bfloat16, float16 (default: settings)."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text in .jsonl/.parquet/datasets."),
    dataset_split: str = typer.Option("train", "--dataset-split"),
    drop_bos: bool = typer.Option(False, "--drop-bos", help="Do not put the tokenizer's BOS before each window."),
    checkpoint_every: float = typer.Option(60.0, "--checkpoint-every", help="Seconds between checkpoints."),
    force: bool = typer.Option(False, "--force", help="Recompute even if a finished store exists."),
    no_progress: bool = typer.Option(False, "--no-progress"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
    features: Optional[str] = typer.Option(None, "--features", help="Collect only features A:B (one part of the "
                                           "store; the store is finished when the parts cover every feature)."),
    feature_shards: int = typer.Option(1, "--feature-shards", help="Split the features into N parts "
                                       "(memory per process); Celery tasks when LABELER_REDIS_URL is set."),
    corpus_shards: int = typer.Option(1, "--corpus-shards", help="Split the corpus into M slices (throughput)."),
) -> None:
    """Stream a corpus through model + SAE(s) once and store every feature's examples."""
    from labeler.core.config import get_settings
    from labeler.corpus import CorpusSpec
    from labeler.examples.collect import CollectConfig, run_collect, run_collect_many

    def config(sae_source: str, one_id: Optional[str]) -> CollectConfig:
        target = _sae_target(model, sae_source, one_id, revision, hook, hook_io, signs)
        return CollectConfig(
            model=model, hook=target.hook, sae=target.sae, hook_io=target.hook_io, hook_name=target.tl_name,
            corpus=CorpusSpec(corpus, text_field=text_field, dataset_split=dataset_split),
            tokens=tokens, ctx_len=ctx_len, batch_size=batch_size, seed=seed, device=_device(device),
            dtype=dtype or get_settings().dtype, drop_bos=drop_bos, checkpoint_every_s=checkpoint_every,
        )

    if threads:
        import torch

        torch.set_num_threads(threads)
    sources = _sae_sources(sae, sae_id)
    log = lambda m: typer.echo(m, err=True)  # noqa: E731
    if len(sources) > 1:
        if features is not None or feature_shards > 1 or corpus_shards > 1:
            from labeler.core.errors import ConfigError

            raise ConfigError("several SAEs are collected in one pass over the whole corpus: --features, "
                              "--feature-shards and --corpus-shards take one SAE at a time")
        cfgs = [config(s, i) for s, i in sources]
        outs = [f"{out.rstrip('/')}/{_store_name(s, i)}" for s, i in sources]
        for path in run_collect_many(cfgs, outs, force=force, progress=not no_progress, log=log):
            typer.echo(str(path))
        return
    cfg = config(*sources[0])
    if features is not None or feature_shards > 1 or corpus_shards > 1:
        typer.echo(_split_collect(cfg, out, features, feature_shards, corpus_shards, force, not no_progress))
        return
    typer.echo(str(run_collect(cfg, out, force=force, progress=not no_progress, log=log)))


def _sae_sources(saes: List[str], sae_ids: Optional[List[str]]) -> list[tuple[str, Optional[str]]]:
    """(source, id) per SAE: several ``--sae-id`` of one ``--sae``, or several ``--sae`` alone."""
    from labeler.core.errors import ConfigError

    ids = list(sae_ids or [])
    if len(saes) > 1 and ids:
        raise ConfigError("give several --sae-id of one --sae, or several --sae without --sae-id, not both")
    pairs = [(saes[0], i) for i in ids] if ids else [(s, None) for s in saes]
    names = [_store_name(s, i) for s, i in pairs]
    if len(set(names)) != len(names):
        raise ConfigError(f"two of the SAEs would share a store name under --out: {names}")
    return pairs


def _store_name(sae_source: str, sae_id: Optional[str]) -> str:
    """The store folder of one SAE among several: its id in the repo, else its source's last part."""
    from labeler.core.naming import slugify

    return slugify(sae_id if sae_id else sae_source.rstrip("/").rsplit("/", 1)[-1])


def _sae_target(model: str, sae: str, sae_id: Optional[str], revision: Optional[str], hook: Optional[str],
               hook_io: Optional[str], signs: Optional[str]):
    """Resolve --sae/--sae-id/--revision/--signs and --hook/--hook-io into what CollectConfig takes."""
    from labeler.activations.target import resolve_target

    target = resolve_target(model, sae, sae_id=sae_id, revision=revision, hook=hook, hook_io=hook_io, signs=signs)
    own = target.sae_point
    if own is not None and (own.module, own.io) != (target.hook, target.hook_io):
        typer.echo(f"note: the SAE says it reads the {own.io} of {own.module} ({target.sae_hook.name}); "
                   f"--hook {hook!r} overrides it", err=True)
    mapped = f" (TransformerLens {target.tl_name})" if target.tl_name else ""
    typer.echo(f"SAE {target.sae}: reading the {target.hook_io} of {target.hook}{mapped}", err=True)
    return target


def _split_collect(cfg, out: str, features: Optional[str], feature_shards: int, corpus_shards: int, force: bool,
                   progress: bool) -> str:
    """``--features A:B`` (one part, merged when all parts are there) or ``--feature-shards`` /
    ``--corpus-shards`` (a collect job: Celery workers when Redis is configured, else here)."""
    from labeler.core.config import get_settings
    from labeler.core.errors import ConfigError

    def log(m: str) -> None:
        typer.echo(m, err=True)

    if features is not None:
        from labeler.examples import shards

        if feature_shards > 1 or corpus_shards > 1:
            raise ConfigError("--features collects one part: give it alone, without --feature-shards/--corpus-shards")
        loc, manifest = shards.prepare(cfg, out, force=force, log=log)
        if manifest is None:
            return str(out)
        part = shards.PartSpec(shards.parse_feature_range(features, int(manifest["sae"]["n_features"])),
                               (0, cfg.n_target))
        shards.check_overlap(part, shards.existing_parts(loc))
        shards.run_part(cfg, out, part, progress=progress, log=log)
        shards.merge(cfg, out, log=log)
        return str(out)
    from labeler.db import Repository
    from labeler.runs.collect_jobs import run_sharded
    from labeler.runs.queue import sender_for

    settings = get_settings()
    sender = sender_for(settings)
    return run_sharded(cfg, str(out), feature_shards=feature_shards, corpus_shards=corpus_shards,
                       repo=Repository.open(settings.resolved_database_url), settings=settings,
                       send=sender.collect_part if sender is not None else None, force=force, log=log)


@app.command()
def inspect(
    store: str = typer.Argument(..., help="Store directory (or fsspec URL) written by `labeler collect`."),
    feature: int = typer.Option(..., "--feature", help="Feature index."),
    as_json: bool = typer.Option(False, "--json", help="Print the full FeatureRecord as JSON."),
    split: str = typer.Option("train", "--split", help="Split to show in the human view."),
    n: int = typer.Option(5, "-n", help="Top contexts to show."),
) -> None:
    """Show one feature: statistics and highlighted top contexts."""
    from labeler.examples.store import FeatureStore

    rec = FeatureStore(store).feature(feature)
    if as_json:
        typer.echo(json.dumps(rec.to_dict()))
        return
    from rich.console import Console
    from rich.text import Text

    con = Console()
    st = rec.stats
    con.print(f"[bold]feature {rec.feature}[/]  density {st.density:.4%}  max {st.max:.3f}  "
              f"mean {st.mean:.4f}  mean active {st.mean_active:.3f}  firing {st.count}/{st.tokens_seen}")
    if rec.promoted_tokens:
        con.print(f"promotes: {rec.promoted_tokens}\nsuppresses: {rec.suppressed_tokens}", highlight=False)
    for ex in rec.select(split, "top")[:n]:  # type: ignore[arg-type]
        peak = ex.max_activation or 1.0
        line = Text(f"w{ex.window} max {ex.max_activation:6.3f} | ")
        for tok, a in zip(ex.tokens, ex.activations):
            shade = int(255 - 200 * max(0.0, a) / peak) if a > 0 else None
            line.append(tok.replace("\n", "⏎"), style=f"on rgb(255,{shade},{shade})" if shade is not None else "")
        con.print(line)


@app.command("train-sae")
def train_sae_cmd(
    model: str = typer.Option(..., "--model"),
    hook: str = typer.Option(..., "--hook"),
    out: Path = typer.Option(..., "--out"),
    corpus: str = typer.Option("builtin", "--corpus"),
    hook_io: str = typer.Option("output", "--hook-io"),
    latents: int = typer.Option(4096, "--latents"),
    k: int = typer.Option(32, "--k"),
    tokens: int = typer.Option(200_000, "--tokens"),
    ctx_len: int = typer.Option(64, "--ctx-len"),
    epochs: int = typer.Option(1, "--epochs"),
    batch_tokens: int = typer.Option(1024, "--batch-tokens"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
    lr: float = typer.Option(1e-3, "--lr"),
    seed: int = typer.Option(0, "--seed"),
    device: Optional[str] = typer.Option(None, "--device"),
) -> None:
    """Train a small TopK SAE on a hookpoint and save it in the SAELens layout."""
    from labeler.activations.train_sae import TrainSAEConfig, train_sae

    cfg = TrainSAEConfig(model=model, hook=hook, corpus=corpus, hook_io=hook_io, latents=latents, k=k,
                         tokens=tokens, ctx_len=ctx_len, epochs=epochs, lr=lr, seed=seed, device=_device(device),
                         batch_tokens=batch_tokens, threads=threads)
    typer.echo(str(train_sae(cfg, out, log=lambda m: typer.echo(m, err=True))))
