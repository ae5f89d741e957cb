"""Auth modes: static key, key file rotation, and the client-credentials token flow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import metrics as m
from exporter.api import ApiClient, ApiError, ClientCredentials, KeyFile, RequestStats
from exporter.records import parse_payload
from exporter.simulator import Simulator, Tenant, TokenIssuer

AUTH_KEY = "golden-auth-key"
CLIENT_ID = "exporter-client"
CLIENT_SECRET = "client-secret-value"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(AUTH_KEY, CLIENT_ID, CLIENT_SECRET, lifetime=600)


@pytest.fixture
def hub(issuer: TokenIssuer) -> Iterator[Simulator]:
    with Simulator(Tenant(), keys=frozenset(), tokens=issuer) as sim:
        yield sim


def token_client(
    hub: Simulator, clock: Clock, secret: str = CLIENT_SECRET
) -> tuple[ApiClient, ClientCredentials]:
    credentials = ClientCredentials(
        f"{hub.base_url}/oauth/token", CLIENT_ID, lambda: secret, lambda: AUTH_KEY, clock=clock
    )
    client = ApiClient(
        hub.base_url, credentials, 5.0, 10_000_000, RequestStats(m.DOCUMENTED_FAILURES)
    )
    return client, credentials


def test_token_obtained_once_and_cached(hub: Simulator, issuer: TokenIssuer) -> None:
    clock = Clock()
    client, _ = token_client(hub, clock)
    client.fetch()
    client.fetch()
    assert len(issuer.issued) == 1
    assert client.stats.read()[0] == 3  # one token request, two GETs
    client.close()


def test_token_refreshed_before_it_expires(hub: Simulator, issuer: TokenIssuer) -> None:
    clock = Clock()
    client, _ = token_client(hub, clock)
    client.fetch()
    clock.now += 600 - ClientCredentials.EXPIRY_MARGIN + 1
    client.fetch()
    assert len(issuer.issued) == 2
    assert client.stats.read()[1][("401", "498")] == 0
    client.close()


def test_rejected_token_is_refreshed_and_the_request_retried_once(
    hub: Simulator, issuer: TokenIssuer
) -> None:
    client, _ = token_client(hub, Clock())
    client.fetch()
    issuer.expire_all()  # the hub forgot the token before its expires_in
    assert parse_payload(client.fetch().body).groups
    requests, failures = client.stats.read()
    assert failures[("401", "498")] == 1
    assert requests == 1 + 1 + 1 + 1 + 1  # token, GET, GET rejected, new token, GET retried
    assert len(issuer.issued) == 2
    client.close()


def test_wrong_client_secret_fails_at_the_token_endpoint(hub: Simulator) -> None:
    client, _ = token_client(hub, Clock(), secret="wrong")
    with pytest.raises(ApiError) as caught:
        client.fetch()
    assert caught.value.labels == ("401", "430")
    requests, failures = client.stats.read()
    assert requests == 1  # the GET was never sent
    assert failures[("401", "430")] == 1
    client.close()


def test_token_request_shape(hub: Simulator, issuer: TokenIssuer) -> None:
    # The issuer only answers a request with the SPEC's headers and body fields.
    client, credentials = token_client(hub, Clock())
    client.fetch()
    token = issuer.issued[0]
    assert credentials.authorization() == f"Bearer {token}"
    assert set(credentials.secrets()) >= {CLIENT_SECRET, AUTH_KEY, token}
    client.close()


def test_key_file_rotation_without_restart(tmp_path: Path) -> None:
    """A tenant holds two keys; the file switches from one to the other, then key 1 dies."""
    path = tmp_path / "api-key"
    path.write_text("key-1")
    with Simulator(Tenant(), keys=frozenset({"key-1", "key-2"})) as sim:
        key_file = KeyFile(path)
        client = ApiClient(sim.base_url, key_file, 5.0, 10_000_000, RequestStats())
        client.fetch()
        rotated = tmp_path / "api-key.tmp"
        rotated.write_text("key-2\n")
        rotated.replace(path)
        client.fetch()
        assert key_file.authorization() == "Bearer key-2"
        assert client.stats.read() == (2, {})
        client.close()
