"""The README and the pages under docs/ agree with the code, the alert rules and each other."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import metrics as m
from exporter import simulator
from exporter.cli import build_parser
from exporter.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
RUNBOOKS = DOCS / "runbooks.md"
RULE_FILES = [
    ROOT / "prometheus" / "alerts.yaml",
    ROOT / "helm" / "webex-campaign-exporter" / "files" / "alerts.yaml",
]
README_MAX_LINES = 250


# --- reading markdown -------------------------------------------------------------------


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: its text as rendered (code spans, emphasis and links
    reduced to their text), lower-cased, without punctuation but `-` and `_`, spaces as `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a page; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(page.read_text()):
        match = re.match(r"#{1,6} (.+)", line)
        if not match:
            continue
        anchor = github_anchor(match.group(1))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    """Targets of the page's markdown links that point into this repository."""
    targets = []
    for line in prose_lines(page.read_text()):
        line = re.sub(r"`[^`]*`", "", line)  # link syntax inside a code span is not a link
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):
                targets.append(target)
    return targets


def table_rows(page: Path, first_header: str) -> list[list[str]]:
    """Rows of the markdown table whose header starts with `first_header`."""
    lines = page.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def link_text(cell: str) -> str:
    """`[name](#anchor)` -> `name`; anything else as is."""
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", cell)


# --- the README is the front door -------------------------------------------------------


def test_readme_is_a_front_door() -> None:
    assert len(README.read_text().splitlines()) <= README_MAX_LINES


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"```sh\n(.*?)\n```", README.read_text(), re.S)
    test_command = next(c for c in commands if "pytest" in c)
    demo_command = next(c for c in commands if "--demo" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text()
    assert test_command in (DOCS / "development.md").read_text()
    assert demo_command.endswith("webex-campaign-exporter --demo")


def test_readme_links_every_docs_page() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in relative_links(README)}
    unlinked = [page.name for page in PAGES[1:] if page.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


# --- links and anchors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Protecting /metrics", "protecting-metrics"),
        ("How it behaves when the API misbehaves", "how-it-behaves-when-the-api-misbehaves"),
        ("WebexCampaignApiDown", "webexcampaignapidown"),
        ("`--demo` and `--demo.scenario`", "--demo-and---demoscenario"),
        ("Logs, metrics & [runbooks](x.md)", "logs-metrics--runbooks"),
        ("snake_case **bold**", "snake_case-bold"),
    ],
)
def test_github_anchor_rules(heading: str, anchor: str) -> None:
    assert github_anchor(heading) == anchor


def test_repeated_headings_are_numbered(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Check\n\n```sh\n# not a heading\n```\n\n## Check\n")
    assert anchors(page) == {"title", "check", "check-1"}


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_docs_pages_have_links() -> None:
    # The link check above must see links on every page, or it proves nothing.
    assert all(relative_links(page) for page in PAGES)


# --- configuration and metrics tables against the code ----------------------------------


def test_configuration_table_covers_every_setting_and_flag() -> None:
    rows = table_rows(DOCS / "configuration.md", "env")
    envs = {row[0].strip("`") for row in rows if row[0] != "—"}
    assert envs == {ENV_PREFIX + name.upper() for name in Settings.model_fields if name != "demo"}
    flags = {row[1].strip("`") for row in rows if row[1] != "—"}
    parser_flags = {
        option
        for action in build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option not in ("--help", "--version")
    }
    assert flags == parser_flags


def _labels(cell: str) -> tuple[str, ...]:
    """`tenant, status` -> the labels; `—` -> none (a process-wide series)."""
    return () if cell == "—" else tuple(label.strip() for label in cell.split(","))


def test_metrics_table_is_the_contract() -> None:
    rows = table_rows(DOCS / "metrics.md", "metric")
    documented = {row[0].strip("`"): (row[1], _labels(row[2])) for row in rows}
    declared = (*m.ALL, *m.PROCESS)
    assert documented == {metric.name: (metric.type, metric.labels) for metric in declared}


def test_every_environment_variable_named_is_a_setting() -> None:
    settings = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    for page in PAGES:
        named = set(re.findall(rf"\b{ENV_PREFIX}[A-Z][A-Z_]*[A-Z]\b", page.read_text()))
        assert named <= settings, f"{page.relative_to(ROOT)}: not settings: {named - settings}"


def test_fault_scenarios_table_matches_the_simulator() -> None:
    documented: dict[str, str] = {}
    for names, _, counted in table_rows(DOCS / "security.md", "scenario"):
        scenarios = re.findall(r"`([\w-]+)`", names)
        pairs = re.findall(r"`(\w+/\w+)`", counted)
        for index, scenario in enumerate(scenarios):
            documented[scenario] = pairs[index if len(pairs) > 1 else 0] if pairs else ""
    assert set(documented) == set(simulator.SCENARIOS)
    for name, scenario in simulator.SCENARIOS.items():
        assert documented[name] == ("/".join(scenario.expected) if scenario.expected else ""), name


# --- runbooks against the alert rules ---------------------------------------------------


def _alerts(rules: Path) -> list[dict[str, Any]]:
    groups = yaml.safe_load(rules.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


ALERTS = _alerts(RULE_FILES[0])


def test_runbooks_page_has_one_runbook_per_alert() -> None:
    runbooks = [
        line.removeprefix("## ")
        for line in prose_lines(RUNBOOKS.read_text())
        if line.startswith("## ")
    ]
    assert sorted(runbooks) == sorted(rule["alert"] for rule in ALERTS)


def test_runbooks_alerts_table_matches_the_rules() -> None:
    documented = {link_text(row[0]): (row[2], row[3]) for row in table_rows(RUNBOOKS, "alert")}
    assert documented == {a["alert"]: (a["for"], a["labels"]["severity"]) for a in ALERTS}


@pytest.mark.parametrize("rules", RULE_FILES, ids=[str(p.relative_to(ROOT)) for p in RULE_FILES])
def test_every_runbook_url_points_at_its_runbook_heading(rules: Path) -> None:
    source = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Source"]
    for rule in _alerts(rules):
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.removeprefix(f"{source}/blob/main/").partition("#")
        assert (ROOT / path) == RUNBOOKS, url
        assert anchor == rule["alert"].lower(), url
        assert anchor in anchors(RUNBOOKS), f"{url}: no such heading"


def test_runbooks_page_names_the_chart_value_that_rebases_runbooks() -> None:
    chart_values = yaml.safe_load(
        (ROOT / "helm" / "webex-campaign-exporter" / "values.yaml").read_text()
    )
    assert "runbookUrl" in chart_values["prometheusRule"]
    assert "prometheusRule.runbookUrl" in RUNBOOKS.read_text()
