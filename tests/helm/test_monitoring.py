"""The PrometheusRule and the Grafana dashboard: they render where asked,
every query is valid PromQL, and each is scoped to this release's pods.
The metric names they use are checked against a running gateway's /metrics
by tests/observability.rs."""

from __future__ import annotations

import importlib.util
import json
import re
from typing import Any

import promql_parser
import pytest

from conftest import CHART_DIR, FULLNAME, NAMESPACE, REPO, find, render

DASHBOARD = json.loads((CHART_DIR / "dashboards" / "codepipeline-gateway.json").read_text())


def parse(expr: str) -> Any:
    """Parses `expr` as Prometheus does, raising on a syntax error."""
    return promql_parser.parse(expr)


def rules(values: dict[str, Any]) -> list[dict[str, Any]]:
    rule = find(render({"prometheusRule": {"enabled": True, **values}}), "PrometheusRule")
    [group] = rule["spec"]["groups"]
    return group["rules"]


def test_alerts_parse_and_are_scoped_to_the_release() -> None:
    alerts = rules({})
    assert [a["alert"] for a in alerts] == [
        "CodePipelineGatewayIdentityRefused",
        "CodePipelineGatewayThrottled",
        "CodePipelineGatewayErrorRatio",
        "CodePipelineGatewayRetryBudgetExhausted",
    ]
    for alert in alerts:
        parse(alert["expr"])
        # Every selector names this release's pods, so two releases in one
        # Prometheus do not fire for each other.
        selectors = re.findall(r"\{([^}]*)\}", alert["expr"])
        assert selectors, alert["expr"]
        for selector in selectors:
            assert f'namespace="{NAMESPACE}"' in selector and f'job="{FULLNAME}"' in selector, alert["expr"]
        assert alert["labels"]["severity"] in ("critical", "warning")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        # The annotation's template survives Helm: Prometheus fills it in.
        assert "{{ $value" in alert["annotations"]["description"]


def test_alert_thresholds_and_extra_rules_come_from_values() -> None:
    alerts = rules(
        {
            "throttled": {"ratio": 0.25, "for": "30m", "severity": "page"},
            "errorRatio": {"ratio": 0.5, "for": "1h", "severity": "ticket"},
            "additionalRules": [{"record": "job:cpgw_calls:rate5m", "expr": "sum(rate(grpc_server_handled_total[5m]))"}],
        }
    )
    by_name = {a.get("alert") or a.get("record"): a for a in alerts}
    throttled, errors = by_name["CodePipelineGatewayThrottled"], by_name["CodePipelineGatewayErrorRatio"]
    assert throttled["expr"].endswith("> 0.25") and throttled["for"] == "30m"
    assert throttled["labels"]["severity"] == "page"
    assert errors["expr"].endswith("> 0.5") and errors["for"] == "1h"
    assert by_name["job:cpgw_calls:rate5m"]["expr"] == "sum(rate(grpc_server_handled_total[5m]))"
    for alert in alerts:
        parse(alert["expr"])


def test_the_rule_lands_where_asked() -> None:
    rule = find(render({"prometheusRule": {"enabled": True, "namespace": "monitoring", "labels": {"release": "p"}}}), "PrometheusRule")
    assert rule["metadata"]["namespace"] == "monitoring" and rule["metadata"]["labels"]["release"] == "p"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"throttled": {"ratio": 0}}, "throttled"),
        ({"errorRatio": {"ratio": 1.5}}, "errorRatio"),
        ({"identityRefused": {"for": "2 minutes"}}, "identityRefused"),
        ({"retryBudgetExhausted": {"severity": ""}}, "retryBudgetExhausted"),
    ],
)
def test_the_schema_refuses_nonsense_thresholds(values: dict[str, Any], message: str) -> None:
    from conftest import render_error

    assert message in render_error({"prometheusRule": {"enabled": True, **values}})


def dashboard_queries() -> list[str]:
    queries = []
    for panel in DASHBOARD["panels"]:
        queries += [target["expr"] for target in panel.get("targets", [])]
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(...) is Grafana's, not PromQL: check its selector.
            inner = re.fullmatch(r"label_values\((.*), \w+\)", variable["query"]["query"])
            assert inner, variable
            queries.append(inner.group(1))
    return queries


def as_prometheus_sees_it(query: str) -> str:
    """Grafana substitutes its variables before Prometheus parses a query."""
    return query.replace("$__rate_interval", "1m").replace("$namespace", "ns").replace("$job", "gw")


def test_every_dashboard_query_parses_and_is_scoped() -> None:
    queries = dashboard_queries()
    assert len(queries) > 15
    for query in queries:
        parse(as_prometheus_sees_it(query))
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            assert 'namespace="$namespace",job="$job"' in target["expr"], target["expr"]
            assert target["datasource"]["uid"] == "${datasource}"


def test_dashboard_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in DASHBOARD["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
    assert len({p["id"] for p in DASHBOARD["panels"]}) == len(DASHBOARD["panels"])


def test_the_dashboard_configmap_carries_the_file_for_the_sidecar() -> None:
    docs = render({"grafanaDashboard": {"enabled": True, "namespace": "grafana", "annotations": {"grafana_folder": "CI"}}})
    config_map = find(docs, "ConfigMap", f"{FULLNAME}-dashboard")
    assert json.loads(config_map["data"]["codepipeline-gateway.json"]) == DASHBOARD
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "grafana"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "CI"}


def test_chart_readme_is_generated_from_values_and_chart() -> None:
    spec = importlib.util.spec_from_file_location("chart_readme", REPO / "scripts" / "chart-readme.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (CHART_DIR / "README.md").read_text()
    assert readme == module.generate(readme), "stale: run .venv-helm/bin/python scripts/chart-readme.py"


@pytest.mark.parametrize(
    ("endpoint", "port"),
    [("http://otel-collector.monitoring.svc:4317", 4317), ("https://otlp.example.com", 443)],
)
def test_tracing_sets_the_otel_variables_and_opens_the_collectors_port(endpoint: str, port: int) -> None:
    docs = render({"tracing": {"otlpEndpoint": endpoint, "serviceName": "gw-eu"}})
    data = find(docs, "ConfigMap", FULLNAME)["data"]
    assert data["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint
    assert data["OTEL_SERVICE_NAME"] == "gw-eu"
    egress = find(docs, "NetworkPolicy")["spec"]["egress"]
    assert {"ports": [{"port": port, "protocol": "TCP"}]} in egress
    default = render({})
    assert not [k for k in find(default, "ConfigMap", FULLNAME)["data"] if k.startswith("OTEL_")]
    assert "OTEL" not in str(find(default, "NetworkPolicy"))
