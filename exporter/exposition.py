"""Snapshot and counters -> exposition bytes, rendered and gzip'd once per poll.

The per-group families are identical in the Prometheus text format 0.0.4 and
in OpenMetrics (gauges, same escaping), so they are rendered and compressed
once per successful poll as one block of deflate segments (chunks unchanged
since the last poll keep theirs: `pipeline`), and reused, byte for byte, by both formats
and by every later failed poll until the stale-after drop. Only the small
tail (health gauges and counters, the per-tenant lifecycle counter and
histogram; `# EOF` for OpenMetrics) is rendered per poll attempt. Segments
are flushed to byte boundaries, so they concatenate into one gzip member.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain, repeat
from operator import attrgetter
from typing import TYPE_CHECKING, cast

from . import __version__
from . import metrics as m
from .body import GZIP_HEADER, Body, Checked, Checksum, OpenBody, Segment, combine
from .snapshot import GroupSample, Lifecycle

if TYPE_CHECKING:  # the serving process stitches: it never loads the records (msgspec)
    from .records import TargetGroup

__all__ = [
    "OPENMETRICS_CONTENT_TYPE",
    "TEXT_CONTENT_TYPE",
    "Body",
    "Exposition",
    "GroupBlock",
    "Health",
    "escape",
    "format_value",
    "render",
    "render_groups",
]

# The formats this module writes (SPEC: text 0.0.4 unless OpenMetrics is asked for).
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def escape(value: str) -> str:
    """Escape a label value as both exposition formats require."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def format_value(value: float) -> str:
    """Integral values without a fraction (exact and short); others as the Go clients write them."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return go_float(value)


def go_float(value: float) -> str:
    """A float as the Go clients write it: prometheus_client's `floatToGoString`, here so
    that the poller process does not import prometheus_client (3 MB) for it alone."""
    value = float(value)
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    # Go switches to exponents sooner than Python (only positive values matter: `le`).
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def header(metric: m.Metric, openmetrics: bool = False) -> str:
    name = metric.family if openmetrics else metric.name
    return f"# HELP {name} {metric.help}\n# TYPE {name} {metric.type}\n"


@dataclass(frozen=True)
class FamilyPart:
    """One tenant's samples of one family (no HELP or TYPE) as raw deflate segments,
    with the CRC-32 and length of their text."""

    parts: tuple[bytes | bytearray | memoryview, ...]
    crc: int
    size: int

    @classmethod
    def of(cls, text: bytes) -> FamilyPart:
        if not text:
            return EMPTY_PART
        segment = Segment.of(text)
        return cls((segment.data,), segment.crc, segment.size)

    @classmethod
    def joined(cls, segments: Sequence[Segment]) -> FamilyPart:
        crc, size = combine(segments)
        return cls(tuple(segment.data for segment in segments if segment.size), crc, size)


EMPTY_PART = FamilyPart((), 0, 0)


@dataclass(frozen=True)
class GroupBlock:
    """The per-group families of one snapshot, one part per family of m.PER_GROUP."""

    families: tuple[FamilyPart, ...]
    groups: int
    truncated: int = 0
    """Label values cut to the length cap."""

    @classmethod
    def of(cls, chunks: Sequence[tuple[Segment, ...]], groups: int, truncated: int) -> GroupBlock:
        """The block of these rendered chunks (each a segment per family), in order."""
        families = tuple(
            FamilyPart.joined([segments[family] for segments in chunks])
            for family in range(len(m.PER_GROUP))
        )
        return cls(families, groups, truncated)

    @property
    def parts(self) -> tuple[bytes | bytearray | memoryview, ...]:
        return tuple(part for family in self.families for part in family.parts)

    @property
    def size(self) -> int:
        """Uncompressed bytes of the samples."""
        return sum(family.size for family in self.families)


DEFAULT_MAX_LABEL_LENGTH = 1024
_CUT_MARK = "…"  # what a cut value ends with, before the hash that keeps it unique


def cut_label(value: str, limit: int) -> str | None:
    """`value` cut to at most `limit` UTF-8 bytes, or None when it fits.

    A cut value keeps its start, then `…` and 8 hex digits of a hash of the
    whole value, so two long values that start alike stay two series.
    """
    if len(value) * 4 <= limit:  # no UTF-8 character takes more than 4 bytes
        return None
    encoded = value.encode("utf-8", "surrogatepass")
    if len(encoded) <= limit:
        return None
    digest = hashlib.blake2b(encoded, digest_size=4).hexdigest()
    room = limit - len(_CUT_MARK.encode()) - len(digest)
    return encoded[:room].decode("utf-8", "ignore") + _CUT_MARK + digest


class _Cutter:
    """Cuts label values to the length cap, and counts the values it cut."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.quick = limit // 4  # below this many characters, nothing needs a look
        self.cut = 0

    def __call__(self, value: str) -> str:
        shorter = cut_label(value, self.limit)
        if shorter is None:
            return value
        self.cut += 1
        return shorter


