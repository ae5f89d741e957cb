"""A tenant's response body to its group block, chunk by chunk, redoing only what changed.

The body is split into its records without decoding them (each a `msgspec.Raw`,
a view of its bytes), each record is known by the hash of its bytes, and the
records are cut into chunks of about CHUNK at content-defined points: after a
record whose id (as sent) has a CRC-32 that is a multiple of CHUNK. An update
leaves ids alone, so a chunk keeps its first record and its length from poll to
poll; a group added or removed disturbs its own chunk only. Then, chunk by chunk,
the least that answers it:

- the same records as in the last poll: its deflated segments are reused and its
  groups keep their tracker entries (`StateTracker.carry`); nothing is decoded;
- the same groups with a few records changed: only those are decoded, observed
  and rendered; the chunk's text is the last poll's (inflated) with their lines
  replaced, deflated again. Work in Python follows the groups that changed, not
  the chunks: at 1% of the groups changed, almost every chunk has one;
- anything else (groups added, removed or moved; a record skipped; a sample
  without a value; a label value cut): the whole chunk is decoded, observed and
  rendered.

Only one chunk's records are decoded at a time, and none are kept: memory holds
the body while it is read, the tracker's entries, and per chunk its deflated
segments and the keys, ids, states and line lengths that the next poll compares.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, compress, count, repeat
from operator import attrgetter, mod, ne, not_

import msgspec
from isal import isal_zlib

from . import metrics as m
from .body import Segment
from .exposition import DEFAULT_MAX_LABEL_LENGTH, BlockRenderer, GroupBlock
from .records import (
    DateParser,
    ParsedPayload,
    TargetGroup,
    decode_record,
    decode_records,
    split_records,
)
from .snapshot import GroupSample, StateTracker

_NO_KEYS: array[int] = array("q")
"""The keys of a chunk that is never reused."""
_STATE_INDEX = {0: 0, 1: 1}  # a state's index in m.STATES; anything else (None): 2, unknown
_GROUP_ID, _STATE = attrgetter("group.id"), attrgetter("state")


@dataclass(frozen=True)
class Processed:
    """One successful poll's groups: the rendered block and the figures around it."""

    block: GroupBlock
    counts: dict[str, int]
    """Groups per `state` label value."""
    invalid: int
    """Records skipped as malformed, duplicate ids included."""
    problems: tuple[str, ...]
    """A short reason per skipped record."""


@dataclass(frozen=True, slots=True)
class _Chunk:
    """A chunk as rendered, kept for the next poll to compare with."""

    keys: array[int]
    """The hash of each record's bytes (8 bytes each: an int object would take 32 more,
    3 MB at 100,000 groups; the tracker keeps its own for the records that changed)."""
    segments: tuple[Segment, ...]
    """One per family of m.PER_GROUP."""
    ids: tuple[str, ...]
    """The group ids, in the chunk's order (invalid records and duplicates left out)."""
    states: bytes
    """Each group's state: 0 in progress, 1 ready, 2 unknown."""
    truncated: int
    spliceable: bool
    """Every family has one line per record, in order (no record skipped, no value
    missing, no label value cut): a later poll can replace some of them."""
    lengths: tuple[array[int], ...] | None = None
    """Each family's line lengths in bytes, once a splice needed them (a chunk rendered
    whole does not measure its lines: at 100% changed, no later poll would use them)."""


