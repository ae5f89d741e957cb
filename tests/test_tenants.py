"""Several tenants: the file's format, its problems one line each, precedence, sharding."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from exporter.settings import Settings, load_settings
from exporter.tenants import (
    ENTRY_KEYS,
    TENANT_KEYS,
    TenantConfigError,
    check_lines,
    fnv1a_32,
    load_tenants,
    select_shard,
    shard_of,
    tenants_from_settings,
)

US = "https://acme.webexcampaign.io/campaignapi/resources/v3"
EU = "https://acme-eu.example/campaignapi/resources/v3"
ENTRY_ALLOWED = ", ".join(ENTRY_KEYS)
DEFAULTS_ALLOWED = ", ".join(TENANT_KEYS)

Write = Callable[[str], Path]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WEBEX_CAMPAIGN_"):
            monkeypatch.delenv(name)


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """Writes the tenants file (and a key file beside it) and returns the file's path."""
    (tmp_path / "us.key").write_text("us-key\n")

    def write(text: str) -> Path:
        path = tmp_path / "tenants.yaml"
        path.write_text(textwrap.dedent(text))
        return path

    return write


def base_for(path: Path, **flags: object) -> Settings:
    return load_settings(config_file=str(path), **flags)


def load(path: Path, environ: Mapping[str, str] | None = None, **flags: object) -> list[Settings]:
    return list(load_tenants(path, base_for(path, **flags), environ or {}))


def problems(path: Path, environ: Mapping[str, str] | None = None, **options: bool) -> list[str]:
    """The problem lines, each without the file's name that starts it."""
    with pytest.raises(TenantConfigError) as caught:
        load_tenants(path, base_for(path), environ or {}, **options)
    lines = caught.value.problems
    assert str(caught.value) == "\n".join(lines)
    assert all(line.startswith(f"{path}: ") for line in lines)
    return [line.removeprefix(f"{path}: ") for line in lines]


TWO_TENANTS = f"""
    defaults:
      poll_interval: 30
      timezone: Europe/Berlin
    tenants:
      - name: acme-us
        base_url: {US}
        api_key_file: us.key
        timezone: America/New_York
      - name: acme-eu
        base_url: {EU}
        api_key_env: ACME_EU_API_KEY
"""


def test_each_tenant_is_one_settings_in_file_order(write: Write, tmp_path: Path) -> None:
    us, eu = load(write(TWO_TENANTS), {"ACME_EU_API_KEY": "eu-key"})
    assert (us.tenant_label, us.base_url, us.api_key_file) == ("acme-us", US, tmp_path / "us.key")
    assert (eu.tenant_label, eu.base_url, eu.api_key_file) == ("acme-eu", EU, None)
    assert eu.api_key is not None
    assert eu.api_key.get_secret_value() == "eu-key"
    for tenant in (us, eu):
        assert tenant.config_file is None
        assert (tenant.shard, tenant.total_shards) == (0, 1)


def test_flags_then_defaults_then_the_entry(write: Write) -> None:
    path = write(TWO_TENANTS)
    us, eu = load(path, {"ACME_EU_API_KEY": "k"}, poll_interval="7", timeout="3", timezone="UTC")
    assert (us.poll_interval, us.timeout, us.timezone) == (30, 3, "America/New_York")
    assert (eu.poll_interval, eu.timeout, eu.timezone) == (30, 3, "Europe/Berlin")


def test_process_settings_stay_the_process_s(write: Write) -> None:
    path = write(TWO_TENANTS)
    (us, _) = load(path, {"ACME_EU_API_KEY": "k"}, listen_address="127.0.0.1:1", log_level="warn")
    assert (us.listen_address, us.log_level) == ("127.0.0.1:1", "warn")


