"""End to end: the installed console script polls the simulator over loopback, as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from helpers import by_id, free_port, samples, series
from tools import exporter_script, require_tool

from benchmarks.soak import child_pids
from exporter import metrics as m
from exporter.simulator import (
    SCENARIOS,
    SEED_RECORDS,
    Simulator,
    Tenant,
    format_date,
    make_record,
)

KEY = "e2e-secret-key-0123456789"
SCRIPT = exporter_script()
# Ceilings for event-driven waits, not expectations: each wait ends as soon as its
# condition holds; the ceiling only turns a hang into a failure. Generous, so that the
# suite stays green when other processes keep every core busy.
PATIENCE = 60.0


@dataclass
class Running:
    process: subprocess.Popen[str]
    url: str
    simulator: Simulator

    def scrape(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=PATIENCE).text

    def wait_for(self, predicate, timeout: float = PATIENCE) -> str:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            text = self.scrape()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                pytest.fail(f"condition not met within {timeout} s; last scrape:\n{text[-2000:]}")
            time.sleep(0.1)


def wait_ready(url: str, process: subprocess.Popen[str], timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exporter exited with {process.returncode}: {process.stderr.read()}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{url}/-/ready", timeout=PATIENCE).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail("exporter never became ready")


def start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [SCRIPT, "--web.listen-address", f"127.0.0.1:{port}", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process)
    return process, url


@pytest.fixture
def running() -> Iterator[Running]:
    simulator = Simulator(Tenant(), keys=frozenset({KEY})).start()
    process, url = start(
        ["--base-url", simulator.base_url, "--poll-interval", "0.5", "--tenant", "e2e"],
        {"WEBEX_CAMPAIGN_API_KEY": KEY},
    )
    yield Running(process, url, simulator)
    if process.poll() is None:
        process.kill()
        process.wait()
    simulator.stop()


def test_scrape_shows_the_tenant_exactly(running: Running) -> None:
    text = running.scrape()
    for seed in SEED_RECORDS:
        labels = {"tenant": "e2e", "id": seed["id"], "name": seed["name"], "behaviour": "S"}
        key = frozenset(labels.items())
        assert series(text, m.TOTAL_RECORDS.name)[key] == seed["totalCount"]
        assert series(text, m.VALID_RECORDS.name)[key] == seed["validcount"]
        assert series(text, m.ERROR_RECORDS.name)[key] == seed["errorcount"]
        assert series(text, m.STATE.name)[key] == 1
        info_key = key | {
            ("status", "Ready"),
            ("user_group", "marketing"),
            ("load_type", str(seed["loadType"])),
            ("source", "6"),
            ("target_group_type", str(seed["targetGroupType"])),
            ("channels", "A"),
        }
        assert series(text, m.INFO.name)[info_key] == 1
    assert (
        series(text, m.CREATED.name)[
            frozenset(
                {
                    "tenant": "e2e",
                    "id": "16710111730000",
                    "name": "sks_aap_campaign_14Dec_20221214094613",
                    "behaviour": "S",
                }.items()
            )
        ]
        == 1671030960
    )
    records = running.simulator.tenant.records()
    counts = {dict(k)["state"]: v for k, v in series(text, m.GROUPS.name).items()}
    assert counts == {
        "in_progress": sum(r["targetState"] == 0 for r in records),
        "ready": sum(r["targetState"] == 1 for r in records),
        "unknown": 0,
    }
    assert series(text, m.UP.name) == {frozenset({("tenant", "e2e")}): 1}


def test_deleted_group_is_gone_after_the_next_poll(running: Running) -> None:
    victim = "16705874370001"
    assert f'id="{victim}"' in running.scrape()
    running.simulator.tenant.delete(victim)
    text = running.wait_for(lambda t: f'id="{victim}"' not in t)
    assert not [s for s in samples(text) if s.labels.get("id") == victim]
    assert 'id="16710111730000"' in text


def test_promtool_check_metrics_passes_on_a_real_scrape(running: Running) -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=running.scrape(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""  # no lint findings either


def test_sigterm_exits_zero_and_logs_never_hold_the_key(running: Running) -> None:
    running.process.send_signal(signal.SIGTERM)
    stdout, stderr = running.process.communicate(timeout=PATIENCE)
    assert running.process.returncode == 0
    assert KEY not in stdout + stderr
    events = [line for line in stderr.splitlines() if line.startswith("{")]
    assert any('"event": "exporter_started"' in line for line in events)
    assert any('"event": "exporter_stopped"' in line for line in events)


def test_demo_mode_runs_without_credentials() -> None:
    process, url = start(["--demo", "--poll-interval", "1"], {})
    try:
        text = httpx.get(f"{url}/metrics", timeout=PATIENCE).text
        assert 'webex_campaign_up{tenant="demo"} 1' in text
        assert 'name="demo_stuck_import"' in text
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=PATIENCE) == 0


def test_python_dash_m_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("webex-campaign-exporter ")


def test_web_config_protects_every_endpoint(tmp_path: Path) -> None:
    import bcrypt

    hashed = bcrypt.hashpw(b"scrape-pass", bcrypt.gensalt(4)).decode()
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  prometheus: {hashed}\n")
    port = free_port()
    process = subprocess.Popen(
        [
            SCRIPT,
            "--demo",
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--web.config.file",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                response = httpx.get(
                    f"{url}/-/ready", auth=("prometheus", "scrape-pass"), timeout=PATIENCE
                )
                if response.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.05)
        assert httpx.get(f"{url}/metrics", timeout=PATIENCE).status_code == 401
        wrong = httpx.get(f"{url}/metrics", auth=("prometheus", "wrong"), timeout=PATIENCE)
        assert wrong.status_code == 401
        good = httpx.get(f"{url}/metrics", auth=("prometheus", "scrape-pass"), timeout=PATIENCE)
        assert good.status_code == 200
        assert "webex_campaign_up" in good.text
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=PATIENCE)
    assert "scrape-pass" not in stderr


def test_bad_web_config_exits_2_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "web.yml"
    config.write_text("tls_server_config:\n  cert_fiel: x\n")
    result = subprocess.run(
        [SCRIPT, "--demo", "--web.config.file", str(config)],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(config) in lines[0] and "cert_fiel" in lines[0]


def test_sigterm_ends_an_in_flight_poll_without_waiting_for_it() -> None:
    """The poll in flight would take 10 minutes (the API answers after 600 s, the
    timeout is 900 s): SIGTERM must not wait for it. The bound only has to tell "at once"
    from "after the poll", so it is far above a normal stop (well under a second)."""
    with Simulator(Tenant(), keys=frozenset({KEY})) as simulator:
        process, _ = start(
            ["--base-url", simulator.base_url, "--poll-interval", "0.2", "--timeout", "900"],
            {"WEBEX_CAMPAIGN_API_KEY": KEY},
        )
        tenant = simulator.tenant
        tenant.slow_seconds = 600
        tenant.scenario = SCENARIOS["slow"]
        seen = tenant.requests
        deadline = time.monotonic() + PATIENCE
        while tenant.requests == seen:  # the next poll is now waiting on the API
            assert time.monotonic() < deadline
            time.sleep(0.02)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=PATIENCE) == 0
        assert time.monotonic() - started < PATIENCE
        tenant.scenario = None


def test_poller_process_death_is_survived(running: Running) -> None:
    pid = running.process.pid
    children = child_pids(pid)
    assert len(children) == 1, "the poller runs in one child process"
    os.kill(children[0], signal.SIGKILL)
    text = running.wait_for(lambda t: 'webex_campaign_up{tenant="e2e"} 0' in t)
    assert 'id="16710111730000"' in text  # the last values are still served
    running.wait_for(lambda t: 'webex_campaign_up{tenant="e2e"} 1' in t)
    after = child_pids(pid)
    assert len(after) == 1 and after != children
    running.process.terminate()
    _, stderr = running.process.communicate(timeout=PATIENCE)
    assert '"event": "poller_died"' in stderr


def _lifecycle(text: str, behaviour: str) -> tuple[float, float, float, float]:
    """in_progress->ready transitions, then the import-duration count and sum, and every
    other transition summed (for `behaviour`)."""
    transitions = {
        (dict(k)["from"], dict(k)["to"]): v
        for k, v in series(text, m.TRANSITIONS.name).items()
        if dict(k)["behaviour"] == behaviour
    }
    key = frozenset({("tenant", "e2e"), ("behaviour", behaviour)})
    name = m.IMPORT_DURATION.name
    finished = transitions.pop(("in_progress", "ready"))
    return (
        finished,
        series(text, name + "_count")[key],
        series(text, name + "_sum")[key],
        sum(transitions.values()),
    )


def _requests(text: str) -> float:
    return series(text, m.API_REQUESTS.name)[frozenset({("tenant", "e2e")})]


def _after_two_more_polls(running: Running) -> str:
    polled = _requests(running.scrape())
    return running.wait_for(lambda t: _requests(t) >= polled + 2)


def test_an_import_that_finishes_counts_once_and_is_timed(running: Running) -> None:
    tenant = running.simulator.tenant
    # Several polls of groups in progress and ready: no transition is counted.
    text = _after_two_more_polls(running)
    assert any(r["targetState"] == 0 for r in tenant.records())
    for behaviour in ("S", "D"):
        assert _lifecycle(text, behaviour) == (0, 0, 0, 0)
    # A group that appears already ready counts nothing either.
    now = format_date(datetime.now(UTC), ZoneInfo("UTC"))
    appears_ready = make_record(
        "e2e-appears-ready", "appears_ready", total=5, valid=5, errors=0, ready=True,
        created=now, updated=now, behaviour="D",
    )  # fmt: skip
    tenant.put(appears_ready)
    running.wait_for(lambda t: 'id="e2e-appears-ready"' in t)
    assert _lifecycle(_after_two_more_polls(running), "D") == (0, 0, 0, 0)
    # A group that appears in progress, then turns ready.
    importing = make_record(
        "e2e-import", "importing", total=0, valid=0, errors=0, ready=False,
        created=now, updated=now, behaviour="D",
    )  # fmt: skip
    tenant.put(importing)
    text = running.wait_for(lambda t: 'id="e2e-import"' in t)
    since = by_id(text, m.STATE_SINCE.name)["e2e-import"]
    text = _after_two_more_polls(running)
    assert _lifecycle(text, "D") == (0, 0, 0, 0)
    turned_ready = time.time()
    tenant.put({**importing, "targetState": 1, "statusValue": "Ready", "totalCount": 9.0})
    text = running.wait_for(lambda t: _lifecycle(t, "D")[0] >= 1)
    seen_ready = time.time()
    finished, count, total, others = _lifecycle(text, "D")
    assert (finished, count, others) == (1, 1, 0)
    # Timed from its state-since to the poll that saw it ready, which came between.
    assert turned_ready - since - 0.5 <= total <= seen_ready - since + 0.5
    assert by_id(text, m.STATE_SINCE.name)["e2e-import"] >= turned_ready - 0.5
    # Later polls do not count it again.
    assert _lifecycle(_after_two_more_polls(running), "D") == (1, 1, total, 0)
    assert _lifecycle(text, "S") == (0, 0, 0, 0)
