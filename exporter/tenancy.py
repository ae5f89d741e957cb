"""The tenants one exporter polls, and reloading them without a restart.

`Tenancy` gives each tenant a key (the same key as long as its settings stay the
same) and hands the list to the server's `Latest` (which tenants to serve) and
to the poller process (which tenants to poll). A tenant whose settings did not
change keeps its key, so its poller goes on with its state: state-since,
counters, the last snapshot.

`Reloader` re-reads `--config.file` on SIGHUP, on `POST /-/reload`, and by
itself when the file's content changes (the kubelet updates a mounted
ConfigMap in place), through its `load`: the settings process
(`app.reload_tenants`) reads and checks the file, so that the serving process
never loads pydantic. A file that does not load changes nothing; it is logged
once (a file left bad is not reported again until it changes), and
`webex_campaign_config_last_reload_successful` goes to 0 until a load succeeds.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import structlog

from . import metrics as m
from .errors import ConfigError, TenantConfigError
from .exposition import format_value, header
from .server import Latest
from .worker import PollerProcess, PollerSpec

log = structlog.get_logger("exporter.tenancy")

CONFIG_CHECK_INTERVAL = 5.0
"""Seconds between looks at whether --config.file changed."""


class Tenancy:
    """Which tenants are polled and served, under which keys."""

    def __init__(self, latest: Latest) -> None:
        self._latest = latest
        self._specs: list[PollerSpec] = []
        self._next_key = 0
        self.poller: PollerProcess | None = None
        """Told about every change once set (it is built after the first list)."""

    @property
    def specs(self) -> list[PollerSpec]:
        return list(self._specs)

    def apply(self, tenants: Sequence[PollerSpec]) -> tuple[list[str], list[str], list[str]]:
        """Poll and serve exactly `tenants` (their keys ignored) from now on; the names
        added, changed, removed."""
        known = {spec.tenant: spec for spec in self._specs}
        specs = []
        added: list[str] = []
        changed: list[str] = []
        for wanted in tenants:
            spec = known.get(wanted.tenant)
            if spec is None or replace(spec, key=0) != replace(wanted, key=0):
                (added if spec is None else changed).append(wanted.tenant)
                spec = replace(wanted, key=self._new_key())
            specs.append(spec)
        names = {spec.tenant for spec in tenants}
        removed = [name for name in known if name not in names]
        self._specs = specs
        stall_after = max((spec.stall_after for spec in specs), default=0.0)
        # The server first: results of removed pollers are dropped from now on.
        self._latest.configure([(spec.key, spec.tenant) for spec in specs], stall_after)
        if self.poller is not None:
            self.poller.update(specs)
        return added, changed, removed

    def _new_key(self) -> int:
        self._next_key += 1
        return self._next_key


class ReloadStatus:
    """`webex_campaign_config_*`: whether the last reload worked, and when one last did."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.successful = True
        self.success_time = clock()

    def succeeded(self) -> None:
        self.successful = True
        self.success_time = self._clock()

    def failed(self) -> None:
        self.successful = False

    def render(self, openmetrics: bool) -> bytes:
        out = []
        for metric, value in (
            (m.CONFIG_RELOAD_SUCCESSFUL, 1.0 if self.successful else 0.0),
            (m.CONFIG_RELOAD_SUCCESS_TIME, self.success_time),
        ):
            out.append(f"{header(metric, openmetrics)}{metric.name} {format_value(value)}\n")
        return "".join(out).encode()


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class Reloader:
    """Reloads --config.file on request and when its content changes."""

    def __init__(
        self,
        path: Path,
        load: Callable[[], Sequence[PollerSpec]],
        tenancy: Tenancy,
        status: ReloadStatus,
        check_interval: float = CONFIG_CHECK_INTERVAL,
    ) -> None:
        self._path = path
        self._load = load
        """The tenants of the file this instance polls, every check made (`cli.load_shard`,
        in a process of its own when run by `app`); TenantConfigError or ConfigError."""
        self._tenancy = tenancy
        self._status = status
        self._check_interval = check_interval
        self._lock = threading.Lock()
        self._loaded = _digest(self._path)
        """The content in effect (loaded at start or by the last good reload)."""
        self._reported: str | None = None
        """A bad content already logged: the file watch does not report it again."""
        self._requested = threading.Event()
        self._stop = threading.Event()

    def request(self) -> None:
        """Reload soon, from the watch thread (what SIGHUP does: a signal handler must not
        take locks)."""
        self._requested.set()

    def reload(self, cause: str) -> str | None:
        """Load the file and apply it; the problems, one per line, or None when it worked."""
        with self._lock:
            digest = _digest(self._path)
            try:
                tenants = self._load()
            except (TenantConfigError, ConfigError) as exc:
                self._status.failed()
                problems = list(getattr(exc, "problems", ())) or [str(exc)]
                if cause != "file_changed" or digest != self._reported:
                    log.error("config_reload_failed", cause=cause, problems=problems)
                self._reported = digest
                return "\n".join(problems)
            self._loaded, self._reported = digest, None
            added, changed, removed = self._tenancy.apply(tenants)
            self._status.succeeded()
            log.info(
                "config_reloaded",
                cause=cause,
                tenants=len(tenants),
                added=added,
                changed=changed,
                removed=removed,
            )
            return None

    def watch(self) -> None:
        """Until stop(): reload when asked, or when the file's content changed."""
        while not self._stop.is_set():
            if self._requested.wait(self._check_interval):
                self._requested.clear()
                if not self._stop.is_set():
                    self.reload("SIGHUP")
                continue
            digest = _digest(self._path)
            if digest is not None and digest not in (self._loaded, self._reported):
                self.reload("file_changed")

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.watch, name="config-reload", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
        self._requested.set()