def test_the_environment_does_not_leak_into_a_tenant(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(TWO_TENANTS)
    monkeypatch.setenv("WEBEX_CAMPAIGN_CONFIG_FILE", str(path))
    monkeypatch.setenv("WEBEX_CAMPAIGN_TIMEOUT", "4")
    us, _ = load_tenants(path, load_settings(), {"ACME_EU_API_KEY": "k"})
    assert (us.config_file, us.timeout) == (None, 4)


def test_relative_paths_are_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "conf"
    (folder / "keys").mkdir(parents=True)
    (folder / "keys" / "a.key").write_text("a-key\n")
    (folder / "ca.pem").write_text("not checked without check_files\n")
    path = folder / "tenants.yaml"
    path.write_text(
        f"defaults: {{ca_file: ca.pem}}\ntenants:\n- {{name: a, base_url: {US},"
        " api_key_file: keys/a.key}\n"
    )
    monkeypatch.chdir(tmp_path)
    (tenant,) = load(Path("conf/tenants.yaml"))
    assert tenant.api_key_file == Path("conf/keys/a.key")
    assert tenant.ca_file == Path("conf/ca.pem")
    (tenant,) = load(path)
    assert tenant.api_key_file == folder / "keys" / "a.key"


def test_an_absolute_path_stays(write: Write, tmp_path: Path) -> None:
    key = tmp_path / "us.key"
    (tenant,) = load(write(f"tenants:\n- {{name: a, base_url: {US}, api_key_file: {key}}}\n"))
    assert tenant.api_key_file == key


def test_an_entry_s_secret_replaces_both_forms_of_defaults(write: Write) -> None:
    path = write(
        f"""
        defaults:
          api_key_env: SHARED_KEY
        tenants:
          - {{name: a, base_url: {US}}}
          - {{name: b, base_url: {US}, api_key_file: us.key}}
        """
    )
    a, b = load(path, {"SHARED_KEY": "shared"})
    assert a.api_key is not None
    assert a.api_key.get_secret_value() == "shared"
    assert (b.api_key, b.api_key_file is not None) == (None, True)


def test_token_flow_secrets_from_file_and_environment(write: Write, tmp_path: Path) -> None:
    path = write(
        """
        tenants:
          - name: hub
            base_url: https://hub.example/v1
            client_id: my-client
            client_secret_env: HUB_SECRET
            auth_key_file: us.key
        """
    )
    (hub,) = load(path, {"HUB_SECRET": "s"})
    assert hub.uses_token_flow
    assert hub.client_secret is not None
    assert hub.client_secret.get_secret_value() == "s"
    assert hub.auth_key_file == tmp_path / "us.key"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            f"tenants:\n- {{name: a, base_url: {US}, api_key: s3cret-inline}}\n",
            ["tenant a: api_key: secrets are never inline; use api_key_file or api_key_env"],
            id="inline key",
        ),
        pytest.param(
            f"defaults: {{client_secret: s3cret-inline, auth_key: s3cret-inline}}\n"
            f"tenants:\n- {{name: a, base_url: {US}, api_key_file: us.key}}\n",
            [
                "defaults: client_secret: secrets are never inline; use client_secret_file"
                " or client_secret_env",
                "defaults: auth_key: secrets are never inline; use auth_key_file or auth_key_env",
            ],
            id="inline secrets in defaults",
        ),
        pytest.param(
            f"tenants:\n- {{name: a, base_url: {US}, api_key_file: us.key, api_key_env: K}}\n",
            [
                "tenant a: api_key_env: environment variable K is not set or empty",
                "tenant a: api_key_file: and api_key_env do not mix: give one of them",
            ],
            id="file and env",
        ),
        pytest.param(
            f"tenants:\n- {{name: a, base_url: {US}, api_key_file: us.key, pol_interval: 5}}\n",
            [f"tenant a: pol_interval: unknown key; allowed: {ENTRY_ALLOWED}"],
            id="unknown key",
        ),
        pytest.param(
            f"defaults: {{name: x}}\n"
            f"tenants:\n- {{name: a, base_url: {US}, api_key_file: us.key}}\n",
            [f"defaults: name: unknown key; allowed: {DEFAULTS_ALLOWED}"],
            id="name in defaults",
        ),
        pytest.param(
            f"tenants:\n- {{name: a, base_url: {US}, api_key_file: us.key}}\n"
            f"- {{name: b, base_url: {US}, api_key_file: us.key}}\n"
            f"- {{name: a, base_url: {US}, api_key_file: us.key}}\n",
            ["tenant #3: name: a is also the name of tenant #1"],
            id="duplicate name",
        ),
        pytest.param(
            f"tenants:\n- {{base_url: {US}, api_key_file: us.key}}\n"
            f"- {{name: '', base_url: {US}, api_key_file: us.key}}\n"
            f"- {{name: ' a', base_url: {US}, api_key_file: us.key}}\n"
            f'- {{name: "a\\tb", base_url: {US}, api_key_file: us.key}}\n'
            f"- {{name: 5, base_url: {US}, api_key_file: us.key}}\n",
            [
                "tenant #1: name: is required: the tenant label, unique in the file",
                "tenant #2: name: must be printable text without leading or trailing blanks"
                " (got '')",
                "tenant #3: name: must be printable text without leading or trailing blanks"
                " (got ' a')",
                "tenant #4: name: must be printable text without leading or trailing blanks"
                " (got 'a\\tb')",
                "tenant #5: name: must be a string (got 5): quote it",
            ],
            id="bad names",
        ),
        pytest.param(
            "tenants: []\n",
            ["tenants: must list at least one tenant (- name: ...)"],
            id="no tenants",
        ),
        pytest.param(
            "defaults: {timeout: 5}\n",
            ["tenants: must list at least one tenant (- name: ...)"],
            id="tenants missing",
        ),
        pytest.param(
            "defaults: [1]\ntenants: {a: 1}\nextra: 1\n",
            [
                "extra: unknown key; allowed: defaults, tenants",
                "defaults: must be a mapping of per-tenant settings",
                "tenants: must list at least one tenant (- name: ...)",
            ],
            id="bad sections",
        ),
        pytest.param(
            "tenants:\n- just-a-name\n",
            ["tenant #1: must be a mapping of settings, starting with name:"],
            id="entry not a mapping",
        ),
        pytest.param(
            "tenants: [\n",
            ["line 2, column 1: invalid YAML: expected the node content, but found '<stream end>'"],
            id="syntax error",
        ),
        pytest.param(
            "tenants:\n- name: a\n  name: b\n",
            ["line 3, column 3: invalid YAML: duplicate key 'name'"],
            id="duplicate key",
        ),
        pytest.param(
            "- name: a\n",
            ["must be a mapping with tenants: (and optionally defaults:)"],
            id="a list",
        ),
        pytest.param(
            "",
            ["must be a mapping with tenants: (and optionally defaults:)"],
            id="empty file",
        ),
        pytest.param(
            f"tenants:\n- {{name: a, base_url: {US}, api_key_env: UNSET}}\n"
            f"- {{name: b, base_url: {US}, api_key_env: BLANK}}\n"
            f"- {{name: c, base_url: {US}, api_key_env: ''}}\n",
            [
                "tenant a: api_key_env: environment variable UNSET is not set or empty",
                "tenant b: api_key_env: environment variable BLANK is not set or empty",
                "tenant c: api_key_env: must name an environment variable",
            ],
            id="variables",
        ),
        pytest.param(
            "tenants:\n- {name: a, api_key_file: us.key}\n- {name: b, base_url: " + US + "}\n",
            [
                "tenant a: base_url: is required: the tenant's API base, e.g."
                " https://<tenant>.webexcampaign.io/campaignapi/resources/v3",
                "tenant b: api_key_file: is required, or api_key_env (or client_id,"
                " client_secret_* and auth_key_* for the token flow)",
            ],
            id="required",
        ),
        pytest.param(
            f"tenants:\n- {{name: a, base_url: {US}, client_id: c}}\n"
            f"- {{name: b, base_url: {US}, client_id: c, api_key_file: us.key,"
            " client_secret_file: us.key, auth_key_file: us.key}\n",
            [
                "tenant a: client_secret_file: is required with client_id, or client_secret_env",
                "tenant a: auth_key_file: is required with client_id, or auth_key_env",
                "tenant b: client_id: selects the token flow, which does not mix with api_key_*",
            ],
            id="token flow",
        ),
        pytest.param(
            "tenants:\n- {name: a, base_url: 'http://api.example/v1', api_key_file: us.key}\n",
            [
                "tenant a: base_url: uses plain http:// to a non-loopback host, which would send"
                " the API key in clear: use https://, or set allow_insecure_http: true"
            ],
            id="plain http",
        ),
        pytest.param(
            "tenants:\n- {name: a, base_url: 'https://u:p@x.io/v1', api_key_file: us.key}\n",
            [
                "tenant a: base_url: must not carry credentials: put the key in api_key_file or"
                " api_key_env (got 'https://u:p@x.io/v1')"
            ],
            id="credentials in URL",
        ),
        pytest.param(
            f"tenants:\n- {{name: a, base_url: {US}, api_key_file: us.key,"
            " ca_file: nowhere.pem}\n",
            [
                "tenant a: ca_file: nowhere.pem is not a readable file",
            ],
            id="missing ca file",
        ),
        pytest.param(
            f"defaults: {{timeout: 0}}\n"
            f"tenants:\n- {{name: a, base_url: {US}, api_key_file: us.key, poll_interval: soon,"
            " timezone: Mars/Olympus, max_label_length: 8}\n",
            [
                "tenant a: poll_interval: Input should be a valid number, unable to parse string"
                " as a number (got 'soon')",
                "tenant a: timeout: Input should be greater than 0 (got 0)",
                "tenant a: timezone: unknown IANA time zone 'Mars/Olympus', e.g. 'Europe/Berlin'"
                " (got 'Mars/Olympus')",
                "tenant a: max_label_length: Input should be greater than or equal to 16 (got 8)",
            ],
            id="every bad value",
        ),
    ],
)
def test_each_problem_is_one_line_naming_file_tenant_and_key(
    text: str, expected: list[str], write: Write
) -> None:
    path = write(text)
    lines = problems(path, {"BLANK": " "})
    assert lines == [
        line.replace("nowhere.pem", str(path.parent / "nowhere.pem")) for line in expected
    ]
    assert not any("s3cret-inline" in line for line in lines)


