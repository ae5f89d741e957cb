#!/usr/bin/env python3
"""What a release publishes, derived from the tag and checked against the repository.

    TAG=v0.2.0 REPOSITORY=owner/name python3 .ci/release-meta.py

Prints (and appends to $GITHUB_OUTPUT when set) version, image and chart_repository:

    version=0.2.0
    image=ghcr.io/owner/name
    chart_repository=oci://ghcr.io/owner/charts

Refuses (exit 2, one line naming the problem) a tag that is not vMAJOR.MINOR.PATCH[-pre], a
version that differs from exporter/__init__.py's __version__ (the exporter reports that one in
webex_campaign_exporter_build_info), and a repository other than the one pyproject.toml's
[project.urls] Source names: that URL is the one place naming the organisation, and the
runbook URLs, the image's source label and the chart's default image are checked against it.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEMVER = re.compile(r"v(?P<version>(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?)")


def source_url() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    url: str = project["urls"]["Source"]
    return url


def package_version() -> str:
    match = re.search(
        r'^__version__ = "([^"]+)"', (ROOT / "exporter/__init__.py").read_text(), re.M
    )
    if not match:
        raise SystemExit("release-meta.py: no __version__ in exporter/__init__.py")
    return match.group(1)


def main() -> int:
    tag, repository = os.environ.get("TAG", ""), os.environ.get("REPOSITORY", "")
    match = SEMVER.fullmatch(tag)
    if not match:
        print(
            f"release-meta.py: tag {tag!r} is not vMAJOR.MINOR.PATCH[-prerelease]", file=sys.stderr
        )
        return 2
    version = match.group("version")
    if version != package_version():
        print(
            f"release-meta.py: tag {tag} but exporter/__init__.py has __version__ = "
            f"{package_version()!r}; bump it first",
            file=sys.stderr,
        )
        return 2
    source = source_url()
    if source.lower() != f"https://github.com/{repository}".lower():
        print(
            f"release-meta.py: running in {repository!r} but pyproject.toml [project.urls] Source "
            f"is {source}; change that one value (then the checks list what follows it)",
            file=sys.stderr,
        )
        return 2
    owner_and_name = repository.lower()  # OCI repository names are lower case
    owner = owner_and_name.split("/")[0]
    lines = [
        f"version={version}",
        f"image=ghcr.io/{owner_and_name}",
        f"chart_repository=oci://ghcr.io/{owner}/charts",
    ]
    print("\n".join(lines))
    if output := os.environ.get("GITHUB_OUTPUT"):
        with open(output, "a", encoding="utf-8") as file:
            file.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
