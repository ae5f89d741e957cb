"""The command line: its parser, built from the settings' declarations."""

from __future__ import annotations

from exporter.cli import build_parser
from exporter.settings import OPTIONS, default_text


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
