"""CLI: ``labeler explain``, ``score``, ``label``, ``submit``, ``worker`` and ``jobs``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Optional

import typer

from labeler.cli._app import app
from labeler.core.errors import ConfigError


def _parse_options(items: list[str] | None, what: str) -> dict[str, Any]:
    """``key=value`` pairs; values are parsed as JSON when they can be (numbers, booleans)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{what} option {item!r} must look like key=value")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def _scorer_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``scorer.key=value`` pairs grouped by scorer."""
    out: dict[str, dict[str, Any]] = {}
    for k, v in _parse_options(items, "scorer").items():
        if "." not in k:
            raise ConfigError(f"scorer option {k!r} must name its scorer, e.g. simulation.n_examples=10")
        name, key = k.split(".", 1)
        out.setdefault(name, {})[key] = v
    return out


def _spec(explainer: str | None, llm: str | None, scorers: str | None, explainer_option: list[str] | None,
          scorer_option: list[str] | None, simulator_model: str | None, scorer_model: str | None,
          control: bool, seed: int) -> Any:
    from labeler.pipeline import DEFAULT_SCORERS, LabelSpec, default_explainer

    return LabelSpec(
        explainer=explainer or default_explainer(),
        explainer_options=_parse_options(explainer_option, "explainer"),
        scorers=[s for s in (scorers.split(",") if scorers else DEFAULT_SCORERS)],
        scorer_options=_scorer_options(scorer_option),
        explainer_model=llm, simulator_model=simulator_model, scorer_model=scorer_model,
        control=control, seed=seed,
    )


def _features(store_path: Path, spec: str) -> tuple[Any, list[int]]:
    from labeler.core.naming import parse_feature_range
    from labeler.jobs import open_store

    store = open_store(store_path)
    return store, parse_feature_range(spec, store.n_features)


def _fmt_usage(u: Any) -> str:
    return (f"{u.calls} LLM calls ({u.cached_calls} cached), {u.prompt_tokens} prompt + "
            f"{u.completion_tokens} completion tokens, ${u.cost_usd:.4f}")


StoreArg = typer.Argument(..., help="collect store directory")
FeaturesOpt = typer.Option("0:100", "--features", "-f", help="feature range, e.g. 0:500, 7, 1,5,9 or all")
ExplainerOpt = typer.Option(None, "--explainer", "-e",
                            help="explainer (default: highlighted with an LLM endpoint, else baseline)")
LlmOpt = typer.Option(None, "--llm", help="explainer model (default: the explainer role's model)")
ScorersOpt = typer.Option(None, "--scorers", "-s", help="comma-separated scorers (default: simulation)")
ExplainerOptionOpt = typer.Option(None, "--explainer-option", help="explainer option key=value (repeatable)")
ScorerOptionOpt = typer.Option(None, "--scorer-option", help="scorer option scorer.key=value (repeatable)")
SimModelOpt = typer.Option(None, "--simulator-model", help="simulator model")
ScorerModelOpt = typer.Option(None, "--scorer-model", help="model for detection/fuzzing/rubric")
ControlOpt = typer.Option(False, "--control/--no-control", help="also score another feature's explanation")
SeedOpt = typer.Option(0, "--seed")


