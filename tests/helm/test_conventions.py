"""The conventions users of other charts look for: commonAnnotations,
global.imageRegistry, extra volumes and mounts, init containers and sidecars,
and a PodMonitor as the alternative to the ServiceMonitor."""

from __future__ import annotations

from conftest import FULLNAME, NAMESPACE, container, find, render, render_error
from test_manifests import CONVENTIONS, PROMETHEUS_RULE, SERVICE_MONITOR


def pod_spec(docs):
    return find(docs, "Deployment")["spec"]["template"]["spec"]


def test_common_annotations_reach_every_resource_and_yield_to_its_own() -> None:
    values = {
        **CONVENTIONS,
        "service": {"headless": {"enabled": True}, "annotations": {"team": "gateway"}},
        "serviceMonitor": SERVICE_MONITOR,
        "prometheusRule": PROMETHEUS_RULE,
        "grafanaDashboard": {"enabled": True},
        "autoscaling": {"enabled": True, "minReplicas": 2},
        "replicaCount": 2,
        "podDisruptionBudget": {"enabled": True},
    }
    docs = render(values)
    assert len(docs) > 12
    for doc in docs:
        annotations = doc["metadata"].get("annotations", {})
        assert annotations.get("example.com/owner") == "ci", doc["kind"]
        expected_team = "gateway" if doc["kind"] == "Service" else "platform"
        assert annotations["team"] == expected_team, doc["kind"]
    # The test pod keeps its hook annotations beside them.
    hook = find(docs, "Pod")["metadata"]["annotations"]
    assert hook["helm.sh/hook"] == "test" and hook["team"] == "platform"
    # Nothing is added when there is nothing to add.
    assert "annotations" not in find(render({}), "ConfigMap", FULLNAME)["metadata"]


def test_global_image_registry_applies_to_every_image() -> None:
    docs = render({"global": {"imageRegistry": "mirror.example.com"}, "image": {"registry": "ignored.example.com"}})
    assert container(docs)["image"] == "mirror.example.com/codepipeline-gateway:0.1.0"
    # The test pod's own registry (ghcr.io) is replaced, not prefixed.
    probe = find(docs, "Pod")["spec"]["containers"][0]["image"]
    assert probe == "mirror.example.com/grpc-ecosystem/grpc-health-probe:v0.4.52"
    own = render({"image": {"registry": "registry.example.com/team", "digest": "sha256:" + "b" * 64}})
    assert container(own)["image"] == "registry.example.com/team/codepipeline-gateway@sha256:" + "b" * 64
    assert find(own, "Pod")["spec"]["containers"][0]["image"] == "ghcr.io/grpc-ecosystem/grpc-health-probe:v0.4.52"


def test_extra_volumes_mounts_init_containers_and_sidecars() -> None:
    values = {
        **CONVENTIONS,
        "auth": {"policy": {"enabled": False}, "serviceAccountTokens": {"enabled": False}, "allowUnauthenticated": True},
        "sidecars": [{"name": "proxy-{{ .Release.Name }}", "image": "envoyproxy/envoy:v1.36.0"}],
    }
    spec = pod_spec(render(values))
    # With no volume of the chart's own, the extras still render.
    assert spec["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}}]
    gateway = spec["containers"][0]
    assert gateway["name"] == "gateway"
    assert gateway["volumeMounts"] == [{"name": "scratch", "mountPath": "/scratch"}]
    assert [c["name"] for c in spec["initContainers"]] == ["wait"]
    # Templated: a sidecar may use the release's names.
    assert [c["name"] for c in spec["containers"]] == ["gateway", "proxy-gw"]
    # Beside the chart's own volumes, after them.
    spec = pod_spec(render(CONVENTIONS))
    names = [v["name"] for v in spec["volumes"]]
    assert names[-1] == "scratch" and "policy" in names
    mounts = [m["name"] for m in spec["containers"][0]["volumeMounts"]]
    assert mounts[-1] == "scratch" and "policy" in mounts


def test_pod_monitor_scrapes_the_pods_with_the_job_label_the_alerts_use() -> None:
    docs = render({"podMonitor": {"enabled": True, "labels": {"release": "prom"}}})
    monitor = find(docs, "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert endpoint["relabelings"][0] == {"targetLabel": "job", "replacement": FULLNAME}
    assert "ServiceMonitor" not in [d["kind"] for d in docs]
    error = render_error({"podMonitor": {"enabled": True}, "serviceMonitor": {"enabled": True}})
    assert "choose one" in error
