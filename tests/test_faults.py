"""Every fault scenario: counted once by (status, code), up 0, values kept until stale."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import structlog
from conftest import Recorder
from helpers import FakeClock, by_id, series, text_of

from exporter import metrics as m
from exporter.poller import Poller
from exporter.simulator import (
    FAULTS,
    HOSTILE_NAMES,
    SCENARIOS,
    Fault,
    Simulator,
    Tenant,
    error_fault,
)

# Healthy polls get all the time a busy machine may need. Only the `slow` scenario must
# outlast a timeout, so only its test has a short one (and its API takes far longer still).
HEALTHY_TIMEOUT = 60.0
SLOW_SCENARIO_TIMEOUT = 2.0


@pytest.fixture
def make_fault_poller(
    make_poller: Callable[..., Poller], simulator: Simulator
) -> Callable[..., Poller]:
    simulator.tenant.slow_seconds = 600.0  # answered by then: never (daemon threads)
    simulator.tenant.too_large_bytes = 2_000_001

    def make(timeout: float = HEALTHY_TIMEOUT) -> Poller:
        return make_poller(timeout=timeout, max_response_bytes=2_000_000)

    return make


@pytest.fixture
def fast_poller(make_fault_poller: Callable[..., Poller]) -> Poller:
    return make_fault_poller()


def failures(text: str) -> dict[tuple[str, str], float]:
    return {
        (dict(k)["status"], dict(k)["code"]): v
        for k, v in series(text, m.API_FAILURES.name).items()
    }


def one(text: str, metric: m.Metric) -> float:
    (value,) = series(text, metric.name).values()
    return value


def test_every_documented_and_sibling_failure_has_a_scenario() -> None:
    expected = {SCENARIOS[name].expected for name in FAULTS}
    assert set(m.DOCUMENTED_FAILURES) <= expected
    assert {("429", "429"), ("499", "499"), ("500", "1001"), ("200", "1001")} <= expected
    assert {
        ("502", "502"),
        ("200", "invalid_response"),
        ("none", "timeout"),
        ("none", "connection"),
        ("200", "too_large"),
    } <= expected


@pytest.mark.parametrize("name", FAULTS)
def test_fault_is_counted_once_and_values_survive_until_stale(
    name: str,
    make_fault_poller: Callable[..., Poller],
    simulator: Simulator,
    recorder: Recorder,
    clock: FakeClock,
) -> None:
    fast_poller = make_fault_poller(SLOW_SCENARIO_TIMEOUT if name == "slow" else HEALTHY_TIMEOUT)
    expected = SCENARIOS[name].expected
    assert expected is not None
    fast_poller.poll_once()
    good_text = text_of(recorder.last.exposition)
    good = by_id(good_text, m.TOTAL_RECORDS.name)
    before = failures(good_text)

    simulator.tenant.inject(name)
    clock.advance(60)
    with structlog.testing.capture_logs() as logs:
        fast_poller.poll_once()
    text = text_of(recorder.last.exposition)
    after = failures(text)
    assert after[expected] == before.get(expected, 0) + 1
    assert sum(after.values()) == sum(before.values()) + 1
    assert one(text, m.API_REQUESTS) == 2
    assert one(text, m.UP) == 0
    assert by_id(text, m.TOTAL_RECORDS.name) == good
    down = [entry for entry in logs if entry["event"] == "api_down"]
    assert len(down) == 1
    assert (down[0]["status"], down[0]["code"]) == expected

    # The same failure again: counted again, not logged again.
    simulator.tenant.inject(name)
    clock.advance(241)  # 301 s after the last success: past stale-after
    with structlog.testing.capture_logs() as logs:
        fast_poller.poll_once()
    text = text_of(recorder.last.exposition)
    assert failures(text)[expected] == before.get(expected, 0) + 2
    assert by_id(text, m.TOTAL_RECORDS.name) == {}
    assert [entry["event"] for entry in logs] == ["stale_series_dropped"]

    clock.advance(60)
    with structlog.testing.capture_logs() as logs:
        fast_poller.poll_once()
    text = text_of(recorder.last.exposition)
    assert one(text, m.UP) == 1
    assert by_id(text, m.TOTAL_RECORDS.name) == good
    assert [entry["event"] for entry in logs if entry["log_level"] != "debug"] == ["api_up"]


@pytest.mark.parametrize("name", [n for n, s in SCENARIOS.items() if s.expected is None])
def test_bad_records_are_skipped_counted_and_the_poll_succeeds(
    name: str, fast_poller: Poller, simulator: Simulator, recorder: Recorder
) -> None:
    simulator.tenant.inject(name)
    fast_poller.poll_once()
    text = text_of(recorder.last.exposition)
    assert one(text, m.UP) == 1
    assert one(text, m.INVALID_GROUPS) == SCENARIOS[name].invalid
    ids = set(by_id(text, m.TOTAL_RECORDS.name))
    assert {r["id"] for r in simulator.tenant.records()} <= ids
    assert sum(failures(text).values()) == 0


def test_duplicate_id_keeps_one_series_the_first(
    fast_poller: Poller, simulator: Simulator, recorder: Recorder
) -> None:
    simulator.tenant.inject("duplicates")
    fast_poller.poll_once()
    text = text_of(recorder.last.exposition)
    first = simulator.tenant.records()[0]
    names = [s for s in series(text, m.TOTAL_RECORDS.name) if ("id", first["id"]) in s]
    assert len(names) == 1
    assert ("name", first["name"]) in names[0]


def test_hostile_names_are_served_intact(
    fast_poller: Poller, simulator: Simulator, recorder: Recorder
) -> None:
    simulator.tenant.inject("hostile-names")
    fast_poller.poll_once()
    for openmetrics in (False, True):
        text = text_of(recorder.last.exposition, openmetrics)
        names = {
            dict(k)["name"]
            for k in series(text, m.TOTAL_RECORDS.name, openmetrics)
            if dict(k)["id"].startswith("hostile-")
        }
        assert names == set(HOSTILE_NAMES)


def test_key_not_allowed_logs_the_fix_once(fast_poller: Poller, simulator: Simulator) -> None:
    simulator.tenant.inject("http-401-430", "http-401-430", "http-401-430")
    with structlog.testing.capture_logs() as logs:
        delays = [fast_poller.poll_once() for _ in range(3)]
    assert delays == [60.0, 60.0, 60.0]  # not retried before the next interval
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert len(errors) == 1
    assert "enable the target-group API" in errors[0]["fix"]


def test_retry_after_and_backoff_schedule(fast_poller: Poller, simulator: Simulator) -> None:
    throttled = error_fault(429, 429, "slow down")
    throttled.headers["Retry-After"] = "30"
    simulator.tenant.inject(throttled)
    assert fast_poller.poll_once() == 30  # above the first backoff, below the interval
    simulator.tenant.inject("http-500", "http-500")
    second, third = fast_poller.poll_once(), fast_poller.poll_once()
    assert 5 <= second <= 10  # 2nd failure in a row: 10 s, jittered down to half
    assert 10 <= third <= 20
    assert fast_poller.poll_once() == 60  # success: back on the interval


# --- the scenarios' answers, byte for byte ----------------------------------------------


def test_an_error_answer_is_the_apis_json_error_shape() -> None:
    assert error_fault(401, 430, "Authorization failed") == Fault(
        401,
        b'{"code": 430, "description": "Authorization failed"}',
        {"Content-Type": "application/json"},
    )
    assert json.loads(error_fault(500, "x").body) == {"code": "x", "description": "error"}


def test_throttled_says_when_to_retry(tenant: Tenant) -> None:
    answer = SCENARIOS["throttled"].answer(tenant.records(), tenant)
    assert (answer.status, answer.headers["Retry-After"]) == (429, "1")
    assert "Retry-After" not in SCENARIOS["throttled-no-retry-after"].answer([], tenant).headers


def test_slow_sends_the_normal_list_late(tenant: Tenant) -> None:
    tenant.slow_seconds = 0.5
    records = tenant.records()
    assert SCENARIOS["slow"].answer(records, tenant) == Fault(
        200, json.dumps(records).encode(), delay=0.5
    )


def test_too_large_declares_a_length_it_does_not_send(tenant: Tenant) -> None:
    tenant.too_large_bytes = 12345
    answer = SCENARIOS["too-large"].answer(tenant.records(), tenant)
    assert (answer.status, answer.body, answer.headers) == (200, b"[]", {"Content-Length": "12345"})


def test_bad_record_scenarios_append_exactly_their_bad_records(tenant: Tenant) -> None:
    records = tenant.records()
    first = records[0]
    assert len({json.dumps(record) for record in records}) > 1  # so "first" means something

    def appended(name: str) -> list[object]:
        answer = SCENARIOS[name].answer(tenant.records(), tenant)
        assert answer.headers == {"Content-Type": "application/json"}
        body = json.loads(answer.body)
        assert body[: len(records)] == records
        return body[len(records) :]  # type: ignore[no-any-return]

    assert appended("malformed-records") == [
        {**first, "id": None},
        {**first, "id": "bad-counts", "totalCount": "lots"},
        "not a record",
    ]
    assert appended("duplicates") == [{**first, "name": "duplicate of the first"}]
    assert appended("hostile-names") == [
        {**first, "id": f"hostile-{index}", "name": name, "userGroup": name}
        for index, name in enumerate(HOSTILE_NAMES)
    ]
