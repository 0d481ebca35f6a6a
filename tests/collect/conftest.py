"""Tiny random models, corpora and SAEs for the collect tests (built once per session, offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from labeler.testing import make_tiny_model, make_tiny_sae, write_tiny_corpus



@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Tiny models on a shared 2-core machine: one intra-op thread is many times faster than two.
    Scoped to these tests (restored afterwards); subprocesses inherit OMP_NUM_THREADS."""
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

HOOKS = {"gpt2": "transformer.h.0", "llama": "model.layers.0", "bert": "encoder.layer.0"}


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("collect-inputs")
    for kind in HOOKS:
        make_tiny_model(kind, root / kind)
    write_tiny_corpus(root / "corpus.jsonl", n_docs=120)
    return root


@pytest.fixture(scope="session")
def corpus(inputs) -> Path:
    return inputs / "corpus.jsonl"


def hook_acts(model_dir: Path, hook: str, corpus: Path, hook_io: str = "output") -> torch.Tensor:
    from labeler.activations.train_sae import sample_activations

    return sample_activations(str(model_dir), hook, str(corpus), 512, ctx_len=16, hook_io=hook_io)


def centred_sae(path: Path, acts: torch.Tensor, n_features: int, **kw) -> Path:
    """A random SAE whose directions see centred, unit-scale inputs, so many features fire."""
    return make_tiny_sae(path, d_in=int(acts.shape[1]), n_features=n_features, center=acts.mean(0).numpy(),
                         input_std=float(acts.std(0).mean()), **kw)


@pytest.fixture(scope="session")
def gpt2_topk_sae(inputs, corpus) -> Path:
    acts = hook_acts(inputs / "gpt2", HOOKS["gpt2"], corpus)
    return centred_sae(inputs / "sae-gpt2-topk", acts, 48, architecture="topk", k=4)


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """Run ``labeler ...`` in-process through the real entry point; (exit code, stdout+stderr)."""
    from labeler.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    cap = capsys.readouterr()
    return code, " ".join((cap.out + cap.err).split())  # rich wraps long lines


def numpy_encode(x: np.ndarray, W_enc, b_enc, W_dec, b_dec, *, arch: str, k: int | None = None,
                 threshold=None, subtract_b_dec: bool = True) -> np.ndarray:
    """Reference SAE encoder written from the formats' definitions, in float64 numpy."""
    x = x.astype(np.float64)
    if subtract_b_dec:
        x = x - b_dec
    pre = x @ W_enc + b_enc
    if arch == "standard":
        return np.maximum(pre, 0)
    if arch == "jumprelu":
        return np.where(pre > threshold, np.maximum(pre, 0), 0.0)
    out = np.zeros_like(pre)
    top = np.argsort(-pre, axis=1)[:, :k]
    rows = np.arange(len(pre))[:, None]
    out[rows, top] = np.maximum(pre[rows, top], 0)
    return out


@pytest.fixture
def w():
    """Random SAE weights of the format tests' sizes (reference.FORMAT_D_IN x FORMAT_F)."""
    from tests.collect import reference as R

    return R.random_weights(R.FORMAT_D_IN, R.FORMAT_F)


@pytest.fixture
def x():
    """30 random inputs of the format tests' width."""
    from tests.collect import reference as R

    return R.random_inputs(30, R.FORMAT_D_IN)
