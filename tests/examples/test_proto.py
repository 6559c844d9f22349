"""The protobuf API is a lintable buf module (proto/buf.yaml, buf's STANDARD
rules) and says where generated code lives in Go, Java and C#."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

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


GO_PACKAGES = {  # go.mod module -> the Debian package the offline build uses
    "google.golang.org/grpc": "golang-google-grpc-dev",
    "google.golang.org/protobuf": "golang-google-protobuf-dev",
    "github.com/golang/protobuf": "golang-github-golang-protobuf-1-5-dev",
}


def go_requirements(go_mod: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+(\S+) v(\S+)", go_mod, re.M))


def test_the_go_modules_are_the_versions_the_worker_is_built_and_tested_with() -> None:
    """A user outside builds examples/go-worker with the public modules its
    go.mod names; scripts/go-worker.sh builds it with Debian's packages. Both
    must be the same versions, or the tests vouch for another program."""
    for go_mod in (REPO / "gen" / "go" / "go.mod", REPO / "examples" / "go-worker" / "go.mod"):
        required = go_requirements(go_mod.read_text())
        for module, package in GO_PACKAGES.items():
            if module not in required:
                continue
            debian = subprocess.run(
                ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=True
            ).stdout
            upstream = re.sub(r"^\d+:", "", debian).split("-")[0]  # 2:1.33.3-2 -> 1.33.3
            assert required[module] == upstream, f"{go_mod}: {module} v{required[module]}, Debian {debian}"
    worker = go_requirements((REPO / "examples" / "go-worker" / "go.mod").read_text())
    # genproto: the version grpc-go's own go.mod requires (Debian packages a
    # snapshot of the same API, dated a few weeks earlier).
    grpc_go_mod = Path("/usr/share/gocode/src/google.golang.org/grpc/go.mod").read_text()
    assert go_requirements(grpc_go_mod)["google.golang.org/genproto"] == worker["google.golang.org/genproto"]


def test_the_committed_go_stubs_are_what_protoc_makes_of_the_proto(tmp_path) -> None:
    """gen/go is committed (Go users import it and cannot run protoc at
    `go get`), so it must not drift from proto/."""
    module = "github.com/codepipeline-gateway/codepipeline-gateway/gen/go"
    subprocess.run(
        ["protoc", "-I", str(PROTO),
         f"--go_out={tmp_path}", f"--go_opt=module={module}",
         f"--go-grpc_out={tmp_path}", f"--go-grpc_opt=module={module}",
         str(PROTO / "codepipeline_gateway" / "v1" / "job_worker.proto")],
        check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.go"))
    committed = sorted(p.relative_to(REPO / "gen" / "go") for p in (REPO / "gen" / "go").rglob("*.go"))
    regenerate = "gen/go is stale: regenerate it (examples/go-worker/README.md)"
    assert generated == committed, regenerate
    for path in generated:
        assert (tmp_path / path).read_text() == (REPO / "gen" / "go" / path).read_text(), f"{path}: {regenerate}"
