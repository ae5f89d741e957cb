"""One poll's groups as exported, and state-since bookkeeping across polls."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from . import metrics as m
from .records import DateParser, TargetGroup, text


class GroupSample(NamedTuple):
    """One target group as exported: the record plus derived timestamps.

    A named tuple: built and hashed in C, which counts at 100,000 groups a poll.
    """

    group: TargetGroup
    state: int | None
    created: float | None
    last_updated: float | None
    state_since: float


_STATE_NAMES = {0: "in_progress", 1: "ready"}


def count_by_state(samples: Iterable[GroupSample]) -> dict[str, int]:
    """Groups per `state` label value, all three always present."""
    counts = {"in_progress": 0, "ready": 0, "unknown": 0}
    for sample in samples:
        counts[_STATE_NAMES.get(sample.state, "unknown")] += 1  # type: ignore[arg-type]
    return counts


@dataclass(frozen=True, slots=True)
class Durations:
    """One behaviour's import-duration histogram: counts per bucket (not cumulative,
    the last one is `+Inf`), sum and count."""

    buckets: tuple[int, ...]
    sum: float
    count: int

    @classmethod
    def empty(cls) -> Durations:
        return cls((0,) * (len(m.IMPORT_DURATION_BUCKETS) + 1), 0.0, 0)

    def observe(self, seconds: float) -> Durations:
        index = bisect.bisect_left(m.IMPORT_DURATION_BUCKETS, seconds)  # le: upper bound counts
        buckets = list(self.buckets)
        buckets[index] += 1
        return Durations(tuple(buckets), self.sum + seconds, self.count + 1)

    def cumulative(self) -> list[int]:
        total, out = 0, []
        for count in self.buckets:
            total += count
            out.append(total)
        return out


def _initial_transitions() -> dict[tuple[str, str, str], int]:
    return {
        (behaviour, before, after): 0
        for behaviour in m.LIFECYCLE_BEHAVIOURS
        for before, after in m.TRANSITION_PAIRS
    }


def _initial_durations() -> dict[str, Durations]:
    return dict.fromkeys(m.LIFECYCLE_BEHAVIOURS, Durations.empty())


@dataclass(frozen=True)
class Lifecycle:
    """The tenant's lifecycle counters as exported: transitions by (behaviour, from, to),
    import durations by behaviour. Small (tens of series a tenant); picklable."""

    transitions: Mapping[tuple[str, str, str], int] = field(default_factory=_initial_transitions)
    durations: Mapping[str, Durations] = field(default_factory=_initial_durations)


_Seen = tuple[int | None, float, str | None, float | None, str | None, float | None]


class StateTracker:
    """Remembers, per group id, its state and when the exporter saw it enter that state.

    A group seen for the first time (at start, or after it appeared) entered its
    state at `lastUpdatedOn` when that is older than now: a state change updates
    the group, so that is the best estimate after a restart. A change seen
    between two polls is dated to the poll that saw it. Groups that vanish are
    forgotten, so memory follows the tenant's size.

    It also counts those changes (the lifecycle metrics): only a group seen in
    two successive polls can change, so the first poll, a group that appears
    and a group that vanishes count nothing. Failed polls never reach it, and it
    keeps its memory through them (and through a stale-after drop): a group that
    finished while the API was unreachable counts once when polls succeed again.
    One tracker per tenant, so a tenant keeps its counters as long as its poller.
    """

    def __init__(self) -> None:
        # id -> (state, since, createdOn, created, lastUpdatedOn, last updated): small
        # enough to keep between polls, unlike the records themselves.
        self._seen: dict[str, _Seen] = {}
        self._transitions = _initial_transitions()
        self._durations = _initial_durations()
        self._lifecycle = Lifecycle(dict(self._transitions), dict(self._durations))

    @property
    def lifecycle(self) -> Lifecycle:
        """The counters so far; the same object until a poll counts something."""
        return self._lifecycle

    def observe(
        self,
        groups: Iterable[TargetGroup],
        now: float,
        parse_date: DateParser,
        timed: bool = True,
    ) -> tuple[GroupSample, ...]:
        """This poll's samples; counts the state changes since the previous call.

        `timed=False` after a long outage (polls failed for longer than the
        stale-after period): changes still count as transitions, but no import
        duration is observed, since the change happened somewhere in the gap and
        timing it to this poll would report the outage as slow imports.
        """
        seen: dict[str, _Seen] = {}
        samples: list[GroupSample] = []
        previous = self._seen
        changes: list[tuple[TargetGroup, int | None, _Seen]] = []
        for group in groups:
            state = group.state
            created_on, updated_on = group.created_on, group.last_updated_on
            before = previous.get(group.id)
            if before is not None and before[2] == created_on and before[4] == updated_on:
                created, updated = before[3], before[5]  # most groups, most polls: no parsing
            else:
                created, updated = parse_date(created_on), parse_date(updated_on)
            if before is not None and before[0] == state:
                since = before[1]
            elif before is None and updated is not None and updated < now:
                since = updated
            else:
                since = now
                if before is not None:
                    changes.append((group, state, before))
            seen[group.id] = (state, since, created_on, created, updated_on, updated)
            samples.append(GroupSample(group, state, created, updated, since))
        self._seen = seen
        if changes:
            self._count(changes, now, timed)
        return tuple(samples)

    def _count(
        self, changes: list[tuple[TargetGroup, int | None, _Seen]], now: float, timed: bool
    ) -> None:
        """Count the groups that changed state; few a poll, so kept off the loop above."""
        for group, state, before in changes:
            behaviour = text(group.behaviour)
            was, is_ = _state_name(before[0]), _state_name(state)
            key = (behaviour, was, is_)
            self._transitions[key] = self._transitions.get(key, 0) + 1
            if timed and was == "in_progress" and is_ == "ready":
                durations = self._durations.get(behaviour) or Durations.empty()
                self._durations[behaviour] = durations.observe(max(0.0, now - before[1]))
        self._lifecycle = Lifecycle(dict(self._transitions), dict(self._durations))


def _state_name(state: int | None) -> str:
    return _STATE_NAMES.get(state, "unknown")  # type: ignore[arg-type]
