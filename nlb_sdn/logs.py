"""Logging of every nlb_sdn daemon (controller, agent, router): timestamped, levelled lines, or JSON, to a file or
standard error, with library warnings silenced at start.

Each command line takes ``--log-level``, ``--log-format text|json`` and ``--log-file`` (:func:`add_log_arguments`)
and calls :func:`setup_logging`. The controller's manager runs in a fresh interpreter: ``nlb-sdn controller`` hands
the settings over in ``$NLB_SDN_LOG`` (:func:`log_env`), which ``python -m nlb_sdn.framework`` applies
(:func:`setup_from_env`) before the framework loads.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import sys
import time
import warnings
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

LOG_ENV = "NLB_SDN_LOG"
"""The environment variable carrying the log settings to the controller's manager process (JSON)."""
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
QUIET_AT_START = (("eventlet", "RLock(s) were not greened"),)
"""(logger, part of the message) of harmless library messages every start would print: eventlet's note that the RLocks
made before it patched the standard library (the logging module's own) stay unpatched."""


class LogFormat(StrEnum):
    """How each log record is written."""

    TEXT = "text"
    JSON = "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, Any] = {
            "time": time.strftime(DATE_FORMAT, time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter of ``log_format`` (times in UTC)."""
    if log_format == LogFormat.JSON:
        return JsonFormatter()
    text = logging.Formatter(TEXT_FORMAT, DATE_FORMAT)
    text.converter = time.gmtime
    return text


class _Quiet(logging.Filter):
    """Drops the known harmless library messages of ``QUIET_AT_START``."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a record to drop."""
        message = str(record.msg)
        return not any(record.name == name and part in message for name, part in QUIET_AT_START)


class _ToRoot(logging.Handler):
    """Python's last-resort handler, for loggers outside the hierarchy: hands their records to the root's handlers."""

    def emit(self, record: logging.LogRecord) -> None:
        """Pass the record on to the root logger's handlers."""
        logging.getLogger().callHandlers(record)


def silence_library_warnings() -> None:
    """Ignore warnings raised by libraries (deprecations of their dependencies): ours still show."""
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"nlb_sdn(\.|$)")


def setup_logging(level: str = "INFO", log_format: LogFormat = LogFormat.TEXT, log_file: str | None = None) -> None:
    """Send every log record at ``level`` or above to ``log_file`` (standard error when None), in ``log_format``.

    Replaces the root logger's handlers, so it may be called again (the controller's manager adds none of its own).
    """
    handler: logging.Handler = (
        logging.handlers.WatchedFileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(formatter(log_format))
    handler.addFilter(_Quiet())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.lastResort = _ToRoot()
    silence_library_warnings()


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-level``, ``--log-format`` and ``--log-file`` to a command line."""
    group = parser.add_argument_group("logging")
    group.add_argument(
        "--log-level", type=str.upper, choices=LEVELS, help="lowest level logged (default INFO, DEBUG with --verbose)"
    )
    group.add_argument(
        "--log-format", type=LogFormat, choices=list(LogFormat), default=LogFormat.TEXT, help="text lines or JSON"
    )
    group.add_argument("--log-file", help="append the log to this file instead of standard error")


def level_of(args: argparse.Namespace) -> str:
    """The level the command line asks for: ``--log-level``, else DEBUG with ``--verbose``, else INFO."""
    if args.log_level:
        return str(args.log_level)
    return "DEBUG" if getattr(args, "verbose", False) else "INFO"


def setup_from_args(args: argparse.Namespace) -> None:
    """``setup_logging`` as the command line asks."""
    setup_logging(level_of(args), args.log_format, args.log_file)


def log_env(args: argparse.Namespace) -> str:
    """The command line's log settings as the value of ``$NLB_SDN_LOG``."""
    return json.dumps({"level": level_of(args), "format": str(args.log_format), "file": args.log_file})


def setup_from_env(environ: Mapping[str, str]) -> bool:
    """``setup_logging`` from ``$NLB_SDN_LOG`` when it is set; whether it was."""
    text = environ.get(LOG_ENV)
    if not text:
        return False
    settings = json.loads(text)
    setup_logging(settings["level"], LogFormat(settings["format"]), settings.get("file"))
    return True
