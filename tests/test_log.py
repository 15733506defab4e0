"""Log lines: within a traced span they name the trace; outside one they don't pretend to."""

from __future__ import annotations

import json
import logging

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from crm_hub.service.log import JsonFormatter, TextFormatter

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736


def record() -> logging.LogRecord:
    return logging.LogRecord("crm_hub.rpc", logging.INFO, __file__, 1, "rpc", (), None)


def test_a_json_line_written_inside_a_span_carries_its_trace_id() -> None:
    span = NonRecordingSpan(SpanContext(TRACE_ID, 0x00F067AA0BA902B7, is_remote=False, trace_flags=TraceFlags(1)))
    with trace.use_span(span):
        line = json.loads(JsonFormatter().format(record()))
        text = TextFormatter().format(record())
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert "trace_id=4bf92f3577b34da6a3ce929d0e0e4736" in text


def test_a_line_outside_any_span_has_no_trace_id() -> None:
    assert "trace_id" not in json.loads(JsonFormatter().format(record()))
