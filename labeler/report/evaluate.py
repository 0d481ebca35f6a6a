"""Evaluation harness: one seeded feature sample, several explainer configurations, one report.

A config file (YAML, see ``eval/configs/``) names a collect store, a sample, the scorers and
the configurations to compare.  Every configuration is run through ``labeler.pipeline`` on
the same features, so the report's paired tests compare like with like.  Re-running the same
config reuses finished work (the repository's writes are idempotent).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.console import Console

from labeler.core.errors import ConfigError, InputError
from labeler.report.render import ReportPaths, render_report

DEMO_STORE = "demo"  # `store: demo` means: the store `labeler demo` builds (built on first use)


class EvalConfiguration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=80)
    explainer: str
    options: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None  # the explainer's LLM model (default: settings)
    requires_llm: bool = False  # skipped, with a note, when no LLM endpoint is configured


class EvalSample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(32, ge=1)
    seed: int = 0
    features: str | None = None  # range to draw from, e.g. "0:512" (default: every feature)
    min_count: int = Field(1, ge=0)  # skip features that fired fewer times (dead features)


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "eval"
    store: str
    database_url: str | None = None
    out: str | None = None
    sample: EvalSample = Field(default_factory=EvalSample)
    scorers: list[str] = Field(default_factory=lambda: ["simulation"], min_length=1)
    scorer_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    control: bool = True  # also score shuffled explanations: the report's chance line
    configurations: list[EvalConfiguration] = Field(min_length=1)

    @field_validator("configurations")
    @classmethod
    def _unique_names(cls, v: list[EvalConfiguration]) -> list[EvalConfiguration]:
        names = [c.name for c in v]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"configuration names must be unique; repeated: {sorted(dup)}")
        return v


@dataclass
class EvalResult:
    config: EvalConfig
    features: list[int]
    ran: list[str]
    skipped: dict[str, str]
    report: ReportPaths
    out: Path


def load_eval_config(path: str | Path) -> EvalConfig:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"eval config {path} does not exist (examples: eval/configs/*.yaml)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"eval config {path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"eval config {path} must be a mapping with at least 'store' and 'configurations'")
    try:
        cfg = EvalConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '(top)'}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"eval config {path} is invalid: {problems}") from None
    # Relative store/out paths are relative to the config file (so configs travel with their data).
    if cfg.store != DEMO_STORE and not Path(cfg.store).is_absolute():
        cand = (path.parent / cfg.store)
        cfg.store = str(cand if cand.exists() or not Path(cfg.store).exists() else Path(cfg.store))
    return cfg


def sample_features(stats: dict[str, np.ndarray], n_features: int, sample: EvalSample) -> list[int]:
    """A seeded, sorted sample of live features: the same config always picks the same ones."""
    from labeler.core.naming import parse_feature_range

    pool = parse_feature_range(sample.features, n_features) if sample.features else list(range(n_features))
    counts = np.asarray(stats.get("count", np.ones(n_features)))
    pool = [i for i in pool if counts[i] >= sample.min_count]
    if not pool:
        raise InputError(f"no feature fired at least {sample.min_count} time(s) in the sample range; "
                         "collect more tokens or lower sample.min_count")
    rng = np.random.default_rng(sample.seed)
    k = min(sample.n, len(pool))
    return sorted(int(i) for i in rng.choice(np.asarray(pool), size=k, replace=False))


def _build(cls_or_fn: Any, **kwargs: Any) -> Any:
    """Construct a LabelSpec with only the fields this version of it has."""
    if dataclasses.is_dataclass(cls_or_fn):
        names = {f.name for f in dataclasses.fields(cls_or_fn)}
    elif hasattr(cls_or_fn, "model_fields"):
        names = set(cls_or_fn.model_fields)
    else:
        names = set(inspect.signature(cls_or_fn).parameters)
    return cls_or_fn(**{k: v for k, v in kwargs.items() if k in names and v is not None})


def make_spec(conf: EvalConfiguration, cfg: "EvalConfig") -> Any:
    from labeler.pipeline import LabelSpec

    return _build(LabelSpec, explainer=conf.explainer, explainer_options=dict(conf.options),
                  explainer_model=conf.model, scorers=list(cfg.scorers),
                  scorer_options=dict(cfg.scorer_options) or None, control=cfg.control, seed=cfg.sample.seed)


def llm_configured() -> bool:
    from labeler.core.config import get_settings

    return get_settings().llm_role("explainer").configured


def spec_dict(spec: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(spec):
        return dataclasses.asdict(spec)
    if hasattr(spec, "model_dump"):
        return spec.model_dump(mode="json")
    return dict(vars(spec))


def names_by_job(source: Any, job_ids: list[int]) -> dict[int, str]:
    """eval_name recorded in each job's spec (explanations keep the job that first made them)."""
    import sqlalchemy as sa

    from labeler.db import models as m
    from labeler.report.queries import engine_of

    if not job_ids:
        return {}
    J = m.Job.__table__
    with engine_of(source).connect() as c:
        rows = c.execute(sa.select(J.c.id, J.c.spec).where(J.c.id.in_(job_ids)))
        return {r.id: (r.spec or {}).get("eval_name") for r in rows if (r.spec or {}).get("eval_name")}


