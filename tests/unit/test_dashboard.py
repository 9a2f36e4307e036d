"""The live dashboard at ``/ui/`` (docs/dashboard.md): its files, ``GET /v1/fabric``, and the page itself in headless
Chromium over the real core on a live server (skipped only where Chromium or its driver is not installed).

The browser test loads the page, checks that the browser logged no error, that the page shows the VIP and its
members, then drains a member through the API and waits for the page to show it; it saves a screenshot to
``$NLB_SDN_ARTIFACTS/dashboard.png`` (``artifacts/`` of the repository by default) and prints its path.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nlb_sdn.config import dump_config, parse_config
from nlb_sdn.dam.atoms import session_key
from nlb_sdn.rest import make_app
from nlb_sdn.rest.fabric import fabric_view
from tests.lib.live_rest import ROOT, live_rest
from tests.lib.polling import poll_until
from tests.lib.rest import call
from tests.unit.test_properties_rest import CoreBackend
from tests.unit.test_rest_security import READER_TOKEN, request, secured_backend

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SHOW_TIMEOUT = 5.0
"""How soon the page must show a change made through the API (it polls every second)."""
PAGE_TIMEOUT = 10.0


# --- the files and the fabric view ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, content_type, marker",
    [
        ("/ui/", "text/html", b'<svg id="fabric"'),
        ("/ui/index.html", "text/html", b"app.js"),
        ("/ui/app.js", "text/javascript", b"/v1/fabric"),
        ("/ui/style.css", "text/css", b"#fabric"),
    ],
)
def test_the_dashboard_files_are_served(path: str, content_type: str, marker: bytes) -> None:
    response = call(make_app(CoreBackend()), "GET", path)
    assert response.status_int == 200, response.body
    assert response.content_type == content_type
    assert marker in response.body


@pytest.mark.parametrize("path", ["/ui/nothing.js", "/ui/__init__.py", "/ui/..%2Fapp.py", "/ui/.hidden.css", "/ui"])
def test_anything_else_under_ui_is_404(path: str) -> None:
    response = call(make_app(CoreBackend()), "GET", path)
    assert response.status_int == 404 and response.json["error"] == "not_found"


def test_with_tokens_the_page_needs_none_but_the_api_does() -> None:
    app = make_app(secured_backend())
    assert request(app, "GET", "/ui/").status_int == 200
    assert request(app, "GET", "/ui/app.js").status_int == 200
    assert request(app, "GET", "/v1/fabric").status_int == 401
    assert request(app, "GET", "/v1/fabric", READER_TOKEN).status_int == 200
    assert request(app, "POST", "/ui/").status_int == 401


def test_the_page_sends_the_token_kept_in_session_storage() -> None:
    script = call(make_app(CoreBackend()), "GET", "/ui/app.js").text
    assert "sessionStorage" in script and '"Bearer "' in script


def test_the_fabric_view_marks_connected_switches_and_member_hosts() -> None:
    config = CoreBackend().current_config()
    view = fabric_view(config, [1])
    switches = {switch["name"]: switch for switch in view["switches"]}
    assert switches["s1"] == {"name": "s1", "dpid": 1, "connected": True, "master": config.controller.lbu_id}
    assert switches["s2"]["connected"] is False and switches["s2"]["master"] is None
    hosts = {host["name"]: host for host in view["hosts"]}
    assert "web/h1" in hosts["h1"]["members"] and hosts["c1"]["members"] == []
    assert len(view["links"]) == len(config.fabric.links)


def test_get_fabric_shows_the_switches_the_shell_reports() -> None:
    class ShellBackend(CoreBackend):
        def stats(self) -> dict:
            return {**super().stats(), "switches": [2]}

    view = call(make_app(ShellBackend()), "GET", "/v1/fabric").json
    assert [switch["connected"] for switch in view["switches"]] == [False, True, False]


def test_a_new_host_member_shows_in_the_fabric() -> None:
    backend = CoreBackend()
    data = dump_config(backend.current_config())
    data["vips"][0]["members"].append({"name": "c1", "address": "10.0.0.1", "port": 80})
    backend.apply_config(parse_config(data, source="test"))
    hosts = {host["name"]: host for host in call(make_app(backend), "GET", "/v1/fabric").json["hosts"]}
    assert hosts["c1"]["members"] == ["web/c1"]


# --- the page in headless Chromium ----------------------------------------------------------------------------------


def artifact_path(name: str) -> Path:
    """Where a CI artifact goes: ``$NLB_SDN_ARTIFACTS`` or the repository's ``artifacts/``."""
    directory = Path(os.environ.get("NLB_SDN_ARTIFACTS") or ROOT / "artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromium-driver are not installed (CI installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def put_state(base: str, vip: str, member: str, state: str) -> dict[str, Any]:
    """Set a member's target state through the API; its state view."""
    body = json.dumps({"state": state}).encode()
    url = f"{base}/v1/vips/{vip}/members/{member}/state"
    put = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="PUT")
    with urllib.request.urlopen(put, timeout=5.0) as response:
        return dict(json.loads(response.read()))


