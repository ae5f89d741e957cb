"""Auth modes: static key, key file rotation, and the client-credentials token flow."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from exporter import metrics as m
from exporter.api import (
    ApiClient,
    ApiError,
    ClientCredentials,
    HttpStatusError,
    InvalidResponse,
    KeyFile,
    RequestStats,
    credentials_from,
)
from exporter.records import parse_payload
from exporter.settings import load_settings
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


# --- the token exchange, request by request (httpx MockTransport) ------------------------

TokenAnswer = Callable[[httpx.Request], httpx.Response]


def mock_hub(answer: TokenAnswer, seen: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/oauth/token"):
            return answer(request)
        return httpx.Response(200, content=b"[]")

    return httpx.MockTransport(handler)


def mock_token_client(
    answer: TokenAnswer, clock: Clock | None = None
) -> tuple[ApiClient, ClientCredentials, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    credentials = ClientCredentials(
        "https://hub.example/v1/oauth/token",
        CLIENT_ID,
        lambda: CLIENT_SECRET,
        lambda: AUTH_KEY,
        clock=clock or Clock(),
    )
    client = ApiClient(
        "https://hub.example/v1",
        credentials,
        5.0,
        10_000_000,
        RequestStats(),
        transport=mock_hub(answer, seen),
    )
    return client, credentials, seen


def test_token_request_is_exactly_the_documented_one() -> None:
    client, _, seen = mock_token_client(lambda r: httpx.Response(200, json={"access_token": "t1"}))
    client.fetch()
    token_request, get = seen
    assert token_request.method == "POST"
    assert str(token_request.url) == (
        "https://hub.example/v1/oauth/token?grant_type=client_credentials"
    )
    assert token_request.headers["isGoldenAuthkey"] == "true"
    assert token_request.headers["Authorization"] == f"Basic {AUTH_KEY}"
    assert token_request.headers["Content-Type"] == "application/json"
    assert json.loads(token_request.content) == {
        "clientId": CLIENT_ID,
        "clientSecret": CLIENT_SECRET,
        "grantType": "client_credentials",
    }
    assert get.method == "GET"
    assert get.headers["Authorization"] == "Bearer t1"
    assert client.stats.read() == (2, {})


def test_the_token_request_carries_the_settings_client_id_and_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From the operator's settings to the wire: their client id, secret and auth key."""
    for name in list(os.environ):
        if name.startswith("WEBEX_CAMPAIGN_"):
            monkeypatch.delenv(name)
    settings = load_settings(
        base_url="https://hub.example/v1",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        auth_key=AUTH_KEY,
    )
    seen: list[httpx.Request] = []
    client = ApiClient(
        "https://hub.example/v1",
        credentials_from(settings),
        5.0,
        10_000_000,
        RequestStats(),
        transport=mock_hub(lambda r: httpx.Response(200, json={"access_token": "t1"}), seen),
    )
    client.fetch()
    token_request, _ = seen
    assert str(token_request.url) == (
        "https://hub.example/v1/oauth/token?grant_type=client_credentials"
    )
    assert token_request.headers["Authorization"] == f"Basic {AUTH_KEY}"
    assert json.loads(token_request.content) == {
        "clientId": CLIENT_ID,
        "clientSecret": CLIENT_SECRET,
        "grantType": "client_credentials",
    }


@pytest.mark.parametrize("field", ["access_token", "accessToken", "token"])
def test_token_field_names(field: str) -> None:
    client, credentials, _ = mock_token_client(lambda r: httpx.Response(200, json={field: "tok"}))
    client.fetch()
    assert credentials.authorization() == "Bearer tok"


@pytest.mark.parametrize(
    ("answer", "labels"),
    [
        (httpx.Response(200, json={"expires_in": 60}), ("200", "invalid_response")),
        (httpx.Response(200, json={"access_token": ""}), ("200", "invalid_response")),
        (httpx.Response(200, json={"access_token": 5}), ("200", "invalid_response")),
        (httpx.Response(200, content=b"not json"), ("200", "invalid_response")),
        (httpx.Response(200, json=["access_token"]), ("200", "invalid_response")),
        (httpx.Response(200, json={"code": 498, "description": "no"}), ("200", "498")),
        (httpx.Response(200, json={"code": None}), ("200", "invalid_response")),
        (httpx.Response(401, json={"code": 430}), ("401", "430")),
    ],
)
def test_bad_token_answers_are_classified_and_counted_once(
    answer: httpx.Response, labels: tuple[str, str]
) -> None:
    client, _, seen = mock_token_client(lambda r: answer)
    with pytest.raises(ApiError) as caught:
        client.fetch()
    assert caught.value.labels == labels
    assert client.stats.read() == (1, {labels: 1})
    assert len(seen) == 1  # no GET without a token


