"""Config schema: good files load from YAML, TOML and JSON; bad ones name the file, the key and the reason."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nlb_sdn.cli import main as cli_main
from nlb_sdn.config import ConfigError, dump_config, load_config, parse_config

GOOD = """
controller: {lbu_id: 2, max_connections: 1000}
vips:
  - name: web
    address: 10.0.0.100
    port: 80
    members:
      - {name: h1, address: 10.0.0.11, port: 80, weight: 1}
      - {address: 10.0.0.12, port: 8080, weight: 3}
fabric:
  switches: [{name: s1, dpid: 1}]
  hosts:
    - {name: h1, ip: 10.0.0.11, mac: "00:00:00:00:00:11", switch: s1, port: 1}
    - {name: h2, ip: 10.0.0.12, mac: "00:00:00:00:00:12", switch: s1, port: 2}
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_yaml_loads_with_defaults(tmp_path):
    config = load_config(write(tmp_path, "lb.yaml", GOOD))
    vip = config.vips[0]
    assert vip.mode == "nat" and vip.protocol == "tcp" and vip.idle_timeout == 15
    assert vip.mac == "02:4e:0a:00:00:64"
    assert vip.members[1].name == "10.0.0.12:8080"
    assert config.controller.lbu_id == 2


def test_toml_and_json_load_the_same_model(tmp_path):
    config = load_config(write(tmp_path, "lb.yaml", GOOD))
    as_json = write(tmp_path, "lb.json", json.dumps(dump_config(config)))
    assert load_config(as_json) == config
    toml = write(tmp_path, "lb.toml", '[[vips]]\nname = "web"\naddress = "10.0.0.100"\nport = 80\n')
    assert load_config(toml).vips[0].name == "web"


@pytest.mark.parametrize(
    "mutation, key, reason",
    [
        (("vips", 0, "colour", "red"), "vips[web].colour", "unknown key"),
        (("vips", 0, "address", "10.0.0.300"), "vips[web].address", "not an IPv4 address"),
        (("vips", 0, "port", 70000), "vips[web].port", "less than or equal to 65535"),
        (("vips", 0, "mode", "dsr"), "vips[web].mode", "Input should be 'nat'"),
        (("controller", "max_connections", 0), "controller.max_connections", "greater than or equal to 1"),
        (("fabric", "hosts", 0, "mac", "zz"), "fabric.hosts[h1].mac", "String should match pattern"),
    ],
)
def test_bad_values_name_file_key_and_reason(tmp_path, mutation, key, reason):
    import yaml

    data = yaml.safe_load(GOOD)
    node = data
    for part in mutation[:-2]:
        node = node[part]
    node[mutation[-2]] = mutation[-1]
    path = write(tmp_path, "bad.yaml", yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.source == path
    assert err.value.key == key
    assert reason in err.value.reason


def test_semantic_errors(tmp_path):
    import yaml

    data = yaml.safe_load(GOOD)
    data["vips"].append(dict(data["vips"][0]))
    with pytest.raises(ConfigError, match="duplicate vip name 'web'"):
        parse_config(data, "x.yaml")
    data = yaml.safe_load(GOOD)
    data["vips"][0]["members"].append({"address": "10.0.0.99", "port": 80})
    with pytest.raises(ConfigError, match="not a host of the fabric"):
        parse_config(data, "x.yaml")
    data = yaml.safe_load(GOOD)
    data["vips"][0]["members"].append({"name": "h1", "address": "10.0.0.12", "port": 81})
    with pytest.raises(ConfigError, match="duplicate member name 'h1'"):
        parse_config(data, "x.yaml")


def test_unparseable_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(write(tmp_path, "bad.yaml", "vips: [\n"))
    with pytest.raises(ConfigError) as err:
        load_config(str(tmp_path / "absent.yaml"))
    assert err.value.key == "(file)"
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "list.yaml", "- 1\n"))


def test_check_config_command(tmp_path, capsys):
    assert cli_main(["check-config", write(tmp_path, "lb.yaml", GOOD)]) == 0
    assert "1 VIP services, 2 members" in capsys.readouterr().out
    bad = write(tmp_path, "bad.yaml", GOOD.replace("port: 80\n", "port: 80\n    extra: 1\n", 1))
    assert cli_main(["check-config", bad]) == 2
    assert f"{bad}:7:5: vips[web].extra: unknown key" in capsys.readouterr().err


def test_controller_refuses_a_bad_config_before_starting(tmp_path):
    bad = write(tmp_path, "bad.yaml", "vips: [{name: web, address: nope, port: 80}]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "nlb_sdn.cli", "controller", "--config", bad], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "vips[web].address: not an IPv4 address" in proc.stderr
