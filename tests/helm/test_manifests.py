"""Every scenario renders with Helm's engine, lints strictly, and every
manifest validates strictly against each supported Kubernetes version."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from conftest import CHART_DIR, KUBE_VERSIONS, kinds, load_values_file, render, validate_manifest

NETWORK_POLICY = {
    "enabled": True,
    "grpcFrom": [
        {"namespaceSelector": {"matchLabels": {"codepipeline-gateway/client": "true"}}},
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ci"}},
            "podSelector": {"matchLabels": {"app": "job-worker"}},
        },
    ],
    "egress": {
        "eksPodIdentityAgent": True,
        "extra": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 4566, "protocol": "TCP"}]}],
    },
}

SERVICE_MONITOR = {
    "enabled": True,
    "labels": {"release": "kube-prometheus-stack"},
    "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node", "action": "replace"}],
    "metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "go_.*", "action": "drop"}],
}


CLIENT_TOKENS = {"enabled": True, "existingSecret": "partner-client-tokens"}

CONVENTIONS = {
    "global": {"imageRegistry": "mirror.example.com:5000/hub"},
    "commonAnnotations": {"team": "platform", "example.com/owner": "ci"},
    "extraVolumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}}],
    "extraVolumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
    "initContainers": [{"name": "wait", "image": "busybox:1.37", "command": ["true"]}],
    "sidecars": [{"name": "proxy", "image": "envoyproxy/envoy:v1.36.0", "args": ["--log-level", "info"]}],
}

PROMETHEUS_RULE = {
    "enabled": True,
    "labels": {"release": "kube-prometheus-stack"},
    "additionalRules": [{"alert": "Extra", "expr": "vector(1) > 2", "for": "1m", "labels": {"severity": "info"}}],
}


def scenarios() -> dict[str, tuple[dict[str, Any], list[str]]]:
    """name -> (values, expected kinds)."""
    # Two ConfigMaps (settings, caller policy); the ClusterRoleBinding lets the
    # gateway read the API server's token keys.
    base = sorted(
        ["ClusterRoleBinding", "ConfigMap", "ConfigMap", "Deployment", "NetworkPolicy", "Pod", "Service", "ServiceAccount"]
    )
    everything = {
        "replicaCount": 3,
        "image": {"digest": "sha256:" + "a" * 64},
        "aws": {"region": "eu-west-1", "endpointUrl": "https://codepipeline.eu-west-1.amazonaws.com"},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/gw"}},
        "extraArgs": ["--log-format=json"],
        "extraEnv": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "extraEnvFrom": [{"secretRef": {"name": "extra"}}],
        "imagePullSecrets": [{"name": "regcred"}],
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "ci", "operator": "Exists", "effect": "NoSchedule"}],
        "podAntiAffinity": "hard",
        "topologySpread": {"enabled": True},
        "service": {"headless": {"enabled": True}, "annotations": {"a": "b"}},
        "autoscaling": {"enabled": True, "minReplicas": 3, "targetMemoryUtilizationPercentage": 80},
        "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
        "networkPolicy": NETWORK_POLICY,
        "serviceMonitor": SERVICE_MONITOR,
        "prometheusRule": PROMETHEUS_RULE,
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "CI"}},
        "podSecurityContext": {"fsGroup": 65532},
        "clientTokens": {**CLIENT_TOKENS, "key": "tokens.json", "reloadInterval": "1m30s"},
    }
    return {
        "default": ({}, base),
        "production": (
            load_values_file("values-production.yaml"),
            sorted(base + ["HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]),
        ),
        "autoscaling": (
            {"replicaCount": 2, "autoscaling": {"enabled": True}},
            sorted(base + ["HorizontalPodAutoscaler"]),
        ),
        "pdb": ({"replicaCount": 2, "podDisruptionBudget": {"enabled": True}}, sorted(base + ["PodDisruptionBudget"])),
        "pdb-max-unavailable": (
            {"replicaCount": 2, "podDisruptionBudget": {"enabled": True, "minAvailable": None, "maxUnavailable": "50%"}},
            sorted(base + ["PodDisruptionBudget"]),
        ),
        "networkpolicy": ({"networkPolicy": NETWORK_POLICY}, base),
        "no-networkpolicy": ({"networkPolicy": {"enabled": False}}, [k for k in base if k != "NetworkPolicy"]),
        "servicemonitor": ({"serviceMonitor": SERVICE_MONITOR}, sorted(base + ["ServiceMonitor"])),
        "prometheusrule": ({"prometheusRule": PROMETHEUS_RULE}, sorted(base + ["PrometheusRule"])),
        "dashboard": ({"grafanaDashboard": {"enabled": True}}, sorted(base + ["ConfigMap"])),
        "podmonitor": ({"podMonitor": {**SERVICE_MONITOR}}, sorted(base + ["PodMonitor"])),
        "conventions": (CONVENTIONS, base),
        "headless": ({"service": {"headless": {"enabled": True}}}, sorted(base + ["Service"])),
        # A volume from the operator's Secret; the chart renders no Secret.
        "client-tokens": ({"clientTokens": CLIENT_TOKENS}, base),
        "spread-soft": (
            {"replicaCount": 2, "podAntiAffinity": "soft", "topologySpread": {"enabled": True}},
            base,
        ),
        "tls-cert-manager": (
            {
                "tls": {
                    "enabled": True,
                    "clientCertificates": True,
                    "certManager": {"enabled": True, "issuerRef": {"name": "cluster-ca", "kind": "ClusterIssuer"}},
                },
                "service": {"headless": {"enabled": True}},
            },
            sorted(base + ["Certificate", "Service"]),
        ),
        "tls-existing-secret": ({"tls": {"enabled": True, "existingSecret": "gateway-tls"}}, base),
        "no-serviceaccount-no-tests": (
            {"serviceAccount": {"create": False, "name": "existing"}, "tests": {"enabled": False}},
            ["ClusterRoleBinding", "ConfigMap", "ConfigMap", "Deployment", "NetworkPolicy", "Service"],
        ),
        "everything": (
            everything,
            sorted(
                base
                + [
                    "ConfigMap",
                    "HorizontalPodAutoscaler",
                    "PodDisruptionBudget",
                    "PrometheusRule",
                    "Service",
                    "ServiceMonitor",
                ]
            ),
        ),
    }


SCENARIOS = scenarios()


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_renders_expected_objects(scenario: str) -> None:
    values, expected = SCENARIOS[scenario]
    assert kinds(render(values)) == sorted(expected)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_manifests_valid_for_kubernetes(scenario: str, kube_version: str) -> None:
    values, _ = SCENARIOS[scenario]
    for doc in render(values):
        validate_manifest(doc, kube_version)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint_strict(scenario: str) -> None:
    values, _ = SCENARIOS[scenario]
    for kube_version in (KUBE_VERSIONS[0], KUBE_VERSIONS[-1]):
        report = helm.lint(CHART_DIR, values, strict=True, kube_version=f"v{kube_version}.0")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert report["errors"] == [] and problems == [], report


def test_strict_validation_catches_unknown_fields() -> None:
    """The validator itself is strict: a misspelt field fails."""
    import kubernetes_validate

    deployment = next(d for d in render({}) if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        validate_manifest(deployment, KUBE_VERSIONS[0])


def test_servicemonitor_schema_is_strict() -> None:
    import jsonschema

    monitor = next(d for d in render({"serviceMonitor": {"enabled": True}}) if d["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        validate_manifest(monitor, KUBE_VERSIONS[0])
    del monitor["spec"]["endpoints"][0]["intervall"]
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    with pytest.raises(jsonschema.ValidationError, match="does not match"):
        validate_manifest(monitor, KUBE_VERSIONS[0])


def test_kubernetes_validate_uses_each_version() -> None:
    """kubernetes-validate falls back to older schemas silently; make sure
    it has each version the chart claims."""
    import kubernetes_validate

    service = next(d for d in render({}) if d["kind"] == "Service")
    for kube_version in KUBE_VERSIONS:
        assert kubernetes_validate.validate(service, kube_version, strict=True) == kube_version
