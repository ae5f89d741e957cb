"""The simulated tenant's scenarios: how it answers one request, by name.

Plain data with no server, threads or sockets, apart from the simulator: settings validates
`--demo.scenario` against these names and lists them in `--help` without loading the
simulator, which only `--demo` starts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .simulator import Tenant

Record = dict[str, Any]

DEMO_KEY = "demo-secret-key"
"""The key the demo tenant accepts, and the one the poller sends it."""


@dataclass
class Fault:
    """One scripted answer in place of the normal list."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    close: bool = False
    """Close the connection without any answer."""


def error_fault(status: int, code: int | str, description: str = "error") -> Fault:
    body = json.dumps({"code": code, "description": description}).encode()
    return Fault(status, body, {"Content-Type": "application/json"})


def json_fault(records: list[Any]) -> Fault:
    return Fault(200, json.dumps(records).encode(), {"Content-Type": "application/json"})


@dataclass(frozen=True)
class Scenario:
    """A named way for the tenant to answer one request.

    `expected` is the (status, code) the exporter must count for it, or None
    when the answer is a successful poll (possibly with skipped records).
    """

    name: str
    answer: Callable[[list[Record], Tenant], Fault]
    expected: tuple[str, str] | None
    invalid: int = 0


def _fixed(fault: Fault) -> Callable[[list[Record], Tenant], Fault]:
    return lambda _records, _tenant: fault


def _with_retry_after(fault: Fault, seconds: str) -> Fault:
    fault.headers["Retry-After"] = seconds
    return fault


def _malformed(records: list[Record], _tenant: Tenant) -> Fault:
    broken: list[Any] = [
        {**records[0], "id": None},
        {**records[0], "id": "bad-counts", "totalCount": "lots"},
        "not a record",
    ]
    return json_fault([*records, *broken])


def _duplicates(records: list[Record], _tenant: Tenant) -> Fault:
    return json_fault([*records, {**records[0], "name": "duplicate of the first"}])


HOSTILE_NAMES = (
    'quote " and \\ backslash',
    "new\nline",
    "emoji 🚀📈 ünïcödé",
    "x" * 1000,  # long, yet within the default label length cap (1024 bytes)
)


def _hostile(records: list[Record], _tenant: Tenant) -> Fault:
    extra = [
        {**records[0], "id": f"hostile-{index}", "name": name, "userGroup": name}
        for index, name in enumerate(HOSTILE_NAMES)
    ]
    return json_fault(records + extra)


def _too_large(_records: list[Record], tenant: Tenant) -> Fault:
    # Declared, not sent: the exporter must refuse it from the header alone.
    return Fault(200, b"[]", {"Content-Length": str(tenant.too_large_bytes)})


def _slow(records: list[Record], tenant: Tenant) -> Fault:
    return Fault(200, json.dumps(records).encode(), delay=tenant.slow_seconds)


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "http-400", _fixed(error_fault(400, 400, "I/O error on post request")), ("400", "400")
        ),
        Scenario(
            "http-401-430", _fixed(error_fault(401, 430, "Authorization failed")), ("401", "430")
        ),
        Scenario(
            "http-401-498", _fixed(error_fault(401, 498, "Access token expired")), ("401", "498")
        ),
        Scenario("http-404", _fixed(error_fault(404, 404, "Not found")), ("404", "404")),
        Scenario("http-405", _fixed(error_fault(405, 405, "Method not supported")), ("405", "405")),
        Scenario(
            "http-500", _fixed(error_fault(500, 500, "Internal server error")), ("500", "500")
        ),
        Scenario(
            "throttled",
            lambda _r, _t: _with_retry_after(error_fault(429, 429, "Too many requests"), "1"),
            ("429", "429"),
        ),
        Scenario(
            "throttled-no-retry-after",
            _fixed(error_fault(429, 429, "Too many requests")),
            ("429", "429"),
        ),
        Scenario(
            "http-499", _fixed(error_fault(499, 499, "Client closed request")), ("499", "499")
        ),
        Scenario("http-500-1001", _fixed(error_fault(500, 1001, "Invalid JSON")), ("500", "1001")),
        Scenario("error-200", _fixed(error_fault(200, 1001, "Invalid JSON")), ("200", "1001")),
        Scenario(
            "html-502",
            _fixed(
                Fault(
                    502,
                    b"<html><body><h1>502 Bad Gateway</h1></body></html>",
                    {"Content-Type": "text/html"},
                )
            ),
            ("502", "502"),
        ),
        Scenario(
            "truncated",
            lambda records, _t: Fault(200, json.dumps(records).encode()[:-40]),
            ("200", "invalid_response"),
        ),
        Scenario(
            "object", _fixed(Fault(200, b'{"targetGroups": []}')), ("200", "invalid_response")
        ),
        Scenario("slow", _slow, ("none", "timeout")),
        Scenario("close", _fixed(Fault(close=True)), ("none", "connection")),
        Scenario("too-large", _too_large, ("200", "too_large")),
        Scenario("malformed-records", _malformed, None, invalid=3),
        Scenario("duplicates", _duplicates, None, invalid=1),
        Scenario("hostile-names", _hostile, None),
    )
}
FAULTS = tuple(name for name, scenario in SCENARIOS.items() if scenario.expected is not None)
FLAKY_SHARE = 0.3
DEMO_SCENARIOS = ("healthy", "flaky", *SCENARIOS)
"""`--demo.scenario`: healthy, flaky (30% of requests fail at random), or one scenario for ever."""
