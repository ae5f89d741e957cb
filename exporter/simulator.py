"""A simulated Webex Campaign tenant over real HTTP: the `--demo` tenant and the test double.

It serves `GET /target-groups` with the two example records of the API
description plus generated groups that evolve: groups move from Inprogress to
Ready, error counts grow, one group stays stuck in Inprogress, and now and then
one group is deleted and another created. Tests drive it directly (`advance`,
`delete`, `put`, `inject`) to script faults and changes.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

Record = dict[str, Any]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

SEED_RECORDS: tuple[Record, ...] = (
    {
        "createdBy": "1582274979811",
        "id": "16710111730000",
        "customerName": "surya",
        "userGroup": "marketing",
        "createdOn": "14/Dec/2022 15:16",
        "headerscount": 2,
        "allowedChannels": "App Push - qa_appAsset_Touchstone01null",
        "headers": "APPDEVICEID|EMAIL",
        "behaviour": "S",
        "name": "sks_aap_campaign_14Dec_20221214094613",
        "description": "null",
        "loadType": 0,
        "source": 6,
        "supportedChannels": ["A"],
        "fileName": "",
        "targetGroupType": 0,
        "recordSkipeType": 0,
        "thresholdType": -1,
        "thresholdValue": "-1.0",
        "isAllowRemoteUpdate": 0,
        "totalCount": 0.0,
        "validcount": 0.0,
        "errorcount": 0.0,
        "lastUpdatedOn": "14/Dec/2022 15:16",
        "statusValue": "Ready",
        "infoBased": "A",
        "targetState": 1,
    },
    {
        "createdBy": "1582274979811",
        "id": "16705874370001",
        "customerName": "surya",
        "userGroup": "marketing",
        "createdOn": "09/Dec/2022 17:33",
        "headerscount": 2,
        "allowedChannels": "App Push - qa_appAsset_Touchstone01null",
        "headers": "CUSTOMERID|EMAIL",
        "behaviour": "S",
        "name": "QA_Segemnt_Customer_ID_20221209120357",
        "description": "null",
        "loadType": 1,
        "source": 6,
        "supportedChannels": ["A"],
        "fileName": "",
        "targetGroupType": 1,
        "recordSkipeType": 0,
        "thresholdType": -1,
        "thresholdValue": "-1.0",
        "isAllowRemoteUpdate": 0,
        "totalCount": 2.0,
        "validcount": 2.0,
        "errorcount": 0.0,
        "lastUpdatedOn": "09/Dec/2022 17:33",
        "statusValue": "Ready",
        "infoBased": "A",
        "targetState": 1,
    },
)

STUCK_NAME = "demo_stuck_import"
DEMO_KEY = "demo-secret-key"


def format_date(moment: datetime, zone: ZoneInfo) -> str:
    """`14/Dec/2022 15:16`, the API's date format, in the tenant's zone."""
    local = moment.astimezone(zone)
    return f"{local.day:02d}/{_MONTHS[local.month - 1]}/{local.year} {local:%H:%M}"


def make_record(
    group_id: str,
    name: str,
    *,
    total: float,
    valid: float,
    errors: float,
    ready: bool,
    created: str,
    updated: str,
    behaviour: str = "S",
    channels: tuple[str, ...] = ("E",),
) -> Record:
    """A record shaped like the API's, quirks included."""
    return {
        "createdBy": "1582274979811",
        "id": group_id,
        "customerName": "demo",
        "userGroup": "marketing",
        "createdOn": created,
        "headerscount": 2,
        "allowedChannels": "Email - demo",
        "headers": "CUSTOMERID|EMAIL",
        "behaviour": behaviour,
        "name": name,
        "description": "null",
        "loadType": 0,
        "source": 0,
        "supportedChannels": list(channels),
        "fileName": f"{name}.csv",
        "targetGroupType": 0,
        "recordSkipeType": 0,
        "thresholdType": -1,
        "thresholdValue": "-1.0",
        "isAllowRemoteUpdate": 0,
        "totalCount": float(total),
        "validcount": float(valid),
        "errorcount": float(errors),
        "lastUpdatedOn": updated,
        "statusValue": "Ready" if ready else "Inprogress",
        "infoBased": channels[0],
        "targetState": 1 if ready else 0,
    }


