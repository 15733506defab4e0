"""crm_hub.testing.fakes: the fault plan, recorded calls, the FakeCrm base class and serving on a real socket."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from crm_hub.testing import fakes
from crm_hub.testing.fakes import Call, FakeCrm, Fault, FaultPlan, filter_calls, parse_body, serving

# -- FaultPlan -------------------------------------------------------------------------------------------


def test_faults_are_taken_oldest_first_each_for_its_number_of_requests() -> None:
    plan = FaultPlan()
    first = plan.add(Fault("fail", 2, status=502))
    second = plan.add(Fault("fail", 1, status=503))

    taken = [plan.take("fail", "/v1/contacts") for _ in range(4)]

    assert taken == [first, first, second, None]
    assert [fault.status for fault in taken if fault is not None] == [502, 502, 503]
    assert plan.pending == []


def test_a_fault_applies_only_under_its_path_prefix() -> None:
    plan = FaultPlan()
    under_v1 = plan.add(Fault("fail", 1, "/v1/", status=429))
    anywhere = plan.add(Fault("fail", 1, status=500))

    assert plan.take("fail", "/oauth/token") is anywhere  # the older fault does not match: the younger one does
    assert plan.take("fail", "/oauth/token") is None
    assert plan.take("fail", "/v1/contacts") is under_v1
    assert plan.pending == []


def test_skip_lets_matching_requests_through_before_the_fault_applies() -> None:
    plan = FaultPlan()
    fault = plan.add(Fault("fail", 1, "/v1/contacts", status=503, skip=2))
    younger = plan.add(Fault("fail", 1, status=500))

    assert plan.take("fail", "/v1/fields") is younger  # not under the path: neither skipped nor counted
    assert plan.take("fail", "/v1/contacts") is None  # skipped (and not handed to a younger fault)
    assert plan.take("fail", "/v1/contacts") is None
    assert plan.take("fail", "/v1/contacts") is fault
    assert plan.take("fail", "/v1/contacts") is None


def test_delays_and_failures_are_taken_separately() -> None:
    plan = FaultPlan()
    delay = plan.add(Fault("delay", 1, delay=0.5))
    failure = plan.add(Fault("fail", 1, status=504))

    assert plan.take("fail", "/x") is failure
    assert plan.take("delay", "/x") is delay
    assert plan.take("delay", "/x") is None


async def test_apply_waits_out_the_delay_then_returns_the_failure() -> None:
    plan = FaultPlan()
    plan.add(Fault("delay", 1, delay=0.2))
    failure = plan.add(Fault("fail", 1, status=503))

    started = time.monotonic()
    applied = await plan.apply("/v1/contacts")

    assert time.monotonic() - started >= 0.2
    assert applied is failure
    assert await plan.apply("/v1/contacts") is None


def test_a_plan_can_be_cleared_and_shows_what_is_pending() -> None:
    plan = FaultPlan()
    fault = plan.add(Fault("delay", 3, "/v1/", delay=1.0))
    plan.take("delay", "/v1/x")

    assert plan.pending == [fault]
    assert fault.remaining == 2
    plan.clear()
    assert plan.pending == []


@pytest.mark.parametrize(
    ("retry_after", "headers"), [(None, {}), (2, {"Retry-After": "2"}), (0.5, {"Retry-After": "0.5"})]
)
def test_a_fault_carries_its_retry_after_header(retry_after: float | None, headers: dict[str, str]) -> None:
    assert Fault("fail", 1, retry_after=retry_after).headers == headers


# -- recorded calls --------------------------------------------------------------------------------------


@dataclass
class _Record:
    method: str
    path: str
    note: str


def test_filter_calls_works_on_any_record_with_a_method_and_a_path() -> None:
    records = [_Record("GET", "/v1/a", "1"), _Record("POST", "/v1/a/b", "2"), _Record("POST", "/v2/a", "3")]

    assert [r.note for r in filter_calls(records, "/v1/")] == ["1", "2"]
    assert [r.note for r in filter_calls(records, method="post")] == ["2", "3"]
    assert [r.note for r in filter_calls(records, "/v1/", "POST")] == ["2"]
    assert filter_calls(records) == records


@pytest.mark.parametrize(
    ("raw", "content_type", "keep_blank", "expected"),
    [
        (b"", "application/json", False, None),
        (b'{"a": [1]}', "application/json", False, {"a": [1]}),
        (b"a=1&b=&c=x+y", "application/x-www-form-urlencoded", False, {"a": "1", "c": "x y"}),
        (b"a=1&b=", "application/x-www-form-urlencoded; charset=utf-8", True, {"a": "1", "b": ""}),
        (b"not json", "text/plain", False, "not json"),
        (b"\xff", "", False, "\ufffd"),
    ],
)
def test_parse_body_reads_a_request_body_as_a_test_wants_it(
    raw: bytes, content_type: str, keep_blank: bool, expected: Any
) -> None:
    assert parse_body(raw, content_type, keep_blank_values=keep_blank) == expected


# -- FakeCrm ---------------------------------------------------------------------------------------------


class _TinyCrm(FakeCrm):
    """The smallest fake: one contacts endpoint, and the CRM's own error body for injected failures."""

    label = "fake TinyCRM"

    def __init__(self) -> None:
        super().__init__(redirect_uri="https://crm-hub.test/oauth/tiny/callback")
        self.bound_at: list[str] = []
        self.app: Starlette = Starlette(
            routes=[
                Route("/v1/contacts", self.recorded(self._contacts), methods=["GET", "POST"]),
                Route("/oauth/token", self.recorded(self._token), methods=["POST"]),
            ]
        )

    def fault_response(self, fault: Fault) -> Response:
        return JSONResponse({"error": f"injected {fault.status}"}, fault.status, headers=fault.headers)

    def answered(self, request: Request, response: Response) -> None:
        response.headers["X-Tiny-Calls"] = str(len(self.calls))

    def served_at(self, base_url: str) -> None:
        self.bound_at.append(base_url)

    async def _contacts(self, request: Request) -> Response:
        return JSONResponse({"contacts": []})

    async def _token(self, request: Request) -> Response:
        return JSONResponse({"access_token": "t"})


