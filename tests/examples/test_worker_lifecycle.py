"""The example workers (Python and Node) as complete job workers: they poll,
acknowledge, work and report, for custom jobs against `codepipeline-gateway
dev` and for partner jobs against `codepipeline-gateway serve` with a
client-token map (the workers hold no client token).

Every test polls an action type of its own, so that jobs of other tests (and
dev mode's ready-made ones) are never handed out to it, and checks through the
emulator's record what AWS received: exactly the intended calls, in order,
none duplicated.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time
import uuid

import grpc
import pytest

from conftest import PYTHON_WORKER

# "<Operation>[ <job id>][ continuation|final]: ok|N job(s) awsRequestId=<id> attempts=<n>"
CALL_LINE = re.compile(
    r"^(?P<operation>\w+)(?: (?P<job_id>[0-9a-f-]{36}))?(?: (?P<phase>continuation|final))?:"
    r" (?:ok|\d+ jobs?) awsRequestId=(?P<request_id>\S+) attempts=(?P<attempts>\d+)$"
)


def action_type(worker, kind: str) -> dict:
    """A fresh action type (AWS spelling) for one test."""
    provider = f"{worker.language}{uuid.uuid4().hex[:16]}"
    if kind == "custom":
        return {"category": "Build", "owner": "Custom", "provider": provider, "version": "1"}
    return {"category": "Deploy", "owner": "ThirdParty", "provider": provider, "version": "1"}


def poll_args(kind: str, type_id: dict, *more: str) -> list[str]:
    return [
        "--poll", "custom" if kind == "custom" else "partner",
        "--category", type_id["category"],
        "--provider", type_id["provider"],
        "--action-version", type_id["version"],
        "--poll-interval", "0.1",
        *more,
    ]  # fmt: skip


def calls(received: list[dict]) -> list[tuple]:
    """(operation, jobId, HTTP status) of each request AWS received."""
    return [(r["operation"], r["body"].get("jobId"), r["status"]) for r in received]


def printed_calls(stdout: str) -> list[dict]:
    return [m.groupdict() for line in stdout.splitlines() if (m := CALL_LINE.match(line))]


def continuation_of(emulator, job_id: str) -> dict:
    (job,) = [j for j in emulator.jobs() if j["continuationOf"] == job_id]
    return job


def run_id(worker, job: dict) -> str:
    """The external execution id the workers send: one per action execution,
    so the same for a job and its continuation."""
    return f"{worker.language}-worker-{job['data']['pipelineContext']['action']['actionExecutionId']}"


def done_line(stdout: str) -> str:
    return stdout.strip().splitlines()[-1]


def test_custom_jobs_succeed_via_a_continuation_or_fail_by_configuration(worker, emulator):
    type_id = action_type(worker, "custom")
    ok = emulator.create_job("custom", action_type_id=type_id, configuration={"Env": "staging"})
    failing = emulator.create_job(
        "custom",
        action_type_id=type_id,
        configuration={"Mode": "fail", "FailureMessage": "unit tests failed: 3 of 120"},
    )

    run = worker(
        *poll_args("custom", type_id, "--max-jobs", "3", "--max-batch-size", "10"),
        "--output-variable", "IMAGE_TAG=v1.4.2",
    )  # fmt: skip

    assert run.returncode == 0, run.output
    assert run.stderr == "", run.output
    resumed = continuation_of(emulator, ok["jobId"])
    received = emulator.requests()
    assert calls(received) == [
        # One poll hands out both queued jobs: the batch never exceeds what is
        # left of --max-jobs (3).
        ("PollForJobs", None, 200),
        ("AcknowledgeJob", ok["jobId"], 200),
        ("PutJobSuccessResult", ok["jobId"], 200),
        ("AcknowledgeJob", failing["jobId"], 200),
        ("PutJobFailureResult", failing["jobId"], 200),
        # The continuation job, carrying the token, is the only one left: 1.
        ("PollForJobs", None, 200),
        ("AcknowledgeJob", resumed["jobId"], 200),
        ("PutJobSuccessResult", resumed["jobId"], 200),
    ], received
    assert all(r["signatureValid"] and r["fault"] is None for r in received)
    bodies = [r["body"] for r in received]
    assert bodies[0] == {"actionTypeId": type_id, "maxBatchSize": 3}
    assert bodies[5] == {"actionTypeId": type_id, "maxBatchSize": 1}
    # Each job claimed with the nonce of its own dispatch.
    for body, job in [(bodies[1], ok), (bodies[3], failing), (bodies[6], resumed)]:
        assert body == {"jobId": job["jobId"], "nonce": emulator.job(job["jobId"])["nonce"]}
    assert bodies[2] == {
        "jobId": ok["jobId"],
        "continuationToken": "phase=finish",
        # optional int32: the 0 is sent, not dropped as a proto3 default.
        "executionDetails": {
            "summary": "started",
            "externalExecutionId": run_id(worker, ok),
            "percentComplete": 0,
        },
    }
    failure = {
        "type": "JobFailed",
        "message": "unit tests failed: 3 of 120",
        "externalExecutionId": run_id(worker, failing),
    }
    assert bodies[4] == {"jobId": failing["jobId"], "failureDetails": failure}
    assert bodies[7] == {
        "jobId": resumed["jobId"],
        "executionDetails": {
            "summary": "finished (phase=finish)",
            "externalExecutionId": run_id(worker, ok),
            "percentComplete": 100,
        },
        "outputVariables": {"IMAGE_TAG": "v1.4.2"},
    }

    # What became of the jobs.
    assert resumed["data"]["continuationToken"] == "phase=finish"
    assert emulator.job(ok["jobId"])["continuationToken"] == "phase=finish"
    assert emulator.job(resumed["jobId"])["state"] == "Succeeded"
    assert emulator.job(resumed["jobId"])["resultsReceived"] == 1
    assert emulator.job(failing["jobId"])["state"] == "Failed"
    assert emulator.job(failing["jobId"])["failure"] == failure

    # The worker printed each call's AWS request id, in order.
    printed = printed_calls(run.stdout)
    assert [p["request_id"] for p in printed] == [r["requestId"] for r in received], run.output
    assert [p["phase"] for p in printed if p["operation"] == "PutJobSuccessResult"] == [
        "continuation",
        "final",
    ]
    assert done_line(run.stdout) == (
        "done: 3 jobs (succeeded 1, continued 1, failed 1, skipped 0, errors 0)"
    )


def test_partner_jobs_without_a_client_token(worker, standalone_emulator, serve_gateway):
    control = standalone_emulator.control
    type_id = action_type(worker, "partner")
    ok = control.create_job("thirdParty", action_type_id=type_id)
    failing = control.create_job(
        "thirdParty", action_type_id=type_id, configuration={"Fail": "true"}
    )
    # The operator's map; the worker gets none of it.
    gateway = serve_gateway(
        {
            ok["clientId"]: ok["clientToken"],
            failing["clientId"]: failing["clientToken"],
            str(uuid.uuid4()): "a-token-of-another-client",
        }
    )
    control.clear_requests()

    run = worker(*poll_args("partner", type_id, "--max-jobs", "3"), target=gateway.grpc_target)

    assert run.returncode == 0, run.output
    assert run.stderr == "", run.output
    resumed = continuation_of(control, ok["jobId"])
    received = control.requests()
    lifecycle = [
        ("GetThirdPartyJobDetails", 200),
        ("AcknowledgeThirdPartyJob", 200),
    ]
    expected = [("PollForThirdPartyJobs", None, 200)]
    expected += [(op, ok["jobId"], status) for op, status in lifecycle]
    expected += [("PutThirdPartyJobSuccessResult", ok["jobId"], 200)]
    expected += [("PollForThirdPartyJobs", None, 200)]
    expected += [(op, failing["jobId"], status) for op, status in lifecycle]
    expected += [("PutThirdPartyJobFailureResult", failing["jobId"], 200)]
    expected += [("PollForThirdPartyJobs", None, 200)]
    expected += [(op, resumed["jobId"], status) for op, status in lifecycle]
    expected += [("PutThirdPartyJobSuccessResult", resumed["jobId"], 200)]
    assert calls(received) == expected, received

    # The gateway filled in each job's own token; clientId is not an AWS field.
    tokens = {ok["jobId"]: ok["clientToken"], failing["jobId"]: failing["clientToken"],
              resumed["jobId"]: ok["clientToken"]}  # fmt: skip
    for r in received:
        if r["operation"] != "PollForThirdPartyJobs":
            assert r["body"]["clientToken"] == tokens[r["body"]["jobId"]], r
            assert "clientId" not in r["body"]
    assert received[0]["body"] == {"actionTypeId": type_id, "maxBatchSize": 1}
    assert received[2]["body"]["nonce"] == control.job(ok["jobId"])["nonce"]
    assert received[3]["body"] == {
        "jobId": ok["jobId"],
        "clientToken": ok["clientToken"],
        "continuationToken": "phase=finish",
        "executionDetails": {
            "summary": "started",
            "externalExecutionId": run_id(worker, ok),
            "percentComplete": 0,
        },
    }
    failure = {
        "type": "JobFailed",
        "message": "the action configuration asked for a failure (Mode=fail)",
        "externalExecutionId": run_id(worker, failing),
    }
    assert received[7]["body"] == {
        "jobId": failing["jobId"],
        "clientToken": failing["clientToken"],
        "failureDetails": failure,
    }
    assert received[11]["body"]["executionDetails"]["percentComplete"] == 100
    assert "continuationToken" not in received[11]["body"]
    assert control.job(resumed["jobId"])["state"] == "Succeeded"
    assert control.job(failing["jobId"])["state"] == "Failed"
    assert control.job(failing["jobId"])["failure"] == failure
    printed = printed_calls(run.stdout)
    assert [p["request_id"] for p in printed] == [r["requestId"] for r in received], run.output
    # No token ever passed through the worker.
    for job in (ok, failing):
        assert job["clientToken"] not in run.stdout + run.stderr


def two_replicas(serve_gateway, tokens: dict[str, str], extra: tuple[str, ...] = ()):
    """Two gateway replicas on one port, 127.0.0.1 and 127.0.0.2, as behind
    the chart's headless Service: (first, second, port)."""
    first = serve_gateway(tokens, host="127.0.0.1", extra=extra)
    port = first.grpc_target.rsplit(":", 1)[1]
    try:
        second = serve_gateway(tokens, host="127.0.0.2", port=int(port), extra=extra)
    except RuntimeError as error:  # pragma: no cover - depends on the host
        pytest.skip(f"cannot listen on 127.0.0.2: {error}")
    return first, second, port


