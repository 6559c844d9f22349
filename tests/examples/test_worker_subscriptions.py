"""The example workers in `--subscribe` mode: the gateway pushes the jobs
(SubscribeJobs / SubscribeThirdPartyJobs) and polls CodePipeline for them;
the worker acknowledges, works and reports through the unary calls, adds
credit after each job, and subscribes again when the gateway ends the
subscription (its connection's maximum age, a restart).

Every test subscribes to an action type of its own, so the emulator's record
of that type's requests is this test's alone.
"""

from __future__ import annotations

import signal
import time
import uuid

import pytest

from test_worker_lifecycle import action_type, continuation_of, done_line, printed_calls


def subscribe_args(kind: str, type_id: dict, *more: str) -> list[str]:
    return [
        "--poll", "custom" if kind == "custom" else "partner",
        "--subscribe",
        "--category", type_id["category"],
        "--provider", type_id["provider"],
        "--action-version", type_id["version"],
        *more,
    ]  # fmt: skip


def of_type(received: list[dict], type_id: dict, job_ids: set[str]) -> list[dict]:
    """The requests about this test's action type: its polls, and its jobs' calls."""
    return [
        r
        for r in received
        if (r.get("body") or {}).get("actionTypeId") == type_id or (r.get("body") or {}).get("jobId") in job_ids
    ]


def test_subscribed_worker_works_custom_jobs_and_the_gateway_polls_for_it(worker, emulator):
    type_id = action_type(worker, "custom")
    ok = emulator.create_job("custom", action_type_id=type_id, configuration={"Env": "staging"})
    failing = emulator.create_job("custom", action_type_id=type_id, configuration={"Mode": "fail"})

    run = worker(*subscribe_args("custom", type_id, "--max-jobs", "3"))

    assert run.returncode == 0, run.output
    assert run.stderr == "", run.output
    resumed = continuation_of(emulator, ok["jobId"])
    assert done_line(run.stdout) == "done: 3 jobs (succeeded 1, continued 1, failed 1, skipped 0, errors 0)"
    assert "SubscribeJobs: subscribed" in run.stdout
    pushed = [line.split()[-1] for line in run.stdout.splitlines() if line.startswith("SubscribeJobs: job ")]
    assert sorted(pushed[:2]) == sorted([ok["jobId"], failing["jobId"]]) and pushed[2] == resumed["jobId"]
    jobs = {ok["jobId"], failing["jobId"], resumed["jobId"]}
    received = of_type(emulator.requests(), type_id, jobs)
    # Each job claimed once and reported once; the only polls are the gateway's.
    for job_id in jobs:
        operations = [r["operation"] for r in received if r["body"].get("jobId") == job_id]
        assert operations[0] == "AcknowledgeJob" and len(operations) == 2, (job_id, operations)
        assert all(r["status"] == 200 for r in received if r["body"].get("jobId") == job_id)
    polls = [r for r in received if r["operation"] == "PollForJobs"]
    assert polls and all(p["body"]["maxBatchSize"] <= 1 for p in polls), polls
    # The printed calls are exactly the worker's (polls are the gateway's own).
    printed = [p["request_id"] for p in printed_calls(run.stdout)]
    assert printed == [r["requestId"] for r in received if r["operation"] != "PollForJobs"], run.output
    assert emulator.job(resumed["jobId"])["state"] == "Succeeded"
    assert emulator.job(failing["jobId"])["state"] == "Failed"


def test_subscribed_partner_worker_needs_no_client_token(worker, standalone_emulator, serve_gateway):
    control = standalone_emulator.control
    type_id = action_type(worker, "partner")
    job = control.create_job("thirdParty", action_type_id=type_id)
    gateway = serve_gateway({job["clientId"]: job["clientToken"]})

    run = worker(*subscribe_args("partner", type_id, "--max-jobs", "1"), target=gateway.grpc_target)

    assert run.returncode == 0, run.output
    assert f"SubscribeThirdPartyJobs: job {job['jobId']}" in run.stdout
    operations = [r["operation"] for r in control.requests(job["jobId"])]
    assert operations == [
        "GetThirdPartyJobDetails", "AcknowledgeThirdPartyJob", "PutThirdPartyJobSuccessResult",
    ], operations  # fmt: skip
    assert job["clientToken"] not in run.output


def test_the_worker_subscribes_again_when_the_gateway_ends_its_subscription(
    worker, standalone_emulator, serve_gateway
):
    control = standalone_emulator.control
    type_id = action_type(worker, "custom")
    control.register_action_type(type_id)
    # Every connection is asked to go after 1 s: its subscription ends with
    # UNAVAILABLE, and the worker must come back on its own.
    gateway = serve_gateway({}, extra=("--max-connection-age", "1s"))
    process = worker.start(*subscribe_args("custom", type_id, "--max-jobs", "1"), target=gateway.grpc_target)
    try:
        time.sleep(2.5)
        job = control.create_job("custom", action_type_id=type_id)
        process.wait(timeout=20)
    finally:
        run = worker.finish(process)

    assert run.returncode == 0, run.output
    assert "SubscribeJobs: ended: UNAVAILABLE" in run.stdout, run.output
    assert "subscribing again" in run.stdout
    assert f"SubscribeJobs: job {job['jobId']}" in run.stdout
    assert [r["operation"] for r in control.requests(job["jobId"])] == ["AcknowledgeJob", "PutJobSuccessResult"]


def test_a_subscribed_worker_stops_on_sigterm_and_after_its_idle_timeout(worker, emulator):
    type_id = action_type(worker, "custom")
    emulator.register_action_type(type_id)  # no jobs

    started = time.monotonic()
    run = worker(*subscribe_args("custom", type_id, "--idle-timeout", "1"))
    assert run.returncode == 0, run.output
    assert 1 <= time.monotonic() - started < 10
    assert done_line(run.stdout) == "done: 0 jobs (succeeded 0, continued 0, failed 0, skipped 0, errors 0)"

    emulator.clear_requests()
    process = worker.start(*subscribe_args("custom", type_id))
    try:
        deadline = time.monotonic() + 10
        while not of_type(emulator.requests(), type_id, set()):
            assert time.monotonic() < deadline, "the gateway never polled for the subscriber"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    finally:
        run = worker.finish(process)
    assert run.returncode == 0, run.output
    assert "SIGTERM: stopping after the job in hand" in run.stderr
    assert done_line(run.stdout).startswith("done: 0 jobs")


def test_a_subscription_to_an_unknown_action_type_stops_the_worker(worker, emulator):
    run = worker(
        "--poll", "custom", "--subscribe", "--provider", f"No{uuid.uuid4().hex[:12]}", "--category", "Test",
        "--idle-timeout", "10",
    )  # fmt: skip
    assert run.returncode == 1, run.output
    assert "SubscribeJobs: failed: NOT_FOUND" in run.stderr, run.output
    assert "reason: ACTION_TYPE_NOT_FOUND (domain codepipeline.amazonaws.com)" in run.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--subscribe", "--job-id", "00000000-0000-4000-8000-000000000000"], "--subscribe needs --poll"),
        (["--subscribe", "--poll", "custom", "--once"], "--subscribe and --once"),
    ],
)
def test_bad_subscribe_usage_exits_2(worker, emulator, args, needle):
    run = worker(*args)
    assert run.returncode == 2, run.output
    assert needle in run.stderr
    assert emulator.requests() == []
