"""Hypothesis settings and shared strategies of the property tests (``tests/unit/test_properties_*.py``).

The settings profile is chosen by the environment variable ``NLB_FUZZ_PROFILE`` when the test modules are
imported: ``ci`` (the default, 2,000 examples per property) or ``bench`` (100,000, what ``benchmarks/fuzz.py`` runs).
``NLB_FUZZ_EXAMPLES`` overrides the profile's count. Only the properties decorated with :data:`PROPERTY` follow
them; the other hypothesis tests keep hypothesis' defaults.
"""

from __future__ import annotations

import os
import types
from datetime import timedelta
from typing import Any, Literal, Union, get_args, get_origin

from hypothesis import HealthCheck, settings, strategies as st
from pydantic import BaseModel

PROFILE_ENV = "NLB_FUZZ_PROFILE"
EXAMPLES_ENV = "NLB_FUZZ_EXAMPLES"
CI_EXAMPLES = 2_000
BENCH_EXAMPLES = 100_000

_COMMON = {
    # No example database: CI runs start clean, and a fuzz run does not replay CI's failures as its own.
    "database": None,
    # A shared 2-core machine: one slow example is not a finding, a pathological one (a quadratic parse) is.
    "deadline": timedelta(seconds=2),
    "suppress_health_check": (HealthCheck.too_slow, HealthCheck.data_too_large),
    "print_blob": True,
}
settings.register_profile("ci", max_examples=CI_EXAMPLES, **_COMMON)
settings.register_profile("bench", max_examples=BENCH_EXAMPLES, **_COMMON)

PROFILE_NAME = os.environ.get(PROFILE_ENV, "ci")
EXAMPLES = int(os.environ.get(EXAMPLES_ENV) or settings.get_profile(PROFILE_NAME).max_examples)
"""Examples per property: the profile's, unless ``NLB_FUZZ_EXAMPLES`` says otherwise."""
PROPERTY = settings(settings.get_profile(PROFILE_NAME), max_examples=EXAMPLES)
"""The settings of every property: decorate a ``@given`` test with ``@PROPERTY``."""


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=3,
)
PLAUSIBLE = [
    0, 1, 2, 80, 65535, 65536, -1, 10_000, 1.5, True, False, None, "", "x", "web", "h1", "s1", "80",
    "10.0.0.100", "10.0.0.11", "0.0.0.0", "255.255.255.255", "00:00:00:00:00:11", "redis://127.0.0.1:6379/0",
]  # fmt: skip
"""Values that pass some of the schema's checks: the boundaries, addresses and names of a small lab."""


def _models_in(annotation: Any) -> tuple[list[type[BaseModel]], list[Any]]:
    """The models an annotation can hold (directly or as list items) and its literal values."""
    origin = get_origin(annotation)
    if origin is Literal:
        return [], list(get_args(annotation))
    if origin in (Union, types.UnionType, list):
        models: list[type[BaseModel]] = []
        literals: list[Any] = []
        for arg in get_args(annotation):
            more_models, more_literals = _models_in(arg)
            models += more_models
            literals += more_literals
        return models, literals
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation], []
    return [], []


def along(model: type[BaseModel], depth: int = 0) -> st.SearchStrategy[Any]:
    """Data shaped like ``model``: some of its keys (maybe a stray one too), each with a plausible or junk value."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for name, info in model.model_fields.items():
        models, literals = _models_in(info.annotation)
        value = st.sampled_from(PLAUSIBLE + literals) | json_values
        if models and depth < 2:
            nested = st.one_of(*(along(inner, depth + 1) for inner in models))
            value = nested | st.lists(nested, max_size=2) | value
        fields[name] = value
    stray = st.dictionaries(st.text(max_size=8), json_values, max_size=1)
    return st.builds(lambda known, extra: extra | known, st.fixed_dictionaries({}, optional=fields), stray)
