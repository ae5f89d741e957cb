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


# The fields a poll-to-poll change touches. They are serialised last, from a template,
# so a changed group costs one string format instead of a json.dumps of the record.
MUTABLE = ("totalCount", "validcount", "errorcount", "targetState", "statusValue", "lastUpdatedOn")
_TAIL = (
    ',"totalCount":%r,"validcount":%r,"errorcount":%r,"targetState":%d,'
    '"statusValue":"%s","lastUpdatedOn":"%s"}'
)


class ChurningTenant:
    """One tenant whose bodies change a fixed share of groups, picked at random, per step.

    Each group is kept as its immutable JSON prefix (serialised once) plus the mutable
    values; a body is the prefixes joined with freshly formatted tails. A changed group
    gets new counts and/or a new state and always a new `lastUpdatedOn` (tenant time
    advances a minute per step), so every one of them has new sample values.
    """

    def __init__(self, groups: int, fraction: float, seed: int = 4) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError(f"churn fraction {fraction} is not within [0, 1]")
        records = generate(groups, seed)
        self.prefixes = [
            json.dumps(
                {k: v for k, v in record.items() if k not in MUTABLE},
                ensure_ascii=False,
                separators=(",", ":"),
            )[:-1]
            for record in records
        ]
        self.values: list[list[Any]] = [[record[k] for k in MUTABLE] for record in records]
        self.tails = [_TAIL % tuple(values) for values in self.values]
        self.changed_per_step = round(groups * fraction)
        if fraction > 0:
            self.changed_per_step = max(1, self.changed_per_step)
        self._rng = random.Random(seed + 1)
        self._now = _EPOCH + timedelta(days=1)
        self.steps = 0

    @property
    def groups(self) -> int:
        return len(self.prefixes)

    def step(self) -> list[int]:
        """Change `changed_per_step` groups chosen at random; returns their indexes."""
        self.steps += 1
        self._now += timedelta(minutes=1)
        stamp = format_date(self._now, _UTC)
        rng = self._rng
        chosen = rng.sample(range(self.groups), self.changed_per_step)
        for index in chosen:
            total, valid, errors, state, status, _ = values = self.values[index]
            if state == 0:  # an import progresses, and now and then completes
                total += 100.0
                valid += 100.0
                if rng.random() < 0.3:
                    state, status = 1, "Ready"
            elif rng.random() < 0.1:  # a re-import starts
                state, status = 0, "Inprogress"
                total = valid = errors = 0.0
            else:  # records appended, some rejected
                added = float(rng.randrange(1, 50))
                bad = min(float(rng.randrange(0, 3)), added)  # never more than arrived
                total, valid, errors = total + added, valid + added - bad, errors + bad
            values[:] = (total, valid, errors, state, status, stamp)
            self.tails[index] = _TAIL % (total, valid, errors, state, status, stamp)
        return chosen

    def body(self) -> bytes:
        return ("[" + ",".join(map(str.__add__, self.prefixes, self.tails)) + "]").encode()
