"""Every SAE layout, written here in its own file format, encodes like a hand-written reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from labeler.activations import load_encoder
from labeler.core.errors import ConfigError, InputError
from tests.collect.conftest import numpy_encode

D_IN, F = 12, 40


@pytest.fixture
def weights():
    rng = np.random.default_rng(1)
    return {
        "W_enc": rng.standard_normal((D_IN, F)).astype(np.float32),
        "b_enc": (0.3 * rng.standard_normal(F)).astype(np.float32),
        "W_dec": rng.standard_normal((F, D_IN)).astype(np.float32),
        "b_dec": (0.5 * rng.standard_normal(D_IN)).astype(np.float32),
        "threshold": np.abs(rng.standard_normal(F)).astype(np.float32),
    }


@pytest.fixture
def x():
    return np.random.default_rng(2).standard_normal((30, D_IN)).astype(np.float32)


def dense(enc, x):
    return enc.encode(torch.from_numpy(x)).to_dense().numpy()


def write_saelens(path, w, cfg):
    path.mkdir()
    save_file(w, str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_saelens_architectures(tmp_path, weights, x, arch):
    w = {k: weights[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    cfg = {"architecture": arch, "d_in": D_IN, "d_sae": F, "apply_b_dec_to_input": True,
           "normalize_activations": "none"}
    if arch == "topk":
        cfg["k"] = 5
    if arch == "jumprelu":
        w["threshold"] = weights["threshold"]
    enc = load_encoder(str(write_saelens(tmp_path / "sae", w, cfg)), d_model=D_IN)
    ref = numpy_encode(x, **{k: weights[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}, arch=arch, k=5,
                       threshold=weights["threshold"])
    got = dense(enc, x)
    assert np.abs(ref).sum() > 0 and (ref == 0).any()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    if arch == "topk":
        assert ((got > 0).sum(1) <= 5).all()


def test_saelens_old_topk_kwargs_and_no_b_dec(tmp_path, weights, x):
    w = {k: weights[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    cfg = {"architecture": "standard", "activation_fn": "topk", "activation_fn_kwargs": {"k": 3},
           "d_in": D_IN, "d_sae": F, "apply_b_dec_to_input": False}
    enc = load_encoder(str(write_saelens(tmp_path / "sae", w, cfg)), d_model=D_IN)
    ref = numpy_encode(x, **w, arch="topk", k=3, subtract_b_dec=False)
    np.testing.assert_allclose(dense(enc, x), ref, rtol=1e-4, atol=1e-4)


def test_saelens_constant_norm_rescale(tmp_path, weights, x):
    w = {k: weights[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    cfg = {"architecture": "standard", "d_in": D_IN, "d_sae": F, "apply_b_dec_to_input": True,
           "normalize_activations": "constant_norm_rescale"}
    enc = load_encoder(str(write_saelens(tmp_path / "sae", w, cfg)), d_model=D_IN)
    xs = x * np.sqrt(D_IN) / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(dense(enc, x * 7.0), numpy_encode(xs, **w, arch="standard"), rtol=1e-4, atol=1e-4)


def test_saelens_expected_average_only_in_with_declared_factor(tmp_path, weights, x):
    w = {k: weights[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    cfg = {"architecture": "standard", "d_in": D_IN, "d_sae": F, "normalize_activations": "expected_average_only_in",
           "norm_scaling_factor": 0.25}
    enc = load_encoder(str(write_saelens(tmp_path / "sae", w, cfg)), d_model=D_IN)
    np.testing.assert_allclose(dense(enc, x), numpy_encode(x * 0.25, **w, arch="standard"), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("as_parent", [True, False])
def test_sparsify_layout(tmp_path, weights, x, as_parent):
    hook = "layers.3"
    folder = tmp_path / "sparsify" / hook
    folder.mkdir(parents=True)
    save_file({"encoder.weight": np.ascontiguousarray(weights["W_enc"].T), "encoder.bias": weights["b_enc"],
               "W_dec": weights["W_dec"], "b_dec": weights["b_dec"]}, str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"num_latents": F, "k": 6, "d_in": D_IN, "expansion_factor": 4,
                                                 "normalize_decoder": True, "multi_topk": False}))
    spec = str(tmp_path / "sparsify") if as_parent else str(folder)
    enc = load_encoder(spec, hook=hook, d_model=D_IN)
    assert enc.format == "sparsify" and enc.n_features == F
    ref = numpy_encode(x, weights["W_enc"], weights["b_enc"], weights["W_dec"], weights["b_dec"], arch="topk", k=6)
    np.testing.assert_allclose(dense(enc, x), ref, rtol=1e-4, atol=1e-4)


def test_sparsify_parent_without_matching_hook_lists_folders(tmp_path, weights):
    folder = tmp_path / "sp" / "layers.1"
    folder.mkdir(parents=True)
    save_file({"encoder.weight": np.ascontiguousarray(weights["W_enc"].T), "encoder.bias": weights["b_enc"],
               "W_dec": weights["W_dec"], "b_dec": weights["b_dec"]}, str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"num_latents": F, "k": 6, "d_in": D_IN}))
    with pytest.raises(InputError, match="layers.1"):
        load_encoder(str(tmp_path / "sp"), hook="layers.7", d_model=D_IN)


def test_gemmascope_npz(tmp_path, weights, x):
    np.savez(tmp_path / "params.npz", **weights)
    for spec in (tmp_path, tmp_path / "params.npz"):
        enc = load_encoder(str(spec), d_model=D_IN)
        assert enc.architecture == "jumprelu"
        ref = numpy_encode(x, weights["W_enc"], weights["b_enc"], weights["W_dec"], weights["b_dec"],
                           arch="jumprelu", threshold=weights["threshold"], subtract_b_dec=False)
        assert (ref > 0).any()
        np.testing.assert_allclose(dense(enc, x), ref, rtol=1e-4, atol=1e-4)


def test_neurons_are_identity(x):
    enc = load_encoder("neurons", d_model=D_IN)
    assert enc.n_features == D_IN and enc.unit_decoder() is None
    np.testing.assert_array_equal(dense(enc, x), x)


def test_size_mismatch_names_both_sizes(tmp_path, weights):
    np.savez(tmp_path / "params.npz", **weights)
    with pytest.raises(ConfigError) as e:
        load_encoder(str(tmp_path), hook="h", d_model=D_IN + 4)
    assert str(D_IN) in str(e.value) and str(D_IN + 4) in str(e.value)


def test_corrupt_and_inconsistent_files(tmp_path, weights):
    sae = write_saelens(tmp_path / "sae", {k: weights[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")},
                        {"architecture": "standard", "d_in": D_IN, "d_sae": F})
    good = (sae / "sae_weights.safetensors").read_bytes()
    (sae / "sae_weights.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match="corrupt"):
        load_encoder(str(sae), d_model=D_IN)
    (sae / "sae_weights.safetensors").write_bytes(good)
    (sae / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": D_IN, "d_sae": F + 1}))
    with pytest.raises(InputError, match="d_sae"):
        load_encoder(str(sae), d_model=D_IN)
    (sae / "cfg.json").write_text("{not json")
    with pytest.raises(InputError, match="cfg.json"):
        load_encoder(str(sae), d_model=D_IN)
    with pytest.raises(InputError, match="no such"):
        load_encoder(str(tmp_path / "missing"), d_model=D_IN)
