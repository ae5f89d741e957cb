"""The release path: the workflows (actionlint, and what they promise), .ci/release-meta.py, and
the one value naming the repository (pyproject.toml [project.urls] Source) that every published
address and runbook link must follow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from tools import require_tool

import exporter

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
CHART = ROOT / "helm" / "webex-campaign-exporter"
# Not ours to check: VCS metadata, local environments, caches.
SKIPPED_DIRS = {".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__"}


def source_url() -> str:
    url: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Source"]
    return url


def owner_and_name() -> tuple[str, str]:
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+)", source_url())
    assert match, f"[project.urls] Source is not a GitHub repository URL: {source_url()}"
    return match.group(1), match.group(2)


def workflow(name: str) -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    loaded["on"] = loaded.pop(True, loaded.get("on"))
    return loaded


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = job.get("steps", [])
    return found


def uses(job: dict[str, Any], action: str) -> dict[str, Any]:
    matching = [step for step in steps(job) if step.get("uses", "").startswith(action + "@")]
    assert len(matching) == 1, f"expected one step using {action}"
    return matching[0]


# --- actionlint ------------------------------------------------------------------------------


def test_actionlint_clean() -> None:
    actionlint = require_tool("actionlint")
    result = subprocess.run(
        [actionlint, "-no-color"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- CI workflow -----------------------------------------------------------------------------


def test_ci_runs_ci_run_on_push_and_pull_request() -> None:
    ci = workflow("ci.yaml")
    assert {"push", "pull_request", "workflow_call"} <= set(ci["on"])
    (job,) = ci["jobs"].values()
    assert job["container"]["image"] == "debian:bookworm"  # what .ci/run is written for
    assert "--privileged" in job["container"]["options"]  # podman inside the job's container
    assert job["timeout-minutes"] <= 30
    runs = [step["run"] for step in steps(job) if "run" in step]
    assert runs == ["bash .ci/run"]
    assert ci["permissions"] == {"contents": "read"}


# --- Release workflow ------------------------------------------------------------------------


def release_jobs() -> dict[str, Any]:
    jobs: dict[str, Any] = workflow("release.yaml")["jobs"]
    return jobs


def test_release_runs_on_version_tags_after_ci() -> None:
    release = workflow("release.yaml")
    assert release["on"] == {"push": {"tags": ["v*.*.*"]}}
    assert release["permissions"] == {}
    jobs = release_jobs()
    assert jobs["ci"]["uses"] == "./.github/workflows/ci.yaml"
    assert set(jobs["image"]["needs"]) == {"ci", "meta"}
    assert set(jobs["chart"]["needs"]) >= {"meta", "image"}
    meta_runs = [step.get("run") for step in steps(jobs["meta"])]
    assert "python3 .ci/release-meta.py" in meta_runs


def test_release_image_is_multi_arch_with_sbom_provenance_and_signed() -> None:
    job = release_jobs()["image"]
    assert job["permissions"] == {"contents": "read", "packages": "write", "id-token": "write"}
    build = uses(job, "docker/build-push-action")["with"]
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["push"] is True
    assert build["sbom"] is True
    assert build["provenance"] == "mode=max"
    assert "VERSION=${{ needs.meta.outputs.version }}" in build["build-args"].splitlines()
    tags = uses(job, "docker/metadata-action")["with"]
    assert tags["images"] == "${{ needs.meta.outputs.image }}"
    assert "type=semver,pattern={{version}}" in tags["tags"].splitlines()
    assert uses(job, "docker/login-action")["with"]["registry"] == "ghcr.io"
    uses(job, "sigstore/cosign-installer")
    sign = next(step for step in steps(job) if "cosign sign" in step.get("run", ""))
    assert sign["run"] == 'cosign sign --yes "${IMAGE}@${DIGEST}"'
    assert sign["env"]["DIGEST"] == "${{ steps.build.outputs.digest }}"


def test_release_chart_takes_version_from_the_tag_and_pushes_to_ghcr() -> None:
    job = release_jobs()["chart"]
    assert job["permissions"]["packages"] == "write"
    (script,) = [step for step in steps(job) if "helm push" in step.get("run", "")]
    assert script["env"]["VERSION"] == "${{ needs.meta.outputs.version }}"
    assert script["env"]["CHART_REPOSITORY"] == "${{ needs.meta.outputs.chart_repository }}"
    run = script["run"]
    assert (
        'helm package helm/webex-campaign-exporter --version "$VERSION" --app-version "$VERSION"'
        in run
    )
    assert 'helm push "dist/webex-campaign-exporter-${VERSION}.tgz" "$CHART_REPOSITORY"' in run
    assert "cosign sign --yes" in run


# --- .ci/release-meta.py ---------------------------------------------------------------------


def release_meta(tag: str, repository: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    output = tmp_path / "github_output"
    return subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "release-meta.py")],
        env={**os.environ, "TAG": tag, "REPOSITORY": repository, "GITHUB_OUTPUT": str(output)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_release_meta_derives_image_and_chart_paths(tmp_path: Path) -> None:
    owner, name = owner_and_name()
    # GitHub keeps the owner's case; OCI references must be lower case.
    result = release_meta(f"v{exporter.__version__}", f"{owner.upper()}/{name}", tmp_path)
    assert result.returncode == 0, result.stderr
    expected = [
        f"version={exporter.__version__}",
        f"image=ghcr.io/{owner.lower()}/{name.lower()}",
        f"chart_repository=oci://ghcr.io/{owner.lower()}/charts",
    ]
    assert result.stdout.splitlines() == expected
    assert (tmp_path / "github_output").read_text().splitlines() == expected


@pytest.mark.parametrize(
    ("tag", "repository", "problem"),
    [
        ("0.1.0", None, "is not vMAJOR.MINOR.PATCH"),
        ("v1.2", None, "is not vMAJOR.MINOR.PATCH"),
        ("v999.0.0", None, "bump it first"),
        (None, "someone/fork", "[project.urls] Source"),
    ],
)
def test_release_meta_refuses(
    tag: str | None, repository: str | None, problem: str, tmp_path: Path
) -> None:
    owner, name = owner_and_name()
    result = release_meta(
        tag or f"v{exporter.__version__}", repository or f"{owner}/{name}", tmp_path
    )
    assert result.returncode == 2
    assert problem in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "github_output").exists()


# --- One value names the repository ----------------------------------------------------------


def project_files() -> list[Path]:
    found = []
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT)
        if SKIPPED_DIRS.intersection(relative.parts) or not path.is_file():
            continue
        if path.suffix in {".md", ".yaml", ".yml", ".toml", ".py", ".json", ".txt", ".tpl"} or (
            path.name == "Dockerfile"
        ):
            found.append(path)
    return found


def test_every_address_of_this_project_follows_pyproject_source() -> None:
    """github.com/<owner>/<name> and ghcr.io/<owner>/... anywhere in the repository (runbook
    URLs, the image's source label, the chart's home and default image, the README) must name
    the owner and repository of [project.urls] Source."""
    owner, name = owner_and_name()
    wrong = []
    count = 0
    pattern = re.compile(r"(?:github\.com|ghcr\.io)/([\w.-]+)/(?:charts/)?([\w.-]+)")
    for path in project_files():
        for match in pattern.finditer(path.read_text(errors="replace")):
            found_owner, found_name = match.groups()
            found_name = found_name.removesuffix(".git")
            ours = found_owner.lower() == owner.lower() or found_name.lower() == name.lower()
            if not ours:
                continue  # someone else's project, e.g. prometheus/exporter-toolkit
            count += 1
            if (found_owner.lower(), found_name.lower()) != (owner.lower(), name.lower()):
                wrong.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert not wrong, f"addresses that do not follow {source_url()}: {wrong}"
    assert count >= 10  # the scan found the runbooks, labels and README paths


def test_runbooks_label_and_chart_point_at_the_source() -> None:
    owner, name = owner_and_name()
    for alerts in (ROOT / "prometheus" / "alerts.yaml", CHART / "files" / "alerts.yaml"):
        groups = yaml.safe_load(alerts.read_text())["groups"]
        for rule in (rule for group in groups for rule in group["rules"] if "alert" in rule):
            expected = f"{source_url()}/blob/main/docs/runbooks.md#{rule['alert'].lower()}"
            assert rule["annotations"]["runbook_url"] == expected
    label = re.search(
        r'org\.opencontainers\.image\.source="([^"]+)"', (ROOT / "Dockerfile").read_text()
    )
    assert label
    assert label.group(1) == source_url()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["home"] == source_url()
    assert chart["sources"] == [source_url()]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["repository"] == f"ghcr.io/{owner.lower()}/{name.lower()}"
