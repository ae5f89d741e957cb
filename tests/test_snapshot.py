"""State-since bookkeeping and lifecycle counting across polls."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from exporter import metrics
from exporter.records import DateParser, TargetGroup, validate_record
from exporter.simulator import SEED_RECORDS, format_date
from exporter.snapshot import Durations, Lifecycle, StateTracker, count_by_state

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
    assert count_by_state(samples * 3) == {"in_progress": 3, "ready": 3, "unknown": 3}
    assert count_by_state(()) == {"in_progress": 0, "ready": 0, "unknown": 0}


# -- Lifecycle: transitions and import durations --------------------------------------


def poll(
    tracker: StateTracker, groups: list[TargetGroup], now: float, timed: bool = True
) -> Lifecycle:
    tracker.observe(groups, now, DateParser("UTC"), timed)
    return tracker.lifecycle


def minutes_before(now: float, minutes: int) -> str:
    return format_date(datetime.fromtimestamp(now - 60 * minutes, UTC), ZoneInfo("UTC"))


def counted(lifecycle: Lifecycle) -> dict[tuple[str, str, str], int]:
    """The transitions that are not 0."""
    return {key: count for key, count in lifecycle.transitions.items() if count}


def test_start_exports_every_pair_and_bucket_of_s_and_d_at_zero() -> None:
    lifecycle = StateTracker().lifecycle
    assert lifecycle.transitions == {
        (behaviour, before, after): 0
        for behaviour in ("S", "D")
        for before in ("in_progress", "ready", "unknown")
        for after in ("in_progress", "ready", "unknown")
        if before != after
    }
    assert set(lifecycle.durations) == {"S", "D"}
    for durations in lifecycle.durations.values():
        assert durations.buckets == (0,) * 13
        assert (durations.sum, durations.count) == (0.0, 0)


def test_first_poll_counts_nothing_whatever_the_states() -> None:
    tracker = StateTracker()
    groups = [
        group(id="a", targetState=0),
        group(id="b", targetState=1),
        group(id="c", targetState=None, statusValue="?"),
    ]
    assert poll(tracker, groups, T0) == Lifecycle()
    assert poll(tracker, groups, T0 + 60) == Lifecycle()


def test_a_group_that_appears_ready_counts_nothing() -> None:
    tracker = StateTracker()
    poll(tracker, [group(id="a")], T0)
    lifecycle = poll(tracker, [group(id="a"), group(id="new", targetState=1)], T0 + 60)
    assert lifecycle == Lifecycle()


def test_appears_in_progress_then_ready_counts_one_transition_and_one_duration() -> None:
    tracker = StateTracker()
    poll(tracker, [], T0)
    fresh = group(id="new", targetState=0, lastUpdatedOn=minutes_before(T0 + 60, 2))
    assert poll(tracker, [fresh], T0 + 60) == Lifecycle()  # appearing counts nothing
    poll(tracker, [fresh], T0 + 120)
    done = group(id="new", targetState=1, statusValue="Ready", behaviour="D")
    lifecycle = poll(tracker, [done], T0 + 360)
    assert counted(lifecycle) == {("D", "in_progress", "ready"): 1}
    durations = lifecycle.durations["D"]
    # In progress since lastUpdatedOn (2 minutes before it was first seen), ready at T0+360.
    assert durations.count == 1
    assert durations.sum == 420.0
    assert durations.buckets[metrics.IMPORT_DURATION_BUCKETS.index(600.0)] == 1
    assert durations.cumulative()[-1] == 1
    assert lifecycle.durations["S"] == Durations.empty()
    # Ready from then on: nothing more.
    assert poll(tracker, [done], T0 + 420) is lifecycle


def test_groups_ready_in_the_same_poll_add_up() -> None:
    tracker = StateTracker()
    poll(tracker, [], T0)
    ids = ("a", "b", "c")
    poll(tracker, [group(id=i, targetState=0, lastUpdatedOn=None) for i in ids], T0 + 60)
    lifecycle = poll(tracker, [group(id=i, targetState=1) for i in ids[:2]], T0 + 120)
    assert counted(lifecycle) == {("S", "in_progress", "ready"): 2}  # "c" vanished: nothing
    durations = lifecycle.durations["S"]
    assert (durations.count, durations.sum) == (2, 120.0)
    assert durations.buckets[0] == 2  # 60 s each: the first bucket's bound
    # Seen ready at the very time it was first seen in progress: a duration of 0.
    poll(tracker, [group(id="d", targetState=0, lastUpdatedOn=None)], T0 + 180)
    zero = poll(tracker, [group(id="d", targetState=1)], T0 + 180).durations["S"]
    assert (zero.count, zero.sum) == (3, 120.0)


def test_a_bound_counts_in_its_own_bucket() -> None:
    assert Durations.empty().observe(60.0).buckets[0] == 1
    assert Durations.empty().observe(60.5).buckets[1] == 1
    assert Durations.empty().observe(86_401.0).buckets[-1] == 1


def test_a_group_that_disappears_counts_nothing() -> None:
    tracker = StateTracker()
    poll(tracker, [group(id="a", targetState=0), group(id="b")], T0)
    assert poll(tracker, [group(id="b")], T0 + 60) == Lifecycle()


def test_other_transitions_count_without_a_duration() -> None:
    tracker = StateTracker()
    poll(tracker, [group(id="a"), group(id="b", targetState=0)], T0)
    lifecycle = poll(
        tracker,
        [group(id="a", targetState=0), group(id="b", targetState=None, statusValue="?")],
        T0 + 60,
    )
    assert counted(lifecycle) == {
        ("S", "ready", "in_progress"): 1,
        ("S", "in_progress", "unknown"): 1,
    }
    assert lifecycle.durations == Lifecycle().durations


def test_a_behaviour_first_seen_changing_gets_its_series() -> None:
    tracker = StateTracker()
    poll(tracker, [group(id="a", targetState=0, behaviour="X", lastUpdatedOn="")], T0)
    lifecycle = poll(tracker, [group(id="a", targetState=1, behaviour="X")], T0 + 90)
    assert counted(lifecycle) == {("X", "in_progress", "ready"): 1}
    assert lifecycle.durations["X"].sum == 90.0


def test_an_untimed_poll_counts_transitions_but_observes_no_duration() -> None:
    tracker = StateTracker()
    poll(tracker, [group(id="a", targetState=0, lastUpdatedOn="")], T0)
    # Polls failed for 10 minutes: it finished somewhere in between.
    lifecycle = poll(tracker, [group(id="a", targetState=1)], T0 + 600, timed=False)
    assert counted(lifecycle) == {("S", "in_progress", "ready"): 1}
    assert lifecycle.durations["S"].count == 0
    # The next one is timed again.
    poll(tracker, [group(id="b", targetState=0, lastUpdatedOn="")], T0 + 660)
    assert poll(tracker, [group(id="b", targetState=1)], T0 + 720).durations["S"].sum == 60.0


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


class CountingDates(DateParser):
    """A DateParser that counts the strings it is asked to parse."""

    def __init__(self) -> None:
        super().__init__("UTC")
        self.calls = 0

    def __call__(self, value: str | None) -> float | None:
        self.calls += 1
        return super().__call__(value)


def test_an_unchanged_group_parses_no_date_and_keeps_its_sample() -> None:
    tracker, dates = StateTracker(), CountingDates()
    (first,) = tracker.observe([group(targetState=0)], T0, dates)
    assert dates.calls == 2
    (again,) = tracker.observe([group(targetState=0, name="renamed")], T0 + 60, dates)
    assert dates.calls == 2
    assert (again.state, again.created, again.last_updated, again.state_since) == (
        first.state,
        first.created,
        first.last_updated,
        first.state_since,
    )
    assert again.group.name == "renamed"  # the sample carries this poll's record


def test_a_state_change_is_seen_with_the_dates_unchanged() -> None:
    tracker, dates = StateTracker(), CountingDates()
    tracker.observe([group(targetState=None, statusValue="Inprogress")], T0, dates)
    (sample,) = tracker.observe([group(targetState=None, statusValue="Ready")], T0 + 60, dates)
    assert (sample.state, sample.state_since) == (1, T0 + 60)
    assert dates.calls == 2  # the dates did not change: parsed once, at first sight
    assert tracker.lifecycle.transitions[("S", "in_progress", "ready")] == 1
    assert tracker.lifecycle.durations["S"].count == 1


def test_an_update_parses_only_the_date_that_changed() -> None:
    """An import's progress changes lastUpdatedOn, never createdOn: one parse, not two
    (at 100,000 groups all updating, a tenth of the poll)."""
    tracker, dates = StateTracker(), CountingDates()
    created = "01/Dec/2022 00:00"  # not the same text as any lastUpdatedOn below
    (first,) = tracker.observe([group(targetState=0, createdOn=created)], T0, dates)
    assert dates.calls == 2
    (updated,) = tracker.observe(
        [group(targetState=0, createdOn=created, lastUpdatedOn="15/Dec/2022 00:00")],
        T0 + 60,
        dates,
    )
    assert dates.calls == 3
    assert (updated.created, updated.last_updated) == (first.created, 1671062400.0)
    (recreated,) = tracker.observe(
        [group(targetState=0, createdOn="02/Dec/2022 00:00", lastUpdatedOn="15/Dec/2022 00:00")],
        T0 + 120,
        dates,
    )
    assert dates.calls == 4
    assert (recreated.created, recreated.last_updated) == (1669939200.0, 1671062400.0)


def test_an_update_without_a_state_change_counts_no_transition() -> None:
    tracker = StateTracker()
    tracker.observe([group(targetState=1)], T0, DateParser("UTC"))
    before = dict(tracker.lifecycle.transitions)
    tracker.observe(
        [group(targetState=1, totalCount=9.0, lastUpdatedOn="15/Dec/2022 00:00")],
        T0 + 60,
        DateParser("UTC"),
    )
    assert dict(tracker.lifecycle.transitions) == before


def test_a_poll_hands_the_memory_over_group_by_group_and_one_that_never_ended_keeps_it() -> None:
    tracker, dates = StateTracker(), DateParser("UTC")
    tracker.observe([group(id="a", targetState=0), group(id="b", targetState=0)], T0, dates)
    tracker.begin()
    assert tracker.carry(["a"])
    assert not tracker.carry(["a"])  # in this poll already
    assert not tracker.carry(["zzz"])  # not in the last one
    tracker.add([group(id="b", targetState=1)], T0 + 60, dates)
    assert tracker._seen == {}  # both handed over, none left behind twice
    tracker.begin()  # the last poll never ended (a bug halfway): what it saw stays
    (sample,) = tracker.observe([group(id="b", targetState=1)], T0 + 120, dates)
    assert sample.state_since == T0 + 60
    assert tracker.lifecycle.transitions[("S", "in_progress", "ready")] == 0  # uncounted
