"""The feature page's steering panel and "activations on your text" box in a real headless
Chromium against a real `labeler serve`: the browser fills the forms, submits them and renders
what the server answered.

The pages have no scripts; the test drives the browser through the DevTools protocol over
``--remote-debugging-pipe`` (JSON messages separated by NUL bytes on fds 3 and 4), which needs
no client library.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from html import unescape
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium); "
                                                "the feature-page browser tests need it"),
]
WRITE_KEY = "browser-key"


class Browser:
    """One headless Chromium page, driven over the DevTools pipe."""

    def __init__(self, profile: Path):
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def fds() -> None:  # the DevTools pipe is fds 3 (commands in) and 4 (answers out)
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
             "--hide-scrollbars", "--window-size=1200,1800", f"--user-data-dir={profile}",
             "--remote-debugging-pipe", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=fds, close_fds=False)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []
        target = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]
        self.call("Page.enable", session=True)

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer")
            import select

            ready, _, _ = select.select([self._from_child], [], [], 0.5)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, timeout: float = 60, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        while True:
            answer = self._read(timeout)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, event: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == event:
                    return self.events.pop(i)
            self.events.append(self._read(max(0.1, deadline - time.monotonic())))

    def evaluate(self, expression: str):
        out = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return out["result"].get("value")

    def open(self, url: str) -> str:
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")
        return self.html()

    def submit(self, form: str, fields: dict[str, str]) -> str:
        """Fill ``fields`` of the form with id ``form``, click its button, wait for the new page."""
        fill = "".join(f"f.elements[{json.dumps(k)}].value = {json.dumps(v)};" for k, v in fields.items())
        self.events.clear()
        self.evaluate(f"(() => {{ const f = document.getElementById({json.dumps(form)}); {fill} "
                      f"f.querySelector('button').click(); }})()")
        self.wait_for("Page.loadEventFired")
        return self.html()

    def html(self) -> str:
        return self.evaluate("document.documentElement.outerHTML")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_child)
        os.close(self._from_child)


@pytest.fixture(scope="module")
def server(steer_store, tmp_path_factory):
    from labeler.core.naming import slugify
    from labeler.db import Repository
    from labeler.examples.store import FeatureStore
    from labeler.testing.api_process import api_process

    root = tmp_path_factory.mktemp("steer-browser")
    url = f"sqlite:///{root / 'labeler.db'}"
    repo = Repository.open(url)
    store = FeatureStore(steer_store.path)
    repo.catalog.register_store(store)
    repo.close()
    env = {"LABELER_API_WRITE_KEY": WRITE_KEY, "LABELER_DEVICE": "cpu", "LABELER_DATA_DIR": str(root / "data")}
    with api_process(url, log=root / "server.log", env=env) as base:
        yield f"{base}/features/{slugify(store.model_name)}/{slugify(store.sae_name)}"


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def _text(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", html))


def test_steering_panel_and_text_box_work_in_a_browser(server, browser, steer_store, subject):
    page = browser.open(f"{server}/{steer_store.planted}")
    assert 'id="steer-form"' in page and 'id="act-form"' in page and "<script" not in page
    assert 'id="output-tokens"' in page and steer_store.word in _text(page)  # promoted tokens shown

    # steering: the panel posts, the server steers the real model, the page shows both columns
    page = browser.submit("steer-form", {"prompt": "I think that", "mode": "add", "value": "10",
                                         "max_new_tokens": "6", "temperature": "0", "api_key": WRITE_KEY})
    assert 'id="steer-result"' in page, _text(page)[-2000:]
    rows = browser.evaluate("Array.from(document.querySelectorAll('#steer-result tr')).slice(1)"
                            ".map(r => Array.from(r.cells).map(c => c.innerText))")
    assert len(rows) == 1 and all(cell.startswith("I think that") for cell in rows[0])
    plain, steered = rows[0]
    assert "return" in steered and "return" not in plain
    assert browser.evaluate("document.querySelector('#steer-form [name=prompt]').value") == "I think that"
    assert WRITE_KEY not in page
    shot = browser.screenshot()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000

    # a wrong key: the panel says why, nothing is generated
    page = browser.submit("steer-form", {"value": "3", "api_key": "wrong"})
    assert 'id="steer-result"' not in page
    assert "valid X-API-Key" in browser.evaluate("document.getElementById('steer-error').innerText")

    # the text box, on the page of a feature that fires on the text: its tokens highlighted
    text = "def f(x): return x"
    feature = max(range(subject.encoder.n_features), key=lambda f: max(subject.activations(text, f)[1]))
    tokens, values = subject.activations(text, feature)
    browser.open(f"{server}/{feature}")
    browser.submit("act-form", {"text": text})
    shown = browser.evaluate("Array.from(document.querySelectorAll('#act-result .tok'))"
                             ".map(t => [t.innerText, t.classList.contains('act'), t.title])")
    assert [t for t, _, _ in shown] == tokens
    assert [fired for _, fired, _ in shown] == [v > 0 for v in values] and any(v > 0 for v in values)
    assert [float(title) for _, fired, title in shown if fired] == pytest.approx([v for v in values if v > 0], rel=1e-2)
    keep = os.environ.get("SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / "feature-steering.png").write_bytes(shot)