@dataclass
class Fault:
    """One scripted answer in place of the normal list."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    close: bool = False
    """Close the connection without any answer."""


def error_fault(status: int, code: int | str, description: str = "error") -> Fault:
    body = json.dumps({"code": code, "description": description}).encode()
    return Fault(status, body, {"Content-Type": "application/json"})


class Tenant:
    """The simulated tenant's target groups, evolving one `advance()` step at a time."""

    def __init__(
        self,
        groups: int = 20,
        seed: int = 7,
        timezone: str = "UTC",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._zone = ZoneInfo(timezone)
        self._clock = clock
        self._records: dict[str, Record] = {}
        self._next_id = 1_700_000_000_000
        self._steps = 0
        self._faults: deque[Fault] = deque()
        self.requests = 0
        self.authorizations: list[str] = []
        for record in SEED_RECORDS:
            self._records[record["id"]] = copy.deepcopy(record)
        self._stuck_id = self._create(STUCK_NAME, ready=False, age=timedelta(hours=3))
        for index in range(groups - 1):
            ready = index % 3 != 0
            self._create(f"demo_{_WORDS[index % len(_WORDS)]}_{index:02d}", ready=ready)

    # -- what the HTTP handler uses --------------------------------------------------

    def records(self) -> list[Record]:
        with self._lock:
            return [copy.deepcopy(record) for record in self._records.values()]

    def next_fault(self) -> Fault | None:
        with self._lock:
            self.requests += 1
            return self._faults.popleft() if self._faults else None

    # -- what tests and the demo clock use ---------------------------------------------

    @property
    def stuck_id(self) -> str:
        return self._stuck_id

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def put(self, record: Record) -> None:
        with self._lock:
            self._records[str(record["id"])] = copy.deepcopy(record)

    def delete(self, group_id: str) -> None:
        with self._lock:
            self._records.pop(group_id, None)

    def advance(self, steps: int = 1) -> None:
        for _ in range(steps):
            with self._lock:
                self._step()

    def _now(self) -> str:
        return format_date(self._clock(), self._zone)

    def _create(self, name: str, ready: bool, age: timedelta = timedelta(0)) -> str:
        self._next_id += 1
        group_id = str(self._next_id)
        moment = format_date(self._clock() - age, self._zone)
        total = float(self._rng.randrange(100, 5000))
        errors = float(self._rng.choice((0, 0, 0, 3, 12, 40))) if ready else 0.0
        self._records[group_id] = make_record(
            group_id,
            name,
            total=total if ready else 0.0,
            valid=total - errors if ready else 0.0,
            errors=errors,
            ready=ready,
            created=moment,
            updated=moment,
            behaviour=self._rng.choice("SD"),
        )
        return group_id

    def _step(self) -> None:
        self._steps += 1
        now = self._now()
        for group_id, record in self._records.items():
            if group_id == self._stuck_id or group_id in _SEED_IDS:
                continue
            if record["targetState"] == 0:
                grow = float(self._rng.randrange(50, 500))
                record["totalCount"] += grow
                record["validcount"] += grow
                if self._rng.random() < 0.3:
                    record["targetState"], record["statusValue"] = 1, "Ready"
                record["lastUpdatedOn"] = now
            elif record["errorcount"] > 0 and self._rng.random() < 0.3:
                more = float(self._rng.randrange(1, 5))
                record["errorcount"] += more
                record["totalCount"] += more
                record["lastUpdatedOn"] = now
        if self._steps % 8 == 0:
            generated = [
                gid for gid in self._records if gid not in _SEED_IDS and gid != self._stuck_id
            ]
            if generated:
                del self._records[self._rng.choice(generated)]
            self._create(f"demo_{self._rng.choice(_WORDS)}_{self._steps:03d}", ready=False)


_SEED_IDS = frozenset(record["id"] for record in SEED_RECORDS)
_WORDS = (
    "newsletter",
    "churn_winback",
    "vip_customers",
    "cart_abandon",
    "loyalty_gold",
    "app_push_optin",
    "sms_reminders",
    "webinar_leads",
    "renewals_q4",
    "survey_panel",
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    tenant: Tenant
    keys: frozenset[str] | None

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] != "target-groups":
            self._answer(error_fault(404, 404, "Not found"))
            return
        authorization = self.headers.get("Authorization", "")
        fault = self.tenant.next_fault()
        if fault is not None:
            self._answer(fault)
            return
        if self.keys is not None and authorization.removeprefix("Bearer ") not in self.keys:
            self._answer(error_fault(401, 498, "Invalid token or Access token expired"))
            return
        body = json.dumps(self.tenant.records()).encode()
        self._answer(Fault(200, body, {"Content-Type": "application/json"}))

    def do_POST(self) -> None:
        self._answer(error_fault(405, 405, "Method not supported"))

    def _answer(self, fault: Fault) -> None:
        if fault.delay:
            time.sleep(fault.delay)
        if fault.close:
            self.close_connection = True
            return
        self.send_response(fault.status)
        headers = {"Content-Length": str(len(fault.body)), **fault.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(fault.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Simulator:
    """The tenant served on loopback over real HTTP, in a background thread."""

    def __init__(
        self,
        tenant: Tenant | None = None,
        keys: frozenset[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.tenant = tenant or Tenant()
        handler = type("SimHandler", (_Handler,), {"tenant": self.tenant, "keys": keys})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self, tick_seconds: float | None = None) -> Simulator:
        """Serve in the background; with `tick_seconds`, evolve the tenant on a timer."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="simulator", daemon=True
        )
        self._thread.start()
        if tick_seconds:
            self._ticker = threading.Thread(
                target=self._tick, args=(tick_seconds,), name="simulator-clock", daemon=True
            )
            self._ticker.start()
        return self

    def _tick(self, seconds: float) -> None:
        while not self._stopped.wait(seconds):
            self.tenant.advance()

    def stop(self) -> None:
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
