"""Several tenants in one exporter, end to end through the console script.

Simulated tenants on loopback: one healthy, one that hangs until the request timeout,
one that fails; a spare one that a reload adds. The exporter runs as users run it, with
--config.file, and is reloaded by POST /-/reload, SIGHUP and a changed file.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from exporter_process import Exporter, running_exporter
from helpers import samples
from tools import require_tool

from exporter import metrics as m
from exporter.simulator import DEMO_KEY, SCENARIOS, Simulator, Tenant
from exporter.tenants import shard_of

PATIENCE = 60.0


@pytest.fixture(scope="module")
def simulators() -> Iterator[dict[str, Simulator]]:
    hanging, failing = Tenant(), Tenant()
    hanging.scenario = SCENARIOS["slow"]
    hanging.slow_seconds = 30.0  # far beyond the 2 s timeout below
    failing.scenario = SCENARIOS["http-500-1001"]
    sims = {
        "acme": Simulator(Tenant(), keys=frozenset({DEMO_KEY})),
        "slowpoke": Simulator(hanging, keys=frozenset({DEMO_KEY})),
        "broken": Simulator(failing, keys=frozenset({DEMO_KEY})),
        "newco": Simulator(Tenant(), keys=frozenset({DEMO_KEY})),
    }
    for sim in sims.values():
        sim.start()
    yield sims
    for sim in sims.values():
        sim.stop()


def write_tenants(path: Path, sims: dict[str, Simulator], names: list[str]) -> None:
    key = path.parent / "demo.key"
    key.write_text(DEMO_KEY)
    tenants: list[dict[str, object]] = [
        {"name": name, "base_url": sims[name].base_url, "api_key_file": "demo.key"}
        for name in names
    ]
    if tenants:
        del tenants[0]["api_key_file"]  # the first one's key from a variable
        tenants[0]["api_key_env"] = "ACME_API_KEY"
    document = {"defaults": {"poll_interval": 0.5, "timeout": 2}, "tenants": tenants}
    path.write_text(yaml.safe_dump(document))


ENV = {"ACME_API_KEY": DEMO_KEY}


def tenants_of(text: str) -> set[str]:
    return {s.labels["tenant"] for s in samples(text) if "tenant" in s.labels}


def value(text: str, name: str, **labels: str) -> float | None:
    for sample in samples(text):
        if sample.name == name and labels.items() <= sample.labels.items():
            return float(sample.value)
    return None


def families_in_order(text: str) -> list[str]:
    """The family of each sample line, in order (histogram series by their family)."""
    names = {series: metric.name for metric in m.ALL for series in metric.series_names}
    found = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            found.append(names.get(line.split("{")[0].split(" ")[0], "other"))
    return found


def test_tenants_are_polled_apart_and_exposed_family_by_family(
    tmp_path: Path, simulators: dict[str, Simulator]
) -> None:
    config = tmp_path / "tenants.yaml"
    write_tenants(config, simulators, ["acme", "slowpoke", "broken"])
    with running_exporter(["--config.file", str(config)], env=ENV) as exporter:
        # Ready: every tenant's first poll done, the hanging one's by its timeout.
        text = exporter.get("/metrics").text
        assert tenants_of(text) == {"acme", "slowpoke", "broken"}
        assert value(text, m.UP.name, tenant="acme") == 1
        assert value(text, m.UP.name, tenant="slowpoke") == 0
        assert value(text, m.UP.name, tenant="broken") == 0
        assert (value(text, m.API_FAILURES.name, tenant="broken", code="1001") or 0) >= 1
        acme = simulators["acme"].tenant.records()
        assert len({s.labels["id"] for s in samples(text) if s.name == m.STATE.name}) == len(
            {str(r["id"]) for r in acme}
        )
        # The healthy tenant polls every half second while the other one hangs for 2 s.
        before = value(text, m.API_REQUESTS.name, tenant="acme") or 0
        time.sleep(3)
        text = exporter.get("/metrics").text
        assert (value(text, m.API_REQUESTS.name, tenant="acme") or 0) - before >= 3
        assert value(text, m.API_FAILURES.name, tenant="slowpoke", code="timeout")
        # Each family once, its samples together, in both formats.
        helps = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP")]
        assert len(helps) == len(set(helps))
        order = families_in_order(text)
        runs = [family for i, family in enumerate(order) if i == 0 or order[i - 1] != family]
        assert len(runs) == len(set(runs)), "a family's samples are split"
        openmetrics = exporter.get(
            "/metrics", headers={"Accept": "application/openmetrics-text"}
        ).text
        assert tenants_of_openmetrics(openmetrics) == {"acme", "slowpoke", "broken"}
        result = subprocess.run(
            [require_tool("promtool"), "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        # The landing page: one row per tenant; reload is off without the lifecycle flag.
        page = exporter.get("/").text
        for name in ("acme", "slowpoke", "broken"):
            assert f"<td>{name}</td>" in page
        assert DEMO_KEY not in page + text
        assert httpx.post(f"{exporter.url}/-/reload", timeout=10).status_code == 403
        # No config metric claims a reload happened, and the first load counts.
        assert value(text, m.CONFIG_RELOAD_SUCCESSFUL.name) == 1


def tenants_of_openmetrics(text: str) -> set[str]:
    return {s.labels["tenant"] for s in samples(text, True) if "tenant" in s.labels}


def events(log: Path, name: str) -> list[dict[str, object]]:
    found = []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == name:
            found.append(entry)
    return found


def wait_until(exporter: Exporter, check: object, what: str) -> None:
    exporter.wait_for(check, what, timeout=PATIENCE)  # type: ignore[arg-type]


def test_reload_adds_removes_keeps_state_and_refuses_a_bad_file(
    tmp_path: Path, simulators: dict[str, Simulator]
) -> None:
    config = tmp_path / "tenants.yaml"
    write_tenants(config, simulators, ["acme", "broken"])
    log = tmp_path / "exporter.log"
    args = ["--config.file", str(config), "--web.enable-lifecycle", "--log.level", "info"]
    with log.open("wb") as stderr, running_exporter(args, env=ENV, stderr=stderr) as exporter:
        text = exporter.get("/metrics").text
        loaded_at = value(text, m.CONFIG_RELOAD_SUCCESS_TIME.name)
        since = {
            s.labels["id"]: s.value
            for s in samples(text)
            if s.name == m.STATE_SINCE.name and s.labels["tenant"] == "acme"
        }
        requests = value(text, m.API_REQUESTS.name, tenant="acme") or 0

        # A good file by POST: broken goes at once, newco comes, acme keeps its state.
        write_tenants(config, simulators, ["acme", "newco"])
        answer = httpx.post(f"{exporter.url}/-/reload", timeout=30)
        assert (answer.status_code, answer.text) == (200, "Reloaded\n")
        text = exporter.get("/metrics").text
        assert "broken" not in tenants_of(text)
        assert (value(text, m.API_REQUESTS.name, tenant="acme") or 0) >= requests
        kept = {
            s.labels["id"]: s.value
            for s in samples(text)
            if s.name == m.STATE_SINCE.name and s.labels["tenant"] == "acme"
        }
        assert kept == since
        assert value(text, m.CONFIG_RELOAD_SUCCESSFUL.name) == 1
        assert (value(text, m.CONFIG_RELOAD_SUCCESS_TIME.name) or 0) >= (loaded_at or 0)
        wait_until(
            exporter,
            lambda: value(exporter.get("/metrics").text, m.UP.name, tenant="newco") == 1,
            "the added tenant polled",
        )
        assert exporter.get("/-/ready").status_code == 200

        # A bad file changes nothing, is refused with its problems, and logged once.
        config.write_text(config.read_text().replace("api_key_file", "api_key"))
        answer = httpx.post(f"{exporter.url}/-/reload", timeout=30)
        assert answer.status_code == 500
        assert "api_key: secrets are never inline" in answer.text
        assert DEMO_KEY not in answer.text
        text = exporter.get("/metrics").text
        assert value(text, m.CONFIG_RELOAD_SUCCESSFUL.name) == 0
        assert tenants_of(text) == {"acme", "newco"}
        time.sleep(6)  # past the file watch's look at the same bad file
        assert len(events(log, "config_reload_failed")) == 1

        # The file watch picks up a fixed file by itself; SIGHUP reloads too.
        write_tenants(config, simulators, ["acme"])
        wait_until(
            exporter,
            lambda: tenants_of(exporter.get("/metrics").text) == {"acme"},
            "the changed file loaded by itself",
        )
        assert value(exporter.get("/metrics").text, m.CONFIG_RELOAD_SUCCESSFUL.name) == 1
        write_tenants(config, simulators, ["acme", "newco"])
        exporter.process.send_signal(signal.SIGHUP)
        wait_until(
            exporter,
            lambda: any(e["cause"] == "SIGHUP" for e in events(log, "config_reloaded")),
            "a reload on SIGHUP",
        )
        wait_until(
            exporter,
            lambda: tenants_of(exporter.get("/metrics").text) == {"acme", "newco"},
            "newco back",
        )
    reloads = events(log, "config_reloaded")
    assert {"POST /-/reload", "file_changed", "SIGHUP"} <= {str(e["cause"]) for e in reloads}
    assert DEMO_KEY not in log.read_text()


def test_two_shards_poll_every_tenant_exactly_once(
    tmp_path: Path, simulators: dict[str, Simulator]
) -> None:
    names = [f"tenant-{n}" for n in range(8)]
    sims = {name: simulators["acme"] for name in names}
    config = tmp_path / "tenants.yaml"
    write_tenants(config, sims, names)
    served: dict[int, set[str]] = {}
    for shard in (0, 1):
        args = ["--config.file", str(config), "--total-shards", "2", "--shard", str(shard)]
        with running_exporter(args, env={"ACME_API_KEY": DEMO_KEY}) as exporter:
            served[shard] = tenants_of(exporter.get("/metrics").text)
    assert served[0] | served[1] == set(names)
    assert not served[0] & served[1]
    assert served[0] and served[1]  # 8 names: both shards hold some
    for shard, tenants in served.items():
        assert all(shard_of(name, 2) == shard for name in tenants)
