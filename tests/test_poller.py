"""The poller: snapshots, counters, up, stale-after, retry policy, vanished groups."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from conftest import Recorder
from helpers import FakeClock, by_id, series, text_of

from exporter import metrics as m
from exporter.api import ApiClient, HttpStatusError
from exporter.poller import Poller, RetryPolicy
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
    assert value(text, m.POLL_DURATION) > 0


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
    clock.advance(239)  # 299 s after the last success: still within stale-after (300 s)
    poller.poll_once()
    assert by_id(metrics_text(recorder), m.TOTAL_RECORDS.name) == good
    clock.advance(2)
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


def test_the_poller_hands_over_data_and_stale_after_drops_it(
    poller: Poller, recorder: Recorder, simulator: Simulator, clock: FakeClock
) -> None:
    poller.poll_once()
    first = recorder.results[-1]
    assert first.samples is not None
    rendered = by_id(metrics_text(recorder), m.TOTAL_RECORDS.name)
    assert sorted(sample.group.id for sample in first.samples) == sorted(rendered)
    assert first.health.up and first.timing is not None
    simulator.tenant.inject(error_fault(500, 500), error_fault(500, 500))
    clock.advance(60)
    poller.poll_once()
    failed = recorder.results[-1]
    assert failed.samples is None  # nothing new: the last values hold, until stale
    assert by_id(metrics_text(recorder), m.TOTAL_RECORDS.name) == rendered
    assert not failed.health.up and failed.timing is None
    clock.advance(300)
    poller.poll_once()
    assert recorder.results[-1].samples == ()
