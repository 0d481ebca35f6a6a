"""sparsify, Gemma Scope 1 and 2, and neurons: each written in its own layout and tensor names,
encoded against a reference computed by hand from the format's documented math."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from labeler.activations import load_encoder
from labeler.activations.formats import sae_hook
from labeler.core.errors import ConfigError, InputError
from tests.collect import reference as R

D_IN, F = R.FORMAT_D_IN, R.FORMAT_F  # the w and x fixtures (conftest) have these sizes


def sparsify(folder, w, **cfg):
    """One hookpoint folder as sparsify's SparseCoder.save_to_disk writes it."""
    folder.mkdir(parents=True)
    save_file({"encoder.weight": np.ascontiguousarray(w["W_enc"].T), "encoder.bias": w["b_enc"], "W_dec": w["W_dec"],
               "b_dec": w["b_dec"]}, str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"expansion_factor": 4, "normalize_decoder": True, "num_latents": F,
                                                 "k": 6, "multi_topk": False, "skip_connection": False,
                                                 "transcode": False, "d_in": D_IN, **cfg}))
    return folder


@pytest.mark.parametrize("as_parent", [True, False])
def test_sparsify_topk(tmp_path, w, x, as_parent):
    folder = sparsify(tmp_path / "sparsify" / "layers.3", w)
    spec = str(tmp_path / "sparsify") if as_parent else str(folder)
    enc = load_encoder(spec, hook="layers.3", d_model=D_IN)
    assert enc.format == "sparsify" and enc.n_features == F
    R.check(enc, x, R.topk(R.pre(x, w["W_enc"], w["b_enc"], b_dec=w["b_dec"]), 6))
    assert enc.hook.name == "layers.3" and enc.hook.io == "output" and not enc.hook.transformer_lens


def test_sparsify_groupmax(tmp_path, w, x):
    enc = load_encoder(str(sparsify(tmp_path / "layers.3", w, activation="groupmax", k=5)))
    R.check(enc, x, R.groupmax(R.pre(x, w["W_enc"], w["b_enc"], b_dec=w["b_dec"]), 5))
    assert ((R.dense(enc, x) > 0).sum(1) <= 5).all()


def test_sparsify_signed(tmp_path, w, x):
    """mid-2024 sparsify ``signed``: top-k by |pre| with the sign kept -> one feature per sign."""
    cfg = {"expansion_factor": 4, "normalize_decoder": True, "num_latents": F, "k": 6, "signed": True}
    folder = tmp_path / "layers.3"
    sparsify(folder, w)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    enc = load_encoder(str(folder))
    signed = R.abstopk(R.pre(x, w["W_enc"], w["b_enc"], b_dec=w["b_dec"]), 6)
    R.check(enc, x, R.sides(signed))


def test_sparsify_transcoders(tmp_path, w, x):
    """transcode: no b_dec subtraction, reads the module input. An early skip transcoder
    (skip_connection, no transcode) reads the input too but still subtracts b_dec, as trained;
    Nov 2024 - Feb 2025 runs kept transcode in the run's config.json only."""
    enc = load_encoder(str(sparsify(tmp_path / "a" / "layers.1.mlp", w, transcode=True)))
    R.check(enc, x, R.topk(R.pre(x, w["W_enc"], w["b_enc"]), 6))
    assert enc.hook.io == "input" and enc.hook.transcoder
    early = tmp_path / "b" / "layers.1.mlp"
    sparsify(early, w, skip_connection=True)
    cfg = json.loads((early / "cfg.json").read_text())
    del cfg["transcode"]
    (early / "cfg.json").write_text(json.dumps(cfg))
    enc = load_encoder(str(early))
    R.check(enc, x, R.topk(R.pre(x, w["W_enc"], w["b_enc"], b_dec=w["b_dec"]), 6))
    assert enc.hook.io == "input"
    run = tmp_path / "c"
    folder = sparsify(run / "layers.1.mlp", w)
    cfg = json.loads((folder / "cfg.json").read_text())
    del cfg["transcode"]
    (folder / "cfg.json").write_text(json.dumps(cfg))
    (run / "config.json").write_text(json.dumps({"sae": cfg, "hookpoints": ["layers.1.mlp"], "transcode": True}))
    enc = load_encoder(str(folder))
    R.check(enc, x, R.topk(R.pre(x, w["W_enc"], w["b_enc"]), 6))


def test_sparsify_refuses_unknown_options_and_lists_folders(tmp_path, w):
    sparsify(tmp_path / "a" / "layers.1", w, kronecker=True)
    with pytest.raises(InputError, match="unknown option.*'kronecker'"):
        load_encoder(str(tmp_path / "a" / "layers.1"))
    sparsify(tmp_path / "sp" / "layers.1", w)
    with pytest.raises(InputError, match="layers.1"):
        load_encoder(str(tmp_path / "sp"), hook="layers.7", d_model=D_IN)


