"""The poller: snapshots, counters, up, stale-after, retry policy, vanished groups."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import structlog.testing
from conftest import Recorder
from helpers import FakeClock, by_id, series, text_of

from exporter import metrics as m
from exporter import poller as poller_module
from exporter.api import ApiClient, HttpStatusError
from exporter.poller import Poller, PollResult, PollTiming, RetryPolicy
from exporter.simulator import Fault, Simulator, error_fault


def metrics_text(recorder: Recorder) -> str:
    return text_of(recorder.last.exposition)


def value(text: str, metric: m.Metric) -> float:
    (result,) = series(text, metric.name).values()
    return result


def failures(text: str) -> dict[tuple[str, str], float]:
    return {
        (dict(k)["status"], dict(k)["code"]): v
        for k, v in series(text, m.API_FAILURES.name).items()
    }


def test_first_poll_publishes_every_group(
    poller: Poller, recorder: Recorder, simulator: Simulator
) -> None:
    assert poller.poll_once() == 60.0
    published = recorder.last
    assert published.ready and published.up
    text = metrics_text(recorder)
    ids = {r["id"] for r in simulator.tenant.records()}
    assert set(by_id(text, m.TOTAL_RECORDS.name)) == ids
    assert value(text, m.UP) == 1
    assert value(text, m.API_REQUESTS) == 1
    assert value(text, m.LAST_POLL_SUCCESS) == 1_800_000_000.0
    assert 0 < value(text, m.POLL_DURATION) < 60


def test_deleted_group_disappears_on_next_poll(
    poller: Poller, recorder: Recorder, simulator: Simulator
) -> None:
    poller.poll_once()
    gone = "16705874370001"
    assert gone in by_id(metrics_text(recorder), m.STATE.name)
    simulator.tenant.delete(gone)
    poller.poll_once()
    text = metrics_text(recorder)
    assert f'id="{gone}"' not in text
    assert len(by_id(text, m.STATE.name)) == len(simulator.tenant.records())


def test_failure_keeps_last_values_until_stale_then_drops_them(
    poller: Poller, recorder: Recorder, simulator: Simulator, clock: FakeClock
) -> None:
    poller.poll_once()
    good = by_id(metrics_text(recorder), m.TOTAL_RECORDS.name)
    simulator.tenant.inject(error_fault(500, 500), error_fault(500, 500), error_fault(500, 500))
    clock.advance(60)
    poller.poll_once()
    text = metrics_text(recorder)
    assert value(text, m.UP) == 0
    assert by_id(text, m.TOTAL_RECORDS.name) == good
    assert failures(text)[("500", "500")] == 1
    assert value(text, m.LAST_POLL_SUCCESS) == 1_800_000_000.0
    assert value(text, m.POLL_DURATION) >= 0  # the failed poll's, not left out
    clock.advance(240)  # 300 s after the last success: not older than stale-after (300 s)
    poller.poll_once()
    assert by_id(metrics_text(recorder), m.TOTAL_RECORDS.name) == good
    clock.advance(1)
    poller.poll_once()
    text = metrics_text(recorder)
    assert by_id(text, m.TOTAL_RECORDS.name) == {}
    assert failures(text)[("500", "500")] == 3
    assert value(text, m.API_REQUESTS) == 4
    counts = {dict(k)["state"]: v for k, v in series(text, m.GROUPS.name).items()}
    assert counts == {"in_progress": 0, "ready": 0, "unknown": 0}
    # Recovery brings everything back.
    poller.poll_once()
    text = metrics_text(recorder)
    assert value(text, m.UP) == 1
    assert by_id(text, m.TOTAL_RECORDS.name) == good


def test_first_poll_failing_is_ready_but_down(
    poller: Poller, recorder: Recorder, simulator: Simulator
) -> None:
    simulator.tenant.inject(Fault(close=True))
    poller.poll_once()
    assert recorder.last.ready
    assert not recorder.last.up
    text = metrics_text(recorder)
    assert failures(text)[("none", "connection")] == 1
    assert by_id(text, m.TOTAL_RECORDS.name) == {}
    assert f"{m.LAST_POLL_SUCCESS.name}{{" not in text


def test_invalid_records_are_counted_and_the_rest_served(
    poller: Poller, recorder: Recorder, simulator: Simulator
) -> None:
    simulator.tenant.put({"id": "broken", "name": "no counts"})
    poller.poll_once()
    text = metrics_text(recorder)
    assert value(text, m.INVALID_GROUPS) == 1
    assert value(text, m.UP) == 1
    assert "broken" not in by_id(text, m.TOTAL_RECORDS.name)
    assert len(by_id(text, m.TOTAL_RECORDS.name)) == len(simulator.tenant.records()) - 1


def test_state_since_follows_transitions(
    poller: Poller, recorder: Recorder, simulator: Simulator, clock: FakeClock
) -> None:
    poller.poll_once()
    record = next(
        r
        for r in simulator.tenant.records()
        if r["targetState"] == 0 and r["id"] != simulator.tenant.stuck_id
    )
    first = by_id(metrics_text(recorder), m.STATE_SINCE.name)[record["id"]]
    assert first <= clock.now
    clock.advance(60)
    simulator.tenant.put({**record, "targetState": 1, "statusValue": "Ready"})
    poller.poll_once()
    text = metrics_text(recorder)
    assert by_id(text, m.STATE_SINCE.name)[record["id"]] == clock.now
    assert by_id(text, m.STATE.name)[record["id"]] == 1


class TestRetryPolicy:
    rng = random.Random(1)

    def test_backoff_doubles_from_min_5s_and_caps_at_interval(self) -> None:
        policy = RetryPolicy(interval=60)
        upper = [
            policy.backoff(n, random.Random(0)) / random.Random(0).uniform(0.5, 1.0)
            for n in range(1, 7)
        ]
        assert upper == pytest.approx([5, 10, 20, 40, 60, 60])

    def test_short_interval_starts_backoff_at_the_interval(self) -> None:
        assert RetryPolicy(interval=2).backoff(1, random.Random(0)) <= 2

    @pytest.mark.parametrize(
        ("interval", "failures", "base"),
        [
            (60, 1, 5.0),
            (60, 2, 10.0),
            (60, 4, 40.0),
            (60, 5, 60.0),
            (30, 1, 5.0),
            (2, 1, 2.0),
            (2, 3, 2.0),
            (0.5, 1, 0.5),
        ],
    )
    def test_backoff_is_exactly_the_base_times_the_jitter(
        self, interval: float, failures: int, base: float
    ) -> None:
        for seed in range(20):
            jitter = random.Random(seed).uniform(0.5, 1.0)
            delay = RetryPolicy(interval=interval).backoff(failures, random.Random(seed))
            assert delay == pytest.approx(base * jitter)

    def test_first_backoff_spans_half_to_full_five_seconds(self) -> None:
        delays = [RetryPolicy(interval=60).backoff(1, self.rng) for _ in range(500)]
        assert all(2.5 <= d <= 5.0 for d in delays)
        assert min(delays) < 2.6 and max(delays) > 4.9

    def test_jitter_stays_within_half_to_full(self) -> None:
        delays = {RetryPolicy(interval=60).backoff(2, self.rng) for _ in range(200)}
        assert min(delays) >= 5 and max(delays) <= 10 and len(delays) > 100

    def test_retry_after_is_honoured_and_capped(self) -> None:
        policy = RetryPolicy(interval=60)
        throttled = HttpStatusError("HTTP 429", "429", "429", retry_after=30)
        assert policy.delay_after(throttled, 1, self.rng) == 30
        throttled.retry_after = 86_400
        assert policy.delay_after(throttled, 1, self.rng) == 60

    def test_key_not_allowed_waits_for_the_next_interval(self) -> None:
        denied = HttpStatusError("HTTP 401", "401", "430")
        assert RetryPolicy(interval=60).delay_after(denied, 1, self.rng) == 60


def transitions(text: str) -> dict[tuple[str, str, str], float]:
    return {
        (dict(k)["behaviour"], dict(k)["from"], dict(k)["to"]): v
        for k, v in series(text, m.TRANSITIONS.name).items()
        if v
    }


def durations(text: str, behaviour: str) -> tuple[float, float]:
    key = frozenset({("tenant", "acme"), ("behaviour", behaviour)})
    name = m.IMPORT_DURATION.name
    return series(text, name + "_sum")[key], series(text, name + "_count")[key]


def _importing(simulator: Simulator) -> dict[str, object]:
    return next(
        r
        for r in simulator.tenant.records()
        if r["targetState"] == 0 and r["id"] != simulator.tenant.stuck_id
    )


def test_failed_polls_count_nothing_and_the_next_good_one_counts_once(
    poller: Poller, recorder: Recorder, simulator: Simulator, clock: FakeClock
) -> None:
    poller.poll_once()
    record = _importing(simulator)
    behaviour = str(record["behaviour"])
    since = by_id(metrics_text(recorder), m.STATE_SINCE.name)[str(record["id"])]
    simulator.tenant.put({**record, "targetState": 1, "statusValue": "Ready"})
    simulator.tenant.inject(error_fault(500, 500), Fault(close=True))
    for _ in range(2):
        clock.advance(60)
        poller.poll_once()
        assert transitions(metrics_text(recorder)) == {}
    clock.advance(60)  # 180 s since the last success: within stale-after, so timed
    poller.poll_once()
    text = metrics_text(recorder)
    assert transitions(text) == {(behaviour, "in_progress", "ready"): 1}
    assert durations(text, behaviour) == (clock.now - since, 1)
    clock.advance(60)
    poller.poll_once()
    assert transitions(metrics_text(recorder)) == {(behaviour, "in_progress", "ready"): 1}


def test_after_a_stale_drop_a_finished_import_counts_but_is_not_timed(
    poller: Poller, recorder: Recorder, simulator: Simulator, clock: FakeClock
) -> None:
    poller.poll_once()
    record = _importing(simulator)
    behaviour = str(record["behaviour"])
    simulator.tenant.put({**record, "targetState": 1, "statusValue": "Ready"})
    simulator.tenant.inject(*[error_fault(500, 500)] * 6)
    for _ in range(6):
        clock.advance(60)
        poller.poll_once()
    assert by_id(metrics_text(recorder), m.STATE.name) == {}  # dropped as stale
    clock.advance(60)
    poller.poll_once()
    text = metrics_text(recorder)
    assert by_id(text, m.STATE.name)[str(record["id"])] == 1
    assert transitions(text) == {(behaviour, "in_progress", "ready"): 1}
    assert durations(text, behaviour) == (0, 0)


def test_polls_further_apart_than_stale_after_are_timed_when_none_failed(
    make_client: Callable[..., ApiClient],
    recorder: Recorder,
    simulator: Simulator,
    clock: FakeClock,
) -> None:
    poller = Poller(
        make_client(), "acme", "UTC", interval=60.0, stale_after=30.0, publish=recorder, clock=clock
    )
    poller.poll_once()
    record = _importing(simulator)
    simulator.tenant.put({**record, "targetState": 1, "statusValue": "Ready"})
    clock.advance(60)
    poller.poll_once()
    assert durations(metrics_text(recorder), str(record["behaviour"]))[1] == 1


def test_poller_backs_off_from_five_seconds_after_a_failure(
    make_client: Callable[..., ApiClient], recorder: Recorder, simulator: Simulator
) -> None:
    """The poller's own policy, with its jitter drawn from the rng it was given."""
    poller = Poller(
        make_client(),
        tenant="acme",
        timezone="UTC",
        interval=60.0,
        stale_after=300.0,
        publish=recorder,
        clock=FakeClock(),
        rng=random.Random(7),
    )
    expected = random.Random(7)
    simulator.tenant.inject(error_fault(500, 500), error_fault(500, 500))
    assert poller.poll_once() == pytest.approx(5.0 * expected.uniform(0.5, 1.0))
    assert poller.poll_once() == pytest.approx(10.0 * expected.uniform(0.5, 1.0))
    assert poller.poll_once() == 60.0


