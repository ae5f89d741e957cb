"""A simulated Webex Campaign tenant over real HTTP: the `--demo` tenant and the test double.

It serves `GET /target-groups` with the two example records of the API
description plus generated groups that evolve: groups move from Inprogress to
Ready (each import takes its own number of steps, some finish with error
records), error counts grow, one group stays stuck in Inprogress, and now and
then one group is deleted and another created, in progress. Tests drive it directly (`advance`,
`delete`, `put`, `inject`) to script faults and changes.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

# Re-exported: tests and benchmarks script the tenant's faults from here.
from .scenarios import DEMO_KEY as DEMO_KEY
from .scenarios import FAULTS as FAULTS
from .scenarios import HOSTILE_NAMES as HOSTILE_NAMES
from .scenarios import SCENARIOS as SCENARIOS
from .scenarios import Fault as Fault
from .scenarios import Record, Scenario, json_fault
from .scenarios import error_fault as error_fault

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
        self._faults: deque[Fault | Scenario] = deque()
        self._finish_at: dict[str, int] = {}
        """Step at which each generated import turns Ready."""
        self.requests = 0
        self.scenario: Scenario | None = None
        """Answer every request this way (`--demo.scenario`)."""
        self.flaky: float = 0.0
        """Share of requests answered by a random scenario (`--demo.scenario flaky`)."""
        self.flaky_choices: tuple[str, ...] = FAULTS
        self.answered: Counter[str] = Counter()
        """Requests answered by each scenario, by name."""
        self.slow_seconds = 35.0
        self.too_large_bytes = 1 << 30
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

    def answer(self) -> Fault | None:
        """The scripted answer to the next request, or None for the normal list."""
        with self._lock:
            self.requests += 1
            planned: Fault | Scenario | None = self._faults.popleft() if self._faults else None
            if planned is None and self.flaky and self._rng.random() < self.flaky:
                planned = SCENARIOS[self._rng.choice(self.flaky_choices)]
            if planned is None:
                planned = self.scenario
            if not isinstance(planned, Scenario):
                return planned
            self.answered[planned.name] += 1
            records = [copy.deepcopy(record) for record in self._records.values()]
        return planned.answer(records, self)

    # -- what tests and the demo clock use ---------------------------------------------

    @property
    def stuck_id(self) -> str:
        return self._stuck_id

    def inject(self, *faults: Fault | Scenario | str) -> None:
        """Answer the next requests with these, in order (a str names a scenario)."""
        with self._lock:
            self._faults.extend(SCENARIOS[f] if isinstance(f, str) else f for f in faults)

    def put(self, record: Record) -> None:
        with self._lock:
            self._records[str(record["id"])] = copy.deepcopy(record)

    def delete(self, group_id: str) -> None:
        with self._lock:
            self._records.pop(group_id, None)
            self._finish_at.pop(group_id, None)

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
        if not ready:
            # From 2 to 64 steps (30 s to 16 min at the demo's 15 s a step), spread
            # evenly on a log scale: the import-duration histogram fills several buckets.
            self._finish_at[group_id] = self._steps + round(2 ** self._rng.uniform(1, 6))
        return group_id

    def _finishes(self, group_id: str) -> bool:
        finish_at = self._finish_at.get(group_id)
        if finish_at is None:  # a group put by a test: finishes at random
            return self._rng.random() < 0.3
        return self._steps >= finish_at

    def _finish(self, group_id: str, record: Record) -> None:
        record["targetState"], record["statusValue"] = 1, "Ready"
        errors = min(float(self._rng.choice((0, 0, 0, 3, 12, 40))), record["validcount"])
        record["errorcount"] += errors
        record["validcount"] -= errors
        self._finish_at.pop(group_id, None)

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
                if self._finishes(group_id):
                    self._finish(group_id, record)
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
                victim = self._rng.choice(generated)
                del self._records[victim]
                self._finish_at.pop(victim, None)
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


class TokenIssuer:
    """The API hub's client-credentials flow: `POST {base}/oauth/token`."""

    def __init__(
        self, auth_key: str, client_id: str, client_secret: str, lifetime: float | None = 3600.0
    ) -> None:
        self.auth_key = auth_key
        self.client_id = client_id
        self.client_secret = client_secret
        self.lifetime = lifetime
        self.issued: list[str] = []
        self._valid: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self, authorization: str, golden: str, body: bytes) -> Fault:
        try:
            fields = json.loads(body or b"{}")
        except ValueError:
            return error_fault(400, 400, "bad request body")
        if (
            authorization != f"Basic {self.auth_key}"
            or golden.lower() != "true"
            or not isinstance(fields, dict)
            or fields.get("clientId") != self.client_id
            or fields.get("clientSecret") != self.client_secret
            or fields.get("grantType") != "client_credentials"
        ):
            return error_fault(401, 430, "Authorization failed")
        with self._lock:
            token = f"token-{len(self.issued) + 1}-{random.getrandbits(64):016x}"
            self.issued.append(token)
            expiry = time.monotonic() + self.lifetime if self.lifetime else float("inf")
            self._valid[token] = expiry
        answer: dict[str, object] = {"access_token": token, "token_type": "Bearer"}
        if self.lifetime:
            answer["expires_in"] = self.lifetime
        return Fault(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    def accepts(self, token: str) -> bool:
        with self._lock:
            return self._valid.get(token, 0.0) > time.monotonic()

    def expire_all(self) -> None:
        with self._lock:
            self._valid.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    tenant: Tenant
    keys: frozenset[str] | None
    tokens: TokenIssuer | None

    def _endpoint(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def do_GET(self) -> None:
        if not self._endpoint().endswith("/target-groups"):
            self._answer(error_fault(404, 404, "Not found"))
            return
        fault = self.tenant.answer()
        if fault is not None:
            self._answer(fault)
            return
        if not self._authorized(self.headers.get("Authorization", "")):
            self._answer(error_fault(401, 498, "Invalid token or Access token expired"))
            return
        self._answer(json_fault(self.tenant.records()))

    def _authorized(self, authorization: str) -> bool:
        if not authorization.startswith("Bearer "):
            return self.keys is None
        bearer = authorization.removeprefix("Bearer ")
        if self.tokens is not None and self.tokens.accepts(bearer):
            return True
        return self.keys is None or bearer in self.keys

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.tokens is None or not self._endpoint().endswith("/oauth/token"):
            self._answer(error_fault(405, 405, "Method not supported"))
            return
        self._answer(
            self.tokens.issue(
                self.headers.get("Authorization", ""), self.headers.get("isGoldenAuthkey", ""), body
            )
        )

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


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that time out and hang up are part of the script, not errors."""


class Simulator:
    """The tenant served on loopback over real HTTP, in a background thread."""

    def __init__(
        self,
        tenant: Tenant | None = None,
        keys: frozenset[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: TokenIssuer | None = None,
    ) -> None:
        self.tenant = tenant or Tenant()
        self.tokens = tokens
        attributes = {"tenant": self.tenant, "keys": keys, "tokens": tokens}
        handler = type("SimHandler", (_Handler,), attributes)
        self._server = _QuietServer((host, port), handler)
        self._server.daemon_threads = True
        self._stopped = threading.Event()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self, tick_seconds: float | None = None) -> Simulator:
        """Serve in the background; with `tick_seconds`, evolve the tenant on a timer."""
        threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="simulator", daemon=True
        ).start()
        if tick_seconds:
            threading.Thread(
                target=self._tick, args=(tick_seconds,), name="simulator-clock", daemon=True
            ).start()
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
