"""--sae as a local path, a Hugging Face repo id or an SAELens release, resolved through the real
huggingface_hub code against a hub cache laid out on disk, offline (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from labeler.activations import load_encoder
from labeler.activations.formats import sae_hook
from labeler.activations.releases import ReleaseTable
from labeler.activations.sources import resolve_sae
from labeler.core.errors import ConfigError, InputError
from tests.collect.hubcache import commit_of, put, repo_dir

D, F = 8, 16
needs_sae_lens = pytest.mark.skipif(importlib.util.find_spec("sae_lens") is None,
                                    reason="sae-lens is not installed (pip install --no-deps sae-lens)")


def test_offline_mode_is_on():
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE, "tests/conftest.py sets HF_HUB_OFFLINE=1 before huggingface_hub loads"


def saelens_folder(path, hook="blocks.1.hook_resid_pre", seed=0, **cfg):
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    save_file({"W_enc": rng.standard_normal((D, F)).astype(np.float32), "b_enc": np.zeros(F, np.float32),
               "W_dec": rng.standard_normal((F, D)).astype(np.float32), "b_dec": np.zeros(D, np.float32)},
              str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": D, "d_sae": F, "dtype": "float32",
                                               "apply_b_dec_to_input": True, "normalize_activations": "none",
                                               "metadata": {"sae_lens_version": "6.54.12", "hook_name": hook,
                                                            "model_name": "gpt2-small"}, **cfg}))
    return path


@pytest.fixture
def cache(tmp_path):
    cache = tmp_path / "hub"
    for n in (1, 2):
        src = saelens_folder(tmp_path / "src" / f"blocks.{n}.hook_resid_pre", hook=f"blocks.{n}.hook_resid_pre", seed=n)
        put(cache, "tiny-org/saes", {f"blocks.{n}.hook_resid_pre": src})
    return cache


def test_hub_repo_and_subfolder(cache):
    src = resolve_sae("tiny-org/saes", "blocks.1.hook_resid_pre", cache_dir=cache)
    commit = commit_of("tiny-org/saes")
    assert src.kind == "hub" and src.commit == commit and src.path.name == "blocks.1.hook_resid_pre"
    assert src.spec() == f"hf://tiny-org/saes@{commit}/blocks.1.hook_resid_pre"
    assert resolve_sae(src.spec(), cache_dir=cache).path == src.path  # the spec opens the same files
    enc = load_encoder(src.spec(), cache_dir=cache, d_model=D)
    assert enc.source["repo_id"] == "tiny-org/saes" and enc.source["commit"] == commit
    assert enc.source["subfolder"] == "blocks.1.hook_resid_pre" and enc.name == "saes/blocks.1.hook_resid_pre"
    assert sae_hook(src.spec(), cache_dir=cache)[0].name == "blocks.1.hook_resid_pre"


def test_revisions_resolve_to_their_own_commit(cache, tmp_path):
    other = saelens_folder(tmp_path / "v2", hook="blocks.2.hook_resid_post", seed=9)
    put(cache, "tiny-org/saes", {"blocks.1.hook_resid_pre": other}, revision="v2")
    src = resolve_sae("tiny-org/saes", "blocks.1.hook_resid_pre", "v2", cache_dir=cache)
    assert src.commit == commit_of("tiny-org/saes", "v2") != commit_of("tiny-org/saes")
    assert src.revision == "v2" and f"@{src.commit}/" in src.spec()
    assert sae_hook(src.spec(), cache_dir=cache)[0].name == "blocks.2.hook_resid_post"
    with pytest.raises(InputError, match="revision v3.*HF_HUB_OFFLINE=1"):
        resolve_sae("tiny-org/saes", "blocks.1.hook_resid_pre", "v3", cache_dir=cache)


def test_missing_subfolder_lists_the_ones_there(cache):
    with pytest.raises(InputError) as e:
        resolve_sae("tiny-org/saes", "blocks.3.hook_resid_pre", cache_dir=cache)
    msg = str(e.value)
    assert "no folder 'blocks.3.hook_resid_pre'" in msg
    assert "blocks.1.hook_resid_pre" in msg and "blocks.2.hook_resid_pre" in msg and "local cache" in msg
    with pytest.raises(InputError, match="several SAEs: choose one with --sae-id.*blocks.1.hook_resid_pre"):
        resolve_sae("tiny-org/saes", cache_dir=cache)


def test_offline_with_nothing_cached_says_how_to_fix(tmp_path):
    with pytest.raises(InputError) as e:
        resolve_sae("nobody/nothing", "layers.3", cache_dir=tmp_path / "empty")
    msg = str(e.value)
    assert "not in the Hugging Face cache" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "hf download nobody/nothing --include 'layers.3/*'" in msg


def test_only_the_sae_files_of_that_subfolder_are_fetched(tmp_path):
    """With a cached tree listing, huggingface_hub checks that every file the download patterns
    select is present: a big neighbour (examples.safetensors, other layers) must not be selected."""
    src = tmp_path / "src"
    folder = src / "layers.1"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    save_file({"encoder.weight": rng.standard_normal((F, D)).astype(np.float32), "encoder.bias": np.zeros(F, np.float32),
               "W_dec": rng.standard_normal((F, D)).astype(np.float32), "b_dec": np.zeros(D, np.float32)},
              str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"k": 4, "num_latents": F, "d_in": D}))
    cache = tmp_path / "hub"
    put(cache, "EleutherAI/sae-tiny", {"layers.1": folder})
    listing = {p: {"size": 10, "blob_id": "0" * 40} for p in (
        "layers.0/cfg.json", "layers.0/sae.safetensors", "layers.1/cfg.json", "layers.1/sae.safetensors",
        "layers.1/examples.safetensors", "README.md")}
    trees = repo_dir(cache, "EleutherAI/sae-tiny") / "trees"
    trees.mkdir()
    (trees / f"{commit_of('EleutherAI/sae-tiny')}.json").write_text(json.dumps({"format_version": 1, "files": listing}))
    got = resolve_sae("EleutherAI/sae-tiny", "layers.1", cache_dir=cache)
    assert got.path == cache / "models--EleutherAI--sae-tiny" / "snapshots" / commit_of("EleutherAI/sae-tiny") / "layers.1"
    hook, _ = sae_hook(got.spec(), cache_dir=cache)
    assert (hook.name, hook.io) == ("layers.1", "output")


def test_local_paths(tmp_path):
    saelens_folder(tmp_path / "many" / "blocks.1.hook_resid_pre")
    src = resolve_sae(str(tmp_path / "many"), "blocks.1.hook_resid_pre")
    assert src.kind == "local" and src.spec() == str(tmp_path / "many" / "blocks.1.hook_resid_pre")
    with pytest.raises(InputError, match="has no 'blocks.9'.*blocks.1.hook_resid_pre"):
        resolve_sae(str(tmp_path / "many"), "blocks.9")
    with pytest.raises(InputError, match="no such file or folder"):
        resolve_sae("./no/such/sae")
    with pytest.raises(ConfigError, match="--revision"):
        resolve_sae(str(tmp_path / "many"), revision="v1")


def test_release_names_without_sae_lens_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sae_lens", None)  # how Python marks a module unimportable
    assert ReleaseTable.installed() is None
    with pytest.raises(InputError, match=r"labeler\[saelens\]"):
        resolve_sae("gpt2-small-res-jb", "blocks.8.hook_resid_pre")


def test_a_table_from_old_sae_lens_and_unsupported_converters(tmp_path, cache):
    table = tmp_path / "pretrained_saes.yaml"  # sae-lens < 3.18 wrapped the releases in SAE_LOOKUP
    table.write_text("SAE_LOOKUP:\n  tiny-release:\n    repo_id: tiny-org/saes\n    model: gpt2-small\n"
                     "    conversion_func: null\n    saes:\n    - id: one\n      path: blocks.1.hook_resid_pre\n"
                     "      neuronpedia: gpt2-small/1-tiny\n  tiny-llama-scope:\n    repo_id: x/y\n    model: m\n"
                     "    conversion_func: llama_scope\n    saes:\n    - id: a\n      path: b\n")
    releases = ReleaseTable.from_yaml(table)
    src = resolve_sae("tiny-release", "one", cache_dir=cache, releases=releases)
    assert src.kind == "release" and src.neuronpedia_id == "gpt2-small/1-tiny" and src.subfolder == "blocks.1.hook_resid_pre"
    with pytest.raises(InputError, match="converter 'llama_scope'"):
        resolve_sae("tiny-llama-scope", "a", cache_dir=cache, releases=releases)
    with pytest.raises(InputError, match="has no SAE 'two'.*one"):
        resolve_sae("tiny-release", "two", cache_dir=cache, releases=releases)
    with pytest.raises(InputError, match="close release names: tiny-release"):
        resolve_sae("tiny-releas", "one", cache_dir=cache, releases=releases)


@needs_sae_lens
def test_real_sae_lens_release_with_its_overrides_and_neuronpedia_id(tmp_path):
    """gpt2-small-res-jb from sae-lens's own table: repo, folder, neuronpedia id, and its
    config_overrides (center_writing_weights) applied over the cfg.json, which is a <= v3 dump."""
    folder = tmp_path / "src" / "blocks.1.hook_resid_pre"
    saelens_folder(folder)
    (folder / "cfg.json").write_text(json.dumps({
        "model_name": "gpt2-small", "hook_point": "blocks.1.hook_resid_pre", "hook_point_layer": 1, "d_in": D,
        "d_sae": F, "dtype": "torch.float32", "device": "cuda", "lr": 4e-4, "l1_coefficient": 8e-5,
        "b_dec_init_method": "geometric_median", "expansion_factor": 2, "context_size": 128}))
    cache = tmp_path / "hub"
    put(cache, "jbloom/GPT2-Small-SAEs-Reformatted", {"blocks.1.hook_resid_pre": folder})
    src = resolve_sae("gpt2-small-res-jb", "blocks.1.hook_resid_pre", cache_dir=cache)
    assert src.repo_id == "jbloom/GPT2-Small-SAEs-Reformatted" and src.neuronpedia_id == "gpt2-small/1-res-jb"
    assert src.config_overrides == {"model_from_pretrained_kwargs": {"center_writing_weights": True}}
    commit = commit_of("jbloom/GPT2-Small-SAEs-Reformatted")
    assert src.spec() == f"saelens://gpt2-small-res-jb@{commit}/blocks.1.hook_resid_pre"
    enc = load_encoder(src.spec(), cache_dir=cache)
    assert enc.center_input and enc.name == "gpt2-small/1-res-jb" and enc.source["release"] == "gpt2-small-res-jb"
    with pytest.raises(InputError, match="close release names: gpt2-small-res-jb"):
        resolve_sae("gpt2-small-res-jbb", "blocks.1.hook_resid_pre", cache_dir=cache)
    with pytest.raises(InputError, match="has no SAE 'blocks.1.hook_resid_prx'.*blocks.1.hook_resid_pre"):
        resolve_sae("gpt2-small-res-jb", "blocks.1.hook_resid_prx", cache_dir=cache)


@needs_sae_lens
def test_real_gemma_scope_release_and_repo(tmp_path):
    """gemma-scope-2b-pt-res-canonical maps a canonical id onto a folder of google/gemma-scope-2b-pt-res."""
    rng = np.random.default_rng(0)
    npz = tmp_path / "params.npz"
    np.savez(npz, W_enc=rng.standard_normal((D, F)).astype(np.float32), W_dec=rng.standard_normal((F, D)).astype(np.float32),
             b_enc=np.zeros(F, np.float32), b_dec=np.zeros(D, np.float32), threshold=np.ones(F, np.float32))
    cache = tmp_path / "hub"
    put(cache, "google/gemma-scope-2b-pt-res", {"layer_20/width_16k/average_l0_71/params.npz": npz})
    src = resolve_sae("gemma-scope-2b-pt-res-canonical", "layer_20/width_16k/canonical", cache_dir=cache)
    assert src.subfolder == "layer_20/width_16k/average_l0_71" and src.conversion == "gemma_2"
    assert src.neuronpedia_id == "gemma-2-2b/20-gemmascope-res-16k"
    enc = load_encoder(src.spec(), cache_dir=cache)
    assert enc.format == "gemmascope" and enc.hook.name == "blocks.20.hook_resid_post"
    direct = resolve_sae("google/gemma-scope-2b-pt-res", "layer_20/width_16k/average_l0_71", cache_dir=cache)
    assert sae_hook(direct.spec(), cache_dir=cache)[0].name == "blocks.20.hook_resid_post"
