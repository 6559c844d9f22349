"""What the chart must do, one test per topic."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import yaml

from conftest import (
    CHART_DIR,
    FULLNAME,
    KUBE_VERSIONS,
    NAMESPACE,
    REPO,
    container,
    find,
    notes,
    render,
    render_error,
)

ANY_TYPE = {"category": "*", "owner": "*", "provider": "*", "version": "*"}
SELECTOR = {"app.kubernetes.io/name": "codepipeline-gateway", "app.kubernetes.io/instance": "gw"}


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return find(docs, "Deployment")["spec"]["template"]["spec"]


def config(docs: list[dict[str, Any]]) -> dict[str, str]:
    return find(docs, "ConfigMap", FULLNAME)["data"]


# --- settings: values -> args/env, in one place --------------------------------


def test_default_settings_match_the_binary_defaults() -> None:
    assert config(render({})) == {
        "CPGW_LISTEN": "0.0.0.0:50051",
        "CPGW_ADMIN_LISTEN": "0.0.0.0:9090",
        "CPGW_RATE_LIMIT_RPS": "10",
        "CPGW_RATE_LIMIT_BURST": "20",
        "CPGW_RATE_LIMIT_QUEUE": "100",
        "CPGW_RATE_LIMIT_ADAPTIVE": "true",
        "CPGW_RETRY_MAX_ATTEMPTS": "3",
        "CPGW_RETRY_BASE_DELAY": "100ms",
        "CPGW_RETRY_MAX_DELAY": "5s",
        "CPGW_ATTEMPT_TIMEOUT": "10s",
        "CPGW_DEFAULT_DEADLINE": "30s",
        "CPGW_MAX_CONNECTION_AGE": "5m",
        "CPGW_MAX_CONCURRENT_STREAMS": "100",
        "CPGW_MAX_CALLS_IN_FLIGHT": "1000",
        "CPGW_MAX_SUBSCRIPTIONS": "1000",
        "CPGW_UPSTREAM_CONCURRENCY": "64",
        "CPGW_REQUEST_ARRIVAL_TIMEOUT": "10s",
        "CPGW_HANDSHAKE_TIMEOUT": "10s",
        "CPGW_IDLE_TIMEOUT": "2m",
        "CPGW_KEEPALIVE_INTERVAL": "30s",
        "CPGW_KEEPALIVE_TIMEOUT": "10s",
        "CPGW_MAX_PENDING_RESET_STREAMS": "20",
        "CPGW_SHUTDOWN_DELAY": "5s",
        "CPGW_SHUTDOWN_GRACE": "20s",
        "CPGW_LOG_FORMAT": "text",
        "RUST_LOG": "info",
        "CPGW_REFLECTION": "true",
        "CPGW_AUTH_RELOAD": "10s",
        # Secure by default: service-account tokens, keys from the API server, a policy.
        "CPGW_AUTH_JWT_ISSUER": "https://kubernetes.default.svc.cluster.local",
        "CPGW_AUTH_JWT_AUDIENCE": "codepipeline-gateway",
        "CPGW_AUTH_JWKS_REFRESH": "5m",
        "CPGW_AUTH_JWKS_URL": "https://kubernetes.default.svc/openid/v1/jwks",
        "CPGW_AUTH_JWKS_CA_FILE": "/var/run/secrets/codepipeline-gateway/kube-api/ca.crt",
        "CPGW_AUTH_JWKS_BEARER_TOKEN_FILE": "/var/run/secrets/codepipeline-gateway/kube-api/token",
        "CPGW_POLICY_FILE": "/etc/codepipeline-gateway/policy/policy.yaml",
    }


def test_args_and_env_rendered_from_values() -> None:
    values = {
        "ports": {"grpc": 6000, "metrics": 6001},
        "gateway": {
            "bindAddress": "[::]",
            "rateLimit": {"rps": 2.5, "burst": 7, "queue": 0, "adaptive": False},
            "retry": {"maxAttempts": 5, "baseDelay": "250ms", "maxDelay": "2s"},
            "attemptTimeout": "3s",
            "defaultDeadline": "1m",
            "maxConnectionAge": "90s",
            "limits": {
                "maxConcurrentStreams": 4294967295,
                "maxCallsInFlight": 50,
                "maxSubscriptions": 7,
                "upstreamConcurrency": 8,
                "requestArrivalTimeout": "2s",
                "handshakeTimeout": "1m30s",
                "idleTimeout": "0s",
                "keepaliveInterval": "0s",
                "keepaliveTimeout": "500ms",
                "maxPendingResetStreams": 5,
            },
            "shutdownDelay": "2s",
            "shutdownGrace": "45s",
            "logFormat": "json",
            "logLevel": "codepipeline_gateway=debug,info",
        },
        "aws": {"region": "eu-west-1", "endpointUrl": "http://emulator.ci.svc:4566"},
        "extraArgs": ["--rate-limit-rps=3"],
        "extraEnv": [{"name": "EXTRA", "value": "1"}],
        "extraEnvFrom": [{"secretRef": {"name": "more"}}],
    }
    docs = render(values)
    access = ("CPGW_AUTH", "CPGW_POLICY", "CPGW_REFLECTION")  # tested with auth below
    assert {k: v for k, v in config(docs).items() if not k.startswith(access)} == {
        "CPGW_LISTEN": "[::]:6000",
        "CPGW_ADMIN_LISTEN": "[::]:6001",
        "CPGW_RATE_LIMIT_RPS": "2.5",
        "CPGW_RATE_LIMIT_BURST": "7",
        "CPGW_RATE_LIMIT_QUEUE": "0",
        "CPGW_RATE_LIMIT_ADAPTIVE": "false",
        "CPGW_RETRY_MAX_ATTEMPTS": "5",
        "CPGW_RETRY_BASE_DELAY": "250ms",
        "CPGW_RETRY_MAX_DELAY": "2s",
        "CPGW_ATTEMPT_TIMEOUT": "3s",
        "CPGW_DEFAULT_DEADLINE": "1m",
        "CPGW_MAX_CONNECTION_AGE": "90s",
        "CPGW_MAX_CONCURRENT_STREAMS": "4294967295",
        "CPGW_MAX_CALLS_IN_FLIGHT": "50",
        "CPGW_MAX_SUBSCRIPTIONS": "7",
        "CPGW_UPSTREAM_CONCURRENCY": "8",
        "CPGW_REQUEST_ARRIVAL_TIMEOUT": "2s",
        "CPGW_HANDSHAKE_TIMEOUT": "1m30s",
        "CPGW_IDLE_TIMEOUT": "0s",
        "CPGW_KEEPALIVE_INTERVAL": "0s",
        "CPGW_KEEPALIVE_TIMEOUT": "500ms",
        "CPGW_MAX_PENDING_RESET_STREAMS": "5",
        "CPGW_SHUTDOWN_DELAY": "2s",
        "CPGW_SHUTDOWN_GRACE": "45s",
        "CPGW_LOG_FORMAT": "json",
        "RUST_LOG": "codepipeline_gateway=debug,info",
        "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://emulator.ci.svc:4566",
    }
    c = container(docs)
    assert c["args"] == ["serve", "--rate-limit-rps=3"]
    assert c["envFrom"] == [{"configMapRef": {"name": FULLNAME}}, {"secretRef": {"name": "more"}}]
    assert c["env"] == [{"name": "EXTRA", "value": "1"}]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"grpc": 6000, "metrics": 6001}
    # No AWS credential can come from values: only region and endpoint exist.
    assert not any(k.startswith("AWS_") and "KEY" in k for k in config(docs))


def test_aws_settings_left_unset_by_default() -> None:
    data = config(render({}))
    assert "AWS_REGION" not in data and "AWS_ENDPOINT_URL" not in data
    assert "env" not in container(render({}))


def test_config_checksum_follows_the_config() -> None:
    def checksum(values: dict[str, Any]) -> str:
        return find(render(values), "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    default = checksum({})
    assert re.fullmatch(r"[0-9a-f]{64}", default)
    assert checksum({"podAnnotations": {"x": "y"}}) == default
    assert checksum({"gateway": {"rateLimit": {"rps": 11}}}) != default
    assert checksum({"aws": {"region": "us-east-1"}}) != default
    assert checksum({"clientTokens": {"enabled": True, "existingSecret": "tokens"}}) != default


def test_image_tag_defaults_to_app_version() -> None:
    chart_yaml = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert container(render({}))["image"] == f"codepipeline-gateway:{chart_yaml['appVersion']}"
    assert container(render({"image": {"tag": "1.2.3"}}))["image"] == "codepipeline-gateway:1.2.3"
    digest = "sha256:" + "b" * 64
    assert container(render({"image": {"tag": "1.2.3", "digest": digest}}))["image"] == f"codepipeline-gateway@{digest}"


def test_chart_metadata() -> None:
    chart_yaml = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    assert chart_yaml["apiVersion"] == "v2"
    assert chart_yaml["appVersion"] == cargo["package"]["version"]
    assert chart_yaml["kubeVersion"] == f">={KUBE_VERSIONS[0]}.0-0"


# --- probes and lifecycle ---------------------------------------------------------


def test_readiness_is_native_grpc_and_liveness_only_asks_the_process() -> None:
    c = container(render({"ports": {"grpc": 7000, "metrics": 9100}}))
    readiness, liveness = c["readinessProbe"], c["livenessProbe"]
    assert readiness["grpc"] == {"port": 7000}, "no service name: the server's overall health"
    assert set(readiness) == {"grpc", "initialDelaySeconds", "periodSeconds", "timeoutSeconds", "failureThreshold"}
    assert liveness["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in c["ports"]
    tuned = container(render({"probes": {"readiness": {"periodSeconds": 3, "failureThreshold": 1}}}))
    assert tuned["readinessProbe"]["periodSeconds"] == 3 and tuned["readinessProbe"]["failureThreshold"] == 1
    off = container(render({"probes": {"liveness": {"enabled": False}}}))
    assert "livenessProbe" not in off and "readinessProbe" in off


@pytest.mark.parametrize(
    ("delay", "grace", "expected"),
    [
        ("5s", "20s", 35),
        ("5s", "45s", 60),
        ("5s", "1m", 75),
        ("5s", "1500ms", 17),
        ("0s", "0s", 10),
        ("1m", "20s", 90),
        ("500ms", "20s", 31),
    ],
)
def test_termination_grace_outlasts_shutdown_delay_and_grace(delay: str, grace: str, expected: int) -> None:
    spec = pod_spec(render({"gateway": {"shutdownDelay": delay, "shutdownGrace": grace}}))
    assert spec["terminationGracePeriodSeconds"] == expected


def test_explicit_termination_grace_is_kept() -> None:
    assert pod_spec(render({"terminationGracePeriodSeconds": 26}))["terminationGracePeriodSeconds"] == 26


def test_rollout_keeps_capacity() -> None:
    strategy = find(render({}), "Deployment")["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_resources_have_requests() -> None:
    resources = container(render({}))["resources"]
    assert resources["requests"] == {"cpu": "50m", "memory": "64Mi"}
    assert resources["limits"] == {"memory": "256Mi"}, "memory capped, CPU not throttled"


# --- security ---------------------------------------------------------------------


def test_security_context_is_restricted() -> None:
    docs = render({})
    spec = pod_spec(docs)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(docs)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    # The gateway needs no writable filesystem: only read-only files from the API.
    for volume in spec["volumes"]:
        assert volume.keys() & {"secret", "configMap", "projected"}, volume
    assert all(m["readOnly"] for m in container(docs)["volumeMounts"])
    assert spec["automountServiceAccountToken"] is False
    assert find(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    test_pod = find(docs, "Pod")
    assert test_pod["spec"]["automountServiceAccountToken"] is False
    assert test_pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert test_pod["spec"]["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert test_pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_irsa_annotation_on_service_account() -> None:
    arn = "arn:aws:iam::123456789012:role/codepipeline-gateway"
    docs = render({"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": arn}}})
    sa = find(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": arn}
    assert pod_spec(docs)["serviceAccountName"] == sa["metadata"]["name"] == FULLNAME
    assert "eks.amazonaws.com/role-arn" not in notes({"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": arn}}})
    assert "no AWS credentials" in notes({})


def test_existing_service_account() -> None:
    docs = render({"serviceAccount": {"create": False, "name": "shared-irsa"}})
    assert not [d for d in docs if d["kind"] == "ServiceAccount"]
    assert pod_spec(docs)["serviceAccountName"] == "shared-irsa"


# --- labels and selectors ---------------------------------------------------------


def selectors(docs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Every label selector the chart renders for the gateway's pods."""
    out = []
    for doc in docs:
        kind, spec = doc["kind"], doc.get("spec", {})
        if kind in ("Deployment", "PodDisruptionBudget"):
            out.append(spec["selector"]["matchLabels"])
        elif kind == "Service":
            out.append(spec["selector"])
        elif kind == "NetworkPolicy":
            out.append(spec["podSelector"]["matchLabels"])
        elif kind in ("ServiceMonitor", "PodMonitor"):
            out.append(spec["selector"]["matchLabels"])
    pod = pod_spec(docs)
    for constraint in pod.get("topologySpreadConstraints", []):
        out.append(constraint["labelSelector"]["matchLabels"])
    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    for term in anti.get("requiredDuringSchedulingIgnoredDuringExecution", []):
        out.append(term["labelSelector"]["matchLabels"])
    for term in anti.get("preferredDuringSchedulingIgnoredDuringExecution", []):
        out.append(term["podAffinityTerm"]["labelSelector"]["matchLabels"])
    return out


