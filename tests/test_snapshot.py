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
