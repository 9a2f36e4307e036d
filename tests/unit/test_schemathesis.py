"""schemathesis against the live REST API: every operation of ``/v1/openapi.json``, with generated requests.

The API runs on a real eventlet WSGI server on 127.0.0.1 over the real core (``tests/lib/live_rest.py``). Each
operation gets at most MAX_EXAMPLES requests that fit its schema and as many that do not (the whole run stays well
under a minute); every answer must not be a 5xx, must have a documented status and content type, and its body must
match the documented schema. The document is the one the API serves (checked here too).
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from nlb_sdn.rest.openapi import openapi_document
from tests.lib.live_rest import live_rest

MAX_EXAMPLES = int(os.environ.get("NLB_SDN_SCHEMATHESIS_EXAMPLES", "10"))
"""Requests per operation and mode; raise it (environment) for a longer hunt."""
REQUEST_TIMEOUT = 10.0
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
SCHEMA = schemathesis.openapi.from_dict(openapi_document())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
NEGATABLE = [op for op in OPERATIONS if op.body or op.query]
"""Operations with a body or query parameters: those have requests that do not fit their schema (path parameters
are any non-empty text)."""
CASES = [(op, GenerationMode.POSITIVE) for op in OPERATIONS] + [(op, GenerationMode.NEGATIVE) for op in NEGATABLE]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with live_rest() as base:
        yield base


def test_the_live_api_serves_the_document(base_url: str) -> None:
    with urllib.request.urlopen(base_url + "/v1/openapi.json", timeout=REQUEST_TIMEOUT) as response:
        assert response.headers["Content-Type"] == "application/json"
        assert json.loads(response.read()) == openapi_document()


@pytest.mark.parametrize(("operation", "mode"), CASES, ids=[f"{op.label}-{mode}" for op, mode in CASES])
def test_live_api_conforms_to_its_openapi_document(operation: Any, mode: GenerationMode, base_url: str) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def conforms(case: Any) -> None:
        case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=REQUEST_TIMEOUT)

    conforms()
