"""`labeler label / explain / score` on bad input: a clear message and a non-zero exit, never
a traceback, a MemoryError or an exit 0 that hides that nothing worked (real subprocesses)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time


def run(args: list[str], db: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LABELER_DATABASE_URL=db)
    return subprocess.run([sys.executable, "-m", "labeler", *args], capture_output=True, text=True, env=env,
                          timeout=180)


def test_a_range_far_past_the_sae_is_refused_at_once(tiny_store, tmp_path):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    t0 = time.monotonic()
    out = run(["label", str(tiny_store), "--features", "0:1000000000"], db)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "out of range" in out.stderr and "32 features" in out.stderr and "Traceback" not in out.stderr
    assert time.monotonic() - t0 < 60  # main built a billion-int list first (MemoryError)


def test_an_empty_feature_range_is_refused_not_read_as_all(tiny_store, tmp_path):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    for verb in ("label", "explain", "score"):
        out = run([verb, str(tiny_store), "--features", ""], db)
        assert out.returncode == 2 and "feature range is empty" in out.stderr, (verb, out.stdout, out.stderr)
        assert "'all'" in out.stderr.replace("\n", " ")


def test_every_feature_failing_exits_non_zero_with_the_reason(tiny_store, alive_features, tmp_path):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    first = ",".join(map(str, alive_features[:2]))
    assert run(["label", str(store), "--features", first, "--scorers", "embedding"], db).returncode == 0
    out = run(["report", "--sae", "1", "--features", "", "--out", str(tmp_path / "r.html")], db)
    assert out.returncode == 2 and "feature range is empty" in out.stderr  # not "every feature"
    for shard in (store / "features").iterdir():  # the store goes bad after it was registered
        shard.write_bytes(os.urandom(shard.stat().st_size))
    rest = ",".join(map(str, alive_features[2:4]))
    for verb, extra in (("label", ["--scorers", "embedding"]), ("explain", []), ("score", ["--scorers", "embedding"])):
        out = run([verb, str(store), "--features", rest, *extra], db)
        assert out.returncode == 1, (verb, out.returncode, out.stdout[-1000:], out.stderr[-1000:])
        err = out.stderr.replace("\n", " ")
        assert "every feature" in err and "failed" in err and "Traceback" not in err, (verb, err)
    out = run(["label", str(store), "--features", rest, "--scorers", "embedding", "--json"], db)
    assert out.returncode == 1 and '"failed": 2' in out.stdout  # --json still prints the job
