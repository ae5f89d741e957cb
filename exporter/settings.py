"""Every setting: its environment variable, flag, default, help and validation, in one place.

Each field of `Settings` is one setting: its type and validators check it, its default is
the field's default, its environment variable is ENV_PREFIX + its name in capitals, and its
`Flag` (the field's metadata) gives the command-line option and help, from which the CLI
builds its parser. Secrets have no flag.

Flags win over the environment: the CLI passes the flags it was given as init
arguments, which pydantic-settings ranks above environment variables.
"""

from __future__ import annotations

import ipaddress
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError as ConfigError
from .plan import ListenAddress as ListenAddress
from .scenarios import DEMO_SCENARIOS, FLAKY_SHARE, SCENARIOS

DEFAULT_PORT = 10580
ENV_PREFIX = "WEBEX_CAMPAIGN_"
DEMO_TENANT = "demo"


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


def env_name(field: str) -> str:
    """The environment variable of a setting (pydantic-settings reads it case-insensitively)."""
    return ENV_PREFIX + field.upper()


PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


@dataclass(frozen=True)
class Flag:
    """A setting's command-line option, attached to its field as metadata."""

    option: str
    help: str
    metavar: str | None = None
    default: str | None = None
    """The default as people read it, where the field's own (None, a byte count) says it badly."""
    switch: bool = False
    """Takes no value: giving it sets the setting to true."""
    repeatable: bool = False
    """May be given several times; the values join with commas, as in the variable."""


