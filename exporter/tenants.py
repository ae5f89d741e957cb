"""Several tenants from one YAML file (SPEC "Several tenants in one exporter").

The file, named by --config.file::

    defaults:            # optional: any per-tenant key but name
      poll_interval: 60
    tenants:             # at least one
      - name: acme-us    # the tenant label; unique
        base_url: https://acme.webexcampaign.io/campaignapi/resources/v3
        api_key_file: acme-us.key          # relative to the file's folder
      - name: acme-eu
        base_url: https://acme-eu.example/campaignapi/resources/v3
        api_key_env: ACME_EU_API_KEY       # an environment variable holding the key

Each tenant becomes one fully validated `Settings`, as if the exporter ran for it alone:
the process's settings (flags and environment) are the defaults, the file's `defaults:`
override them, and the tenant's entry overrides both. A secret is never inline: `api_key`,
`client_secret` and `auth_key` are given as `<secret>_file` (a path) or `<secret>_env` (the
name of an environment variable), and a tenant that gives either form of a secret replaces
both forms from `defaults:`.

Every problem of the file is collected, one line each naming the file, the tenant (by name,
or by position when it has no usable name) and the key, and raised as one TenantConfigError.
Nothing here starts a thread or touches the network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from .api import credentials_from, tls_verify
from .errors import TenantConfigError as TenantConfigError
from .settings import (
    SECRETS,
    ConfigError,
    Settings,
    describe_setting,
    env_name,
    setting_problems,
)

SECRET_FORMS = ("_file", "_env")
TENANT_KEYS = (
    "base_url",
    "api_key_file",
    "api_key_env",
    "client_id",
    "client_secret_file",
    "client_secret_env",
    "auth_key_file",
    "auth_key_env",
    "token_url",
    "ca_file",
    "poll_interval",
    "timeout",
    "timezone",
    "stale_after",
    "allow_insecure_http",
    "max_response_bytes",
    "max_label_length",
)
"""The keys of `defaults:`; a tenant's entry takes these and `name`."""
ENTRY_KEYS = ("name", *TENANT_KEYS)
TOP_KEYS = ("defaults", "tenants")
PATH_KEYS = ("api_key_file", "client_secret_file", "auth_key_file", "ca_file")

# The settings of the process, not of a tenant: a tenant's Settings has them as they are,
# except these, which describe the whole file (a tenant's Settings is single-tenant).
_PROCESS_ONLY = {"config_file": None, "shard": 0, "total_shards": 1}

FNV_OFFSET_BASIS = 2166136261
FNV_PRIME = 16777619


def load_tenants(
    path: Path,
    base: Settings,
    environ: Mapping[str, str] | None = None,
    *,
    check_files: bool = False,
) -> tuple[Settings, ...]:
    """One validated Settings per tenant of the file at `path`, in file order.

    `base` is the process's settings; `environ` holds the variables that `*_env` keys name
    (default os.environ). With `check_files` (--config.check), the key files must also hold
    a usable secret and a `ca_file` a PEM bundle, as they must when polling starts.

    Raises TenantConfigError listing every problem.
    """
    problems = _Problems(str(path))
    document = _read(path, problems)
    defaults, entries = _sections(document, problems)
    layers = _Layers(path.parent, os.environ if environ is None else environ, problems)
    base_values = {**base.model_dump(), **_PROCESS_ONLY}
    shared = layers.layer(defaults, "defaults", TENANT_KEYS)
    tenants: list[Settings] = []
    names: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        reported = len(problems.lines)
        where = f"tenant #{number}"
        if not isinstance(entry, dict):
            problems.add(where, None, "must be a mapping of settings, starting with name:")
            continue
        name = _name(entry, where, problems)
        if name is not None and name in names:
            problems.add(where, "name", f"{name} is also the name of tenant #{names[name]}")
        elif name is not None:
            names[name] = number
            where = f"tenant {name}"
        own = layers.layer(entry, where, ENTRY_KEYS)
        values = {**base_values, **_merge(shared, own), "tenant": name or "unnamed"}
        tenant = _tenant(where, values, problems, reported)
        if tenant is not None and check_files:
            _check_files(tenant, where, problems)
        if tenant is not None:
            tenants.append(tenant)
    problems.raise_any()
    return tuple(tenants)


def shard_of(name: str, total_shards: int) -> int:
    """The shard polling the tenant `name`: FNV-1a 32-bit of its UTF-8 bytes, modulo."""
    return fnv1a_32(name.encode("utf-8")) % total_shards


