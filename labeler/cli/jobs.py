"""CLI: ``labeler explain``, ``score``, ``label``, ``submit``, ``worker`` and ``jobs``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from labeler.cli._app import app
from labeler.core.config import Settings, get_settings
from labeler.core.errors import ConfigError
from labeler.db import Repository
from labeler.db.views import JobView
from labeler.runs.runner import Runner
from labeler.runs.spec import DEFAULT_SCORERS, LabelSpec, default_explainer, make_job_spec
from labeler.runs.stages import ChunkResult


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


def _label_spec(explainer: str | None, llm: str | None, scorers: str | None, explainer_option: list[str] | None,
                scorer_option: list[str] | None, simulator_model: str | None, scorer_model: str | None,
                control: bool, seed: int, settings: Settings, *, sampling: str | None = None,
                negatives: str | None = None) -> LabelSpec:
    from labeler.scoring import HARD_SUFFIX, with_negatives

    explainer = explainer or default_explainer(settings)
    explainer_options = _parse_options(explainer_option, "explainer")
    names = [s for s in (scorers.split(",") if scorers else DEFAULT_SCORERS)]
    if sampling is not None:  # shorthand for --explainer-option sampling=...
        explainer_options["sampling"] = sampling
    if negatives not in (None, "random", "hard"):
        raise ConfigError(f"--negatives must be 'random' or 'hard', not {negatives!r}")
    if negatives == "hard":
        # each scorer that takes negatives also runs with hard ones (<name>:hard), so the
        # scores with random and with hard negatives are stored side by side
        takes = set(with_negatives())
        names = [v for n in names for v in ([n, n + HARD_SUFFIX] if n in takes else [n])]
        if explainer.split(":", 1)[0] == "contrastive":
            explainer_options.setdefault("negatives", "hard")
    return LabelSpec(
        explainer=explainer, explainer_options=explainer_options, scorers=names,
        scorer_options=_scorer_options(scorer_option),
        explainer_model=llm, simulator_model=simulator_model, scorer_model=scorer_model,
        control=control, seed=seed,
    )


def _runner(settings: Settings, *, queued: bool = False) -> Runner:
    """This command's repository and runner (with the queue's sender when it queues)."""
    from labeler.runs.queue import CelerySender

    repo = Repository.open(settings.resolved_database_url)
    return Runner(repo, settings, send=CelerySender(settings) if queued else None)


def _features(runner: Runner, store_path: Path, spec: str) -> list[int]:
    from labeler.core.naming import parse_feature_range

    return parse_feature_range(spec, runner.stores.get(store_path).n_features)


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
SamplingOpt = typer.Option(None, "--explainer-sampling",
                           help="which train examples the explainer sees: top, quantiles or mixed (default: mixed)")
NegativesOpt = typer.Option(None, "--negatives", help="hard: detection, fuzzing, embedding, rubric and intruder "
                            "also run with hard negatives (<name>:hard), and contrastive explains with them")
SimModelOpt = typer.Option(None, "--simulator-model", help="simulator model")
ScorerModelOpt = typer.Option(None, "--scorer-model", help="model for detection/fuzzing/rubric")
ControlOpt = typer.Option(False, "--control/--no-control", help="also score another feature's explanation")
SeedOpt = typer.Option(0, "--seed")
LlmModeOpt = typer.Option(None, "--llm-mode", help="sync, or batch: OpenAI Batch API (half price, answers within "
                                                   "24 h; default LABELER_LLM_MODE)")
BudgetOpt = typer.Option(None, "--budget-usd", help="LLM budget of the whole job in USD (default "
                                                    "LABELER_LLM_BUDGET_USD); a job that reaches it is budget_reached")


def _run_stage(verb: str, store: Path, features: str, label: LabelSpec, stages: tuple[str, ...],
               settings: Settings, as_json: bool, llm_mode: str | None) -> None:
    """``labeler explain`` / ``labeler score``: a job of one stage, run here."""
    runner = _runner(settings)
    spec = make_job_spec(store, label, settings, stages=stages, llm_mode=llm_mode)
    job_id = runner.create_job(spec, _features(runner, store, features))
    total = ChunkResult()
    for r in _run_with_progress(runner, job_id):
        total.usage.add(r.usage)
        total.budget_exceeded |= r.budget_exceeded
        total.message = total.message or r.message
    job = runner.progress(job_id)
    if as_json:
        print(json.dumps({"job": job.model_dump(), "usage": total.usage.to_dict()}, indent=2, default=str))
    else:
        print(f"{verb} {job.counts['done']} feature(s); {job.counts['failed']} failed; "
              f"{job.counts['pending']} not started; {_fmt_usage(total.usage)} "
              f"(job {job_id}; {job.counts['reused']} reused from an earlier job)")
        for e in job.errors:
            print(f"  feature {e.feature}: {e.error}")
        if total.message:
            print(total.message)
    if total.budget_exceeded:
        raise typer.Exit(3)
    _exit_if_every_feature_failed(job)


def _run_with_progress(runner: Runner, job_id: int) -> list[ChunkResult]:
    from rich.console import Console
    from rich.progress import Progress

    results: list[ChunkResult] = []
    info = runner.progress(job_id)
    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(f"job {job_id}", total=info.n_features, completed=info.counts["reused"])

        def on_chunk(r: ChunkResult) -> None:
            results.append(r)
            bar.advance(task, len(r.done) + len(r.failed) + len(r.skipped))

        runner.run(job_id, on_chunk=on_chunk)
    return results


@app.command()
def explain(store: Path = StoreArg, features: str = FeaturesOpt, explainer: Optional[str] = ExplainerOpt,
            llm: Optional[str] = LlmOpt, explainer_option: Optional[list[str]] = ExplainerOptionOpt,
            sampling: Optional[str] = SamplingOpt, seed: int = SeedOpt, llm_mode: Optional[str] = LlmModeOpt,
            as_json: bool = typer.Option(False, "--json")) -> None:
    """Explain features and save the explanations (with their cost) in the database."""
    settings = get_settings()
    label = _label_spec(explainer, llm, None, explainer_option, None, None, None, False, seed, settings,
                        sampling=sampling)
    _run_stage("explained", store, features, label, ("explain",), settings, as_json, llm_mode)


@app.command()
def score(store: Path = StoreArg, features: str = FeaturesOpt, scorers: Optional[str] = ScorersOpt,
          scorer_option: Optional[list[str]] = ScorerOptionOpt, simulator_model: Optional[str] = SimModelOpt,
          scorer_model: Optional[str] = ScorerModelOpt, control: bool = ControlOpt, seed: int = SeedOpt,
          negatives: Optional[str] = NegativesOpt, llm_mode: Optional[str] = LlmModeOpt,
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Score every stored explanation of the features."""
    settings = get_settings()
    label = _label_spec("baseline", None, scorers, None, scorer_option, simulator_model, scorer_model, control,
                        seed, settings, negatives=negatives)
    _run_stage("scored", store, features, label, ("score",), settings, as_json, llm_mode)


