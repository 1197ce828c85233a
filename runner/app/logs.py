"""Log lines for every command: text or JSON on stderr, secrets masked (messages,
tracebacks, warnings, and executors' stderr, which the executor pool logs a line a
record), control characters stripped, at WARNING (service mode: INFO; DEBUG with
``--verbose``), and the one line every run state change gets in service mode (reported
by the store after its transaction commits)."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import IO, TYPE_CHECKING, Any

from runner.core.clock import iso
from runner.core.redaction import RedactingFilter, Redactor

if TYPE_CHECKING:
    from runner.state.records import RunChange

log = logging.getLogger("runner.app.service")


class LogFormat(StrEnum):
    """How the service writes its log lines (to stderr)."""

    TEXT = "text"
    JSON = "json"


#: Terminal escape sequences (colours, cursor moves) and other control characters: a
#: library's coloured message, or text from outside, must not drive the reader's terminal.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")


def _plain(text: str) -> str:
    return _CONTROL.sub("", text)


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso(datetime.fromtimestamp(record.created, UTC))

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _plain(super().formatMessage(record))


class _JsonFormatter(logging.Formatter):
    """One JSON object a line: at, level, logger, message, plus the record's ``omni``
    fields (a run change: event, task_id, run_id, slot, from, to, attempt, detail)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "at": iso(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _plain(record.getMessage()),
        }
        data |= getattr(record, "omni", {})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:  # the redacting filter's, redacted
            data["exception"] = record.exc_text
        return json.dumps(data, ensure_ascii=False, default=str)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (the CLI's redacting
    stream, or a progress display's proxy that prints above the bar)."""

    @property
    def stream(self) -> IO[str]:
        """The current stderr."""
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        """Set by ``StreamHandler.__init__``; stderr is looked up at each record."""


def configure_logging(
    log_format: LogFormat,
    redactor: Redactor,
    stream: IO[str] | None = None,
    *,
    level: int = logging.INFO,
    verbose: bool = False,
) -> None:
    """Send ``level`` and up (DEBUG with ``verbose``) to ``stream`` (stderr) in
    ``log_format``, secrets masked; Python warnings become log records too. Libraries
    log at WARNING and up unless ``verbose``; litellm's loggers join when it loads
    (``runner.reach.llm``)."""
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(_JsonFormatter() if log_format is LogFormat.JSON else _TextFormatter())
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else level)
    logging.getLogger("runner").setLevel(logging.DEBUG if verbose else level)
    logging.captureWarnings(True)
    for chatty in ("apscheduler", "watchfiles", "mcp", "httpx", "httpx2"):
        logging.getLogger(chatty).setLevel(logging.INFO if verbose else logging.WARNING)


def log_run_change(change: RunChange) -> None:
    """The one log line of a run state change."""
    old = change.old.value if change.old is not None else "new"
    detail = " ".join(change.detail.split())
    shown = detail if len(detail) <= 300 else detail[:297] + "..."
    slot = f" slot {change.slot}" if change.slot else ""
    fields = {
        "event": "run",
        "task_id": change.task_id,
        "run_id": change.run_id,
        "slot": change.slot,
        "from": None if change.old is None else old,
        "to": change.new.value,
        "attempt": change.attempt,
        "detail": change.detail,
    }
    log.info(
        "run %s %s%s: %s -> %s (%s)",
        change.task_id,
        change.run_id,
        slot,
        old,
        change.new.value,
        shown,
        extra={"omni": fields},
    )