def _client(fake: FakeCrm) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(fake.app), base_url="https://tiny.test")


async def _first_call(fake: FakeCrm) -> Call:
    """The first call the fake records, once it has (waiting up to 5 s)."""
    for _ in range(500):
        if fake.calls:
            return fake.calls[0]
        await asyncio.sleep(0.01)
    raise AssertionError("the fake recorded no call")


async def test_a_fake_records_every_call_with_its_answer() -> None:
    fake = _TinyCrm()
    async with _client(fake) as client:
        await client.get("/v1/contacts", params={"limit": "2"})
        await client.post("/v1/contacts", json={"email": "ada@example.com"})
        await client.post("/oauth/token", data={"grant_type": "refresh_token", "scope": ""})

    assert fake.calls == [
        Call("GET", "/v1/contacts", {"limit": "2"}, None, 200, "tiny.test"),
        Call("POST", "/v1/contacts", {}, {"email": "ada@example.com"}, 200, "tiny.test"),
        Call("POST", "/oauth/token", {}, {"grant_type": "refresh_token"}, 200, "tiny.test"),
    ]
    assert fake.count("/v1/") == 2
    assert fake.count("/v1/", method="post") == 1
    assert fake.calls_to(method="POST") == fake.calls[1:]
    assert (fake.client_id, fake.client_secret) == ("fake-client-id", "fake-client-secret")
    assert fake.redirect_uri == "https://crm-hub.test/oauth/tiny/callback"


async def test_fail_next_answers_with_the_fakes_fault_response_under_its_path() -> None:
    fake = _TinyCrm()
    fake.fail_next(2, status=429, retry_after=3, path="/v1/", skip=1)
    async with _client(fake) as client:
        token = await client.post("/oauth/token")
        answers = [await client.get("/v1/contacts") for _ in range(4)]

    assert token.status_code == 200
    assert [answer.status_code for answer in answers] == [200, 429, 429, 200]
    assert answers[1].json() == {"error": "injected 429"}
    assert answers[1].headers["Retry-After"] == "3"
    assert answers[1].headers["X-Tiny-Calls"] == "3"  # answered() sees injected failures too
    assert [call.status for call in fake.calls] == [200, 200, 429, 429, 200]


async def test_the_default_fault_response_is_the_body_as_json() -> None:
    fake = FakeCrm()
    fake.app = Starlette(routes=[Route("/ping", fake.recorded(_pong))])
    fake.fail_next(status=503, body={"errors": ["down"]}, retry_after=1.5)
    async with _client(fake) as client:
        failed = await client.get("/ping")
        served = await client.get("/ping")

    assert (failed.status_code, failed.json(), failed.headers["Retry-After"]) == (503, {"errors": ["down"]}, "1.5")
    assert (served.status_code, served.text) == (200, "pong")


async def test_timeout_next_holds_the_request_then_a_failure_may_still_answer_it() -> None:
    fake = _TinyCrm()
    fake.timeout_next(delay=0.2, path="/v1/")
    fake.fail_next(status=502, path="/v1/")
    async with _client(fake) as client:
        started = time.monotonic()
        held = await client.get("/v1/contacts")
        elapsed = time.monotonic() - started
        after = await client.get("/v1/contacts")

    assert elapsed >= 0.2
    assert held.status_code == 502
    assert after.status_code == 200


async def test_a_call_is_recorded_without_a_status_while_it_is_held() -> None:
    fake = _TinyCrm()
    fake.timeout_next(delay=5.0)
    async with _client(fake) as client:
        request = asyncio.create_task(client.get("/v1/contacts"))
        assert (await _first_call(fake)).status is None
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
    assert fake.calls[0].status is None  # the client gave up


# -- serving on a socket ---------------------------------------------------------------------------------