def fnv1a_32(data: bytes) -> int:
    value = FNV_OFFSET_BASIS
    for byte in data:
        value = ((value ^ byte) * FNV_PRIME) & 0xFFFFFFFF
    return value


def select_shard(
    tenants: Sequence[Settings], shard: int, total_shards: int
) -> tuple[Settings, ...]:
    """The tenants this instance polls."""
    return tuple(t for t in tenants if shard_of(t.tenant_label, total_shards) == shard)


def tenants_from_settings(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> tuple[Settings, ...]:
    """The tenants this instance polls: its shard of --config.file, or the one tenant."""
    if settings.config_file is None:
        return (settings,)
    tenants = load_tenants(settings.config_file, settings, environ)
    return select_shard(tenants, settings.shard, settings.total_shards)


def check_lines(tenants: Sequence[Settings], shard: int, total_shards: int) -> list[str]:
    """One line per tenant for --config.check; never a secret."""
    lines = []
    for tenant in tenants:
        name = tenant.tenant_label
        owner = shard_of(name, total_shards)
        where = "polled here" if owner == shard else f"not here: this is shard {shard}"
        lines.append(
            f"{name}: ok, {tenant.base_url or 'embedded simulator'}, {_auth(tenant)},"
            f" poll every {tenant.poll_interval:g}s, shard {owner} of {total_shards} ({where})"
        )
    return lines


def _auth(tenant: Settings) -> str:
    if tenant.demo:
        return "demo key"
    if tenant.uses_token_flow:
        return (
            f"token flow at {tenant.effective_token_url} for client {tenant.client_id},"
            f" client secret {_source(tenant, 'client_secret')},"
            f" auth key {_source(tenant, 'auth_key')}"
        )
    return f"key {_source(tenant, 'api_key')}"


def _source(tenant: Settings, secret: str) -> str:
    path = getattr(tenant, f"{secret}_file")
    return f"from file {path}" if path is not None else "from the environment"


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, where: str | None, key: str | None, message: str) -> None:
        parts = [self.source, where, key, message]
        self.lines.append(": ".join(part for part in parts if part))

    def raise_any(self) -> None:
        if self.lines:
            raise TenantConfigError(self.lines)

    def fail(self, where: str | None, message: str) -> NoReturn:
        self.add(where, None, message)
        raise TenantConfigError(self.lines)