def test_an_answer_with_both_code_and_token_is_a_token() -> None:
    client, credentials, _ = mock_token_client(
        lambda r: httpx.Response(200, json={"code": 200, "accessToken": "tok"})
    )
    client.fetch()
    assert credentials.authorization() == "Bearer tok"


@pytest.mark.parametrize(
    ("answer", "valid_for"),
    [
        ({"expires_in": 600}, 540.0),  # less the 60 s margin
        ({"expiresIn": "600"}, 540.0),
        ({"expires_in": 100}, 50.0),  # short-lived: half its life, not 40 s
        ({"expires_in": 0}, None),  # no lifetime: until the API rejects it
        ({"expiresIn": "0"}, None),
        ({"expires_in": -5}, None),
        ({}, None),
    ],
)
def test_token_lifetime(answer: dict[str, object], valid_for: float | None) -> None:
    counter = iter(range(1, 100))

    def issue(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"access_token": f"t{next(counter)}", **answer})

    clock = Clock()
    client, credentials, _ = mock_token_client(issue, clock)
    start = clock.now
    assert credentials.authorization() == "Bearer t1"
    if valid_for is None:
        clock.now = start + 1e9
        assert credentials.authorization() == "Bearer t1"
        return
    clock.now = start + valid_for - 0.001
    assert credentials.authorization() == "Bearer t1"
    clock.now = start + valid_for
    assert credentials.authorization() == "Bearer t2"
    client.close()


def test_only_401_498_renews_the_token() -> None:
    _client, credentials, seen = mock_token_client(
        lambda r: httpx.Response(200, json={"access_token": "t"})
    )
    credentials.authorization()
    assert not credentials.rejected(HttpStatusError("HTTP 401", "401", "430"))
    assert credentials.authorization() == "Bearer t"
    assert len(seen) == 1
    assert credentials.rejected(HttpStatusError("HTTP 401", "401", "498"))
    credentials.authorization()
    assert len(seen) == 2


def test_secrets_hold_the_last_five_tokens() -> None:
    counter = iter(range(1, 100))
    _client, credentials, _ = mock_token_client(
        lambda r: httpx.Response(200, json={"access_token": f"tok-{next(counter)}"})
    )
    for _ in range(7):
        credentials.authorization()
        credentials.rejected(HttpStatusError("HTTP 401", "401", "498"))
    assert credentials.secrets() == [
        CLIENT_SECRET,
        AUTH_KEY,
        *(f"tok-{n}" for n in range(3, 8)),
    ]


def test_bad_token_answers_say_what_was_wrong() -> None:
    for answer, detail in (
        (httpx.Response(200, content=b"not json"), "token answer is not JSON"),
        (httpx.Response(200, json=[1]), "token answer is not a JSON object"),
        (httpx.Response(200, json={"code": 498}), "error object from the token endpoint"),
        (httpx.Response(200, json={"expires_in": 60}), "token answer without access_token"),
    ):
        client, _, _ = mock_token_client(lambda r, answer=answer: answer)
        with pytest.raises(ApiError) as caught:
            client.fetch()
        assert caught.value.detail == detail


@pytest.mark.parametrize("field", ["access_token", "accessToken"])
def test_a_code_next_to_a_token_is_not_an_error(field: str) -> None:
    client, credentials, _ = mock_token_client(
        lambda r: httpx.Response(200, json={"code": 0, field: "tok"})
    )
    client.fetch()
    assert credentials.authorization() == "Bearer tok"


def test_a_one_second_token_is_renewed_after_half_of_it() -> None:
    counter = iter(range(1, 100))
    clock = Clock()
    _client, credentials, _ = mock_token_client(
        lambda r: httpx.Response(200, json={"access_token": f"t{next(counter)}", "expires_in": 1}),
        clock,
    )
    start = clock.now
    assert credentials.authorization() == "Bearer t1"
    clock.now = start + 0.499
    assert credentials.authorization() == "Bearer t1"
    clock.now = start + 0.5
    assert credentials.authorization() == "Bearer t2"


class AnswerOnly:
    """A TokenSender that hands back a fixed answer (another transport than ApiClient)."""

    def __init__(self, answer: dict[str, object]) -> None:
        self.answer = answer

    def request_token(self, url: str, headers: dict[str, str], body: bytes) -> dict[str, object]:
        return self.answer


def test_credentials_check_the_answer_of_any_sender() -> None:
    credentials = ClientCredentials("https://hub/t", "c", lambda: "s", lambda: "a")
    with pytest.raises(AssertionError, match=r"^bind\(\) the client first$"):
        credentials.authorization()
    credentials.bind(AnswerOnly({"expires_in": 60}))
    with pytest.raises(InvalidResponse) as caught:
        credentials.authorization()
    assert caught.value.labels == ("200", "invalid_response")
    assert caught.value.detail == "token answer without access_token"
