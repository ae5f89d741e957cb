"""Command line: flags, logging, wiring, signals."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from . import __version__
from . import metrics as m
from .api import ApiClient, Credentials, KeyFile, RequestStats, StaticKey
from .poller import Poller, initial_published
from .server import Latest, MetricsServer, make_server
from .settings import DEFAULT_PORT, ConfigError, Settings, describe_setting, load_settings
from .simulator import DEMO_KEY, Simulator, Tenant
from .webconfig import load_web_config, wrap_server

log = structlog.get_logger("exporter")

DEMO_TICK_SECONDS = 15.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webex-campaign-exporter",
        description="Prometheus exporter for Webex Campaign target groups. Every flag has an"
        " environment variable WEBEX_CAMPAIGN_<NAME>; flags win.",
        argument_default=argparse.SUPPRESS,
    )
    add = parser.add_argument
    add(
        "--base-url",
        dest="base_url",
        metavar="URL",
        help="API base; the exporter GETs {base}/target-groups (WEBEX_CAMPAIGN_BASE_URL)",
    )
    add(
        "--api-key-file",
        dest="api_key_file",
        metavar="PATH",
        help="file holding the API secret key, re-read when it changes"
        " (WEBEX_CAMPAIGN_API_KEY_FILE; or the key itself in WEBEX_CAMPAIGN_API_KEY)",
    )
    add(
        "--tenant",
        dest="tenant",
        help="value of the tenant label (default: first label of the base URL's host)",
    )
    add(
        "--poll-interval",
        dest="poll_interval",
        metavar="SECONDS",
        help="seconds between polls (default 60)",
    )
    add(
        "--timeout",
        dest="timeout",
        metavar="SECONDS",
        help="seconds for one API request (default 30)",
    )
    add(
        "--timezone",
        dest="timezone",
        metavar="ZONE",
        help="IANA time zone of createdOn/lastUpdatedOn (default UTC)",
    )
    add(
        "--stale-after",
        dest="stale_after",
        metavar="SECONDS",
        help="drop per-group series after polls fail this long (default 5 poll intervals)",
    )
    add(
        "--max-response-bytes",
        dest="max_response_bytes",
        metavar="BYTES",
        help="largest API response accepted (default 256 MiB)",
    )
    add(
        "--allow-insecure-http",
        dest="allow_insecure_http",
        action="store_const",
        const=True,
        help="accept a plain http:// base URL to a non-loopback host",
    )
    add(
        "--web.listen-address",
        dest="listen_address",
        metavar="[HOST]:PORT",
        help=f"where /metrics is served (default :{DEFAULT_PORT})",
    )
    add(
        "--web.config.file",
        dest="web_config_file",
        metavar="PATH",
        help="YAML file enabling TLS and/or basic auth on all endpoints, in the format of"
        " Prometheus's exporter-toolkit (WEBEX_CAMPAIGN_WEB_CONFIG_FILE)",
    )
    add("--log.level", dest="log_level", help="debug, info, warning or error (default info)")
    add("--log.format", dest="log_format", help="json or console (default json)")
    add(
        "--demo",
        dest="demo",
        action="store_const",
        const=True,
        help="poll an embedded simulated tenant on loopback: no credentials, no network",
    )
    add("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _redact(secrets: Callable[[], Iterable[str]]) -> structlog.types.Processor:
    """Defence in depth: no known secret survives into a log line, whatever carried it."""

    def processor(
        _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        live = [secret for secret in secrets() if secret]
        if not live:
            return event
        for key, value in event.items():
            text = value if isinstance(value, str) else None
            if text is None and not isinstance(value, int | float | bool | type(None)):
                text = str(value)
            if text is not None and any(secret in text for secret in live):
                for secret in live:
                    text = text.replace(secret, "[REDACTED]")
                event[key] = text
        return event

    return processor


def configure_logging(level: str, fmt: str, secrets: Callable[[], Iterable[str]] = tuple) -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    # httpx logs every request at INFO; our own events say what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


@dataclass
class Exporter:
    """The running pieces, started and stopped together."""

    settings: Settings
    server: MetricsServer
    poller: Poller
    client: ApiClient
    simulator: Simulator | None
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.threads.append(self.poller.start_thread())
        serve = threading.Thread(
            target=self.server.serve_forever, args=(0.1,), name="http", daemon=True
        )
        serve.start()
        self.threads.append(serve)

    def stop(self) -> None:
        self.poller.stop()
        self.server.shutdown()
        self.server.server_close()
        self.client.close()
        if self.simulator is not None:
            self.simulator.stop()


def _credentials(settings: Settings) -> Credentials:
    if settings.demo:
        return StaticKey(DEMO_KEY)
    if settings.api_key_file is not None:
        key_file = KeyFile(settings.api_key_file)
        if not key_file.loaded:
            raise ConfigError(
                f"{describe_setting('api_key_file')}: {settings.api_key_file} is empty or"
                " unreadable: it must hold the API secret key"
            )
        return key_file
    assert settings.api_key is not None  # the settings model guarantees one of the two
    return StaticKey(settings.api_key.get_secret_value())


def build(settings: Settings) -> Exporter:
    credentials = _credentials(settings)
    configure_logging(settings.log_level, settings.log_format, credentials.secrets)
    web = load_web_config(settings.web_config_file) if settings.web_config_file else None
    simulator = None
    base_url = settings.base_url
    if settings.demo:
        simulator = Simulator(Tenant(timezone=settings.timezone), keys=frozenset({DEMO_KEY}))
        simulator.start(tick_seconds=DEMO_TICK_SECONDS)
        base_url = simulator.base_url
    assert base_url is not None
    tenant = settings.tenant_label
    stats = RequestStats(m.DOCUMENTED_FAILURES)
    client = ApiClient(base_url, credentials, settings.timeout, settings.max_response_bytes, stats)
    latest = Latest(initial_published(tenant, stats.read()[1]))
    try:
        server = make_server(settings.listen, latest, tenant)
    except OSError as exc:
        client.close()
        if simulator is not None:
            simulator.stop()
        raise ConfigError(
            f"{describe_setting('listen_address')}: cannot listen on"
            f" {settings.listen}: {exc.strerror or exc}"
        ) from None
    if web is not None:
        wrap_server(server, web)
    poller = Poller(
        client,
        tenant,
        settings.timezone,
        settings.poll_interval,
        settings.effective_stale_after,
        latest.set,
    )
    return Exporter(settings, server, poller, client, simulator)


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
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
        listen_address=str(settings.listen),
        base_url=exporter.client.url.removesuffix("/target-groups"),
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