def shown_text(driver: Any, selector: str) -> str | None:
    """The text of the page's first element matching ``selector``, None while it has none (read in one script:
    the page redraws every second, so element references go stale)."""
    script = "const found = document.querySelector(arguments[0]); return found ? found.textContent : null;"
    text = driver.execute_script(script, selector)
    return None if text is None else str(text)


def shown_state(driver: Any, member: str) -> str | None:
    """The state the page shows for ``vip/member``, None while it has no such row."""
    script = "const row = document.querySelector(arguments[0]); return row ? row.dataset.state : null;"
    state = driver.execute_script(script, f'tr[data-member="{member}"]')
    return None if state is None else str(state)


def severe_logs(driver: Any) -> list[dict[str, Any]]:
    """The browser's console errors so far."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_the_page_shows_the_fabric_the_vip_and_a_member_draining(browser: Any) -> None:
    with live_rest() as base:
        browser.get(base + "/ui/")
        assert poll_until(lambda: shown_state(browser, "web/h1"), SHOW_TIMEOUT, 0.1) == "active"
        assert (shown_text(browser, '[data-vip="web"] h3') or "").startswith("web 10.0.0.100:80/tcp")
        assert {shown_state(browser, f"web/{name}") for name in ("h1", "h2", "h3")} == {"active"}
        assert shown_text(browser, '#fabric [data-switch="s1"]') is not None
        assert shown_text(browser, '#fabric g.member-host[data-host="h1"]') is not None
        assert session_key("client_ip", "web@10.0.0.1") in (shown_text(browser, "#sessions") or "")
        assert put_state(base, "web", "h2", "draining")["target"] == "draining"
        assert poll_until(lambda: shown_state(browser, "web/h2") == "draining", SHOW_TIMEOUT, 0.1)
        assert poll_until(lambda: "rest_edit" in (shown_text(browser, "#events") or ""), SHOW_TIMEOUT, 0.1)
        screenshot = artifact_path("dashboard.png")
        assert browser.save_screenshot(str(screenshot))
        print(f"dashboard screenshot: {screenshot}")
        assert severe_logs(browser) == []


def test_with_tokens_the_page_asks_for_one_and_keeps_it_for_the_tab(browser: Any) -> None:
    with live_rest(reader_token=READER_TOKEN) as base:
        browser.get(base + "/ui/")
        assert poll_until(lambda: browser.execute_script("return !document.getElementById('login').hidden"), 5.0, 0.1)
        assert shown_state(browser, "web/h1") is None
        browser.execute_script("document.getElementById('token').value = arguments[0];", READER_TOKEN)
        browser.execute_script("document.getElementById('login').requestSubmit();")
        assert poll_until(lambda: shown_state(browser, "web/h1"), SHOW_TIMEOUT, 0.1) == "active"
        assert browser.execute_script("return sessionStorage.getItem('nlb_sdn_token');") == READER_TOKEN
        browser.refresh()
        assert poll_until(lambda: shown_state(browser, "web/h1"), SHOW_TIMEOUT, 0.1) == "active"
        errors = [entry for entry in severe_logs(browser) if "401" not in entry["message"]]
        assert errors == []