def test_selectors_never_contain_mutable_labels() -> None:
    everything = {
        "replicaCount": 2,
        "commonLabels": {"team": "platform"},
        "podLabels": {"extra": "x"},
        "podAntiAffinity": "hard",
        "topologySpread": {"enabled": True},
        "service": {"headless": {"enabled": True}},
        "podDisruptionBudget": {"enabled": True},
        "networkPolicy": {"enabled": True, "grpcFrom": [{"podSelector": {}}]},
        "serviceMonitor": {"enabled": True},
    }
    docs = render(everything)
    found = selectors(docs)
    assert len(found) == 9
    assert all(s == SELECTOR for s in found), found
    # Upgrading the image must not change any selector.
    assert selectors(render({**everything, "image": {"tag": "9.9.9"}})) == found
    # Pod labels carry the selector labels plus the mutable ones.
    pod_labels = find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert SELECTOR.items() <= pod_labels.items()
    assert pod_labels["app.kubernetes.io/version"] == "0.1.0" and pod_labels["team"] == "platform"


def test_test_pod_is_not_matched_by_the_deployment_selector() -> None:
    labels = find(render({}), "Pod")["metadata"]["labels"]
    assert not SELECTOR.items() <= labels.items(), "a ReplicaSet could adopt the test pod"


