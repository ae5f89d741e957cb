"""State-since bookkeeping across polls."""

from __future__ import annotations

from exporter.records import DateParser, TargetGroup, validate_record
from exporter.simulator import SEED_RECORDS
from exporter.snapshot import StateTracker, count_by_state

UPDATED = 1671030960.0  # 14/Dec/2022 15:16 UTC, lastUpdatedOn of the first seed record
T0 = 1_800_000_000.0


def group(**change: object) -> TargetGroup:
    return validate_record({**SEED_RECORDS[0], **change})


def since(tracker: StateTracker, groups: list[TargetGroup], now: float) -> dict[str, float]:
    return {s.group.id: s.state_since for s in tracker.observe(groups, now, DateParser("UTC"))}


def test_first_sight_uses_last_updated_when_older() -> None:
    assert since(StateTracker(), [group()], T0) == {"16710111730000": UPDATED}


def test_first_sight_of_a_future_or_missing_update_is_now() -> None:
    tracker = StateTracker()
    assert since(tracker, [group(lastUpdatedOn="01/Jan/2099 00:00")], T0)["16710111730000"] == T0
    assert since(StateTracker(), [group(lastUpdatedOn="")], T0)["16710111730000"] == T0


def test_unchanged_state_keeps_its_since() -> None:
    tracker = StateTracker()
    since(tracker, [group(targetState=0)], T0)
    assert since(tracker, [group(targetState=0)], T0 + 60) == {"16710111730000": UPDATED}


def test_observed_transition_is_dated_to_the_poll_that_saw_it() -> None:
    tracker = StateTracker()
    since(tracker, [group(targetState=0)], T0)
    assert since(tracker, [group(targetState=1)], T0 + 60)["16710111730000"] == T0 + 60
    assert since(tracker, [group(targetState=1)], T0 + 120)["16710111730000"] == T0 + 60
    assert since(tracker, [group(targetState=0)], T0 + 180)["16710111730000"] == T0 + 180


def test_vanished_group_is_forgotten_and_starts_over_when_back() -> None:
    tracker = StateTracker()
    since(tracker, [group(targetState=0)], T0)
    since(tracker, [group(targetState=1)], T0 + 60)
    since(tracker, [], T0 + 120)
    # Back after a gap: first sight again, so lastUpdatedOn.
    assert since(tracker, [group(targetState=1)], T0 + 180)["16710111730000"] == UPDATED


def test_count_by_state_always_has_all_three() -> None:
    tracker = StateTracker()
    samples = tracker.observe(
        [
            group(id="a", targetState=0),
            group(id="b"),
            group(id="c", targetState=None, statusValue="?"),
        ],
        T0,
        DateParser("UTC"),
    )
    assert count_by_state(samples) == {"in_progress": 1, "ready": 1, "unknown": 1}
    assert count_by_state(()) == {"in_progress": 0, "ready": 0, "unknown": 0}


def dates(tracker: StateTracker, record: dict[str, object], now: float) -> tuple[object, ...]:
    (sample,) = tracker.observe([group(**record)], now, DateParser("UTC"))
    return sample.created, sample.last_updated, sample.state, sample.state_since


def test_dates_are_reparsed_when_either_one_changes() -> None:
    """Unchanged date strings reuse the last poll's parse; a change to either is seen."""
    tracker = StateTracker()
    first = dates(tracker, {"createdOn": "01/Dec/2022 00:00"}, T0)
    assert first == (1669852800.0, UPDATED, 1, UPDATED)
    assert dates(tracker, {"createdOn": "01/Dec/2022 00:00"}, T0 + 60) == first
    changed_update = dates(
        tracker, {"createdOn": "01/Dec/2022 00:00", "lastUpdatedOn": "15/Dec/2022 00:00"}, T0 + 120
    )
    assert changed_update == (1669852800.0, 1671062400.0, 1, UPDATED)
    changed_created = dates(
        tracker, {"createdOn": "02/Dec/2022 00:00", "lastUpdatedOn": "15/Dec/2022 00:00"}, T0 + 180
    )
    assert changed_created == (1669939200.0, 1671062400.0, 1, UPDATED)


def test_a_group_first_seen_takes_each_sample_field_from_its_record() -> None:
    tracker = StateTracker()
    (sample,) = tracker.observe([group(targetState=0)], T0, DateParser("UTC"))
    assert sample.group == group(targetState=0)
    assert sample.state == 0
    assert (sample.created, sample.last_updated) == (UPDATED, UPDATED)
