"""One poll's groups as exported, and state-since bookkeeping across polls."""

from __future__ import annotations

import bisect
import operator
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial, reduce
from itertools import compress, count, repeat
from operator import add, is_, ne, or_
from typing import TYPE_CHECKING, NamedTuple, cast

from . import metrics as m
from .payload import text

if TYPE_CHECKING:  # the serving process stitches: it never loads the records (msgspec)
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
        return self.observe_all([seconds])

    def observe_all(self, seconds: list[float]) -> Durations:
        """These durations observed, in order (the sum adds them one by one)."""
        buckets = list(self.buckets)
        for index, times in Counter(map(_bucket, seconds)).items():
            buckets[index] += times
        return Durations(tuple(buckets), reduce(add, seconds, self.sum), self.count + len(seconds))

    def cumulative(self) -> list[int]:
        total, out = 0, []
        for bucket in self.buckets:
            total += bucket
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


# What decides a group's state and dates: equal to the last poll's, and nothing derived
# from them needs redoing. Either the fields as sent (targetState, statusValue, createdOn,
# lastUpdatedOn), or the hash of the record's bytes (`pipeline`): no strings to keep.
_Fields = tuple[object, str | None, str | None, str | None]
_Key = _Fields | int
# id -> (key, state, since, created, last updated, the hash of createdOn as sent: 32 bytes
# where the string took 66, 3.4 MB at 100,000 groups; equal hashes of unequal dates, once
# in 2**64 changes of one, would keep the creation time of the last poll)
_Seen = tuple[_Key, int | None, float, float | None, float | None, int | None]
_Change = tuple[str, int | None, int | None, float]
"""A group that changed state: its behaviour, its state, the state before and since when."""
_key = operator.attrgetter("target_state", "status_value", "created_on", "last_updated_on")
_ID = operator.attrgetter("id")
_CREATED_ON = operator.attrgetter("created_on")
_UPDATED_ON = operator.attrgetter("last_updated_on")
_KEY_OF, _STATE_OF, _SINCE_OF, _CREATED_OF, _UPDATED_OF, _CREATED_ON_OF = map(
    operator.itemgetter, range(6)
)
_NEVER = cast(_Seen, (object(), None, 0.0, None, None, None))
"""A group the last poll did not see: its key and its creation date's hash (None) equal no
record's."""
_new_sample = partial(tuple.__new__, GroupSample)  # GroupSample's own __new__ is Python


