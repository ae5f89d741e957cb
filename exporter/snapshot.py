"""One poll's groups as exported, and state-since bookkeeping across polls."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from .records import DateParser, TargetGroup


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


_Seen = tuple[int | None, float, str | None, float | None, str | None, float | None]


class StateTracker:
    """Remembers, per group id, its state and when the exporter saw it enter that state.

    A group seen for the first time (at start, or after it appeared) entered its
    state at `lastUpdatedOn` when that is older than now: a state change updates
    the group, so that is the best estimate after a restart. A change seen
    between two polls is dated to the poll that saw it. Groups that vanish are
    forgotten, so memory follows the tenant's size.
    """

    def __init__(self) -> None:
        # id -> (state, since, createdOn, created, lastUpdatedOn, last updated): small
        # enough to keep between polls, unlike the records themselves.
        self._seen: dict[str, _Seen] = {}

    def observe(
        self, groups: Iterable[TargetGroup], now: float, parse_date: DateParser
    ) -> tuple[GroupSample, ...]:
        seen: dict[str, _Seen] = {}
        samples: list[GroupSample] = []
        previous = self._seen
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
            seen[group.id] = (state, since, created_on, created, updated_on, updated)
            samples.append(GroupSample(group, state, created, updated, since))
        self._seen = seen
        return tuple(samples)
