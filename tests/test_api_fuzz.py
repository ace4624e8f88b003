"""The API fuzzed from its own OpenAPI description (issue 14): schemathesis generates valid and
invalid requests for every operation of /api/v1/openapi.json and sends them to the Django app in
process (WSGI); no answer may be a 5xx, and each answer must match the schema's responses.

Bounded for CI (a fixed number of examples per operation, derandomized so a run is repeatable);
runs on SQLite and PostgreSQL like the rest of the suite. The database is real and transactional
(requests go through the WSGI handler, which ends each request by closing unusable connections,
so the test cannot hold a transaction open around them)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from contacts import models as contact_models
from contacts.apikeys import api_key_create
from contacts.models import ApiKey, Contact
from core.queues import get_connection

EXAMPLES = 25  # per operation and per generation mode (valid and invalid data)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())


@pytest.fixture
def fuzz_key(transactional_db: None) -> str:
    """A key that may do everything (all scopes where keys have scopes), not rate limited here, and
    one known contact so the contact lookup also answers 200."""
    get_connection().flushdb()
    key, raw = api_key_create(name="fuzz", rate_limit_per_minute=1_000_000)
    scopes = getattr(contact_models, "ApiScope", None)
    if scopes is not None:
        ApiKey.objects.filter(pk=key.pk).update(scopes=list(scopes.values))
    Contact.objects.create(email="fuzz@example.com", first_name="Fuzz")
    return raw


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_request_the_schema_allows_or_forbids_is_a_server_error(case: Any, fuzz_key: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {fuzz_key}"}, checks=CHECKS)