class Settings(BaseSettings):
    """Settings of the exporter (SPEC "Configuration")."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="forbid",
        frozen=True,
    )

    base_url: Annotated[
        str | None, Flag("--base-url", "API base; the exporter GETs {base}/target-groups", "URL")
    ] = None
    # Secrets have no flag: a command line is visible to every user of the machine (ps).
    api_key: SecretStr | None = None
    api_key_file: Annotated[
        Path | None,
        Flag(
            "--api-key-file",
            "file holding the API secret key, re-read when it changes (or the key itself in"
            f" {env_name('api_key')})",
            "PATH",
        ),
    ] = None
    client_id: Annotated[
        str | None,
        Flag(
            "--client-id",
            "client id of the API hub's client-credentials token flow (deprecated by Webex),"
            f" with {env_name('client_secret')}(_FILE) and {env_name('auth_key')}(_FILE)",
            "ID",
        ),
    ] = None
    client_secret: SecretStr | None = None
    client_secret_file: Annotated[
        Path | None, Flag("--client-secret-file", "file holding the client secret", "PATH")
    ] = None
    auth_key: SecretStr | None = None
    auth_key_file: Annotated[
        Path | None, Flag("--auth-key-file", "file holding the auth key (sent as Basic)", "PATH")
    ] = None
    token_url: Annotated[
        str | None,
        Flag("--token-url", "token endpoint", "URL", default="{base}/oauth/token"),
    ] = None
    ca_file: Annotated[
        Path | None, Flag("--ca-file", "PEM bundle of CAs to trust for the API", "PATH")
    ] = None
    tenant: Annotated[
        str | None,
        Flag("--tenant", "tenant label", default="first label of the base URL's host"),
    ] = None
    poll_interval: Annotated[
        PositiveSeconds, Flag("--poll-interval", "seconds between polls", "SECONDS")
    ] = 60.0
    timeout: Annotated[
        PositiveSeconds, Flag("--timeout", "seconds for one API request", "SECONDS")
    ] = 30.0
    timezone: Annotated[str, Flag("--timezone", "IANA zone of createdOn/lastUpdatedOn", "ZONE")] = (
        "UTC"
    )
    stale_after: Annotated[
        PositiveSeconds | None,
        Flag(
            "--stale-after",
            "drop per-group series after polls fail this long",
            "SECONDS",
            default="5 poll intervals",
        ),
    ] = None
    listen_address: Annotated[
        str,
        Flag(
            "--web.listen-address",
            "where the endpoints are served; repeat for several",
            "[HOST]:PORT",
            repeatable=True,
        ),
    ] = f":{DEFAULT_PORT}"
    web_config_file: Annotated[
        Path | None,
        Flag(
            "--web.config.file",
            "YAML file enabling TLS and/or basic auth on all endpoints (exporter-toolkit format)",
            "PATH",
        ),
    ] = None
    web_telemetry_path: Annotated[
        str, Flag("--web.telemetry-path", "path of the metrics", "PATH")
    ] = "/metrics"
    web_max_connections: Annotated[
        int,
        Field(gt=0, le=100_000),
        Flag("--web.max-connections", "connections served at once; more are answered 503", "N"),
    ] = 64
    web_read_header_timeout: Annotated[
        PositiveSeconds,
        Flag(
            "--web.read-header-timeout",
            "deadline for a client to send its request headers",
            "SECONDS",
        ),
    ] = 10.0
    log_level: Annotated[
        Literal["debug", "info", "warn", "warning", "error"],
        Flag("--log.level", "debug, info, warn or error", "LEVEL"),
    ] = "info"
    log_format: Annotated[
        Literal["json", "logfmt", "console"],
        Flag("--log.format", "json, logfmt or console", "FORMAT"),
    ] = "json"
    allow_insecure_http: Annotated[
        bool,
        Flag(
            "--allow-insecure-http",
            "accept a plain http:// base URL to a non-loopback host",
            switch=True,
        ),
    ] = False
    max_response_bytes: Annotated[
        int,
        Field(gt=0),
        Flag(
            "--max-response-bytes",
            "largest API response accepted",
            "BYTES",
            default="256 MiB",
        ),
    ] = 256 * 1024 * 1024
    max_label_length: Annotated[
        int,
        Field(ge=16, le=1 << 20),
        Flag(
            "--max-label-length",
            "longest label value exported; longer ones are cut and end with ...",
            "BYTES",
        ),
    ] = 1024
    config_file: Annotated[
        Path | None,
        Flag(
            "--config.file",
            "YAML file listing several tenants (instead of the single-tenant settings)",
            "PATH",
        ),
    ] = None
    config_check: Annotated[
        bool,
        Flag(
            "--config.check",
            "validate the settings, the tenants file and the key files it names, print one"
            " line per tenant, and exit",
            switch=True,
        ),
    ] = False
    shard: Annotated[
        int,
        Field(ge=0),
        Flag(
            "--shard",
            "this instance polls the tenants of --config.file whose FNV-1a hash of the name,"
            " modulo --total-shards, is N",
            "N",
        ),
    ] = 0
    total_shards: Annotated[
        int,
        Field(ge=1),
        Flag("--total-shards", "number of instances sharing the tenants of --config.file", "M"),
    ] = 1
    web_enable_lifecycle: Annotated[
        bool, Flag("--web.enable-lifecycle", "enable POST /-/reload", switch=True)
    ] = False
    demo: Annotated[
        bool,
        Flag(
            "--demo",
            "poll an embedded simulated tenant on loopback: no credentials, no network",
            switch=True,
        ),
    ] = False
    demo_scenario: Annotated[
        str,
        Flag(
            "--demo.scenario",
            f"how the demo tenant answers: healthy, flaky ({FLAKY_SHARE:.0%} of requests fail"
            f" at random), or one of these for ever: {', '.join(SCENARIOS)}",
            "NAME",
        ),
    ] = "healthy"
    demo_tenants: Annotated[
        int,
        Field(ge=1, le=10_000),
        Flag("--demo.tenants", "number of simulated tenants with --demo", "N"),
    ] = 1

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
            raise ValueError(f"must not carry credentials: put the key in {env_name('api_key')}")
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
        self._check_shard()
        if not self.demo:
            for field in ("demo_scenario", "demo_tenants"):
                if getattr(self, field) != Settings.model_fields[field].default:
                    raise _SettingError(field, f"only applies with {FLAGS['demo']}")
        if self.config_file is not None:
            self._check_config_file()
            return self
        if self.demo:
            return self
        if self.total_shards != 1:
            raise _SettingError(
                "total_shards", f"only applies with {describe_setting('config_file')}"
            )
        if self.base_url is None:
            raise _SettingError(
                "base_url",
                f"is required unless {FLAGS['demo']}: set it to your tenant's API base, e.g."
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
                f" in clear: use https://, or set {env_name('allow_insecure_http')}=true",
            )
        if self.api_key_file is not None and not self.api_key_file.is_file():
            raise _SettingError("api_key_file", f"{self.api_key_file} is not a readable file")
        if self.uses_token_flow:
            self._check_token_flow()
        elif self.api_key is None and self.api_key_file is None:
            raise _SettingError(
                "api_key",
                f"is required: set {env_name('api_key')}, or {describe_setting('api_key_file')}"
                " to a file holding the API secret key",
            )
        return self

    def _check_shard(self) -> None:
        if self.shard >= self.total_shards:
            raise _SettingError(
                "shard",
                f"is {self.shard}: it must be less than {describe_setting('total_shards')}"
                f" ({self.total_shards}); shards count from 0",
            )

    def _check_config_file(self) -> None:
        assert self.config_file is not None
        if self.demo:
            raise _SettingError(
                "config_file", f"and {describe_setting('demo')} do not mix: choose one"
            )
        given = [field for field in SINGLE_TENANT_SETTINGS if getattr(self, field) is not None]
        if given:
            raise _SettingError(
                "config_file",
                f"and {describe_setting(given[0])} do not mix: give tenants in the file"
                " (a secret as *_file or *_env)",
            )
        if not self.config_file.is_file():
            raise _SettingError("config_file", f"{self.config_file} is not a readable file")

    @property
    def uses_token_flow(self) -> bool:
        return self.client_id is not None

    def _check_token_flow(self) -> None:
        if self.api_key is not None or self.api_key_file is not None:
            raise _SettingError(
                "client_id",
                f"selects the token flow, which does not mix with {env_name('api_key')}(_FILE):"
                " set one auth mode",
            )
        if self.client_secret is None and self.client_secret_file is None:
            raise _SettingError(
                "client_secret",
                f"is required with {env_name('client_id')}: set it, or"
                f" {describe_setting('client_secret_file')}",
            )
        if self.auth_key is None and self.auth_key_file is None:
            raise _SettingError(
                "auth_key",
                f"is required with {env_name('client_id')}: set it, or"
                f" {describe_setting('auth_key_file')}",
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


# The settings that describe the one tenant of a single-tenant exporter: with
# --config.file, the file gives them per tenant instead.
SINGLE_TENANT_SETTINGS = (
    "base_url",
    "api_key",
    "api_key_file",
    "client_id",
    "client_secret",
    "client_secret_file",
    "auth_key",
    "auth_key_file",
    "token_url",
    "tenant",
)


# Settings whose value is never shown: no flag, no echo in errors.
SECRETS = ("api_key", "client_secret", "auth_key")


class _SettingError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _flag_of(field: FieldInfo) -> Flag | None:
    return next((meta for meta in field.metadata if isinstance(meta, Flag)), None)


# Each setting's flag, read from the declarations above: the CLI builds its parser from
# these, and error messages name them.
OPTIONS: dict[str, Flag] = {
    name: flag
    for name, field in Settings.model_fields.items()
    if (flag := _flag_of(field)) is not None
}
FLAGS: dict[str, str] = {name: flag.option for name, flag in OPTIONS.items()}


def default_text(field: str) -> str | None:
    """A setting's default as people read it (in --help), None when it has none to show."""
    flag = OPTIONS.get(field)
    if flag is not None and flag.default is not None:
        return flag.default
    default = Settings.model_fields[field].default
    if default is None or isinstance(default, bool):
        return None
    return f"{default:g}" if isinstance(default, float) else str(default)


