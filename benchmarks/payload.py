"""Synthetic target-group payloads shaped like the API example, and churn between polls."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from exporter.simulator import format_date, make_record

Record = dict[str, Any]

_UTC = ZoneInfo("UTC")
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_TEAMS = ("marketing", "sales", "retention", "ops", "growth", "support", "qa")
_WORDS = (
    "newsletter",
    "churn_winback",
    "vip",
    "cart_abandon",
    "loyalty_gold",
    "app_push",
    "sms_reminder",
    "webinar_leads",
    "renewals",
    "survey_panel",
    "black_friday",
    "onboarding",
    "reactivation",
    "QA_Segment",
    "sks_aap_campaign",
    "Customer_ID",
)
_CHANNELS = (("E",), ("S",), ("A",), ("E", "S"), ("W",), ("E", "S", "A"))
# Names are user input: now and then one needs escaping or is not ASCII.
_ODD_NAMES = ('promo "spring"', "back\\slash_list", "Kampagne_Grüße", "リスト_2024", "a,b;c")


def _name(rng: random.Random, created: datetime, serial: int) -> str:
    if rng.random() < 0.01:
        return f"{rng.choice(_ODD_NAMES)}_{serial}"
    word = rng.choice(_WORDS)
    return f"{word}_{created:%d%b}_{created:%Y%m%d%H%M%S}{serial % 100:02d}"


def make_group(
    rng: random.Random, serial: int, now: datetime = _EPOCH, fresh: bool = False
) -> Record:
    """One realistic record: ~10% in progress, ~15% of ready ones with error records.

    A `fresh` group was just created (churn): dated now, and mostly still importing.
    """
    if fresh:
        created = updated = now - timedelta(seconds=rng.randrange(0, 60))
        ready = rng.random() < 0.10
    else:
        created = now - timedelta(seconds=rng.randrange(60, 3 * 365 * 86400))
        age = int((now - created).total_seconds())
        updated = created + timedelta(seconds=rng.randrange(0, max(61, age)))
        ready = rng.random() >= 0.10
    total = float(rng.choice((rng.randrange(1, 500), rng.randrange(500, 50_000), 250_000)))
    errors = float(rng.randrange(1, max(2, int(total) // 20))) if rng.random() < 0.15 else 0.0
    if not ready:
        total = float(rng.randrange(0, int(total) + 1))
        errors = 0.0
    # Ids look like the example's: creation time in seconds plus a 4-digit serial.
    group_id = f"{int(created.timestamp())}{serial % 10_000:04d}"
    record = make_record(
        group_id,
        _name(rng, created, serial),
        total=total,
        valid=total - errors,
        errors=errors,
        ready=ready,
        created=format_date(created, _UTC),
        updated=format_date(updated, _UTC),
        behaviour=rng.choice("SSSD"),
        channels=rng.choice(_CHANNELS),
    )
    record["userGroup"] = rng.choice(_TEAMS)
    record["customerName"] = "bench"
    record["loadType"] = rng.choice((0, 0, 1))
    record["source"] = rng.choice((0, 0, 1, 6))
    record["targetGroupType"] = record["loadType"]
    return record


def generate(groups: int, seed: int = 4) -> list[Record]:
    rng = random.Random(seed)
    records: list[Record] = []
    seen: set[str] = set()
    serial = 0
    while len(records) < groups:
        serial += 1
        record = make_group(rng, serial)
        if record["id"] not in seen:
            seen.add(record["id"])
            records.append(record)
    return records


def serialise(records: list[Record]) -> bytes:
    # The API pretty-prints nothing; compact separators match its size (~700 B/group).
    return json.dumps(records, ensure_ascii=False, separators=(",", ":")).encode()


class Churner:
    """Replaces a fraction of the groups with new ones and advances in-progress imports.

    Each step is one minute of tenant time: random groups are deleted, as many are
    created (dated now, so ids, names and dates are new), and some imports progress.
    """

    def __init__(self, records: list[Record], fraction: float, seed: int = 11) -> None:
        self.records = records
        self._count = max(1, round(len(records) * fraction)) if fraction > 0 else 0
        self._rng = random.Random(seed)
        self._serial = 10_000_000
        self._ids = {record["id"] for record in records}
        self._now = _EPOCH

    def step(self) -> None:
        self._now += timedelta(minutes=1)
        for _ in range(self._count):
            index = self._rng.randrange(len(self.records))
            self._ids.discard(self.records[index]["id"])
            while True:
                self._serial += 1
                record = make_group(self._rng, self._serial, self._now, fresh=True)
                if record["id"] not in self._ids:
                    break
            self._ids.add(record["id"])
            self.records[index] = record
        stamp = format_date(self._now, _UTC)
        for _ in range(self._count):
            record = self._rng.choice(self.records)
            if record["targetState"] == 0:
                record["totalCount"] += 100.0
                record["validcount"] += 100.0
                record["lastUpdatedOn"] = stamp