def test_problems_of_every_tenant_are_collected(write: Write) -> None:
    path = write(
        """
        tenants:
          - {name: a, base_url: ftp://a, api_key_file: us.key}
          - {name: b, base_url: ftp://b, api_key_file: us.key}
        """
    )
    assert [line.split(":")[0] for line in problems(path)] == ["tenant a", "tenant b"]


def test_a_secret_from_the_environment_is_never_shown(write: Write) -> None:
    path = write("tenants:\n- {name: a, base_url: ftp://x, api_key_env: K, client_id: c}\n")
    lines = problems(path, {"K": "very-secret-key"})
    assert lines
    assert not any("very-secret-key" in line for line in lines)


def test_an_unreadable_file_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_bytes(b"\xff\xfe")
    assert problems(path) == [
        "cannot read: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"
    ]


def test_check_files_finds_unusable_key_files_and_ca(write: Write, tmp_path: Path) -> None:
    (tmp_path / "empty.key").write_text("\n")
    (tmp_path / "two.key").write_text("one two\n")
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    path = write(
        f"""
        tenants:
          - {{name: empty, base_url: {US}, api_key_file: empty.key}}
          - {{name: two, base_url: {US}, api_key_file: two.key}}
          - {{name: ca, base_url: {US}, api_key_file: us.key, ca_file: bad.pem}}
          - {{name: hub, base_url: {US}, client_id: c, client_secret_file: empty.key,
              auth_key_file: us.key}}
          - {{name: fine, base_url: {US}, api_key_file: us.key}}
        """
    )
    assert load(path)  # nothing wrong but the files' content
    lines = problems(path, check_files=True)
    assert lines[0] == (
        f"tenant empty: api_key_file: {tmp_path / 'empty.key'} is empty or unreadable:"
        " it must hold the API secret key"
    )
    assert lines[1] == (
        f"tenant two: api_key_file: {tmp_path / 'two.key'} holds a line break, blank or"
        " control character inside the secret: it must hold exactly one API secret key"
    )
    assert lines[2].startswith(f"tenant ca: ca_file: {tmp_path / 'bad.pem'} is not a PEM CA bundle")
    assert lines[3] == (
        f"tenant hub: client_secret_file: {tmp_path / 'empty.key'} is empty or unreadable"
    )
    assert len(lines) == 4


