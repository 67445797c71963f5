"""The Helm chart (deploy/helm/hitl-gateway): lint, render with the default and production
values, and check what it renders against the gateway's settings, server and alert rules."""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from hitl_gateway import __version__
from hitl_gateway.review.auth import ReviewerFile
from hitl_gateway.review.groups import GroupMap
from hitl_gateway.server import build_app
from hitl_gateway.settings import ENV_PREFIX, Settings, known_env_names, load_settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "hitl-gateway"
PRODUCTION = CHART / "values-production.yaml"
HELM_MODULE = "helm.sh/helm/v4/cmd/helm@v4.3.2"
HELM = ROOT / ".cache" / "bin" / "helm"
RELEASE = "gw"

# Building helm the first time takes minutes.
pytestmark = pytest.mark.timeout(1800)

Obj = dict[str, Any]

DEFAULT: tuple[str, ...] = ()
PRODUCTION_VALUES: tuple[str, ...] = ("-f", str(PRODUCTION))
BOTH = pytest.mark.parametrize(
    "values", [DEFAULT, PRODUCTION_VALUES], ids=["default", "production"]
)


@functools.cache
def helm() -> Path:
    """The helm binary in .cache/bin, built from its Go module the first time."""
    if not HELM.is_file():
        subprocess.run(
            ["go", "install", HELM_MODULE],
            cwd=ROOT,
            env={**os.environ, "GOBIN": str(HELM.parent)},
            check=True,
            timeout=1500,
        )
    return HELM


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm()), *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def template(*values: str) -> subprocess.CompletedProcess[str]:
    return run_helm("template", RELEASE, str(CHART), "--namespace", "hitl", *values)


@functools.cache
def rendered(values: tuple[str, ...]) -> tuple[Obj, ...]:
    result = template(*values)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(values: tuple[str, ...], kind: str) -> list[Obj]:
    return [o for o in rendered(values) if o["kind"] == kind]


