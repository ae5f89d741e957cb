"""Shared fixtures: the simulator as the test double, clients and pollers wired to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import httpx
import pytest
from helpers import FakeClock

from exporter import metrics as m
from exporter.api import ApiClient, RequestStats, StaticKey
from exporter.exposition import TenantShares
from exporter.poller import Poller, PollResult
from exporter.server import Published
from exporter.simulator import DEMO_KEY, Simulator, Tenant


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tenant() -> Tenant:
    return Tenant(clock=lambda: datetime(2026, 11, 30, 12, 0, tzinfo=UTC))


@pytest.fixture
def simulator(tenant: Tenant) -> Iterator[Simulator]:
    with Simulator(tenant, keys=frozenset({DEMO_KEY})) as sim:
        yield sim


@pytest.fixture
def make_client(simulator: Simulator) -> Iterator[Callable[..., ApiClient]]:
    clients: list[ApiClient] = []

    def make(
        key: str = DEMO_KEY,
        timeout: float = 5.0,
        max_response_bytes: int = 10_000_000,
        transport: httpx.BaseTransport | None = None,
        base_url: str | None = None,
    ) -> ApiClient:
        client = ApiClient(
            base_url or simulator.base_url,
            StaticKey(key),
            timeout,
            max_response_bytes,
            RequestStats(m.DOCUMENTED_FAILURES),
            transport=transport,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


class Recorder:
    """Collects what a poller publishes, rendered as the poller process renders it."""

    def __init__(self) -> None:
        self.results: list[PollResult] = []
        self.published: list[Published] = []
        self._shares = TenantShares()

    def __call__(self, result: PollResult) -> None:
        self.results.append(result)
        self.published.append(Published.of(self._shares.of(result.block, result.health)))

    @property
    def last(self) -> Published:
        return self.published[-1]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_poller(
    make_client: Callable[..., ApiClient], recorder: Recorder, clock: FakeClock
) -> Callable[..., Poller]:
    """A poller of tenant `acme` (interval 60 s, stale after 300 s) publishing to `recorder`."""

    def make(**client_options: object) -> Poller:
        return Poller(
            make_client(**client_options),
            tenant="acme",
            timezone="UTC",
            interval=60.0,
            stale_after=300.0,
            publish=recorder,
            clock=clock,
        )

    return make


@pytest.fixture
def poller(make_poller: Callable[..., Poller]) -> Poller:
    return make_poller()
