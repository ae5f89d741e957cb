"""Command line: flags, logging, wiring, signals."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from . import __version__
from .api import check_tls, credentials_from, tls_verify
from .logs import configure_logging
from .process_metrics import ProcessMetrics
from .scenarios import DEMO_KEY
from .server import Latest, MetricsServer, Published, ScrapeSeries, make_server
from .settings import (
    OPTIONS,
    ConfigError,
    Flag,
    ListenAddress,
    Settings,
    default_text,
    describe_setting,
    load_settings,
)
from .tenancy import Reloader, ReloadStatus, Tenancy, Tenant, load_shard
from .tenants import TenantConfigError, check_lines, load_tenants, shard_of
from .worker import Logging, PollerProcess

if TYPE_CHECKING:
    from .simulator import Simulator

log = structlog.get_logger("exporter")

DEMO_TICK_SECONDS = 15.0


def build_parser() -> argparse.ArgumentParser:
    """One option per setting that has a flag, from its declaration in settings.py."""
    parser = argparse.ArgumentParser(
        prog="webex-campaign-exporter",
        description="Prometheus exporter for Webex Campaign target groups. Every setting has"
        " an environment variable WEBEX_CAMPAIGN_<SETTING>, e.g. WEBEX_CAMPAIGN_BASE_URL;"
        " flags win over the environment.",
        argument_default=argparse.SUPPRESS,
    )
    for name, flag in OPTIONS.items():
        help_text = _help(name, flag)
        if flag.switch:
            parser.add_argument(
                flag.option, dest=name, action="store_const", const=True, help=help_text
            )
        else:
            action = "append" if flag.repeatable else "store"
            parser.add_argument(
                flag.option, dest=name, metavar=flag.metavar, action=action, help=help_text
            )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _help(name: str, flag: Flag) -> str:
    text = flag.help.replace("%", "%%")  # argparse expands %(...)s in help
    default = default_text(name)
    return text if default is None else f"{text} (default {default})"


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """The flags given, as init arguments of Settings."""
    given = vars(args)
    for name, flag in OPTIONS.items():
        if flag.repeatable and name in given:  # the variable's list form
            given[name] = ",".join(given[name])
    return given


@dataclass
class Exporter:
    """The running pieces, started and stopped together."""

    settings: Settings
    tenants: list[Tenant]
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


def _demo_tenants(settings: Settings) -> list[tuple[Settings, Simulator]]:
    """--demo: `--demo.tenants` simulated tenants on loopback (this shard's are started).

    The first answers as `--demo.scenario` says; with several, the second fails now
    and then (flaky), so a multi-tenant dashboard shows a tenant in trouble.
    """
    # Imported here, so only --demo loads the simulator: production code never does.
    from .scenarios import FLAKY_SHARE, SCENARIOS
    from .simulator import Simulator, Tenant

    count = settings.demo_tenants
    label = settings.tenant_label  # `demo`, or --tenant
    names = [label] if count == 1 else [f"{label}-{n}" for n in range(1, count + 1)]
    chosen = []
    for index, name in enumerate(names):
        if shard_of(name, settings.total_shards) != settings.shard:
            continue
        tenant = Tenant(timezone=settings.timezone)
        tenant.slow_seconds = settings.timeout + 5
        tenant.too_large_bytes = settings.max_response_bytes + 1
        scenario = settings.demo_scenario if index == 0 else "flaky" if index == 1 else "healthy"
        if scenario == "flaky":
            tenant.flaky = FLAKY_SHARE
        elif scenario != "healthy":
            tenant.scenario = SCENARIOS[scenario]
        simulator = Simulator(tenant, keys=frozenset({DEMO_KEY}))
        chosen.append((settings.model_copy(update={"tenant": name}), simulator))
    return chosen


def _demo(settings: Settings) -> tuple[list[Tenant], list[Simulator]]:
    """The demo's tenants, their simulators started."""
    tenants, simulators = [], []
    for tenant_settings, simulator in _demo_tenants(settings):
        simulators.append(simulator.start(tick_seconds=DEMO_TICK_SECONDS))
        tenants.append(Tenant(tenant_settings, simulators[-1].base_url))
    return tenants, simulators


def build(settings: Settings) -> Exporter:
    """Check everything that can be wrong before anything starts, then wire the pieces."""
    demo_key = DEMO_KEY if settings.demo else None
    simulators: list[Simulator] = []
    if settings.config_file is not None:
        tenants = load_shard(settings)  # every tenant's key and CA files checked
    else:
        check_tls(settings)
        tenants = [Tenant(settings, settings.base_url or "")]
    # The poller process builds its own; these check the keys (and redact them in logs).
    credentials = [credentials_from(t.settings, demo_key) for t in tenants]

    def secrets() -> list[str]:
        return [secret for c in credentials for secret in c.secrets()]

    configure_logging(settings.log_level, settings.log_format, secrets)
    web = None
    if settings.web_config_file:
        # Only with --web.config.file: bcrypt, PyYAML and the web config's models (1.8 MB
        # with --config.file's loader) stay out of the serving process otherwise.
        from .webconfig import load_web_config

        web = load_web_config(settings.web_config_file)
    latest = Latest(Published.of_slots([]))
    tenancy = Tenancy(latest, demo_key)
    if settings.demo:
        tenants, simulators = _demo(settings)
    tenancy.apply(tenants)
    poller = PollerProcess(Logging(settings.log_level, settings.log_format), tenancy.specs, latest)
    tenancy.poller = poller
    status = ReloadStatus() if settings.config_file is not None else None
    reloader = Reloader(settings, tenancy, status) if status is not None else None
    series: list[ScrapeSeries] = [ProcessMetrics(lambda: poller.pid)]
    if status is not None:
        series.append(status)
    reload = None
    if settings.web_enable_lifecycle:

        def reload() -> str | None:
            return None if reloader is None else reloader.reload("POST /-/reload")

    try:
        servers = [_serve(settings, address, latest, series, reload) for address in settings.listen]
    except ConfigError:
        for simulator in simulators:
            simulator.stop()
        raise
    if web is not None:
        from .webconfig import wrap_server

        for server in servers:
            wrap_server(server, web)
    return Exporter(settings, tenants, servers, latest, poller, simulators, reloader)


def _serve(
    settings: Settings,
    address: ListenAddress,
    latest: Latest,
    series: Sequence[ScrapeSeries],
    reload: Callable[[], str | None] | None,
) -> MetricsServer:
    try:
        return make_server(
            address,
            latest,
            max_connections=settings.web_max_connections,
            read_header_timeout=settings.web_read_header_timeout,
            telemetry_path=settings.web_telemetry_path,
            scrape_series=series,
            reload=reload,
        )
    except OSError as exc:
        raise ConfigError(
            f"{describe_setting('listen_address')}: cannot listen on"
            f" {address}: {exc.strerror or exc}"
        ) from None


def check(settings: Settings) -> list[str]:
    """--config.check: every check start-up makes, then one line per tenant; starts nothing.

    Raises ConfigError or TenantConfigError.
    """
    if settings.config_file is None:
        tenants: tuple[Settings, ...] = (settings,)
        credentials_from(settings, DEMO_KEY if settings.demo else None)
        tls_verify(settings)
    else:
        tenants = load_tenants(settings.config_file, settings, check_files=True)
    if settings.web_config_file is not None:
        from .webconfig import load_web_config

        load_web_config(settings.web_config_file)
    return check_lines(tenants, settings.shard, settings.total_shards)


def main(argv: Sequence[str] | None = None) -> int:
    overrides = _overrides(build_parser().parse_args(argv))
    try:
        settings = load_settings(**overrides)
        if settings.config_check:
            print(*check(settings), sep="\n")
            return 0
        exporter = build(settings)
    except ConfigError as exc:
        print(f"webex-campaign-exporter: error: {exc}", file=sys.stderr)
        return 2
    except TenantConfigError as exc:
        for problem in exc.problems:
            print(f"webex-campaign-exporter: error: {problem}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("exporter_stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: exporter.request_reload())
    exporter.start()
    log.info(
        "exporter_started",
        version=__version__,
        tenants=[tenant.name for tenant in exporter.tenants],
        listen_address=[str(address) for address in settings.listen],
        base_url=[tenant.base_url for tenant in exporter.tenants],
        poll_interval_s=[tenant.settings.poll_interval for tenant in exporter.tenants],
        config_file=str(settings.config_file) if settings.config_file else None,
        shard=f"{settings.shard} of {settings.total_shards}",
        demo=settings.demo,
        web_config=str(settings.web_config_file) if settings.web_config_file else None,
    )
    while not stop.wait(0.5):
        pass
    exporter.stop()
    log.info("exporter_stopped")
    return 0