class _LabelSet:
    """Writes the values of some declared labels for a group: cut, escaped, as `,name="…"`.

    Fields are read with one attrgetter, and most values need neither
    normalising, cutting nor escaping, which one look at their joined text
    tells: at 100,000 groups a poll, that keeps the work in C.
    """

    def __init__(self, labels: tuple[m.Label, ...]) -> None:
        self.labels = labels
        self._template = "".join(f',{label.name}="%s"' for label in labels)
        self.fields = attrgetter(*(label.field for label in labels))
        """The fields the labels are read from (the value itself for one label)."""
        self.key = attrgetter(*(label.source or label.field for label in labels))
        """The raw fields all their values depend on (no property run): a cache key."""

    def write(self, group: TargetGroup, cutter: _Cutter) -> str:
        raw = self.fields(group)
        values = cast(Sequence[str], raw if len(self.labels) > 1 else (raw,))
        if None in values or "null" in values:  # rare: normalised as declared only then
            values = [label.read(group) for label in self.labels]
        joined = "".join(values)
        if len(joined) > cutter.quick:
            values = [cutter(value) for value in values]
            joined = "".join(values)
        if '"' in joined or "\\" in joined or "\n" in joined:
            values = [escape(value) for value in values]
        return self._template % tuple(values)

    def write_all(self, groups: Sequence[TargetGroup], cutter: _Cutter, prefix: str) -> list[str]:
        """`prefix` + `write(group)` for each group, in C passes over all of them when
        every value is text that needs no normalising and no cut (escaping is done on
        their joined text); group by group otherwise."""
        width = len(self.labels)
        raws = list(map(self.fields, groups))
        flat: Sequence[object] = list(chain.from_iterable(raws)) if width > 1 else raws
        if flat and not (None in flat or "null" in flat):
            try:
                joined = _SEPARATOR.join(cast(Sequence[str], flat))
            except TypeError:  # a value that is no text (a code sent as a number)
                joined = ""
            if joined and max(map(len, cast(Sequence[str], flat))) <= cutter.quick:
                if '"' in joined or "\\" in joined or "\n" in joined:
                    joined = joined.replace("\\", "\\\\").replace('"', '\\"')
                    joined = joined.replace("\n", "\\n")
                values = joined.split(_SEPARATOR)
                if len(values) == len(flat):  # the separator is in no value
                    template = prefix.replace("%", "%%") + self._template
                    if width == 1:
                        return list(map(template.__mod__, values))
                    return list(map(template.__mod__, zip(*[iter(values)] * width, strict=True)))
        return [prefix + self.write(group, cutter) for group in groups]


_SEPARATOR = "\x00"  # joins label values for one look at all of them; split on again
_IDENTITY = _LabelSet(m.GROUP_IDENTITY)
_ATTRIBUTES = {
    metric.name: _LabelSet(metric.attributes) for metric in m.PER_GROUP if metric.attributes
}


_GROUP_OF = attrgetter("group")


# A chunk's deflated families (in the order of m.PER_GROUP), and how many label values it cut.
_Chunk = tuple[tuple[Segment, ...], int]
# A family's start of line (`name{`), and its samples' labels and values.
_Column = tuple[bytes, list[bytes], list[object]]