@app.command()
def label(store: Path = StoreArg, features: str = FeaturesOpt, explainer: Optional[str] = ExplainerOpt,
          llm: Optional[str] = LlmOpt, scorers: Optional[str] = ScorersOpt,
          explainer_option: Optional[list[str]] = ExplainerOptionOpt,
          scorer_option: Optional[list[str]] = ScorerOptionOpt, simulator_model: Optional[str] = SimModelOpt,
          scorer_model: Optional[str] = ScorerModelOpt, control: bool = ControlOpt, seed: int = SeedOpt,
          sampling: Optional[str] = SamplingOpt, negatives: Optional[str] = NegativesOpt,
          retry_failed: Optional[int] = typer.Option(None, "--retry-failed", help="retry a job's failed features"),
          llm_mode: Optional[str] = LlmModeOpt, budget_usd: Optional[float] = BudgetOpt,
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Run a whole labeling job in this process (no Redis): explain, score, store."""
    settings = get_settings()
    runner = _runner(settings)
    if retry_failed is not None:
        retried = runner.retry_failed(retry_failed, queued=False)
        print(f"retried {len(retried)} failed feature(s) of job {retry_failed}")
        _print_job(runner.progress(retry_failed), as_json)
        return
    spec = make_job_spec(store, _label_spec(explainer, llm, scorers, explainer_option, scorer_option,
                                            simulator_model, scorer_model, control, seed, settings,
                                            sampling=sampling, negatives=negatives), settings,
                         llm_mode=llm_mode)
    job_id = runner.create_job(spec, _features(runner, store, features), budget_usd=budget_usd)
    _run_with_progress(runner, job_id)
    _print_job(runner.progress(job_id), as_json)
    _exit_if_budget_reached(runner.progress(job_id))
    _exit_if_every_feature_failed(runner.progress(job_id))


def _exit_if_every_feature_failed(info: JobView) -> None:
    """Exit 1 with the first reason when nothing succeeded (a corrupt store, a dead endpoint):
    a script must not read "0 done, all failed" as success."""
    from rich.console import Console

    c = info.counts
    if c.get("failed", 0) and not c.get("done", 0) and not c.get("pending", 0):
        reason = info.errors[0].error if info.errors else "see `labeler jobs " + str(info.id) + "`"
        Console(stderr=True).print(f"[bold red]error:[/] every feature of job {info.id} failed "
                                   f"({c['failed']}); first reason: {reason}", highlight=False)
        raise typer.Exit(1)


def _exit_if_budget_reached(info: JobView) -> None:
    """Exit 3, saying how to go on, when the job stopped at its budget."""
    from rich.console import Console

    if info.status == "budget_reached":
        Console(stderr=True).print(
            f"[yellow]job {info.id} reached its LLM budget[/] (spent ${info.spent_usd:.4f} of "
            f"${info.budget_usd or 0:.4f}): finished work is saved; `labeler submit --resume {info.id} "
            "--budget-usd X` goes on", highlight=False)
        raise typer.Exit(3)


@app.command()
def submit(store: Optional[Path] = typer.Option(None, "--store", help="collect store directory"),
           features: str = FeaturesOpt, explainer: Optional[str] = ExplainerOpt, llm: Optional[str] = LlmOpt,
           scorers: Optional[str] = ScorersOpt, explainer_option: Optional[list[str]] = ExplainerOptionOpt,
           scorer_option: Optional[list[str]] = ScorerOptionOpt, simulator_model: Optional[str] = SimModelOpt,
           scorer_model: Optional[str] = ScorerModelOpt, control: bool = ControlOpt, seed: int = SeedOpt,
           sampling: Optional[str] = SamplingOpt, negatives: Optional[str] = NegativesOpt,
           retry_failed: Optional[int] = typer.Option(None, "--retry-failed", help="re-queue a job's failed features"),
           resume: Optional[int] = typer.Option(None, "--resume", help="re-queue a job's pending features (e.g. "
                                                                        "a budget_reached job, with --budget-usd) "
                                                                        "and re-send its lost chunks now"),
           llm_mode: Optional[str] = LlmModeOpt, budget_usd: Optional[float] = BudgetOpt,
           wait: bool = typer.Option(False, "--wait", help="wait until the job finishes"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Queue a labeling job for `labeler worker` processes (needs LABELER_REDIS_URL)."""
    settings = get_settings()
    runner = _runner(settings, queued=True)
    if retry_failed is not None:
        retried = runner.retry_failed(retry_failed, queued=True)
        job_id = retry_failed
        print(f"re-queued {len(retried)} failed feature(s) of job {job_id}")
    elif resume is not None:
        resumed = runner.resume(resume, queued=True, budget_usd=budget_usd)
        job_id = resume
        print(f"re-queued {len(resumed)} pending feature(s) of job {job_id}")
    else:
        if store is None:
            raise ConfigError("give --store <dir> (or --retry-failed / --resume <job>)")
        spec = make_job_spec(store, _label_spec(explainer, llm, scorers, explainer_option, scorer_option,
                                                simulator_model, scorer_model, control, seed, settings,
                                                sampling=sampling, negatives=negatives), settings,
                             llm_mode=llm_mode)
        idx = _features(runner, store, features)
        job_id = runner.submit(spec, idx, budget_usd=budget_usd)
        if not as_json:
            print(f"submitted job {job_id}: {len(idx)} feature(s); follow it with `labeler jobs {job_id}`")
    if wait:
        info = runner.wait(job_id, timeout_s=7 * 24 * 3600)
        _print_job(info, as_json)
        _exit_if_budget_reached(info)
        _exit_if_every_feature_failed(info)
    elif as_json:
        print(json.dumps({"job_id": job_id}))


@app.command()
def worker(concurrency: int = typer.Option(4, "--concurrency", "-c", help="chunks worked on at once"),
           pool: str = typer.Option("threads", "--pool", help="threads | prefork | solo"),
           loglevel: str = typer.Option("INFO", "--loglevel"),
           hostname: Optional[str] = typer.Option(None, "--hostname", "-n")) -> None:
    """Start a Celery worker for queued jobs (each chunk keeps many LLM calls in flight)."""
    import os
    import sys

    from labeler.runs.queue import QUEUE, broker_url

    broker_url(get_settings())  # a clear error before Celery starts when no Redis is configured
    argv = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", f"--concurrency={concurrency}",
            f"--pool={pool}", f"--loglevel={loglevel}", f"--queues={QUEUE}", "--without-gossip",
            "--without-mingle"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    sys.stdout.flush()
    os.execv(sys.executable, argv)  # this process becomes the worker (signals reach Celery directly)


@app.command("jobs")
def jobs_cmd(job_id: Optional[int] = typer.Argument(None, help="job id (default: recent jobs)"),
             cancel: bool = typer.Option(False, "--cancel", help="cancel the job"),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Progress of a job (done, failed with reasons, pending, tokens, cost); cancel it."""
    runner = _runner(get_settings())
    if job_id is None:
        if cancel:
            raise ConfigError("--cancel needs a job id")
        rows = runner.repo.jobs.list()
        if as_json:
            print(json.dumps([r.model_dump() for r in rows], indent=2, default=str))
        else:
            for r in rows:
                print(_job_line(r))
        return
    _print_job(runner.cancel(job_id) if cancel else runner.progress(job_id), as_json)


def _job_line(info: JobView) -> str:
    c, t = info.counts, info.tokens
    name = f" {info.spec.get('name')}" if info.spec.get("name") else ""
    budget = f" of ${info.budget_usd:.4f} budget" if info.budget_usd is not None else ""
    return (f"job {info.id}{name} [{info.model}/{info.sae}]: {info.status}  "
            f"done {c.get('done', 0)} (reused {c.get('reused', 0)})  failed {c.get('failed', 0)}  "
            f"pending {c.get('pending', 0)} / {info.n_features}  LLM calls {t.get('calls', 0)}  tokens "
            f"{t.get('prompt', 0)} prompt + {t.get('completion', 0)} completion  cost ${info.cost_usd:.4f}  "
            f"spent ${info.spent_usd:.4f}{budget}")


def _print_job(info: JobView, as_json: bool) -> None:
    if as_json:
        print(json.dumps(info.model_dump(), indent=2, default=str))
        return
    print(_job_line(info))
    for e in info.errors[:20]:
        print(f"  feature {e.feature} failed (attempts {e.attempts}): {e.error}")
