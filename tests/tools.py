"""Helpers shared by tests that need an external tool (promtool, prometheus, helm, hadolint)."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str) -> str:
    """Return the path of `name`, or skip the test when it is missing.

    In CI (env CI=true) a missing tool is a broken environment, not a reason to
    skip: the test fails so that a green run always means the tool was exercised.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"required tool {name!r} is not on PATH"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
