"""Logging of the daemons (issue 13 item 2): timestamped, levelled text or JSON, a log file, quiet library warnings,
and the command lines' --log-level / --log-format / --log-file."""

from __future__ import annotations

import json
import logging
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nlb_sdn import cli, logs
from nlb_sdn.agent.cli import build_parser as agent_parser
from nlb_sdn.events import EventKind, EventLog, log_new_events
from nlb_sdn.router.cli import build_parser as router_parser

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR|DEBUG) [\w.]+: .+$")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put back the root logger, the last-resort handler and the warning filters each test changes."""
    root = logging.getLogger()
    handlers, level, last_resort = list(root.handlers), root.level, logging.lastResort
    with warnings.catch_warnings():
        yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.lastResort = last_resort


def test_text_lines_have_a_utc_timestamp_a_level_and_the_logger(tmp_path: Path) -> None:
    path = tmp_path / "nlb.log"
    logs.setup_logging("INFO", logs.LogFormat.TEXT, str(path))
    logging.getLogger("nlb_sdn.test").info("hello %s", "world")
    logging.getLogger("nlb_sdn.test").debug("not at INFO")
    [line] = path.read_text().splitlines()
    assert TEXT_LINE.match(line), line
    assert line.endswith("INFO nlb_sdn.test: hello world")


def test_json_lines_carry_time_level_logger_message_and_traceback(tmp_path: Path) -> None:
    path = tmp_path / "nlb.log"
    logs.setup_logging("DEBUG", logs.LogFormat.JSON, str(path))
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("nlb_sdn.test").exception("failed")
    [entry] = [json.loads(line) for line in path.read_text().splitlines()]
    assert entry["level"] == "ERROR" and entry["logger"] == "nlb_sdn.test" and entry["message"] == "failed"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", entry["time"])
    assert "ValueError: boom" in entry["exception"]


def test_library_warnings_are_silenced_and_ours_are_not() -> None:
    logs.silence_library_warnings()
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("ignore")
        logs.silence_library_warnings()
        warnings.warn_explicit("old API", DeprecationWarning, "dsa.py", 14, module="dns.dnssecalgs.dsa")
        warnings.warn_explicit("ours", UserWarning, "x.py", 1, module="nlb_sdn.x")
    assert [str(w.message) for w in caught] == ["ours"]


def test_eventlet_s_start_up_note_is_dropped_and_other_orphan_loggers_still_log(tmp_path: Path) -> None:
    path = tmp_path / "nlb.log"
    logs.setup_logging("INFO", logs.LogFormat.TEXT, str(path))
    logging.Logger("eventlet").error("1 RLock(s) were not greened, to fix this error make sure you run ...")
    logging.Logger("eventlet").error("something else")
    assert [line.split(": ", 1)[1] for line in path.read_text().splitlines()] == ["something else"]


def test_the_settings_go_to_the_controller_s_manager_through_the_environment(tmp_path: Path) -> None:
    path = str(tmp_path / "f.log")
    args = cli.build_parser().parse_args(
        ["controller", "--config", "x.yaml", "--log-level", "debug", "--log-format", "json", "--log-file", path]
    )
    env = {logs.LOG_ENV: logs.log_env(args)}
    assert json.loads(env[logs.LOG_ENV]) == {"level": "DEBUG", "format": "json", "file": path}
    assert logs.setup_from_env(env) and logging.getLogger().level == logging.DEBUG
    assert not logs.setup_from_env({})


def test_verbose_means_debug_unless_a_level_is_given() -> None:
    parse = cli.build_parser().parse_args
    assert logs.level_of(parse(["controller", "--config", "x"])) == "INFO"
    assert logs.level_of(parse(["controller", "--config", "x", "--verbose"])) == "DEBUG"
    assert logs.level_of(parse(["controller", "--config", "x", "--verbose", "--log-level", "WARNING"])) == "WARNING"


def test_nlb_sdn_controller_starts_the_manager_quiet_and_with_our_logging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("vips: []\n")
    started: list[list[str]] = []
    monkeypatch.setattr(cli.os, "execv", lambda _exe, argv: started.append(argv))
    monkeypatch.delenv("PYTHONWARNINGS", raising=False)
    monkeypatch.delenv(logs.LOG_ENV, raising=False)
    assert cli.main(["controller", "--config", str(config), "--log-level", "WARNING"]) == 0
    [argv] = started
    assert argv[:3] == [sys.executable, "-m", "nlb_sdn.framework"]
    assert "--nouse-stderr" in argv and argv[argv.index("--default-log-level") + 1] == str(logging.WARNING)
    assert cli.os.environ["PYTHONWARNINGS"] == "ignore"
    assert json.loads(cli.os.environ[logs.LOG_ENV])["level"] == "WARNING"


@pytest.mark.parametrize("parser", [agent_parser, router_parser])
def test_the_agent_and_router_take_the_log_flags(parser: Any) -> None:
    args = parser().parse_args(["run", "--config", "a.yaml", "--log-format", "json", "--log-file", "a.log"])
    assert (args.log_format, args.log_file, logs.level_of(args)) == (logs.LogFormat.JSON, "a.log", "INFO")


def test_new_events_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    events, log = EventLog(), logging.getLogger("nlb_sdn.test")
    events.record(EventKind.STATE, 1.0, "web", member="h1", before="active", after="drained")
    with caplog.at_level(logging.INFO, "nlb_sdn.test"):
        last = log_new_events(events, 0, log)
        assert log_new_events(events, last, log) == last
    [record] = caplog.records
    assert '"kind": "state"' in record.getMessage() and '"member": "h1"' in record.getMessage()
