"""Command line: the flags and the settings, checked and resolved into the serving
process's `Plan` (in the settings process the console script starts, see `app`)."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from . import __version__, app
from .api import check_tls, credentials, credentials_from, tls_verify
from .errors import ConfigError, TenantConfigError
from .plan import DemoTenant, Plan
from .scenarios import DEMO_KEY
from .settings import (
    OPTIONS,
    Flag,
    Settings,
    default_text,
    describe_setting,
    load_settings,
)
from .tenants import check_lines, load_tenants, select_shard, shard_of
from .worker import PollerSpec

T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    """One option per setting that has a flag, from its declaration in settings.py."""
    parser = argparse.ArgumentParser(
        prog="webex-campaign-exporter",
        description="Prometheus exporter for Webex Campaign target groups. Every setting has"
        " an environment variable WEBEX_CAMPAIGN_<SETTING>, e.g. WEBEX_CAMPAIGN_BASE_URL;"
        " flags win over the environment.",
        argument_default=argparse.SUPPRESS,
    )
    for name, flag in OPTIONS.items():
        help_text = _help(name, flag)
        if flag.switch:
            parser.add_argument(
                flag.option, dest=name, action="store_const", const=True, help=help_text
            )
        else:
            action = "append" if flag.repeatable else "store"
            parser.add_argument(
                flag.option, dest=name, metavar=flag.metavar, action=action, help=help_text
            )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _help(name: str, flag: Flag) -> str:
    text = flag.help.replace("%", "%%")  # argparse expands %(...)s in help
    default = default_text(name)
    return text if default is None else f"{text} (default {default})"


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """The flags given, as init arguments of Settings."""
    given = vars(args)
    for name, flag in OPTIONS.items():
        if flag.repeatable and name in given:  # the variable's list form
            given[name] = ",".join(given[name])
    return given


def settings(argv: Sequence[str] | None) -> Settings:
    """The settings of these flags and the environment; ConfigError if one is bad."""
    return load_settings(**_overrides(build_parser().parse_args(argv)))


def resolve(settings: Settings) -> Plan:
    """The settings as the serving process's plan, after every check start-up makes: the
    tenants file, every tenant's key and CA bundle read as the poller will read them.

    Raises ConfigError or TenantConfigError.
    """
    tenants: tuple[PollerSpec, ...] = ()
    demo: tuple[DemoTenant, ...] = ()
    if settings.config_file is not None:
        tenants = tuple(load_shard(settings))
    else:
        check_tls(settings)
        if settings.demo:
            demo = _demo_tenants(settings)
        else:
            tenants = (PollerSpec.of(settings, settings.base_url or ""),)
            credentials(tenants[0].access)  # a key file read as the poller will read it
    return Plan(
        listen=tuple(settings.listen),
        listen_setting=describe_setting("listen_address"),
        log_level=settings.log_level,
        log_format=settings.log_format,
        telemetry_path=settings.web_telemetry_path,
        max_connections=settings.web_max_connections,
        read_header_timeout=settings.web_read_header_timeout,
        enable_lifecycle=settings.web_enable_lifecycle,
        web_config_file=settings.web_config_file,
        config_file=settings.config_file,
        shard=settings.shard,
        total_shards=settings.total_shards,
        tenants=tenants,
        demo=demo,
        is_demo=settings.demo,
    )


def _demo_tenants(settings: Settings) -> tuple[DemoTenant, ...]:
    """--demo: `--demo.tenants` simulated tenants on loopback (this shard's).

    The first answers as `--demo.scenario` says; with several, the second fails now
    and then (flaky), so a multi-tenant dashboard shows a tenant in trouble.
    """
    count = settings.demo_tenants
    label = settings.tenant_label  # `demo`, or --tenant
    names = [label] if count == 1 else [f"{label}-{n}" for n in range(1, count + 1)]
    chosen = []
    for index, name in enumerate(names):
        if shard_of(name, settings.total_shards) != settings.shard:
            continue
        tenant = settings.model_copy(update={"tenant": name})
        chosen.append(
            DemoTenant(
                spec=PollerSpec.of(tenant, "", DEMO_KEY),  # its simulator's URL once it runs
                scenario=settings.demo_scenario
                if index == 0
                else "flaky"
                if index == 1
                else "healthy",
                timezone=settings.timezone,
                slow_seconds=settings.timeout + 5,
                too_large_bytes=settings.max_response_bytes + 1,
            )
        )
    return tuple(chosen)


def load_shard(settings: Settings) -> list[PollerSpec]:
    """The tenants of --config.file this instance polls, their keys and CA bundles read as
    the poller will read them; TenantConfigError (or ConfigError) if anything is wrong."""
    assert settings.config_file is not None
    tenants = load_tenants(settings.config_file, settings)
    chosen = select_shard(tenants, settings.shard, settings.total_shards)
    specs = [PollerSpec.of(tenant, tenant.base_url or "") for tenant in chosen]
    problems = []
    for spec in specs:  # what the poller gets, read as it will read it
        try:
            credentials(spec.access)
            check_tls(spec.access)
        except ConfigError as exc:
            problems.append(f"{settings.config_file}: tenant {spec.tenant}: {exc}")
    if problems:
        raise TenantConfigError(problems)
    return specs


def build(settings: Settings) -> app.Exporter:
    """The exporter of these settings, wired in this process (reloads too); nothing runs yet."""
    load = None if settings.config_file is None else functools.partial(load_shard, settings)
    return app.build(resolve(settings), load)


def check(settings: Settings) -> list[str]:
    """--config.check: every check start-up makes, then one line per tenant; starts nothing.

    Raises ConfigError or TenantConfigError.
    """
    if settings.config_file is None:
        tenants: tuple[Settings, ...] = (settings,)
        credentials_from(settings, DEMO_KEY if settings.demo else None)
        tls_verify(settings)
    else:
        tenants = load_tenants(settings.config_file, settings, check_files=True)
    if settings.web_config_file is not None:
        from .webconfig import load_web_config

        load_web_config(settings.web_config_file)
    return check_lines(tenants, settings.shard, settings.total_shards)


def _checked(argv: Sequence[str] | None, then: Callable[[Settings], T]) -> T | int:
    """Load and check the settings, then `then` them; or the exit code when that is all:
    0 after --config.check's lines, 2 after printing what is wrong."""
    try:
        loaded = settings(argv)
        if loaded.config_check:
            print(*check(loaded), sep="\n")
            return 0
        return then(loaded)
    except ConfigError as exc:
        print(f"webex-campaign-exporter: error: {exc}", file=sys.stderr)
        return 2
    except TenantConfigError as exc:
        for problem in exc.problems:
            print(f"webex-campaign-exporter: error: {problem}", file=sys.stderr)
        return 2


def plan(argv: Sequence[str] | None) -> Plan | int:
    """The plan of these flags for the serving process (`configure`), or the exit code."""
    return _checked(argv, resolve)


def main(argv: Sequence[str] | None = None) -> int:
    """The whole exporter in this process, pydantic loaded (tests, debugging); the console
    script is `app.main`, which reads the settings in a process of their own."""
    exporter = _checked(argv, build)
    return exporter if isinstance(exporter, int) else app.run(exporter)
