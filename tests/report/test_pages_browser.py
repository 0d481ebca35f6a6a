"""Feature pages in a real headless browser (Debian's chromium) against a real uvicorn server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.request
from html import unescape
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium); "
                                                "the feature-page browser tests need it"),
]


@pytest.fixture(scope="module")
def server(labeled_db, tmp_path_factory):
    from labeler.testing.api_process import api_process

    with api_process(labeled_db.url, log=tmp_path_factory.mktemp("server") / "server.log") as base:
        yield base


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
           "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def dump_dom(tmp_path: Path, url: str) -> str:
    res = _chromium(tmp_path, "--dump-dom", url)
    assert res.returncode == 0 and "<html" in res.stdout, res.stderr[-2000:]
    return res.stdout


def screenshot(tmp_path: Path, url: str, name: str, size: str = "1200,1600") -> Path:
    out = tmp_path / name
    res = _chromium(tmp_path, f"--screenshot={out}", f"--window-size={size}", url)
    assert out.exists(), res.stderr[-2000:]
    return out


def _text(dom: str) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", dom))


def test_feature_page_renders_explanation_contexts_stats_and_neighbours(server, labeled_db, tmp_path):
    from labeler.db import Repository

    index = labeled_db.features[0]
    repo = Repository.open(labeled_db.url)
    view = repo.reads.feature(labeled_db.sae_id, index)
    repo.close()
    assert view is not None and view.label is not None
    label = view.label.text
    assert label
    url = f"{server}/features/{labeled_db.model_slug}/{labeled_db.sae_slug}/{index}"
    dom = dump_dom(tmp_path, url)
    text = _text(dom)
    assert f"Feature #{index}" in text
    assert label in text  # the current label, rendered by the browser
    assert view.explanations
    for e in view.explanations:
        assert e.text in text  # every explanation with its scores
    assert "simulation" in text and "shuffled control" in text
    assert dom.count('class="tok act"') >= 3  # highlighted top contexts from the store
    assert 'aria-label="activation histogram"' in dom
    assert 'id="neighbours"' in dom  # nearest features by decoder cosine similarity
    neighbour_links = re.findall(rf'/features/{labeled_db.model_slug}/{labeled_db.sae_slug}/(\d+)"', dom)
    assert neighbour_links and str(index) not in neighbour_links
    assert not re.search(r'(src|href)="(https?:)?//', dom)  # no external assets

    shot = screenshot(tmp_path, url, "feature.png")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a real, non-blank render
    keep = os.environ.get("SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "feature.png")


def test_index_pages_browse_and_search(server, labeled_db, tmp_path):
    from labeler.db import Repository

    text = _text(dump_dom(tmp_path, f"{server}/"))
    assert labeled_db.sae_slug in text and "48" in text

    base = f"{server}/features/{labeled_db.model_slug}/{labeled_db.sae_slug}"
    browse = dump_dom(tmp_path, base)
    assert "page 1 of 1" in _text(browse)
    assert len(re.findall(r'<tr><td class="num"><a href="/features/', browse)) == 48

    # search: a word of some feature's label must find that feature
    repo = Repository.open(labeled_db.url)
    items = repo.reads.list_features(labeled_db.sae_id, has_label=True, limit=100)
    repo.close()
    word, target = next((w, it.index) for it in items
                        for w in re.findall(r"[A-Za-z]{3,}", it.label.text if it.label else ""))
    dom = dump_dom(tmp_path, f"{base}?q={word}")
    found = re.findall(rf'href="/features/{labeled_db.model_slug}/{labeled_db.sae_slug}/(\d+)"', dom)
    assert str(target) in found, (word, target, found)
    assert re.search(r"\d+ features? match", _text(dom))
    assert f'value="{word}"' in dom  # the form keeps the query

    none = _text(dump_dom(tmp_path, f"{base}?q=zzzqqqxxyy"))
    assert "0 features match" in none and "no features match this search" in none

    shot = screenshot(tmp_path, f"{base}?q={word}", "search.png", size="1200,900")
    assert shot.read_bytes()[:4] == b"\x89PNG"


def test_pages_give_404_with_a_reason(server, labeled_db):
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{server}/features/{labeled_db.model_slug}/{labeled_db.sae_slug}/9999")
    assert e.value.code == 404 and b"has no feature 9999" in e.value.read()
