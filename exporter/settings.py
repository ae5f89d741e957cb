"""Every setting: its environment variable, flag, default and validation, in one place.

Flags win over the environment: the CLI passes the flags it was given as init
arguments, which pydantic-settings ranks above environment variables.
"""

from __future__ import annotations

import ipaddress
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 10580
ENV_PREFIX = "WEBEX_CAMPAIGN_"
DEMO_TENANT = "demo"


class ConfigError(Exception):
    """A bad or missing setting; the message names the setting and the fix."""


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen_address(value: str) -> ListenAddress:
    host, sep, port_text = value.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("expected [host]:port, for example ':10580' or '127.0.0.1:10580'")
    host = host.removeprefix("[").removesuffix("]")
    return ListenAddress(host, int(port_text))


def is_loopback_host(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Settings(BaseSettings):
    """Settings of the exporter (SPEC "Configuration")."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="forbid",
        frozen=True,
    )

    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    auth_key: SecretStr | None = None
    auth_key_file: Path | None = None
    token_url: str | None = None
    ca_file: Path | None = None
    tenant: str | None = None
    poll_interval: PositiveSeconds = 60.0
    timeout: PositiveSeconds = 30.0
    timezone: str = "UTC"
    stale_after: PositiveSeconds | None = None
    listen_address: str = f":{DEFAULT_PORT}"
    web_config_file: Path | None = None
    web_telemetry_path: str = "/metrics"
    web_max_connections: Annotated[int, Field(gt=0, le=100_000)] = 64
    web_read_header_timeout: PositiveSeconds = 10.0
    log_level: Literal["debug", "info", "warn", "warning", "error"] = "info"
    log_format: Literal["json", "logfmt", "console"] = "json"
    allow_insecure_http: bool = False
    max_response_bytes: Annotated[int, Field(gt=0)] = 256 * 1024 * 1024
    max_label_length: Annotated[int, Field(ge=16, le=1 << 20)] = 1024
    demo: bool = False
    demo_scenario: str = "healthy"

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("listen_address")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        addresses = [parse_listen_address(part) for part in value.split(",")]
        if len(set(addresses)) != len(addresses):
            raise ValueError("lists the same address twice")
        return value

    @field_validator("web_telemetry_path")
    @classmethod
    def _telemetry_path(cls, value: str) -> str:
        if not value.startswith("/") or value in ("/", "/-/healthy", "/-/ready") or "?" in value:
            raise ValueError(
                "must be a path such as /metrics, other than /, /-/healthy and /-/ready"
            )
        if not value.isprintable() or any(char.isspace() for char in value):
            raise ValueError("must not contain blanks or control characters")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}, e.g. 'Europe/Berlin'") from None
        return value

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("demo_scenario")
    @classmethod
    def _scenario(cls, value: str) -> str:
        from .simulator import DEMO_SCENARIOS  # the simulator owns the names

        if value not in DEMO_SCENARIOS:
            raise ValueError(f"unknown scenario; one of: {', '.join(DEMO_SCENARIOS)}")
        return value

    @field_validator("base_url", "token_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "must be an http(s) URL such as"
                " https://<tenant>.webexcampaign.io/campaignapi/resources/v3"
            )
        if parts.username or parts.password:
            raise ValueError("must not carry credentials: put the key in WEBEX_CAMPAIGN_API_KEY")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment")
        return value.strip().rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.web_config_file is not None and not self.web_config_file.is_file():
            raise _SettingError("web_config_file", f"{self.web_config_file} is not a readable file")
        for field in ("ca_file", "client_secret_file", "auth_key_file"):
            path = getattr(self, field)
            if path is not None and not path.is_file():
                raise _SettingError(field, f"{path} is not a readable file")
        if self.demo:
            return self
        if self.demo_scenario != "healthy":
            raise _SettingError("demo_scenario", "only applies with --demo")
        if self.base_url is None:
            raise _SettingError(
                "base_url",
                "is required unless --demo: set it to your tenant's API base, e.g."
                " https://<tenant>.webexcampaign.io/campaignapi/resources/v3",
            )
        host = urlsplit(self.base_url).hostname or ""
        if (
            urlsplit(self.base_url).scheme == "http"
            and not is_loopback_host(host)
            and not self.allow_insecure_http
        ):
            raise _SettingError(
                "base_url",
                "uses plain http:// to a non-loopback host, which would send the API key"
                " in clear: use https://, or set WEBEX_CAMPAIGN_ALLOW_INSECURE_HTTP=true",
            )
        if self.api_key_file is not None and not self.api_key_file.is_file():
            raise _SettingError("api_key_file", f"{self.api_key_file} is not a readable file")
        if self.uses_token_flow:
            self._check_token_flow()
        elif self.api_key is None and self.api_key_file is None:
            raise _SettingError(
                "api_key",
                "is required: set WEBEX_CAMPAIGN_API_KEY, or WEBEX_CAMPAIGN_API_KEY_FILE"
                " (--api-key-file) to a file holding the API secret key",
            )
        return self

    @property
    def uses_token_flow(self) -> bool:
        return self.client_id is not None

    def _check_token_flow(self) -> None:
        if self.api_key is not None or self.api_key_file is not None:
            raise _SettingError(
                "client_id",
                "selects the token flow, which does not mix with WEBEX_CAMPAIGN_API_KEY(_FILE):"
                " set one auth mode",
            )
        if self.client_secret is None and self.client_secret_file is None:
            raise _SettingError(
                "client_secret",
                "is required with WEBEX_CAMPAIGN_CLIENT_ID: set it, or"
                " WEBEX_CAMPAIGN_CLIENT_SECRET_FILE (--client-secret-file)",
            )
        if self.auth_key is None and self.auth_key_file is None:
            raise _SettingError(
                "auth_key",
                "is required with WEBEX_CAMPAIGN_CLIENT_ID: set it, or"
                " WEBEX_CAMPAIGN_AUTH_KEY_FILE (--auth-key-file)",
            )

    @property
    def effective_token_url(self) -> str:
        assert self.base_url is not None
        return self.token_url or f"{self.base_url}/oauth/token"

    @property
    def listen(self) -> list[ListenAddress]:
        """Every address to serve on (the flag may be repeated; the variable takes a list
        separated by commas)."""
        return [parse_listen_address(part) for part in self.listen_address.split(",")]

    @property
    def effective_stale_after(self) -> float:
        """Seconds the last good per-group values outlive failing polls."""
        return self.stale_after if self.stale_after is not None else 5 * self.poll_interval

    @property
    def stall_after(self) -> float:
        """Seconds without a poll result after which `/-/healthy` fails.

        The longest a healthy poller goes without publishing: the wait before
        a poll (at most an interval), the poll itself (a token request, the
        request and its retry after a 401, each up to the timeout), processing
        a large tenant, and the backoff before a dead poller process restarts.
        """
        return self.poll_interval + 3 * self.timeout + 120.0

    @property
    def tenant_label(self) -> str:
        if self.tenant:
            return self.tenant
        if self.demo or self.base_url is None:
            return DEMO_TENANT
        host = urlsplit(self.base_url).hostname or ""
        try:
            ipaddress.ip_address(host)
            return host
        except ValueError:
            return host.split(".", 1)[0]


class _SettingError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# The flag of each setting, for error messages (the CLI defines the flags).
FLAGS: dict[str, str] = {
    "base_url": "--base-url",
    "api_key_file": "--api-key-file",
    "client_id": "--client-id",
    "client_secret_file": "--client-secret-file",
    "auth_key_file": "--auth-key-file",
    "token_url": "--token-url",
    "ca_file": "--ca-file",
    "demo_scenario": "--demo.scenario",
    "tenant": "--tenant",
    "poll_interval": "--poll-interval",
    "timeout": "--timeout",
    "timezone": "--timezone",
    "stale_after": "--stale-after",
    "listen_address": "--web.listen-address",
    "web_config_file": "--web.config.file",
    "web_telemetry_path": "--web.telemetry-path",
    "web_max_connections": "--web.max-connections",
    "web_read_header_timeout": "--web.read-header-timeout",
    "max_label_length": "--max-label-length",
    "log_level": "--log.level",
    "log_format": "--log.format",
    "allow_insecure_http": "--allow-insecure-http",
    "max_response_bytes": "--max-response-bytes",
    "demo": "--demo",
}


def describe_setting(field: str) -> str:
    env = ENV_PREFIX + field.upper()
    flag = FLAGS.get(field)
    return f"{env} ({flag})" if flag else env


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment and `overrides` (the flags).

    Raises ConfigError with one line naming the setting and the fix.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    context = error.get("ctx", {})
    inner = context.get("error")
    if isinstance(inner, _SettingError):
        return f"{describe_setting(inner.field)} {inner.message}"
    field = str(error["loc"][0]) if error["loc"] else "settings"
    message = str(inner) if isinstance(inner, ValueError) else error["msg"]
    message = message.removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"unknown setting {ENV_PREFIX}{field.upper()}"
    value = error.get("input")
    secret = field in ("api_key", "client_secret", "auth_key")
    shown = "" if secret or isinstance(value, dict) else f" (got {value!r})"
    return f"{describe_setting(field)}: {message}{shown}"