def test_names_are_truncated_to_63_characters() -> None:
    docs = render({"fullnameOverride": "x" * 63})
    # Cluster-scoped, so it carries the namespace too; such names may be 253 long.
    namespaced = [d for d in docs if d["kind"] != "ClusterRoleBinding"]
    assert all(len(d["metadata"]["name"]) <= 63 + len("-test-health") for d in namespaced)
    assert len(find(docs, "ClusterRoleBinding")["metadata"]["name"]) <= 253
    assert find(docs, "Deployment")["metadata"]["name"] == "x" * 63


# --- services ---------------------------------------------------------------------


def test_service_ports() -> None:
    svc = find(render({}), "Service")
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [
        {"name": "grpc", "port": 50051, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP", "appProtocol": "http"},
    ]


def test_headless_service_for_client_side_balancing() -> None:
    docs = render({"service": {"headless": {"enabled": True}}})
    headless = find(docs, "Service", f"{FULLNAME}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert [p["name"] for p in headless["spec"]["ports"]] == ["grpc"]
    assert headless["spec"]["ports"][0]["appProtocol"] == "grpc"
    assert f"dns:///{FULLNAME}-headless.{NAMESPACE}.svc:50051" in notes({"service": {"headless": {"enabled": True}}})


# --- optional features ------------------------------------------------------------


def test_network_policy_rules() -> None:
    workers = {"namespaceSelector": {"matchLabels": {"codepipeline-gateway/client": "true"}}}
    docs = render({"networkPolicy": {"enabled": True, "grpcFrom": [workers]}})
    spec = find(docs, "NetworkPolicy")["spec"]
    assert spec["podSelector"] == {"matchLabels": SELECTOR}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    grpc_rule, metrics_rule = spec["ingress"]
    assert grpc_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    test_pod_labels = find(docs, "Pod")["metadata"]["labels"]
    assert grpc_rule["from"][0] == workers
    test_peer = grpc_rule["from"][1]["podSelector"]["matchLabels"]
    assert test_peer.items() <= test_pod_labels.items(), "helm test must reach the gateway"
    assert metrics_rule == {
        "ports": [{"port": "metrics", "protocol": "TCP"}],
        "from": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                "podSelector": {},
            }
        ],
    }
    dns, https, api_server = spec["egress"]
    # The token issuer's keys come from the API server, often behind port 6443.
    assert api_server == {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 6443, "protocol": "TCP"}]}
    assert sorted((p["port"], p["protocol"]) for p in dns["ports"]) == [(53, "TCP"), (53, "UDP")]
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert https == {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443, "protocol": "TCP"}]}


def test_network_policy_is_on_by_default_and_keeps_the_admin_port_for_monitoring() -> None:
    docs = render({})
    spec = find(docs, "NetworkPolicy")["spec"]
    grpc_rule, metrics_rule = spec["ingress"]
    # Every pod of the cluster may dial gRPC (and must authenticate); nothing from outside it.
    assert grpc_rule["from"][0] == {"namespaceSelector": {}}
    assert metrics_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}, "podSelector": {}}
    ]
    assert [p["port"] for p in metrics_rule["ports"]] == ["metrics"]
    assert "NetworkPolicy" not in [d["kind"] for d in render({"networkPolicy": {"enabled": False}})]


def test_network_policy_options() -> None:
    docs = render(
        {
            "tests": {"enabled": False},
            "networkPolicy": {
                "enabled": True,
                "grpcFrom": [{"podSelector": {"matchLabels": {"app": "worker"}}}],
                "metrics": {"namespace": "observability", "podSelector": {"matchLabels": {"app": "prometheus"}}},
                "egress": {"httpsCidrs": ["10.1.0.0/16"], "eksPodIdentityAgent": True},
            },
        }
    )
    spec = find(docs, "NetworkPolicy")["spec"]
    assert spec["ingress"][0]["from"] == [{"podSelector": {"matchLabels": {"app": "worker"}}}]
    assert spec["ingress"][1]["from"][0] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
        "podSelector": {"matchLabels": {"app": "prometheus"}},
    }
    assert spec["egress"][1]["to"] == [{"ipBlock": {"cidr": "10.1.0.0/16"}}]
    assert spec["egress"][2]["ports"] == [{"port": 6443, "protocol": "TCP"}]
    assert spec["egress"][3] == {
        "to": [{"ipBlock": {"cidr": "169.254.170.23/32"}}, {"ipBlock": {"cidr": "fd00:ec2::23/128"}}],
        "ports": [{"port": 80, "protocol": "TCP"}],
    }