def describe_setting(field: str) -> str:
    env = env_name(field)
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
    problem = setting_problems(exc)[0]
    if problem.unknown:
        return f"unknown setting {env_name(problem.field)}"
    separator = " " if problem.reads_on else ": "
    return f"{describe_setting(problem.field)}{separator}{problem.message}"


class SettingProblem(NamedTuple):
    """One validation error: the setting and what is wrong, never a secret's value."""

    field: str
    message: str
    reads_on: bool = False
    """The message continues a sentence whose subject is the setting ("... is required")."""
    unknown: bool = False


def setting_problems(exc: ValidationError) -> list[SettingProblem]:
    """Every error of a Settings validation, in pydantic's order."""
    return [_problem(error) for error in exc.errors(include_url=False)]


def _problem(error: ErrorDetails) -> SettingProblem:
    context = error.get("ctx", {})
    inner = context.get("error")
    if isinstance(inner, _SettingError):
        return SettingProblem(inner.field, inner.message, reads_on=True)
    field = str(error["loc"][0]) if error["loc"] else "settings"
    if error["type"] == "extra_forbidden":
        return SettingProblem(field, "unknown setting", unknown=True)
    message = str(inner) if isinstance(inner, ValueError) else error["msg"]
    message = message.removeprefix("Value error, ")
    value = error.get("input")
    secret = field in SECRETS
    shown = "" if secret or isinstance(value, dict) else f" (got {value!r})"
    return SettingProblem(field, f"{message}{shown}")
