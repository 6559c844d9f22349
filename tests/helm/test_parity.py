"""The chart accepts exactly what the binary accepts, and its defaults are the
binary's: every case below is decided twice, by Helm (the values schema and
the chart's guards) and by the gateway binary itself
(`codepipeline-gateway check-config`, fed the variables the chart renders),
and the two must agree. Nothing here restates a bound by hand: the cases sit
on and just past each edge, and whichever side moves alone fails the test."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import helm_python as helm
import pytest

from conftest import FULLNAME, REPO, find, render

BINARY = REPO / "target" / "debug" / "codepipeline-gateway"


def chart_env(values: dict[str, Any]) -> dict[str, str] | None:
    """The CPGW_* variables the chart renders for `values`, or None if Helm refuses them."""
    try:
        docs = render(values)
    except helm.HelmError:
        return None
    return find(docs, "ConfigMap", FULLNAME)["data"]


def binary_accepts(env: dict[str, str]) -> tuple[bool, str]:
    assert BINARY.exists(), f"build the gateway first: {BINARY}"
    run = subprocess.run(
        [str(BINARY), "check-config"],
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return run.returncode == 0, run.stdout + run.stderr


def nested(path: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


DEFAULT_ENV = chart_env({})
assert DEFAULT_ENV is not None

# (values path, the variable it becomes, values on and just past its edges).
# A value the schema refuses is handed to the binary as the chart would have
# rendered it.
CASES: list[tuple[str, str, list[Any]]] = [
    ("gateway.rateLimit.rps", "CPGW_RATE_LIMIT_RPS", [0, 0.001, 10000, 10000.5]),
    ("gateway.rateLimit.burst", "CPGW_RATE_LIMIT_BURST", [0, 1, 4294967295, 4294967296]),
    ("gateway.rateLimit.queue", "CPGW_RATE_LIMIT_QUEUE", [-1, 0, 4294967295, 4294967296]),
    ("gateway.retry.maxAttempts", "CPGW_RETRY_MAX_ATTEMPTS", [0, 1, 10, 11, 15]),
    ("gateway.retry.baseDelay", "CPGW_RETRY_BASE_DELAY", ["0s", "1ns", "100ms", "5s"]),
    ("gateway.retry.maxDelay", "CPGW_RETRY_MAX_DELAY", ["99ms", "100ms", "1h"]),
    ("gateway.attemptTimeout", "CPGW_ATTEMPT_TIMEOUT", ["0s", "1ms", "1h"]),
    ("gateway.defaultDeadline", "CPGW_DEFAULT_DEADLINE", ["0s", "1ms", "1h"]),
    ("gateway.maxConnectionAge", "CPGW_MAX_CONNECTION_AGE", ["0s", "1ms", "24h"]),
    ("gateway.limits.maxConcurrentStreams", "CPGW_MAX_CONCURRENT_STREAMS", [0, 1, 4294967295, 4294967296]),
    ("gateway.limits.maxCallsInFlight", "CPGW_MAX_CALLS_IN_FLIGHT", [0, 1, 4294967295, 4294967296]),
    ("gateway.limits.maxSubscriptions", "CPGW_MAX_SUBSCRIPTIONS", [0, 1, 4294967295, 4294967296]),
    ("gateway.limits.upstreamConcurrency", "CPGW_UPSTREAM_CONCURRENCY", [0, 1, 4294967295, 4294967296]),
    ("gateway.limits.requestArrivalTimeout", "CPGW_REQUEST_ARRIVAL_TIMEOUT", ["0s", "1ms", "1h"]),
    ("gateway.limits.handshakeTimeout", "CPGW_HANDSHAKE_TIMEOUT", ["0s", "1ms", "1h"]),
    ("gateway.limits.idleTimeout", "CPGW_IDLE_TIMEOUT", ["0s", "1ms", "1h"]),
    ("gateway.limits.keepaliveInterval", "CPGW_KEEPALIVE_INTERVAL", ["0s", "1ms", "1h"]),
    ("gateway.limits.keepaliveTimeout", "CPGW_KEEPALIVE_TIMEOUT", ["0s", "1ms", "1h"]),
    ("gateway.limits.maxPendingResetStreams", "CPGW_MAX_PENDING_RESET_STREAMS", [0, 1, 4294967295, 4294967296]),
    ("gateway.shutdownDelay", "CPGW_SHUTDOWN_DELAY", ["0s", "1ms", "10m"]),
    ("gateway.shutdownGrace", "CPGW_SHUTDOWN_GRACE", ["0s", "1ms", "10m"]),
    ("auth.reloadInterval", "CPGW_AUTH_RELOAD", ["0s", "1ms", "1h"]),
    ("auth.serviceAccountTokens.jwksRefresh", "CPGW_AUTH_JWKS_REFRESH", ["9s", "10s", "1h"]),
    ("gateway.logFormat", "CPGW_LOG_FORMAT", ["text", "json", "yaml"]),
]


def as_rendered(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_every_rendered_setting_has_a_parity_case() -> None:
    """A setting added to the chart without a case here fails this test."""
    covered = {env for _, env, _ in CASES}
    # Addresses, switches, paths and names: not bounds.
    not_bounded = {
        "CPGW_LISTEN", "CPGW_ADMIN_LISTEN", "CPGW_RATE_LIMIT_ADAPTIVE", "CPGW_REFLECTION", "RUST_LOG",
        "CPGW_AUTH_JWT_ISSUER", "CPGW_AUTH_JWT_AUDIENCE", "CPGW_AUTH_JWKS_URL", "CPGW_AUTH_JWKS_CA_FILE",
        "CPGW_AUTH_JWKS_BEARER_TOKEN_FILE", "CPGW_POLICY_FILE",
    }  # fmt: skip
    assert set(DEFAULT_ENV) - covered - not_bounded == set()


@pytest.mark.parametrize(
    ("path", "env", "value"),
    [(path, env, value) for path, env, values in CASES for value in values],
    ids=lambda v: str(v),
)
def test_the_chart_accepts_exactly_what_the_binary_accepts(path: str, env: str, value: Any) -> None:
    rendered = chart_env(nested(path, value))
    chart_ok = rendered is not None
    binary_ok, said = binary_accepts({**DEFAULT_ENV, env: as_rendered(value)})
    assert chart_ok == binary_ok, (
        f"{path}={value!r}: the chart {'accepts' if chart_ok else 'refuses'} it, "
        f"the binary {'accepts' if binary_ok else 'refuses'} it: {said}"
    )
    if chart_ok:
        assert rendered[env] == as_rendered(value)


@pytest.mark.parametrize(("base", "maximum"), [("100ms", "99ms"), ("5s", "5s"), ("2s", "1s")])
def test_retry_delays_are_checked_against_each_other_alike(base: str, maximum: str) -> None:
    values = {"gateway": {"retry": {"baseDelay": base, "maxDelay": maximum}}}
    chart_ok = chart_env(values) is not None
    binary_ok, said = binary_accepts(
        {**DEFAULT_ENV, "CPGW_RETRY_BASE_DELAY": base, "CPGW_RETRY_MAX_DELAY": maximum}
    )
    assert chart_ok == binary_ok, said


def effective(said: str) -> str:
    """The settings check-config printed, without what is the chart's own
    choice (authentication, the policy file)."""
    return said.split("    client_tokens:")[0]


def test_chart_defaults_are_the_binary_defaults() -> None:
    chart_ok, chart_said = binary_accepts(DEFAULT_ENV)
    assert chart_ok, chart_said
    binary_ok, binary_said = binary_accepts({"CPGW_ALLOW_UNAUTHENTICATED": "true"})
    assert binary_ok, binary_said
    assert effective(chart_said) == effective(binary_said)
    assert "reload_interval: 10s" in chart_said and "reload_interval: 10s" in binary_said