@app.command()
def explain(store: Path = StoreArg, features: str = FeaturesOpt, explainer: Optional[str] = ExplainerOpt,
            llm: Optional[str] = LlmOpt, explainer_option: Optional[list[str]] = ExplainerOptionOpt,
            seed: int = SeedOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Explain features and save the explanations (with their cost) in the database."""
    from labeler.jobs import get_repository
    from labeler.pipeline import explain_features

    spec = _spec(explainer, llm, "", explainer_option, None, None, None, False, seed)
    st, idx = _features(store, features)
    repo = get_repository()
    res = asyncio.run(_then_close(explain_features(st, idx, spec, repo)))
    _print_result("explained", spec, res, as_json)


@app.command()
def score(store: Path = StoreArg, features: str = FeaturesOpt, scorers: Optional[str] = ScorersOpt,
          scorer_option: Optional[list[str]] = ScorerOptionOpt, simulator_model: Optional[str] = SimModelOpt,
          scorer_model: Optional[str] = ScorerModelOpt, control: bool = ControlOpt, seed: int = SeedOpt,
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Score every stored explanation of the features."""
    from labeler.jobs import get_repository
    from labeler.pipeline import score_features

    spec = _spec("baseline", None, scorers, None, scorer_option, simulator_model, scorer_model, control, seed)
    st, idx = _features(store, features)
    res = asyncio.run(_then_close(score_features(st, idx, spec, get_repository())))
    _print_result("scored", spec, res, as_json)


async def _then_close(coro: Any) -> Any:
    from labeler.pipeline import close_shared_llms

    try:
        return await coro
    finally:
        await close_shared_llms()


def _print_result(verb: str, spec: Any, res: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"spec": spec.to_dict(), **res.to_dict()}, indent=2))
    else:
        print(f"{verb} {len(res.done)} feature(s); {len(res.failed)} failed; "
              f"{len(res.not_started)} not started; {_fmt_usage(res.usage)}")
        for f, why in sorted(res.failed.items())[:20]:
            print(f"  feature {f}: {why}")
        if res.message:
            print(res.message)
    if res.budget_exceeded:
        raise typer.Exit(3)