@dataclass(frozen=True)
class Plan:
    """Groups observed but not yet part of the poll (`StateTracker.plan`)."""

    entries: dict[str, _Seen]
    samples: list[GroupSample]
    changes: list[_Change]


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
        # Small enough to keep between polls (the strings are the records' own),
        # unlike the records themselves.
        self._seen: dict[str, _Seen] = {}
        self._next: dict[str, _Seen] = {}
        self._changes: list[_Change] = []
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
        """A whole poll at once: `begin`, `add` every group, `end`."""
        self.begin()
        samples = self.add(groups, now, parse_date)
        self.end(now, timed)
        return tuple(samples)

    def begin(self) -> None:
        """A poll starts: the groups added or carried until `end` are the tracker's new
        memory. The last poll's is handed over group by group (never two whole
        generations at once); a poll that never ended (a bug halfway) leaves what it
        saw of its groups, uncounted."""
        if self._next:
            self._seen.update(self._next)
        self._next = {}
        self._changes = []

    def add(
        self,
        groups: Iterable[TargetGroup],
        now: float,
        parse_date: DateParser,
        problems: list[str] | None = None,
    ) -> list[GroupSample]:
        """These groups' samples, now part of the poll (`plan`, then `commit`)."""
        return self.commit(self.plan(groups, now, parse_date, problems))

    def plan(
        self,
        groups: Iterable[TargetGroup],
        now: float,
        parse_date: DateParser,
        problems: list[str] | None = None,
        keys: Iterable[int] | None = None,
    ) -> Plan:
        """These groups' samples and memory, not part of the poll until `commit`ted.

        A group whose state and date fields are as in the last poll (most
        groups, most polls) costs a tuple comparison: no state derived, no date
        parsed. A group whose id is in the poll already, or earlier in `groups`,
        is left out, as a duplicate, with a problem in `problems`. `keys`, one per
        group: hashes of their records' bytes, compared instead of the fields.
        """
        groups = groups if isinstance(groups, list) else list(groups)
        keyed: list[_Key] = list(map(_key, groups)) if keys is None else list(keys)
        ids = list(map(_ID, groups))
        if len(set(ids)) < len(ids) or not self._next.keys().isdisjoint(ids):
            groups, keyed, ids = self._unique(groups, keyed, ids, problems)
        # Most groups: the last poll's entry, found and compared in C.
        entries = list(map(self._seen.get, ids, repeat(_NEVER)))
        changed = list(compress(range(len(ids)), map(ne, map(_KEY_OF, entries), keyed)))
        changes: list[_Change] = []
        if changed and len(changed) == len(ids):  # all (a poll where all changed, the first)
            entries, changes = _entries(groups, keyed, entries, now, parse_date)
        elif changed:
            made, changes = _entries(
                list(map(groups.__getitem__, changed)),
                list(map(keyed.__getitem__, changed)),
                list(map(entries.__getitem__, changed)),
                now,
                parse_date,
            )
            for index, entry in zip(changed, made, strict=True):
                entries[index] = entry
        samples = list(
            map(
                _new_sample,
                zip(
                    groups,
                    map(_STATE_OF, entries),
                    map(_CREATED_OF, entries),
                    map(_UPDATED_OF, entries),
                    map(_SINCE_OF, entries),
                    strict=True,
                ),
            )
        )
        return Plan(dict(zip(ids, entries, strict=True)), samples, changes)

    def _unique(
        self,
        groups: list[TargetGroup],
        keys: list[_Key],
        ids: list[str],
        problems: list[str] | None,
    ) -> tuple[list[TargetGroup], list[_Key], list[str]]:
        """The groups whose id is neither in the poll already nor earlier among them; a
        problem for each of the others."""
        seen = set(self._next)
        kept: tuple[list[TargetGroup], list[_Key], list[str]] = ([], [], [])
        for group, key, id_ in zip(groups, keys, ids, strict=True):
            if id_ in seen:
                if problems is not None:
                    problems.append(f"duplicate id {id_}")
                continue
            seen.add(id_)
            kept[0].append(group)
            kept[1].append(key)
            kept[2].append(id_)
        return kept

    def commit(self, plan: Plan) -> list[GroupSample]:
        """A plan's groups are part of the poll: remembered, their changes counted at `end`.
        Only valid while nothing else was added since the plan was made."""
        self._next.update(plan.entries)
        forget = self._seen.pop
        for id_ in plan.entries:
            forget(id_, None)
        self._changes += plan.changes
        return plan.samples

    def unseen(self, ids: Iterable[str]) -> bool:
        """None of these ids is in the poll yet."""
        return self._next.keys().isdisjoint(ids)

    def carry(self, ids: Sequence[str]) -> bool:
        """Groups whose records are as in the last poll keep their memory as it is; False
        (and nothing done) when one was not in the last poll or was added already in
        this one."""
        seen, previous = self._next, self._seen
        if not (seen.keys().isdisjoint(ids) and all(map(previous.__contains__, ids))):
            return False
        seen.update(zip(ids, map(previous.pop, ids), strict=True))
        return True

    def end(self, now: float, timed: bool = True) -> None:
        """The poll is complete: its groups are the memory, its changes are counted.

        `timed=False` after a long outage (polls failed for longer than the
        stale-after period): changes still count as transitions, but no import
        duration is observed, since the change happened somewhere in the gap and
        timing it to this poll would report the outage as slow imports.
        """
        self._seen, self._next = self._next, {}
        changes, self._changes = self._changes, []
        if changes:
            self._count(changes, now, timed)

    def _count(self, changes: list[_Change], now: float, timed: bool) -> None:
        """Count the groups that changed state: per transition and behaviour at once (a
        poll where most groups changed has tens of thousands of them), then the import
        durations of those that finished, in the order they came."""
        finishing = False
        for (behaviour, before, state), times in Counter(map(_MOVE, changes)).items():
            key = (behaviour, _state_name(before), _state_name(state))
            self._transitions[key] = self._transitions.get(key, 0) + times
            finishing = finishing or key[1:] == _FINISHED
        if timed and finishing:
            finished: dict[str, list[float]] = {}
            for behaviour, state, before, since in changes:
                if (_state_name(before), _state_name(state)) == _FINISHED:
                    finished.setdefault(behaviour, []).append(max(0.0, now - since))
            for behaviour, seconds in finished.items():
                durations = self._durations.get(behaviour) or Durations.empty()
                self._durations[behaviour] = durations.observe_all(seconds)
        self._lifecycle = Lifecycle(dict(self._transitions), dict(self._durations))


