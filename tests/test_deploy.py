"""The Kubernetes manifests in deploy/: schema-valid (strict) and wired to each other and the relay.

Validation uses ``kubernetes-validate`` (dev extra), which bundles the Kubernetes OpenAPI schemas,
so it runs offline; strict mode rejects unknown fields, the usual sign of a mis-indented key. The
test also proves the validator can fail, on deliberately broken copies, and checks what a schema
cannot: names and paths that must agree across files and with the relay's own settings.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from relay.config import load_bots

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S_VERSION = "1.30.0"  # the oldest minor still supported upstream; newer ones accept these too
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))


def _docs() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out[doc["kind"]] = doc
    return out


def _validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
@pytest.mark.parametrize("version", [K8S_VERSION, kubernetes_validate.utils.latest_version()])
def test_every_manifest_is_valid_against_the_kubernetes_schema(path: Path, version: str) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, f"{path.name} holds no resource"
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_broken_manifests() -> None:
    deployment = _docs()["Deployment"]
    misspelt = copy.deepcopy(deployment)
    probe = misspelt["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    probe["httpGett"] = probe.pop("httpGet")  # unknown field: only strict mode catches it
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    missing = copy.deepcopy(deployment)
    del missing["spec"]["selector"]
    for broken in (misspelt, wrong_type, missing):
        with pytest.raises(kubernetes_validate.ValidationError):
            _validate(broken)


def test_the_pod_is_locked_down_and_probed() -> None:
    pod = _docs()["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts  # writable scratch on a read-only root
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"requests", "limits"} <= set(container["resources"])
    grace = next(e for e in container["env"] if e["name"] == "RELAY_SHUTDOWN_GRACE")
    # Kubernetes must not SIGKILL before the relay's own drain (+ preStop sleep) is over.
    assert pod["terminationGracePeriodSeconds"] > float(grace["value"]) + 5


def test_names_and_paths_agree_across_the_manifests(tmp_path: Path) -> None:
    docs = _docs()
    deployment, service = docs["Deployment"], docs["Service"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        service["spec"]["selector"],
    ):
        assert selector.items() <= labels.items()
    assert (
        docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"]
        == (deployment["metadata"]["name"])
    )
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    # The bots file the relay is told to read is the ConfigMap's key, mounted where it says.
    env = {e["name"]: e.get("value") for e in container["env"]}
    bots_path = Path(env["RELAY_BOTS_FILE"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(bots_path.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    configmap = docs["ConfigMap"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    # Secrets come from the Secret via envFrom, and every bot's secret_env is one of its keys.
    secret = docs["Secret"]
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    keys = set(secret["stringData"])
    assert {"NEO_API_KEY", "RELAY_DATABASE_URL"} <= keys
    assert secret["stringData"]["RELAY_DATABASE_URL"].startswith("redis://")
    bots_file = tmp_path / bots_path.name
    bots_file.write_text(configmap["data"][bots_path.name])
    bots = load_bots(bots_file, {k: "a-real-looking-secret-value" for k in keys})
    assert bots, "the example registry holds no bot"
    for key in ("NEO_API_KEY", "RELAY_DATABASE_URL"):
        assert key not in env, f"{key} must come from the Secret, not a literal"


def test_metrics_are_scraped_on_their_own_port_which_only_prometheus_reaches() -> None:
    docs = _docs()
    template = docs["Deployment"]["spec"]["template"]
    [container] = template["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert int(env["RELAY_METRICS_PORT"]) == ports["metrics"] != ports["http"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    # The Service (what the ingress points at) never routes the metrics port...
    assert [p["targetPort"] for p in docs["Service"]["spec"]["ports"]] == ["http"]
    # ...and the NetworkPolicy lets only the monitoring namespace reach it.
    rules = docs["NetworkPolicy"]["spec"]["ingress"]
    [metrics_rule] = [r for r in rules if any(p["port"] == "metrics" for p in r["ports"])]
    assert metrics_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert all("from" not in r for r in rules if r is not metrics_rule)  # the public port
