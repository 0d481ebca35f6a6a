"""Property-based fuzzing of every operation in the OpenAPI document (schemathesis, in-process
ASGI transport): whatever the input, the API answers without a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from .conftest import WRITE_KEY


@pytest.fixture
def api_schema(api):
    client, _, _ = api
    return schemathesis.openapi.from_asgi("/openapi.json", client.app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    case.call_and_validate(headers={"X-API-Key": WRITE_KEY}, checks=[not_a_server_error])
