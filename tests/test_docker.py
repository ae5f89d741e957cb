"""The Dockerfile: hadolint, its promises checked line by line, and its install step run for real.

No container engine runs here, so the install step the builder stage performs (build the
wheel from the build context .dockerignore lets through, install it into a fresh venv) is
replayed outside a container, and the installed console script is started in demo mode.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
import yaml
from tools import require_tool

import exporter
from exporter.settings import DEFAULT_PORT

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
# What the builder stage runs; the install test replays exactly these steps.
WHEEL_STEP = "python -m pip wheel --no-deps --wheel-dir /dist ."
VENV_STEP = "python -m venv /opt/venv"
INSTALL_STEP = '/opt/venv/bin/pip install /dist/*.whl "tzdata>=2024.1"'
OCI_LABELS = {
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.source",
}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), " ".join(rest.split())))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, args in instructions():
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, args))
    return found


def test_hadolint_clean() -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_on_a_pinned_slim_python_311() -> None:
    builder, runtime = stages()
    bases = {stage[0][1].split()[0] for stage in (builder, runtime)}
    assert len(bases) == 1, "both stages must share one base (the venv links its interpreter)"
    (base,) = bases
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", base), base
    assert builder[0][1].endswith(" AS builder")


def test_runtime_stage_takes_only_the_venv() -> None:
    runtime = stages()[-1]
    copies = [args for keyword, args in runtime if keyword in ("COPY", "ADD")]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    env = " ".join(args for keyword, args in runtime if keyword == "ENV")
    assert "/opt/venv/bin" in env


def test_runs_as_the_charts_numeric_non_root_user() -> None:
    users = [args for keyword, args in instructions() if keyword == "USER"]
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit()
    assert gid.isdigit()
    assert int(uid) > 0
    values = yaml.safe_load((ROOT / "helm" / "webex-campaign-exporter" / "values.yaml").read_text())
    assert values["securityContext"]["runAsUser"] == int(uid)
    assert values["securityContext"]["runAsGroup"] == int(gid)


def test_entrypoint_port_and_labels() -> None:
    runtime = dict(stages()[-1])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(runtime["ENTRYPOINT"]) == ["webex-campaign-exporter"]
    assert "webex-campaign-exporter" in scripts
    assert runtime["EXPOSE"] == str(DEFAULT_PORT)
    version_args = [args for keyword, args in stages()[-1] if keyword == "ARG"]
    assert f"VERSION={exporter.__version__}" in version_args
    labels = dict(re.findall(r'(\S+)="([^"]*)"', runtime["LABEL"]))
    assert set(labels) >= OCI_LABELS
    assert labels["org.opencontainers.image.version"] == "${VERSION}"


def test_builder_runs_the_replayed_install_step() -> None:
    run = " ".join(args for keyword, args in stages()[0] if keyword == "RUN")
    assert run == f"{WHEEL_STEP} && {VENV_STEP} && {INSTALL_STEP}"


# --- .dockerignore -------------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, str]]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            patterns.append((negated, line.lstrip("!").strip("/")))
    return patterns


def in_build_context(relative: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also matches children."""
    included = True
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for negated, pattern in dockerignore_patterns():
        regex = fnmatch.translate(pattern).replace(".*", "[^/]*")
        if pattern.startswith("**/"):
            regex = "(.*/)?" + fnmatch.translate(pattern[3:]).replace(".*", "[^/]*")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            included = negated
    return included


def build_context(target: Path) -> Path:
    """Copy what `docker build` would send, as .dockerignore allows it."""
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT).as_posix()
        if path.is_file() and in_build_context(relative):
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
    return target


def test_dockerignore_is_an_allowlist() -> None:
    assert in_build_context("pyproject.toml")
    assert in_build_context("README.md")
    assert in_build_context("exporter/cli.py")
    left_out = [
        ".git/config",
        "tests/test_docker.py",
        "helm/webex-campaign-exporter/Chart.yaml",
        "exporter/__pycache__/cli.cpython-311.pyc",
        ".venv/bin/python",
        "dist/x.whl",
    ]
    for path in left_out:
        assert not in_build_context(path), path


# --- The install step, outside a container ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], deadline: float) -> int:
    while time.monotonic() < deadline:
        assert process.poll() is None, "the exporter exited"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                return int(response.status)
        except urllib.error.HTTPError as error:
            if error.code != 503:
                return error.code
        except OSError:
            pass
        time.sleep(0.2)
    return 0


@pytest.mark.timeout(180)
def test_install_step_builds_a_working_venv(tmp_path: Path) -> None:
    context = build_context(tmp_path / "src")
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(a) for a in args],
            cwd=context,
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
        assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
        return result

    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", dist, ".")
    (wheel,) = dist.glob("*.whl")
    assert wheel.name.startswith(f"webex_campaign_exporter-{exporter.__version__}-")
    top_level = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert top_level == {"exporter", f"webex_campaign_exporter-{exporter.__version__}.dist-info"}

    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "pip", "install", wheel, "tzdata>=2024.1")

    script = venv / "bin" / "webex-campaign-exporter"
    assert "--demo" in run(script, "--help").stdout
    assert exporter.__version__ in run(script, "--version").stdout

    # Started as the image starts it, from outside the repository so that only the venv's
    # copy can be imported, and without an OS zone database, as on a minimal base image.
    port = _free_port()
    process = subprocess.Popen(
        [script, "--demo", f"--web.listen-address=127.0.0.1:{port}", "--timezone=Europe/Berlin"],
        cwd=tmp_path,
        env={**env, "PYTHONTZPATH": ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        status = _wait_ready(f"http://127.0.0.1:{port}/-/ready", process, time.monotonic() + 30)
        assert status == 200
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=15)
    assert process.returncode in (0, -15), stderr.decode()