class BlockRenderer:
    """Renders a tenant's samples of the per-group families (reusing what did not change
    between polls is `pipeline.GroupPipeline`'s job)."""

    def __init__(self, tenant: str, max_label_length: int = DEFAULT_MAX_LABEL_LENGTH) -> None:
        self._max_label_length = max_label_length
        self._tenant = f'{m.TENANT}="{escape(tenant)}"'
        self._suffixes: dict[_LabelSet, dict[object, bytes]] = {}
        """Per label set, the labels written for each value of its fields."""
        self._cuts: dict[_LabelSet, dict[object, int]] = {}
        """Per label set, the values it cut for each value of its fields (when any)."""

    def _attributes(
        self, label_set: _LabelSet, groups: Sequence[TargetGroup], cutter: _Cutter
    ) -> list[bytes]:
        """A metric's labels after the identity, per group, encoded; the same values are
        written once (then looked up in C)."""
        suffixes = self._suffixes.setdefault(label_set, {})
        cuts = self._cuts.setdefault(label_set, {})
        if len(suffixes) > 10_000:
            suffixes.clear()
            cuts.clear()
        keys = list(map(label_set.key, groups))
        written = list(map(suffixes.get, keys))
        if None in written:
            for index, (key, group) in enumerate(zip(keys, groups, strict=True)):
                if written[index] is None:
                    before = cutter.cut
                    written[index] = suffixes[key] = label_set.write(group, cutter).encode()
                    if cutter.cut > before:
                        cuts[key] = cutter.cut - before
                    cutter.cut = before
        if cuts:
            cutter.cut += sum(map(cuts.get, keys, repeat(0)))
        return cast(list[bytes], written)

    def _columns(self, chunk: Sequence[GroupSample]) -> tuple[list[_Column], int, bool]:
        """Per family: the start of its lines, and each sample's labels (encoded) and
        value, samples without a value left out; how many label values were cut; and
        whether a label holds a `%` (one look at each list of labels made, not per family)."""
        cutter = _Cutter(self._max_label_length)
        groups = list(map(_GROUP_OF, chunk))
        identities = list(map(str.encode, _IDENTITY.write_all(groups, cutter, self._tenant)))
        percent = b"%" in b"".join(identities)
        columns = []
        for metric in m.PER_GROUP:
            assert metric.value is not None, f"{metric.name} is not a per-group metric"
            labels = identities
            if metric.attributes:
                suffixes = self._attributes(_ATTRIBUTES[metric.name], groups, cutter)
                percent = percent or b"%" in b"".join(suffixes)
                labels = list(map(bytes.__add__, identities, suffixes))
            values: list[object] = list(map(metric.value, chunk))
            if None in values:
                pairs = zip(labels, values, strict=True)
                kept = [(label, value) for label, value in pairs if value is not None]
                labels, values = [pair[0] for pair in kept], [pair[1] for pair in kept]
            columns.append((f"{metric.name}{{".encode(), labels, values))
        return columns, cutter.cut, percent

    def texts(self, chunk: Sequence[GroupSample]) -> tuple[list[bytes], bool, int]:
        """Each family's sample lines for these samples, in order, as one text (no line
        for a value that is None); whether every family has a line for every sample; and
        how many label values were cut. Values print as Python's repr: exact. Built in C
        (`_sample_lines`), never one Python string per line."""
        columns, cut, percent = self._columns(chunk)
        texts = [_sample_lines(start, labels, values, percent) for start, labels, values in columns]
        complete = all(len(values) == len(chunk) for _, _, values in columns)
        return texts, complete, cut

    def lines(self, chunk: Sequence[GroupSample]) -> tuple[list[list[bytes]], int]:
        """`texts`, each family's text as its lines (for a few samples: `pipeline` puts
        them in place of others). Written as `texts` writes them, then cut at the newlines:
        a label value holds none but escaped (`\\n`)."""
        texts, _, cut = self.texts(chunk)
        return [[line + b"\n" for line in text.split(b"\n")[:-1]] for text in texts], cut

    def render_chunk(self, chunk: Sequence[GroupSample]) -> _Chunk:
        """One chunk's samples of each family, deflated, and the label values it cut."""
        texts, _, cut = self.texts(chunk)
        return tuple(Segment.of(text) for text in texts), cut