def test_check_files_accepts_usable_files(write: Write, tmp_path: Path) -> None:
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    path = write(
        f"tenants:\n- {{name: a, base_url: {US}, api_key_file: us.key, ca_file: ca.pem}}\n"
    )
    (tenant,) = load_tenants(path, base_for(path), {}, check_files=True)
    assert tenant.ca_file == tmp_path / "ca.pem"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("", 0x811C9DC5),
        ("a", 0xE40C292C),
        ("b", 0xE70C2DE5),
        ("foo", 0xA9F37ED7),
        ("foobar", 0xBF9CF968),
    ],
)
def test_fnv1a_32_published_vectors(text: str, value: int) -> None:
    assert fnv1a_32(text.encode("utf-8")) == value


def test_shard_of_is_the_hash_modulo_the_shards() -> None:
    assert shard_of("foobar", 1) == 0
    assert shard_of("foobar", 7) == 0xBF9CF968 % 7
    assert shard_of("é", 3) == fnv1a_32("é".encode()) % 3


@given(st.text(), st.integers(min_value=1, max_value=64))
def test_shard_of_is_a_shard(name: str, total: int) -> None:
    assert 0 <= shard_of(name, total) < total


def tenant_named(name: str) -> Settings:
    return load_settings(base_url=US, api_key="k", tenant=name)


