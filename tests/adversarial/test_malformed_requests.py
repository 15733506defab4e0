"""Malformed requests the schema fuzzer cannot make, through the real Envoy: each gets its proper 4xx (or is
served, when what is odd is only something crm_hub ignores), as JSON with the Error shape — never a 5xx.

schemathesis builds requests from the document's types, so its strings are always valid Unicode and its bodies
small: bytes that are not UTF-8 once percent-decoded, a NUL in a stored value, a body past the gRPC message
limit or a header name gRPC metadata cannot carry are written out here, one row each. Raw bytes go over a raw
HTTP/1.1 connection, so nothing between the test and Envoy cleans them up.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
from dataclasses import dataclass

import pytest

from tests.adversarial.sandbox import Sandbox, on_sandbox_databases

pytestmark = on_sandbox_databases()

#: Past gRPC's default 4 MiB message limit, which the gRPC server enforces on what Envoy transcodes.
OVER_THE_MESSAGE_LIMIT = 5 * 1024 * 1024
#: Past Envoy's default 60 KiB of request headers.
OVER_THE_HEADER_LIMIT = 70 * 1024
#: crm_hub's own limits on a lead (crm_hub.core.leads).
MAX_LEAD_FIELDS = 100
MAX_LEAD_VALUE_LENGTH = 10_000


@dataclass(frozen=True)
class Malformed:
    id: str
    method: str
    #: The request target as sent, percent-escapes and all.
    target: str
    expected_status: int
    body: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    #: The ErrorInfo reason, when only one is right.
    expected_reason: str | None = None
    role: str = "admin"


def lead_body(**fields: str) -> bytes:
    return json.dumps({"fields": fields}).encode()


ROWS = [
    Malformed("path-variable-not-utf8-once-decoded", "GET", "/leads/%FF%FE", 400),
    Malformed("path-variable-not-utf8-in-the-timeline", "GET", "/leads/%C3%28/timeline", 400),
    Malformed("query-value-not-utf8-once-decoded", "GET", "/leads/some-lead/timeline?pageToken=%FF", 400),
    Malformed("provider-name-not-utf8-once-decoded", "GET", "/integrations/%E2%82/fields", 400),
    Malformed(
        "json-body-not-utf8",
        "POST",
        "/leads",
        400,
        body=b'{"fields": {"email": "\xff\xfe"}}',
        expected_reason="INVALID_JSON",
    ),
    Malformed("json-string-with-a-lone-surrogate", "POST", "/leads", 400, body=b'{"fields": {"name": "\\ud800"}}'),
    # PostgreSQL cannot store a NUL in text: refused as the external id's is, on every backend alike.
    Malformed(
        "nul-in-a-stored-lead-value",
        "POST",
        "/leads",
        400,
        body=lead_body(email="nul@example.com", name="a\0b"),
        expected_reason="LEAD_INVALID",
    ),
    Malformed(
        "nul-in-an-external-id",
        "POST",
        "/leads",
        400,
        body=b'{"externalId": "x\\u0000y", "fields": {"a": "b"}}',
        expected_reason="LEAD_INVALID",
    ),
    Malformed("object-as-a-lead-field-value", "POST", "/leads", 400, body=b'{"fields": {"email": {}}}'),
    Malformed(
        "object-as-a-mapping-value", "POST", "/integrations/hubspot/mapping", 400, body=b'{"mapping": {"email": {}}}'
    ),
    Malformed(
        "json-nested-past-the-parser-depth",
        "POST",
        "/leads",
        400,
        body=b'{"fields": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        expected_reason="INVALID_JSON",
    ),
    Malformed(
        "lead-value-one-past-the-length-limit",
        "POST",
        "/leads",
        400,
        body=lead_body(email="long@example.com", note="x" * (MAX_LEAD_VALUE_LENGTH + 1)),
        expected_reason="LEAD_INVALID",
    ),
    Malformed(
        "lead-one-field-past-the-field-limit",
        "POST",
        "/leads",
        400,
        body=lead_body(**{f"f{i}": "v" for i in range(MAX_LEAD_FIELDS + 1)}),
        expected_reason="LEAD_INVALID",
    ),
    Malformed("page-size-past-int32", "GET", "/leads/some-lead/timeline?pageSize=99999999999", 400),
    Malformed("json-body-that-is-an-array", "POST", "/leads", 400, body=b"[]"),
    Malformed("json-body-that-is-null", "POST", "/crm/sync/lead/some-lead", 400, body=b"null"),
    Malformed(
        "body-past-the-grpc-message-limit",
        "POST",
        "/leads",
        413,
        body=lead_body(email="big@example.com", note="x" * OVER_THE_MESSAGE_LIMIT),
    ),
    Malformed(
        "header-block-past-the-gateway-limit",
        "GET",
        "/integrations/status",
        431,
        headers=((b"x-padding", b"p" * OVER_THE_HEADER_LIMIT),),
    ),
    # What is odd here is only a header crm_hub has no use for: it is ignored, as HTTP says unknown headers are.
    Malformed("header-name-gRPC-metadata-cannot-carry", "GET", "/integrations/status", 200, headers=((b"x|y", b"1"),)),
    Malformed("header-value-not-utf8", "GET", "/integrations/status", 200, headers=((b"x-note", b"\xff\xfe"),)),
    Malformed(
        "authorization-not-utf8",
        "GET",
        "/integrations/status",
        401,
        headers=((b"authorization", b"Bearer \xff\xfe"),),
        role="anonymous",
    ),
]


def send_raw(base_url: str, row: Malformed, token: str | None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request, bytes as given; the status, headers (lowercased names) and body of the answer."""
    host, port = base_url.removeprefix("http://").split(":")
    lines = [f"{row.method} {row.target} HTTP/1.1".encode(), f"Host: {host}:{port}".encode(), b"Connection: close"]
    if token:
        lines.append(f"Authorization: Bearer {token}".encode())
    if row.body or row.method == "POST":
        lines += [b"Content-Type: application/json", f"Content-Length: {len(row.body)}".encode()]
    lines += [name + b": " + value for name, value in row.headers]
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        # As curl does: watch for an early answer while sending (Envoy refuses an oversized body from its
        # Content-Length at once, then stops reading), and read what came even if the peer then resets.
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for start in range(0, len(row.body), 65536):
                if select.select([sock], [], [], 0)[0]:
                    break  # answered already
                sock.sendall(row.body[start : start + 65536])
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return int(status_line.split(" ")[1]), headers, body


def _unchunk(data: bytes) -> bytes:
    body = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body, data = body + data[:size], data[size + 2 :]
    return body


@pytest.mark.parametrize("row", [pytest.param(row, id=row.id) for row in ROWS])
def test_a_malformed_request_gets_its_4xx_as_a_json_error_never_a_server_error(
    row: Malformed, live_sandbox: Sandbox
) -> None:
    token = None if row.role == "anonymous" else live_sandbox.token(row.role)
    status, headers, body = send_raw(live_sandbox.base_url, row, token)
    shown = body[:300].decode("utf-8", "replace")
    assert (status, headers.get("content-type")) == (row.expected_status, "application/json"), shown
    answer = json.loads(body)
    if status >= 400:
        assert answer["success"] is False, shown
        assert answer["reason"], shown
        if row.expected_reason is not None:
            assert answer["reason"] == row.expected_reason, shown
    else:
        assert answer["success"] is True, shown
