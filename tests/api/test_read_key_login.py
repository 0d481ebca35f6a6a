"""The HTML pages with LABELER_API_READ_KEY set: a browser cannot send the header, so a login
form or a link's ?key= puts the key in an HttpOnly, SameSite=Strict cookie that reads accept.
In-process for the HTTP details, then in a real headless Chromium against `labeler serve`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from labeler.core.config import Settings

from .conftest import WRITE_KEY, populate

READ_KEY = "read-key-for-pages"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture
def keyed(sqlite_url, tiny_store_path, tmp_path):
    from fastapi.testclient import TestClient

    from labeler.api.app import create_app
    from labeler.db import Repository

    repo = Repository.open(sqlite_url)
    sae_id = populate(repo, tiny_store_path)
    info = repo.catalog.sae(sae_id)
    app = create_app(Settings(api_read_key=READ_KEY, api_write_key=WRITE_KEY, data_dir=tmp_path), repo=repo)
    with TestClient(app) as client:
        yield client, f"/features/{info.model}/{info.sae}"
    repo.close()


def test_key_in_the_address_becomes_a_strict_httponly_cookie(keyed):
    client, page = keyed
    r = client.get(f"{page}/1", follow_redirects=False)
    assert r.status_code == 401 and 'id="login-form"' in r.text and f'value="{page}/1"' in r.text
    assert client.get(f"/v1{page}/1").status_code == 401  # the API without a key: JSON 401 as before

    r = client.get(f"{page}/1?contexts=3&key={READ_KEY}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"{page}/1?contexts=3"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"labeler_key={READ_KEY};") and "HttpOnly" in cookie
    assert re.search(r"SameSite=strict", cookie, re.I) and "Path=/" in cookie
    assert client.get(f"{page}/1").status_code == 200  # the cookie now rides along
    assert client.get(f"/v1{page}/1").status_code == 200  # and the API accepts it like the header
    # writes never take the cookie: it would ride along with requests the user did not make
    assert client.post("/v1/jobs", json={"model": "m", "sae": "s", "features": "0:1"}).status_code == 401

    client.cookies.clear()
    r = client.get(f"{page}?key=wrong", follow_redirects=False)
    assert r.status_code == 401 and "not valid" in r.text and "set-cookie" not in r.headers


def test_login_form_sets_the_cookie_and_never_redirects_off_site(keyed):
    client, page = keyed
    r = client.post("/login", content=f"key=wrong&next={page}", follow_redirects=False)
    assert r.status_code == 401 and 'id="login-error"' in r.text
    r = client.post("/login", content=f"key={READ_KEY}&next=//evil.example/x", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    r = client.post("/login", content=f"key={WRITE_KEY}&next={page}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == page
    assert client.get(page).status_code == 200
    assert client.get("/logout", follow_redirects=False).status_code == 303
    client.cookies.clear()
    assert client.get(page).status_code == 401


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_a_real_browser_reads_keyed_pages(sqlite_url, tiny_store_path, tmp_path):
    from labeler.db import Repository
    from labeler.testing.api_process import api_process
    from tests.steering.test_browser import Browser

    repo = Repository.open(sqlite_url)
    info = repo.catalog.sae(populate(repo, tiny_store_path))
    repo.close()
    env = {"LABELER_API_READ_KEY": READ_KEY, "LABELER_DATA_DIR": str(tmp_path / "data")}
    with api_process(sqlite_url, log=tmp_path / "server.log", env=env) as base:
        page = f"{base}/features/{info.model}/{info.sae}"
        browser = Browser(tmp_path / "profile")
        try:
            html = browser.open(f"{page}/1")  # no key yet: the login form, not a JSON error
            assert 'id="login-form"' in html
            html = browser.submit("login-form", {"key": READ_KEY})
            assert browser.evaluate("location.href") == f"{page}/1"
            assert "Golden Gate Bridge" in html
            assert browser.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read the key

            fresh = Browser(tmp_path / "profile2")
            try:
                html = fresh.open(f"{page}/2?key={READ_KEY}")
                assert fresh.evaluate("location.href") == f"{page}/2"  # the key left the address
                assert "Python function definitions" in html
                assert "Golden Gate Bridge" in fresh.open(f"{page}/1")  # the cookie, not the link
            finally:
                fresh.close()
        finally:
            browser.close()
