"""Settings: env and flags, precedence, defaults, and one clear line per bad setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from exporter.cli import build_parser, main
from exporter.settings import (
    DEFAULT_PORT,
    ENV_PREFIX,
    FLAGS,
    OPTIONS,
    ConfigError,
    ListenAddress,
    SettingProblem,
    Settings,
    default_text,
    describe_setting,
    env_name,
    is_loopback_host,
    load_settings,
    parse_listen_address,
    setting_problems,
)

BASE = "https://acme.webexcampaign.io/campaignapi/resources/v3"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("WEBEX_CAMPAIGN_"):
            monkeypatch.delenv(name)


def test_defaults_follow_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBEX_CAMPAIGN_BASE_URL", BASE)
    monkeypatch.setenv("WEBEX_CAMPAIGN_API_KEY", "k")
    settings = load_settings()
    assert settings.poll_interval == 60
    assert settings.timeout == 30
    assert settings.timezone == "UTC"
    assert settings.log_level == "info"
    assert settings.log_format == "json"
    assert settings.listen == [ListenAddress("", DEFAULT_PORT)]
    assert settings.web_telemetry_path == "/metrics"
    assert settings.web_max_connections == 64
    assert settings.web_read_header_timeout == 10
    assert settings.max_label_length == 1024
    assert settings.effective_stale_after == 300
    assert settings.tenant_label == "acme"
    assert not 9100 <= DEFAULT_PORT <= 9999  # the fully allocated exporter range


def test_flags_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBEX_CAMPAIGN_BASE_URL", BASE)
    monkeypatch.setenv("WEBEX_CAMPAIGN_API_KEY", "k")
    monkeypatch.setenv("WEBEX_CAMPAIGN_POLL_INTERVAL", "10")
    monkeypatch.setenv("WEBEX_CAMPAIGN_TENANT", "from-env")
    settings = load_settings(poll_interval="2.5", tenant="from-flag")
    assert settings.poll_interval == 2.5
    assert settings.tenant_label == "from-flag"
    assert settings.effective_stale_after == 12.5


def test_environment_is_read_case_insensitively(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBEX_CAMPAIGN_LOG_FORMAT", "CONSOLE")
    monkeypatch.setenv("WEBEX_CAMPAIGN_LOG_LEVEL", "Debug")
    settings = load_settings(demo=True)
    assert (settings.log_format, settings.log_level) == ("console", "debug")


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({}, "WEBEX_CAMPAIGN_BASE_URL (--base-url) is required unless --demo"),
        ({"base_url": BASE}, "WEBEX_CAMPAIGN_API_KEY is required"),
        ({"base_url": "ftp://x/y", "api_key": "k"}, "WEBEX_CAMPAIGN_BASE_URL (--base-url):"),
        ({"base_url": "https://u:p@x.io/v1", "api_key": "k"}, "must not carry credentials"),
        ({"base_url": "http://api.example.com/v1", "api_key": "k"}, "plain http://"),
        ({"demo": True, "poll_interval": "0"}, "WEBEX_CAMPAIGN_POLL_INTERVAL (--poll-interval):"),
        (
            {"demo": True, "poll_interval": "soon"},
            "WEBEX_CAMPAIGN_POLL_INTERVAL (--poll-interval):",
        ),
        ({"demo": True, "timeout": "-1"}, "WEBEX_CAMPAIGN_TIMEOUT (--timeout):"),
        ({"demo": True, "timezone": "Mars/Olympus"}, "WEBEX_CAMPAIGN_TIMEZONE (--timezone):"),
        ({"demo": True, "listen_address": "10580"}, "WEBEX_CAMPAIGN_LISTEN_ADDRESS"),
        ({"demo": True, "log_format": "xml"}, "WEBEX_CAMPAIGN_LOG_FORMAT (--log.format):"),
        ({"demo": True, "log_level": "loud"}, "WEBEX_CAMPAIGN_LOG_LEVEL (--log.level):"),
        ({"demo": True, "tenant": " "}, "WEBEX_CAMPAIGN_TENANT (--tenant):"),
        ({"base_url": BASE, "api_key_file": "/nonexistent/key"}, "WEBEX_CAMPAIGN_API_KEY_FILE"),
    ],
)
def test_bad_setting_names_the_setting(overrides: dict[str, object], names: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert names in message
    assert "\n" not in message


def test_insecure_http_allowed_for_loopback_or_when_asked() -> None:
    assert load_settings(base_url="http://127.0.0.1:8080/v1", api_key="k").base_url
    assert load_settings(base_url="http://localhost/v1", api_key="k").base_url
    allowed = load_settings(
        base_url="http://api.internal/v1", api_key="k", allow_insecure_http=True
    )
    assert allowed.tenant_label == "api"


def test_api_key_never_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(base_url="nope", api_key="super-secret-value")
    assert "super-secret-value" not in str(caught.value)


def test_listen_address_forms() -> None:
    assert load_settings(demo=True, listen_address="[::1]:9").listen == [ListenAddress("::1", 9)]
    assert str(ListenAddress("::1", 9)) == "[::1]:9"
    assert load_settings(demo=True, listen_address="0.0.0.0:1").listen[0].port == 1
    several = load_settings(demo=True, listen_address="127.0.0.1:1,[::1]:2")
    assert several.listen == [ListenAddress("127.0.0.1", 1), ListenAddress("::1", 2)]


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (
            ["--web.max-connections", "0"],
            "WEBEX_CAMPAIGN_WEB_MAX_CONNECTIONS (--web.max-connections)",
        ),
        (["--web.max-connections", "many"], "WEBEX_CAMPAIGN_WEB_MAX_CONNECTIONS"),
        (
            ["--web.read-header-timeout", "0"],
            "WEBEX_CAMPAIGN_WEB_READ_HEADER_TIMEOUT (--web.read-header-timeout)",
        ),
        (["--max-label-length", "8"], "WEBEX_CAMPAIGN_MAX_LABEL_LENGTH (--max-label-length)"),
        (
            ["--web.telemetry-path", "metrics"],
            "WEBEX_CAMPAIGN_WEB_TELEMETRY_PATH (--web.telemetry-path)",
        ),
        (["--web.telemetry-path", "/-/ready"], "WEBEX_CAMPAIGN_WEB_TELEMETRY_PATH"),
        (["--web.telemetry-path", "/a b"], "WEBEX_CAMPAIGN_WEB_TELEMETRY_PATH"),
        (
            ["--web.listen-address", "127.0.0.1:1", "--web.listen-address", "127.0.0.1:1"],
            "WEBEX_CAMPAIGN_LISTEN_ADDRESS (--web.listen-address)",
        ),
        (["--web.listen-address", "127.0.0.1:x"], "WEBEX_CAMPAIGN_LISTEN_ADDRESS"),
        (["--log.level", "warn", "--log.format", "yaml"], "WEBEX_CAMPAIGN_LOG_FORMAT"),
    ],
)
def test_new_settings_exit_2_naming_the_setting(
    args: list[str], names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--demo", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert names in err[0]


def test_exporter_toolkit_log_settings_are_accepted() -> None:
    settings = load_settings(demo=True, log_level="warn", log_format="logfmt")
    assert (settings.log_level, settings.log_format) == ("warn", "logfmt")


def test_cli_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--poll-interval", "-5", "--demo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "WEBEX_CAMPAIGN_POLL_INTERVAL (--poll-interval)" in err[0]
    assert "Traceback" not in err[0]


def test_cli_rejects_empty_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "key"
    key.write_text("\n")
    assert main(["--base-url", BASE, "--api-key-file", str(key)]) == 2
    assert "WEBEX_CAMPAIGN_API_KEY_FILE (--api-key-file)" in capsys.readouterr().err


# Exactly what the operator reads: one line naming the setting (env and flag), what is
# wrong, and the value unless it is a secret.
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {},
            "WEBEX_CAMPAIGN_BASE_URL (--base-url) is required unless --demo: set"
            " it to your tenant's API base, e.g."
            " https://<tenant>.webexcampaign.io/campaignapi/resources/v3",
        ),
        (
            {"base_url": BASE},
            "WEBEX_CAMPAIGN_API_KEY is required: set WEBEX_CAMPAIGN_API_KEY, or"
            " WEBEX_CAMPAIGN_API_KEY_FILE (--api-key-file) to a file holding the"
            " API secret key",
        ),
        (
            {"base_url": "ftp://x/y", "api_key": "k"},
            "WEBEX_CAMPAIGN_BASE_URL (--base-url): must be an http(s) URL such as"
            " https://<tenant>.webexcampaign.io/campaignapi/resources/v3 (got"
            " 'ftp://x/y')",
        ),
        (
            {"base_url": "https://u:p@x.io/v1", "api_key": "k"},
            "WEBEX_CAMPAIGN_BASE_URL (--base-url): must not carry credentials: put"
            " the key in WEBEX_CAMPAIGN_API_KEY (got 'https://u:p@x.io/v1')",
        ),
        (
            {"base_url": "https://x.io/v1?a=1", "api_key": "k"},
            "WEBEX_CAMPAIGN_BASE_URL (--base-url): must not carry a query or"
            " fragment (got 'https://x.io/v1?a=1')",
        ),
        (
            {"base_url": "https://x.io/v1#f", "api_key": "k"},
            "WEBEX_CAMPAIGN_BASE_URL (--base-url): must not carry a query or"
            " fragment (got 'https://x.io/v1#f')",
        ),
        (
            {"base_url": "http://api.example.com/v1", "api_key": "k"},
            "WEBEX_CAMPAIGN_BASE_URL (--base-url) uses plain http:// to a"
            " non-loopback host, which would send the API key in clear: use"
            " https://, or set WEBEX_CAMPAIGN_ALLOW_INSECURE_HTTP=true",
        ),
        (
            {"demo": True, "poll_interval": "0"},
            "WEBEX_CAMPAIGN_POLL_INTERVAL (--poll-interval): Input should be"
            " greater than 0 (got '0')",
        ),
        (
            {"demo": True, "poll_interval": "soon"},
            "WEBEX_CAMPAIGN_POLL_INTERVAL (--poll-interval): Input should be a"
            " valid number, unable to parse string as a number (got 'soon')",
        ),
        (
            {"demo": True, "timezone": "Mars/Olympus"},
            "WEBEX_CAMPAIGN_TIMEZONE (--timezone): unknown IANA time zone"
            " 'Mars/Olympus', e.g. 'Europe/Berlin' (got 'Mars/Olympus')",
        ),
        (
            {"demo": True, "listen_address": "10580"},
            "WEBEX_CAMPAIGN_LISTEN_ADDRESS (--web.listen-address): expected"
            " [host]:port, for example ':10580' or '127.0.0.1:10580' (got '10580')",
        ),
        (
            {"demo": True, "listen_address": ":65536"},
            "WEBEX_CAMPAIGN_LISTEN_ADDRESS (--web.listen-address): expected"
            " [host]:port, for example ':10580' or '127.0.0.1:10580' (got ':65536')",
        ),
        (
            {"demo": True, "log_level": "loud"},
            "WEBEX_CAMPAIGN_LOG_LEVEL (--log.level): Input should be 'debug',"
            " 'info', 'warn', 'warning' or 'error' (got 'loud')",
        ),
        (
            {"demo": True, "tenant": " "},
            "WEBEX_CAMPAIGN_TENANT (--tenant): must not be empty (got ' ')",
        ),
        (
            {"demo": True, "demo_scenario": "nope"},
            "WEBEX_CAMPAIGN_DEMO_SCENARIO (--demo.scenario): unknown scenario; one"
            " of: healthy, flaky, http-400, http-401-430, http-401-498, http-404,"
            " http-405, http-500, throttled, throttled-no-retry-after, http-499,"
            " http-500-1001, error-200, html-502, truncated, object, slow, close,"
            " too-large, malformed-records, duplicates, hostile-names (got 'nope')",
        ),
        (
            {"base_url": BASE, "api_key": "k", "demo_scenario": "slow"},
            "WEBEX_CAMPAIGN_DEMO_SCENARIO (--demo.scenario) only applies with --demo",
        ),
        (
            {"base_url": BASE, "api_key_file": "/nonexistent/key"},
            "WEBEX_CAMPAIGN_API_KEY_FILE (--api-key-file) /nonexistent/key is not a readable file",
        ),
        (
            {"config_file": "/nonexistent/tenants.yaml"},
            "WEBEX_CAMPAIGN_CONFIG_FILE (--config.file) /nonexistent/tenants.yaml"
            " is not a readable file",
        ),
        (
            {"demo": True, "ca_file": "/nonexistent/ca"},
            "WEBEX_CAMPAIGN_CA_FILE (--ca-file) /nonexistent/ca is not a readable file",
        ),
        (
            {"demo": True, "web_config_file": "/nonexistent/web"},
            "WEBEX_CAMPAIGN_WEB_CONFIG_FILE (--web.config.file) /nonexistent/web"
            " is not a readable file",
        ),
        (
            {"base_url": BASE, "client_id": "c", "api_key": "k"},
            "WEBEX_CAMPAIGN_CLIENT_ID (--client-id) selects the token flow, which"
            " does not mix with WEBEX_CAMPAIGN_API_KEY(_FILE): set one auth mode",
        ),
        (
            {"base_url": BASE, "client_id": "c"},
            "WEBEX_CAMPAIGN_CLIENT_SECRET is required with"
            " WEBEX_CAMPAIGN_CLIENT_ID: set it, or"
            " WEBEX_CAMPAIGN_CLIENT_SECRET_FILE (--client-secret-file)",
        ),
        (
            {"base_url": BASE, "client_id": "c", "client_secret": "s"},
            "WEBEX_CAMPAIGN_AUTH_KEY is required with WEBEX_CAMPAIGN_CLIENT_ID:"
            " set it, or WEBEX_CAMPAIGN_AUTH_KEY_FILE (--auth-key-file)",
        ),
        (
            {"demo": True, "bogus": 1},
            "unknown setting WEBEX_CAMPAIGN_BOGUS",
        ),
        (
            {"base_url": "nope", "api_key": "super-secret-value"},
            "WEBEX_CAMPAIGN_BASE_URL (--base-url): must be an http(s) URL such as"
            " https://<tenant>.webexcampaign.io/campaignapi/resources/v3 (got"
            " 'nope')",
        ),
        (
            {"demo": True, "max_response_bytes": "0"},
            "WEBEX_CAMPAIGN_MAX_RESPONSE_BYTES (--max-response-bytes): Input"
            " should be greater than 0 (got '0')",
        ),
        (
            {"demo": True, "stale_after": "inf"},
            "WEBEX_CAMPAIGN_STALE_AFTER (--stale-after): Input should be a finite"
            " number (got 'inf')",
        ),
        (
            {"demo": True, "api_key": 12345},
            "WEBEX_CAMPAIGN_API_KEY: Input should be a valid string",
        ),
        (
            {"demo": True, "tenant": {"a": 1}},
            "WEBEX_CAMPAIGN_TENANT (--tenant): Input should be a valid string",
        ),
    ],
)
def test_error_messages_exactly(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (
            {"demo": True, "bogus": 1},
            SettingProblem("bogus", "unknown setting", unknown=True),
        ),
        (
            {"base_url": BASE, "client_id": "c"},
            SettingProblem(
                "client_secret",
                "is required with WEBEX_CAMPAIGN_CLIENT_ID: set it, or"
                " WEBEX_CAMPAIGN_CLIENT_SECRET_FILE (--client-secret-file)",
                reads_on=True,
            ),
        ),
        (
            {"base_url": BASE, "client_id": "c", "client_secret": "s"},
            SettingProblem(
                "auth_key",
                "is required with WEBEX_CAMPAIGN_CLIENT_ID: set it, or"
                " WEBEX_CAMPAIGN_AUTH_KEY_FILE (--auth-key-file)",
                reads_on=True,
            ),
        ),
    ],
)
def test_setting_problems_name_the_setting_as_declared(
    overrides: dict[str, object], problem: SettingProblem
) -> None:
    """What the tenants file reports per key: the setting's own name (the file's key, not
    its env var) and the message, also for a key no setting has."""
    with pytest.raises(ValidationError) as caught:
        Settings(**overrides)
    assert setting_problems(caught.value) == [problem]


@pytest.mark.parametrize(
    ("text", "address"),
    [
        (":0", ListenAddress("", 0)),
        (":65535", ListenAddress("", 65535)),
        (" 127.0.0.1:10580 ", ListenAddress("127.0.0.1", 10580)),
        ("[::1]:9", ListenAddress("::1", 9)),
        ("[::]:80", ListenAddress("::", 80)),
    ],
)
def test_listen_address_parses(text: str, address: ListenAddress) -> None:
    assert parse_listen_address(text) == address


@pytest.mark.parametrize("text", ["10580", ":65536", ":-1", ":port", "host:", ""])
def test_listen_address_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"^expected \[host\]:port, for example ':10580' or"):
        parse_listen_address(text)


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (ListenAddress("::1", 9), "[::1]:9"),
        (ListenAddress("127.0.0.1", 9), "127.0.0.1:9"),
        (ListenAddress("", 10580), ":10580"),
    ],
)
def test_listen_address_text(address: ListenAddress, text: str) -> None:
    assert str(address) == text


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LocalHost.", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("localhost.example", False),
        ("example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("overrides", "label"),
    [
        ({"base_url": BASE}, "acme"),
        ({"base_url": "http://127.0.0.1:8080/v1"}, "127.0.0.1"),
        ({"base_url": BASE, "tenant": "prod-eu"}, "prod-eu"),
        ({"demo": True}, "demo"),
    ],
)
def test_tenant_label(overrides: dict[str, object], label: str) -> None:
    assert load_settings(api_key="k", **overrides).tenant_label == label


def test_derived_settings() -> None:
    settings = load_settings(base_url=BASE, api_key="k", poll_interval="7")
    assert settings.effective_stale_after == 35.0
    assert settings.effective_token_url == f"{BASE}/oauth/token"
    given = load_settings(
        base_url=BASE + "/",
        client_id="c",
        client_secret="s",
        auth_key="a",
        stale_after="9",
        token_url="https://hub.example/token",
    )
    assert given.base_url == BASE
    assert given.effective_stale_after == 9.0
    assert given.effective_token_url == "https://hub.example/token"
    assert given.uses_token_flow


@pytest.mark.parametrize("secret", ["client_secret", "auth_key"])
def test_a_bad_secret_is_never_echoed(secret: str) -> None:
    values: dict[str, object] = {"client_secret": "s", "auth_key": "a", secret: 98765}
    with pytest.raises(ConfigError) as caught:
        load_settings(base_url=BASE, client_id="c", **values)
    assert str(caught.value) == f"WEBEX_CAMPAIGN_{secret.upper()}: Input should be a valid string"


def test_every_setting_has_one_env_name_and_one_flag_but_secrets_none() -> None:
    options: dict[str, list[str]] = {}
    for action in build_parser()._actions:
        if action.dest not in ("help", "version"):
            assert action.dest not in options, f"two options set {action.dest}"
            options[action.dest] = list(action.option_strings)
    secrets = {"api_key", "client_secret", "auth_key"}
    assert set(options) == set(Settings.model_fields) - secrets  # a command line is public
    for field, option_strings in options.items():
        assert option_strings == [FLAGS[field]]
        assert describe_setting(field) == f"{ENV_PREFIX}{field.upper()} ({FLAGS[field]})"
    for field in secrets:
        assert describe_setting(field) == f"{ENV_PREFIX}{field.upper()}"
    assert len(set(FLAGS.values())) == len(FLAGS)


# One bad value for each setting with a flag, and the other settings it needs to be reached.
BAD_VALUES: dict[str, tuple[str, dict[str, str]]] = {
    "base_url": ("ftp://x/y", {}),
    "api_key_file": ("/nonexistent/key", {"base_url": BASE}),
    "client_id": ("id", {"base_url": BASE, "api_key": "k"}),
    "client_secret_file": ("/nonexistent/secret", {"demo": "true"}),
    "auth_key_file": ("/nonexistent/auth", {"demo": "true"}),
    "token_url": ("ftp://x/token", {"demo": "true"}),
    "ca_file": ("/nonexistent/ca.pem", {"demo": "true"}),
    "tenant": (" ", {"demo": "true"}),
    "poll_interval": ("0", {"demo": "true"}),
    "timeout": ("-1", {"demo": "true"}),
    "timezone": ("Mars/Olympus", {"demo": "true"}),
    "stale_after": ("nan", {"demo": "true"}),
    "listen_address": ("10580", {"demo": "true"}),
    "web_config_file": ("/nonexistent/web.yml", {"demo": "true"}),
    "web_telemetry_path": ("/", {"demo": "true"}),
    "web_max_connections": ("100001", {"demo": "true"}),
    "web_read_header_timeout": ("0", {"demo": "true"}),
    "log_level": ("loud", {"demo": "true"}),
    "log_format": ("xml", {"demo": "true"}),
    "allow_insecure_http": ("maybe", {"demo": "true"}),
    "max_response_bytes": ("0", {"demo": "true"}),
    "max_label_length": ("15", {"demo": "true"}),
    "demo": ("maybe", {}),
    "demo_scenario": ("nope", {"demo": "true"}),
    "demo_tenants": ("0", {"demo": "true"}),
    "config_file": ("/nonexistent/tenants.yaml", {}),
    "config_check": ("maybe", {"demo": "true"}),
    "shard": ("-1", {"demo": "true"}),
    "total_shards": ("0", {"demo": "true"}),
    "web_enable_lifecycle": ("maybe", {"demo": "true"}),
}


def test_every_flag_has_a_bad_value_below() -> None:
    assert set(BAD_VALUES) == set(FLAGS)


def set_env(monkeypatch: pytest.MonkeyPatch, settings: dict[str, str]) -> None:
    for field, value in settings.items():
        monkeypatch.setenv(env_name(field), value)


def exits_2_naming(field: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("webex-campaign-exporter: error: ")
    assert f"{ENV_PREFIX}{field.upper()} ({FLAGS[field]})" in line


@pytest.mark.parametrize("field", [f for f in BAD_VALUES if not OPTIONS[f].switch])
def test_a_bad_flag_exits_2_with_one_line_naming_env_and_flag(
    field: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    value, needs = BAD_VALUES[field]
    set_env(monkeypatch, needs)
    exits_2_naming(field, [FLAGS[field], value], capsys)


@pytest.mark.parametrize("field", list(BAD_VALUES))
def test_a_bad_variable_exits_2_with_one_line_naming_env_and_flag(
    field: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    value, needs = BAD_VALUES[field]
    set_env(monkeypatch, {**needs, field: value})
    exits_2_naming(field, [], capsys)


@pytest.mark.parametrize(
    "field",
    [
        name
        for name, flag in OPTIONS.items()
        if flag.default is None and default_text(name) is not None
    ],
)
def test_the_default_help_shows_is_the_default(field: str) -> None:
    shown = default_text(field)
    assert shown is not None
    assert getattr(load_settings(demo=True, **{field: shown}), field) == getattr(
        load_settings(demo=True), field
    )


def test_defaults_without_a_value_to_show_are_described() -> None:
    assert default_text("stale_after") == "5 poll intervals"
    assert default_text("max_response_bytes") == "256 MiB"
    assert default_text("base_url") is None
    assert default_text("demo") is None


@pytest.fixture
def tenants_file(tmp_path: Path) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants: []\n")
    return path


def test_config_file_needs_no_base_url_or_key(tenants_file: Path) -> None:
    settings = load_settings(config_file=str(tenants_file), poll_interval="5")
    assert settings.config_file == tenants_file
    assert settings.base_url is None
    assert settings.api_key is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("base_url", BASE),
        ("api_key", "never-shown-secret"),
        ("api_key_file", "/etc/hostname"),
        ("client_id", "id"),
        ("client_secret", "never-shown-secret"),
        ("client_secret_file", "/etc/hostname"),
        ("auth_key", "never-shown-secret"),
        ("auth_key_file", "/etc/hostname"),
        ("token_url", "https://hub.example/oauth/token"),
        ("tenant", "acme"),
    ],
)
def test_config_file_refuses_a_single_tenant_setting_naming_both(
    field: str, value: str, tenants_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env_name(field), value)
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=str(tenants_file))
    message = str(caught.value)
    assert message.startswith(
        f"{describe_setting('config_file')} and {describe_setting(field)} do not mix:"
    )
    assert message.endswith(" do not mix: give tenants in the file (a secret as *_file or *_env)")
    assert "never-shown" not in message


def test_config_file_with_base_url_flag_exits_2_naming_both(
    tenants_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config.file", str(tenants_file), "--base-url", BASE]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--config.file" in line
    assert "--base-url" in line


def test_config_file_with_demo_exits_2(
    tenants_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config.file", str(tenants_file), "--demo"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--config.file" in line
    assert "--demo" in line


def test_shard_must_be_below_total_shards(tenants_file: Path) -> None:
    assert load_settings(config_file=str(tenants_file), shard="2", total_shards="3").shard == 2
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=str(tenants_file), shard="3", total_shards="3")
    message = str(caught.value)
    assert describe_setting("shard") in message
    assert describe_setting("total_shards") in message


def test_sharding_needs_a_tenants_file() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(base_url=BASE, api_key="k", total_shards="2")
    assert str(caught.value).startswith(
        f"{describe_setting('total_shards')} only applies with {describe_setting('config_file')}"
    )


def test_demo_tenants_only_with_demo() -> None:
    assert load_settings(demo=True, demo_tenants="3").demo_tenants == 3
    with pytest.raises(ConfigError, match=r"DEMO_TENANTS \(--demo.tenants\) only applies with"):
        load_settings(base_url=BASE, api_key="k", demo_tenants="3")


def test_new_switches_default_off(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(demo=True)
    assert (settings.config_check, settings.web_enable_lifecycle) == (False, False)
    assert (settings.shard, settings.total_shards, settings.demo_tenants) == (0, 1, 1)
    monkeypatch.setenv(env_name("web_enable_lifecycle"), "true")
    assert load_settings(demo=True).web_enable_lifecycle
