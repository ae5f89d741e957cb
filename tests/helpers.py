"""Parsing helpers for assertions on the exposition."""

from __future__ import annotations

import gzip
import socket

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
    body = exposition.select(openmetrics)
    plain = body.plain().decode()
    assert gzip.decompress(body.gzipped).decode() == plain
    return plain


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