class GroupPipeline:
    """One tenant's state across polls: the state tracker, the renderer and the chunks
    of the last poll, by the first record's id (as sent)."""

    CHUNK = 512
    """Average records per chunk (the content-defined cut makes their sizes vary)."""
    CHUNK_MAX = 2048

    def __init__(
        self,
        tenant: str,
        timezone: str = "UTC",
        max_label_length: int = DEFAULT_MAX_LABEL_LENGTH,
    ) -> None:
        self.tracker = StateTracker()
        self._renderer = BlockRenderer(tenant, max_label_length)
        self._parse_date = DateParser(timezone)
        self._last: dict[bytes, _Chunk] = {}
        self._spans: list[_Span] = []
        """The last poll's chunks: where they start and stop, and their first anchors."""

    def process(self, body: bytes | bytearray, now: float, timed: bool = True) -> Processed:
        """Raises records.PayloadError (nothing changed) when the body is no list."""
        records = split_records(body)
        self.tracker.begin()
        block = _Block()
        problems: list[str] = []
        if isinstance(records, ParsedPayload):  # read by pydantic whole: nothing to reuse
            problems += records.problems
            groups = records.groups
            for start in range(0, len(groups), self.CHUNK):
                block.add(self._render(groups[start : start + self.CHUNK], now, problems))
            self._last, self._spans = {}, []
        else:
            last, kept = self._last, {}
            self._spans = _spans(body, records, self.CHUNK, self.CHUNK_MAX, self._spans)
            for start, stop, anchor in self._spans:
                chunk = records[start:stop]
                keys = _keys(chunk)
                old = last.pop(anchor, None)  # dropped once its successor is built
                done = None
                if old is not None and len(old.keys) == len(keys):
                    if old.keys == keys and self.tracker.carry(old.ids):
                        done = old
                    elif old.spliceable:
                        done = self._splice(old, chunk, keys, start, now)
                if done is None:
                    found = len(problems)
                    groups = decode_records(chunk, start, problems)
                    done = self._render(groups, now, problems, keys, len(problems) == found)
                kept[anchor] = block.add(done)
            self._last = kept
        self.tracker.end(now, timed)
        return Processed(block.done(), block.counts(), len(problems), tuple(problems))

    def _render(
        self,
        groups: Sequence[TargetGroup],
        now: float,
        problems: list[str],
        keys: array[int] = _NO_KEYS,
        clean: bool = False,
    ) -> _Chunk:
        """The whole chunk: every group observed and rendered. `clean`: no record of it
        was skipped, so a later poll may splice it if nothing else stands in the way."""
        found = len(problems)
        digests = keys if clean else None  # one per group only when none was skipped
        plan = self.tracker.plan(groups, now, self._parse_date, problems, digests)
        samples = self.tracker.commit(plan)
        texts, complete, cut = self._renderer.texts(samples)
        if not clean or len(problems) > found:
            keys = _NO_KEYS  # its problems are reported at every poll: never reused
        spliceable = bool(keys) and not cut and complete
        return _Chunk(
            keys,
            tuple(Segment.of(text) for text in texts),
            tuple(map(_GROUP_ID, samples)),
            _states(samples),
            cut,
            spliceable,
        )

    def _splice(
        self,
        old: _Chunk,
        chunk: Sequence[msgspec.Raw],
        keys: array[int],
        start: int,
        now: float,
    ) -> _Chunk | None:
        """The last poll's chunk with the lines of the records that changed replaced, or
        None when that cannot be done (the chunk is then rendered whole)."""
        differs = list(map(ne, old.keys, keys))
        if sum(differs) * 2 > len(keys):  # most of it changed: rendering is as cheap
            return None
        changed = list(compress(range(len(keys)), differs))
        problems: list[str] = []
        groups = [decode_record(chunk[index], start + index, problems) for index in changed]
        if problems or any(
            group is None or group.id != old.ids[index]
            for group, index in zip(groups, changed, strict=True)
        ):
            return None  # a record skipped, or a group where another was
        tracker = self.tracker
        if not tracker.unseen(old.ids[index] for index in changed):
            return None
        digests = [keys[index] for index in changed]
        plan = tracker.plan(groups, now, self._parse_date, None, digests)  # type: ignore[arg-type]
        families, cut = self._renderer.lines(plan.samples)
        if cut or any(len(lines) != len(changed) for lines in families):
            return None
        unchanged = list(old.ids)
        for index in reversed(changed):
            del unchanged[index]
        if not tracker.carry(unchanged):
            return None
        tracker.commit(plan)
        segments = []
        lengths = []
        measured = old.lengths or (None,) * len(old.segments)
        for segment, before, lines in zip(old.segments, measured, families, strict=True):
            text, after = _replace(segment, before, changed, lines)
            segments.append(segment if text is None else Segment.of(text))
            lengths.append(after)
        states = bytearray(old.states)
        for index, sample in zip(changed, plan.samples, strict=True):
            states[index] = _STATE_INDEX.get(sample.state, 2)  # type: ignore[arg-type]
        return _Chunk(keys, tuple(segments), old.ids, bytes(states), 0, True, tuple(lengths))


