"""Config reload (issue 13 item 6): SIGHUP and ``POST /v1/config/reload`` re-read the file through one diff path.

An invalid file changes nothing (every problem logged, answered and recorded); a valid one applies the file's
``controller`` and ``fabric``, reports settings that need a restart, and keeps the store's VIPs unless ``vips=file``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from webob import Request

from nlb_sdn.apps.reload import EventReload, install_reload_signal, reload_config
from nlb_sdn.config import ConfigError, dump_config, parse_config
from nlb_sdn.config.reload import VipsSource, changed_keys, plan_reload, read_reload
from nlb_sdn.events import EventKind
from nlb_sdn.rest import make_app
from nlb_sdn.store import STATE_SUFFIX, StaleVersion
from tests.lib.configs import weighted_web_config
from tests.lib.rest import CoreBackend, call
from tests.lib.shell_double import ShellDouble

NEW_HOST = {"name": "h4", "ip": "10.0.0.14", "mac": "00:00:00:00:00:14", "switch": "s2", "port": 4}


def base_data() -> dict[str, Any]:
    """The plain data of the config file the tests start from: VIP web over h1..h3, REST off."""
    data = dump_config(weighted_web_config())
    data["controller"]["rest"] = {"enabled": False}
    return data


def write(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as the YAML config file at ``path``."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """The config file, written."""
    path = tmp_path / "nlb.yaml"
    write(path, base_data())
    return path


@pytest.fixture
def app(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A classifier app made as os-ken makes it from ``config_file``, not started (REST calls run at once)."""
    from nlb_sdn.apps.classifier import CONFIG_ENV, Classifier

    monkeypatch.setenv(CONFIG_ENV, str(config_file))
    return Classifier()


# --- the plan (pure) -----------------------------------------------------------------------------------------------


def test_plan_takes_the_files_fabric_and_controller_and_keeps_the_stores_vips() -> None:
    live = weighted_web_config()
    data = dump_config(live)
    data["fabric"]["hosts"].append(NEW_HOST)
    data["controller"]["switch_sync_period"] = 5.0
    data["controller"]["max_connections"] = 7
    data["vips"][0]["idle_timeout"] = 99
    plan = plan_reload(live, parse_config(data))
    assert plan.config.fabric.host("h4") is not None
    assert plan.config.controller.max_connections == 7
    assert plan.config.vips == live.vips  # the store's VIPs, not the file's
    assert plan.config.controller.switch_sync_period == live.controller.switch_sync_period
    assert plan.needs_restart == ("controller.switch_sync_period",)
    assert plan.changed == ("controller.max_connections", "fabric.hosts[h4]")


def test_plan_with_vips_from_the_file_takes_them() -> None:
    live = weighted_web_config()
    data = dump_config(live)
    data["vips"][0]["idle_timeout"] = 99
    plan = plan_reload(live, parse_config(data), VipsSource.FILE)
    assert plan.config.vips[0].idle_timeout == 99
    assert plan.changed == ("vips[web]",)
    assert plan.view(3, VipsSource.FILE) == {
        "version": 3,
        "vips": "file",
        "changed": ["vips[web]"],
        "needs_restart": [],
    }


def test_plan_refuses_a_fabric_the_stored_vips_do_not_fit() -> None:
    live = weighted_web_config()
    data = dump_config(live)
    data["fabric"]["hosts"] = [host for host in data["fabric"]["hosts"] if host["name"] != "h1"]
    data["vips"] = []
    with pytest.raises(ConfigError, match="not a host of the fabric"):
        plan_reload(live, parse_config(data))


def test_changed_keys_name_list_items_by_name_and_other_lists_whole() -> None:
    before = {"a": {"b": 1, "c": [1, 2]}, "items": [{"name": "x", "v": 1}, {"name": "y", "v": 1}]}
    after = copy.deepcopy(before)
    after["a"]["c"] = [1]
    after["items"] = [{"name": "y", "v": 2}, {"name": "z", "v": 1}]
    assert changed_keys(before, after) == ["a.c", "items[x]", "items[y]", "items[z]"]
    assert changed_keys(before, before) == []