def _entries(
    groups: list[TargetGroup],
    keys: list[_Key],
    befores: list[_Seen],
    now: float,
    parse_date: DateParser,
) -> tuple[list[_Seen], list[_Change]]:
    """The entries of groups new to the tracker (`_NEVER` before) or whose state or dates
    changed since the last poll, and the state changes among them; column by column,
    in C passes where the values are as before (an update changes a few fields)."""
    states = _states(groups)
    # An update leaves the creation date alone: parse only what changed.
    created_ons = list(map(_CREATED_ON, groups))
    created_hashes = list(map(hash, created_ons))
    created = list(map(_CREATED_OF, befores))
    for index in compress(count(), map(ne, map(_CREATED_ON_OF, befores), created_hashes)):
        created[index] = parse_date(created_ons[index])
    updated_ons = list(map(_UPDATED_ON, groups))
    if keys and isinstance(keys[0], tuple):  # the fields: lastUpdatedOn may be as it was
        updated = [
            before[4] if isinstance(before[0], tuple) and before[0][3] == on else parse_date(on)
            for before, on in zip(befores, updated_ons, strict=True)
        ]
    else:
        updated = parse_date.many(updated_ons)
    # A group keeps its state's start unless its state changed, or it is new: then now, or
    # for a new group its last update when that is known and past.
    since = list(map(_SINCE_OF, befores))
    changes: list[_Change] = []
    moved = map(or_, map(ne, map(_STATE_OF, befores), states), map(is_, befores, repeat(_NEVER)))
    for index in compress(count(), moved):
        before, last = befores[index], updated[index]
        if before is _NEVER:
            since[index] = last if last is not None and last < now else now
        else:
            since[index] = now
            changes.append((text(groups[index].behaviour), states[index], before[1], before[2]))
    entries = list(zip(keys, states, since, created, updated, created_hashes, strict=True))
    return cast(list[_Seen], entries), changes


_STATE_AS_SENT = {0: 0, 1: 1}
"""targetState values that are the state itself (0.0 and 1.0 too: they hash alike)."""
_TARGET_STATE = operator.attrgetter("target_state")


def _states(groups: list[TargetGroup]) -> list[int | None]:
    """Each group's `state`: looked up in C when targetState says it as the API sends it
    (poll after poll, every group), the property run for the others."""
    states: list[int | None] = list(map(_STATE_AS_SENT.get, map(_TARGET_STATE, groups)))
    if None in states:
        for index in compress(count(), map(is_, states, repeat(None))):
            states[index] = groups[index].state
    return states


_MOVE = operator.itemgetter(0, 2, 1)
"""A change's behaviour, state before and state."""
_FINISHED = ("in_progress", "ready")
"""The transition that ends an import: its duration is observed."""
_bucket = partial(bisect.bisect_left, m.IMPORT_DURATION_BUCKETS)  # le: the upper bound counts


def _state_name(state: int | None) -> str:
    return _STATE_NAMES.get(state, "unknown")  # type: ignore[arg-type]
