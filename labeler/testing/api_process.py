"""`labeler serve` in a subprocess on a free port, for tests that drive it like a user (a real
browser, real HTTP)::

    with api_process(database_url, log=tmp / "server.log", env={"LABELER_API_WRITE_KEY": "k"}) as base:
        urllib.request.urlopen(base + "/health")
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def labeler_process(args: list[str], *, ready_url: str, log: Path, env: dict[str, str] | None = None,
                    start_timeout_s: float = 60.0) -> Iterator[None]:
    """``python -m labeler ARGS`` in a subprocess, yielded once ``ready_url`` answers; stopped
    afterwards.  RuntimeError with its log when it exits or does not come up in time."""
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "labeler", *args], stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"labeler {args[0]} exited: {Path(log).read_text()}")
            try:
                urllib.request.urlopen(ready_url, timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"labeler {args[0]} did not start: {Path(log).read_text()}") from None
                time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@contextmanager
def api_process(database_url: str, *, log: Path, env: dict[str, str] | None = None,
                start_timeout_s: float = 60.0) -> Iterator[str]:
    """Yields the server's base URL once ``/health`` answers; stops the server afterwards.
    RuntimeError with the server's log when it exits or does not come up in time."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with labeler_process(["serve", "--host", "127.0.0.1", "--port", str(port), "--url", database_url],
                         ready_url=base + "/health", log=log, env={"LABELER_DATABASE_URL": database_url, **(env or {})},
                         start_timeout_s=start_timeout_s):
        yield base
