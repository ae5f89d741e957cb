"""Which tenants are polled under which key, the reload status series, loading a shard."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import samples

from exporter import metrics as m
from exporter.cli import load_shard
from exporter.errors import TenantConfigError
from exporter.server import Latest, Published
from exporter.settings import load_settings
from exporter.tenancy import ReloadStatus, Tenancy
from exporter.worker import PollerSpec

BASE = "https://{}.webexcampaign.io/campaignapi/resources/v3"


def tenant(name: str, **settings: object) -> PollerSpec:
    loaded = load_settings(base_url=BASE.format(name), api_key="k", tenant=name, **settings)
    return PollerSpec.of(loaded, BASE.format(name))


def test_unchanged_tenants_keep_their_key_changed_ones_get_a_new_one() -> None:
    latest = Latest(Published.of_slots([]))
    tenancy = Tenancy(latest)
    assert tenancy.apply([tenant("a"), tenant("b"), tenant("c")]) == (["a", "b", "c"], [], [])
    keys = {spec.tenant: spec.key for spec in tenancy.specs}
    added, changed, removed = tenancy.apply(
        [tenant("a"), tenant("b", poll_interval=30), tenant("d")]
    )
    assert (added, changed, removed) == (["d"], ["b"], ["c"])
    now = {spec.tenant: spec.key for spec in tenancy.specs}
    assert now["a"] == keys["a"]  # the same poller, its state kept
    assert now["b"] != keys["b"]  # settings changed: polled anew
    assert len(set(now.values())) == 3
    # The server serves exactly these, in this order, the new ones pending.
    assert [slot.health.tenant for slot in latest.value.tenants] == ["a", "b", "d"]
    assert [slot.key for slot in latest.value.tenants] == [now["a"], now["b"], now["d"]]
    assert not latest.value.ready


@pytest.mark.parametrize("openmetrics", [False, True])
def test_reload_status_series(openmetrics: bool) -> None:
    clock = iter([100.0, 250.5])
    status = ReloadStatus(clock=lambda: next(clock))
    status.failed()
    text = status.render(openmetrics).decode()
    values = {s.name: s.value for s in samples(text)}
    assert values == {
        m.CONFIG_RELOAD_SUCCESSFUL.name: 0.0,
        m.CONFIG_RELOAD_SUCCESS_TIME.name: 100.0,
    }
    status.succeeded()
    values = {s.name: s.value for s in samples(status.render(openmetrics).decode())}
    assert values[m.CONFIG_RELOAD_SUCCESSFUL.name] == 1.0
    assert values[m.CONFIG_RELOAD_SUCCESS_TIME.name] == 250.5
    assert f"# TYPE {m.CONFIG_RELOAD_SUCCESSFUL.name} gauge\n" in text


def test_a_tenant_whose_key_file_is_empty_fails_the_load(tmp_path: Path) -> None:
    """Checked as the poller would read it: a reload must not hand the poller process a
    tenant it cannot start."""
    (tmp_path / "good.key").write_text("k")
    (tmp_path / "empty.key").write_text("")
    config = tmp_path / "tenants.yaml"
    entries = [
        {"name": name, "base_url": BASE.format(name), "api_key_file": f"{name}.key"}
        for name in ("good", "empty")
    ]
    config.write_text(yaml.safe_dump({"tenants": entries}))
    with pytest.raises(TenantConfigError) as caught:
        load_shard(load_settings(config_file=config))
    (problem,) = caught.value.problems
    assert problem.startswith(f"{config}: tenant empty: ")
    assert "empty" in problem.split(": tenant empty: ")[1]
    (tmp_path / "empty.key").write_text("k2")
    assert [t.tenant for t in load_shard(load_settings(config_file=config))] == ["good", "empty"]
