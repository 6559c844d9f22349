"""Shared helpers: render the chart with Helm's own engine, validate manifests.

Rendering goes through helm-python-sdk, which binds Helm v4's Go library
(libhelm_c) with ctypes: the same template engine, values coalescing and
values.schema.json validation as `helm install`, offline.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "codepipeline-gateway"
HERE = pathlib.Path(__file__).resolve().parent

RELEASE = "gw"
NAMESPACE = "ci"
FULLNAME = "gw-codepipeline-gateway"

# Every Kubernetes minor the chart claims to support (Chart.yaml kubeVersion
# ">=1.27.0-0"): 1.27 through the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = [f"1.{minor}" for minor in range(27, 38)]

_chart: helm.Chart | None = None


def chart() -> helm.Chart:
    global _chart
    if _chart is None:
        _chart = helm.Chart.load(CHART_DIR)
    return _chart


def load_values_file(name: str) -> dict[str, Any]:
    """Parse a values file with Helm's own YAML reader (as `-f` would)."""
    return helm.values_from_yaml((CHART_DIR / name).read_text())


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def render_raw(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included)."""
    return chart().render(values or {}, name=RELEASE, namespace=NAMESPACE)


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """All rendered Kubernetes objects, parsed."""
    docs: list[dict[str, Any]] = []
    for path, text in sorted(render_raw(values).items()):
        if not path.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def notes(values: dict[str, Any] | None = None) -> str:
    return render_raw(values)["codepipeline-gateway/templates/NOTES.txt"]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, got {len(matches)}"
    return matches[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def render_error(values: dict[str, Any]) -> str:
    """Render, expecting Helm to refuse; return its message."""
    with pytest.raises(helm.HelmError) as excinfo:
        render_raw(values)
    return str(excinfo.value)


_SERVICEMONITOR_SCHEMA = json.loads((HERE / "servicemonitor-v1.schema.json").read_text())
_PROMETHEUSRULE_SCHEMA = json.loads((HERE / "prometheusrule-v1.schema.json").read_text())
_PODMONITOR_SCHEMA = json.loads((HERE / "podmonitor-v1.schema.json").read_text())
_CERTIFICATE_SCHEMA = json.loads((HERE / "certificate-v1.schema.json").read_text())


def validate_manifest(doc: dict[str, Any], kube_version: str) -> None:
    """Validate one object strictly (unknown fields are errors).

    Built-in kinds use kubernetes-validate's strict schemas for that version;
    the Prometheus Operator and cert-manager CRDs use the hand-written
    schemas next to this file.
    """
    if doc["apiVersion"] == "monitoring.coreos.com/v1":
        schema = {
            "PrometheusRule": _PROMETHEUSRULE_SCHEMA,
            "PodMonitor": _PODMONITOR_SCHEMA,
            "ServiceMonitor": _SERVICEMONITOR_SCHEMA,
        }[doc["kind"]]
        jsonschema.Draft202012Validator(schema).validate(doc)
        return
    if doc["apiVersion"] == "cert-manager.io/v1":
        jsonschema.Draft202012Validator(_CERTIFICATE_SCHEMA).validate(doc)
        return
    kubernetes_validate.validate(doc, kube_version, strict=True)
