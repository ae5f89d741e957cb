"""The simulated tenant: the demo's imports start, take their time and finish."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conftest import Recorder
from helpers import FakeClock, series, text_of

from exporter import metrics as m
from exporter.poller import Poller
from exporter.simulator import Simulator, Tenant


def test_imports_are_created_in_progress_and_finish_after_some_steps() -> None:
    moment = [datetime(2026, 11, 30, 12, 0, tzinfo=UTC)]
    tenant = Tenant(clock=lambda: moment[0])
    started: dict[str, int] = {}
    durations: list[int] = []
    with_errors = 0
    states = {r["id"]: r["targetState"] for r in tenant.records()}
    for step in range(1, 241):  # an hour of the demo's 15 s steps
        moment[0] += timedelta(seconds=15)
        tenant.advance()
        for record in tenant.records():
            before = states.get(record["id"])
            if before is None:
                assert record["targetState"] == 0, "new groups start in progress"
                started[record["id"]] = step
            elif before == 0 and record["targetState"] == 1:
                assert record["statusValue"] == "Ready"
                if record["id"] in started:
                    durations.append(step - started[record["id"]])
                with_errors += record["errorcount"] > 0
        states = {r["id"]: r["targetState"] for r in tenant.records()}
    assert len(started) >= 25  # one new import every 8 steps
    assert len(durations) >= 20
    assert min(durations) >= 2 and max(durations) <= 64
    assert len(set(durations)) >= 8, "imports take different times"
    assert with_errors >= 1, "some imports finish with error records"
    assert states[tenant.stuck_id] == 0


def test_polling_the_evolving_tenant_moves_both_lifecycle_metrics(
    poller: Poller, recorder: Recorder, simulator: Simulator, clock: FakeClock
) -> None:
    for _ in range(40):
        poller.poll_once()
        simulator.tenant.advance()
        clock.advance(15)
    text = text_of(recorder.last.exposition)
    finished = sum(
        value
        for labels, value in series(text, m.TRANSITIONS.name).items()
        if ("from", "in_progress") in labels and ("to", "ready") in labels
    )
    observed = sum(series(text, m.IMPORT_DURATION.name + "_count").values())
    assert finished >= 3
    assert observed == finished  # polls never failed, so every finished import is timed
