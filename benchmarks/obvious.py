"""The obvious exporter, for comparison, in two variants, as a process of its own.

It polls `{base}/target-groups` back to back (or on `--poll-interval`) from a
thread and serves `/metrics` with prometheus_client's own HTTP server (gzip
when asked), with the garbage collector as Python ships it:

- `gauges`: labelled Gauges; a poll clears them and refills them with
  `.labels(...).set(...)`; a scrape renders the registry (`generate_latest`).
- `collector`: a custom collector, prometheus_client's recommended way for
  exporters; a poll keeps the parsed rows, a scrape yields `GaugeMetricFamily`s
  built from them in `collect()`.

Both parse JSON with the standard library and dates with the exporter's own
parser, and log one JSON line `{"event": "poll_completed", ...}` per poll on
stderr with the same timing keys as the exporter, which is how the benchmark
reads both.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter import metrics as m
from exporter.records import DateParser

VARIANTS = ("gauges", "collector")


def _labels(tenant: str, r: dict[str, Any]) -> tuple[str, str, str, str]:
    return (tenant, str(r["id"]), str(r["name"]), str(r["behaviour"]))


def _info(r: dict[str, Any]) -> tuple[str, ...]:
    return (
        r["statusValue"],
        r["userGroup"],
        str(r["loadType"]),
        str(r["source"]),
        str(r["targetGroupType"]),
        ",".join(r["supportedChannels"]),
    )


class Gauges:
    """Labelled Gauges, filled on every poll, rendered on every scrape."""

    def __init__(self, registry: CollectorRegistry, tenant: str = "bench") -> None:
        self.tenant = tenant
        self.gauges = {
            metric.name: Gauge(metric.name, metric.help, metric.labels, registry=registry)
            for metric in m.PER_GROUP
        }
        self.parse_date = DateParser("UTC")

    def update(self, records: list[dict[str, Any]]) -> None:
        gauges = self.gauges
        for gauge in gauges.values():
            gauge.clear()
        total, valid, errors = (
            gauges[m.TOTAL_RECORDS.name],
            gauges[m.VALID_RECORDS.name],
            gauges[m.ERROR_RECORDS.name],
        )
        state, info = gauges[m.STATE.name], gauges[m.INFO.name]
        created, updated = gauges[m.CREATED.name], gauges[m.LAST_UPDATED.name]
        since = gauges[m.STATE_SINCE.name]
        for r in records:
            labels = _labels(self.tenant, r)
            total.labels(*labels).set(r["totalCount"])
            valid.labels(*labels).set(r["validcount"])
            errors.labels(*labels).set(r["errorcount"])
            state.labels(*labels).set(r["targetState"])
            info.labels(*labels, *_info(r)).set(1)
            created_at = self.parse_date(r["createdOn"])
            updated_at = self.parse_date(r["lastUpdatedOn"])
            if created_at is not None:
                created.labels(*labels).set(created_at)
            if updated_at is not None:
                updated.labels(*labels).set(updated_at)
                since.labels(*labels).set(updated_at)


Labels = tuple[str, str, str, str]
Row = tuple[Labels, tuple[str, ...], tuple[float, ...], float | None, float | None]


class Custom(Collector):
    """A custom collector: the poll keeps rows, `collect()` builds the families."""

    def __init__(self, registry: CollectorRegistry, tenant: str = "bench") -> None:
        self.tenant = tenant
        self.rows: list[Row] = []
        self.parse_date = DateParser("UTC")
        registry.register(self)

    def update(self, records: list[dict[str, Any]]) -> None:
        parse = self.parse_date
        self.rows = [
            (
                _labels(self.tenant, r),
                _info(r),
                (r["totalCount"], r["validcount"], r["errorcount"], r["targetState"]),
                parse(r["createdOn"]),
                parse(r["lastUpdatedOn"]),
            )
            for r in records
        ]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rows = self.rows  # one reference: a poll replaces the list, never edits it
        family = {
            metric.name: GaugeMetricFamily(metric.name, metric.help, labels=metric.labels)
            for metric in m.PER_GROUP
        }
        values = [
            family[metric.name]
            for metric in (m.TOTAL_RECORDS, m.VALID_RECORDS, m.ERROR_RECORDS, m.STATE)
        ]
        info = family[m.INFO.name]
        created = family[m.CREATED.name]
        updated = family[m.LAST_UPDATED.name]
        since = family[m.STATE_SINCE.name]
        for labels, extra, numbers, created_at, updated_at in rows:
            for metric, value in zip(values, numbers, strict=True):
                metric.add_metric(labels, value)
            info.add_metric((*labels, *extra), 1)
            if created_at is not None:
                created.add_metric(labels, created_at)
            if updated_at is not None:
                updated.add_metric(labels, updated_at)
                since.add_metric(labels, updated_at)
        yield from family.values()


def poll_forever(base_url: str, interval: float, target: Gauges | Custom) -> None:
    client = httpx.Client(timeout=900, headers={"Authorization": "Bearer bench"})
    while True:
        started = time.monotonic()
        response = client.get(f"{base_url}/target-groups")
        response.raise_for_status()
        received = time.monotonic()
        records = json.loads(response.content)
        target.update(records)
        now = time.monotonic()
        event = {
            "event": "poll_completed",
            "groups": len(records),
            "fetch_s": round(received - started, 6),
            "processing_s": round(now - received, 6),
            "duration_s": round(now - started, 6),
        }
        del records, response
        print(json.dumps(event), file=sys.stderr, flush=True)
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.obvious")
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--poll-interval", type=float, default=0.0)
    args = parser.parse_args(argv)
    registry = CollectorRegistry()
    target = Gauges(registry) if args.variant == "gauges" else Custom(registry)
    start_http_server(args.port, addr="127.0.0.1", registry=registry)
    thread = threading.Thread(
        target=poll_forever, args=(args.base_url, args.poll_interval, target), daemon=True
    )
    thread.start()
    thread.join()
    return 1  # the poller only returns by raising


if __name__ == "__main__":
    sys.exit(main())
