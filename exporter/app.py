"""The serving process: the exporter wired from a checked `Plan`, run until a signal.

`main` is the console script. It reads the settings in a short-lived child,
`python -m exporter.configure`, which parses the flags and the environment,
makes every start-up check and sends back a `Plan`; or prints what is wrong
and exits 2; or prints --help, --version or --config.check's lines and exits 0.
This process then serves from the plan and never loads pydantic (about 12 MB
held for the life of the process otherwise). A reload of --config.file runs
the same child again for the new tenants.

`cli.main` runs all of it in one process (tests, debugging).
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import structlog

from . import __version__
from .api import Access, Credentials, credentials
from .errors import ConfigError, TenantConfigError
from .logs import configure_logging
from .plan import DemoTenant, ListenAddress, Plan
from .process_metrics import ProcessMetrics
from .server import Latest, MetricsServer, Published, ScrapeSeries, make_server
from .tenancy import Reloader, ReloadStatus, Tenancy
from .worker import Logging, PollerProcess, PollerSpec

if TYPE_CHECKING:
    from .simulator import Simulator

log = structlog.get_logger("exporter")

DEMO_TICK_SECONDS = 15.0


@dataclass
class Exporter:
    """The running pieces, started and stopped together."""

    plan: Plan
    tenants: list[PollerSpec]
    """The tenants polled at start (reloads change the poller's list, not this one)."""
    servers: list[MetricsServer]
    latest: Latest
    poller: PollerProcess
    simulators: list[Simulator]
    reloader: Reloader | None

    @property
    def base_url(self) -> str:
        return self.tenants[0].base_url if self.tenants else ""

    @property
    def simulator(self) -> Simulator | None:
        return self.simulators[0] if self.simulators else None

    def start(self) -> None:
        self.latest.watch(self.poller.start())
        if self.reloader is not None:
            self.reloader.start()
        for server in self.servers:
            threading.Thread(
                target=server.serve_forever, args=(0.1,), name="http", daemon=True
            ).start()

    def request_reload(self) -> None:
        """SIGHUP: reload --config.file soon (a signal handler must not wait for locks)."""
        if self.reloader is None:
            log.info("reload_ignored", reason="no --config.file to reload")
        else:
            self.reloader.request()

    def stop(self) -> None:
        if self.reloader is not None:
            self.reloader.stop()
        self.poller.stop()
        for server in self.servers:
            server.shutdown()
            server.server_close()
        for simulator in self.simulators:
            simulator.stop()


def build(plan: Plan, load: Callable[[], Sequence[PollerSpec]] | None = None) -> Exporter:
    """Wire the pieces of a checked plan; nothing starts polling or serving yet.

    `load` reads --config.file's tenants again at a reload (`cli.load_shard`).
    Raises ConfigError when an address cannot be bound or --web.config.file is bad.
    """
    # The poller process builds its own; these redact the keys in this process's logs,
    # those of the tenants a reload adds too (and of the removed: redacting more is safe).
    keys: dict[Access, Credentials] = {}

    def known(specs: Sequence[PollerSpec]) -> Sequence[PollerSpec]:
        for spec in specs:
            if spec.access not in keys:
                keys[spec.access] = credentials(spec.access)
        return specs

    def secrets() -> list[str]:
        return [secret for c in list(keys.values()) for secret in c.secrets()]

    known([*plan.tenants, *(tenant.spec for tenant in plan.demo)])

    configure_logging(plan.log_level, plan.log_format, secrets)
    web = None
    if plan.web_config_file:
        # Only with --web.config.file: bcrypt, PyYAML and the web config's models stay out
        # of the serving process otherwise.
        from .webconfig import load_web_config

        web = load_web_config(plan.web_config_file)
    latest = Latest(Published.of_slots([]))
    tenancy = Tenancy(latest)
    tenants: list[PollerSpec] = list(plan.tenants)
    simulators: list[Simulator] = []
    if plan.demo:
        tenants, simulators = _demo(plan.demo)
    tenancy.apply(tenants)
    poller = PollerProcess(Logging(plan.log_level, plan.log_format), tenancy.specs, latest)
    tenancy.poller = poller
    reloader, status = None, None
    if plan.config_file is not None and load is not None:
        status = ReloadStatus()
        reloader = Reloader(plan.config_file, lambda: known(load()), tenancy, status)
    series: list[ScrapeSeries] = [ProcessMetrics(lambda: poller.pid)]
    if status is not None:
        series.append(status)
    reload = None
    if plan.enable_lifecycle:

        def reload() -> str | None:
            return None if reloader is None else reloader.reload("POST /-/reload")

    try:
        servers = [_serve(plan, address, latest, series, reload) for address in plan.listen]
    except ConfigError:
        for simulator in simulators:
            simulator.stop()
        raise
    if web is not None:
        from .webconfig import wrap_server

        for server in servers:
            wrap_server(server, web)
    return Exporter(plan, tenants, servers, latest, poller, simulators, reloader)


def _demo(demo: Sequence[DemoTenant]) -> tuple[list[PollerSpec], list[Simulator]]:
    """--demo: the simulated tenants started on loopback, and their pollers' specs.

    Imported here, so only --demo loads the simulator: production code never does.
    """
    from .scenarios import DEMO_KEY, FLAKY_SHARE, SCENARIOS
    from .simulator import Simulator, Tenant

    specs, simulators = [], []
    for chosen in demo:
        tenant = Tenant(timezone=chosen.timezone)
        tenant.slow_seconds = chosen.slow_seconds
        tenant.too_large_bytes = chosen.too_large_bytes
        if chosen.scenario == "flaky":
            tenant.flaky = FLAKY_SHARE
        elif chosen.scenario != "healthy":
            tenant.scenario = SCENARIOS[chosen.scenario]
        simulator = Simulator(tenant, keys=frozenset({DEMO_KEY}))
        simulators.append(simulator.start(tick_seconds=DEMO_TICK_SECONDS))
        specs.append(replace(chosen.spec, base_url=simulator.base_url))
    return specs, simulators


def _serve(
    plan: Plan,
    address: ListenAddress,
    latest: Latest,
    series: Sequence[ScrapeSeries],
    reload: Callable[[], str | None] | None,
) -> MetricsServer:
    try:
        return make_server(
            address,
            latest,
            max_connections=plan.max_connections,
            read_header_timeout=plan.read_header_timeout,
            telemetry_path=plan.telemetry_path,
            scrape_series=series,
            reload=reload,
        )
    except OSError as exc:
        raise ConfigError(
            f"{plan.listen_setting}: cannot listen on {address}: {exc.strerror or exc}"
        ) from None


def run(exporter: Exporter) -> int:
    """Serve until SIGTERM or SIGINT (SIGHUP reloads --config.file); the exit code."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("exporter_stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: exporter.request_reload())
    exporter.start()
    plan = exporter.plan
    log.info(
        "exporter_started",
        version=__version__,
        tenants=[tenant.tenant for tenant in exporter.tenants],
        listen_address=[str(address) for address in plan.listen],
        base_url=[tenant.base_url for tenant in exporter.tenants],
        poll_interval_s=[tenant.poll_interval for tenant in exporter.tenants],
        config_file=str(plan.config_file) if plan.config_file else None,
        shard=f"{plan.shard} of {plan.total_shards}",
        demo=plan.is_demo,
        web_config=str(plan.web_config_file) if plan.web_config_file else None,
    )
    while not stop.wait(0.5):
        pass
    exporter.stop()
    log.info("exporter_stopped")
    return 0


SETTINGS_COMMAND = (sys.executable, "-m", "exporter.configure")
RELOAD_TIMEOUT = 30.0
"""Seconds a reload waits for the settings process (a key file on a hung mount, say)."""


def read_settings(
    mode: str, argv: Sequence[str], timeout: float | None = None
) -> tuple[int, object]:
    """Run `python -m exporter.configure MODE FD ARGV…`: its exit code and what it sent
    back on the pipe FD (None if nothing); killed after `timeout` seconds (exit code -9).

    Its stdout and stderr are this process's: what it prints (help, problems) reaches the
    user as if printed here. It inherits the environment, which with ARGV (this process's
    flags) gives the same settings at every reload.
    """
    read_fd, write_fd = os.pipe()
    try:
        child = subprocess.Popen(
            [*SETTINGS_COMMAND, mode, str(write_fd), *argv],
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
        )
    finally:
        os.close(write_fd)
    deadline = None if timeout is None else time.monotonic() + timeout
    sent = bytearray()
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while deadline is None or select.select([pipe], [], [], _left(deadline))[0]:
            piece = pipe.read(1 << 16)
            if not piece:
                break
            sent += piece
        else:  # past the deadline: whatever it sent is incomplete
            child.kill()
            sent.clear()
    code = child.wait()
    return code, pickle.loads(sent) if sent else None  # noqa: S301 (our own child's)


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def reload_tenants(argv: Sequence[str], timeout: float = RELOAD_TIMEOUT) -> list[PollerSpec]:
    """--config.file's tenants for this shard, read and checked by the settings process;
    TenantConfigError with its problems."""
    code, sent = read_settings("reload", argv, timeout)
    match sent:
        case ("tenants", list() as specs):
            return specs
        case ("problems", list() as problems):
            raise TenantConfigError(problems)
    if code == -signal.SIGKILL:
        raise TenantConfigError([f"reading the settings took longer than {timeout:g} s"])
    raise TenantConfigError(
        [f"the settings process answered nothing (exit code {code}): see its message"]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: the settings read in a child, then serving from their plan."""
    args = list(sys.argv[1:] if argv is None else argv)
    code, plan = read_settings("start", args)
    if not isinstance(plan, Plan):
        return code if code > 0 else 1 if code < 0 else 0
    try:
        exporter = build(plan, lambda: reload_tenants(args))
    except ConfigError as exc:
        print(f"webex-campaign-exporter: error: {exc}", file=sys.stderr)
        return 2
    return run(exporter)
