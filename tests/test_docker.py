"""The Dockerfile: hadolint, its promises checked line by line, its lock files, and the image
built with podman and run the way the Helm chart runs it.

The base image. Where podman can pull (a user's CI, GitHub Actions), the image is built on the
real base the Dockerfile names. CI machines without a route to a container registry build on a
STAND-IN instead: .ci/standin-base makes one from Debian packages (debootstrap bookworm with
python3, venv, pip, CA certificates, tzdata) and imports it under the Dockerfile's FROM name,
labelled as a stand-in. It proves the Dockerfile builds and the image runs hardened; the Python
patch release and the image size differ from a release built on the official image. pip inside
the build reaches the package registry through this machine's CA folder and system-wide pip
configuration, mounted read-only at the same paths.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from tools import require_tool, unavailable

import exporter
from exporter.settings import DEFAULT_PORT

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
LOCKS = ("requirements.lock", "requirements-build.lock")
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


def base_image() -> str:
    return stages()[0][0][1].split()[0]


def test_multi_stage_on_a_pinned_slim_python_311() -> None:
    builder, runtime = stages()
    bases = {stage[0][1].split()[0] for stage in (builder, runtime)}
    assert len(bases) == 1, "both stages must share one base (the venv links its interpreter)"
    (base,) = bases
    # Fully qualified: podman refuses or prompts on short names where no search registry is set.
    pattern = r"docker\.io/library/python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?"
    assert re.fullmatch(pattern, base), base
    assert builder[0][1].endswith(" AS builder")
    labels = dict(re.findall(r'(\S+)="([^"]*)"', dict(runtime)["LABEL"]))
    assert labels["org.opencontainers.image.base.name"] == base


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


def test_builder_installs_only_what_the_locks_pin() -> None:
    run = " ".join(args for keyword, args in stages()[0] if keyword == "RUN")
    steps = [step.strip() for step in run.split("&&")]
    assert steps == [
        "python -m venv /build",
        "/build/bin/pip install --require-hashes --no-deps -r requirements-build.lock",
        "/build/bin/pip wheel --no-build-isolation --no-deps --wheel-dir /dist .",
        "python -m venv --without-pip /opt/venv",
        "/build/bin/pip --python /opt/venv/bin/python install --require-hashes --no-deps"
        " -r requirements.lock",
        "/build/bin/pip --python /opt/venv/bin/python install --no-deps /dist/*.whl",
        "/build/bin/pip --python /opt/venv/bin/python check",
    ]


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
    for lock in LOCKS:
        assert in_build_context(lock), lock
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


# --- Lock files ------------------------------------------------------------------------------


def parse_lock(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """{name: (version, hashes)} of a `uv pip compile --generate-hashes` file."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pins: dict[str, tuple[str, frozenset[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(
            r"([A-Za-z0-9._-]+)==(\S+?)(?:\s*;[^-]*)?((?:\s+--hash=sha256:[0-9a-f]{64})*)", line
        )
        assert match, f"{path.name}: not a hash-pinned requirement: {line!r}"
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        pins[name] = (
            match.group(2),
            frozenset(re.findall(r"sha256:([0-9a-f]{64})", match.group(3))),
        )
    return pins


@pytest.mark.parametrize("lock", LOCKS)
def test_lock_pins_every_package_with_hashes(lock: str) -> None:
    pins = parse_lock(ROOT / lock)
    assert pins, f"{lock} is empty"
    for name, (_, hashes) in pins.items():
        assert hashes, f"{lock}: {name} has no --hash"


