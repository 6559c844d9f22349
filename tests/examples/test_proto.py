"""The protobuf API is a lintable buf module (proto/buf.yaml, buf's STANDARD
rules) and says where generated code lives in Go, Java and C#."""

from __future__ import annotations

import re
import subprocess

from conftest import REPO

PROTO = REPO / "proto"
BUF = PROTO / "node_modules" / ".bin" / "buf"


def buf(*args: str) -> subprocess.CompletedProcess[str]:
    assert BUF.exists(), "run scripts/test-examples.sh (npm install in proto/)"
    return subprocess.run(
        [str(BUF), *args], cwd=PROTO, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def test_buf_lint_passes() -> None:
    run = buf("lint")
    assert run.returncode == 0 and run.stdout == "", run.stdout + run.stderr


def test_buf_lint_would_catch_a_violation(tmp_path) -> None:
    """The lint is real: a copy of the module with a badly named field fails."""
    copy = tmp_path / "proto"
    subprocess.run(["cp", "-r", str(PROTO), str(copy)], check=True)
    source = copy / "codepipeline_gateway" / "v1" / "job_worker.proto"
    source.write_text(source.read_text().replace("string job_id = 1;", "string JobId = 1;", 1))
    run = subprocess.run(
        [str(BUF), "lint"], cwd=copy, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert run.returncode != 0 and "lower_snake_case" in run.stdout, run.stdout + run.stderr


def test_generated_code_locations_are_declared() -> None:
    source = (PROTO / "codepipeline_gateway" / "v1" / "job_worker.proto").read_text()
    options = dict(re.findall(r'^option (\w+) = "?([^"]+?)"?;$', source, re.M))
    assert options["go_package"].endswith("/codepipeline_gateway/v1;gatewayv1")
    assert options["java_package"] == "dev.codepipelinegateway.v1"
    assert options["java_multiple_files"] == "true"