class OnePublishAtATime(Recorder):
    """A recorder the test can wait on."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = threading.Semaphore(0)

    def __call__(self, result: PollResult) -> None:
        super().__call__(result)
        self.arrived.release()


def test_run_polls_at_once_then_waits_for_the_interval_until_stopped(
    make_client: Callable[..., ApiClient],
) -> None:
    published = OnePublishAtATime()
    after: list[int] = []
    poller = Poller(
        make_client(), "acme", "UTC", interval=3600.0, stale_after=300.0, publish=published
    )
    thread = threading.Thread(target=poller.run, args=(lambda: after.append(1),), daemon=True)
    thread.start()
    assert published.arrived.acquire(timeout=60)  # the first poll comes at once
    poller.stop()  # and the hour-long wait ends now
    thread.join(60)
    assert not thread.is_alive()
    assert len(published.published) == 1
    assert after == [1]
    assert published.last.up


def test_a_crashing_poll_is_logged_and_the_loop_goes_on(
    make_client: Callable[..., ApiClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    poller = Poller(make_client(), "acme", "UTC", 3600.0, 300.0, publish=Recorder())
    crashed = threading.Event()

    def crash() -> float:
        crashed.set()
        raise RuntimeError("a bug")

    monkeypatch.setattr(poller, "poll_once", crash)
    after = threading.Event()
    with structlog.testing.capture_logs() as logs:
        thread = threading.Thread(target=poller.run, args=(after.set,), daemon=True)
        thread.start()
        assert after.wait(60)  # the loop survived the crash
        poller.stop()
        thread.join(60)
    assert not thread.is_alive()
    assert crashed.is_set()
    (entry,) = [e for e in logs if e["event"] == "poll_crashed"]
    assert entry["tenant"] == "acme"
    assert entry["log_level"] == "error"
    assert entry["exc_info"] is True


# --- log events: one line per state change, stable keys ------------------------------------


def events(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["log_level"] != "debug"]


def test_state_changes_are_logged_once_each(
    poller: Poller, simulator: Simulator, clock: FakeClock
) -> None:
    simulator.tenant.inject(
        error_fault(500, 500), error_fault(500, 500), error_fault(401, 498), error_fault(401, 498)
    )
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            poller.poll_once()
            clock.advance(1)
    down, changed, up = events(logs)
    assert {k: down[k] for k in ("event", "tenant", "status", "code", "fix", "log_level")} == {
        "event": "api_down",
        "tenant": "acme",
        "status": "500",
        "code": "500",
        "fix": None,
        "log_level": "error",
    }
    assert down["detail"] == "HTTP 500"
    assert {k: changed[k] for k in ("event", "status", "code", "fix")} == {
        "event": "api_failure_changed",
        "status": "401",
        "code": "498",
        "fix": "the key or token is invalid or expired: rotate the key file or check it",
    }
    groups = len(simulator.tenant.records())
    assert up == {
        "event": "api_up",
        "tenant": "acme",
        "groups": groups,
        "failed_polls": 4,
        "log_level": "info",
    }


def test_going_down_after_being_up_is_api_down(poller: Poller, simulator: Simulator) -> None:
    poller.poll_once()
    simulator.tenant.inject(error_fault(404, 404))
    with structlog.testing.capture_logs() as logs:
        poller.poll_once()
    (entry,) = events(logs)
    assert (entry["event"], entry["status"], entry["code"]) == ("api_down", "404", "404")


def test_invalid_records_are_logged_when_their_count_changes(
    poller: Poller, simulator: Simulator
) -> None:
    for index in range(7):
        simulator.tenant.put({"id": f"broken-{index}", "name": "no counts"})
    with structlog.testing.capture_logs() as logs:
        poller.poll_once()
        poller.poll_once()  # same count: not again
        simulator.tenant.delete("broken-0")
        poller.poll_once()
    warnings = [entry for entry in events(logs) if entry["event"] == "invalid_records"]
    assert [entry["count"] for entry in warnings] == [7, 6]
    first = warnings[0]
    assert first["tenant"] == "acme"
    assert first["log_level"] == "warning"
    examples = first["examples"]
    assert isinstance(examples, list)
    assert len(examples) == 5
    assert all(str(example).startswith("record ") for example in examples)


def test_dropping_stale_series_is_logged(
    poller: Poller, simulator: Simulator, clock: FakeClock
) -> None:
    poller.poll_once()
    groups = len(simulator.tenant.records())
    simulator.tenant.inject(error_fault(500, 500), error_fault(500, 500))
    clock.advance(301)
    with structlog.testing.capture_logs() as logs:
        poller.poll_once()
        poller.poll_once()  # nothing left to drop: not again
    dropped = [entry for entry in logs if entry["event"] == "stale_series_dropped"]
    assert dropped == [
        {
            "event": "stale_series_dropped",
            "tenant": "acme",
            "groups": groups,
            "stale_after_s": 300.0,
            "log_level": "warning",
        }
    ]


def test_poll_timing_logs_where_the_time_went() -> None:
    now = time.monotonic()
    timing = PollTiming(groups=3, fetch_s=0.5, started=now - 2.0, received=now - 1.0)
    with structlog.testing.capture_logs() as logs:
        timing.log_published("acme")
    (entry,) = logs
    assert (entry["event"], entry["tenant"], entry["groups"], entry["fetch_s"]) == (
        "poll_completed",
        "acme",
        3,
        0.5,
    )
    assert entry["log_level"] == "debug"
    assert 1.0 <= entry["processing_s"] < entry["duration_s"]
    assert entry["duration_s"] - entry["processing_s"] == pytest.approx(1.0, abs=1e-3)


class RecordedWaits(threading.Event):
    """The poller's waits, recorded and returned at once; set after `polls` of them."""

    def __init__(self, polls: int) -> None:
        super().__init__()
        self.waits: list[float] = []
        self._polls = polls

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        if len(self.waits) >= self._polls:
            self.set()
        return self.is_set()