def _sample_lines(start: bytes, labels: list[bytes], values: list[object], percent: bool) -> bytes:
    """`start`, a sample's labels, `} `, its value's repr and a newline, per sample: the
    labels joined into one template that one `%` fills with the values (`percent`: a
    label holds a `%`, doubled first): 1.8 times as fast as joining five pieces a line."""
    if not labels:
        return b""
    if percent:
        labels = [label.replace(b"%", b"%%") for label in labels]
    between = b"} %r\n" + start
    return (start + between.join(labels) + b"} %r\n") % tuple(values)


def render_groups(
    tenant: str,
    samples: Sequence[GroupSample],
    max_label_length: int = DEFAULT_MAX_LABEL_LENGTH,
) -> GroupBlock:
    """Render from scratch, as one chunk (no earlier poll to reuse)."""
    segments, truncated = BlockRenderer(tenant, max_label_length).render_chunk(samples)
    return GroupBlock.of([segments], len(samples), truncated)


def empty_group_block() -> GroupBlock:
    return GroupBlock.of((), 0, 0)


@dataclass(frozen=True)
class Health:
    """The exporter's own series: everything outside the per-group block."""

    tenant: str
    up: bool
    last_success: float | None
    poll_duration: float | None
    requests: int
    failures: Mapping[tuple[str, str], int]
    invalid: int
    group_counts: Mapping[str, int] = field(default_factory=dict)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    truncated: int = 0
    """Label values of the served group block cut to the length cap."""


def _tenant_lines(health: Health) -> list[bytes]:
    """A tenant's samples of each family of m.PER_TENANT, in order (the same text in both
    formats: counters keep `_total` on their samples in OpenMetrics too)."""
    tenant = f'{m.TENANT}="{escape(health.tenant)}"'

    def gauge(value: float | None, labels: str = tenant, metric: m.Metric = m.UP) -> str:
        return "" if value is None else f"{metric.name}{{{labels}}} {format_value(value)}\n"

    python = ".".join(str(part) for part in sys.version_info[:3])
    build = f'{tenant},version="{escape(__version__)}",python_version="{python}"'
    texts = {
        m.GROUPS: "".join(
            f'{m.GROUPS.name}{{{tenant},state="{state}"}} {health.group_counts.get(state, 0)}\n'
            for state in m.STATES
        ),
        m.UP: gauge(1.0 if health.up else 0.0),
        m.LAST_POLL_SUCCESS: gauge(health.last_success, metric=m.LAST_POLL_SUCCESS),
        m.POLL_DURATION: gauge(health.poll_duration, metric=m.POLL_DURATION),
        m.INVALID_GROUPS: gauge(float(health.invalid), metric=m.INVALID_GROUPS),
        m.TRUNCATED_LABELS: gauge(float(health.truncated), metric=m.TRUNCATED_LABELS),
        m.BUILD_INFO: gauge(1.0, build, m.BUILD_INFO),
        m.API_REQUESTS: gauge(float(health.requests), metric=m.API_REQUESTS),
        m.API_FAILURES: "".join(
            f'{m.API_FAILURES.name}{{{tenant},status="{escape(status)}",code="{escape(code)}"}}'
            f" {count}\n"
            for (status, code), count in sorted(health.failures.items())
        ),
        m.TRANSITIONS: _transition_lines(tenant, health.lifecycle),
        m.IMPORT_DURATION: _duration_lines(tenant, health.lifecycle),
    }
    return [texts[metric].encode() for metric in m.PER_TENANT]


_LE = tuple(go_float(bound) for bound in (*m.IMPORT_DURATION_BUCKETS, float("inf")))


def _behaviour(behaviour: str) -> str:
    # The API's text: bounded like every other label (the default cap; the behaviours
    # the API documents are one letter).
    return escape(cut_label(behaviour, DEFAULT_MAX_LABEL_LENGTH) or behaviour)


def _transition_lines(tenant: str, lifecycle: Lifecycle) -> str:
    """The state-transition counter of one tenant: a few dozen series, rendered per poll."""
    return "".join(
        f'{m.TRANSITIONS.name}{{{tenant},behaviour="{_behaviour(behaviour)}",'
        f'from="{before}",to="{after}"}} {count}\n'
        for (behaviour, before, after), count in sorted(lifecycle.transitions.items())
    )