@app.command()
def label(store: Path = StoreArg, features: str = FeaturesOpt, explainer: Optional[str] = ExplainerOpt,
          llm: Optional[str] = LlmOpt, scorers: Optional[str] = ScorersOpt,
          explainer_option: Optional[list[str]] = ExplainerOptionOpt,
          scorer_option: Optional[list[str]] = ScorerOptionOpt, simulator_model: Optional[str] = SimModelOpt,
          scorer_model: Optional[str] = ScorerModelOpt, control: bool = ControlOpt, seed: int = SeedOpt,
          retry_failed: Optional[int] = typer.Option(None, "--retry-failed", help="retry a job's failed features"),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Run a whole labeling job in this process (no Redis): explain, score, store."""
    from rich.console import Console
    from rich.progress import Progress

    from labeler import jobs

    if retry_failed is not None:
        retried = jobs.retry_failed(retry_failed, inprocess=True)
        print(f"retried {len(retried)} failed feature(s) of job {retry_failed}")
        _print_job(jobs.job_progress(retry_failed), as_json)
        return
    spec = _spec(explainer, llm, scorers, explainer_option, scorer_option, simulator_model, scorer_model,
                 control, seed)
    _, idx = _features(store, features)
    job_id = jobs.create_job(store, idx, spec)
    stops: list[str] = []

    def on_chunk(r: Any) -> None:
        bar.advance(task, len(r.done) + len(r.failed) + len(r.skipped))
        if r.budget_exceeded and r.message:
            stops.append(r.message)

    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(f"job {job_id}", total=len(idx))
        jobs.run_job_inprocess(store, idx, spec, job_id=job_id, on_chunk=on_chunk)
    _print_job(jobs.job_progress(job_id), as_json)
    if stops:
        Console(stderr=True).print(f"[yellow]{stops[0]}[/]: finished work is saved; raise "
                                   "LABELER_LLM_BUDGET_USD and run `labeler label` again to go on", highlight=False)
        raise typer.Exit(3)


@app.command()
def submit(store: Optional[Path] = typer.Option(None, "--store", help="collect store directory"),
           features: str = FeaturesOpt, explainer: Optional[str] = ExplainerOpt, llm: Optional[str] = LlmOpt,
           scorers: Optional[str] = ScorersOpt, explainer_option: Optional[list[str]] = ExplainerOptionOpt,
           scorer_option: Optional[list[str]] = ScorerOptionOpt, simulator_model: Optional[str] = SimModelOpt,
           scorer_model: Optional[str] = ScorerModelOpt, control: bool = ControlOpt, seed: int = SeedOpt,
           retry_failed: Optional[int] = typer.Option(None, "--retry-failed", help="re-queue a job's failed features"),
           wait: bool = typer.Option(False, "--wait", help="wait until the job finishes"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Queue a labeling job for `labeler worker` processes (needs LABELER_REDIS_URL)."""
    from labeler import jobs

    if retry_failed is not None:
        retried = jobs.retry_failed(retry_failed, inprocess=False)
        job_id = retry_failed
        print(f"re-queued {len(retried)} failed feature(s) of job {job_id}")
    else:
        if store is None:
            raise ConfigError("give --store <dir> (or --retry-failed <job>)")
        spec = _spec(explainer, llm, scorers, explainer_option, scorer_option, simulator_model, scorer_model,
                     control, seed)
        _, idx = _features(store, features)
        job_id = jobs.submit_job(store, idx, spec)
        if not as_json:
            print(f"submitted job {job_id}: {len(idx)} feature(s); follow it with `labeler jobs {job_id}`")
    if wait:
        _print_job(jobs.wait_for_job(job_id, timeout_s=7 * 24 * 3600), as_json)
    elif as_json:
        print(json.dumps({"job_id": job_id}))


@app.command()
def worker(concurrency: int = typer.Option(4, "--concurrency", "-c", help="chunks worked on at once"),
           pool: str = typer.Option("threads", "--pool", help="threads | prefork | solo"),
           loglevel: str = typer.Option("INFO", "--loglevel"),
           hostname: Optional[str] = typer.Option(None, "--hostname", "-n")) -> None:
    """Start a Celery worker for queued jobs (each chunk keeps many LLM calls in flight)."""
    from labeler.core.config import get_settings

    if not get_settings().resolved_broker_url:
        raise ConfigError("no Redis configured: set LABELER_REDIS_URL before starting a worker")
    from workers.app import app as celery_app

    argv = ["worker", f"--concurrency={concurrency}", f"--pool={pool}", f"--loglevel={loglevel}",
            "--queues=labeler", "--without-gossip", "--without-mingle"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    celery_app.worker_main(argv=argv)


@app.command("jobs")
def jobs_cmd(job_id: Optional[int] = typer.Argument(None, help="job id (default: recent jobs)"),
             cancel: bool = typer.Option(False, "--cancel", help="cancel the job"),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Progress of a job (done, failed with reasons, pending, tokens, cost); cancel it."""
    from labeler import jobs

    if job_id is None:
        if cancel:
            raise ConfigError("--cancel needs a job id")
        repo = jobs.get_repository()
        lister = getattr(repo, "list_jobs", None)
        if lister is None:
            raise ConfigError("give a job id: labeler jobs <id>")
        rows = lister()
        if as_json:
            print(json.dumps(rows, indent=2, default=str))
        else:
            for r in rows:
                print(_job_line(r))
        return
    info = jobs.cancel_job(job_id) if cancel else jobs.job_progress(job_id)
    _print_job(info, as_json)


def _job_line(info: dict[str, Any]) -> str:
    c = info.get("counts") or {}
    t = info.get("tokens") or {}
    return (f"job {info.get('id')} [{info.get('model')}/{info.get('sae')}]: {info.get('status')}  "
            f"done {c.get('done', 0)}  failed {c.get('failed', 0)}  pending {c.get('pending', 0)} / "
            f"{info.get('n_features')}  LLM calls {t.get('calls', 0)}  tokens {t.get('prompt', 0)} prompt + "
            f"{t.get('completion', 0)} completion  cost ${float(info.get('cost_usd') or 0):.4f}")


def _print_job(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    print(_job_line(info))
    for e in (info.get("errors") or [])[:20]:
        print(f"  feature {e['feature']} failed (attempts {e.get('attempts')}): {e['error']}")
