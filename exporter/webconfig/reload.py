"""Live reloading: the current config, re-read when its file or a certificate changes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import structlog

from .config import WebConfig, load_web_config
from .model import WebConfigError

log = structlog.get_logger("exporter.webconfig")

DEFAULT_CHECK_INTERVAL = 1.0  # seconds between checks whether the files changed


def _signature(paths: list[Path]) -> tuple[tuple[int, int, int, int] | None, ...]:
    result: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)  # follows symlinks: Kubernetes secret updates swap a link
        except OSError:
            result.append(None)
        else:
            result.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
    return tuple(result)


class LiveWebConfig:
    """The current WebConfig, re-read when the file or a certificate it names changes."""

    def __init__(self, config: WebConfig, check_interval: float = DEFAULT_CHECK_INTERVAL) -> None:
        self._config = config
        self._interval = check_interval
        self._signature = _signature(config.watched_files())
        self._next_check = time.monotonic() + check_interval
        self._lock = threading.Lock()

    def current(self) -> WebConfig:
        if time.monotonic() < self._next_check:
            return self._config
        with self._lock:
            now = time.monotonic()
            if now < self._next_check:
                return self._config
            self._next_check = now + self._interval
            old = self._config
            signature = _signature(old.watched_files())
            if signature == self._signature:
                return old
            # Remember the broken state too: retry when the files change again, not every call.
            self._signature = signature
            try:
                new = load_web_config(old.path)
            except WebConfigError as exc:
                log.error("web_config_reload_failed", error=str(exc), keeping="previous config")
                return old
            if new.tls_enabled != old.tls_enabled:
                log.error(
                    "web_config_reload_failed",
                    error=f"{old.path}: switching TLS on or off needs a restart",
                    keeping="previous config",
                )
                return old
            self._config = new
            self._signature = _signature(new.watched_files())
            log.info(
                "web_config_reloaded",
                path=str(new.path),
                tls=new.tls_enabled,
                basic_auth=new.basic_auth_enabled,
            )
            return new