def over_both(worker, port: str, *args: str):
    """Runs `worker` with one round_robin channel over both replicas."""
    return worker(
        *args,
        "--round-robin",
        # A list of addresses is no valid :authority: name the service instead.
        "--authority", "codepipeline-gateway",
        target=f"ipv4:127.0.0.1:{port},127.0.0.2:{port}",
    )  # fmt: skip


def test_partner_worker_over_two_replicas_sends_the_client_id(
    worker, standalone_emulator, serve_gateway
):
    # Two gateway replicas behind one round_robin channel, as with the
    # chart's headless Service: each call may reach the replica that did not
    # answer the poll, so the worker sends the clientId the poll returned.
    control = standalone_emulator.control
    type_id = action_type(worker, "partner")
    job = control.create_job("thirdParty", action_type_id=type_id)
    tokens = {job["clientId"]: job["clientToken"]}
    first, second, port = two_replicas(serve_gateway, tokens)
    control.clear_requests()

    run = over_both(worker, port, *poll_args("partner", type_id, "--max-jobs", "2"))

    assert run.returncode == 0, run.output
    resumed = continuation_of(control, job["jobId"])
    assert control.job(resumed["jobId"])["state"] == "Succeeded"
    assert all(r["status"] == 200 for r in control.requests())
    served = [
        sum("call finished" in line for line in replica.stderr_lines) for replica in (first, second)
    ]
    assert sum(served) == 8 and all(served), served


