"""The code in docs/clients.md runs: its Python, Node and Go snippets for reading
google.rpc error details are executed against `codepipeline-gateway dev`,
with a round_robin channel to a dns:/// target as the guide shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import GO_WORKER_BINARY, NODE_WORKER, PYTHON_WORKER, REPO

GUIDE = (REPO / "docs" / "clients.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", GUIDE, re.DOTALL | re.MULTILINE)


def snippet(language: str, needle: str) -> str:
    matching = [b for b in code_blocks(language) if needle in b]
    assert len(matching) == 1, f"one {language} block with {needle!r} expected"
    return matching[0]


EXPECTED_VIOLATIONS = [
    "jobId: must be a job id as returned by PollForJobs",
    "executionDetails.percentComplete: must be between 0 and 100, but is 101",
]


@pytest.fixture
def dns_target(dev) -> str:
    return f"dns:///localhost:{dev.grpc_target.rsplit(':', 1)[1]}"


def test_python_snippet_reads_the_details(python_stubs, dns_target, emulator):
    program = "\n".join(
        [
            "import sys",
            f"sys.path.insert(0, {str(PYTHON_WORKER / 'generated')!r})",
            "import grpc",
            "from codepipeline_gateway.v1 import job_worker_pb2 as pb, job_worker_pb2_grpc",
            f"channel = grpc.insecure_channel({dns_target!r},"
            " options=[('grpc.lb_policy_name', 'round_robin')])",
            "stub = job_worker_pb2_grpc.JobWorkerServiceStub(channel)",
            "request = pb.PutJobSuccessResultRequest(job_id='not-a-job-id',"
            " execution_details=pb.ExecutionDetails(percent_complete=101))",
            snippet("python", "rpc_status.from_call"),
        ]
    )
    run = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "INVALID_ARGUMENT INVALID_REQUEST {'attempts': '0'}" in run.stdout, run.stdout
    for violation in EXPECTED_VIOLATIONS:
        assert violation in run.stdout, run.stdout
    assert emulator.requests() == []


def test_node_snippet_reads_the_details(node_modules, dns_target, emulator):
    program = "\n".join(
        [
            "const grpc = require('@grpc/grpc-js');",
            "const protoLoader = require('@grpc/proto-loader');",
            "const definition = protoLoader.loadSync('codepipeline_gateway/v1/job_worker.proto',"
            f" {{ includeDirs: [{str(REPO / 'proto')!r}] }});",
            "const { JobWorkerService } ="
            " grpc.loadPackageDefinition(definition).codepipeline_gateway.v1;",
            "const request = { jobId: 'not-a-job-id', executionDetails: { percentComplete: 101 } };",
            snippet("js", "new JobWorkerService(").replace(
                "'dns:///codepipeline-gateway-headless.ci.svc.cluster.local:50051'",
                repr(dns_target),
            ),
            snippet("js", "grpc-status-details-bin"),
            "setTimeout(() => client.close(), 5000).unref();",
        ]
    )
    run = subprocess.run(
        ["node", "-e", program],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        cwd=NODE_WORKER,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "type: 'google.rpc.ErrorInfo'" in run.stdout, run.stdout
    assert "reason: 'INVALID_REQUEST'" in run.stdout, run.stdout
    assert "type: 'google.rpc.BadRequest'" in run.stdout, run.stdout
    assert "field: 'executionDetails.percentComplete'" in run.stdout, run.stdout
    assert emulator.requests() == []


GO_PROGRAM = """package main

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	pb "github.com/codepipeline-gateway/codepipeline-gateway/gen/go/codepipeline_gateway/v1"
)

func main() {
%(dial)s
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	client := pb.NewJobWorkerServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	request := &pb.PutJobSuccessResultRequest{
		JobId: "not-a-job-id", ExecutionDetails: &pb.ExecutionDetails{PercentComplete: &[]int32{101}[0]},
	}
%(details)s
}
"""


def test_go_snippet_reads_the_details(go_worker, dns_target, emulator, tmp_path):
    """Built as the Go worker is (scripts/go-worker.sh: GOPATH mode over
    Debian's packages, the stubs from the GOPATH that script laid out)."""
    program = tmp_path / "src" / "snippet" / "main.go"
    program.parent.mkdir(parents=True)
    dial = snippet("go", "grpc.Dial(").replace(
        '"dns:///codepipeline-gateway-headless.ci.svc.cluster.local:50051"', f'"{dns_target}"'
    )
    program.write_text(GO_PROGRAM % {"dial": dial, "details": snippet("go", "st.Details()")})
    work = GO_WORKER_BINARY.parent
    env = dict(
        os.environ, GO111MODULE="off", GOFLAGS="", CGO_ENABLED="0", GOCACHE=str(work / "cache"),
        GOPATH=os.pathsep.join([str(tmp_path), str(work / "gopath"), "/usr/share/gocode"]),
    )  # fmt: skip
    run = subprocess.run(
        ["go", "run", "."], cwd=program.parent, env=env,
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "InvalidArgument INVALID_REQUEST map[attempts:0]" in run.stdout, run.stdout
    for violation in EXPECTED_VIOLATIONS:
        assert violation in run.stdout, run.stdout
    assert emulator.requests() == []


@pytest.mark.parametrize("compression", ["Gzip", "Deflate"])
def test_grpcio_with_compression_on_is_served(python_stubs, dns_target, emulator, compression):
    """grpcio compresses every request once a channel asks for it; the gateway
    decodes it (it used to answer UNIMPLEMENTED) and validates as usual."""
    program = "\n".join(
        [
            "import sys",
            f"sys.path.insert(0, {str(PYTHON_WORKER / 'generated')!r})",
            "import grpc",
            "from codepipeline_gateway.v1 import job_worker_pb2 as pb, job_worker_pb2_grpc",
            f"channel = grpc.insecure_channel({dns_target!r}, compression=grpc.Compression.{compression})",
            "stub = job_worker_pb2_grpc.JobWorkerServiceStub(channel)",
            "try:",
            "    stub.PutJobSuccessResult(pb.PutJobSuccessResultRequest(job_id='not-a-job-id'), timeout=10)",
            "except grpc.RpcError as error:",
            "    print(error.code().name, error.details())",
        ]
    )
    run = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("INVALID_ARGUMENT"), run.stdout
    assert "jobId" in run.stdout, run.stdout
    assert emulator.requests() == []
