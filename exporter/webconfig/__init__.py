"""Protect the HTTP endpoints with `--web.config.file` (TLS, client certificates, basic auth).

The file uses the YAML format of Prometheus's exporter-toolkit
(https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md), so a
file written for node_exporter works here unchanged, with two kinds of exceptions that fail
loudly at start rather than being silently ignored (an ignored security setting is worse than
a refused one):

- toolkit keys this exporter does not implement (`cert`/`key` inline, `cipher_suites`,
  `curve_preferences`, `client_allowed_sans`, `rate_limit`) raise WebConfigError;
- `client_auth_type: RequireAnyClientCert` (Go: any certificate, unverified) needs a client CA
  here and verifies the certificate, because Python's ssl cannot ask for a certificate
  without verifying it. `RequestClientCert` (ask, never check) grants nothing, so it is served
  as `NoClientCert`.

`http_server_config.http2` is accepted and has no effect: the server speaks HTTP/1.1 only.

Design
------
One module per part, in the order a request meets them: `model` (the file format), `tls`
(the server's SSL context), `basic_auth`, `config` (a loaded file), `reload` (live
reloading) and `server` (applying it to a server).

`load_web_config` parses and validates everything up front, including loading the certificate
and key into an `ssl.SSLContext`, so a broken file stops the exporter at start (WebConfigError
is a ConfigError: the CLI exits 2 with the one-line message).

`wrap_server(server, config)` applies a config to a server built by `make_server`, without
changing its class:

- it replaces `server.RequestHandlerClass` with a subclass whose `authorize` hook checks
  basic auth (on every path but the probe endpoints, see PROBE_PATHS) and whose
  `end_headers` adds `http_server_config.headers` to every response (401s and 404s included);
- with TLS it installs a per-instance `finish_request`: the accept loop hands over the plain
  socket as before, and the TLS handshake runs in the connection's own thread (socketserver
  calls `finish_request` from `process_request_thread`), with a timeout. A client that
  connects and never speaks therefore costs one thread for at most HANDSHAKE_TIMEOUT seconds
  and never blocks `accept`. Wrapping the listening socket instead would run handshakes in
  whatever thread first reads, and handshake errors would surface as tracebacks.

Like exporter-toolkit, which re-reads the file on every request, the file is re-read when it
or a file it names (certificate, key, client CA) changes (checked at most once per
`check_interval`), so certificate rotation and user changes need no restart. A reload that
fails is logged and the last good config stays in force; switching TLS on or off needs a
restart, because the listening socket's protocol cannot change under connected clients.

Basic auth verifies with bcrypt, which is deliberately slow (cost 10 is ~70 ms) while
Prometheus scrapes every 15 s: successful verifications are cached under an HMAC (random
per-process key) of user, stored hash and password, so neither passwords nor fast hashes of
them are kept. Unknown users still cost one bcrypt check against a dummy hash of the same cost
as the configured ones, so response times do not reveal which user names exist. bcrypt checks
run one at a time, as in exporter-toolkit: a flood of wrong passwords uses one core, and
cached scrapes never wait for it.
"""

from .basic_auth import REALM, Authorizer, BasicAuth
from .config import WebConfig, load_web_config
from .model import HTTPServerModel, TLSServerModel, WebConfigError, WebConfigModel
from .reload import DEFAULT_CHECK_INTERVAL, LiveWebConfig
from .server import HANDSHAKE_TIMEOUT, PROBE_PATHS, wrap_server

__all__ = [
    "DEFAULT_CHECK_INTERVAL",
    "HANDSHAKE_TIMEOUT",
    "PROBE_PATHS",
    "REALM",
    "Authorizer",
    "BasicAuth",
    "HTTPServerModel",
    "LiveWebConfig",
    "TLSServerModel",
    "WebConfig",
    "WebConfigError",
    "WebConfigModel",
    "load_web_config",
    "wrap_server",
]
