"""Properties of the config loader: any data is a Config or a ConfigError, and valid configs round-trip.

Hostile data is generated along the schema (known keys with arbitrary values, nested as the models nest) so that it
reaches the deep validators, not only the top-level type check; files are fed through ``load_config`` as YAML, JSON
and TOML text, mangled or not.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, strategies as st

from nlb_sdn.config import Config, ConfigError, dump_config, load_config, parse_config
from tests.lib.properties import PROPERTY, along, json_values

config_like = along(Config) | json_values


def _text(data: Any, syntax: str) -> str:
    """``data`` written in ``syntax`` (YAML, JSON or a TOML-ish rendering that may well not parse)."""
    if syntax == "json":
        return json.dumps(data)
    if syntax == "toml":
        return (
            "\n".join(f"{key} = {json.dumps(value)}" for key, value in data.items()) if isinstance(data, dict) else ""
        )
    return yaml.safe_dump(data)


MANGLES = st.none() | st.tuples(st.floats(0, 1), st.text(max_size=6), st.integers(0, 3))
"""Nothing, or where (as a fraction of the text), what and how many characters to replace."""


def mangled(text: str, mangle: tuple[float, str, int] | None) -> str:
    """``text``, or ``text`` with a few characters replaced or inserted somewhere."""
    if mangle is None:
        return text
    where, what, count = mangle
    position = int(where * len(text))
    return text[:position] + what + text[position + count :]


@PROPERTY
@given(data=config_like, syntax=st.sampled_from(["yaml", "json", "toml"]), mangle=MANGLES)
def test_any_data_or_file_is_a_config_or_a_config_error(
    data: Any, syntax: str, mangle: tuple[float, str, int] | None
) -> None:
    try:
        config = parse_config(data, source="fuzz")
    except ConfigError as exc:
        assert exc.source == "fuzz" and exc.key and exc.reason
    else:
        assert isinstance(config, Config)
    _load_or_config_error(syntax, mangled(_text(data, syntax), mangle))


NESTED = "[" * 3000 + "]" * 3000


@pytest.mark.parametrize(
    "syntax, text",
    [("yaml", NESTED), ("json", NESTED), ("toml", f"a = {NESTED}"), ("yaml", "vips: &a [*a]\n")],
    ids=["nested-yaml", "nested-json", "nested-toml", "self-referencing-yaml"],
)
def test_hostile_config_files_are_config_errors(syntax: str, text: str) -> None:
    """Each parser recurses per nesting level: past Python's recursion limit that was a RecursionError."""
    _load_or_config_error(syntax, text)


FILES = tempfile.TemporaryDirectory(prefix="nlb-config-fuzz-")
"""Where the generated config files are written (one per syntax, overwritten by every example)."""


def _load_or_config_error(syntax: str, text: str) -> None:
    """Write ``text`` as a config file in ``syntax`` and load it: a Config, or a ConfigError naming the file."""
    path = Path(FILES.name) / f"config.{syntax}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert exc.source == str(path) and exc.key and exc.reason
    else:
        assert isinstance(config, Config)


addresses = st.integers(1, 200).map(lambda n: f"10.1.{n // 100}.{n % 100 + 1}")
ports = st.integers(1, 0xFDFF)
member_fields = st.fixed_dictionaries(
    {"address": addresses, "port": ports},
    optional={
        "weight": st.integers(0, 10_000),
        "state": st.sampled_from(["active", "draining", "inactive"]),
        "mac": st.binary(min_size=6, max_size=6).map(lambda raw: raw.hex(":")),
    },
)


vip_services = st.lists(st.tuples(addresses.map(lambda a: "10.9" + a[4:]), ports), unique=True, max_size=2)
vip_members = st.lists(member_fields, unique_by=lambda m: (m["address"], m["port"]), max_size=3)
vip_options = st.fixed_dictionaries(
    {},
    optional={
        "dispatch": st.sampled_from(["controller", "switch"]),
        "idle_timeout": st.integers(1, 65535),
        "hard_timeout": st.integers(0, 65535),
        "allotment": st.fixed_dictionaries({"scheme": st.sampled_from(["percent", "tokens"])}),
    },
)
controller_options = st.fixed_dictionaries(
    {},
    optional={
        "lbu_id": st.integers(0, 255),
        "max_connections": st.integers(1, 10**6),
        "rest": st.fixed_dictionaries({"port": st.integers(1, 65535)}),
    },
)


@st.composite
def valid_configs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid config: VIPs with distinct names and services, each with distinct members that have a MAC."""
    vips = []
    for index, (address, port) in enumerate(draw(vip_services)):
        members = draw(vip_members)
        for member in members:
            member.setdefault("mac", "02:00:00:00:00:01")
        vip = {"name": f"vip{index}", "address": address, "port": port, "members": members}
        vips.append(vip | draw(vip_options))
    return {"controller": draw(controller_options), "vips": vips}


@PROPERTY
@given(data=valid_configs())
def test_valid_configs_round_trip(data: dict[str, Any]) -> None:
    config = parse_config(data)
    dumped = dump_config(config)
    assert parse_config(dumped) == config
    assert dump_config(parse_config(dumped)) == dumped
    path = Path(FILES.name) / "valid.json"
    path.write_text(json.dumps(dumped))
    assert load_config(path) == config
