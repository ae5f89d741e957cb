"""The loaded config: a validated file with its TLS context and authorizer built."""

from __future__ import annotations

import ssl
from pathlib import Path

from .basic_auth import Authorizer, BasicAuth, allow_all
from .model import WebConfigModel, parse
from .tls import build_ssl_context


class WebConfig:
    """A loaded, validated web config; cheap to query from request threads."""

    def __init__(self, path: Path, model: WebConfigModel) -> None:
        self.path = path
        self.model = model
        tls = model.tls_server_config
        self._ssl: ssl.SSLContext | None = None
        self._tls_files: list[Path] = []
        if tls is not None and tls.enabled:
            self._ssl, self._tls_files = build_ssl_context(path, tls)
        http = model.http_server_config
        self.headers: dict[str, str] = {
            name: value for name, value in ((http and http.headers) or {}).items() if value
        }
        users = model.basic_auth_users or {}
        self._authorizer: Authorizer = BasicAuth(users) if users else allow_all

    @property
    def tls_enabled(self) -> bool:
        return self._ssl is not None

    @property
    def basic_auth_enabled(self) -> bool:
        return bool(self.model.basic_auth_users)

    def ssl_context(self) -> ssl.SSLContext | None:
        """Server-side context (TLS 1.2+ unless the file says otherwise), None without TLS."""
        return self._ssl

    def authorizer(self) -> Authorizer:
        """The Handler.authorize hook: True to serve, False after sending a 401."""
        return self._authorizer

    def watched_files(self) -> list[Path]:
        return [self.path, *self._tls_files]


def load_web_config(path: Path) -> WebConfig:
    """Parse and validate `path`, loading certificates; raises WebConfigError."""
    path = Path(path).expanduser().absolute()
    return WebConfig(path, parse(path))
