"""Sharded collect: parts merge into exactly the single-run store (feature ranges and corpus slices,
TopK and ReLU), --features parts through the CLI, bad and overlapping ranges, one pass for
several SAEs, neighbours against brute force, held-out random windows, old stores refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labeler.core.config import get_settings
from labeler.corpus import CorpusSpec
from labeler.db import Repository
from labeler.examples import FeatureStore
from labeler.examples.accumulate import split_of
from labeler.examples.collect import CollectConfig, run_collect, run_collect_many
from labeler.runs.collect_jobs import run_sharded
from tests.collect.conftest import HOOKS, centred_sae, hook_acts, run_cli
from tests.collect.test_collect import brute_force
from tests.collect.test_resume_and_cli import assert_same_store


def gpt2_cfg(inputs, corpus, sae, **kw) -> CollectConfig:
    base = dict(model=str(inputs / "gpt2"), hook=HOOKS["gpt2"], sae=str(sae), corpus=CorpusSpec(str(corpus)),
                tokens=3200, ctx_len=16, batch_size=16, seed=3, block=16, shard_size=16)
    return CollectConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def relu_sae(inputs, corpus, tmp_path_factory):
    acts = hook_acts(inputs / "gpt2", HOOKS["gpt2"], corpus)
    return centred_sae(tmp_path_factory.mktemp("relu") / "sae", acts, 48, architecture="standard", bias=-0.5)


def same_records(a: FeatureStore, b: FeatureStore) -> None:
    assert a.n_features == b.n_features
    for f in range(a.n_features):
        assert a.feature(f).to_dict() == b.feature(f).to_dict(), f


@pytest.mark.parametrize("arch", ["topk", "standard"])
def test_parts_merge_into_the_single_run_store(arch, inputs, corpus, gpt2_topk_sae, relu_sae, tmp_path,
                                               sqlite_url):
    sae = gpt2_topk_sae if arch == "topk" else relu_sae
    single = run_collect(gpt2_cfg(inputs, corpus, sae), tmp_path / "single", progress=False)
    repo = Repository.open(sqlite_url)
    out = run_sharded(gpt2_cfg(inputs, corpus, sae), str(tmp_path / "sharded"), feature_shards=3, corpus_shards=2,
                      repo=repo, settings=get_settings(), log=lambda *_: None)
    assert_same_store(single, tmp_path / "sharded")  # every file, array by array
    same_records(FeatureStore(single), FeatureStore(out))
    job = repo.jobs.list()[0]  # what `labeler jobs` lists: the collect, one row per part
    assert job.spec["kind"] == "collect" and job.n_features == 6 and job.counts["done"] == 6
    assert job.status == "done"
    assert not (tmp_path / "sharded" / "parts").exists()


def test_feature_ranges_through_the_cli_and_bad_ranges(inputs, corpus, gpt2_topk_sae, tmp_path, capsys):
    args = ["collect", "--model", str(inputs / "gpt2"), "--hook", HOOKS["gpt2"], "--sae", str(gpt2_topk_sae),
            "--corpus", str(corpus), "--tokens", "1600", "--ctx-len", "16", "--batch-size", "16", "--no-progress"]
    out = tmp_path / "parts"
    for bad, says in (("10:5", "empty"), ("0:99", "has 48 features"), ("seven", "give one range A:B")):
        code, text = run_cli([*args, "--out", str(out), "--features", bad], capsys)
        assert code == 2 and says in text, text
    code, text = run_cli([*args, "--out", str(out), "--features", "0:20"], capsys)
    assert code == 0 and "20:48 are not collected yet" in text, text
    code, text = run_cli([*args, "--out", str(out), "--features", "10:30"], capsys)
    assert code == 2 and "overlap the part 0:20" in text, text
    code, text = run_cli([*args, "--out", str(out), "--features", "20:48"], capsys)
    assert code == 0 and "complete" in text, text
    code, text = run_cli([*args, "--out", str(tmp_path / "many"), "--feature-shards", "100"], capsys)
    assert code == 2 and "only 48 features" in text, text
    single = tmp_path / "single"
    code, text = run_cli([*args, "--out", str(single)], capsys)
    assert code == 0, text
    same_records(FeatureStore(single), FeatureStore(out))


def test_one_pass_for_several_saes_equals_separate_runs(inputs, corpus, gpt2_topk_sae, tmp_path):
    acts = hook_acts(inputs / "gpt2", "transformer.h.1", corpus)
    deeper = centred_sae(tmp_path / "sae-h1", acts, 40, architecture="topk", k=3)
    a = gpt2_cfg(inputs, corpus, gpt2_topk_sae)
    b = gpt2_cfg(inputs, corpus, deeper, hook="transformer.h.1")
    outs = run_collect_many([a, b], [tmp_path / "many-a", tmp_path / "many-b"], progress=False)
    for cfg, got in zip((a, b), outs):
        alone = run_collect(cfg, tmp_path / f"alone-{got.name}", progress=False)
        assert_same_store(alone, got)
    with pytest.raises(Exception, match="must share"):
        run_collect_many([a, gpt2_cfg(inputs, corpus, deeper, hook="transformer.h.1", seed=4)],
                         [tmp_path / "x", tmp_path / "y"], progress=False)


def test_neighbours_equal_brute_force(inputs, corpus, gpt2_topk_sae, tmp_path):
    store = FeatureStore(run_collect(gpt2_cfg(inputs, corpus, gpt2_topk_sae, neighbours=8), tmp_path / "s",
                                     progress=False))
    idx, val = store.neighbours()
    assert idx.shape == (48, 8) and idx.dtype == np.int32 and val.dtype == np.float32
    unit = store.decoder_directions().astype(np.float64)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    expect = np.argsort(-sims, axis=1, kind="stable")[:, :8]
    np.testing.assert_array_equal(idx, expect)
    np.testing.assert_allclose(val, np.take_along_axis(sims, expect, axis=1), atol=1e-5)


def test_random_windows_are_zero_at_the_rate_the_corpus_implies(inputs, corpus, gpt2_topk_sae, tmp_path):
    store = FeatureStore(run_collect(gpt2_cfg(inputs, corpus, gpt2_topk_sae, tokens=6400), tmp_path / "s",
                                     progress=False))
    acts = brute_force(store)
    wmax = acts.max(axis=1)  # [windows, F]
    split = split_of(np.arange(store.n_windows, dtype=np.int64), 3)
    observed = expected = var = 0.0
    for f in range(store.n_features):
        rec = store.feature(f)
        for si, s in ((1, "valid"), (2, "test")):
            shown = rec.select(s, "random")
            assert len({e.window for e in shown}) == len(shown) == min(store.sizes[s]["random"], (split == si).sum())
            zero = [max(e.activations) <= 0 for e in shown]
            assert zero == [wmax[e.window, f] <= 0 for e in shown]  # activations are the real ones
            p_quiet = float((wmax[split == si, f] <= 0).mean())
            observed += sum(zero)
            expected += p_quiet * len(shown)
            var += p_quiet * (1 - p_quiet) * len(shown)
    assert observed > 0  # all-zero windows are there, as in random text
    assert abs(observed - expected) < 4 * var ** 0.5 + 1, (observed, expected)


def test_old_store_format_is_refused_with_a_clear_message(inputs, corpus, gpt2_topk_sae, tmp_path, capsys):
    path = run_collect(gpt2_cfg(inputs, corpus, gpt2_topk_sae, tokens=800), tmp_path / "s", progress=False)
    m = json.loads((path / "manifest.json").read_text())
    m["format_version"] = 1
    (path / "manifest.json").write_text(json.dumps(m))
    code, text = run_cli(["inspect", str(path), "--feature", "0"], capsys)
    assert code == 2 and "format_version 1 is not supported" in text and "--force" in text


def test_several_saes_of_one_folder_in_one_cli_pass(inputs, corpus, tmp_path, capsys):
    """A sparsify folder with one SAE per layer: ``--sae-id`` repeated collects both in one pass,
    one store per SAE under --out, each equal to the store of its own run."""
    parent = tmp_path / "sparsify"
    for layer, n in (("h.0", 32), ("h.1", 24)):
        acts = hook_acts(inputs / "gpt2", f"transformer.{layer}", corpus)
        centred_sae(parent, acts, n, format="sparsify", hook=layer, k=3)
    args = ["collect", "--model", str(inputs / "gpt2"), "--sae", str(parent), "--corpus", str(corpus),
            "--tokens", "1600", "--ctx-len", "16", "--batch-size", "16", "--no-progress"]
    code, text = run_cli([*args, "--sae-id", "h.0", "--sae-id", "h.1", "--out", str(tmp_path / "many")], capsys)
    assert code == 0, text
    for layer, n in (("h.0", 32), ("h.1", 24)):
        got = tmp_path / "many" / layer
        assert str(got) in text and FeatureStore(got).n_features == n
        code, alone_text = run_cli([*args, "--sae-id", layer, "--out", str(tmp_path / f"alone-{layer}")], capsys)
        assert code == 0, alone_text
        assert_same_store(tmp_path / f"alone-{layer}", got)
    code, text = run_cli([*args, "--sae-id", "h.0", "--sae-id", "h.1", "--out", str(tmp_path / "x"),
                          "--feature-shards", "2"], capsys)
    assert code == 2 and "one SAE at a time" in text, text
    code, text = run_cli([*args, "--sae-id", "h.0", "--sae-id", "h.0", "--out", str(tmp_path / "y")], capsys)
    assert code == 2 and "share a store name" in text, text