def one(values: tuple[str, ...], kind: str) -> Obj:
    found = of_kind(values, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def container(values: tuple[str, ...]) -> Obj:
    containers = one(values, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: Obj = containers[0]
    return result


def env_of(values: tuple[str, ...]) -> dict[str, Obj]:
    return {e["name"]: e for e in container(values)["env"]}


def literal_env(values: tuple[str, ...]) -> dict[str, str]:
    return {name: e["value"] for name, e in env_of(values).items() if "value" in e}


def failure(*values: str) -> str:
    result = template(*values)
    assert result.returncode != 0, "rendering should have failed"
    return result.stderr


def setting_names() -> set[str]:
    sections = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    return known_env_names(Settings, ENV_PREFIX) - sections


def config_sources() -> dict[str, bytes]:
    """What the chart ships as configuration: configs/policies/**, pools.yaml, routing.yaml."""
    configs = ROOT / "configs"
    files = {
        str(p.relative_to(configs)): p.read_bytes()
        for p in (configs / "policies").rglob("*")
        if p.is_file()
    }
    for name in ("pools.yaml", "routing.yaml"):
        files[name] = (configs / name).read_bytes()
    return files


# -- the chart as a package ------------------------------------------------------------------


@BOTH
def test_lint_is_clean(values: tuple[str, ...]) -> None:
    result = run_helm("lint", "--strict", str(CHART), *values)
    assert result.returncode == 0, result.stdout + result.stderr


def test_app_version_is_the_gateway_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"] == __version__
    image = container(DEFAULT)["image"]
    assert image == f"hitl-gateway:{project['version']}"


def test_the_charts_files_are_the_repositorys_own() -> None:
    """Links, not copies (helm includes a linked file's content): they cannot drift."""
    links = {
        CHART / "files" / "config" / "policies": ROOT / "configs" / "policies",
        CHART / "files" / "config" / "pools.yaml": ROOT / "configs" / "pools.yaml",
        CHART / "files" / "config" / "routing.yaml": ROOT / "configs" / "routing.yaml",
        CHART / "files" / "prometheus" / "rules.yml": ROOT / "deploy" / "prometheus" / "rules.yml",
    }
    for link, target in links.items():
        assert link.is_symlink(), f"{link.relative_to(ROOT)} should link to {target}"
        assert link.resolve() == target.resolve()


# -- the Deployment ----------------------------------------------------------------------------


@BOTH
def test_probes_ask_the_endpoints_the_server_has(values: tuple[str, ...]) -> None:
    app = build_app(CollectorRegistry(), lambda: True)
    routes = {getattr(route, "path", None) for route in app.routes}
    c = container(values)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {"/readyz", "/healthz", "/metrics"} <= routes
    (port,) = c["ports"]
    assert port["name"] == "http"
    assert str(port["containerPort"]) == literal_env(values)["HITL_HTTP__PORT"] == "8000"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] == "http"
    # Inside the pod: the Service and the kubelet's probes reach it from outside.
    assert literal_env(values)["HITL_HTTP__HOST"] == "0.0.0.0"  # noqa: S104
    assert c["args"] == ["run"]


@BOTH
def test_runs_as_the_image_user_read_only_and_unprivileged(values: tuple[str, ...]) -> None:
    pod = one(values, "Deployment")["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == security["runAsGroup"] == security["fsGroup"] == 65532
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    own = container(values)["securityContext"]
    assert own["allowPrivilegeEscalation"] is False
    assert own["readOnlyRootFilesystem"] is True
    assert own["capabilities"] == {"drop": ["ALL"]}
    assert own["runAsNonRoot"] is True
    assert own["runAsUser"] == 65532
    assert own["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m["name"] for m in container(values)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]  # noqa: S108 - the pod's own emptyDir
    # Service links would add HITL_<SERVICE>_* variables the gateway refuses as unknown.
    assert pod["enableServiceLinks"] is False
    assert pod["automountServiceAccountToken"] is False


@BOTH
def test_grace_period_is_above_the_drain_budget(values: tuple[str, ...]) -> None:
    pod = one(values, "Deployment")["spec"]["template"]["spec"]
    drain = float(literal_env(values)["HITL_RUNTIME__SHUTDOWN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] > drain
    assert isinstance(pod["terminationGracePeriodSeconds"], int)


def grace_period(values: tuple[str, ...]) -> Any:
    return one(values, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]


def test_grace_period_is_the_budget_plus_the_margin() -> None:
    assert literal_env(DEFAULT)["HITL_RUNTIME__SHUTDOWN_TIMEOUT_S"] == "20"
    assert grace_period(DEFAULT) == 30
    fractional = ("--set", "runtime.shutdownTimeoutSeconds=12.5")
    assert literal_env(fractional)["HITL_RUNTIME__SHUTDOWN_TIMEOUT_S"] == "12.5"
    assert grace_period(fractional) == 23
    assert grace_period((*fractional, "--set", "terminationGracePeriodSeconds=13")) == 13


@pytest.mark.parametrize("grace", ["20", "5"])
def test_grace_period_not_above_the_drain_budget_fails(grace: str) -> None:
    stderr = failure("--set", f"terminationGracePeriodSeconds={grace}")
    assert f"terminationGracePeriodSeconds ({grace}) must be above" in stderr
    assert "runtime.shutdownTimeoutSeconds (20)" in stderr


@BOTH
def test_config_is_a_directory_mount_of_the_configmap(values: tuple[str, ...]) -> None:
    pod = one(values, "Deployment")["spec"]["template"]["spec"]
    mounts = container(values)["volumeMounts"]
    assert all("subPath" not in m and "subPathExpr" not in m for m in mounts)
    config_mount = next(m for m in mounts if m["name"] == "config")
    base = config_mount["mountPath"]
    env = literal_env(values)
    assert env["HITL_POLICY__DIR"] == f"{base}/policies"
    assert env["HITL_POLICY__POOLS_FILE"] == f"{base}/pools.yaml"
    assert env["HITL_POLICY__ROUTING_FILE"] == f"{base}/routing.yaml"
    volume = next(v for v in pod["volumes"] if v["name"] == "config")["configMap"]
    (configmap,) = [
        c for c in of_kind(values, "ConfigMap") if c["metadata"]["name"].endswith("-config")
    ]
    assert volume["name"] == configmap["metadata"]["name"]
    laid_out = {item["path"]: configmap["data"][item["key"]] for item in volume["items"]}
    expected = {path: content.decode() for path, content in config_sources().items()}
    assert laid_out == expected


def test_config_files_from_values_replace_and_add() -> None:
    values = (
        "--set-string", "config.files.pools\\.yaml=pools: []\n",
        "--set-string", "config.files.policies/new-domain\\.yaml=domain: new-domain\n",
    )  # fmt: skip
    configmap = one(values, "ConfigMap")
    assert configmap["data"]["pools.yaml"] == "pools: []\n"
    assert configmap["data"]["policies__new-domain.yaml"] == "domain: new-domain\n"
    assert "policies__clinical-summaries.yaml" in configmap["data"]
    items = next(
        v for v in one(values, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "config"
    )["configMap"]["items"]  # fmt: skip
    assert {"key": "policies__new-domain.yaml", "path": "policies/new-domain.yaml"} in items
    stderr = failure("--set-string", "config.files.other\\.yaml=x")
    assert '"other.yaml" is not policies/<file>, pools.yaml or routing.yaml' in stderr


def test_secrets_from_existing_secrets() -> None:
    env = env_of(PRODUCTION_VALUES)
    production = yaml.safe_load(PRODUCTION.read_text())
    refs = {name: e["valueFrom"]["secretKeyRef"] for name, e in env.items() if "valueFrom" in e}
    assert refs == {
        "HITL_KAFKA__SASL_PLAIN_USERNAME": {
            "name": production["kafka"]["sasl"]["existingSecret"],
            "key": "kafka-sasl-username",
        },
        "HITL_KAFKA__SASL_PLAIN_PASSWORD": {
            "name": production["kafka"]["sasl"]["existingSecret"],
            "key": "kafka-sasl-password",
        },
        "HITL_REDIS__PASSWORD": {
            "name": production["redis"]["existingSecret"],
            "key": "redis-password",
        },
        "HITL_OIDC__CLIENT_SECRET": {
            "name": production["oidc"]["clientSecret"]["existingSecret"],
            "key": "oidc-client-secret",
        },
    }
    assert not of_kind(PRODUCTION_VALUES, "Secret"), "existing Secrets only"
    pod = one(PRODUCTION_VALUES, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container(PRODUCTION_VALUES)["volumeMounts"]}
    reviewers = Path(literal_env(PRODUCTION_VALUES)["HITL_REVIEW__REVIEWERS_FILE"])
    assert mounts["reviewers"] == str(reviewers.parent)
    assert volumes["reviewers"]["secret"]["secretName"] == production["reviewers"]["existingSecret"]
    assert volumes["reviewers"]["secret"]["items"] == [
        {"key": reviewers.name, "path": reviewers.name}
    ]
    ca = Path(literal_env(PRODUCTION_VALUES)["HITL_KAFKA__SSL_CAFILE"])
    assert mounts["kafka-tls"] == str(ca.parent)
    assert (
        volumes["kafka-tls"]["secret"]["secretName"] == production["kafka"]["tls"]["existingSecret"]
    )


def test_secrets_made_from_values() -> None:
    reviewer = {"id": "dr-ana", "token_sha256": "0" * 63 + "1", "pools": ["clinicians"]}
    values = (
        "--set", "kafka.securityProtocol=SASL_PLAINTEXT",
        "--set", "kafka.saslMechanism=SCRAM-SHA-256",
        "--set", "kafka.sasl.username=svc",
        "--set", "kafka.sasl.password=kafka-secret",
        "--set", "redis.password=redis-secret",
        "--set", "notify.webhook.url=https://hooks.example.com/x",
        "--set-json", f"reviewers.reviewers={json.dumps([reviewer])}",
    )  # fmt: skip
    secrets = {s["metadata"]["name"]: s for s in of_kind(values, "Secret")}
    credentials = secrets[f"{RELEASE}-hitl-gateway-credentials"]["data"]
    decoded = {key: base64.b64decode(value).decode() for key, value in credentials.items()}
    assert decoded == {
        "kafka-sasl-username": "svc",
        "kafka-sasl-password": "kafka-secret",
        "redis-password": "redis-secret",
        "notify-webhook-url": "https://hooks.example.com/x",
    }
    env = env_of(values)
    for name, key in [
        ("HITL_KAFKA__SASL_PLAIN_USERNAME", "kafka-sasl-username"),
        ("HITL_KAFKA__SASL_PLAIN_PASSWORD", "kafka-sasl-password"),
        ("HITL_REDIS__PASSWORD", "redis-password"),
        ("HITL_NOTIFY__WEBHOOK_URL", "notify-webhook-url"),
    ]:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": f"{RELEASE}-hitl-gateway-credentials", "key": key}
    rendered_text = template(*values).stdout
    assert "kafka-secret" not in rendered_text
    assert "redis-secret" not in rendered_text
    reviewers_secret = secrets[f"{RELEASE}-hitl-gateway-reviewers"]["data"]["reviewers.yaml"]
    reviewers = ReviewerFile.model_validate(yaml.safe_load(base64.b64decode(reviewers_secret)))
    assert [r.id for r in reviewers.reviewers] == ["dr-ana"]
    annotations = one(values, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secrets" in annotations
    # The reviewers file reloads in place: changing it does not roll the pods.
    other = (*values, "--set", "reviewers.reviewers[0].id=dr-bo")
    assert one(other, "Deployment")["spec"]["template"]["metadata"]["annotations"] == annotations


def test_sasl_without_credentials_fails() -> None:
    stderr = failure("--set", "kafka.securityProtocol=SASL_SSL")
    assert (
        "needs kafka.sasl.existingSecret, or kafka.sasl.username and kafka.sasl.password" in stderr
    )


def test_no_reviewers_file_mounts_nothing_and_keeps_the_setting() -> None:
    mounts = {m["name"] for m in container(DEFAULT)["volumeMounts"]}
    assert mounts == {"config", "tmp"}
    assert literal_env(DEFAULT)["HITL_REVIEW__REVIEWERS_FILE"].endswith("/reviewers.yaml")
    assert not of_kind(DEFAULT, "Secret")


# -- settings ---------------------------------------------------------------------------------


def pod_envs(values: tuple[str, ...]) -> Iterator[tuple[str, list[Obj]]]:
    for obj in rendered(values):
        if obj["kind"] in ("Deployment", "Job"):
            for c in obj["spec"]["template"]["spec"]["containers"]:
                yield f"{obj['kind']}/{c['name']}", c.get("env", [])


@BOTH
def test_every_hitl_variable_is_a_gateway_setting(values: tuple[str, ...]) -> None:
    known = setting_names()
    for where, env in pod_envs(values):
        names = [e["name"] for e in env]
        assert len(names) == len(set(names)), f"{where}: a variable set twice"
        unknown = sorted(n for n in names if n.startswith(ENV_PREFIX) and n not in known)
        assert not unknown, f"{where}: not gateway settings: {unknown}"


@BOTH
def test_the_gateway_accepts_the_rendered_environment(
    values: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, entry in env_of(values).items():
        # Values from Secrets: a stand-in of the right shape.
        value = entry.get("value", "https://hooks.example.com/x" if "WEBHOOK" in name else "s")
        monkeypatch.setenv(name, value)
    settings = load_settings()
    env = literal_env(values)
    assert settings.kafka.bootstrap_servers == env["HITL_KAFKA__BOOTSTRAP_SERVERS"]
    assert settings.kafka.group_id == env["HITL_KAFKA__GROUP_ID"]
    assert settings.topics.outputs == env["HITL_TOPICS__OUTPUTS"]
    assert settings.runtime.shutdown_timeout_s == float(env["HITL_RUNTIME__SHUTDOWN_TIMEOUT_S"])
    assert settings.http.port == 8000


def test_production_settings() -> None:
    env = literal_env(PRODUCTION_VALUES)
    assert len(env["HITL_KAFKA__BOOTSTRAP_SERVERS"].split(",")) == 3
    assert env["HITL_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["HITL_TOPICS__PARTITIONS"] == "12"
    assert env["HITL_TOPICS__REPLICATION_FACTOR"] == "3"
    assert env["HITL_KAFKA__COMPRESSION_TYPE"] == "zstd"
    resources = container(PRODUCTION_VALUES)["resources"]
    assert set(resources) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(resources["requests"]) & set(resources["limits"])


# -- Service, PodDisruptionBudget ---------------------------------------------------------------


@BOTH
def test_service_exposes_the_http_port(values: tuple[str, ...]) -> None:
    service = one(values, "Service")
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    assert port["port"] == 8000
    labels = one(values, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


@BOTH
def test_disruption_budget_selects_the_gateway_pods(values: tuple[str, ...]) -> None:
    pdb = one(values, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    deployment = one(values, "Deployment")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


# -- KEDA -----------------------------------------------------------------------------------


@BOTH
def test_scaler_reads_the_lag_the_gateway_makes(values: tuple[str, ...]) -> None:
    scaled = one(values, "ScaledObject")
    deployment = one(values, "Deployment")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    env = literal_env(values)
    assert meta["bootstrapServers"] == env["HITL_KAFKA__BOOTSTRAP_SERVERS"]
    assert meta["consumerGroup"] == env["HITL_KAFKA__GROUP_ID"]
    assert meta["topic"] == env["HITL_TOPICS__OUTPUTS"]
    assert int(meta["lagThreshold"]) > 0
    assert meta["allowIdleConsumers"] == "false"
    # As the gateway's own consumer (source.py) for a group without offsets.
    source = (ROOT / "src" / "hitl_gateway" / "source.py").read_text()
    assert f'auto_offset_reset="{meta["offsetResetPolicy"]}"' in source
    spec = scaled["spec"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["maxReplicaCount"] <= int(env["HITL_TOPICS__PARTITIONS"])
    assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata values are strings"


def test_production_scales_to_the_partition_count_with_the_gateway_credentials() -> None:
    scaled = one(PRODUCTION_VALUES, "ScaledObject")
    assert scaled["spec"]["maxReplicaCount"] == 12
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metadata"]["sasl"] == "scram_sha512"
    assert trigger["metadata"]["tls"] == "enable"
    auth = one(PRODUCTION_VALUES, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    params = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    env = env_of(PRODUCTION_VALUES)
    for parameter, name in [
        ("username", "HITL_KAFKA__SASL_PLAIN_USERNAME"),
        ("password", "HITL_KAFKA__SASL_PLAIN_PASSWORD"),
    ]:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert {"name": params[parameter]["name"], "key": params[parameter]["key"]} == ref
    ca_file = Path(literal_env(PRODUCTION_VALUES)["HITL_KAFKA__SSL_CAFILE"])
    assert params["ca"]["key"] == ca_file.name


def test_plaintext_kafka_needs_no_trigger_authentication() -> None:
    (trigger,) = one(DEFAULT, "ScaledObject")["spec"]["triggers"]
    assert "authenticationRef" not in trigger
    assert not {"sasl", "tls"} & set(trigger["metadata"])
    assert not of_kind(DEFAULT, "TriggerAuthentication")


def test_without_keda_the_deployment_sets_replicas() -> None:
    values = ("--set", "keda.enabled=false", "--set", "replicaCount=2")
    assert one(values, "Deployment")["spec"]["replicas"] == 2
    assert not of_kind(values, "ScaledObject")
    assert not of_kind(values, "TriggerAuthentication")


def test_more_replicas_than_partitions_fails() -> None:
    stderr = failure("--set", "kafka.inputPartitions=12", "--set", "keda.maxReplicaCount=13")
    assert "keda.maxReplicaCount (13) exceeds kafka.inputPartitions (12)" in stderr
    assert "consumer group gives each partition to one member" in stderr
    stderr = failure("-f", str(PRODUCTION), "--set", "kafka.inputPartitions=6")
    assert "keda.maxReplicaCount (12) exceeds kafka.inputPartitions (6)" in stderr


def test_scaling_to_zero_fails() -> None:
    stderr = failure("--set", "keda.minReplicaCount=0")
    assert "keda.minReplicaCount (0) must be at least 1" in stderr


# -- monitoring -------------------------------------------------------------------------------


def test_monitoring_objects_only_when_enabled() -> None:
    assert not of_kind(DEFAULT, "ServiceMonitor")
    assert not of_kind(DEFAULT, "PrometheusRule")
    assert one(PRODUCTION_VALUES, "ServiceMonitor")["apiVersion"] == "monitoring.coreos.com/v1"
    assert one(PRODUCTION_VALUES, "PrometheusRule")["apiVersion"] == "monitoring.coreos.com/v1"


def test_prometheus_rule_carries_the_repository_rules() -> None:
    rule = one(PRODUCTION_VALUES, "PrometheusRule")
    source = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
    assert rule["spec"] == source
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 10


def test_service_monitor_scrapes_metrics_as_the_job_the_alerts_watch() -> None:
    monitor = one(PRODUCTION_VALUES, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"
    service = one(PRODUCTION_VALUES, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (relabel,) = endpoint["relabelings"]
    assert relabel["targetLabel"] == "job"
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
    down = next(
        r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "HitlGatewayDown"
    )
    assert re.search(r'up\{job="([^"]+)"\}', down["expr"]) is not None
    assert f'job="{relabel["replacement"]}"' in down["expr"]


# -- topics Job ------------------------------------------------------------------------------


def test_topics_job_runs_topics_ensure_with_the_gateway_settings() -> None:
    assert not of_kind(DEFAULT, "Job")
    job = one(PRODUCTION_VALUES, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    spec = job["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["args"] == ["topics", "ensure"]
    assert c["env"] == container(PRODUCTION_VALUES)["env"]
    assert c["securityContext"] == container(PRODUCTION_VALUES)["securityContext"]
    assert spec["enableServiceLinks"] is False
    pod_labels = one(PRODUCTION_VALUES, "Deployment")["spec"]["template"]["metadata"]["labels"]
    selector = one(PRODUCTION_VALUES, "Service")["spec"]["selector"]
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= job_labels.items(), "the Service must not select the Job"
    assert selector.items() <= pod_labels.items()


def test_audit_keys_decision_keys_and_oidc_groups_reach_the_gateway(tmp_path: Path) -> None:
    """The audit keys Secret and the OIDC groups ConfigMap are directory mounts the settings
    name, and the rendered groups file is one the gateway loads."""
    production = yaml.safe_load(PRODUCTION.read_text())
    env = literal_env(PRODUCTION_VALUES)
    mounts = {m["name"]: m for m in container(PRODUCTION_VALUES)["volumeMounts"]}
    pod = one(PRODUCTION_VALUES, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    keys = Path(env["HITL_AUDIT__KEYS_FILE"])
    assert env["HITL_AUDIT__ACTIVE_KEY_ID"] == production["audit"]["activeKeyId"]
    assert mounts["audit-keys"]["mountPath"] == str(keys.parent)
    assert "subPath" not in mounts["audit-keys"]
    assert volumes["audit-keys"]["secret"]["secretName"] == "hitl-audit-keys"
    decision_keys = Path(env["HITL_DECISIONS__KEYS_FILE"])
    assert env["HITL_DECISIONS__GATEWAY_KEY_ID"] == production["decisions"]["gatewayKeyId"]
    assert mounts["decision-keys"]["mountPath"] == str(decision_keys.parent)
    assert volumes["decision-keys"]["secret"]["secretName"] == "hitl-decision-keys"
    assert volumes["decision-keys"]["secret"]["items"][0]["path"] == decision_keys.name
    groups = Path(env["HITL_OIDC__GROUPS_FILE"])
    assert mounts["oidc"]["mountPath"] == str(groups.parent)
    assert env["HITL_OIDC__ISSUER"] == production["oidc"]["issuer"]
    (configmap,) = [c for c in of_kind(PRODUCTION_VALUES, "ConfigMap")
                    if c["metadata"]["name"] == volumes["oidc"]["configMap"]["name"]]  # fmt: skip
    path = tmp_path / groups.name
    path.write_text(configmap["data"][groups.name])
    loaded = GroupMap.load(path)  # strict: an invalid file raises, naming the problem
    assert loaded.names() == set(production["oidc"]["groups"])
    # Neither is rendered by default.
    assert "HITL_AUDIT__KEYS_FILE" not in literal_env(DEFAULT)
    assert "HITL_DECISIONS__KEYS_FILE" not in literal_env(DEFAULT)
    assert "HITL_OIDC__ISSUER" not in literal_env(DEFAULT)


def test_half_configured_security_fails_rendering() -> None:
    assert "set together" in failure("--set", "audit.activeKeyId=k1")
    assert "decisions.keys.existingSecret and decisions.gatewayKeyId" in failure(
        "--set", "decisions.gatewayKeyId=g1"
    )
    assert "oidc.issuer needs oidc.audience" in failure(
        "--set", "oidc.issuer=https://login.example.com"
    )
    oauth = failure("--set", "kafka.securityProtocol=SASL_SSL", "--set",
                    "kafka.saslMechanism=OAUTHBEARER", "--set",
                    "keda.triggerAuthentication.existingName=ka")  # fmt: skip
    assert "OAUTHBEARER needs kafka.oauth.tokenUrl" in oauth


def test_oauthbearer_takes_its_client_secret_from_a_secret() -> None:
    values = ("--set", "kafka.securityProtocol=SASL_SSL", "--set",
              "kafka.saslMechanism=OAUTHBEARER", "--set",
              "keda.triggerAuthentication.existingName=ka", "--set",
              "kafka.oauth.tokenUrl=https://login.example.com/token", "--set",
              "kafka.oauth.clientId=hitl", "--set",
              "kafka.oauth.clientSecret.existingSecret=hitl-oauth")  # fmt: skip
    env = env_of(values)
    assert env["HITL_KAFKA__OAUTH_TOKEN_URL"]["value"] == "https://login.example.com/token"
    ref = env["HITL_KAFKA__OAUTH_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "hitl-oauth", "key": "oauth-client-secret"}
    assert "HITL_KAFKA__SASL_PLAIN_PASSWORD" not in env