def test_lock_satisfies_pyproject() -> None:
    """Offline: every declared dependency is pinned at a version its specifier allows."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for lock, declared in (
        ("requirements.lock", project["project"]["dependencies"]),
        ("requirements-build.lock", project["build-system"]["requires"]),
    ):
        pins = parse_lock(ROOT / lock)
        for text in declared:
            requirement = Requirement(text)
            name = canonicalize_name(requirement.name)
            assert name in pins, f"{lock} lacks {name}: run .ci/lock"
            version = pins[name][0]
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{lock} pins {name}=={version}, pyproject.toml wants {requirement}: run .ci/lock"
            )


@pytest.mark.timeout(300)
def test_locks_are_what_ci_lock_writes_from_pyproject(tmp_path: Path) -> None:
    """Re-run the lock tool on copies of the committed locks: it keeps every pin that still
    satisfies pyproject.toml, so any difference means pyproject.toml changed and the locks did not.
    Needs PyPI (the resolver reads release metadata and hashes from it)."""
    uv = require_tool("uv")
    for lock in LOCKS:
        shutil.copy(ROOT / lock, tmp_path / lock)
    result = subprocess.run(
        ["bash", str(ROOT / ".ci" / "lock"), str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "UV": uv, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for lock in LOCKS:
        committed, fresh = parse_lock(ROOT / lock), parse_lock(tmp_path / lock)
        versions = {name: pin[0] for name, pin in fresh.items()}
        assert {name: pin[0] for name, pin in committed.items()} == versions, (
            f"{lock} is stale: run .ci/lock and commit it"
        )
        # A release may gain files later (new wheels); a locked hash PyPI no longer lists is broken.
        for name, (_, hashes) in committed.items():
            assert hashes <= fresh[name][1], f"{lock}: {name} has hashes PyPI does not list"


# --- The image, built and run with podman ------------------------------------------------------

IMAGE_TEST_TIMEOUT = 900
# Read-only at the same paths inside the build, so pip reaches the registry as this machine does.
BUILD_MOUNTS = ("/etc/ssl/certs", "/etc/pip.conf", "/etc/xdg/pip")
STANDIN_LABEL = "io.github.webex-campaign-exporter.standin"


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [require_tool("podman"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"podman {' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result


def _report(request: pytest.FixtureRequest, line: str) -> None:
    """A line on the terminal, outside pytest's capture: figures worth seeing in every CI log."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> Iterator[str]:
    """The Dockerfile built with podman; removed afterwards."""
    require_tool("podman")
    base = base_image()
    if podman("image", "exists", base, check=False).returncode != 0:
        unavailable(f"base image {base} is missing: run .ci/standin-base {base}")
    standin = podman(
        "image", "inspect", "--format", f'{{{{index .Labels "{STANDIN_LABEL}"}}}}', base
    )
    standin_key = standin.stdout.strip().replace("<no value>", "")
    tag = f"localhost/webex-campaign-exporter-test:{os.getpid()}-{secrets.token_hex(4)}"
    mounts = [f"--volume={path}:{path}:ro" for path in BUILD_MOUNTS if Path(path).exists()]
    started = time.monotonic()
    podman(
        "build", "--pull=never", "--network=host", *mounts,
        f"--build-arg=REVISION=test-{os.getpid()}", f"--tag={tag}", str(ROOT),
        timeout=IMAGE_TEST_TIMEOUT - 120,
    )  # fmt: skip
    built_in = time.monotonic() - started
    size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout)
    kind = f"stand-in base {standin_key}" if standin_key else "real base"
    _report(request, f"\nimage built in {built_in:.0f} s on {base} ({kind}): {size / 1e6:.0f} MB")
    yield tag
    podman("rmi", "--force", tag, check=False)


def image_config(tag: str) -> dict[str, Any]:
    (inspected,) = json.loads(podman("image", "inspect", tag).stdout)
    config: dict[str, Any] = inspected["Config"]
    return config


def chart_security_context() -> dict[str, Any]:
    values = yaml.safe_load((ROOT / "helm" / "webex-campaign-exporter" / "values.yaml").read_text())
    context: dict[str, Any] = values["securityContext"]
    return context


