"""The key, the client secret and the token never show in logs, /metrics or /, whatever fails."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator

import httpx
import pytest
from helpers import free_port
from tools import exporter_script

from exporter.simulator import SCENARIOS, Simulator, Tenant, TokenIssuer

API_KEY = "sk-api-key-9f8e7d6c5b4a"
AUTH_KEY = "auth-key-1a2b3c4d5e6f"
CLIENT_SECRET = "client-secret-0a9b8c7d"
# Healthy polls get all the time a busy machine may need; the `slow` scenario outlasts
# the request timeout by far (the simulator's threads are daemons: nobody waits for them).
TIMEOUT = "5"
SLOW_SECONDS = 600.0
# A ceiling for event-driven waits: each ends as soon as its condition holds.
PATIENCE = 60.0


def run_every_scenario(simulator: Simulator, args: list[str], env: dict[str, str]) -> str:
    """Run the exporter through every scenario; return all it printed and served."""
    tenant = simulator.tenant
    tenant.slow_seconds = SLOW_SECONDS
    port = free_port()
    output = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - not a pipe: unread, it would block
    process = subprocess.Popen(
        [
            exporter_script(),
            "--base-url",
            simulator.base_url,
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--poll-interval",
            "0.05",
            "--timeout",
            TIMEOUT,
            "--max-response-bytes",
            "1000000",
            "--log.level",
            "debug",
            *args,
        ],
        env={**os.environ, **env},
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    tenant.too_large_bytes = 1_000_001
    url = f"http://127.0.0.1:{port}"
    served: list[str] = []
    try:
        for name in SCENARIOS:
            before = tenant.requests
            tenant.inject(name)
            deadline = time.monotonic() + PATIENCE
            while tenant.requests < before + 2:
                assert time.monotonic() < deadline, f"exporter stalled at {name}"
                assert process.poll() is None, "exporter died"
                time.sleep(0.02)
            for path in ("/metrics", "/"):
                served.append(httpx.get(url + path, timeout=PATIENCE).text)
            openmetrics = {"Accept": "application/openmetrics-text"}
            served.append(httpx.get(url + "/metrics", headers=openmetrics, timeout=PATIENCE).text)
    finally:
        process.terminate()
        process.wait(timeout=PATIENCE)
        output.seek(0)
        printed = output.read()
        output.close()
    assert any('code="too_large"} 1' in page for page in served)
    return "\n".join([printed, *served])


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    issuer = TokenIssuer(AUTH_KEY, "client-1", CLIENT_SECRET, lifetime=1)
    with Simulator(Tenant(), keys=frozenset({API_KEY}), tokens=issuer) as sim:
        yield sim


def test_api_key_never_shows(simulator: Simulator) -> None:
    everything = run_every_scenario(simulator, [], {"WEBEX_CAMPAIGN_API_KEY": API_KEY})
    assert "api_down" in everything  # the run did log the failures
    assert API_KEY not in everything


def test_token_flow_secrets_never_show(simulator: Simulator) -> None:
    everything = run_every_scenario(
        simulator,
        ["--client-id", "client-1"],
        {"WEBEX_CAMPAIGN_CLIENT_SECRET": CLIENT_SECRET, "WEBEX_CAMPAIGN_AUTH_KEY": AUTH_KEY},
    )
    assert simulator.tokens is not None
    issued = simulator.tokens.issued
    assert len(issued) >= 2  # tokens expired after 1 s and were renewed
    for secret in (CLIENT_SECRET, AUTH_KEY, *issued):
        assert secret not in everything
