"""Evaluation harness: one seeded feature sample, several explainer configurations, one report.

A config file (YAML, see ``eval/configs/``) names a collect store, a sample, the scorers and
the configurations to compare.  Every configuration is one named job of the runner on the same
features, so the report's paired tests compare like with like.  Re-running the same config
reuses finished work (a job with the same spec and name takes over what an earlier one did).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.console import Console

from labeler.core.config import Settings
from labeler.core.errors import ConfigError, InputError
from labeler.report.render import ReportPaths, render_report
from labeler.runs.sample import EvalSample, sample_features
from labeler.runs.spec import LabelSpec, make_job_spec

DEMO_STORE = "demo"  # `store: demo` means: the store `labeler demo` builds (built on first use)


class EvalConfiguration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=80)
    explainer: str
    options: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None  # the explainer's LLM model (default: settings)
    requires_llm: bool = False  # skipped, with a note, when no LLM endpoint is configured


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


def make_label_spec(conf: EvalConfiguration, cfg: EvalConfig) -> LabelSpec:
    return LabelSpec(explainer=conf.explainer, explainer_options=dict(conf.options), explainer_model=conf.model,
                     scorers=list(cfg.scorers), scorer_options=dict(cfg.scorer_options), control=cfg.control,
                     seed=cfg.sample.seed)


def run_eval(cfg: EvalConfig, settings: Settings, console: Console, *, out: Path | None = None,
             database_url: str | None = None) -> EvalResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from labeler.db import Repository
    from labeler.report.data import ReportData
    from labeler.runs.runner import Runner

    out = Path(out or cfg.out or settings.data_dir / "eval" / cfg.name)
    out.mkdir(parents=True, exist_ok=True)
    url = database_url or cfg.database_url or f"sqlite:///{(out / 'eval.db').resolve()}"

    if cfg.store == DEMO_STORE:
        from labeler.runs.demo import DemoOptions, ensure_demo_store

        store_path = ensure_demo_store(DemoOptions(), settings, console)
    else:
        store_path = Path(cfg.store)
    repo = Repository.open(url)
    runner = Runner(repo, settings)
    store = runner.stores.get(store_path)
    features = sample_features(store.all_stats(), store.n_features, cfg.sample)
    console.print(f"[bold]{cfg.name}[/]: {len(features)} features sampled (seed {cfg.sample.seed}) "
                  f"from {store.model_name} / {store.sae_name}")

    ran: list[str] = []
    skipped: dict[str, str] = {}
    have_llm = settings.llm_role("explainer").configured
    sae_id: int | None = None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        for conf in cfg.configurations:
            if conf.requires_llm and not have_llm:
                skipped[conf.name] = "no LLM endpoint configured (set OPENAI_BASE_URL / OPENAI_API_KEY)"
                console.print(f"[yellow]skipping {conf.name}[/]: {skipped[conf.name]}")
                continue
            spec = make_job_spec(store_path, make_label_spec(conf, cfg), settings, name=conf.name)
            job_id = runner.create_job(spec, features)
            task = progress.add_task(f"{conf.name} (job {job_id})", total=len(features))
            progress.advance(task, runner.progress(job_id).counts["reused"])
            job = runner.run(job_id, on_chunk=lambda r, t=task: progress.advance(t, len(r.done) + len(r.failed)))
            sae_id = job.sae_id
            if job.counts["reused"]:
                console.print(f"{conf.name}: reused {job.counts['reused']} features finished by an earlier run")
            if job.counts["failed"]:
                console.print(f"[yellow]{conf.name}: {job.counts['failed']} features failed[/] "
                              f"(first: {job.errors[0].error if job.errors else '?'})")
            ran.append(conf.name)
    if not ran or sae_id is None:
        raise ConfigError(f"eval {cfg.name}: every configuration was skipped ({skipped})")

    results = repo.reads.results(sae_id, features)
    # Each arm is named after its configuration: explanations keep the job that first made them,
    # and every job of a configuration carries its name.
    names = repo.jobs.names(sorted({e.job_id for e in results.explanations if e.job_id is not None}))
    for e in results.explanations:
        e.configuration = names.get(e.job_id, e.configuration)
    configuration_of = {e.id: e.configuration for e in results.explanations}
    for s in results.scores:
        s.configuration = configuration_of.get(s.explanation_id, s.configuration)
    data = ReportData.from_results(results, title=f"eval: {cfg.name} ({store.model_name} / {store.sae_name})")
    data.store_path = str(store_path)
    paths = render_report(data, out / "report.html")
    (out / "sample.json").write_text(json.dumps({
        "config": cfg.model_dump(mode="json"), "features": features, "ran": ran, "skipped": skipped,
        "database_url": url if url.startswith("sqlite") else "(configured)",
    }, indent=2), encoding="utf-8")
    repo.close()
    return EvalResult(config=cfg, features=features, ran=ran, skipped=skipped, report=paths, out=out)


def run_eval_file(path: str | Path, settings: Settings, console: Console, *, out: Path | None = None,
                  database_url: str | None = None) -> EvalResult:
    return run_eval(load_eval_config(path), settings, console, out=out, database_url=database_url)


def main(argv: list[str] | None = None) -> None:
    """``python -m eval.harness CONFIG [--out DIR]``: same as ``labeler eval --config CONFIG``."""
    import argparse
    import sys

    from labeler.core.config import get_settings
    from labeler.core.errors import LabelerError

    ap = argparse.ArgumentParser(prog="python -m eval.harness", description=main.__doc__)
    ap.add_argument("config")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--db", dest="database_url")
    args = ap.parse_args(argv)
    try:
        res = run_eval_file(args.config, get_settings(), Console(), out=args.out, database_url=args.database_url)
    except LabelerError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    print(res.report.html)
