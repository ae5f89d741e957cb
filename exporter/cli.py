"""Command line: flags, logging, wiring, signals."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from . import __version__
from . import metrics as m
from .api import credentials_from, tls_verify
from .logs import configure_logging
from .process_metrics import ProcessMetrics
from .server import Latest, MetricsServer, initial_published, make_server
from .settings import (
    DEFAULT_PORT,
    ConfigError,
    ListenAddress,
    Settings,
    describe_setting,
    load_settings,
)
from .simulator import DEMO_KEY, FLAKY_SHARE, SCENARIOS, Simulator, Tenant
from .webconfig import load_web_config, wrap_server
from .worker import PollerProcess, PollerSpec

log = structlog.get_logger("exporter")

DEMO_TICK_SECONDS = 15.0


# (flag, setting, metavar, help); every flag maps to the setting of the same name.
_FLAGS: tuple[tuple[str, str, str | None, str], ...] = (
    ("--base-url", "base_url", "URL", "API base; the exporter GETs {base}/target-groups"),
    (
        "--api-key-file",
        "api_key_file",
        "PATH",
        "file holding the API secret key, re-read when it changes (or the key itself in"
        " WEBEX_CAMPAIGN_API_KEY)",
    ),
    (
        "--client-id",
        "client_id",
        "ID",
        "client id of the API hub's client-credentials token flow (deprecated by Webex), with"
        " WEBEX_CAMPAIGN_CLIENT_SECRET(_FILE) and WEBEX_CAMPAIGN_AUTH_KEY(_FILE)",
    ),
    ("--client-secret-file", "client_secret_file", "PATH", "file holding the client secret"),
    ("--auth-key-file", "auth_key_file", "PATH", "file holding the auth key (sent as Basic)"),
    ("--token-url", "token_url", "URL", "token endpoint (default {base}/oauth/token)"),
    ("--ca-file", "ca_file", "PATH", "PEM bundle of CAs to trust for the API"),
    ("--tenant", "tenant", None, "tenant label (default: first label of the base URL's host)"),
    ("--poll-interval", "poll_interval", "SECONDS", "seconds between polls (default 60)"),
    ("--timeout", "timeout", "SECONDS", "seconds for one API request (default 30)"),
    ("--timezone", "timezone", "ZONE", "IANA zone of createdOn/lastUpdatedOn (default UTC)"),
    (
        "--stale-after",
        "stale_after",
        "SECONDS",
        "drop per-group series after polls fail this long (default 5 poll intervals)",
    ),
    (
        "--max-response-bytes",
        "max_response_bytes",
        "BYTES",
        "largest API response accepted (default 256 MiB)",
    ),
    (
        "--max-label-length",
        "max_label_length",
        "BYTES",
        "longest label value exported; longer ones are cut and end with ... (default 1024)",
    ),
    (
        "--web.config.file",
        "web_config_file",
        "PATH",
        "YAML file enabling TLS and/or basic auth on all endpoints (exporter-toolkit format)",
    ),
    (
        "--web.telemetry-path",
        "web_telemetry_path",
        "PATH",
        "path of the metrics (default /metrics)",
    ),
    (
        "--web.max-connections",
        "web_max_connections",
        "N",
        "connections served at once; more are answered 503 (default 64)",
    ),
    (
        "--web.read-header-timeout",
        "web_read_header_timeout",
        "SECONDS",
        "deadline for a client to send its request headers (default 10)",
    ),
    ("--log.level", "log_level", "LEVEL", "debug, info, warn or error (default info)"),
    ("--log.format", "log_format", "FORMAT", "json, logfmt or console (default json)"),
    (
        "--demo.scenario",
        "demo_scenario",
        "NAME",
        "how the demo tenant answers: healthy (default), flaky (30%% of requests fail at"
        " random), or one of these for ever: " + ", ".join(SCENARIOS),
    ),
)
_SWITCHES: tuple[tuple[str, str, str], ...] = (
    (
        "--allow-insecure-http",
        "allow_insecure_http",
        "accept a plain http:// base URL to a non-loopback host",
    ),
    ("--demo", "demo", "poll an embedded simulated tenant on loopback: no credentials, no network"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webex-campaign-exporter",
        description="Prometheus exporter for Webex Campaign target groups. Every setting has"
        " an environment variable WEBEX_CAMPAIGN_<SETTING>, e.g. WEBEX_CAMPAIGN_BASE_URL;"
        " flags win over the environment.",
        argument_default=argparse.SUPPRESS,
    )
    for flag, dest, metavar, help_text in _FLAGS:
        parser.add_argument(flag, dest=dest, metavar=metavar, help=help_text)
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        metavar="[HOST]:PORT",
        action="append",
        help=f"where the endpoints are served; repeat for several (default :{DEFAULT_PORT})",
    )
    for flag, dest, help_text in _SWITCHES:
        parser.add_argument(flag, dest=dest, action="store_const", const=True, help=help_text)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


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
    demo_key = DEMO_KEY if settings.demo else None
    credentials = credentials_from(settings, demo_key)  # the poller process builds its own
    configure_logging(settings.log_level, settings.log_format, credentials.secrets)
    tls_verify(settings)
    web = load_web_config(settings.web_config_file) if settings.web_config_file else None
    tenant = settings.tenant_label
    latest = Latest(
        initial_published(tenant, dict.fromkeys(m.DOCUMENTED_FAILURES, 0)),
        stall_after=settings.stall_after,
    )
    simulator = _demo_tenant(settings) if settings.demo else None
    base_url = simulator.base_url if simulator else settings.base_url
    assert base_url is not None
    poller = PollerProcess(PollerSpec(settings, base_url, demo_key), latest)
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
    return Exporter(settings, base_url, servers, latest, poller, simulator)


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


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    if "listen_address" in args:  # repeated flag -> the variable's list form
        args["listen_address"] = ",".join(args["listen_address"])
    try:
        settings = load_settings(**args)
        exporter = build(settings)
    except ConfigError as exc:
        print(f"webex-campaign-exporter: error: {exc}", file=sys.stderr)
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
        tenant=settings.tenant_label,
        listen_address=[str(address) for address in settings.listen],
        base_url=exporter.base_url,
        poll_interval_s=settings.poll_interval,
        stale_after_s=settings.effective_stale_after,
        demo=settings.demo,
        web_config=str(settings.web_config_file) if settings.web_config_file else None,
    )
    while not stop.wait(0.5):
        pass
    exporter.stop()
    log.info("exporter_stopped", tenant=settings.tenant_label)
    return 0
