"""Applying a config to a server from make_server: auth and headers per request, TLS per
connection."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import ssl
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any, cast

import structlog

from .config import WebConfig
from .reload import DEFAULT_CHECK_INTERVAL, LiveWebConfig

log = structlog.get_logger("exporter.webconfig")

HANDSHAKE_TIMEOUT = 10.0  # seconds a client gets to finish the TLS handshake


# Served without basic auth (TLS still applies): Kubernetes probes cannot send credentials
# without putting them in the pod spec, and these answer only 200 or 503, never data.
# Exact paths only: "/-/ready?x" or "/-/healthy/" still need the password.
PROBE_PATHS = frozenset({"/-/healthy", "/-/ready"})


def _protected_handler(
    base: type[socketserver.BaseRequestHandler], live: LiveWebConfig
) -> type[BaseHTTPRequestHandler]:
    if not issubclass(base, BaseHTTPRequestHandler):
        raise TypeError(f"{base.__name__} is not an HTTP request handler")

    def authorize(handler: BaseHTTPRequestHandler) -> bool:
        if handler.command in ("GET", "HEAD") and handler.path in PROBE_PATHS:
            return True
        return live.current().authorizer()(handler)

    def end_headers(self: BaseHTTPRequestHandler) -> None:
        for name, value in live.current().headers.items():
            self.send_header(name, value)
        base.end_headers(self)

    return type(
        f"Protected{base.__name__}",
        (base,),
        {"authorize": staticmethod(authorize), "end_headers": end_headers},
    )


def _tls_finish_request(
    server: socketserver.BaseServer, live: LiveWebConfig
) -> Callable[[Any, Any], None]:
    finish_plain = type(server).finish_request

    def finish_request(request: socket.socket, client_address: Any) -> None:
        context = live.current().ssl_context()
        assert context is not None  # LiveWebConfig never switches TLS off
        remote = client_address[0] if isinstance(client_address, tuple) else str(client_address)
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            # wrap_socket detaches `request`; socketserver's later shutdown_request on it is
            # then a harmless no-op, so the TLS socket is closed here.
            conn = context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        except OSError as exc:
            log.debug("tls_wrap_failed", remote=remote, error=str(exc))
            request.close()
            return
        try:
            try:
                conn.do_handshake()
            except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts are OSErrors
                log.debug("tls_handshake_failed", remote=remote, error=str(exc))
                return
            try:
                finish_plain(server, conn, client_address)
            except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
                # A client vanishing mid-request is not the exporter's fault: no traceback.
                log.debug("tls_connection_error", remote=remote, error=str(exc))
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
            conn.close()

    return finish_request


def wrap_server(
    server: socketserver.BaseServer,
    config: WebConfig,
    *,
    check_interval: float = DEFAULT_CHECK_INTERVAL,
) -> LiveWebConfig:
    """Apply `config` to a server from make_server (before serve_forever); see module doc."""
    live = LiveWebConfig(config, check_interval)
    base = cast(type[socketserver.BaseRequestHandler], server.RequestHandlerClass)
    server.RequestHandlerClass = _protected_handler(base, live)
    if config.tls_enabled:
        # An instance attribute, so make_server's class and other servers stay untouched.
        setattr(server, "finish_request", _tls_finish_request(server, live))  # noqa: B010
    return live
