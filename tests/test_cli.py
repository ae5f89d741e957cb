"""The command line: flags, errors at start (exit 2), wiring, and a run stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from helpers import free_port

from exporter import __version__, cli, settings
from exporter.cli import build, build_parser, main
from exporter.settings import OPTIONS, Settings, default_text, load_settings
from exporter.tenants import shard_of

# Generous: the run starts a real poller process; the suite must stay green on busy cores.
PATIENCE = 60.0


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """main() configures structlog to write to this test's stderr, which is gone after it."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_every_flag_sets_the_setting_it_names() -> None:
    parser = build_parser()
    flags = {
        action.option_strings[0]: action.dest
        for action in parser._actions
        if action.option_strings and action.dest not in ("help", "version")
    }
    assert set(flags.values()) <= set(Settings.model_fields)
    # and error messages name the same flag (settings.FLAGS) as the parser accepts
    assert {dest: flag for flag, dest in flags.items()} == settings.FLAGS


def test_flags_are_suppressed_unless_given() -> None:
    """Unset flags must not override the environment with None."""
    assert vars(build_parser().parse_args([])) == {}
    given = vars(build_parser().parse_args(["--poll-interval", "7", "--demo"]))
    assert given == {"poll_interval": "7", "demo": True}


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"webex-campaign-exporter {__version__}"


def test_unknown_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--no-such-flag"])
    assert exited.value.code == 2
    assert "--no-such-flag" in capsys.readouterr().err


