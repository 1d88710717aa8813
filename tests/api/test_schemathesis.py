"""Property-based tests from the API's own OpenAPI spec: no input gives a server error, and
every answer matches the documented status codes and schemas."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

pytestmark = pytest.mark.slow  # left out of `make test-fast`; `make test` runs it

schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(scope="session")
def api_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_never_answers_with_a_server_error(case):
    # An upload's bytes can be schema-valid (any binary) and still not the Datanet's format:
    # refusing those with 422 is right, so "schema-valid must be accepted" does not apply there.
    excluded = [positive_data_acceptance] if case.operation.path.endswith("/uploads") else []
    case.call_and_validate(excluded_checks=excluded)
