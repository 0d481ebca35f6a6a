"""`labeler steer` as a user runs it (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LABELER_DEVICE="cpu", COLUMNS="160")
    return subprocess.run([sys.executable, "-m", "labeler", "steer", *args], capture_output=True, text=True,
                          env=env, timeout=180)


def test_steer_prints_steered_and_unsteered_side_by_side(steer_store, subject):
    from labeler.activations.steering import Intervention, steer

    f = str(steer_store.planted)
    out = run("--store", str(steer_store.path), "--feature", f, "--strength", "10", "--prompt", "I think that",
              "--temperature", "0", "--max-new-tokens", "6")
    assert out.returncode == 0, out.stderr
    header = next(line for line in out.stdout.splitlines() if "unsteered" in line)
    assert header.index("unsteered") < header.index(f"steered (feature {f} +10)")  # two columns, one row
    row = next(line for line in out.stdout.splitlines() if line.count("I think that") == 2)
    plain, steered = row.split("│")[1:3]
    assert "return" in steered and "return" not in plain

    out = run("--store", str(steer_store.path), "--feature", f, "--clamp", "0", "--prompt", "The", "--json",
              "--samples", "2", "--seed", "4")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    same = steer(subject, "The", Intervention(steer_store.planted, "clamp", 0.0), samples=2, seed=4)
    assert data["intervention"] == {"feature": steer_store.planted, "mode": "clamp", "value": 0.0}
    assert (data["steered"], data["unsteered"]) == (same.steered, same.unsteered)


def test_steer_bad_input_exits_2_with_one_line(steer_store, encoder_store, tmp_path):
    store = str(steer_store.path)
    cases = [
        (("--store", store, "--feature", "1", "--prompt", "x"), "exactly one of --strength"),
        (("--store", store, "--feature", "999", "--strength", "1", "--prompt", "x"), "out of range"),
        (("--store", str(encoder_store), "--feature", "0", "--strength", "1", "--prompt", "x"), "is an encoder"),
        (("--store", str(tmp_path / "none"), "--feature", "0", "--strength", "1", "--prompt", "x"), "not a labeler store"),
    ]
    for args, message in cases:
        out = run(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert message in " ".join(out.stderr.split()) and "Traceback" not in out.stderr, out.stderr