async def _pong(request: Request) -> Response:
    return PlainTextResponse("pong")


async def test_serving_a_starlette_app_on_a_real_loopback_socket() -> None:
    app = Starlette(routes=[Route("/ping", _pong)])
    bound: list[str] = []

    async with serving(app, host="127.0.0.1", on_bound=bound.append) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        assert bound == [base_url]
        async with httpx.AsyncClient(base_url=base_url, trust_env=False) as client:
            answer = await client.get("/ping")

    assert (answer.status_code, answer.text) == (200, "pong")
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=base_url, trust_env=False) as client:
            await client.get("/ping")  # stopped with the context


async def test_serving_a_fake_tells_it_where_it_is_and_records_the_host() -> None:
    fake = _TinyCrm()
    fake.fail_next(status=500, path="/v1/")
    async with serving(fake) as base_url, httpx.AsyncClient(base_url=base_url, trust_env=False) as client:
        statuses = [(await client.get("/v1/contacts")).status_code for _ in range(2)]

    assert fake.bound_at == [base_url]
    assert statuses == [500, 200]
    assert {call.host for call in fake.calls} == {base_url.removeprefix("http://")}


async def test_a_held_request_does_not_hold_up_shutdown() -> None:
    fake = _TinyCrm()
    async with httpx.AsyncClient(trust_env=False) as client:
        fake.timeout_next(delay=30.0)
        async with serving(fake) as base_url:
            held = asyncio.create_task(client.get(f"{base_url}/v1/contacts"))
            await _first_call(fake)
            stopping = time.monotonic()
        stopped_in = time.monotonic() - stopping
        dropped = await held  # cancelled by the server after its 1 s grace

    assert dropped.status_code == 500  # uvicorn's answer for a request it had to cancel
    assert stopped_in < 5
    assert fake.calls[0].status is None


async def test_serve_forever_prints_the_url_it_serves_on() -> None:
    script = textwrap.dedent(
        """
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route
        from crm_hub.testing.fakes import serve_forever

        async def pong(request):
            return PlainTextResponse("pong")

        serve_forever(Starlette(routes=[Route("/ping", pong)]), log_level="warning", name="fake Ping")
        """
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=10)).decode().strip()
        assert line.startswith("fake Ping listening on http://127.0.0.1:")
        base_url = line.rsplit(" ", 1)[1]
        deadline = time.monotonic() + 10
        async with httpx.AsyncClient(base_url=base_url, trust_env=False) as client:
            while True:
                try:
                    answer = await client.get("/ping")
                    break
                except httpx.ConnectError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
        assert answer.text == "pong"
    finally:
        process.terminate()
        await process.wait()


# -- the command line ------------------------------------------------------------------------------------


def test_serve_command_parses_the_common_options_and_serves_what_make_fake_builds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(fakes, "serve_forever", lambda fake, **options: served.append((fake, options)))
    parser = fakes.argument_parser("python -m tiny", "Tiny.\n\nMore.", redirect_uri="http://127.0.0.1/cb")
    parser.add_argument("--rate-limit", type=int, default=5)
    built: list[dict[str, Any]] = []

    def make_fake(args: Any) -> FakeCrm:
        built.append({**fakes.oauth_client(args), "rate_limit": args.rate_limit})
        return FakeCrm(**fakes.oauth_client(args))

    fakes.serve_command(parser, make_fake, ["--port", "8765", "--client-id", "cid", "--log-level", "warning"])

    assert parser.description == "Tiny."
    assert built == [
        {
            "client_id": "cid",
            "client_secret": "fake-client-secret",
            "redirect_uri": "http://127.0.0.1/cb",
            "rate_limit": 5,
        }
    ]
    [(fake, options)] = served
    assert isinstance(fake, FakeCrm)
    assert fake.client_id == "cid"
    assert options == {"host": "127.0.0.1", "port": 8765, "log_level": "warning"}


# -- staying light ---------------------------------------------------------------------------------------


async def test_importing_the_toolkit_imports_neither_starlette_nor_uvicorn() -> None:
    script = (
        "import json, sys\n"
        "import crm_hub.testing\n"
        "light = 'crm_hub.testing.fakes' not in sys.modules\n"
        "import crm_hub.testing.fakes\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn'))\n"
        "print(json.dumps([light, heavy]))\n"
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=subprocess.PIPE)
    stdout, _ = await process.communicate()

    assert process.returncode == 0
    assert json.loads(stdout) == [True, []]


async def test_a_fake_on_a_socket_answers_a_reused_connection_without_waiting_for_a_delayed_ack() -> None:
    # Nagle's algorithm against the client's delayed ACK held every answer after the first for about 40 ms.
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"{}"})

    async with serving(app, name="echo") as url, httpx.AsyncClient(base_url=url) as client:
        await client.get("/")  # opens the connection
        started = time.perf_counter()
        for _ in range(10):
            await client.get("/")
        per_request = (time.perf_counter() - started) / 10

    assert per_request < 0.02
