"""The Helm chart and the image recipe, checked with the tools users' CI would run: helm lint and
template, Kubernetes schemas (kubernetes-validate --strict), the values schema, `broker validate`
on the rendered config, hadolint on the Dockerfile."""

from __future__ import annotations

import base64
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


# "defaults": the README's install line, which names only the account id (required for real AWS)
MINIMAL = ("--set", "aws.accountId=123456789012")


def render(values: Path | None, *extra: str) -> list[dict]:  # type: ignore[type-arg]
    args = ["template", "rel", str(CHART), *(["-f", str(values)] if values else MINIMAL), *extra]
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.mark.parametrize("values", VALUES, ids=lambda v: v.name if v else "defaults")
def test_helm_lint(values: Path | None) -> None:
    """helm lint passes with the defaults and with every ci/ values file."""
    result = helm("lint", str(CHART), *(["-f", str(values)] if values else MINIMAL))
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
    """The ConfigMap's broker.yaml is a valid config file, with the API's secrets as the pod mounts them:
    every key the config names is an entry of the rendered Secret (files under a temp folder here)."""
    docs = render(values)
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    config = yaml.safe_load(configmap["data"]["broker.yaml"])
    secret = next((d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-api")), None)
    for credential in config["broker"]["api"].get("credentials", []):
        assert secret is not None, "credentials are configured but no Secret holds them"
        name = Path(credential["SecretAccessKeyFile"]).name
        assert name == credential["AccessKeyId"]
        (tmp_path / name).write_bytes(base64.b64decode(secret["data"][name]))
        credential["SecretAccessKeyFile"] = str(tmp_path / name)
    path = tmp_path / "broker.yaml"
    path.write_text(yaml.safe_dump(config))
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


def _selects(selector: dict, labels: dict) -> bool:  # type: ignore[type-arg]
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


@pytest.mark.parametrize("values", VALUES, ids=lambda v: v.name if v else "defaults")
def test_selectors_and_policies_pick_the_right_pods(values: Path | None) -> None:
    """The Deployment, Service, PDB and broker NetworkPolicy select the broker's pods and never the
    bundled Redis; Redis's own policy admits the broker's pods only; no pod mounts a service
    account token; the API's secrets are mounted as files."""
    docs = render(values, "--set", "redis.bundled.enabled=true", "--set", "redis.existingSecret=",
                  "--set", "redis.url=", "--set", "replicaCount=2")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    broker_pod = deployment["spec"]["template"]["metadata"]["labels"]
    redis_pod = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert _selects(deployment["spec"]["selector"], broker_pod)
    assert not _selects(deployment["spec"]["selector"], redis_pod)
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == deployment["metadata"]["name"])
    assert _selects({"matchLabels": service["spec"]["selector"]}, broker_pod)
    assert not _selects({"matchLabels": service["spec"]["selector"]}, redis_pod)
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert _selects(pdb["spec"]["selector"], broker_pod)
    assert not _selects(pdb["spec"]["selector"], redis_pod)
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    assert len(policies) == 2, "NetworkPolicy is on by default, one for the broker and one for Redis"
    broker_policy = next(p for p in policies.values() if _selects(p["spec"]["podSelector"], broker_pod))
    redis_policy = next(p for p in policies.values() if _selects(p["spec"]["podSelector"], redis_pod))
    assert broker_policy is not redis_policy
    assert not _selects(broker_policy["spec"]["podSelector"], redis_pod)
    assert set(broker_policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    egress = broker_policy["spec"]["egress"]
    assert any(_selects(peer.get("podSelector", {"matchLabels": {"x": "y"}}), redis_pod)
               for rule in egress for peer in rule.get("to", []))  # the broker may reach Redis
    assert any({"port": 53, "protocol": "UDP"} in rule.get("ports", []) for rule in egress)
    assert any({"port": 443, "protocol": "TCP"} in rule.get("ports", []) for rule in egress)
    (redis_rule,) = redis_policy["spec"]["ingress"]
    assert [peer["podSelector"] for peer in redis_rule["from"]]
    assert all(
        _selects(peer["podSelector"], broker_pod) and not _selects(peer["podSelector"], redis_pod)
        for peer in redis_rule["from"])
    for workload in (d for d in docs if d["kind"] in ("Deployment", "StatefulSet")):
        assert workload["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    mounts = {m["mountPath"] for m in deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert "/var/run/secrets/broker/api" in mounts
    redis_args = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--requirepass" in redis_args
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BROKER_REDIS_URL"]["value"].startswith("redis://:$(REDIS_PASSWORD)@")


def test_function_workloads_connect_to_the_runtime_api() -> None:
    """A function workload is a Deployment pointed at the broker's Service on the function's ApiPort,
    which the Service exposes and the broker's NetworkPolicy admits from that workload only; KEDA
    scales it on the invocations waiting for an environment."""
    docs = render(CHART / "ci" / "function-workload-values.yaml")
    workload = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-fn-resize"))
    container = workload["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    service = next(d for d in docs if d["kind"] == "Service" and not d["metadata"]["name"].endswith("-redis"))
    assert env["AWS_LAMBDA_RUNTIME_API"] == f"{service['metadata']['name']}:9101"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "resize"
    assert env["BUCKET"] == "thumbnails"
    assert 9101 in [p["port"] for p in service["spec"]["ports"]]
    pod = workload["spec"]["template"]["metadata"]["labels"]
    assert not _selects({"matchLabels": service["spec"]["selector"]}, pod), "the broker's Service never picks it"
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and "redis" not in d["metadata"]["name"])
    rule = next(r for r in policy["spec"]["ingress"] if {"port": 9101, "protocol": "TCP"} in r["ports"])
    assert all(_selects(peer["podSelector"], pod) for peer in rule["from"])
    scaled = next(d for d in docs if d["kind"] == "ScaledObject" and d["metadata"]["name"].endswith("-fn-resize"))
    assert "broker_runtime_pending_invocations" in scaled["spec"]["triggers"][0]["metadata"]["query"]


def test_a_workload_without_a_runtime_port_fails_at_template_time() -> None:
    result = helm("template", "rel", str(CHART), "--set", "functionWorkloads[0].function=nope",
                  "--set", "functionWorkloads[0].image=x")
    assert result.returncode != 0
    assert 'function "nope" needs Target: {Runtime: {ApiPort: <port>}}' in result.stderr


def test_defaults_that_cannot_work_fail_at_template_time_saying_what_to_set() -> None:
    """No Redis at all: helm refuses with the values to set."""
    result = helm("template", "rel", str(CHART), "--set", "redis.bundled.enabled=false")
    assert result.returncode != 0
    assert "no Redis: keep redis.bundled.enabled=true (the default), or set redis.url" in result.stderr


def test_defaults_render_and_leave_the_account_to_sts() -> None:
    """`helm template` on the defaults renders: with no aws.accountId the config names none, and the
    broker asks STS at start; a given one is passed on."""
    for args, expected in (((), None), (("--set", "aws.accountId=123456789012"), "123456789012")):
        result = helm("template", "rel", str(CHART), *args)
        assert result.returncode == 0, result.stderr
        docs = [d for d in yaml.safe_load_all(result.stdout) if d]
        config = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["broker.yaml"])
        assert config["broker"].get("account_id") == expected


def _env(docs: list[dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "rel-broker")
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


# What each values file's comment claims: which Redis the broker points at.
REDIS_OF = {"defaults": "bundled", "full-values.yaml": "bundled", "function-workload-values.yaml": "bundled",
            "eks-irsa-values.yaml": ("broker-redis", "url"), "external-redis-values.yaml": ("broker-redis", "url")}


@pytest.mark.parametrize("values", VALUES, ids=lambda v: v.name if v else "defaults")
def test_each_values_file_renders_the_redis_it_claims(values: Path | None) -> None:
    """An external Redis (an existing Secret or a URL) turns the bundled one off: no StatefulSet, no
    password Secret, the broker's URL from that Secret, egress to its ports (and CIDRs) instead of
    the bundled pods. Without one, the bundled Redis and the broker pointed at it."""
    docs = render(values)
    claim = REDIS_OF[values.name if values else "defaults"]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    env = _env(docs)["BROKER_REDIS_URL"]
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "rel-broker")
    to_redis_pods = [r for r in policy["spec"]["egress"] for peer in r.get("to", [])
                     if peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "redis"]
    if claim == "bundled":
        assert ("StatefulSet", "rel-broker-redis") in kinds
        assert env["value"].endswith("@rel-broker-redis:6379/0")
        assert to_redis_pods
        return
    secret, key = claim
    assert ("StatefulSet", "rel-broker-redis") not in kinds
    assert ("NetworkPolicy", "rel-broker-redis") not in kinds
    assert ("Secret", "rel-broker-redis-password") not in kinds
    assert env["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key}
    assert not to_redis_pods
    (redis_rule,) = [r for r in policy["spec"]["egress"] if {"port": 6379, "protocol": "TCP"} in r["ports"]]
    if values is not None and values.name == "eks-irsa-values.yaml":
        assert redis_rule["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]


def test_a_redis_url_is_kept_in_a_secret_the_broker_reads() -> None:
    docs = render(None, "--set", "redis.url=rediss://:pw@cache.example:6380/0", "--set", "networkPolicy.redisPorts={6380}")
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "rel-broker-redis")
    assert secret["stringData"]["redis-url"] == "rediss://:pw@cache.example:6380/0"
    assert _env(docs)["BROKER_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "rel-broker-redis", "key": "redis-url"}
    assert "StatefulSet" not in {d["kind"] for d in docs}


def test_the_pods_roll_when_a_key_or_the_config_changes() -> None:
    """Checksum annotations: a second API key, or another function, changes the pod template; the same
    values render the same template."""
    def template(*args: str) -> dict:  # type: ignore[type-arg]
        docs = render(None, *args)
        return next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]  # type: ignore[no-any-return]

    one = template()
    assert template() == one
    two_keys = template("--set", "api.credentials[0].accessKeyId=broker-admin",
                        "--set", "api.credentials[1].accessKeyId=producer")
    assert two_keys["metadata"]["annotations"]["checksum/api-keys"] != one["metadata"]["annotations"]["checksum/api-keys"]
    other_config = template("--set", "functions.f.Target.Url=http://f.default.svc/invoke")
    assert other_config["metadata"]["annotations"]["checksum/config"] != one["metadata"]["annotations"]["checksum/config"]


def test_prometheus_scrapes_through_the_network_policy() -> None:
    """serviceMonitor.enabled admits Prometheus's namespace to the API port; egress opens the ports
    of the targets the values name (and AWS's 443), not every port of every pod."""
    docs = render(None, "--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.prometheusNamespace=obs",
                  "--set", "functions.f.Target.Url=http://f.default.svc:8081/invoke",
                  "--set", "functions.g.Target.Url=https://g.example.com/invoke")
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "rel-broker")
    admitted = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "obs"}}} in admitted
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    assert ports == {53, 6379, 443, 8081}
    assert not [r for r in policy["spec"]["egress"] if {"namespaceSelector": {}} in r.get("to", [])]


def test_the_otlp_collector_is_reachable_through_the_network_policy() -> None:
    """broker.tracing.endpoint opens egress to the collector's port, and reaches the config file."""
    docs = render(None, "--set", "broker.tracing.exporter=otlp",
                  "--set", "broker.tracing.endpoint=http://otel-collector.obs.svc:4318")
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "rel-broker")
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    assert 4318 in ports
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    rendered = yaml.safe_load(config["data"]["broker.yaml"])
    assert rendered["broker"]["tracing"] == {"exporter": "otlp", "endpoint": "http://otel-collector.obs.svc:4318"}


def test_defaults_bring_their_own_redis() -> None:
    """On its defaults the chart runs its bundled Redis and points the broker at it."""
    docs = render(None)
    assert any(d["kind"] == "StatefulSet" for d in docs)
    env = {e["name"]: e for e in next(d for d in docs if d["kind"] == "Deployment")
           ["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BROKER_REDIS_URL"]["value"].endswith("-redis:6379/0")