@pytest.mark.parametrize(
    ("kind", "chosen"),
    [("custom", "mapped"), ("partner", "mapped"), ("custom", "named"), ("custom", "subscribed")],
)
def test_a_worker_over_two_replicas_sends_back_the_target_its_job_came_from(
    worker, standalone_emulator, serve_gateway, tmp_path, kind, chosen
):
    # The job lives in another AWS account (a target reached by assuming a
    # role): the gateway maps its action type there ("mapped"), or the worker
    # polls or subscribes to that target by name (--poll-target, "named",
    # "subscribed"). Each call may reach the replica that did not answer the
    # poll, and that replica does not know the job: the worker sends back the
    # target the poll answered with, or its calls would go to the gateway's
    # own account, where the job does not exist.
    control = standalone_emulator.control
    role = "arn:aws:iam::222222222222:role/codepipeline-gateway"
    control.add_role(role, external_id="examples-7f3c")
    type_id = action_type(worker, kind)
    job = control.create_job(
        "custom" if kind == "custom" else "thirdParty",
        action_type_id=type_id,
        account_id="222222222222",
        region="us-west-2",
    )
    targets = tmp_path / "targets.json"
    target = {"name": "team-b", "region": "us-west-2", "roleArn": role, "externalId": "examples-7f3c"}
    if chosen == "mapped":
        target["actionTypes"] = [{k: type_id[k] for k in ("category", "owner", "provider")}]
    targets.write_text(json.dumps({"targets": [target]}))
    tokens = {job["clientId"]: job["clientToken"]} if kind == "partner" else {}
    first, second, port = two_replicas(serve_gateway, tokens, ("--targets-file", str(targets)))
    control.clear_requests()

    named = {"mapped": (), "named": ("--poll-target", "team-b"),
             "subscribed": ("--poll-target", "team-b", "--subscribe")}[chosen]  # fmt: skip
    run = over_both(worker, port, *poll_args(kind, type_id, "--max-jobs", "2", *named))

    assert run.returncode == 0, run.output
    resumed = continuation_of(control, job["jobId"])
    assert control.job(resumed["jobId"])["state"] == "Succeeded"
    assert control.job(resumed["jobId"])["accountId"] == "222222222222"
    assert all(r["status"] == 200 for r in control.requests()), control.requests()
    served = [
        sum("call finished" in line for line in replica.stderr_lines) for replica in (first, second)
    ]
    assert all(served), served


