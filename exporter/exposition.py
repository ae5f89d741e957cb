"""Snapshot and counters -> exposition bytes, rendered and gzip'd once per poll.

The per-group families are identical in the Prometheus text format 0.0.4 and
in OpenMetrics (gauges, same escaping), so they are rendered and compressed
once per successful poll as one block and reused, byte for byte, by both
formats and by every later failed poll until the stale-after drop. Only the
small tail (health gauges and counters; `# EOF` for OpenMetrics) is rendered
per poll attempt. The gzip bodies are stitched from independently deflated
segments (each flushed to a byte boundary), so the large block is compressed
once, not once per format.
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.utils import floatToGoString

from . import __version__
from . import metrics as m
from .snapshot import GroupSample, Snapshot

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

_GZIP_LEVEL = 6

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
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _header(metric: m.Metric, openmetrics: bool = False) -> str:
    name = metric.family if openmetrics else metric.name
    return f"# HELP {name} {metric.help}\n# TYPE {name} {metric.type}\n"


@dataclass(frozen=True)
class _Deflated:
    """A raw deflate segment ending on a byte boundary, with the CRC and size of its input."""

    data: bytes
    crc: int
    size: int

    @classmethod
    def of(cls, chunks: Iterable[bytes], final: bool) -> _Deflated:
        compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        out: list[bytes] = []
        crc = size = 0
        for chunk in chunks:
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
            out.append(compressor.compress(chunk))
        out.append(compressor.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH))
        return cls(b"".join(out), crc, size)


_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def _gzip(block: _Deflated, tail: bytes) -> bytes:
    """A gzip member of `block` followed by `tail`, compressing only the tail."""
    end = _Deflated.of([tail], final=True)
    crc = zlib.crc32(tail, block.crc)
    trailer = struct.pack("<II", crc & 0xFFFFFFFF, (block.size + end.size) & 0xFFFFFFFF)
    return b"".join((_GZIP_HEADER, block.data, end.data, trailer))


@dataclass(frozen=True)
class GroupBlock:
    """The per-group families of one snapshot, rendered and deflated."""

    chunks: tuple[bytes, ...]
    deflated: _Deflated
    groups: int

    @property
    def size(self) -> int:
        return self.deflated.size


def _group_label_sets(tenant: str, samples: Sequence[GroupSample]) -> list[str]:
    prefix = f'tenant="{escape(tenant)}",id="'
    return [
        f'{prefix}{escape(s.group.id)}",name="{escape(s.group.name)}",'
        f'behaviour="{escape(s.group.behaviour)}"'
        for s in samples
    ]


def _info_labels(sample: GroupSample) -> str:
    g = sample.group
    return (
        f',status="{escape(g.status_value)}",user_group="{escape(g.user_group)}",'
        f'load_type="{escape(g.load_type)}",source="{escape(g.source)}",'
        f'target_group_type="{escape(g.target_group_type)}",'
        f'channels="{escape(",".join(g.supported_channels))}"'
    )


def _family(metric: m.Metric, labels: list[str], values: Iterable[float | None]) -> bytes:
    name = metric.name
    lines = [
        f"{name}{{{label_set}}} {format_value(value)}\n"
        for label_set, value in zip(labels, values, strict=True)
        if value is not None
    ]
    return (_header(metric) + "".join(lines)).encode()


def render_groups(tenant: str, samples: Sequence[GroupSample]) -> GroupBlock:
    """Render the per-group families, one chunk per family."""
    labels = _group_label_sets(tenant, samples)
    chunks = [
        _family(m.TOTAL_RECORDS, labels, (s.group.total_count for s in samples)),
        _family(m.VALID_RECORDS, labels, (s.group.valid_count for s in samples)),
        _family(m.ERROR_RECORDS, labels, (s.group.error_count for s in samples)),
        _family(m.STATE, labels, (s.state for s in samples)),
        _family(
            m.INFO,
            [label_set + _info_labels(s) for label_set, s in zip(labels, samples, strict=True)],
            (1.0 for _ in samples),
        ),
        _family(m.CREATED, labels, (s.created for s in samples)),
        _family(m.LAST_UPDATED, labels, (s.last_updated for s in samples)),
        _family(m.STATE_SINCE, labels, (s.state_since for s in samples)),
    ]
    return GroupBlock(tuple(chunks), _Deflated.of(chunks, final=False), len(samples))


def empty_group_block() -> GroupBlock:
    return render_groups("", ())


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


def _tail(health: Health, openmetrics: bool) -> bytes:
    tenant = f'tenant="{escape(health.tenant)}"'
    out: list[str] = []

    def gauge(metric: m.Metric, value: float | None, labels: str = tenant) -> None:
        out.append(_header(metric, openmetrics))
        if value is not None:
            out.append(f"{metric.name}{{{labels}}} {format_value(value)}\n")

    out.append(_header(m.GROUPS, openmetrics))
    for state in m.STATES:
        count = health.group_counts.get(state, 0)
        out.append(f'{m.GROUPS.name}{{{tenant},state="{state}"}} {count}\n')
    gauge(m.UP, 1.0 if health.up else 0.0)
    gauge(m.LAST_POLL_SUCCESS, health.last_success)
    gauge(m.POLL_DURATION, health.poll_duration)
    gauge(m.INVALID_GROUPS, float(health.invalid))
    python = ".".join(str(part) for part in sys.version_info[:3])
    gauge(
        m.BUILD_INFO,
        1.0,
        f'{tenant},version="{escape(__version__)}",python_version="{python}"',
    )
    gauge(m.API_REQUESTS, float(health.requests))
    out.append(_header(m.API_FAILURES, openmetrics))
    for (status, code), count in sorted(health.failures.items()):
        out.append(
            f'{m.API_FAILURES.name}{{{tenant},status="{escape(status)}",code="{escape(code)}"}}'
            f" {count}\n"
        )
    if openmetrics:
        out.append("# EOF\n")
    return "".join(out).encode()


@dataclass(frozen=True)
class Body:
    """One representation of /metrics: the plain chunks and their gzip."""

    content_type: str
    chunks: tuple[bytes, ...]
    gzipped: bytes

    @property
    def length(self) -> int:
        return sum(len(chunk) for chunk in self.chunks)

    def plain(self) -> bytes:
        return b"".join(self.chunks)


@dataclass(frozen=True)
class Exposition:
    text: Body
    openmetrics: Body

    def select(self, openmetrics: bool) -> Body:
        return self.openmetrics if openmetrics else self.text


def render(block: GroupBlock, health: Health) -> Exposition:
    """Combine a rendered group block with this poll's health series."""
    bodies = []
    for openmetrics, content_type in ((False, TEXT_CONTENT_TYPE), (True, OPENMETRICS_CONTENT_TYPE)):
        tail = _tail(health, openmetrics)
        bodies.append(Body(content_type, (*block.chunks, tail), _gzip(block.deflated, tail)))
    return Exposition(*bodies)


def render_snapshot(tenant: str, snapshot: Snapshot | None) -> GroupBlock:
    return render_groups(tenant, snapshot.groups if snapshot else ())