def test_read_reload_names_every_problem_with_line_and_column(config_file: Path) -> None:
    data = base_data()
    data["controller"]["max_connections"] = "many"
    data["fabric"]["hosts"][0]["port"] = 0
    write(config_file, data)
    with pytest.raises(ConfigError) as caught:
        read_reload(config_file, weighted_web_config())
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"{config_file}:") and line.split(":")[1].isdigit() for line in lines)


# --- the app: one diff path, the store, the event log -------------------------------------------------------------


def test_reload_applies_a_fabric_change_and_records_it(app: Any, config_file: Path) -> None:
    data = base_data()
    data["fabric"]["hosts"].append(NEW_HOST)
    write(config_file, data)
    version = app.state.version
    view = app.api.reload_config(VipsSource.STORE)
    assert view == {"version": version, "vips": "store", "changed": ["fabric.hosts[h4]"], "needs_restart": []}
    assert app.lb.config.fabric.host("h4") is not None
    assert app.lb.ctx.fabric.member_mac("10.0.0.14", "") == "00:00:00:00:00:14"  # the core took the new fabric
    [event] = app.lb.events.select(kind=EventKind.CONFIG_RELOAD)
    assert event.detail["outcome"] == "applied" and event.detail["changed"] == ["fabric.hosts[h4]"]


