"""What the settings come to once every check has passed, as plain data: all the serving
process runs from.

The settings (pydantic-settings, and the tenants file's models) are read and checked in a
short-lived process of their own, at start and at each reload (see `app`); the serving
process receives this plan and never loads pydantic, which would hold about 12 MB for
the life of the process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .worker import PollerSpec


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class DemoTenant:
    """A simulated tenant of --demo: how its simulator answers, and its poller's spec
    (whose base_url is the simulator's, known once it listens)."""

    spec: PollerSpec
    scenario: str
    """A name of `scenarios.SCENARIOS`, or `healthy` or `flaky`."""
    timezone: str
    slow_seconds: float
    """The `slow` scenario's delay: longer than the request timeout."""
    too_large_bytes: int
    """The `too_large` scenario's body: larger than max_response_bytes."""


@dataclass(frozen=True)
class Plan:
    """The settings of the serving process and the tenants it polls, all checked."""

    listen: tuple[ListenAddress, ...]
    listen_setting: str
    """The listen address's variable and flag, for the error when one cannot be bound."""
    log_level: str
    log_format: str
    telemetry_path: str
    max_connections: int
    read_header_timeout: float
    enable_lifecycle: bool
    web_config_file: Path | None
    config_file: Path | None
    shard: int
    total_shards: int
    tenants: tuple[PollerSpec, ...] = ()
    """The tenants polled at start (key 0: `Tenancy` gives the keys)."""
    demo: tuple[DemoTenant, ...] = ()
    """With --demo: the simulated tenants this shard polls, in place of `tenants`."""
    is_demo: bool = False
