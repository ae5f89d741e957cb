"""Parsing helpers for assertions on the exposition."""

from __future__ import annotations

import gzip
import socket
import zlib

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.samples import Sample

from exporter.exposition import Exposition


def samples(text: str, openmetrics: bool = False) -> list[Sample]:
    parse = parse_om if openmetrics else parse_text
    return [sample for family in parse(text) for sample in family.samples]


def series(
    text: str, name: str, openmetrics: bool = False
) -> dict[frozenset[tuple[str, str]], float]:
    """Samples of one metric, keyed by their label set."""
    return {
        frozenset(s.labels.items()): s.value for s in samples(text, openmetrics) if s.name == name
    }


def by_id(text: str, name: str) -> dict[str, float]:
    """Per-group samples of one metric keyed by the `id` label."""
    return {s.labels["id"]: s.value for s in samples(text) if s.name == name}


def text_of(exposition: Exposition, openmetrics: bool = False) -> str:
    """The body as a client decodes it, checked against what a scrape without gzip gets.

    Decoded here with a single-member gzip reader (as curl and Prometheus read it), not
    with the exporter's own inflater: one complete member, nothing after it, the CRC and
    length trailer right, `length` right, and `plain()` the same bytes.
    """
    body = exposition.select(openmetrics)
    gzipped = body.gzipped
    reader = zlib.decompressobj(wbits=31)
    decoded = reader.decompress(gzipped)
    assert reader.eof, "the gzip member is incomplete"
    assert reader.unused_data == b"", "bytes after the gzip member"
    assert gzip.decompress(gzipped) == decoded
    assert len(decoded) == body.length
    assert body.plain() == decoded
    return decoded.decode()


class FakeClock:
    """Wall-clock time the test moves by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
