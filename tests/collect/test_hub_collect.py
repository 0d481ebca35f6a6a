"""`labeler collect` with SAEs from the Hub and from an SAELens release, in real processes against
a hub cache laid out on disk (HF_HUB_CACHE, HF_HUB_OFFLINE=1): no --hook, the SAE's own
TransformerLens hook decides, and a stored top example re-encodes to its stored activation."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from labeler.examples import FeatureStore
from tests.collect.conftest import centred_sae, hook_acts, run_cli
from tests.collect.hubcache import put

ARGS = ["--tokens", "1600", "--ctx-len", "16", "--batch-size", "8", "--no-progress"]


def labeler(args, cache, timeout=300):
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "labeler", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def block1_input(model_dir, store: FeatureStore, window: int) -> np.ndarray:
    """The input of GPT-2 block 1 on a stored window, computed independently of the hook code:
    hidden_states[1] (embeddings -> block 0 -> this) of the same framed tokens."""
    from transformers import GPT2LMHeadModel

    m = store.manifest
    model = GPT2LMHeadModel.from_pretrained(model_dir).eval()
    prefix, suffix = m["settings"]["frame"]["prefix"], m["settings"]["frame"]["suffix"]
    ids = [*prefix, *np.asarray(store.tokens[window]).tolist(), *suffix]
    with torch.no_grad():
        h = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[1][0]
    return h[len(prefix): len(ids) - len(suffix)].double().numpy()


def reencode(folder, x: np.ndarray, *, center: bool) -> np.ndarray:
    """SAELens standard SAE math, from the file: relu((x - b_dec) @ W_enc + b_enc)."""
    w = {k: v.astype(np.float64) for k, v in load_file(str(folder / "sae_weights.safetensors")).items()}
    if center:
        x = x - x.mean(-1, keepdims=True)
    return np.maximum((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"], 0)


def check_top_examples(model_dir, store: FeatureStore, folder, *, center: bool) -> None:
    counts = store.all_stats()["count"]
    for f in np.argsort(-counts)[:3]:
        top = store.feature(int(f)).select("train", "top")
        assert top, f"feature {f} has no top example"
        ex = top[0]
        ref = reencode(folder, block1_input(model_dir, store, ex.window), center=center)[:, f]
        assert ref.max() > 0
        np.testing.assert_allclose(ex.activations, ref, rtol=2e-3, atol=2e-3)


@pytest.fixture(scope="module")
def block1_sae(inputs, corpus, tmp_path_factory):
    acts = hook_acts(inputs / "gpt2", "transformer.h.1", corpus, hook_io="input")
    return centred_sae(tmp_path_factory.mktemp("sae") / "blocks.1.hook_resid_pre", acts, 24,
                       hook="blocks.1.hook_resid_pre")


def test_hub_sae_reads_where_its_cfg_says(inputs, corpus, block1_sae, tmp_path):
    cache = tmp_path / "hub"
    put(cache, "tiny-org/gpt2-saes", {"blocks.1.hook_resid_pre": block1_sae, "README.md": "tiny"})
    out = tmp_path / "store"
    r = labeler(["collect", "--model", str(inputs / "gpt2"), "--sae", "tiny-org/gpt2-saes", "--sae-id",
                 "blocks.1.hook_resid_pre", "--corpus", str(corpus), "--out", str(out), *ARGS], cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "reading the input of transformer.h.1 (TransformerLens blocks.1.hook_resid_pre)" in " ".join(r.stderr.split())
    store = FeatureStore(out)
    m = store.manifest
    assert (m["model"]["hook"], m["model"]["hook_io"]) == ("transformer.h.1", "input")
    assert m["sae"]["hook"]["name"] == "blocks.1.hook_resid_pre" and m["sae"]["read_at"] == "transformer.h.1"
    src = m["sae"]["source"]
    assert src["repo_id"] == "tiny-org/gpt2-saes" and src["subfolder"] == "blocks.1.hook_resid_pre"
    assert m["identity"]["sae"] == src["spec"] and src["spec"].startswith("hf://tiny-org/gpt2-saes@")
    check_top_examples(inputs / "gpt2", store, block1_sae, center=False)


@pytest.mark.skipif(importlib.util.find_spec("sae_lens") is None, reason="sae-lens is not installed")
def test_saelens_release_centres_like_transformer_lens(inputs, corpus, tmp_path):
    """gpt2-small-res-jb's table entry says center_writing_weights: the residual stream was
    TransformerLens's centred one, so labeler subtracts each token's mean before encoding."""
    acts = hook_acts(inputs / "gpt2", "transformer.h.1", corpus, hook_io="input")
    acts = acts - acts.mean(-1, keepdim=True)
    folder = centred_sae(tmp_path / "src" / "blocks.1.hook_resid_pre", acts, 24, hook="blocks.1.hook_resid_pre")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg = {"model_name": "gpt2-small", "hook_point": cfg.pop("hook_name"), "hook_point_layer": 1, **cfg}
    (folder / "cfg.json").write_text(json.dumps(cfg))  # a <= v3 cfg, as that release's
    cache = tmp_path / "hub"
    put(cache, "jbloom/GPT2-Small-SAEs-Reformatted", {"blocks.1.hook_resid_pre": folder})
    out = tmp_path / "store"
    r = labeler(["collect", "--model", str(inputs / "gpt2"), "--sae", "gpt2-small-res-jb", "--sae-id",
                 "blocks.1.hook_resid_pre", "--corpus", str(corpus), "--out", str(out), *ARGS], cache)
    assert r.returncode == 0, r.stderr[-3000:]
    store = FeatureStore(out)
    sae = store.manifest["sae"]
    assert sae["center_input"] and sae["name"] == "gpt2-small/1-res-jb"
    assert sae["source"]["neuronpedia_id"] == "gpt2-small/1-res-jb" and sae["source"]["release"] == "gpt2-small-res-jb"
    check_top_examples(inputs / "gpt2", store, folder, center=True)


def test_neurons_with_both_signs(inputs, corpus, tmp_path, capsys):
    out = tmp_path / "n"
    code, text = run_cli(["collect", "--model", str(inputs / "gpt2"), "--hook", "blocks.1.mlp.hook_post",
                          "--signs", "pos,neg", "--corpus", str(corpus), "--out", str(out), *ARGS], capsys)
    assert code == 0, text
    store = FeatureStore(out)
    d = 4 * 32  # GPT-2's MLP is 4 x d_model wide
    assert store.n_features == 2 * d and store.manifest["model"]["hook"] == "transformer.h.1.mlp.c_proj"
    assert store.manifest["model"]["hook_name"] == "blocks.1.mlp.hook_post"  # both names recorded
    assert [s["sign"] for s in store.manifest["sae"]["feature_sides"]] == ["pos", "neg"]
    stats = store.all_stats()
    assert (stats["count"][:d] > 0).any() and (stats["count"][d:] > 0).any() and (stats["max"] >= 0).all()


def test_bad_sae_inputs_fail_cleanly(inputs, corpus, block1_sae, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    put(cache, "tiny-org/gpt2-saes", {"blocks.1.hook_resid_pre": block1_sae})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # what HF_HUB_CACHE sets at import
    base = ["collect", "--model", str(inputs / "gpt2"), "--corpus", str(corpus), *ARGS]
    cases = [
        (["--sae", "nobody/nothing", "--sae-id", "layers.1"], "HF_HUB_OFFLINE=1"),
        (["--sae", "tiny-org/gpt2-saes", "--sae-id", "blocks.7.hook_resid_pre"], "SAEs in the local cache (offline): blocks.1.hook_resid_pre"),
        (["--sae", "tiny-org/gpt2-saes"], "choose one with --sae-id"),
        (["--sae", "tiny-org/gpt2-saes", "--sae-id", "blocks.1.hook_resid_pre", "--hook-io", "output"], "contradicts"),
        (["--sae", "neurons"], "needs --hook"),
        (["--sae", "tiny-org/gpt2-saes", "--sae-id", "blocks.1.hook_resid_pre", "--signs", "pos"], "--signs applies"),
        (["--hook", "blocks.1.hook_q"], "module names that would work"),
    ]
    if importlib.util.find_spec("sae_lens") is not None:
        cases.append((["--sae", "gpt2-small-res-jbb", "--sae-id", "x"], "close release names: gpt2-small-res-jb"))
    for i, (extra, expect) in enumerate(cases):
        out = tmp_path / f"s{i}"
        code, text = run_cli([*base, "--out", str(out), *extra], capsys)
        assert code == 2 and expect in text, (extra, text)
        assert "Traceback" not in text and not (out / "manifest.json").exists()
    # an option the loader does not know, in a cfg.json on the Hub
    bad = cache / "models--tiny-org--gpt2-saes" / "snapshots"
    cfg_path = next(bad.glob("*/blocks.1.hook_resid_pre/cfg.json"))
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "use_magic": True}))
    code, text = run_cli([*base, "--out", str(tmp_path / "k"), "--sae", "tiny-org/gpt2-saes", "--sae-id",
                          "blocks.1.hook_resid_pre"], capsys)
    assert code == 2 and "unknown option(s) 'use_magic'" in text and not (tmp_path / "k").exists()


def test_abstopk_collects_one_feature_per_sign(inputs, corpus, tmp_path):
    """AbsTopK activations are signed: the store keeps latent i's positive side as feature i and
    its negative side as feature F + i, both re-encoding to what SAELens's math gives."""
    from labeler.corpus import CorpusSpec
    from labeler.examples.collect import CollectConfig, run_collect

    acts = hook_acts(inputs / "gpt2", "transformer.h.0", corpus)
    sae = centred_sae(tmp_path / "abs", acts, 24, architecture="topk", k=4, hook="transformer.h.0")
    cfg = json.loads((sae / "cfg.json").read_text())
    (sae / "cfg.json").write_text(json.dumps({**cfg, "architecture": "abstopk"}))
    out = run_collect(CollectConfig(model=str(inputs / "gpt2"), hook="transformer.h.0", sae=str(sae),
                                    corpus=CorpusSpec(str(corpus)), tokens=1600, ctx_len=16, batch_size=8),
                      tmp_path / "s", progress=False, log=lambda *_: None)
    store = FeatureStore(out)
    F = 24
    counts = store.all_stats()["count"]
    assert store.n_features == 2 * F and counts[:F].sum() > 0 and counts[F:].sum() > 0
    w = {k: v.astype(np.float64) for k, v in load_file(str(sae / "sae_weights.safetensors")).items()}
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(inputs / "gpt2").eval()
    prefix = store.manifest["settings"]["frame"]["prefix"]
    for f in (int(np.argmax(counts[:F])), F + int(np.argmax(counts[F:]))):
        ex = store.feature(f).select("train", "top")[0]
        ids = [*prefix, *np.asarray(store.tokens[ex.window]).tolist()]
        with torch.no_grad():
            x = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[1][0, len(prefix):]
        pre = (x.double().numpy() - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
        latent = f % F
        kept = (np.argsort(-np.abs(pre), axis=1)[:, :4] == latent).any(1)  # in the top 4 by |pre|
        signed = np.where(kept, pre[:, latent], 0.0)
        ref = np.maximum(signed if f < F else -signed, 0)
        assert ref.max() > 0
        np.testing.assert_allclose(ex.activations, ref, rtol=2e-3, atol=2e-3)


def test_an_explicit_hook_overrides_the_sae_and_says_so(inputs, corpus, block1_sae, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    put(cache, "tiny-org/gpt2-saes", {"blocks.1.hook_resid_pre": block1_sae})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    code, text = run_cli(["collect", "--model", str(inputs / "gpt2"), "--corpus", str(corpus), *ARGS, "--out",
                          str(tmp_path / "s"), "--sae", "tiny-org/gpt2-saes", "--sae-id", "blocks.1.hook_resid_pre",
                          "--hook", "blocks.0.hook_resid_post"], capsys)
    assert code == 0, text
    assert "the SAE says it reads the input of transformer.h.1 (blocks.1.hook_resid_pre)" in text
    m = FeatureStore(tmp_path / "s").manifest
    assert (m["model"]["hook"], m["model"]["hook_io"]) == ("transformer.h.0", "output")
    assert m["sae"]["hook"]["name"] == "blocks.1.hook_resid_pre"