def _read(path: Path, problems: _Problems) -> dict[Any, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problems.fail(None, f"cannot read: {reason}")
    # Only with --config.file: PyYAML and the web config's modules (bcrypt, their models)
    # are 1.8 MB that the settings process loads for nothing otherwise.
    import yaml

    from .webconfig.model import _StrictLoader as StrictLoader

    try:
        document = yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else None
        problems.fail(at, f"invalid YAML: {problem}")
    if not isinstance(document, dict):
        problems.fail(None, "must be a mapping with tenants: (and optionally defaults:)")
    return document


def _sections(document: dict[Any, Any], problems: _Problems) -> tuple[dict[Any, Any], list[Any]]:
    for key in document:
        if key not in TOP_KEYS:
            problems.add(None, str(key), f"unknown key; allowed: {', '.join(TOP_KEYS)}")
    defaults = document.get("defaults")
    if defaults is None:
        defaults = {}
    elif not isinstance(defaults, dict):
        problems.add(None, "defaults", "must be a mapping of per-tenant settings")
        defaults = {}
    entries = document.get("tenants")
    if not isinstance(entries, list) or not entries:
        problems.add(None, "tenants", "must list at least one tenant (- name: ...)")
        entries = []
    return defaults, entries


def _name(entry: dict[Any, Any], where: str, problems: _Problems) -> str | None:
    name = entry.get("name")
    if name is None:
        problems.add(where, "name", "is required: the tenant label, unique in the file")
        return None
    if not isinstance(name, str):
        problems.add(where, "name", f"must be a string (got {name!r}): quote it")
        return None
    if not name or not name.isprintable() or name != name.strip():
        problems.add(
            where,
            "name",
            f"must be printable text without leading or trailing blanks (got {name!r})",
        )
        return None
    return name


class _Layers:
    """Turns `defaults:` or a tenant's entry into Settings values, reporting bad keys."""

    def __init__(self, folder: Path, environ: Mapping[str, str], problems: _Problems) -> None:
        self.folder = folder
        self.environ = environ
        self.problems = problems

    def layer(self, raw: dict[Any, Any], where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key in SECRETS:
                self.problems.add(
                    where, key, f"secrets are never inline; use {key}_file or {key}_env"
                )
                values[key] = _MISSING
            elif key not in allowed:
                self.problems.add(where, str(key), f"unknown key; allowed: {', '.join(allowed)}")
            elif key != "name":
                values[key] = self._value(key, value, where)
        for secret in SECRETS:
            if f"{secret}_file" in values and f"{secret}_env" in values:
                self.problems.add(
                    where, f"{secret}_file", f"and {secret}_env do not mix: give one of them"
                )
        return values

    def _value(self, key: str, value: Any, where: str) -> Any:
        # The file's folder, not its resolved target: a mounted ConfigMap's keys sit next to
        # the symlink Kubernetes swaps on update.
        if key in PATH_KEYS and isinstance(value, str) and value:
            return self.folder / value
        if key.endswith("_env"):
            if not isinstance(value, str) or not value:
                self.problems.add(where, key, "must name an environment variable")
                return _MISSING
            secret = self.environ.get(value, "")
            if not secret.strip():
                self.problems.add(where, key, f"environment variable {value} is not set or empty")
                return _MISSING
            return secret
        return value


class _Missing:
    """A secret inline or from an unset variable: reported, and still counted as given."""


_MISSING = _Missing()


def _merge(shared: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """`defaults:` then the entry; an entry giving a secret in one form drops both forms."""
    merged = dict(shared)
    for secret in SECRETS:
        forms = (secret, f"{secret}_file", f"{secret}_env")
        if any(form in own for form in forms):
            for form in forms:
                merged.pop(form, None)
    merged.update(own)
    for secret in SECRETS:
        if f"{secret}_env" in merged:
            merged[secret] = merged.pop(f"{secret}_env")
    return merged


def _tenant(
    where: str, values: dict[str, Any], problems: _Problems, reported: int
) -> Settings | None:
    """The tenant's Settings; None when it has problems (those since `reported`)."""
    _check_auth(where, values, problems)
    given = {key: value for key, value in values.items() if value is not _MISSING}
    seen: set[str] = set()
    try:
        tenant = Settings(**given)
    except ValidationError as exc:
        for problem in setting_problems(exc):
            # A check across settings repeats what the checks above reported.
            if problem.field in seen or (problem.reads_on and len(problems.lines) > reported):
                continue
            seen.add(problem.field)
            problems.add(where, _file_key(problem.field), in_file_terms(problem.message))
        return None
    return tenant if len(problems.lines) == reported else None


def _check_auth(where: str, values: dict[str, Any], problems: _Problems) -> None:
    def given(secret: str) -> bool:
        return values.get(secret) is not None or values.get(f"{secret}_file") is not None

    if values.get("base_url") is None:
        problems.add(
            where,
            "base_url",
            "is required: the tenant's API base, e.g."
            " https://<tenant>.webexcampaign.io/campaignapi/resources/v3",
        )
    if values.get("client_id") is None:
        if not given("api_key"):
            problems.add(
                where,
                "api_key_file",
                "is required, or api_key_env (or client_id, client_secret_* and auth_key_*"
                " for the token flow)",
            )
        return
    if given("api_key"):
        problems.add(
            where, "client_id", "selects the token flow, which does not mix with api_key_*"
        )
    for secret in ("client_secret", "auth_key"):
        if not given(secret):
            problems.add(where, f"{secret}_file", f"is required with client_id, or {secret}_env")


def _check_files(tenant: Settings, where: str, problems: _Problems) -> None:
    """The checks polling starts with: each key file holds one secret, ca_file is PEM."""
    for check in (credentials_from, tls_verify):
        try:
            check(tenant)
        except ConfigError as exc:
            problems.add(where, None, in_file_terms(str(exc)))


def _file_key(field: str) -> str:
    if field == "tenant":
        return "name"
    return f"{field}_env" if field in SECRETS else field


def in_file_terms(message: str) -> str:
    """A settings message with each setting named by its key in the tenants file."""
    for field in sorted(Settings.model_fields, key=len, reverse=True):
        key = f"{field}_file or {field}_env" if field in SECRETS else field
        message = message.replace(f"{env_name(field)}(_FILE)", key)
        message = message.replace(f"{env_name(field)}=true", f"{key}: true")
        message = message.replace(describe_setting(field), key)
        message = message.replace(env_name(field), key)
    return message
