"""Config files as operators expect: line and column on every error, all errors at once, no duplicate keys, no empty
files, and ``check-config`` over several files."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlb_sdn.agent.config import load_agent_config
from nlb_sdn.cli import main as cli_main
from nlb_sdn.config import ConfigError, load_config

FABRIC = """fabric:
  switches: [{name: s1, dpid: 1}]
  hosts:
    - {name: h1, ip: 10.0.0.11, mac: "00:00:00:00:00:11", switch: s1, port: 1}
"""
TWO_BAD = (
    """vips:
  - name: web
    address: 10.0.0.100
    port: "80"
    members:
      - name: h1
        address: 10.0.0.11
        port: 80
        wieght: 2
"""
    + FABRIC
)


def write(tmp_path: Path, name: str, text: str) -> str:
    """Write ``text`` to ``name`` under ``tmp_path``; its path."""
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_every_problem_is_reported_with_its_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "lb.yaml", TWO_BAD)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    problems = {(p.key, p.position) for p in err.value.problems}
    assert ("vips[web].port", (4, 5)) in problems
    assert ("vips[web].members[h1].wieght", (9, 9)) in problems
    lines = str(err.value).splitlines()
    assert f"{path}:4:5: vips[web].port: Input should be a valid integer" in lines
    assert f"{path}:9:9: vips[web].members[h1].wieght: unknown key" in lines
    assert (err.value.key, err.value.position) == ("vips[web].port", (4, 5))


def test_a_missing_key_points_at_its_parent(tmp_path: Path) -> None:
    path = write(tmp_path, "lb.yaml", "vips:\n  - name: web\n    port: 80\n" + FABRIC)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == "vips[web].address" and err.value.position == (2, 5)


@pytest.mark.parametrize(
    "name, text, where",
    [
        ("dup.yaml", "vips: []\nfabric: {}\nvips: []\n", ":3:1: (file): duplicate key 'vips' (first at line 1)"),
        ("nested.yaml", "vips:\n  - {name: a, name: b}\n", ":2:15: (file): duplicate key 'name'"),
        ("dup.json", '{"vips": [], "vips": []}', ": (file): duplicate key 'vips'"),
        ("dup.toml", "vips = []\nvips = []\n", ": (file): cannot parse"),
    ],
)
def test_duplicate_keys_are_refused(tmp_path: Path, name: str, text: str, where: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(path + where)


@pytest.mark.parametrize("name, text", [("empty.yaml", ""), ("comments.yaml", "# nothing yet\n"), ("blank.yml", "\n")])
def test_an_empty_file_is_refused(tmp_path: Path, name: str, text: str) -> None:
    with pytest.raises(ConfigError, match="the file is empty"):
        load_config(write(tmp_path, name, text))
    with pytest.raises(ConfigError, match="the file is empty"):
        load_agent_config(write(tmp_path, "agent-" + name, text))


def test_a_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "vips:\n  - name: web\n    port: [80\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.position is not None and err.value.position[0] >= 3
    assert err.value.reason.startswith("cannot parse")
    json_path = write(tmp_path, "bad.json", '{\n  "vips": [,]\n}')
    with pytest.raises(ConfigError) as err:
        load_config(json_path)
    assert err.value.position == (2, 12)


def test_agent_config_errors_carry_positions(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.yaml", "host_id: h1\nbogus: 1\n")
    with pytest.raises(ConfigError) as err:
        load_agent_config(path)
    assert ("bogus", "unknown key", (2, 1)) in err.value.problems


def test_check_config_takes_several_files_and_reports_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "good.yaml", FABRIC)
    bad = write(tmp_path, "bad.yaml", TWO_BAD)
    empty = write(tmp_path, "empty.yaml", "")
    assert cli_main(["check-config", good, bad, empty]) == 2
    out, err = capsys.readouterr()
    assert f"{good}: ok" in out
    assert f"error: {bad}:4:5: vips[web].port:" in err
    assert f"error: {bad}:9:9: vips[web].members[h1].wieght: unknown key" in err
    assert f"error: {empty}: (file): the file is empty" in err
    assert cli_main(["check-config", good, good]) == 0
