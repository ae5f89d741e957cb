"""The file format: exporter-toolkit's YAML, parsed strictly into frozen models."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..errors import ConfigError

ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "RequireClientCert",  # exporter-toolkit keeps this old spelling of RequireAnyClientCert
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
TLSVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]

# Same policy as exporter-toolkit: only these headers, and enumerated values where the header
# has a closed set. Anything else would let a config file break the HTTP responses.
_ALLOWED_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}

# exporter-toolkit keys we refuse rather than ignore, with the reason shown to the operator.
_UNSUPPORTED: dict[tuple[str, str], str] = {
    ("tls_server_config", "cert"): "inline certificates are not supported: use cert_file",
    ("tls_server_config", "key"): "inline keys are not supported: use key_file",
    ("tls_server_config", "cipher_suites"): "not supported: the OpenSSL defaults apply",
    ("tls_server_config", "curve_preferences"): "not supported: the OpenSSL defaults apply",
    ("tls_server_config", "client_allowed_sans"): "not supported: use a dedicated client CA",
    ("", "rate_limit"): "not supported by this exporter",
}

_BCRYPT_HASH = re.compile(r"^\$2[aby]?\$(\d\d)\$[./A-Za-z0-9]{53}$")


class WebConfigError(ConfigError):
    """The web config file is unreadable or invalid; one line naming the file and the key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TLSServerModel(_Model):
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    client_ca: str | None = None
    client_auth_type: ClientAuthType | None = None
    min_version: TLSVersionName = "TLS12"
    max_version: TLSVersionName = "TLS13"
    prefer_server_cipher_suites: bool = True

    @field_validator("cert_file", "key_file", "client_ca_file", "client_ca")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        # exporter-toolkit treats an empty string as "not set"
        return value or None

    @property
    def enabled(self) -> bool:
        """exporter-toolkit's rule: any certificate-related key turns TLS on."""
        return any(
            value is not None
            for value in (
                self.cert_file,
                self.key_file,
                self.client_ca_file,
                self.client_ca,
                self.client_auth_type,
            )
        )


class HTTPServerModel(_Model):
    http2: bool = True  # accepted for compatibility; the server speaks HTTP/1.1 only
    headers: dict[str, str] | None = None

    @field_validator("headers")
    @classmethod
    def _known_headers(cls, headers: dict[str, str] | None) -> dict[str, str] | None:
        for name, value in (headers or {}).items():
            allowed = _ALLOWED_HEADERS.get(name)
            if allowed is None:
                raise ValueError(
                    f"header {name!r} cannot be configured (allowed: {', '.join(_ALLOWED_HEADERS)})"
                )
            if allowed and value and value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")
            if any(ch in value for ch in "\r\n\0"):
                raise ValueError(f"{name} must be a single line")
        return headers


class WebConfigModel(_Model):
    tls_server_config: TLSServerModel | None = None
    http_server_config: HTTPServerModel | None = None
    basic_auth_users: dict[str, str] | None = None

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, str] | None) -> dict[str, str] | None:
        for name, hashed in (users or {}).items():
            if not name or ":" in name:
                raise ValueError(f"user name {name!r} must be non-empty and contain no ':'")
            # Never echo the hash: it is what an attacker would brute-force.
            if not _BCRYPT_HASH.match(hashed) or not 4 <= int(hashed[4:6]) <= 31:
                raise ValueError(f"user {name!r}: password must be a bcrypt hash ($2y$10$...)")
        return users


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, like the Go YAML decoder in strict mode.

    A silently-dropped duplicate user or TLS key is a security surprise.
    """


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _validation_message(path: Path, exc: ValidationError) -> str:
    errors = exc.errors(include_input=False, include_url=False)
    first = errors[0]
    where = _dotted(first["loc"])
    if first["type"] == "extra_forbidden":
        text = f"{path}: unknown key {where}"
    else:
        msg = first["msg"].removeprefix("Value error, ")
        text = f"{path}: {where}: {msg}" if where else f"{path}: {msg}"
    more = len(errors) - 1
    return text + (f" (and {more} more error{'s' if more > 1 else ''})" if more else "")


def parse(path: Path) -> WebConfigModel:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise WebConfigError(f"web config file {path}: cannot read: {reason}") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise WebConfigError(f"{path}: invalid YAML{at}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise WebConfigError(f"{path}: the top level must be a mapping of keys")
    for (section, key), reason in _UNSUPPORTED.items():
        holder = raw.get(section) if section else raw
        if isinstance(holder, dict) and holder.get(key) is not None:
            raise WebConfigError(f"{path}: {_dotted((section, key)).lstrip('.')}: {reason}")
    try:
        return WebConfigModel.model_validate(raw)
    except ValidationError as exc:
        raise WebConfigError(_validation_message(path, exc)) from None