def test_an_invalid_file_changes_nothing_and_is_logged(
    app: Any, config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = app.lb.config
    data = base_data()
    data["fabric"]["hosts"].append(NEW_HOST)
    data["controller"]["lbu_id"] = "one"
    write(config_file, data)
    with caplog.at_level(logging.ERROR, "nlb_sdn.classifier"), pytest.raises(ConfigError):
        app.api.reload_config(VipsSource.STORE)
    assert app.lb.config is before
    assert "controller.lbu_id" in caplog.text and "nothing changed" in caplog.text
    [event] = app.lb.events.select(kind=EventKind.CONFIG_RELOAD)
    assert event.detail["outcome"] == "invalid"
    assert event.detail["problems"] == ["controller.lbu_id: Input should be a valid integer"]


def test_a_restart_setting_keeps_its_live_value_and_is_warned(
    app: Any, config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = base_data()
    data["controller"]["openflow"] = {"port": 6654}
    write(config_file, data)
    with caplog.at_level(logging.WARNING, "nlb_sdn.classifier"):
        view = app.api.reload_config(VipsSource.STORE)
    assert view["needs_restart"] == ["controller.openflow.port"] and view["changed"] == []
    assert app.lb.config.controller.openflow.port == 6653
    assert "controller.openflow.port changed" in caplog.text


def test_the_store_keeps_its_vips_by_default(app: Any, config_file: Path) -> None:
    data = base_data()
    data["vips"][0]["idle_timeout"] = 99
    write(config_file, data)
    version = app.state.version
    assert app.api.reload_config(VipsSource.STORE)["changed"] == []
    assert app.lb.config.vips[0].idle_timeout == 15
    assert app.state.version == version


def test_vips_from_the_file_are_stored_as_the_next_version(app: Any, config_file: Path) -> None:
    data = base_data()
    data["vips"][0]["idle_timeout"] = 99
    write(config_file, data)
    version = app.state.version
    view = app.api.reload_config(VipsSource.FILE, version)
    assert view["version"] == version + 1 and view["changed"] == ["vips[web]"]
    assert app.lb.config.vips[0].idle_timeout == 99
    stored = json.loads(Path(f"{config_file}{STATE_SUFFIX}").read_text())
    assert stored["version"] == version + 1 and stored["vips"][0]["idle_timeout"] == 99


def test_a_stale_if_match_changes_nothing(app: Any, config_file: Path) -> None:
    data = base_data()
    data["vips"][0]["idle_timeout"] = 99
    write(config_file, data)
    before = app.lb.config
    with pytest.raises(StaleVersion):
        reload_config(app, str(config_file), VipsSource.FILE, expected=app.state.version + 5)
    assert app.lb.config is before


def test_sighup_only_posts_a_reload_event(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    posted: list[Any] = []
    monkeypatch.setattr(app, "post", posted.append)
    previous = signal.getsignal(signal.SIGHUP)
    try:
        assert install_reload_signal(app)
        os.kill(os.getpid(), signal.SIGHUP)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert [type(event) for event in posted] == [EventReload]


def test_the_reload_event_reloads_and_survives_an_invalid_file(app: Any, config_file: Path) -> None:
    data = base_data()
    data["fabric"]["hosts"].append(NEW_HOST)
    write(config_file, data)
    app.on_reload(EventReload())
    assert app.lb.config.fabric.host("h4") is not None
    config_file.write_text("controller: [\n")
    app.on_reload(EventReload())
    assert app.lb.config.fabric.host("h4") is not None
    assert app.errors["config_reload"] == 1


# --- REST ------------------------------------------------------------------------------------------------------------


def test_rest_reload_answers_what_changed_with_the_etag(app: Any, config_file: Path) -> None:
    data = base_data()
    data["vips"][0]["idle_timeout"] = 99
    write(config_file, data)
    rest = make_app(app.api, app.lb.events)
    version = app.state.version
    response = call(rest, "POST", "/v1/config/reload?vips=file")
    assert response.status_code == 200, response.text
    assert response.json["changed"] == ["vips[web]"] and response.json["vips"] == "file"
    assert response.headers["ETag"] == f'"{version + 1}"'
    again = call(rest, "POST", "/v1/config/reload", {"vips": "store"})
    assert again.status_code == 200 and again.json["changed"] == []


def test_rest_reload_of_an_invalid_file_is_a_400_with_every_problem(app: Any, config_file: Path) -> None:
    data = base_data()
    data["controller"]["lbu_id"] = "one"
    data["fabric"]["hosts"][0]["port"] = 0
    write(config_file, data)
    response = call(make_app(app.api, app.lb.events), "POST", "/v1/config/reload")
    assert response.status_code == 400
    assert response.json["error"] == "invalid"
    detail = response.json["detail"]
    assert "controller.lbu_id" in detail and "fabric.hosts[c1].port" in detail and "nothing changed" in detail


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/config/reload?vips=all", None),
        ("/v1/config/reload?what=1", None),
        ("/v1/config/reload", {"vips": "all"}),
        ("/v1/config/reload", {"other": 1}),
        ("/v1/config/reload?vips=store", {"vips": "file"}),
    ],
)
def test_rest_reload_refuses_a_bad_choice(app: Any, path: str, body: Any) -> None:
    before = app.lb.config
    response = call(make_app(app.api), "POST", path, body)
    assert response.status_code == 400, response.text
    assert app.lb.config is before


def test_rest_reload_with_a_stale_if_match_is_a_412(app: Any) -> None:
    rest = make_app(app.api)
    request = Request.blank("/v1/config/reload", method="POST", headers={"If-Match": f'"{app.state.version + 1}"'})
    assert request.get_response(rest).status_code == 412


def test_core_backend_reload(config_file: Path) -> None:
    data = base_data()
    data["fabric"]["hosts"].append(NEW_HOST)
    write(config_file, data)
    lb = ShellDouble(weighted_web_config())
    response = call(make_app(CoreBackend(lb, str(config_file))), "POST", "/v1/config/reload")
    assert response.status_code == 200
    assert response.json["changed"] == ["fabric.hosts[h4]"]
    assert call(make_app(CoreBackend(lb)), "POST", "/v1/config/reload").status_code == 400


def test_sighup_cannot_be_installed_from_another_thread(app: Any) -> None:
    installed: list[bool] = []
    worker = threading.Thread(target=lambda: installed.append(install_reload_signal(app)))
    worker.start()
    worker.join(10)
    assert installed == [False]
