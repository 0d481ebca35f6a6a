"""SAELens SAEs of every architecture, written in SAELens's own layout and tensor names, encode
like references computed by hand from SAELens's documented math; every cfg option is honoured
or refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from labeler.activations import load_encoder
from labeler.core.errors import ConfigError, InputError
from tests.collect import reference as R

D_IN, F = R.FORMAT_D_IN, R.FORMAT_F  # the w and x fixtures (conftest) have these sizes
D_OUT = 10
V6 = {"sae_lens_version": "6.54.12", "sae_lens_training_version": "6.54.12", "model_name": "gpt2-small",
      "hook_name": "blocks.3.hook_resid_pre", "hook_head_index": None, "model_class_name": "HookedTransformer",
      "context_size": 128, "seqpos_slice": [None], "model_from_pretrained_kwargs": {}, "prepend_bos": True,
      "exclude_special_tokens": False, "sequence_separator_token": "bos", "disable_concat_sequences": False,
      "dataset_path": "monology/pile-uncopyrighted", "training_architecture": "standard", "l0": 31.5}


def sae6(path, tensors, architecture, **top):
    """A SAELens 6 folder: cfg.json (nested metadata, SAEConfig.to_dict) + sae_weights.safetensors."""
    path.mkdir(parents=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path / "sae_weights.safetensors"))
    cfg = {"d_in": D_IN, "d_sae": F, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
           "normalize_activations": "none", "reshape_activations": "none", "architecture": architecture,
           "metadata": dict(V6), **top}
    (path / "cfg.json").write_text(json.dumps(cfg))
    return str(path)


def pick(w, *names):
    return {n: w[n] for n in names}


def test_standard(tmp_path, w, x):
    enc = load_encoder(sae6(tmp_path / "s", pick(w, "W_enc", "b_enc", "W_dec", "b_dec"), "standard"), d_model=D_IN)
    R.check(enc, x, R.relu(R.pre(x, w["W_enc"], w["b_enc"], b_dec=w["b_dec"])))
    d = enc.describe()
    assert d["hook"]["name"] == "blocks.3.hook_resid_pre" and d["hook"]["transformer_lens"]
    assert not d["center_input"]  # no centre_writing_weights in model_from_pretrained_kwargs


@pytest.mark.parametrize("rescale", [False, True])
def test_topk_and_rescale_acts_by_decoder_norm(tmp_path, w, x, rescale):
    spec = sae6(tmp_path / "s", pick(w, "W_enc", "b_enc", "W_dec", "b_dec"), "topk", k=5,
                rescale_acts_by_decoder_norm=rescale)
    p = R.pre(x, w["W_enc"], w["b_enc"], b_dec=w["b_dec"])
    if rescale:  # SAELens TopKSAE.encode: pre-activations times the decoder row norms, kept in the acts
        p = p * np.linalg.norm(w["W_dec"].astype(np.float64), axis=1)
    enc = load_encoder(spec, d_model=D_IN)
    R.check(enc, x, R.topk(p, 5))
    assert ((R.dense(enc, x) > 0).sum(1) <= 5).all()


def test_jumprelu_and_its_old_log_threshold(tmp_path, w, x):
    ref = R.jumprelu(R.pre(x, w["W_enc"], w["b_enc"], b_dec=w["b_dec"]), w["threshold"])
    enc = load_encoder(sae6(tmp_path / "a", pick(w, "W_enc", "b_enc", "W_dec", "b_dec", "threshold"), "jumprelu"))
    R.check(enc, x, ref)
    old = {**pick(w, "W_enc", "b_enc", "W_dec", "b_dec"), "log_threshold": np.log(w["threshold"])}
    R.check(load_encoder(sae6(tmp_path / "b", old, "jumprelu")), x, ref)


def test_gated(tmp_path, w, x):
    rng = np.random.default_rng(3)
    g = {"b_gate": (0.3 * rng.standard_normal(F)).astype(np.float32),
         "b_mag": (0.3 * rng.standard_normal(F)).astype(np.float32),
         "r_mag": (0.2 * rng.standard_normal(F)).astype(np.float32)}
    enc = load_encoder(sae6(tmp_path / "s", {**pick(w, "W_enc", "W_dec", "b_dec"), **g}, "gated"))
    R.check(enc, x, R.gated(x, w["W_enc"], g["b_gate"], g["b_mag"], g["r_mag"], b_dec=w["b_dec"]))


def test_batchtopk_inference_form(tmp_path, w, x):
    """Saved by SAELens as jumprelu with one threshold for all latents; a training checkpoint
    (architecture batchtopk, scalar topk_threshold, decoder-norm rescaling) encodes the same way."""
    t = np.float32(0.7)
    saved = {**pick(w, "W_enc", "b_enc", "W_dec", "b_dec"), "threshold": np.full(F, t, np.float32)}
    p = R.pre(x, w["W_enc"], w["b_enc"], b_dec=w["b_dec"])
    R.check(load_encoder(sae6(tmp_path / "a", saved, "jumprelu")), x, R.jumprelu(p, t))
    training = {**pick(w, "W_enc", "b_enc", "W_dec", "b_dec"), "topk_threshold": np.array(t, np.float64)}
    enc = load_encoder(sae6(tmp_path / "b", training, "batchtopk", k=4.0, rescale_acts_by_decoder_norm=True,
                            topk_threshold_lr=0.01, aux_loss_coefficient=1.0))
    norms = np.linalg.norm(w["W_dec"].astype(np.float64), axis=1)
    R.check(enc, x, R.jumprelu(p * norms, t))
    assert enc.describe()["architecture"] == "batchtopk" and enc.activation == "jumprelu"


def test_abstopk_is_two_features_per_latent(tmp_path, w, x):
    enc = load_encoder(sae6(tmp_path / "s", pick(w, "W_enc", "b_enc", "W_dec", "b_dec"), "abstopk", k=6))
    signed = R.abstopk(R.pre(x, w["W_enc"], w["b_enc"], b_dec=w["b_dec"]), 6)
    assert (signed < 0).any() and (signed > 0).any()
    R.check(enc, x, R.sides(signed))
    sides = enc.describe()["feature_sides"]
    assert [(s["sign"], s["start"], s["end"]) for s in sides] == [("pos", 0, F), ("neg", F, 2 * F)]
    unit = enc.unit_decoder().numpy()
    np.testing.assert_allclose(unit[F:], -unit[:F])  # a negative side points the other way


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder"])
def test_transcoders(tmp_path, w, x, arch):
    rng = np.random.default_rng(4)
    t = {"W_enc": w["W_enc"], "b_enc": w["b_enc"], "W_dec": rng.standard_normal((F, D_OUT)).astype(np.float32),
         "b_dec": rng.standard_normal(D_OUT).astype(np.float32)}
    if "jumprelu" in arch:
        t["threshold"] = w["threshold"]
    if "skip" in arch:
        t["W_skip"] = rng.standard_normal((D_OUT, D_IN)).astype(np.float32)
    meta = {**V6, "hook_name": "blocks.3.ln2.hook_normalized", "hook_name_out": "blocks.3.hook_mlp_out"}
    spec = sae6(tmp_path / "s", t, arch, d_out=D_OUT, apply_b_dec_to_input=False, metadata=meta)
    p = R.pre(x, w["W_enc"], w["b_enc"])  # no b_dec: it lives in the output space
    enc = load_encoder(spec, d_model=D_IN)
    R.check(enc, x, R.jumprelu(p, w["threshold"]) if "jumprelu" in arch else R.relu(p))
    assert enc.hook.transcoder and enc.hook.out == "blocks.3.hook_mlp_out"
    bad = tmp_path / "bad"
    sae6(bad, t, arch, d_out=D_OUT, apply_b_dec_to_input=True, metadata=meta)
    with pytest.raises(InputError, match="apply_b_dec_to_input"):
        load_encoder(str(bad))


def test_sae_lens_5_flat_cfg_with_tanh_relu(tmp_path, w, x):
    path = tmp_path / "s"
    path.mkdir()
    save_file(pick(w, "W_enc", "b_enc", "W_dec", "b_dec"), str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps({  # SAELens 5.11 SAEConfig.to_dict
        "architecture": "standard", "d_in": D_IN, "d_sae": F, "dtype": "float32", "device": "cpu",
        "model_name": "pythia-70m-deduped", "hook_name": "blocks.2.hook_mlp_out", "hook_layer": 2,
        "hook_head_index": None, "activation_fn_str": "tanh-relu", "activation_fn_kwargs": {},
        "apply_b_dec_to_input": True, "finetuning_scaling_factor": False, "sae_lens_training_version": "5.11.0",
        "prepend_bos": True, "dataset_path": "x", "dataset_trust_remote_code": True, "context_size": 128,
        "normalize_activations": "none", "neuronpedia_id": "pythia-70m-deduped/2-mlp", "model_from_pretrained_kwargs": {},
        "seqpos_slice": [None]}))
    enc = load_encoder(str(path))
    R.check(enc, x, np.tanh(R.relu(R.pre(x, w["W_enc"], w["b_enc"], b_dec=w["b_dec"]))))
    assert enc.name == "pythia-70m-deduped/2-mlp"


def test_v3_runner_dump(tmp_path, w, x):
    """<= v3 cfg.json: the whole LanguageModelSAERunnerConfig (hook_point, expansion_factor, a
    boolean normalize_activations, a torch dtype string, every trainer key)."""
    path = tmp_path / "s"
    path.mkdir()
    save_file(pick(w, "W_enc", "b_enc", "W_dec", "b_dec"), str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps({
        "model_name": "gelu-2l", "hook_point": "blocks.0.hook_mlp_out", "hook_point_layer": 0,
        "hook_point_head_index": None, "dataset_path": "NeelNanda/c4-tokenized-2b", "is_dataset_tokenized": True,
        "context_size": 128, "use_cached_activations": False, "d_in": D_IN, "expansion_factor": F // D_IN + 0,
        "b_dec_init_method": "geometric_median", "lr": 0.0004, "l1_coefficient": 0.00008, "lr_scheduler_name": None,
        "train_batch_size": 4096, "n_batches_in_buffer": 128, "total_training_tokens": 300000000, "store_batch_size": 32,
        "use_ghost_grads": False, "feature_sampling_window": 1000, "dead_feature_window": 5000,
        "dead_feature_threshold": 1e-08, "log_to_wandb": True, "wandb_project": "mats_sae_training", "wandb_entity": None,
        "wandb_log_frequency": 100, "device": "cuda", "seed": 42, "n_checkpoints": 0, "checkpoint_path": "checkpoints",
        "dtype": "torch.float32", "normalize_activations": False, "d_sae": F}))
    R.check(load_encoder(str(path)), x, R.relu(R.pre(x, w["W_enc"], w["b_enc"], b_dec=w["b_dec"])))


def test_normalisations(tmp_path, w, x):
    ws = pick(w, "W_enc", "b_enc", "W_dec", "b_dec")
    xs = x * np.sqrt(D_IN) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    enc = load_encoder(sae6(tmp_path / "a", ws, "standard", normalize_activations="constant_norm_rescale"))
    R.check(enc, x * 7.0, R.relu(R.pre(xs, w["W_enc"], w["b_enc"], b_dec=w["b_dec"])))
    c = x.astype(np.float64) - x.mean(1, keepdims=True)
    ln = c / (c.std(1, ddof=1, keepdims=True) + 1e-5)  # SAELens: unbiased std, eps on the std
    enc = load_encoder(sae6(tmp_path / "b", ws, "standard", normalize_activations="layer_norm"))
    R.check(enc, x, R.relu(R.pre(ln, w["W_enc"], w["b_enc"], b_dec=w["b_dec"])))
    enc = load_encoder(sae6(tmp_path / "c", ws, "standard", normalize_activations="expected_average_only_in",
                            norm_scaling_factor=0.25))
    R.check(enc, x, R.relu(R.pre(x * 0.25, w["W_enc"], w["b_enc"], b_dec=w["b_dec"])))


def test_centre_writing_weights_centres_residual_inputs_of_layernorm_models(tmp_path, w, x):
    ws = pick(w, "W_enc", "b_enc", "W_dec", "b_dec")
    meta = {**V6, "model_from_pretrained_kwargs": {"center_writing_weights": True}}
    enc = load_encoder(sae6(tmp_path / "a", ws, "standard", metadata=meta))
    c = x.astype(np.float64) - x.mean(1, keepdims=True)
    assert enc.center_input
    R.check(enc, x, R.relu(R.pre(c, w["W_enc"], w["b_enc"], b_dec=w["b_dec"])))
    rms = {**meta, "model_name": "gemma-2b"}  # TransformerLens centres LayerNorm models only
    assert not load_encoder(sae6(tmp_path / "b", ws, "standard", metadata=rms)).center_input
    z = {**meta, "hook_name": "blocks.3.attn.hook_z"}  # z is not on the residual stream
    assert not load_encoder(sae6(tmp_path / "c", ws, "standard", metadata=z)).center_input
    with pytest.raises(InputError, match="normalisation labeler does not know"):
        load_encoder(sae6(tmp_path / "d", ws, "standard", metadata={**meta, "model_name": "some-new-model"}))


@pytest.mark.parametrize(("top", "meta", "match"), [
    ({"fancy_new_option": 1}, {}, "unknown option.*'fancy_new_option'"),
    ({}, {"shiny_metadata": 2}, "metadata: unknown option.*'shiny_metadata'"),
    ({"normalize_activations": "covariance_whitening"}, {}, "covariance_whitening"),
    ({"architecture": "temporal"}, {}, "token by token"),
    ({"architecture": "matching_pursuit"}, {}, "token by token"),
    ({"architecture": "mystery"}, {}, "architecture 'mystery' is not supported"),
    ({"rescale_acts_by_decoder_norm": True}, {}, "rescale_acts_by_decoder_norm"),
    ({"reshape_activations": "heads"}, {}, "reshape_activations"),
    ({"dtype": "int8"}, {}, "dtype"),
    ({"n_heads": 4}, {}, "temporal"),
    ({}, {"hook_head_index": 3}, "one attention head"),
    ({}, {"model_class_name": "HookedMamba"}, "model_class_name"),
    ({}, {"model_from_pretrained_kwargs": {"magic": True}}, "unknown TransformerLens option"),
    ({}, {"hook_name": "blocks.3.attn.hook_z", "model_from_pretrained_kwargs": {"fold_value_biases": True}}, "fold_value_biases"),
    ({"activation_fn_kwargs": {"k": 3, "alpha": 2}}, {}, "arguments other than k"),
])
def test_options_it_cannot_honour_are_refused_by_name(tmp_path, w, top, meta, match):
    spec = sae6(tmp_path / "s", pick(w, "W_enc", "b_enc", "W_dec", "b_dec"), top.pop("architecture", "standard"),
                metadata={**V6, **meta}, **top)
    with pytest.raises(InputError, match=match):
        load_encoder(spec)


def test_labeler_train_sae_cfg_module_hook(tmp_path, w, x):
    """labeler train-sae writes a module path and hook_io: read as a module, not a TL name."""
    path = tmp_path / "s"
    path.mkdir()
    save_file(pick(w, "W_enc", "b_enc", "W_dec", "b_dec"), str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps({
        "architecture": "topk", "d_in": D_IN, "d_sae": F, "k": 3, "dtype": "float32", "apply_b_dec_to_input": True,
        "normalize_activations": "none", "model_name": "/models/x", "hook_name": "model.layers.0.mlp",
        "hook_io": "input", "activation_fn_kwargs": {"k": 3}, "training_tokens": 100}))
    enc = load_encoder(str(path))
    assert not enc.hook.transformer_lens and enc.hook.io == "input" and enc.hook.name == "model.layers.0.mlp"


def test_corrupt_and_inconsistent_files(tmp_path, w):
    sae = tmp_path / "sae"
    sae6(sae, pick(w, "W_enc", "b_enc", "W_dec", "b_dec"), "standard")
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


def test_size_mismatch_names_both_sizes(tmp_path, w):
    spec = sae6(tmp_path / "s", pick(w, "W_enc", "b_enc", "W_dec", "b_dec"), "standard")
    with pytest.raises(ConfigError) as e:
        load_encoder(spec, hook="h", d_model=D_IN + 4)
    assert str(D_IN) in str(e.value) and str(D_IN + 4) in str(e.value)