@pytest.mark.timeout(IMAGE_TEST_TIMEOUT)
def test_image_user_labels_and_contents(image: str) -> None:
    config = image_config(image)
    context = chart_security_context()
    assert config["User"] == f"{context['runAsUser']}:{context['runAsGroup']}"
    assert config["Entrypoint"] == ["webex-campaign-exporter"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == exporter.__version__
    assert labels["org.opencontainers.image.revision"] == f"test-{os.getpid()}"
    # Only the venv came from the builder: no sources, no wheel, no build venv, no installer.
    absent = ("/src", "/dist", "/build", "/opt/venv/bin/pip")
    listing = podman("run", "--rm", "--entrypoint=ls", image, "-d", *absent, check=False)
    assert listing.returncode != 0, listing.stdout
    for path in absent:
        assert f"cannot access '{path}'" in listing.stderr


def _process_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


@pytest.mark.timeout(IMAGE_TEST_TIMEOUT)
def test_image_runs_hardened_like_the_chart(image: str, request: pytest.FixtureRequest) -> None:
    """Read-only root, every capability dropped, no new privileges, the image's own user and
    only a small /tmp writable (the chart's emptyDir): --demo becomes ready, /metrics shows
    webex_campaign_up 1 through a published port, and SIGTERM ends it with 0 within 10 s."""
    context = chart_security_context()
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    name = f"webex-campaign-exporter-test-{os.getpid()}-{secrets.token_hex(4)}"
    port = _free_port()
    podman(
        "run", "--detach", f"--name={name}",
        "--read-only", "--read-only-tmpfs=false", "--tmpfs=/tmp:rw,size=16m,mode=1777",
        "--cap-drop=ALL", "--security-opt=no-new-privileges",
        f"--publish=127.0.0.1:{port}:{DEFAULT_PORT}",
        image, "--demo",
    )  # fmt: skip
    try:
        ready_s, stopped_s = _check_running_container(name, port)
        _report(
            request, f"\ncontainer ready in {ready_s:.1f} s, exit 0 {stopped_s:.1f} s after SIGTERM"
        )
    finally:
        logs = podman("logs", name, check=False)
        podman("rm", "--force", name, check=False)
    assert "Traceback" not in logs.stdout + logs.stderr


def _check_running_container(name: str, port: int) -> tuple[float, float]:
    """Seconds until ready, and from SIGTERM until exit."""
    started = time.monotonic()
    (inspected,) = json.loads(podman("container", "inspect", name).stdout)
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    status = _process_status(int(inspected["State"]["Pid"]))
    assert "0" not in status["Uid"].split(), f"runs as root: Uid {status['Uid']}"
    assert "0" not in status["Gid"].split(), f"runs with group root: Gid {status['Gid']}"
    assert int(status["CapEff"], 16) == 0, f"capabilities left: {status['CapEff']}"
    assert status["NoNewPrivs"] == "1"

    def exited() -> str | None:
        state = json.loads(podman("container", "inspect", name).stdout)[0]["State"]
        if state["Running"]:
            return None
        logs = podman("logs", name, check=False)
        return f"exited with {state['ExitCode']}:\n{logs.stdout}{logs.stderr}"

    deadline = time.monotonic() + 60
    ready = 0
    while time.monotonic() < deadline and ready != 200:
        failure = exited()
        assert failure is None, failure
        ready = _http_status(f"http://127.0.0.1:{port}/-/ready")
        if ready != 200:
            time.sleep(0.3)
    assert ready == 200, f"not ready within 60 s (last status {ready})"
    ready_s = time.monotonic() - started
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert re.search(r'^webex_campaign_up\{tenant="demo"\} 1(\.0)?$', metrics, re.MULTILINE), [
        line for line in metrics.splitlines() if "webex_campaign_up" in line
    ]

    podman("kill", "--signal=TERM", name)
    signalled = time.monotonic()
    try:
        waited = podman("wait", name, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("still running 10 s after SIGTERM")
    stopped_s = time.monotonic() - signalled
    assert stopped_s < 10
    assert waited.stdout.strip() == "0", f"exit code {waited.stdout.strip()} after SIGTERM"
    return ready_s, stopped_s


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0
