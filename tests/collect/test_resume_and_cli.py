"""Resume after a real SIGKILL, finished-store reuse, mismatched stores and bad inputs via the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from labeler.testing import make_tiny_sae, write_tiny_corpus
from tests.collect.conftest import HOOKS, centred_sae, hook_acts, run_cli


def store_contents(path: Path) -> dict[str, np.ndarray]:
    """Every array of a store: tokens, feature files, statistics, random windows, hard negatives,
    neighbours, decoder."""
    out = {"tokens": np.load(path / "tokens.npy")}
    for f in sorted((path / "features").iterdir()) + sorted(path.glob("*.safetensors")):
        out.update({f"{f.name}:{k}": v for k, v in load_file(str(f)).items()})
    return out


def assert_same_store(a_path: Path, b_path: Path) -> None:
    a, b = store_contents(a_path), store_contents(b_path)
    assert a.keys() == b.keys()
    identity = [json.loads((Path(p) / "manifest.json").read_text())["store_identity"] for p in (a_path, b_path)]
    assert identity[0] == identity[1]  # the same content is the same SAE to the database
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def collect_args(model: Path, sae: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["collect", "--model", str(model), "--hook", HOOKS["gpt2"], "--sae", str(sae), "--corpus", str(corpus),
            "--out", str(out), "--tokens", "6400", "--ctx-len", "16", "--batch-size", "2", "--no-progress", *extra]


def test_resume_after_kill_equals_uninterrupted_run(inputs, gpt2_topk_sae, tmp_path, capsys):
    corpus = write_tiny_corpus(tmp_path / "big.jsonl", n_docs=300)
    killed = tmp_path / "killed"
    args = collect_args(inputs / "gpt2", gpt2_topk_sae, corpus, killed, "--checkpoint-every", "0")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "labeler", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    ckpt = killed / "checkpoint" / "position.json"
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ckpt.exists(), proc.communicate()[1].decode()[-2000:]
    proc.send_signal(signal.SIGKILL)  # at once: the first checkpoint comes after one batch of 200
    proc.wait()
    assert json.loads((killed / "manifest.json").read_text())["status"] == "running"
    code, text = run_cli(["inspect", str(killed), "--feature", "0"], capsys)
    assert code == 2 and "unfinished" in text

    code, text = run_cli(args, capsys)  # the same command again
    assert code == 0, text
    assert "resuming" in text
    assert not ckpt.exists()

    fresh = tmp_path / "fresh"
    code, text = run_cli(collect_args(inputs / "gpt2", gpt2_topk_sae, corpus, fresh), capsys)
    assert code == 0, text
    assert_same_store(killed, fresh)

    # a finished store is not recomputed...
    before = (fresh / "stats.safetensors").stat().st_mtime_ns
    code, text = run_cli(collect_args(inputs / "gpt2", gpt2_topk_sae, corpus, fresh), capsys)
    assert code == 0 and "already complete" in text
    assert (fresh / "stats.safetensors").stat().st_mtime_ns == before
    # ...and a store written with other settings is refused, naming the differences
    code, text = run_cli(collect_args(inputs / "gpt2", gpt2_topk_sae, corpus, fresh, "--seed", "7"), capsys)
    assert code == 2 and "seed: 0 (store) vs 7 (now)" in text.replace("\n", " ")
    # unless forced
    code, text = run_cli(collect_args(inputs / "gpt2", gpt2_topk_sae, corpus, fresh, "--seed", "7", "--force"), capsys)
    assert code == 0, text


def test_unknown_hook_lists_nearest_names_in_a_real_process(inputs, corpus, tmp_path):
    r = subprocess.run(["labeler", "collect", "--model", str(inputs / "gpt2"), "--hook", "transformer.h.7.mlpp",
                        "--corpus", str(corpus), "--out", str(tmp_path / "s"), "--tokens", "320", "--ctx-len", "16"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    err = " ".join(r.stderr.split())
    assert "unknown hookpoint 'transformer.h.7.mlpp'" in err and "transformer.h.1.mlp" in err
    assert "Traceback" not in r.stderr


def test_bad_inputs_clear_errors(inputs, corpus, tmp_path, capsys):
    base = ["collect", "--model", str(inputs / "gpt2"), "--hook", HOOKS["gpt2"], "--tokens", "320",
            "--ctx-len", "16", "--no-progress"]
    # size mismatch names both widths
    sae = make_tiny_sae(tmp_path / "wide", d_in=40, n_features=16)
    code, text = run_cli([*base, "--sae", str(sae), "--corpus", str(corpus), "--out", str(tmp_path / "a")], capsys)
    flat = " ".join(text.split())
    assert code == 2 and "d_in=40" in flat and "width 32" in flat
    # empty corpus names the source
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    code, text = run_cli([*base, "--corpus", str(empty), "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and "empty" in text and "empty.txt" in text.replace("\n", "")
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["status"] != "complete"
    # missing corpus path
    code, text = run_cli([*base, "--corpus", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "no such file" in text
    # jsonl without the text field
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"body": "hello there"}) + "\n")
    code, text = run_cli([*base, "--corpus", str(bad), "--out", str(tmp_path / "d")], capsys)
    assert code == 2 and "'text'" in text
    # corrupt safetensors
    sae = make_tiny_sae(tmp_path / "corrupt", d_in=32, n_features=16)
    w = sae / "sae_weights.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    code, text = run_cli([*base, "--sae", str(sae), "--corpus", str(corpus), "--out", str(tmp_path / "e")], capsys)
    assert code == 2 and "corrupt" in text
    # not a model folder
    code, text = run_cli(["collect", "--model", str(tmp_path), "--hook", "x", "--out", str(tmp_path / "f")], capsys)
    assert code == 2 and "config.json" in text
    # inspect on something that is not a store
    code, text = run_cli(["inspect", str(tmp_path), "--feature", "0"], capsys)
    assert code == 2 and "not a labeler store" in text


def test_inspect_views(inputs, corpus, gpt2_topk_sae, tmp_path, capsys):
    out = tmp_path / "s"
    code, text = run_cli(["collect", "--model", str(inputs / "gpt2"), "--hook", HOOKS["gpt2"], "--sae",
                          str(gpt2_topk_sae), "--corpus", str(corpus), "--out", str(out), "--tokens", "1600",
                          "--ctx-len", "16", "--no-progress"], capsys)
    assert code == 0, text
    from labeler.examples import FeatureStore

    store = FeatureStore(out)
    f = int(np.argmax(store.all_stats()["count"]))
    code, text = run_cli(["inspect", str(out), "--feature", str(f), "--json"], capsys)
    rec = json.loads(text)
    assert code == 0 and rec["feature"] == f and rec["stats"]["count"] > 0
    assert {e["kind"] for e in rec["examples"]} >= {"top", "sample"}
    code, text = run_cli(["inspect", str(out), "--feature", str(f)], capsys)
    assert code == 0 and f"feature {f}" in text and "max" in text
    code, text = run_cli(["inspect", str(out), "--feature", "999"], capsys)
    assert code == 2 and "out of range" in text


def test_train_sae_saves_saelens_layout_that_reconstructs(inputs, corpus, tmp_path, capsys):
    out = tmp_path / "sae"
    code, text = run_cli(["train-sae", "--model", str(inputs / "gpt2"), "--hook", HOOKS["gpt2"], "--corpus",
                          str(corpus), "--latents", "64", "--k", "4", "--tokens", "4096", "--ctx-len", "16",
                          "--epochs", "20", "--batch-tokens", "512", "--lr", "3e-3", "--out", str(out)], capsys)
    assert code == 0, text
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 4 and cfg["d_in"] == 32 and cfg["d_sae"] == 64
    w = load_file(str(out / "sae_weights.safetensors"))
    assert w["W_enc"].shape == (32, 64) and w["W_dec"].shape == (64, 32) and w["b_dec"].shape == (32,)
    from labeler.activations import load_encoder
    from labeler.activations.train_sae import sample_activations

    enc = load_encoder(str(out), hook=HOOKS["gpt2"], d_model=32)
    x = sample_activations(str(inputs / "gpt2"), HOOKS["gpt2"], str(corpus), 1024, ctx_len=16)
    z = enc.encode(x).to_dense()
    recon = z @ enc.W_dec + enc.b_dec
    fvu = float((recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert fvu < 0.35, fvu  # the mean alone gives 1.0


def test_ctrl_c_saves_a_checkpoint_and_the_same_command_resumes(inputs, gpt2_topk_sae, tmp_path, capsys):
    corpus = write_tiny_corpus(tmp_path / "big.jsonl", n_docs=300)
    out = tmp_path / "interrupted"
    # No periodic checkpoints: whatever is saved was saved because of the Ctrl-C.
    # One window per batch: many batches, so the signal surely lands mid-stream.
    args = collect_args(inputs / "gpt2", gpt2_topk_sae, corpus, out, "--checkpoint-every", "3600", "--batch-size", "1")
    proc = subprocess.Popen([sys.executable, "-m", "labeler", *args], env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint" / "decoder.safetensors").exists() and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)  # the handler is installed before that file is created
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert "resume" in err.decode()
    assert (out / "checkpoint" / "position.json").exists()

    code, text = run_cli(args, capsys)
    assert code == 0, text
    assert "resuming" in text
    fresh = tmp_path / "fresh"
    code, text = run_cli(collect_args(inputs / "gpt2", gpt2_topk_sae, corpus, fresh, "--batch-size", "1"), capsys)
    assert code == 0, text
    assert_same_store(out, fresh)


def test_bookkeeping_in_groups_of_batches_gives_the_same_store(inputs, corpus, gpt2_topk_sae, tmp_path, monkeypatch):
    """The block states take several batches' nonzeros at once (stream.UPDATE_NONZEROS): the
    store must not depend on the grouping, for a TopK SAE and a dense ReLU one, in 3 blocks."""
    from labeler.corpus import CorpusSpec
    from labeler.examples import stream
    from labeler.examples.collect import CollectConfig, run_collect

    acts = hook_acts(inputs / "gpt2", HOOKS["gpt2"], corpus)
    relu = centred_sae(tmp_path / "sae-relu", acts, 40, architecture="standard")
    for sae in (gpt2_topk_sae, relu):
        cfg = CollectConfig(model=str(inputs / "gpt2"), hook=HOOKS["gpt2"], sae=str(sae), corpus=CorpusSpec(str(corpus)),
                            tokens=3200, ctx_len=16, batch_size=8, seed=3, block=16, shard_size=16)
        outs = []
        for threshold in (1, 500, 10 ** 9):  # every batch alone / a few together / all of them
            monkeypatch.setattr(stream, "UPDATE_NONZEROS", threshold)
            outs.append(run_collect(cfg, tmp_path / f"{sae.name}-{threshold}", progress=False, log=lambda *_: None))
        assert_same_store(outs[0], outs[1])
        assert_same_store(outs[0], outs[2])