def test_autoscaling() -> None:
    docs = render({"replicaCount": 2, "autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 75}})
    assert "replicas" not in find(docs, "Deployment")["spec"], "the HPA owns the replica count"
    hpa = find(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert [(m["resource"]["name"], m["resource"]["target"]["averageUtilization"]) for m in hpa["metrics"]] == [
        ("cpu", 70),
        ("memory", 75),
    ]


def test_pod_disruption_budget() -> None:
    pdb = find(render({"replicaCount": 3, "podDisruptionBudget": {"enabled": True, "minAvailable": 2}}), "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 2, "selector": {"matchLabels": SELECTOR}}
    pdb = find(
        render({"replicaCount": 2, "podDisruptionBudget": {"enabled": True, "minAvailable": None, "maxUnavailable": 1}}),
        "PodDisruptionBudget",
    )
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]


def test_service_monitor_scrapes_the_metrics_port() -> None:
    docs = render({"service": {"headless": {"enabled": True}}, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}})
    sm = find(docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["metadata"]["namespace"] == NAMESPACE
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert sm["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    # It selects the main Service, not the headless one (which has no metrics port).
    expr = sm["spec"]["selector"]["matchExpressions"]
    main, headless = find(docs, "Service", FULLNAME), find(docs, "Service", f"{FULLNAME}-headless")
    assert expr == [{"key": "codepipeline-gateway/headless", "operator": "DoesNotExist"}]
    assert expr[0]["key"] not in main["metadata"]["labels"] and expr[0]["key"] in headless["metadata"]["labels"]
    assert find(render({"serviceMonitor": {"enabled": True, "namespace": "monitoring"}}), "ServiceMonitor")["metadata"][
        "namespace"
    ] == "monitoring"


def test_spread_and_anti_affinity() -> None:
    spec = pod_spec(render({"replicaCount": 3, "topologySpread": {"enabled": True}, "podAntiAffinity": "hard"}))
    assert [(c["topologyKey"], c["whenUnsatisfiable"]) for c in spec["topologySpreadConstraints"]] == [
        ("topology.kubernetes.io/zone", "ScheduleAnyway"),
        ("kubernetes.io/hostname", "ScheduleAnyway"),
    ]
    assert spec["topologySpreadConstraints"][0]["matchLabelKeys"] == ["pod-template-hash"]
    assert spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == (
        "kubernetes.io/hostname"
    )
    raw = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    assert pod_spec(render({"podAntiAffinity": "soft", "affinity": raw}))["affinity"] == raw
    assert "affinity" not in pod_spec(render({})) and "topologySpreadConstraints" not in pod_spec(render({}))


def test_production_overlay_is_highly_available() -> None:
    from conftest import load_values_file

    docs = render(load_values_file("values-production.yaml"))
    hpa = find(docs, "HorizontalPodAutoscaler")["spec"]
    pdb = find(docs, "PodDisruptionBudget")["spec"]
    assert hpa["minReplicas"] >= 3
    assert 0 < pdb["minAvailable"] < hpa["minReplicas"]
    spec = pod_spec(docs)
    assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert "preferredDuringSchedulingIgnoredDuringExecution" in spec["affinity"]["podAntiAffinity"]
    assert find(docs, "Service", f"{FULLNAME}-headless")
    assert config(docs)["CPGW_LOG_FORMAT"] == "json"


def test_client_tokens_mount_the_operators_secret() -> None:
    default = render({})
    assert "client-tokens" not in [v["name"] for v in pod_spec(default)["volumes"]]
    assert "client-tokens" not in [m["name"] for m in container(default)["volumeMounts"]]
    assert not [k for k in config(default) if k.startswith("CPGW_CLIENT_TOKENS")]

    values = {"clientTokens": {"enabled": True, "existingSecret": "partner-client-tokens", "reloadInterval": "30s"}}
    docs = render(values)
    assert "Secret" not in [d["kind"] for d in docs], "tokens are secrets: the chart never creates the Secret"
    volume, = [v for v in pod_spec(docs)["volumes"] if v["name"] == "client-tokens"]
    assert volume["secret"]["secretName"] == "partner-client-tokens"
    assert volume["secret"]["items"] == [{"key": "client-tokens.json", "path": "client-tokens.json"}]
    assert "optional" not in volume["secret"], "a missing Secret must keep the pod from starting"
    mount, = [m for m in container(docs)["volumeMounts"] if m["name"] == "client-tokens"]
    # The directory, never a subPath: subPath mounts never receive Secret updates.
    assert mount == {"name": "client-tokens", "mountPath": "/etc/codepipeline-gateway/client-tokens", "readOnly": True}
    data = config(docs)
    assert {k: v for k, v in data.items() if k not in config(default)} == {
        "CPGW_CLIENT_TOKENS_FILE": "/etc/codepipeline-gateway/client-tokens/client-tokens.json",
        "CPGW_CLIENT_TOKENS_RELOAD": "30s",
    }
    assert {k: data[k] for k in config(default)} == config(default)
    # Settings stay in the ConfigMap only: no env, no flag added to the container.
    c = container(docs)
    assert "env" not in c and c["args"] == ["serve"]
    assert c["envFrom"] == [{"configMapRef": {"name": FULLNAME}}]

    other = render({"clientTokens": {"enabled": True, "existingSecret": "t", "key": "tokens.json"}})
    assert pod_spec(other)["volumes"][0]["secret"]["items"] == [{"key": "tokens.json", "path": "tokens.json"}]
    assert pod_spec(other)["volumes"][0]["name"] == "client-tokens"
    assert config(other)["CPGW_CLIENT_TOKENS_FILE"] == "/etc/codepipeline-gateway/client-tokens/tokens.json"
    text = notes(values)
    assert 'Secret "partner-client-tokens", key "client-tokens.json"' in text and "every 30s" in text
    assert "client tokens" not in notes({})


@pytest.mark.parametrize(("pod_security_context", "mode"), [({}, 0o444), ({"fsGroup": 65532}, 0o440), ({"fsGroup": 0}, 0o440)])
def test_client_token_file_is_read_only_and_readable_by_the_gateway(
    pod_security_context: dict[str, Any], mode: int
) -> None:
    """Secret files belong to root unless the pod has an fsGroup: uid 65532
    can read a 0440 file only through that group."""
    values = {
        "podSecurityContext": pod_security_context,
        "clientTokens": {"enabled": True, "existingSecret": "partner-client-tokens"},
    }
    assert pod_spec(render(values))["volumes"][0]["secret"]["defaultMode"] == mode
    assert mode & 0o222 == 0, "nobody may write it"


# --- authentication and the caller policy ----------------------------------------


def volumes_by_name(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_spec(docs).get("volumes", [])}


def test_secure_by_default_service_account_tokens_and_an_empty_policy() -> None:
    docs = render({})
    data = config(docs)
    assert "CPGW_ALLOW_UNAUTHENTICATED" not in data
    assert data["CPGW_AUTH_JWT_AUDIENCE"] == "codepipeline-gateway"
    # The pod's own token for the API server and the cluster CA, nothing else.
    kube_api = volumes_by_name(docs)["kube-api"]["projected"]["sources"]
    assert kube_api[0] == {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}
    assert kube_api[1]["configMap"] == {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    mounts = {m["name"]: m for m in container(docs)["volumeMounts"]}
    assert mounts["kube-api"]["mountPath"] + "/token" == data["CPGW_AUTH_JWKS_BEARER_TOKEN_FILE"]
    assert mounts["policy"]["mountPath"] + "/policy.yaml" == data["CPGW_POLICY_FILE"]
    assert all("subPath" not in m for m in mounts.values()), "directories receive updates"
    binding = find(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "system:service-account-issuer-discovery",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    policy = find(docs, "ConfigMap", f"{FULLNAME}-policy")
    assert yaml.safe_load(policy["data"]["policy.yaml"]) == {"rules": []}
    assert volumes_by_name(docs)["policy"]["configMap"]["name"] == f"{FULLNAME}-policy"
    text = notes({})
    assert "every job-worker call is refused" in text
    assert "audience codepipeline-gateway" in text


def test_policy_rules_render_into_the_policy_file() -> None:
    rules = [
        {
            "identities": ["system:serviceaccount:ci:*", "spiffe://example.org/ns/ci/*"],
            "verbs": ["poll", "put_result"],
            "actionTypes": [{"category": "Build", "owner": "Custom", "provider": "B", "version": "*"}],
        }
    ]
    docs = render({"auth": {"policy": {"rules": rules}}})
    text = find(docs, "ConfigMap", f"{FULLNAME}-policy")["data"]["policy.yaml"]
    assert yaml.safe_load(text) == {"rules": rules}
    assert "is refused" not in notes({"auth": {"policy": {"rules": rules}}})
    off = render({"auth": {"policy": {"enabled": False}}})
    assert "CPGW_POLICY_FILE" not in config(off)
    assert "policy" not in volumes_by_name(off)
    assert [d for d in off if d["kind"] == "ConfigMap"] == [find(off, "ConfigMap", FULLNAME)]
    assert "every authenticated caller may do everything" in notes({"auth": {"policy": {"enabled": False}}})


def test_an_external_key_url_needs_no_api_token_volume_or_rbac() -> None:
    url = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE/keys"
    docs = render(
        {
            "auth": {
                "serviceAccountTokens": {
                    "issuer": "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE",
                    "audiences": ["codepipeline-gateway", "gateway"],
                    "jwksUrl": url,
                    "jwksRefresh": "1m",
                }
            }
        }
    )
    data = config(docs)
    assert data["CPGW_AUTH_JWKS_URL"] == url
    assert data["CPGW_AUTH_JWT_AUDIENCE"] == "codepipeline-gateway,gateway"
    assert data["CPGW_AUTH_JWKS_REFRESH"] == "1m"
    assert "CPGW_AUTH_JWKS_CA_FILE" not in data and "CPGW_AUTH_JWKS_BEARER_TOKEN_FILE" not in data
    assert "kube-api" not in volumes_by_name(docs)
    assert "ClusterRoleBinding" not in [d["kind"] for d in docs]
    assert "ClusterRoleBinding" not in [d["kind"] for d in render({"rbac": {"create": False}})]


def test_static_tokens_mount_the_operators_secret_and_open_mode_says_so() -> None:
    docs = render({"auth": {"staticTokens": {"enabled": True, "existingSecret": "gateway-tokens"}}})
    assert "Secret" not in [d["kind"] for d in docs]
    volume = volumes_by_name(docs)["auth-tokens"]["secret"]
    assert volume["secretName"] == "gateway-tokens"
    assert volume["items"] == [{"key": "tokens.yaml", "path": "tokens.yaml"}]
    assert config(docs)["CPGW_AUTH_TOKENS_FILE"] == "/etc/codepipeline-gateway/auth-tokens/tokens.yaml"
    only_static = render(
        {"auth": {"serviceAccountTokens": {"enabled": False}, "staticTokens": {"enabled": True, "existingSecret": "t"}}}
    )
    assert not [k for k in config(only_static) if k.startswith("CPGW_AUTH_JWT")]
    open_values = {"auth": {"serviceAccountTokens": {"enabled": False}, "allowUnauthenticated": True}}
    assert config(render(open_values))["CPGW_ALLOW_UNAUTHENTICATED"] == "true"
    assert "WARNING: auth.allowUnauthenticated" in notes(open_values)


def test_tls_from_cert_manager_with_client_certificates() -> None:
    values = {
        "tls": {
            "enabled": True,
            "clientCertificates": True,
            "certManager": {"enabled": True, "issuerRef": {"name": "workload-ca", "kind": "ClusterIssuer"}},
        },
        "service": {"headless": {"enabled": True}},
    }
    docs = render(values)
    cert = find(docs, "Certificate")["spec"]
    assert cert["secretName"] == f"{FULLNAME}-tls"
    assert cert["issuerRef"] == {"name": "workload-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert f"{FULLNAME}.{NAMESPACE}.svc" in cert["dnsNames"]
    assert f"{FULLNAME}-headless.{NAMESPACE}.svc" in cert["dnsNames"]
    assert cert["privateKey"]["rotationPolicy"] == "Always"
    data = config(docs)
    assert data["CPGW_TLS_CERT_FILE"] == "/etc/codepipeline-gateway/tls/tls.crt"
    assert data["CPGW_TLS_KEY_FILE"] == "/etc/codepipeline-gateway/tls/tls.key"
    assert data["CPGW_TLS_CLIENT_CA_FILE"] == "/etc/codepipeline-gateway/tls/ca.crt"
    volume = volumes_by_name(docs)["tls"]["secret"]
    assert volume["secretName"] == f"{FULLNAME}-tls"
    assert [i["key"] for i in volume["items"]] == ["tls.crt", "tls.key", "ca.crt"]
    # The kubelet's gRPC probes cannot speak TLS: the admin port's /readyz.
    c = container(docs)
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert "grpc" not in c["readinessProbe"]
    assert "-tls" in find(docs, "Pod")["spec"]["containers"][0]["args"]


def test_tls_from_an_existing_secret_and_plaintext_by_default() -> None:
    docs = render({"tls": {"enabled": True, "existingSecret": "gateway-tls"}})
    assert "Certificate" not in [d["kind"] for d in docs]
    assert volumes_by_name(docs)["tls"]["secret"]["secretName"] == "gateway-tls"
    assert "CPGW_TLS_CLIENT_CA_FILE" not in config(docs)
    default = render({})
    assert not [k for k in config(default) if k.startswith("CPGW_TLS")]
    assert container(default)["readinessProbe"]["grpc"] == {"port": 50051}
    # Liveness never asks the readiness state: a refused AWS identity is not
    # cured by restarting.
    for docs_ in (default, docs_tls := render({"tls": {"enabled": True, "existingSecret": "t"}})):
        assert container(docs_)["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container(docs_tls)["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "-tls" not in find(default, "Pod")["spec"]["containers"][0]["args"]
    # Client certificates alone are a way to authenticate.
    mtls_only = {
        "auth": {"serviceAccountTokens": {"enabled": False}},
        "tls": {"enabled": True, "existingSecret": "t", "clientCertificates": True},
    }
    assert config(render(mtls_only))["CPGW_TLS_CLIENT_CA_FILE"].endswith("ca.crt")


# --- helm test hook and NOTES -----------------------------------------------------


def test_helm_test_hook_checks_grpc_health() -> None:
    pod = find(render({"ports": {"grpc": 6000}}), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    c = pod["spec"]["containers"][0]
    repository, tag = c["image"].rsplit(":", 1)
    assert repository == "ghcr.io/grpc-ecosystem/grpc-health-probe"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), "the probe image is pinned"
    assert c["command"] == ["/ko-app/grpc-health-probe"]
    assert f"-addr={FULLNAME}.{NAMESPACE}.svc:6000" in c["args"]
    assert not [d for d in render({"tests": {"enabled": False}}) if d["kind"] == "Pod"]


def test_notes_print_address_and_health_check() -> None:
    text = notes({})
    address = f"{FULLNAME}.{NAMESPACE}.svc:50051"
    assert f"  {address}\n" in text
    assert f"-plaintext {address} grpc.health.v1.Health/Check" in text
    assert "--image=fullstorydev/grpcurl:v1.9.3" in text


# --- values.schema.json -----------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": "3"}, "at '/replicaCount': got string, want integer"),
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        ({"gateway": {"rateLimit": {"rps": 0}}}, "at '/gateway/rateLimit/rps': exclusiveMinimum"),
        ({"gateway": {"rateLimit": {"burst": 0}}}, "at '/gateway/rateLimit/burst': minimum"),
        ({"gateway": {"rateLimit": {"rps": 20000}}}, "at '/gateway/rateLimit/rps': maximum"),
        ({"gateway": {"logFormat": "xml"}}, "value must be one of 'text', 'json'"),
        ({"gateway": {"retry": {"baseDelay": "5 seconds"}}}, "at '/gateway/retry/baseDelay'"),
        ({"gateway": {"shutdownGrace": "1h"}}, "at '/gateway/shutdownGrace'"),
        ({"gateway": {"shutdownDelay": "1h"}}, "at '/gateway/shutdownDelay'"),
        ({"gateway": {"shutdownDelay": "-1s"}}, "at '/gateway/shutdownDelay'"),
        ({"gateway": {"bogus": 1}}, "additional properties 'bogus' not allowed"),
        ({"gateway": {"rateLimit": {"adaptive": "yes"}}}, "at '/gateway/rateLimit/adaptive': got string, want boolean"),
        ({"gateway": {"limits": {"maxConcurrentStreams": 0}}}, "at '/gateway/limits/maxConcurrentStreams': minimum"),
        ({"gateway": {"limits": {"maxCallsInFlight": 4294967296}}}, "at '/gateway/limits/maxCallsInFlight': maximum"),
        ({"gateway": {"limits": {"upstreamConcurrency": 0}}}, "at '/gateway/limits/upstreamConcurrency': minimum"),
        ({"gateway": {"limits": {"maxPendingResetStreams": 0}}}, "at '/gateway/limits/maxPendingResetStreams': minimum"),
        ({"gateway": {"limits": {"requestArrivalTimeout": "0s"}}}, "at '/gateway/limits/requestArrivalTimeout'"),
        ({"gateway": {"limits": {"handshakeTimeout": "0ms0s"}}}, "at '/gateway/limits/handshakeTimeout'"),
        ({"gateway": {"limits": {"keepaliveTimeout": "00s"}}}, "at '/gateway/limits/keepaliveTimeout'"),
        ({"gateway": {"limits": {"idleTimeout": "2 minutes"}}}, "at '/gateway/limits/idleTimeout'"),
        ({"ports": {"grpc": 70000}}, "at '/ports/grpc': maximum"),
        ({"replicaCount": 0}, "at '/replicaCount': minimum"),
        ({"autoscaling": {"targetCPUUtilizationPercentage": 150}}, "at '/autoscaling/targetCPUUtilizationPercentage'"),
        ({"podAntiAffinity": "always"}, "at '/podAntiAffinity'"),
        ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'"),
        ({"aws": {"region": "Europe"}}, "at '/aws/region'"),
        ({"aws": {"accessKeyId": "AKIA..."}}, "additional properties 'accessKeyId' not allowed"),
        ({"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": 1}}}, "got number, want string"),
        ({"podDisruptionBudget": {"minAvailable": "half"}}, "at '/podDisruptionBudget/minAvailable'"),
        ({"networkPolicy": {"egress": {"httpsCidrs": ["everywhere"]}}}, "at '/networkPolicy/egress/httpsCidrs/0'"),
        ({"auth": {"policy": {"rules": [{"identities": ["sys*"], "verbs": ["poll"], "actionTypes": [ANY_TYPE]}]}}}, "at '/auth/policy/rules/0/identities/0'"),
        ({"auth": {"policy": {"rules": [{"identities": ["a"], "verbs": ["deploy"], "actionTypes": [ANY_TYPE]}]}}}, "at '/auth/policy/rules/0/verbs/0'"),
        ({"auth": {"policy": {"rules": [{"identities": ["a"], "verbs": ["poll"], "actionTypes": []}]}}}, "at '/auth/policy/rules/0/actionTypes'"),
        ({"auth": {"policy": {"rules": [{"identities": ["a"], "verbs": ["poll"], "actionTypes": [{**ANY_TYPE, "category": "Bild"}]}]}}}, "at '/auth/policy/rules/0/actionTypes/0/category'"),
        ({"auth": {"policy": {"rules": [{"identities": ["a"], "verb": ["poll"], "actionTypes": [ANY_TYPE]}]}}}, "at '/auth/policy/rules/0'"),
        ({"auth": {"serviceAccountTokens": {"jwksUrl": "http://issuer.example/keys"}}}, "at '/auth/serviceAccountTokens/jwksUrl'"),
        ({"auth": {"serviceAccountTokens": {"audiences": []}}}, "at '/auth/serviceAccountTokens/audiences'"),
        ({"auth": {"reloadInterval": "0s"}}, "at '/auth/reloadInterval'"),
        ({"serviceMonitor": {"interval": "often"}}, "at '/serviceMonitor/interval'"),
        ({"clientTokens": {"enabled": "yes"}}, "at '/clientTokens/enabled': got string, want boolean"),
        ({"clientTokens": {"tokens": {"client-a": "t0ken"}}}, "at '/clientTokens': additional properties 'tokens' not allowed"),
        ({"clientTokens": {"reloadInterval": "10 seconds"}}, "at '/clientTokens/reloadInterval'"),
        ({"clientTokens": {"reloadInterval": "0s"}}, "at '/clientTokens/reloadInterval'"),
        ({"clientTokens": {"key": "../tokens.json"}}, "at '/clientTokens/key'"),
        ({"clientTokens": {"key": ".."}}, "at '/clientTokens/key'"),
        ({"clientTokens": {"existingSecret": "Partner_Tokens"}}, "at '/clientTokens/existingSecret'"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    error = render_error(values)
    assert "values don't meet the specifications of the schema" in error
    assert message in error, error


# --- fail guards ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"autoscaling": {"enabled": True}},
            "replicaCount (1) is below autoscaling.minReplicas (2)",
        ),
        (
            {"replicaCount": 9, "autoscaling": {"enabled": True}},
            "replicaCount (9) is above autoscaling.maxReplicas (6)",
        ),
        (
            {"replicaCount": 5, "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}},
            "autoscaling.minReplicas (5) must not exceed autoscaling.maxReplicas (3)",
        ),
        (
            {"replicaCount": 2, "autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}},
            "neither targetCPUUtilizationPercentage nor targetMemoryUtilizationPercentage",
        ),
        (
            {"podDisruptionBudget": {"enabled": True}},
            "podDisruptionBudget.minAvailable (1) must be below the replica count (1)",
        ),
        (
            {"replicaCount": 3, "podDisruptionBudget": {"enabled": True, "minAvailable": 3}},
            "podDisruptionBudget.minAvailable (3) must be below the replica count (3)",
        ),
        (
            {"replicaCount": 2, "autoscaling": {"enabled": True}, "podDisruptionBudget": {"enabled": True, "minAvailable": 2}},
            "podDisruptionBudget.minAvailable (2) must be below the replica count (2)",
        ),
        (
            {"replicaCount": 2, "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1}},
            "set only one of minAvailable and maxUnavailable",
        ),
        (
            {"replicaCount": 2, "podDisruptionBudget": {"enabled": True, "minAvailable": None, "maxUnavailable": 0}},
            "maxUnavailable 0 blocks every eviction",
        ),
        (
            {"terminationGracePeriodSeconds": 25},
            "terminationGracePeriodSeconds (25) must be longer than gateway.shutdownDelay + gateway.shutdownGrace (5s + 20s = 25s)",
        ),
        (
            {"gateway": {"shutdownGrace": "1m"}, "terminationGracePeriodSeconds": 45},
            "terminationGracePeriodSeconds (45) must be longer than gateway.shutdownDelay + gateway.shutdownGrace (5s + 1m = 65s)",
        ),
        (
            {"networkPolicy": {"enabled": True, "grpcFrom": []}},
            "networkPolicy.enabled needs networkPolicy.grpcFrom",
        ),
        (
            {"clientTokens": {"enabled": True}},
            "clientTokens.enabled needs clientTokens.existingSecret",
        ),
        (
            {"auth": {"staticTokens": {"enabled": True}}},
            "auth.staticTokens.enabled needs auth.staticTokens.existingSecret",
        ),
        (
            {"auth": {"serviceAccountTokens": {"enabled": False}}},
            "no way for callers to authenticate",
        ),
        ({"tls": {"enabled": True}}, "tls.enabled needs tls.existingSecret"),
        ({"tls": {"certManager": {"enabled": True, "issuerRef": {"name": "ca"}}}}, "tls.certManager.enabled needs tls.enabled"),
        ({"tls": {"enabled": True, "certManager": {"enabled": True}}}, "tls.certManager.enabled needs tls.certManager.issuerRef.name"),
        ({"tls": {"clientCertificates": True}}, "tls.clientCertificates needs tls.enabled"),
        ({"gateway": {"retry": {"baseDelay": "2s", "maxDelay": "1s500ms"}}}, "gateway.retry.maxDelay (1s500ms) must not be shorter"),
        ({"auth": {"serviceAccountTokens": {"jwksRefresh": "9s999ms"}}}, "jwksRefresh (9s999ms) must be at least 10s"),
    ],
)
def test_fail_guards(values: dict[str, Any], message: str) -> None:
    error = render_error(values)
    assert "execution error" in error
    assert message in error, error


# --- documentation ----------------------------------------------------------------

FREE_FORM = {
    "strategy",
    "podSecurityContext",
    "securityContext",
    "resources",
    "namespaceSelector",
    "podSelector",
    # Maps of the user's own keys (a default like grafana_dashboard: "1" is an example, not a setting).
    "labels",
    "annotations",
}


def value_keys() -> list[tuple[str, bool]]:
    """(dotted key path, has a comment directly above) for values.yaml."""
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    out: list[tuple[str, bool]] = []
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in lines:
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if match and not line.lstrip().startswith("#"):
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            parents = [name for _, name in stack]
            stack.append((indent, match.group(2)))
            if not set(parents) & FREE_FORM:
                out.append((".".join(parents + [match.group(2)]), previous.lstrip().startswith("#")))
        if line.strip():
            previous = line
    return out


def test_every_value_has_a_comment() -> None:
    keys = value_keys()
    assert len(keys) > 80
    assert [key for key, commented in keys if not commented] == []


def test_readme_documents_every_leaf_value() -> None:
    readme = (CHART_DIR / "README.md").read_text()
    paths = [key for key, _ in value_keys()]
    leaves = [p for p in paths if not any(other.startswith(p + ".") for other in paths)]
    missing = [p for p in leaves if f"`{p}`" not in readme]
    assert missing == []


def test_readme_iam_policy_grants_exactly_the_job_worker_actions() -> None:
    import json

    readme = (CHART_DIR / "README.md").read_text()
    block = re.search(r"```json\n(.*?)```", readme, re.S)
    assert block, "the README carries an example IAM policy"
    policy = json.loads(block.group(1))
    actions = sorted(a for s in policy["Statement"] for a in s["Action"])
    assert actions == sorted(
        f"codepipeline:{a}"
        for a in (
            "AcknowledgeJob",
            "AcknowledgeThirdPartyJob",
            "GetJobDetails",
            "GetThirdPartyJobDetails",
            "PollForJobs",
            "PollForThirdPartyJobs",
            "PutJobFailureResult",
            "PutJobSuccessResult",
            "PutThirdPartyJobFailureResult",
            "PutThirdPartyJobSuccessResult",
        )
    )
    assert all(s["Effect"] == "Allow" and s["Resource"] == "*" for s in policy["Statement"])


# --- targets: other AWS accounts ---------------------------------------------------

TARGET_A = {
    "name": "team-a",
    "region": "eu-west-1",
    "roleArn": "arn:aws:iam::111111111111:role/codepipeline-gateway",
    "externalId": "team-a-7f3c",
    "actionTypes": [{"category": "Build", "owner": "Custom", "provider": "TeamABuild"}],
}


def check_targets_file(tmp_path, text: str):
    """`codepipeline-gateway check-config` with `text` as its targets file."""
    import os
    import subprocess

    (tmp_path / "targets.yaml").write_text(text)
    return subprocess.run(
        [str(REPO / "target" / "debug" / "codepipeline-gateway"), "check-config"],
        env={"PATH": os.environ.get("PATH", ""), "CPGW_ALLOW_UNAUTHENTICATED": "true",
             "CPGW_TARGETS_FILE": str(tmp_path / "targets.yaml")},
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_targets_render_into_a_mounted_file_the_binary_accepts(tmp_path) -> None:
    team_b = {"name": "team-b", "region": "us-west-2", "rateLimitRps": 10000, "rateLimitBurst": 4294967295}
    docs = render({"targets": [TARGET_A, team_b]})
    data = config(docs)
    mounts = {m["name"]: m for m in container(docs)["volumeMounts"]}
    assert mounts["targets"]["mountPath"] + "/targets.yaml" == data["CPGW_TARGETS_FILE"]
    assert volumes_by_name(docs)["targets"]["configMap"]["name"] == f"{FULLNAME}-targets"
    text = find(docs, "ConfigMap", f"{FULLNAME}-targets")["data"]["targets.yaml"]
    assert yaml.safe_load(text) == {"targets": [TARGET_A, team_b]}
    annotations = find(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/targets" in annotations, "a changed target rolls the pods"
    # The file the chart renders is one the gateway starts with.
    run = check_targets_file(tmp_path, text)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "team-a" in run.stdout
    off = render({})
    assert "CPGW_TARGETS_FILE" not in config(off)
    assert "targets" not in volumes_by_name(off)


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "default", "region": "eu-west-1"},
        {"name": "Team-A", "region": "eu-west-1"},
        {"name": "team-a", "region": "europe"},
        {"name": "team-a", "region": "eu-west-1", "roleArn": "arn:aws:iam::1:role/x"},
        {"name": "team-a", "region": "eu-west-1", "externalId": "abc"},
        {"name": "team-a", "region": "eu-west-1", "endpointUrl": "ftp://x"},
        {"name": "team-a", "region": "eu-west-1", "roles": []},
        {"name": "team-a", "region": "eu-west-1", "rateLimitRps": 0},
        {"name": "team-a", "region": "eu-west-1", "rateLimitRps": 10000.5},
        {"name": "team-a", "region": "eu-west-1", "rateLimitBurst": 0},
        {"name": "team-a", "region": "eu-west-1", "rateLimitBurst": 4294967296},
        {"name": "team-a", "region": "eu-west-1", "actionTypes": [{"category": "Bild", "owner": "Custom", "provider": "x"}]},
    ],
    ids=lambda b: ",".join(f"{k}={v}" for k, v in b.items()),
)
def test_targets_the_binary_refuses_the_chart_refuses_too(bad: dict[str, Any], tmp_path) -> None:
    assert render_error({"targets": [bad]})
    run = check_targets_file(tmp_path, yaml.safe_dump({"targets": [bad]}))
    assert run.returncode != 0, run.stdout


def test_policy_rules_may_name_targets() -> None:
    rule = {"identities": ["team-a"], "verbs": ["*"], "actionTypes": [ANY_TYPE], "targets": ["team-a"]}
    docs = render({"auth": {"policy": {"rules": [rule]}}})
    text = find(docs, "ConfigMap", f"{FULLNAME}-policy")["data"]["policy.yaml"]
    assert yaml.safe_load(text) == {"rules": [rule]}
    assert render_error({"auth": {"policy": {"rules": [{**rule, "targets": []}]}}})
    assert render_error({"auth": {"policy": {"rules": [{**rule, "targets": ["Team"]}]}}})
