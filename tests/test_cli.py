"""The command line: flags, errors at start (exit 2), wiring, and a run stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from helpers import free_port

from exporter import __version__, settings
from exporter.cli import build, build_parser, main
from exporter.settings import OPTIONS, Settings, default_text, load_settings

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
        assert exporter.simulator.tenant.slow_seconds > exporter.settings.timeout
        assert exporter.simulator.tenant.too_large_bytes > exporter.settings.max_response_bytes
    finally:
        for server in exporter.servers:
            server.server_close()
        exporter.simulator.stop()


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
