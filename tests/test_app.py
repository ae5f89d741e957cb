"""The console script's settings process: the plan it sends at start, the tenants or the
problems it sends at a reload, and what reaches the user when it has nothing to send."""

from __future__ import annotations

import os
import pickle
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from helpers import free_port

from exporter import app, cli
from exporter.errors import TenantConfigError
from exporter.plan import ListenAddress, Plan
from exporter.scenarios import DEMO_KEY
from exporter.settings import load_settings
from exporter.tenants import shard_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def checkout_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child runs this checkout's code, with none of the caller's settings."""
    for name in list(os.environ):
        if name.startswith("WEBEX_CAMPAIGN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def tenants_file(tmp_path: Path, *names: str, key: str = "k") -> Path:
    for name in names:
        (tmp_path / f"{name}.key").write_text(key)
    config = tmp_path / "tenants.yaml"
    entries = "".join(
        f"  - {{name: {name}, base_url: 'https://{name}.example', api_key_file: {name}.key}}\n"
        for name in names
    )
    config.write_text(f"tenants:\n{entries}")
    return config


def test_the_plan_holds_the_flags_and_every_demo_tenant_of_the_shard() -> None:
    names = [f"demo-{n}" for n in range(1, 5)]
    here = [name for name in names if shard_of(name, 2) == 1]
    code, plan = app.read_settings(
        "start",
        [
            "--demo",
            "--demo.tenants=4",
            "--shard=1",
            "--total-shards=2",
            "--web.listen-address=127.0.0.1:9999",
            "--timeout=7",
            "--log.format=logfmt",
        ],
    )
    assert code == 0
    assert isinstance(plan, Plan)
    assert plan.listen == (ListenAddress("127.0.0.1", 9999),)
    assert plan.log_format == "logfmt"
    assert (plan.shard, plan.total_shards, plan.is_demo) == (1, 2, True)
    assert plan.tenants == ()
    assert [tenant.spec.tenant for tenant in plan.demo] == here
    assert all(tenant.slow_seconds > tenant.spec.timeout == 7 for tenant in plan.demo)
    assert {
        tenant.spec.access.api_key.value for tenant in plan.demo if tenant.spec.access.api_key
    } == {DEMO_KEY}
    # the first tenant answers as --demo.scenario says, the second is flaky, others healthy
    scenarios = dict(zip(names, ["healthy", "flaky", "healthy", "healthy"], strict=True))
    assert [tenant.scenario for tenant in plan.demo] == [scenarios[name] for name in here]
    assert b"pydantic" not in pickle.dumps(plan)


def test_a_bad_setting_is_printed_by_the_settings_process_and_nothing_is_sent(
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert app.read_settings("start", ["--demo", "--poll-interval", "-5"]) == (2, None)
    err = capfd.readouterr().err
    assert err.startswith("webex-campaign-exporter: error: WEBEX_CAMPAIGN_POLL_INTERVAL")
    assert app.main(["--demo", "--poll-interval", "-5"]) == 2


def test_help_and_version_are_printed_and_exit_0(capfd: pytest.CaptureFixture[str]) -> None:
    assert app.read_settings("start", ["--version"]) == (0, None)
    assert app.main(["--help"]) == 0
    out = capfd.readouterr().out
    assert out.startswith("webex-campaign-exporter ")
    assert "--config.file" in out


def test_a_reload_gets_this_shards_tenants_with_their_keys_checked(tmp_path: Path) -> None:
    config = tenants_file(tmp_path, "a", "b", "c")
    args = ["--config.file", str(config), "--shard=0", "--total-shards=2"]
    specs = app.reload_tenants(args)
    assert [spec.tenant for spec in specs] == [
        name for name in ("a", "b", "c") if shard_of(name, 2) == 0
    ]
    assert {spec.base_url for spec in specs} <= {f"https://{n}.example" for n in "abc"}
    assert all(spec.key == 0 for spec in specs)  # keys are the Tenancy's to give


def test_a_reload_of_a_bad_file_raises_its_problems(tmp_path: Path) -> None:
    config = tenants_file(tmp_path, "a", "b")
    (tmp_path / "b.key").write_text("")
    with pytest.raises(TenantConfigError) as caught:
        app.reload_tenants(["--config.file", str(config)])
    (problem,) = caught.value.problems
    assert problem.startswith(f"{config}: tenant b: WEBEX_CAMPAIGN_API_KEY_FILE")
    config.write_text("tenants: nonsense\n")
    with pytest.raises(TenantConfigError) as caught:
        app.reload_tenants(["--config.file", str(config)])
    assert all(problem.startswith(str(config)) for problem in caught.value.problems)


def test_a_settings_process_that_sends_nothing_fails_the_reload(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(TenantConfigError) as caught:
        app.reload_tenants(["--no-such-flag"])
    assert caught.value.problems == (
        "the settings process answered nothing (exit code 2): see its message",
    )
    assert "--no-such-flag" in capfd.readouterr().err


def test_a_reload_whose_settings_process_hangs_fails_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key file on a hung mount must not hold the reload (and POST /-/reload) for ever."""
    hang = "import sys, time; time.sleep(60)"
    monkeypatch.setattr(app, "SETTINGS_COMMAND", (sys.executable, "-c", hang))
    started = time.monotonic()
    with pytest.raises(TenantConfigError) as caught:
        app.reload_tenants(["--config.file", "tenants.yaml"], timeout=0.5)
    assert time.monotonic() - started < 10
    assert caught.value.problems == ("reading the settings took longer than 0.5 s",)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """build() configures structlog to write to this test's stderr, which is gone after it."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_the_keys_of_tenants_a_reload_adds_are_redacted_in_this_process(
    tmp_path: Path, restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tenants_file(tmp_path, "a", key="first-tenant-secret-key")
    loaded = load_settings(config_file=config, listen_address=f"127.0.0.1:{free_port()}")
    exporter = app.build(cli.resolve(loaded), lambda: cli.load_shard(loaded))
    try:
        (tmp_path / "b.key").write_text("added-tenant-secret-key")
        config.write_text(
            config.read_text()
            + "  - {name: b, base_url: 'https://b.example', api_key_file: b.key}\n"
        )
        assert exporter.reloader is not None
        assert exporter.reloader.reload("test") is None
        log = structlog.get_logger("test")
        log.error("echoed", detail="first-tenant-secret-key and added-tenant-secret-key")
    finally:
        for server in exporter.servers:
            server.server_close()
    err = capsys.readouterr().err
    assert "secret-key" not in err
    assert "[REDACTED] and [REDACTED]" in err
