"""The obvious implementation, for comparison: prometheus_client labelled Gauges.

One refresh = parse the JSON body, clear the gauges, fill them with
`.labels(...).set(...)`, then `generate_latest` (what a scrape would serve).
It gets the same date parser as the exporter and no gzip, which flatters it.
Run in its own process; prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from exporter import metrics as m
from exporter.records import DateParser


class Obvious:
    def __init__(self, tenant: str = "bench") -> None:
        self.tenant = tenant
        self.registry = CollectorRegistry()
        self.gauges = {
            metric.name: Gauge(metric.name, metric.help, metric.labels, registry=self.registry)
            for metric in m.PER_GROUP
        }
        self.parse_date = DateParser("UTC")

    def refresh(self, body: bytes) -> bytes:
        records: list[dict[str, Any]] = json.loads(body)
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
            labels = (self.tenant, str(r["id"]), str(r["name"]), str(r["behaviour"]))
            total.labels(*labels).set(r["totalCount"])
            valid.labels(*labels).set(r["validcount"])
            errors.labels(*labels).set(r["errorcount"])
            state.labels(*labels).set(r["targetState"])
            info.labels(
                *labels,
                r["statusValue"],
                r["userGroup"],
                str(r["loadType"]),
                str(r["source"]),
                str(r["targetGroupType"]),
                ",".join(r["supportedChannels"]),
            ).set(1)
            created_at = self.parse_date(r["createdOn"])
            updated_at = self.parse_date(r["lastUpdatedOn"])
            if created_at is not None:
                created.labels(*labels).set(created_at)
            if updated_at is not None:
                updated.labels(*labels).set(updated_at)
                since.labels(*labels).set(updated_at)
        return generate_latest(self.registry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.obvious")
    parser.add_argument("--payload", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    body = args.payload.read_bytes()
    obvious = Obvious()
    seconds: list[float] = []
    size = 0
    for _ in range(args.repeats):
        begin = time.perf_counter()
        size = len(obvious.refresh(body))
        seconds.append(time.perf_counter() - begin)
    print(json.dumps({"seconds": seconds, "exposition_bytes": size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
