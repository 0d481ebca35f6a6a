"""No input gets a 5xx from the API or the pages.

Two sweeps: schemathesis over every operation of the OpenAPI document (positive and negative
data, in-process ASGI transport), and a hand-written sweep over every route the app serves,
pages, login and forms included (they are not in the OpenAPI document): each path parameter,
query parameter and body field in turn set to integer, string and size extremes while the
others stay valid, so the extreme reaches the code behind validation.  Plus the exact requests
that answered 500 before (issue #16)."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from .conftest import WRITE_KEY

HUGE = 99999999999999999999
INTS = [0, -1, 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, HUGE, 10**400]
STRINGS = ["", " ", "a" * 5000, "\x00", "%00", "..%2F..%2Fetc", "é😀\u202e", "' OR 1=1 --", "<script>x</script>",
           "NaN", "inf", "-inf", "1e309", "-0", "0:1000000000", "all", ",", "::", "1,,2", "0x10", "true", "null"]
JSON_VALUES = [*INTS, *STRINGS, None, True, [], {}, [HUGE], [-1], list(range(1001)), 1e308, -1e308, 0.5]
RAW_BODIES = [b"", b"null", b"[]", b"{}", b'"x"', b"{", b"\xff\xfe\x00", b'{"a": 1e999999}', b"[" * 5000,
              b'{"features": "0:30000000", "store_path": "/"}']


@pytest.fixture
def api_schema(api):
    client, _, _ = api
    return schemathesis.openapi.from_asgi("/openapi.json", client.app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    case.call_and_validate(headers={"X-API-Key": WRITE_KEY}, checks=[not_a_server_error])


def _valid(repo, sae_id, job_id: int) -> dict:
    """A valid value for each path parameter, and a valid body for each route that takes one."""
    info = repo.catalog.sae(sae_id)
    target = {"model": info.model, "sae": info.sae, "feature": 1}
    return {
        "path": {"model": info.model, "sae": info.sae, "index": "1", "job_id": str(job_id)},
        "json": {
            "/v1/features/{model}/{sae}/batch": {"indices": [1, 2]},
            "/v1/jobs": {"model": info.model, "sae": info.sae, "features": "0:2"},
            "/v1/steer": {**target, "prompt": "I think", "strength": 1.0, "max_new_tokens": 2, "temperature": 0},
            "/v1/activations": {**target, "text": "I think"},
        },
        "form": {
            "/features/{model}/{sae}/{index}/steer": {"prompt": "I think", "mode": "add", "value": "1",
                                                       "max_new_tokens": "2", "temperature": "0",
                                                       "api_key": WRITE_KEY},
            "/features/{model}/{sae}/{index}/activations": {"text": "I think"},
            "/login": {"key": WRITE_KEY, "next": "/"},
        },
    }


def _query_names(dependant) -> list[str]:
    """Every query parameter of a route, its dependencies' (pagination) included."""
    names = [f.alias for f in dependant.query_params]
    for sub in dependant.dependencies:
        names += [n for n in _query_names(sub) if n not in names]
    return names


def _routes(app):
    """The app's routes, those of included routers one by one (FastAPI keeps them grouped)."""
    for route in app.routes:
        if hasattr(route, "effective_route_contexts"):
            yield from route.effective_route_contexts()
        else:
            yield route


def _cases(app, valid: dict):
    """(method, path template, path values, query, body kwargs) for every route and extreme."""
    from urllib.parse import urlencode

    for route in _routes(app):
        methods = sorted(getattr(route, "methods", None) or {"GET"})
        params = getattr(route, "param_convertors", None) or {}
        query = _query_names(route.dependant) if getattr(route, "dependant", None) else []
        for method in (m for m in methods if m in ("GET", "POST")):
            base_path = {p: valid["path"][p] for p in params}
            json_body = valid["json"].get(route.path)
            form = valid["form"].get(route.path)
            body = ({"json": json_body} if json_body is not None else
                    {"content": urlencode(form), "headers": {"content-type": "application/x-www-form-urlencoded"}}
                    if form is not None else {})
            yield method, route.path, base_path, {}, body
            for p in params:
                for v in [*INTS, *STRINGS]:
                    yield method, route.path, {**base_path, p: str(v)}, {}, body
            for q in query:
                for v in [*INTS, *STRINGS]:
                    yield method, route.path, base_path, {q: str(v)}, body
            if method != "POST":
                continue
            for raw in RAW_BODIES:
                yield method, route.path, base_path, {}, {"content": raw, "headers": {"content-type": "application/json"}}
            for field in json_body or {}:
                for v in JSON_VALUES:
                    yield method, route.path, base_path, {}, {"content": json.dumps({**json_body, field: v}),
                                                              "headers": {"content-type": "application/json"}}
            for field in form or {}:
                for v in [*INTS, *STRINGS]:
                    yield method, route.path, base_path, {}, {
                        "content": urlencode({**form, field: str(v)}),
                        "headers": {"content-type": "application/x-www-form-urlencoded"}}


def _url(template: str, values: dict) -> str:
    from urllib.parse import quote

    for k, v in values.items():
        template = template.replace("{" + k + "}", quote(v, safe=""))
    return template


def _sweep(client, valid: dict, key: str | None) -> tuple[int, set, list]:
    """Every case once, with ``key`` as X-API-Key (None: none): (requests, routes, 5xx answers)."""
    errors, n, routes = [], 0, set()
    for method, template, path, query, body in _cases(client.app, valid):
        headers = {**({"X-API-Key": key} if key else {}), **body.get("headers", {})}
        kwargs = {k: v for k, v in body.items() if k != "headers"}
        r = client.request(method, _url(template, path), params=query, headers=headers, **kwargs)
        n += 1
        routes.add((method, template))
        if r.status_code >= 500:
            errors.append((method, _url(template, path)[:120], query, str(kwargs)[:120], r.status_code, r.text[:200]))
    client.cookies.clear()  # a successful /login case leaves one
    return n, routes, errors


def test_every_route_with_extremes_and_the_reported_requests(api):
    from fastapi.testclient import TestClient

    from labeler.runs.spec import LabelSpec, make_job_spec

    client, repo, sae_id = api
    runner = client.app.state.runner
    job_id = runner.create_job(make_job_spec(repo.catalog.sae(sae_id).store_path, LabelSpec(explainer="baseline"),
                                             runner.settings), [1])
    valid = _valid(repo, sae_id, job_id)
    b = f"{valid['path']['model']}/{valid['path']['sae']}"
    settings = client.app.state.settings
    with TestClient(client.app, raise_server_exceptions=False) as sweep:
        for url, kwargs in ((f"/features/{b}/9223372036854775808", {}), (f"/features/{b}?page={HUGE}", {}),
                            (f"/v1/features/{b}/batch", {"json": {"indices": [HUGE]}})):  # 500 before (#16)
            r = sweep.request("POST" if kwargs else "GET", url, **kwargs)
            assert r.status_code == 422, (url, r.status_code, r.text[:300])
        n, routes, errors = _sweep(sweep, valid, WRITE_KEY)
        settings.api_read_key = "fuzz-read-key"  # reads keyed, and this visitor has no key: 401s, login pages
        try:
            n2, _, errors2 = _sweep(sweep, valid, None)
        finally:
            settings.api_read_key = None
    errors += errors2
    print(f"\nhand-written sweep: {len(routes)} routes, {n + n2} requests, {len(errors)} answered 5xx")
    assert not errors, f"{len(errors)} of {n + n2} requests answered 5xx:\n" + "\n".join(map(str, errors[:30]))
    assert len(routes) >= 25  # every route: API, pages, forms, login, export, steering, jobs