def test_a_job_another_worker_claimed_is_skipped_without_a_report(
    worker, emulator, python_stubs
):
    # The worker polls the job; its acknowledgement is held up on the way to
    # AWS; meanwhile another worker acknowledges the job with the same nonce.
    # The worker's acknowledgement then meets InvalidNonceException: the job
    # is not its own, and it leaves it alone.
    type_id = action_type(worker, "custom")
    job = emulator.create_job("custom", action_type_id=type_id)
    emulator.inject(operation="AcknowledgeJob", kind="delay", delayMs=1500, times=1)

    process = worker.start(*poll_args("custom", type_id, "--max-jobs", "1"))
    try:
        deadline = time.monotonic() + 10
        while not any(r["operation"] == "AcknowledgeJob" for r in emulator.requests()):
            assert time.monotonic() < deadline, "the worker never acknowledged"
            time.sleep(0.02)
        nonce = emulator.job(job["jobId"])["nonce"]
        sys.path.insert(0, str(PYTHON_WORKER / "generated"))
        from codepipeline_gateway.v1 import job_worker_pb2 as pb
        from codepipeline_gateway.v1 import job_worker_pb2_grpc as pb_grpc

        with grpc.insecure_channel(worker.target) as channel:
            ack = pb_grpc.JobWorkerServiceStub(channel).AcknowledgeJob(
                pb.AcknowledgeJobRequest(job_id=job["jobId"], nonce=nonce), timeout=10
            )
        assert ack.status == pb.JOB_STATUS_IN_PROGRESS
    finally:
        run = worker.finish(process)

    assert run.returncode == 0, run.output
    assert (
        f"AcknowledgeJob {job['jobId']}: skipped: another worker has claimed the job (INVALID_NONCE)"
        in run.stdout.splitlines()
    ), run.output
    assert done_line(run.stdout) == (
        "done: 1 jobs (succeeded 0, continued 0, failed 0, skipped 1, errors 0)"
    )
    received = emulator.requests()
    assert [(r["operation"], r["status"], r["errorType"], r["fault"]) for r in received] == [
        ("PollForJobs", 200, None, None),
        ("AcknowledgeJob", 400, "InvalidNonceException", "delay(1500ms)"),  # the worker's
        ("AcknowledgeJob", 200, None, None),  # the other worker's, which arrived later
    ], received
    assert received[1]["body"] == received[2]["body"]
    # No report, and the job is the other worker's.
    assert emulator.job(job["jobId"])["state"] == "InProgress"
    assert emulator.job(job["jobId"])["resultsReceived"] == 0


