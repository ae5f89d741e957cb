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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from prometheus_client.utils import floatToGoString

from . import __version__
from . import metrics as m
from .records import text
from .snapshot import GroupSample

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

# Level 1: on exposition text it compresses 5x against level 6's 6x, in a third
# of the time; at 100,000 groups that is the difference between fitting the
# poll budget or not.
GZIP_LEVEL = 1

# The formats this module writes (SPEC: text 0.0.4 unless OpenMetrics is asked for).
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def escape(value: str) -> str:
    """Escape a label value as both exposition formats require."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def label(value: str | None) -> str:
    """A record's text field as an escaped label value."""
    return escape(text(value))


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
        """Deflate `chunks` on a helper thread while the caller produces the next one.

        zlib releases the GIL, so rendering (Python) and compressing (C) overlap.
        """
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        crc = size = 0

        def deflate(chunk: bytes) -> bytes:
            nonlocal crc
            crc = zlib.crc32(chunk, crc)
            return compressor.compress(chunk)

        out: list[bytes] = []
        with ThreadPoolExecutor(1, thread_name_prefix="deflate") as pool:
            pending: list[Future[bytes]] = []
            for chunk in chunks:
                size += len(chunk)
                pending.append(pool.submit(deflate, chunk))
                if len(pending) > 1:  # at most two rendered chunks wait in memory
                    out.append(pending.pop(0).result())
            out.extend(future.result() for future in pending)
        out.append(compressor.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH))
        return cls(b"".join(out), crc, size)

    @classmethod
    def small(cls, data: bytes, final: bool) -> _Deflated:
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        flush = zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH
        return cls(compressor.compress(data) + compressor.flush(flush), zlib.crc32(data), len(data))


_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


@dataclass(frozen=True)
class GroupBlock:
    """The per-group families of one snapshot, deflated: rendered and compressed once."""

    deflated: _Deflated
    groups: int

    @property
    def size(self) -> int:
        """Uncompressed bytes."""
        return self.deflated.size


def _group_label_sets(tenant: str, samples: Sequence[GroupSample]) -> list[str]:
    prefix = f'tenant="{escape(tenant)}",id="'
    return [
        f'{prefix}{escape(s.group.id)}",name="{label(s.group.name)}",'
        f'behaviour="{label(s.group.behaviour)}"'
        for s in samples
    ]


def _info_labels(samples: Sequence[GroupSample]) -> list[str]:
    """The extra labels of the info series; groups share a handful of combinations."""
    known: dict[tuple[object, ...], str] = {}
    out = []
    for sample in samples:
        g = sample.group
        key = (
            g.status_value,
            g.user_group,
            g.load_type,
            g.source,
            g.target_group_type,
            g.supported_channels
            if not isinstance(g.supported_channels, list)
            else tuple(g.supported_channels),
        )
        suffix = known.get(key)
        if suffix is None:
            suffix = known[key] = (
                f',status="{label(g.status_value)}",user_group="{label(g.user_group)}",'
                f'load_type="{label(g.load_type)}",source="{label(g.source)}",'
                f'target_group_type="{label(g.target_group_type)}",'
                f'channels="{escape(g.channels)}"'
            )
        out.append(suffix)
    return out


def _family(metric: m.Metric, labels: list[str], values: Iterable[float | None]) -> bytes:
    """One family's lines. Values print as Python's repr: exact, and done in C."""
    name = metric.name
    lines = [
        f"{name}{{{label_set}}} {value!r}\n"
        for label_set, value in zip(labels, values, strict=True)
        if value is not None
    ]
    return (_header(metric) + "".join(lines)).encode()


def _families(tenant: str, samples: Sequence[GroupSample]) -> Iterator[bytes]:
    labels = _group_label_sets(tenant, samples)
    yield _family(m.TOTAL_RECORDS, labels, (s.group.total_count for s in samples))
    yield _family(m.VALID_RECORDS, labels, (s.group.valid_count for s in samples))
    yield _family(m.ERROR_RECORDS, labels, (s.group.error_count for s in samples))
    yield _family(m.STATE, labels, (s.state for s in samples))
    info = [ls + suffix for ls, suffix in zip(labels, _info_labels(samples), strict=True)]
    yield _family(m.INFO, info, (1 for _ in samples))
    del info
    yield _family(m.CREATED, labels, (s.created for s in samples))
    yield _family(m.LAST_UPDATED, labels, (s.last_updated for s in samples))
    yield _family(m.STATE_SINCE, labels, (s.state_since for s in samples))


def render_groups(tenant: str, samples: Sequence[GroupSample]) -> GroupBlock:
    """Render the per-group families family by family, deflating each as the next renders.

    Only the compressed block is kept: the uncompressed text of 100,000 groups
    (~120 MB) never sits in memory whole.
    """
    return GroupBlock(_Deflated.of(_families(tenant, samples), final=False), len(samples))


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
    """One representation of /metrics as one gzip member, kept in parts (never joined).

    A scrape that accepts gzip gets the parts as they are; one that does not
    gets them inflated as it is written (`plain_pieces`), which costs the
    exporter far less memory than keeping an uncompressed copy of every body.
    """

    content_type: str
    gzip_parts: tuple[bytes, ...]
    length: int
    """Uncompressed bytes."""

    @property
    def gzip_length(self) -> int:
        return sum(len(part) for part in self.gzip_parts)

    @property
    def gzipped(self) -> bytes:
        return b"".join(self.gzip_parts)

    def plain_pieces(self, piece: int = 1 << 20) -> Iterator[bytes]:
        inflater = zlib.decompressobj(wbits=31)
        for part in self.gzip_parts:
            data = part
            while data:
                out = inflater.decompress(data, piece)
                if out:
                    yield out
                data = inflater.unconsumed_tail
        rest = inflater.flush()
        if rest:
            yield rest

    def plain(self) -> bytes:
        return b"".join(self.plain_pieces())


@dataclass(frozen=True)
class Exposition:
    text: Body
    openmetrics: Body

    def select(self, openmetrics: bool) -> Body:
        return self.openmetrics if openmetrics else self.text


def render(block: GroupBlock, health: Health) -> Exposition:
    """Stitch a deflated group block and this poll's health series into both formats.

    Only the small tail is compressed here; the block's deflate data is reused
    as is, and the gzip CRC continues from the block's.
    """
    bodies = []
    for openmetrics, content_type in ((False, TEXT_CONTENT_TYPE), (True, OPENMETRICS_CONTENT_TYPE)):
        tail = _tail(health, openmetrics)
        end = _Deflated.small(tail, final=True)
        crc = zlib.crc32(tail, block.deflated.crc)
        length = block.size + len(tail)
        trailer = struct.pack("<II", crc & 0xFFFFFFFF, length & 0xFFFFFFFF)
        parts = (_GZIP_HEADER, block.deflated.data, end.data, trailer)
        bodies.append(Body(content_type, parts, length))
    return Exposition(*bodies)
