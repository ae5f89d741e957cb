"""Command line: flags, logging, wiring, signals."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from . import __version__
from . import metrics as m
from .api import credentials_from, tls_verify
from .logs import configure_logging
from .poller import initial_published
from .process_metrics import ProcessMetrics
from .server import Latest, MetricsServer, make_server
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
from .tenants import TenantConfigError, check_lines, load_tenants, tenants_from_settings
from .webconfig import load_web_config, wrap_server
from .worker import PollerProcess, PollerSpec

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
    base_url: str
    servers: list[MetricsServer]
    latest: Latest
    poller: PollerProcess
    simulator: Simulator | None

    def start(self) -> None:
        self.latest.watch(self.poller.start())
        for server in self.servers:
            threading.Thread(
                target=server.serve_forever, args=(0.1,), name="http", daemon=True
            ).start()

    def stop(self) -> None:
        self.poller.stop()
        for server in self.servers:
            server.shutdown()
            server.server_close()
        if self.simulator is not None:
            self.simulator.stop()


def _demo_tenant(settings: Settings) -> Simulator:
    # Imported here, so only --demo loads the simulator: production code never does.
    from .scenarios import FLAKY_SHARE, SCENARIOS
    from .simulator import DEMO_KEY, Simulator, Tenant

    tenant = Tenant(timezone=settings.timezone)
    tenant.slow_seconds = settings.timeout + 5
    tenant.too_large_bytes = settings.max_response_bytes + 1
    if settings.demo_scenario == "flaky":
        tenant.flaky = FLAKY_SHARE
    elif settings.demo_scenario != "healthy":
        tenant.scenario = SCENARIOS[settings.demo_scenario]
    return Simulator(tenant, keys=frozenset({DEMO_KEY})).start(tick_seconds=DEMO_TICK_SECONDS)


def build(settings: Settings) -> Exporter:
    """Check everything that can be wrong before anything starts, then wire the pieces."""
    # TODO(issue 13 runtime): poll every tenant of this shard, not only the first.
    tenants = tenants_from_settings(settings)
    if not tenants:
        raise ConfigError(
            f"{describe_setting('shard')}: no tenant of {settings.config_file} is in shard"
            f" {settings.shard} of {settings.total_shards} (several tenants are not wired yet)"
        )
    first = tenants[0]
    credentials = credentials_from(first)  # the poller process builds its own
    configure_logging(settings.log_level, settings.log_format, credentials.secrets)
    tls_verify(first)
    web = load_web_config(settings.web_config_file) if settings.web_config_file else None
    latest = Latest(
        initial_published(first.tenant_label, dict.fromkeys(m.DOCUMENTED_FAILURES, 0)),
        stall_after=first.stall_after,
    )
    simulator = _demo_tenant(first) if first.demo else None
    base_url = simulator.base_url if simulator else first.base_url
    assert base_url is not None
    poller = PollerProcess(PollerSpec(first, base_url), latest)
    processes = ProcessMetrics(lambda: poller.pid)
    try:
        servers = [_serve(settings, address, latest, processes) for address in settings.listen]
    except ConfigError:
        if simulator is not None:
            simulator.stop()
        raise
    if web is not None:
        for server in servers:
            wrap_server(server, web)
    return Exporter(first, base_url, servers, latest, poller, simulator)


def _serve(
    settings: Settings, address: ListenAddress, latest: Latest, processes: ProcessMetrics
) -> MetricsServer:
    try:
        return make_server(
            address,
            latest,
            max_connections=settings.web_max_connections,
            read_header_timeout=settings.web_read_header_timeout,
            telemetry_path=settings.web_telemetry_path,
            process_metrics=processes,
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
        credentials_from(settings)
        tls_verify(settings)
    else:
        tenants = load_tenants(settings.config_file, settings, check_files=True)
    if settings.web_config_file is not None:
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
    exporter.start()
    log.info(
        "exporter_started",
        version=__version__,
        tenant=exporter.settings.tenant_label,
        listen_address=[str(address) for address in settings.listen],
        base_url=exporter.base_url,
        poll_interval_s=exporter.settings.poll_interval,
        stale_after_s=exporter.settings.effective_stale_after,
        demo=settings.demo,
        web_config=str(settings.web_config_file) if settings.web_config_file else None,
    )
    while not stop.wait(0.5):
        pass
    exporter.stop()
    log.info("exporter_stopped", tenant=exporter.settings.tenant_label)
    return 0