def test_an_acknowledgement_that_landed_is_the_workers_own(worker, emulator):
    # The acknowledgement is applied, then the connection resets before AWS
    # answers; the gateway's retry meets InvalidNonceException, flagged
    # earlierAttemptMayHaveBeenApplied: the job is this worker's to do.
    type_id = action_type(worker, "custom")
    job = emulator.create_job("custom", action_type_id=type_id, configuration={"Mode": "fail"})
    emulator.inject(operation="AcknowledgeJob", kind="resetAfterApply", times=1)

    run = worker(*poll_args("custom", type_id, "--max-jobs", "1"))

    assert run.returncode == 0, run.output
    assert re.search(
        rf"^AcknowledgeJob {job['jobId']}: already acknowledged by this worker"
        r" \(an earlier attempt landed\)",
        run.stdout,
        re.MULTILINE,
    ), run.output
    received = emulator.requests()
    assert [(r["operation"], r["status"], r["errorType"]) for r in received] == [
        ("PollForJobs", 200, None),
        ("AcknowledgeJob", 0, None),  # applied, then the connection was reset
        ("AcknowledgeJob", 400, "InvalidNonceException"),  # the gateway's retry
        ("PutJobFailureResult", 200, None),
    ], received
    assert emulator.job(job["jobId"])["state"] == "Failed"


def test_an_idle_worker_stops_after_its_idle_timeout(worker, emulator):
    type_id = action_type(worker, "custom")
    emulator.register_action_type(type_id)  # no jobs

    started = time.monotonic()
    run = worker(*poll_args("custom", type_id, "--idle-timeout", "0.5"))

    assert run.returncode == 0, run.output
    assert time.monotonic() - started < 10
    assert done_line(run.stdout) == (
        "done: 0 jobs (succeeded 0, continued 0, failed 0, skipped 0, errors 0)"
    )
    received = emulator.requests()
    assert 2 <= len(received) <= 10, received
    assert {(r["operation"], r["status"]) for r in received} == {("PollForJobs", 200)}


def test_sigterm_stops_the_worker_between_polls(worker, emulator):
    type_id = action_type(worker, "custom")
    emulator.register_action_type(type_id)  # no jobs
    process = worker.start(*poll_args("custom", type_id))  # no bound: runs until told
    try:
        deadline = time.monotonic() + 10
        while not emulator.requests():
            assert time.monotonic() < deadline, "the worker never polled"
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    finally:
        run = worker.finish(process)

    assert run.returncode == 0, run.output
    assert "SIGTERM: stopping after the job in hand" in run.stderr
    assert done_line(run.stdout).startswith("done: 0 jobs")


def test_a_poll_for_an_unknown_action_type_stops_the_worker(worker, emulator):
    # NOT_FOUND is never retried; a worker configured for an action type that
    # does not exist stops with an error instead of polling forever.
    run = worker(
        "--poll", "custom", "--provider", "NoSuchProvider", "--category", "Test", "--idle-timeout", "5"
    )  # fmt: skip

    assert run.returncode == 1, run.output
    assert "PollForJobs: failed: NOT_FOUND" in run.stderr
    assert "reason: ACTION_TYPE_NOT_FOUND (domain codepipeline.amazonaws.com)" in run.stderr
    assert "retrying" not in run.stderr
    assert [(r["operation"], r["errorType"]) for r in emulator.requests()] == [
        ("PollForJobs", "ActionTypeNotFoundException")
    ]
