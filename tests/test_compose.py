"""compose.yaml: every file it references exists, and ports and paths agree.

No container runtime is needed: the stack is checked as configuration, against the
exporter's defaults and the files in the repository.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from tools import require_tool

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
CANONICAL_RULES = ROOT / "prometheus" / "alerts.yaml"
DASHBOARD = ROOT / "grafana" / "dashboards" / "webex-campaign-exporter.json"


def _default_port() -> int:
    try:
        from exporter.settings import DEFAULT_PORT
    except ImportError as error:  # the core defines it; say so rather than guess a port
        pytest.fail(f"exporter.settings.DEFAULT_PORT is needed to check the ports: {error}")
    return DEFAULT_PORT


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(COMPOSE.read_text())
    result: dict[str, dict[str, Any]] = doc["services"]
    return result


def _mounts(service: dict[str, Any]) -> dict[PurePosixPath, Path]:
    """Container path -> host path of the service's bind mounts."""
    mounts: dict[PurePosixPath, Path] = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith((".", "/")):
            mounts[PurePosixPath(target)] = (ROOT / source).resolve()
    return mounts


def _host_path(service: dict[str, Any], container_path: str) -> Path:
    """Where a path inside the container comes from on the host, through a bind mount."""
    path = PurePosixPath(container_path)
    for target, source in _mounts(service).items():
        if path == target or target in path.parents:
            return source / path.relative_to(target)
    raise AssertionError(f"{container_path} is not bind-mounted into the container")


def _container_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in service.get("ports", [])}


def _flag(service: dict[str, Any], name: str) -> str:
    command = service["command"]
    for index, arg in enumerate(command):
        if arg.startswith(f"{name}="):
            return str(arg.split("=", 1)[1])
        if arg == name:
            return str(command[index + 1])
    raise AssertionError(f"{name} not in command {command}")


def test_stack_has_exporter_prometheus_and_grafana(services: dict[str, Any]) -> None:
    assert {"exporter", "prometheus", "grafana"} <= set(services)


def test_every_bind_mounted_file_exists(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target, source in _mounts(service).items():
            assert source.exists(), f"{name}: {source} (for {target}) does not exist"
            assert ROOT in source.parents, f"{name}: {source} is outside the repository"


def test_exporter_runs_the_demo_on_the_default_port(services: dict[str, Any]) -> None:
    exporter = services["exporter"]
    assert "--demo" in exporter["command"]
    assert "--web.listen-address" not in exporter["command"], "use the default port"
    assert _container_ports(exporter) == {_default_port()}


def test_exporter_image_is_built_from_the_dockerfile(services: dict[str, Any]) -> None:
    exporter = services["exporter"]
    assert exporter["image"] == "webex-campaign-exporter"
    dockerfile = ROOT / exporter["build"] / "Dockerfile"
    assert dockerfile.is_file(), f"compose builds from {dockerfile}, which is missing"
    # The command passes flags only, so the image's entrypoint must be the exporter.
    entrypoint = re.search(r"^ENTRYPOINT\s+(.+)$", dockerfile.read_text(), re.MULTILINE)
    assert entrypoint, "the Dockerfile needs an ENTRYPOINT that runs the exporter"
    assert re.search(r"webex-campaign-exporter|\"-m\",\s*\"exporter\"", entrypoint.group(1))


def test_prometheus_loads_the_canonical_rules_and_scrapes_the_exporter(
    services: dict[str, Any],
) -> None:
    prometheus = services["prometheus"]
    config_path = _host_path(prometheus, _flag(prometheus, "--config.file"))
    config = yaml.safe_load(config_path.read_text())
    rule_mounts = [
        source
        for target, source in _mounts(prometheus).items()
        if any(fnmatch.fnmatch(str(target), pattern) for pattern in config["rule_files"])
    ]
    assert rule_mounts == [CANONICAL_RULES]
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    ]
    assert targets == [f"exporter:{_default_port()}"]
    assert "job=" not in CANONICAL_RULES.read_text(), "rules must not depend on the job name"


def test_prometheus_config_is_valid() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "config", str(ROOT / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _provisioning(grafana: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    directory = _host_path(grafana, f"/etc/grafana/provisioning/{kind}")
    files = sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
    assert files, f"no {kind} provisioning files in {directory}"
    return [yaml.safe_load(f.read_text()) for f in files]


def test_grafana_datasource_points_at_the_prometheus_service(services: dict[str, Any]) -> None:
    (doc,) = _provisioning(services["grafana"], "datasources")
    (datasource,) = doc["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["isDefault"] is True, "the dashboard's datasource variable picks it"
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus"
    assert url.port in _container_ports(services["prometheus"])
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    assert datasource["jsonData"]["timeInterval"] == config["global"]["scrape_interval"]


def test_grafana_provisions_the_dashboard(services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    (doc,) = _provisioning(grafana, "dashboards")
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    folder = _host_path(grafana, provider["options"]["path"])
    assert DASHBOARD.resolve() in {p.resolve() for p in folder.glob("*.json")}
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _host_path(grafana, home) == DASHBOARD.resolve()
