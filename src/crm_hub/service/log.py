"""Structured logging: one JSON object per line, carrying the ``extra`` fields a call site passes.

Personal data stays out of the logs at every level. crm_hub's own loggers (``crm_hub`` and the
``crm_hub_<crm>`` plugins) never log lead values; libraries do, below WARNING (aiosqlite and the database
drivers print statements with their parameters at DEBUG, HTTP libraries print headers and bodies), so their
records below WARNING are dropped unless ``CRM_HUB_LOG_PERSONAL_DATA`` asks for them while debugging.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

__all__ = ["JsonFormatter", "LibraryRecordsFilter", "TextFormatter", "configure_logging"]

#: Loggers whose records pass at every level: ours, which log no lead values.
_OWN_LOGGERS = ("crm_hub",)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRIBUTES = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRIBUTES and not k.startswith("_")}
    # Within a traced span (tracing on), the line names its trace: from a log line to the whole request.
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid and "trace_id" not in extras:
        extras["trace_id"] = format(span_context.trace_id, "032x")
    return extras


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """For a terminal: the message, then the extra fields as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{key}={value}" for key, value in _extras(record).items())
        return f"{line} {extras}" if extras else line


class LibraryRecordsFilter(logging.Filter):
    """Passes crm_hub's own records, and other libraries' only from WARNING up (they may carry lead data)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.startswith(_OWN_LOGGERS)


def configure_logging(level: str = "INFO", fmt: str = "json", *, personal_data: bool = False) -> None:
    """Log to stderr at ``level``; ``personal_data`` lets libraries' DEBUG and INFO records through too."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    if not personal_data:
        handler.addFilter(LibraryRecordsFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO; some CRM URLs carry tokens (HubSpot's revoke path does).
    logging.getLogger("httpx").setLevel(logging.WARNING)