def test_missing_base_url_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("WEBEX_CAMPAIGN_"):
            monkeypatch.delenv(name)
    assert main([]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("webex-campaign-exporter: error: ")
    assert "WEBEX_CAMPAIGN_BASE_URL (--base-url)" in line


def test_a_listen_address_in_use_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--demo", "--web.listen-address", f"127.0.0.1:{port}"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "WEBEX_CAMPAIGN_LISTEN_ADDRESS (--web.listen-address)" in line
    assert f"127.0.0.1:{port}" in line


def test_a_bad_web_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "web.yml"
    config.write_text("nonsense: 1\n")
    assert main(["--demo", "--web.config.file", str(config)]) == 2
    assert "nonsense" in capsys.readouterr().err


def test_build_wires_the_demo_tenant_without_starting_anything() -> None:
    port = free_port()
    exporter = build(load_settings(demo=True, listen_address=f"127.0.0.1:{port}", timeout=10))
    try:
        assert exporter.simulator is not None
        assert exporter.base_url == exporter.simulator.base_url
        assert [server.server_address[1] for server in exporter.servers] == [port]
        # the demo's slow scenario must outlast the request timeout
        assert exporter.simulator.tenant.slow_seconds > exporter.tenants[0].timeout
        assert exporter.simulator.tenant.too_large_bytes > exporter.tenants[0].max_response_bytes
    finally:
        for server in exporter.servers:
            server.server_close()
        exporter.simulator.stop()


def test_the_serving_process_loads_only_what_it_uses(tmp_path: Path) -> None:
    """The console script's path, start and reload: the settings are read in a process
    of their own, so pydantic and the settings' modules (about 12 MB) stay out of the
    serving process. Only the poller process talks to the API: httpx (and its TLS
    context, 2.5 MB together) stays out too, start-up checks included; the process
    series are read and written without prometheus_client (1.8 MB); PyYAML, bcrypt and
    the web config's modules wait for --web.config.file; ctypes (malloc_trim) and the
    records' decoding (msgspec) are the poller's."""
    (tmp_path / "a.key").write_text("k")
    config = tmp_path / "tenants.yaml"
    config.write_text(
        "tenants:\n  - {name: a, base_url: 'https://a.example', api_key_file: a.key}\n"
    )
    script = (
        "import sys\n"
        "from exporter import app\n"
        f"args = ['--config.file', {str(config)!r}, '--web.listen-address',"
        f" '127.0.0.1:{free_port()}']\n"
        "code, plan = app.read_settings('start', args)\n"
        "exporter = app.build(plan, lambda: app.reload_tenants(args))\n"
        "for series in exporter.servers[0].RequestHandlerClass.scrape_series:\n"
        "    series.render(True)\n"
        "assert exporter.reloader.reload('test') is None\n"
        "watched = ('pydantic', 'exporter.settings', 'exporter.tenants', 'exporter.cli',"
        " 'httpx', 'httpcore', 'prometheus_client', 'yaml', 'bcrypt',"
        " 'exporter.webconfig', 'ctypes', 'msgspec', 'exporter.records')\n"
        "print([spec.tenant for spec in exporter.tenants])\n"
        "print(sorted(name for name in sys.modules if name.startswith(watched)))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WEBEX_CAMPAIGN_")}
    run = subprocess.run(
        [sys.executable, "-c", script],
        env={**clean, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert run.stdout.splitlines() == ["['a']", "[]"], run.stderr


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_demo_run_serves_until_sigterm(
    restore_signals: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """main() as the console script runs it, in this process: ready, serving, then a
    clean stop with exit 0 when SIGTERM arrives."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    seen: dict[str, object] = {}

    def scrape_then_terminate() -> None:
        deadline = time.monotonic() + PATIENCE
        try:
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/-/ready", timeout=PATIENCE).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            seen["metrics"] = httpx.get(f"{url}/metrics", timeout=PATIENCE).text
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=scrape_then_terminate, daemon=True)
    helper.start()
    code = main(["--demo", "--web.listen-address", f"127.0.0.1:{port}", "--timeout", "30"])
    helper.join(PATIENCE)
    assert code == 0
    assert 'webex_campaign_up{tenant="demo"} 1' in str(seen.get("metrics"))
    events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    assert events[0] == "exporter_started"
    assert "exporter_stopping" in events
    assert events[-1] == "exporter_stopped"
    with pytest.raises(httpx.TransportError):  # the port is closed again
        httpx.get(f"{url}/-/healthy", timeout=PATIENCE)


def test_config_error_is_one_line_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--demo", "--timezone", "Mars/Olympus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "WEBEX_CAMPAIGN_TIMEZONE (--timezone)" in err
    assert "Traceback" not in err


def test_each_option_says_its_default() -> None:
    for action in build_parser()._actions:
        if action.dest in OPTIONS:
            assert action.help is not None
            assert action.help.startswith(OPTIONS[action.dest].help.replace("%", "%%"))
            default = default_text(action.dest)
            if default is None:
                assert "(default" not in action.help
            else:
                assert action.help.endswith(f" (default {default})")


def test_help_renders_percent_signs_and_defaults() -> None:
    text = " ".join(build_parser().format_help().split())
    assert "(30% of requests fail at random)" in text
    assert "--poll-interval SECONDS seconds between polls (default 60)" in text
    assert "repeat for several (default :10580)" in text


ROOT = Path(__file__).resolve().parent.parent
US = "https://acme.webexcampaign.io/campaignapi/resources/v3"
TENANTS = f"""\
defaults:
  poll_interval: 30
tenants:
  - name: acme-us
    base_url: {US}
    api_key_file: us.key
  - name: acme-eu
    base_url: https://acme-eu.example/campaignapi/resources/v3
    api_key_env: ACME_EU_API_KEY
"""


@pytest.fixture
def tenants_file(tmp_path: Path) -> Path:
    (tmp_path / "us.key").write_text("us-secret-key\n")
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS)
    return path


def run_exporter(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The exporter as a user runs it, with the code of this checkout."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WEBEX_CAMPAIGN_")}
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_config_check_prints_one_line_per_tenant_and_exits_0(tenants_file: Path) -> None:
    port = free_port()  # a server started here would never exit: the timeout would fail
    result = run_exporter(
        "--config.file",
        str(tenants_file),
        "--config.check",
        "--web.listen-address",
        f"127.0.0.1:{port}",
        ACME_EU_API_KEY="eu-secret-key",
    )
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["acme-us", "acme-eu"]
    assert lines[0].startswith(f"acme-us: ok, {US}, key from file {tenants_file.parent}/us.key")
    assert all(", poll every 30s, shard 0 of 1 (polled here)" in line for line in lines)
    assert "secret-key" not in result.stdout


def test_config_check_prints_one_line_per_problem_and_exits_2(tenants_file: Path) -> None:
    tenants_file.write_text(TENANTS.replace("poll_interval: 30", "poll_interval: 0"))
    (tenants_file.parent / "us.key").write_text("\n")
    result = run_exporter("--config.file", str(tenants_file), "--config.check")
    assert (result.returncode, result.stdout) == (2, "")
    prefix = f"webex-campaign-exporter: error: {tenants_file}: "
    assert result.stderr.splitlines() == [
        f"{prefix}tenant acme-us: poll_interval: Input should be greater than 0 (got 0)",
        f"{prefix}tenant acme-eu: api_key_env: environment variable ACME_EU_API_KEY is not set"
        " or empty",
        f"{prefix}tenant acme-eu: poll_interval: Input should be greater than 0 (got 0)",
    ]


def test_config_check_reads_key_files(tenants_file: Path) -> None:
    (tenants_file.parent / "us.key").write_text("\n")
    result = run_exporter(
        "--config.file", str(tenants_file), "--config.check", ACME_EU_API_KEY="eu-secret-key"
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"webex-campaign-exporter: error: {tenants_file}: tenant acme-us: api_key_file:"
        f" {tenants_file.parent}/us.key is empty or unreadable: it must hold the API secret key"
    ]
    assert "secret-key" not in result.stderr


def test_config_check_neither_polls_nor_serves(
    tenants_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def build(_settings: object) -> None:
        raise AssertionError("--config.check built the exporter")

    monkeypatch.setattr(cli, "build", build)
    monkeypatch.setenv("ACME_EU_API_KEY", "eu-secret-key")
    assert cli.main(["--config.file", str(tenants_file), "--config.check"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_config_check_of_one_tenant_without_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--demo", "--config.check"]) == 0
    assert capsys.readouterr().out == (
        "demo: ok, embedded simulator, demo key, poll every 60s, shard 0 of 1 (polled here)\n"
    )


def test_config_check_shows_who_polls_each_tenant(tenants_file: Path) -> None:
    env = {"ACME_EU_API_KEY": "k"}
    owners = {name: shard_of(name, 3) for name in ("acme-us", "acme-eu")}
    for shard in range(3):
        args = ("--config.check", "--shard", str(shard), "--total-shards", "3")
        result = run_exporter("--config.file", str(tenants_file), *args, **env)
        assert result.returncode == 0
        for line in result.stdout.splitlines():
            name = line.split(":")[0]
            here = owners[name] == shard
            assert line.endswith(
                f"shard {owners[name]} of 3 (polled here)"
                if here
                else f"shard {owners[name]} of 3 (not here: this is shard {shard})"
            )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--base-url", US], "WEBEX_CAMPAIGN_BASE_URL (--base-url)"),
        (["--tenant", "acme"], "WEBEX_CAMPAIGN_TENANT (--tenant)"),
        (["--demo"], "WEBEX_CAMPAIGN_DEMO (--demo)"),
    ],
)
def test_config_file_with_a_single_tenant_setting_exits_2_naming_both(
    args: list[str], named: str, tenants_file: Path
) -> None:
    result = run_exporter("--config.file", str(tenants_file), *args)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        f"webex-campaign-exporter: error: WEBEX_CAMPAIGN_CONFIG_FILE (--config.file) and {named}"
        " do not mix"
    )


def test_config_file_with_api_key_variable_exits_2(tenants_file: Path) -> None:
    result = run_exporter("--config.file", str(tenants_file), WEBEX_CAMPAIGN_API_KEY="sekrit-1")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "WEBEX_CAMPAIGN_CONFIG_FILE (--config.file) and WEBEX_CAMPAIGN_API_KEY do" in line
    assert "sekrit-1" not in line


def test_a_bad_tenants_file_at_start_exits_2_with_its_problems(tenants_file: Path) -> None:
    tenants_file.write_text("tenants: []\n")
    result = run_exporter("--config.file", str(tenants_file))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"webex-campaign-exporter: error: {tenants_file}: tenants: must list at least one"
        " tenant (- name: ...)"
    ]