def _replace(
    segment: Segment, lengths: array[int] | None, changed: list[int], lines: list[bytes]
) -> tuple[bytes | None, array[int]]:
    """The segment's text with the lines at `changed` replaced by `lines` (None when each
    is as it was: the segment stands, not deflated again), and the new line lengths
    (measured on the text when not known yet)."""
    text = isal_zlib.decompressobj(-isal_zlib.MAX_WBITS).decompress(segment.data)
    if lengths is None:
        lengths = _line_lengths([size + 1 for size in map(len, text.split(b"\n")[:-1])])
    offsets = list(accumulate(lengths, initial=0))
    long = max(map(len, lines)) >= _SHORT  # a line of 64 KiB or more comes in: 4 bytes
    after = array("I" if long else lengths.typecode, lengths)
    pieces: list[bytes] = []
    done = 0
    same = True
    for index, new in zip(changed, lines, strict=True):
        start, stop = offsets[index], offsets[index + 1]
        same = same and text[start:stop] == new
        pieces += (text[done:start], new)
        after[index] = len(new)
        done = stop
    if same:
        return None, after
    pieces.append(text[done:])
    return b"".join(pieces), after


_SHORT = 1 << 16


def _line_lengths(sizes: list[int]) -> array[int]:
    """Line lengths in 2 bytes each when every line is shorter than 64 KiB (all of them
    unless the label length cap was raised that far), else in 4: 1.6 MB at 100,000
    groups instead of 3.2."""
    return array("H" if max(sizes, default=0) < _SHORT else "I", sizes)


def _states(samples: Sequence[GroupSample]) -> bytes:
    return bytes(map(_STATE_INDEX.get, map(_STATE, samples), repeat(2)))


class _Block:
    """The chunks of one poll, in order, and their sums."""

    def __init__(self) -> None:
        self.chunks: list[tuple[Segment, ...]] = []
        self.states: list[bytes] = []
        self.groups = self.truncated = 0

    def add(self, chunk: _Chunk) -> _Chunk:
        self.chunks.append(chunk.segments)
        self.states.append(chunk.states)
        self.groups += len(chunk.ids)
        self.truncated += chunk.truncated
        return chunk

    def counts(self) -> dict[str, int]:
        states = b"".join(self.states)
        return {name: states.count(index) for index, name in enumerate(m.STATES)}

    def done(self) -> GroupBlock:
        return GroupBlock.of(self.chunks, self.groups, self.truncated)


def _spans(
    body: bytes | bytearray,
    records: Sequence[msgspec.Raw],
    chunk: int,
    chunk_max: int,
    last: list[_Span],
) -> list[_Span]:
    """(start, stop, anchor of the first record) of each chunk: a chunk ends after a record
    whose anchor's CRC-32 is a multiple of `chunk`, or at `chunk_max` records. The last
    poll's spans stand when the records are as many and each span still starts with its
    anchor (no group added or removed: most polls), without a look at every record; a
    group replaced inside a span only makes that span's keys differ."""
    if (
        last
        and last[-1][1] == len(records)
        and all(_anchor(bytes(records[start])) == first for start, _, first in last)
    ):
        return last
    anchors = _ID.findall(body)
    if len(anchors) != len(records):  # an id missing, or one in a nested object: look each up
        anchors = [_anchor(bytes(record)) for record in records]
    ends = compress(count(1), map(not_, map(mod, map(isal_zlib.crc32, anchors), repeat(chunk))))
    spans = []
    start = 0
    for end in chain(ends, (len(records),)):
        while start < end:
            stop = min(end, start + chunk_max)
            spans.append((start, stop, anchors[start]))
            start = stop
    return spans


def _keys(records: Sequence[msgspec.Raw]) -> array[int]:
    """A record's key is the hash of its bytes (64-bit SipHash, keyed per process: two
    versions of a record collide once in 2**64 changes). Made as a list first: an array
    grown from an iterator one item at a time takes 8 ms longer at 100,000 groups."""
    return array("q", list(map(hash, map(bytes, records))))


_Span = tuple[int, int, bytes]
_ID = re.compile(rb'"id":[^,}]*')
"""A record's id as sent: where a look at the body finds one per record."""


def _anchor(record: bytes) -> bytes:
    """What chunks are cut at and known by: the record's id as sent, when a look finds
    it (updates leave it alone), else the whole record. It only decides what can be
    reused, never what is served: every reuse is checked against the records' keys."""
    found = _ID.search(record)
    return record if found is None else found.group()
