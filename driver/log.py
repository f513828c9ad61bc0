"""hclog-style JSON lines on stderr, the log format a go-plugin host understands (docs/nomad-notes.md,
"Logs on stderr").

Each record becomes one JSON object: `@level` (trace|debug|info|warn|error), `@message`, `@timestamp`
(exactly six fractional digits and an offset), `@module`, plus one key per `extra=` field. Values of the
`@` keys are always strings: a non-string there panics the Nomad agent. Writes to a closed stderr (the
agent died; we live on for reattach) are swallowed.

Usage: `log = get_logger("fingerprint"); log.info("cluster healthy", extra={"cluster": name})`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone

from driver.declaration import DRIVER_NAME

ROOT = DRIVER_NAME                            # @module of the plugin's own logger; children are ecs.<part>
LEVEL_ENV = "NOMAD_DRIVER_ECS_LOG_LEVEL"      # log level before (or without) a `log_level` in the plugin config
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "error": logging.ERROR}
_NAMES = {TRACE: "trace", logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn",
          logging.ERROR: "error", logging.CRITICAL: "error"}
# Attributes every LogRecord has; anything else on a record came from `extra=` and becomes a key.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def level_name(levelno: int) -> str:
    if levelno in _NAMES:
        return _NAMES[levelno]
    return "trace" if levelno < logging.DEBUG else "debug" if levelno < logging.INFO else \
        "info" if levelno < logging.WARNING else "warn" if levelno < logging.ERROR else "error"


def parse_level(text: str) -> int:
    """`trace|debug|info|warn|error` (case-insensitive; `warning` too) to a logging level; ValueError otherwise."""
    key = text.strip().lower()
    if key == "warning":
        key = "warn"
    if key not in LEVELS:
        raise ValueError(f"unknown log level {text!r} (use one of {', '.join(LEVELS)})")
    return LEVELS[key]


def timestamp(when: float | None = None) -> str:
    dt = datetime.now(timezone.utc) if when is None else datetime.fromtimestamp(when, timezone.utc)
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")


class HclogJsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "@level": level_name(record.levelno),
            "@message": str(record.getMessage()),
            "@timestamp": timestamp(record.created),
            "@module": record.name,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith(("@", "_")):
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class SafeStreamHandler(logging.StreamHandler):
    """A stream handler that never raises and never reports its own write errors (closed stderr, EPIPE)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + "\n")
            self.stream.flush()
        except Exception:  # noqa: BLE001 - logging must never take the plugin down
            pass

    def handleError(self, record: logging.LogRecord) -> None:  # pragma: no cover - emit already swallows
        pass


def get_logger(part: str | None = None) -> logging.Logger:
    return logging.getLogger(f"{ROOT}.{part}" if part else ROOT)


def setup(stream=None) -> logging.Logger:
    """Route the plugin's logger to `stream` (stderr) as hclog JSON; level from the environment or info."""
    root = get_logger()
    root.handlers[:] = [SafeStreamHandler(stream or sys.stderr)]
    root.handlers[0].setFormatter(HclogJsonFormatter())
    root.propagate = False
    env_level = os.environ.get(LEVEL_ENV, "")
    try:
        root.setLevel(parse_level(env_level) if env_level else logging.INFO)
    except ValueError as exc:
        root.setLevel(logging.INFO)
        root.warning(f"ignoring {LEVEL_ENV}: {exc}")
    return root


def set_level(text: str) -> None:
    get_logger().setLevel(parse_level(text))