def run_eval(cfg: EvalConfig, *, out: Path | None = None, database_url: str | None = None,
             console: Console | None = None) -> EvalResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from labeler.core.config import get_settings
    from labeler.db import Repository
    from labeler.examples.store import FeatureStore
    from labeler.pipeline import sae_id_for_store
    from labeler.report.runs import run_resumable
    from labeler.report.queries import load_report_data, resolve_sae

    console = console or Console()
    settings = get_settings()
    out = Path(out or cfg.out or settings.data_dir / "eval" / cfg.name)
    out.mkdir(parents=True, exist_ok=True)
    url = database_url or cfg.database_url or f"sqlite:///{(out / 'eval.db').resolve()}"

    if cfg.store == DEMO_STORE:
        from labeler.report.demo import DemoOptions, ensure_demo_store

        store_path = ensure_demo_store(DemoOptions(), console=console)
    else:
        store_path = Path(cfg.store)
    store = FeatureStore(store_path)
    features = sample_features(store.all_stats(), store.n_features, cfg.sample)
    console.print(f"[bold]{cfg.name}[/]: {len(features)} features sampled (seed {cfg.sample.seed}) "
                  f"from {store.model_name} / {store.sae_name}")

    repo = Repository(url)
    repo.upgrade()
    sae_id = sae_id_for_store(repo, store)

    ran: list[str] = []
    skipped: dict[str, str] = {}
    have_llm = llm_configured()
    chunk = max(1, settings.chunk_size)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        for conf in cfg.configurations:
            if conf.requires_llm and not have_llm:
                skipped[conf.name] = "no LLM endpoint configured (set OPENAI_BASE_URL / OPENAI_API_KEY)"
                console.print(f"[yellow]skipping {conf.name}[/]: {skipped[conf.name]}")
                continue
            spec = make_spec(conf, cfg)
            task = progress.add_task(f"{conf.name}", total=len(features))
            outcome = run_resumable(store, repo, sae_id, features, spec, {**spec_dict(spec), "eval_name": conf.name},
                                    chunk=chunk, on_progress=lambda n, t=task: progress.advance(t, n))
            if outcome.reused:
                console.print(f"{conf.name}: reused {len(outcome.reused)} features finished by an earlier run")
            if outcome.failed:
                console.print(f"[yellow]{conf.name}: {len(outcome.failed)} features failed[/] "
                              f"(first: {next(iter(outcome.failed.values()))})")
            ran.append(conf.name)
    if not ran:
        raise ConfigError(f"eval {cfg.name}: every configuration was skipped ({skipped})")

    info = resolve_sae(repo, sae_id)
    data = load_report_data(repo, info, title=f"eval: {cfg.name} ({store.model_name} / {store.sae_name})",
                            features=features)
    data.store_path = str(store_path)
    # Name each arm after its configuration: explanations made by an older job of the same
    # configuration (a re-run) still carry that job's eval_name.
    all_jobs = sorted({e.job_id for e in data.explanations if e.job_id is not None})
    names = names_by_job(repo, all_jobs)
    for e in data.explanations:
        if e.job_id in names:
            e.label = names[e.job_id]
    label_of = {e.id: e.label for e in data.explanations}
    for s in data.scores:
        s.label = label_of.get(s.explanation_id, s.label)
    paths = render_report(data, out / "report.html")
    (out / "sample.json").write_text(json.dumps({
        "config": cfg.model_dump(mode="json"), "features": features, "ran": ran, "skipped": skipped,
        "database_url": url if url.startswith("sqlite") else "(configured)",
    }, indent=2), encoding="utf-8")
    return EvalResult(config=cfg, features=features, ran=ran, skipped=skipped, report=paths, out=out)


def run_eval_file(path: str | Path, *, out: Path | None = None, database_url: str | None = None,
                  console: Console | None = None) -> EvalResult:
    return run_eval(load_eval_config(path), out=out, database_url=database_url, console=console)


def main(argv: list[str] | None = None) -> None:
    """``python -m eval.harness CONFIG [--out DIR]``: same as ``labeler eval --config CONFIG``."""
    import argparse
    import sys

    from labeler.core.errors import LabelerError

    ap = argparse.ArgumentParser(prog="python -m eval.harness", description=main.__doc__)
    ap.add_argument("config")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--db", dest="database_url")
    args = ap.parse_args(argv)
    try:
        res = run_eval_file(args.config, out=args.out, database_url=args.database_url)
    except LabelerError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    print(res.report.html)