@pytest.mark.parametrize("total", [1, 2, 3, 7])
def test_every_tenant_is_polled_by_exactly_one_shard(total: int) -> None:
    tenants = [tenant_named(f"tenant-{number}") for number in range(200)]
    shards = [select_shard(tenants, shard, total) for shard in range(total)]
    names = [tenant.tenant_label for shard in shards for tenant in shard]
    assert sorted(names) == sorted(tenant.tenant_label for tenant in tenants)
    if total > 1:
        assert all(shards), "200 names leave no shard empty"


def test_tenants_from_settings_without_a_file_is_the_one_tenant() -> None:
    settings = tenant_named("solo")
    assert tenants_from_settings(settings) == (settings,)


def test_tenants_from_settings_selects_the_shard(write: Write) -> None:
    path = write(TWO_TENANTS)
    environ = {"ACME_EU_API_KEY": "k"}
    every = load_tenants(path, base_for(path), environ)
    for total in (1, 2, 3):
        polled = [
            tenants_from_settings(
                base_for(path, shard=str(shard), total_shards=str(total)), environ
            )
            for shard in range(total)
        ]
        assert sorted(t.tenant_label for shard in polled for t in shard) == ["acme-eu", "acme-us"]
        for shard, tenants in enumerate(polled):
            assert tenants == select_shard(every, shard, total)


def test_check_lines_say_source_interval_and_shard(write: Write, tmp_path: Path) -> None:
    path = write(
        TWO_TENANTS
        + """
      - name: hub
        base_url: https://hub.example/v1
        client_id: my-client
        client_secret_env: HUB_SECRET
        auth_key_file: us.key
    """
    )
    tenants = load_tenants(path, base_for(path), {"ACME_EU_API_KEY": "eu-k", "HUB_SECRET": "s"})
    shard = shard_of("acme-us", 2)
    lines = check_lines(tenants, shard, 2)
    assert lines[0] == (
        f"acme-us: ok, {US}, key from file {tmp_path / 'us.key'}, poll every 30s,"
        f" shard {shard} of 2 (polled here)"
    )
    eu = shard_of("acme-eu", 2)
    where = "polled here" if eu == shard else f"not here: this is shard {shard}"
    assert lines[1] == (
        f"acme-eu: ok, {EU}, key from the environment, poll every 30s, shard {eu} of 2 ({where})"
    )
    assert lines[2].startswith(
        "hub: ok, https://hub.example/v1, token flow at https://hub.example/v1/oauth/token for"
        f" client my-client, client secret from the environment, auth key from file"
        f" {tmp_path / 'us.key'}, poll every 30s, shard "
    )
    assert not any("eu-k" in line or "us-key" in line for line in lines)


def test_check_lines_of_one_tenant_without_a_file() -> None:
    assert check_lines([tenant_named("solo")], 0, 1) == [
        f"solo: ok, {US}, key from the environment, poll every 60s, shard"
        f" {shard_of('solo', 1)} of 1 (polled here)"
    ]