def _duration_lines(tenant: str, lifecycle: Lifecycle) -> str:
    """The import-duration histogram of one tenant."""
    out = []
    name = m.IMPORT_DURATION.name
    for behaviour, durations in sorted(lifecycle.durations.items()):
        labels = f'{tenant},behaviour="{_behaviour(behaviour)}"'
        for le, count in zip(_LE, durations.cumulative(), strict=True):
            out.append(f'{name}_bucket{{{labels},le="{le}"}} {count}\n')
        out.append(f"{name}_sum{{{labels}}} {format_value(durations.sum)}\n")
        out.append(f"{name}_count{{{labels}}} {durations.count}\n")
    return "".join(out)


@dataclass(frozen=True)
class TenantExposition:
    """One tenant's share of every family (m.TENANT_FAMILIES), rendered and deflated by
    the poller process; the serving process only stitches tenants together."""

    families: tuple[FamilyPart, ...]
    health: Health
    groups: int

    @classmethod
    def of(cls, block: GroupBlock, health: Health) -> TenantExposition:
        health = replace(health, truncated=block.truncated)
        tail = tuple(FamilyPart.of(text) for text in _tenant_lines(health))
        return cls((*block.families, *tail), health, block.groups)

    @property
    def tenant(self) -> str:
        return self.health.tenant

    def with_health(self, health: Health) -> TenantExposition:
        """The same groups with other health figures (the poller process died: up 0)."""
        tail = tuple(FamilyPart.of(text) for text in _tenant_lines(health))
        return replace(self, families=(*self.families[: len(m.PER_GROUP)], *tail), health=health)


class TenantShares:
    """A tenant's shares of every family, poll after poll: a failed poll's result (no
    block) keeps the last block with its own health figures."""

    def __init__(self) -> None:
        self._block = empty_group_block()

    def of(self, block: GroupBlock | None, health: Health) -> TenantExposition:
        if block is not None:
            self._block = block
        return TenantExposition.of(self._block, health)


@dataclass(frozen=True)
class Exposition:
    """Both formats of one poll's exposition.

    `text` and `openmetrics` are complete; `select(..., extra)` appends series
    read at scrape time (the process metrics) to the same gzip stream.
    """

    text: Body
    openmetrics: Body
    _open: tuple[OpenBody, OpenBody]

    def select(self, openmetrics: bool, extra: bytes = b"") -> Body:
        if extra:
            return self._open[openmetrics].finish(extra)
        return self.openmetrics if openmetrics else self.text


_HEADERS = {
    openmetrics: tuple(
        Segment.of(header(metric, openmetrics).encode()) for metric in m.TENANT_FAMILIES
    )
    for openmetrics in (False, True)
}


def assemble(tenants: Sequence[TenantExposition]) -> Exposition:
    """Every tenant's series in both formats, family by family: one HELP and TYPE per
    family, then each tenant's samples of it. Nothing is re-rendered or re-compressed:
    the tenants' deflate data is reused as is, and only the CRC is combined."""
    # The tenants' samples of each family are the same text in both formats (only some
    # headers differ): their CRC is combined once, then each format's over the headers.
    families = [
        Checksum(*combine(tenant.families[index] for tenant in tenants))
        for index in range(len(m.TENANT_FAMILIES))
    ]
    complete: list[Body] = []
    opened: list[OpenBody] = []
    for openmetrics, content_type in ((False, TEXT_CONTENT_TYPE), (True, OPENMETRICS_CONTENT_TYPE)):
        checked: list[Checked] = []
        parts: list[bytes | bytearray | memoryview] = [GZIP_HEADER]
        for index, header in enumerate(_HEADERS[openmetrics]):
            checked += (header, families[index])
            parts.append(header.data)
            parts.extend(part for tenant in tenants for part in tenant.families[index].parts)
        crc, size = combine(checked)
        body = OpenBody(content_type, tuple(parts), crc, size, openmetrics)
        opened.append(body)
        complete.append(body.finish(b""))
    return Exposition(complete[0], complete[1], (opened[0], opened[1]))


def render(block: GroupBlock, health: Health) -> Exposition:
    """One tenant's exposition in both formats."""
    return assemble([TenantExposition.of(block, health)])