def test_the_schedule_runs_start_to_start(
    make_client: Callable[..., ApiClient],
    simulator: Simulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each wait is the poll's delay less the time the poll took (never below zero)."""
    monotonic = FakeClock(start=500.0)
    monkeypatch.setattr(poller_module, "time", SimpleNamespace(monotonic=monotonic))

    def publish(result: PollResult) -> None:
        monotonic.advance(2.0)  # each poll takes 2 s

    poller = Poller(make_client(), "acme", "UTC", 60.0, 300.0, publish, rng=random.Random(7))
    waits = RecordedWaits(polls=3)
    poller._stop = waits
    simulator.tenant.inject(error_fault(500, 500), error_fault(500, 500))
    jitter = random.Random(7)
    first, second = 5.0 * jitter.uniform(0.5, 1.0), 10.0 * jitter.uniform(0.5, 1.0)
    poller.run()
    assert waits.waits == pytest.approx([first - 2.0, second - 2.0, 58.0])


def test_a_poll_longer_than_its_delay_is_followed_at_once(
    make_client: Callable[..., ApiClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monotonic = FakeClock(start=500.0)
    monkeypatch.setattr(poller_module, "time", SimpleNamespace(monotonic=monotonic))

    def slow_publish(result: PollResult) -> None:
        monotonic.advance(90.0)  # longer than the 60 s interval

    poller = Poller(make_client(), "acme", "UTC", 60.0, 300.0, slow_publish)
    waits = RecordedWaits(polls=1)
    poller._stop = waits
    poller.run()
    assert waits.waits == [0.0]


def test_after_a_crash_the_next_poll_comes_one_interval_later(
    make_client: Callable[..., ApiClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monotonic = FakeClock(start=500.0)
    monkeypatch.setattr(poller_module, "time", SimpleNamespace(monotonic=monotonic))
    poller = Poller(make_client(), "acme", "UTC", 60.0, 300.0, Recorder())

    def crash() -> float:
        raise RuntimeError("a bug")

    monkeypatch.setattr(poller, "poll_once", crash)
    waits = RecordedWaits(polls=2)
    poller._stop = waits
    poller.run()
    assert waits.waits == [60.0, 60.0]


def test_the_poller_hands_over_data_and_stale_after_drops_it(
    poller: Poller, recorder: Recorder, simulator: Simulator, clock: FakeClock
) -> None:
    poller.poll_once()
    first = recorder.results[-1]
    assert first.block is not None
    rendered = by_id(metrics_text(recorder), m.TOTAL_RECORDS.name)
    assert first.block.groups == len(rendered) > 0
    assert first.health.up and first.timing is not None
    simulator.tenant.inject(error_fault(500, 500), error_fault(500, 500))
    clock.advance(60)
    poller.poll_once()
    failed = recorder.results[-1]
    assert failed.block is None  # nothing new: the last values hold, until stale
    assert by_id(metrics_text(recorder), m.TOTAL_RECORDS.name) == rendered
    assert not failed.health.up and failed.timing is None
    clock.advance(300)
    poller.poll_once()
    dropped = recorder.results[-1].block
    assert dropped is not None and dropped.groups == 0
    assert by_id(metrics_text(recorder), m.TOTAL_RECORDS.name) == {}


def test_a_first_poll_that_succeeds_logs_api_up(poller: Poller, simulator: Simulator) -> None:
    with structlog.testing.capture_logs() as logs:
        poller.poll_once()
    (entry,) = events(logs)
    assert (entry["event"], entry["failed_polls"]) == ("api_up", 0)


def test_a_first_poll_that_fails_reports_no_invalid_groups_and_no_groups(
    poller: Poller, recorder: Recorder, simulator: Simulator
) -> None:
    simulator.tenant.inject(error_fault(500, 500))
    poller.poll_once()
    text = metrics_text(recorder)
    assert value(text, m.INVALID_GROUPS) == 0
    assert value(text, m.UP) == 0
    assert 0 <= value(text, m.POLL_DURATION) < 60  # this attempt's, however it ended
    assert by_id(text, m.TOTAL_RECORDS.name) == {}


def test_a_successful_poll_counts_its_groups_by_state(
    poller: Poller, recorder: Recorder, simulator: Simulator
) -> None:
    poller.poll_once()
    counts = series(metrics_text(recorder), m.GROUPS.name)
    assert sum(counts.values()) == len(simulator.tenant.records())
    assert {dict(labels)["state"] for labels in counts} == set(m.STATES)
