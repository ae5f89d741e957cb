"""structlog setup, shared by the exporter and its poller process."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, TextIO, cast

import structlog


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


class UnbreakableStream:
    """A log stream whose failures are dropped: logging must never stop polling or serving.

    When the reader of stderr goes away (`exporter 2>&1 | head -1`, a log
    shipper that exits), every write raises BrokenPipeError; raised inside
    the poll loop or the thread that receives its results, it would stop them.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):  # a closed pipe, a closed file
            return 0

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def isatty(self) -> bool:
        with contextlib.suppress(OSError, ValueError):
            return self._stream.isatty()
        return False


def configure_logging(
    level: str,
    fmt: str,
    secrets: Callable[[], Iterable[str]] = tuple,
    stream: TextIO | None = None,
) -> None:
    out = UnbreakableStream(stream or sys.stderr)
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    elif fmt == "logfmt":
        renderer = structlog.processors.LogfmtRenderer(key_order=["timestamp", "level", "event"])
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        # One write a line: `print` writes the line and its newline apart, and the
        # poller process shares this stderr, so two processes' lines would run into
        # each other (a JSON line per event is what log shippers parse).
        logger_factory=structlog.WriteLoggerFactory(cast(TextIO, out)),
        cache_logger_on_first_use=False,
    )
    # httpx logs every request at INFO; our own events say what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
