"""schemathesis against the live REST API: every operation of ``/v1/openapi.json``, with generated requests.

The API runs on a real eventlet WSGI server on 127.0.0.1 over the real core (``tests/lib/live_rest.py``). Each
operation gets at most MAX_EXAMPLES requests that fit its schema and as many that do not; then schemathesis' own
runner (``st run``) adds its examples, coverage (boundary values, wrong types, missing parameters) and stateful
(chains of calls linked by the answers) phases. The whole run stays under a minute. Every answer must not be a 5xx,
must have a documented status and content type, and its body must match the documented schema. The document is the
one the API serves (checked here too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
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
CLI = Path(sys.executable).with_name("st")
CLI_SEED = 1
CLI_TIMEOUT = 180.0
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


def test_schemathesis_runner_phases_find_nothing(base_url: str, tmp_path: Path) -> None:
    command = [
        str(CLI),
        "run",
        base_url + "/v1/openapi.json",
        "--checks",
        ",".join(check.__name__ for check in CHECKS),
        "--phases",
        "examples,coverage,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(CLI_SEED),
        "--workers",
        "1",
        "--request-timeout",
        str(REQUEST_TIMEOUT),
        "--no-color",
    ]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
