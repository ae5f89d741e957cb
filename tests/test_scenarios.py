"""The demo's scenarios: names the settings know, so production never loads the simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from exporter.scenarios import json_fault

# In a fresh interpreter: import every module but the simulator, build the parser and
# settings without --demo, and list what got loaded.
PRODUCTION_RUN = """
import importlib, json, pkgutil, sys
import exporter
names = [m.name for m in pkgutil.walk_packages(exporter.__path__, "exporter.")]
for name in names:
    if name not in ("exporter.simulator", "exporter.__main__"):
        importlib.import_module(name)
from exporter.cli import build_parser
from exporter.settings import load_settings
build_parser().format_help()
load_settings(base_url="https://acme.example/v3", api_key="k", demo_scenario="healthy")
loaded = sorted(name for name in sys.modules if name.startswith("exporter"))
print(json.dumps({"walked": names, "loaded": loaded}))
"""


def test_production_modules_never_load_the_simulator() -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("WEBEX_")}
    run = subprocess.run(
        [sys.executable, "-c", PRODUCTION_RUN], capture_output=True, text=True, check=True, env=env
    )
    modules = json.loads(run.stdout)
    assert "exporter.simulator" in modules["walked"]  # the walk sees every module
    assert {"exporter.cli", "exporter.api", "exporter.worker"} <= set(modules["loaded"])
    assert "exporter.simulator" not in modules["loaded"]


def test_a_json_answer_is_sent_as_the_api_sends_it() -> None:
    """The demo's JSON answers (healthy, malformed, duplicates, hostile) look like the API's."""
    records = [{"id": "1", "name": "a"}]
    fault = json_fault(records)
    assert fault.status == 200
    assert json.loads(fault.body) == records
    assert dict(fault.headers) == {"Content-Type": "application/json"}
