"""The Helm chart and the image recipe, checked with the tools users' CI would run: helm lint and
template, Kubernetes schemas (kubernetes-validate --strict), the values schema, `broker validate`
on the rendered config, hadolint on the Dockerfile."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from broker.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent.parent
CHART = ROOT / "deploy" / "helm" / "broker"
VALUES = [None, *sorted((CHART / "ci").glob("*.yaml"))]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is not installed (pip install -e '.[test]')"
    return found


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("helm"), *args], capture_output=True, text=True, timeout=120, check=False)


def render(values: Path | None, *extra: str) -> list[dict]:  # type: ignore[type-arg]
    args = ["template", "rel", str(CHART), *(["-f", str(values)] if values else []), *extra]
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.mark.parametrize("values", VALUES, ids=lambda v: v.name if v else "defaults")
def test_helm_lint(values: Path | None) -> None:
    """helm lint passes with the defaults and with every ci/ values file."""
    result = helm("lint", str(CHART), *(["-f", str(values)] if values else []))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", VALUES, ids=lambda v: v.name if v else "defaults")
def test_manifests_validate_against_kubernetes_schemas(values: Path | None, tmp_path: Path) -> None:
    """Every rendered manifest of a built-in kind is valid for Kubernetes 1.37 (strict)."""
    docs = render(values)
    builtin = [d for d in docs if not d["apiVersion"].startswith(("monitoring.coreos.com", "keda.sh"))]
    out = tmp_path / "manifests.yaml"
    out.write_text(yaml.safe_dump_all(builtin))
    result = subprocess.run([tool("kubernetes-validate"), "--strict", "--quiet", "-k", "1.33.0", str(out)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {d["kind"] for d in builtin} >= {"Deployment", "Service", "ConfigMap"}


@pytest.mark.parametrize("values", VALUES, ids=lambda v: v.name if v else "defaults")
def test_rendered_config_passes_broker_validate(values: Path | None, tmp_path: Path) -> None:
    """The ConfigMap's broker.yaml is a valid config file."""
    configmap = next(d for d in render(values) if d["kind"] == "ConfigMap")
    path = tmp_path / "broker.yaml"
    path.write_text(configmap["data"]["broker.yaml"])
    result = subprocess.run([sys.executable, "-m", "broker", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_full_values_render_everything() -> None:
    """The opt-ins render: PDB, ServiceMonitor, PrometheusRule, ScaledObject, Redis StatefulSet, NetworkPolicy."""
    kinds = {d["kind"] for d in render(CHART / "ci" / "full-values.yaml")}
    assert kinds >= {"PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "ScaledObject", "StatefulSet",
                     "NetworkPolicy", "ServiceAccount"}


def test_deployment_is_hardened_and_drains() -> None:
    """Non-root, read-only root, no capabilities, seccomp; grace period tied to the drain timeout."""
    deployment = next(d for d in render(CHART / "ci" / "full-values.yaml") if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["terminationGracePeriodSeconds"] == 40 + 20 + 10
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_single_replica_has_no_pdb() -> None:
    """A PodDisruptionBudget only when replicaCount > 1."""
    assert "PodDisruptionBudget" not in {d["kind"] for d in render(CHART / "ci" / "external-redis-values.yaml")}


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "bogus=1"], "Additional property bogus is not allowed"),
    (["--set", "replicaCount=many"], "replicaCount: Invalid type"),
    (["--set", "aws.accountId=123"], "aws.accountId"),
    (["--set", "service.type=Magic"], "service.type"),
    (["--set", "broker.redis_url=redis://x"], "broker"),
])
def test_values_schema_rejects(args: list[str], message: str) -> None:
    """Wrong types and unknown keys are refused before anything renders."""
    result = helm("template", "rel", str(CHART), *args)
    assert result.returncode != 0
    assert message in result.stderr


def test_hadolint_passes() -> None:
    """The Dockerfile follows hadolint's rules."""
    result = subprocess.run([tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_uses_only_declared_metrics() -> None:
    """Every metric the Grafana dashboard queries is one the broker exports."""
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "broker-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(total|bucket)$", "", m) for e in exprs for m in re.findall(r"broker_[a-z_]+", e)}
    declared = {m.name for m in Metrics().registry.collect()}
    assert used <= declared, used - declared
    assert len(dashboard["panels"]) >= 10


def test_bundled_redis_refuses_writes_when_full_instead_of_evicting() -> None:
    """The bundled Redis gets maxmemory (below its memory limit) with noeviction: a full Redis
    refuses new events rather than evicting queued ones or being OOM-killed."""
    docs = render(None, "--set", "redis.bundled.enabled=true")
    redis = next(d for d in docs if d["kind"] == "StatefulSet")
    container = redis["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    maxmemory = args[args.index("--maxmemory") + 1]
    limit = container["resources"]["limits"]["memory"]
    to_bytes = {"mb": 2**20, "gb": 2**30, "Mi": 2**20, "Gi": 2**30}
    value = int(re.match(r"\d+", maxmemory).group()) * to_bytes[re.sub(r"\d+", "", maxmemory)]  # type: ignore[union-attr]
    assert value < int(re.match(r"\d+", limit).group()) * to_bytes[re.sub(r"\d+", "", limit)]  # type: ignore[union-attr]
