"""The configuration errors, in a module of their own: the serving process and the poller
process raise and catch them without loading the settings (nor pydantic)."""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(Exception):
    """A bad or missing setting; the message names the setting and the fix."""


class TenantConfigError(Exception):
    """The tenants file is wrong: one line per problem, each naming file, tenant and key."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))
