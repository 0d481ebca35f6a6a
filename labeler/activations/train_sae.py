"""``labeler train-sae``: a small TopK SAE trained on CPU in minutes, saved in the SAELens layout."""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from labeler.core.errors import ConfigError, InputError


@dataclass
class TrainSAEConfig:
    model: str
    hook: str
    corpus: str = "builtin"
    hook_io: str = "output"
    latents: int = 4096
    k: int = 32
    tokens: int = 200_000
    ctx_len: int = 64
    batch_tokens: int = 1024
    lr: float = 1e-3
    epochs: int = 1
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None


def sample_activations(model_path: str, hook: str, corpus: str, tokens: int, *, ctx_len: int = 64,
                       hook_io: str = "output", device: str = "cpu", batch: int = 16) -> torch.Tensor:
    """Hookpoint activations [n_tokens, d] of the first ``tokens`` corpus tokens (content positions)."""
    from labeler.activations.model import HookedModel, load_model
    from labeler.corpus import CorpusSpec, frame_for, iter_texts, iter_windows

    model, tok = load_model(model_path, device=device)
    hooked = HookedModel(model, hook, hook_io)
    frame = frame_for(tok)
    n_windows = max(1, tokens // ctx_len)
    windows = itertools.islice(iter_windows(iter_texts(CorpusSpec(corpus)), tok, ctx_len), n_windows)
    chunks = []
    while True:
        ids = list(itertools.islice(windows, batch))
        if not ids:
            break
        x = hooked.activations(torch.from_numpy(frame.wrap(np.stack(ids).astype(np.int64))))[:, frame.content_slice]
        chunks.append(x.reshape(-1, x.shape[-1]).float().cpu())
    if not chunks:
        raise InputError(f"corpus {corpus!r} is empty: it gave no window of {ctx_len} tokens")
    return torch.cat(chunks)


def train_topk_sae(acts: torch.Tensor, latents: int, k: int, *, lr: float = 1e-3, batch_tokens: int = 1024,
                   epochs: int = 1, seed: int = 0, log=None) -> dict[str, torch.Tensor]:
    """Train W_enc [d, F], b_enc, W_dec [F, d] (unit rows), b_dec on ``acts``; returns SAELens tensors."""
    if k < 1 or k > latents:
        raise ConfigError(f"--k must be between 1 and --latents ({latents}), got {k}")
    g = torch.Generator().manual_seed(seed)
    n, d = acts.shape
    b_dec = acts.mean(0).clone()
    W_dec = torch.randn(latents, d, generator=g)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    params = {"W_enc": torch.nn.Parameter(W_dec.T.clone()), "b_enc": torch.nn.Parameter(torch.zeros(latents)),
              "W_dec": torch.nn.Parameter(W_dec), "b_dec": torch.nn.Parameter(b_dec)}
    opt = torch.optim.Adam(params.values(), lr=lr)
    scale = (acts - b_dec).pow(2).sum(-1).mean()
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(n, generator=g)
        for s in range(0, n, batch_tokens):
            x = acts[order[s : s + batch_tokens]]
            pre = (x - params["b_dec"]) @ params["W_enc"] + params["b_enc"]
            vals, idx = pre.topk(k, dim=-1)
            z = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
            recon = z @ params["W_dec"] + params["b_dec"]
            loss = (recon - x).pow(2).sum(-1).mean() / scale  # fraction of variance unexplained
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                params["W_dec"] /= params["W_dec"].norm(dim=1, keepdim=True)
            if log and step % 50 == 0:
                log(f"epoch {epoch} step {step}: FVU {loss.item():.4f}")
            step += 1
    return {name: p.detach().contiguous() for name, p in params.items()}


def save_saelens(out: str | Path, tensors: dict[str, torch.Tensor], *, k: int, hook: str, model: str,
                 hook_io: str = "output", extra: dict | None = None) -> Path:
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    d_in, F = tensors["W_enc"].shape
    cfg = {"architecture": "topk", "d_in": int(d_in), "d_sae": int(F), "k": int(k), "dtype": "float32",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "model_name": model,
           "hook_name": hook, "hook_io": hook_io, "activation_fn_kwargs": {"k": int(k)}, **(extra or {})}
    save_file({n: t.float().contiguous() for n, t in tensors.items()}, str(out / "sae_weights.safetensors"))
    (out / "cfg.json").write_text(json.dumps(cfg, indent=2))
    return out


def train_sae(cfg: TrainSAEConfig, out: str | Path, log=print) -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.monotonic()
    acts = sample_activations(cfg.model, cfg.hook, cfg.corpus, cfg.tokens, ctx_len=cfg.ctx_len,
                              hook_io=cfg.hook_io, device=cfg.device)
    log(f"sampled {acts.shape[0]} activations of width {acts.shape[1]} in {time.monotonic() - t0:.1f}s")
    tensors = train_topk_sae(acts, cfg.latents, cfg.k, lr=cfg.lr, batch_tokens=cfg.batch_tokens,
                             epochs=cfg.epochs, seed=cfg.seed, log=log)
    path = save_saelens(out, tensors, k=cfg.k, hook=cfg.hook, model=cfg.model, hook_io=cfg.hook_io,
                        extra={"training_tokens": int(acts.shape[0])})
    log(f"saved SAELens-layout SAE to {path} ({time.monotonic() - t0:.1f}s)")
    return path