def test_gemmascope_npz(tmp_path, w, x):
    folder = tmp_path / "layer_20" / "width_16k" / "average_l0_71"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **w)
    ref = R.jumprelu(R.pre(x, w["W_enc"], w["b_enc"]), w["threshold"])  # no b_dec subtraction
    for spec in (folder, folder / "params.npz"):
        enc = load_encoder(str(spec), d_model=D_IN)
        assert enc.architecture == "jumprelu"
        R.check(enc, x, ref)
    # some files name the tensors w_enc, w_dec
    other = tmp_path / "lower"
    other.mkdir()
    np.savez(other / "params.npz", **{k.replace("W_", "w_"): v for k, v in w.items()})
    R.check(load_encoder(str(other)), x, ref)


def test_gemmascope_site_from_the_repo_name(tmp_path, w):
    """The hub cache path names the repo: res -> resid_post, mlp -> mlp_out, att -> z,
    transcoders -> the MLP input; without a repo name the SAE does not say."""
    for site, expect, transcoder in (("res", "blocks.20.hook_resid_post", False),
                                     ("mlp", "blocks.20.hook_mlp_out", False),
                                     ("att", "blocks.20.attn.hook_z", False),
                                     ("transcoders", "blocks.20.ln2.hook_normalized", True)):
        folder = tmp_path / f"models--google--gemma-scope-2b-pt-{site}" / "snapshots" / "c" / "layer_20" / "width_16k" / "x"
        folder.mkdir(parents=True)
        np.savez(folder / "params.npz", **w)
        hook, _ = sae_hook(str(folder))
        assert (hook.name, hook.transformer_lens, hook.transcoder) == (expect, True, transcoder)
    emb = tmp_path / "models--google--gemma-scope-2b-pt-res" / "snapshots" / "c" / "embedding" / "width_4k" / "l0_6"
    emb.mkdir(parents=True)
    np.savez(emb / "params.npz", **w)
    enc = load_encoder(str(emb))  # trained on the unscaled lookup; embed_tokens scales by sqrt(d)
    assert enc.hook.name == "hook_embed" and enc.input_scale == pytest.approx(D_IN ** -0.5)
    plain = tmp_path / "plain"
    plain.mkdir()
    np.savez(plain / "params.npz", **w)
    assert sae_hook(str(plain))[0] is None


def test_gemmascope2(tmp_path, w, x):
    folder = tmp_path / "transcoder_all" / "layer_5_width_16k_l0_big_affine"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(5)
    save_file({"w_enc": w["W_enc"], "w_dec": rng.standard_normal((F, D_IN)).astype(np.float32), "b_enc": w["b_enc"],
               "b_dec": w["b_dec"], "threshold": w["threshold"],
               "affine_skip_connection": rng.standard_normal((D_IN, D_IN)).astype(np.float32)},
              str(folder / "params.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "hf_hook_point_in": "model.layers.5.pre_feedforward_layernorm.output",
        "hf_hook_point_out": "model.layers.5.post_feedforward_layernorm.output", "width": F,
        "model_name": "google/gemma-3-4b-it", "architecture": "jump_relu", "l0": 70, "affine_connection": True,
        "type": "transcoder"}))
    enc = load_encoder(str(folder), d_model=D_IN)
    R.check(enc, x, R.jumprelu(R.pre(x, w["W_enc"], w["b_enc"]), w["threshold"]))
    assert enc.architecture == "jumprelu_skip_transcoder"
    assert enc.hook.name == "model.layers.5.pre_feedforward_layernorm.output" and enc.hook.transcoder
    (folder / "config.json").write_text(json.dumps({"hf_hook_point_in": "x.output", "novel": 1}))
    with pytest.raises(InputError, match="'novel'"):
        load_encoder(str(folder))
    (folder / "config.json").unlink()  # no config.json: the site comes from the folder name
    assert sae_hook(str(folder))[0].name == "model.layers.5.pre_feedforward_layernorm.output"


@pytest.mark.parametrize("signs", [None, "pos,neg", "pos", "neg"])
def test_neurons_and_their_signs(x, signs):
    spec = "neurons" if signs is None else f"neurons:{signs}"
    enc = load_encoder(spec, d_model=D_IN)
    x64 = x.astype(np.float64)
    if signs is None:
        assert enc.n_features == D_IN and enc.unit_decoder() is None and enc.architecture == "neurons"
        np.testing.assert_array_equal(R.dense(enc, x), x)
        return
    order = tuple(signs.split(","))
    R.check(enc, x, R.sides(x64, order))
    d = enc.describe()
    assert d["architecture"] == "neuron_sides" and d["signs"] == list(order)
    assert d["feature_sides"][0] == {"sign": order[0], "start": 0, "end": D_IN, "of": "neuron",
                                     "activation": "max(x, 0)" if order[0] == "pos" else "max(-x, 0)"}


def test_bad_signs():
    with pytest.raises(ConfigError, match="--signs"):
        load_encoder("neurons:pos,up", d_model=D_IN)
