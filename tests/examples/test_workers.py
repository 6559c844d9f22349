"""The example workers (Python and Node) against `codepipeline-gateway dev`.

Each test makes fresh jobs through the emulator's control API, runs a worker,
and checks through the emulator's record what AWS received: exactly the
requests the worker meant to send, nothing lost and nothing duplicated.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest

OK_LINE = re.compile(
    r"^(?P<operation>\w+) (?P<job_id>\S+)(?: (?P<phase>continuation|final))?: ok"
    r" awsRequestId=(?P<request_id>\S+) attempts=(?P<attempts>\d+)$"
)
ALREADY_LINE = re.compile(
    r"^(?P<operation>\w+) (?P<job_id>\S+)(?: (?P<phase>continuation|final))?: already reported"
)


def ok_lines(stdout: str) -> list[dict]:
    lines = [OK_LINE.match(line) for line in stdout.splitlines()]
    return [m.groupdict() for m in lines if m]


def external_id(worker) -> str:
    return f"{worker.language}-worker-run-1"


def continuation_of(emulator, job_id: str) -> dict:
    """The continuation job that a progress report on `job_id` queued."""
    return next(j for j in emulator.jobs() if j.get("continuationOf") == job_id)


def test_worker_reports_custom_and_partner_jobs_exactly_once(worker, emulator):
    custom = emulator.create_job("custom")
    partner = emulator.create_job("thirdParty")

    # The first run of the action: progress, which closes the job.
    run = worker(
        "--job-id", custom["jobId"],
        "--partner-job-id", partner["jobId"],
        "--client-token", partner["clientToken"],
    )  # fmt: skip
    assert run.returncode == 0, run.output
    # CodePipeline hands the token back in a continuation job: the final report.
    resumed = continuation_of(emulator, custom["jobId"])
    assert resumed["data"]["continuationToken"] == "phase=finish"
    final = worker(
        "--job-id", resumed["jobId"],
        "--continuation-token", resumed["data"]["continuationToken"],
        "--output-variable", "IMAGE_TAG=v1.4.2",
        "--output-variable", "REPORT=https://ci.example.com/42?a=b",
    )  # fmt: skip
    assert final.returncode == 0, final.output

    received = emulator.requests()
    assert [(r["operation"], r["status"]) for r in received] == [
        ("PutJobSuccessResult", 200),
        ("PutThirdPartyJobSuccessResult", 200),
        ("PutJobSuccessResult", 200),
    ], received
    assert all(r["signatureValid"] and r["fault"] is None for r in received)
    assert [r["body"] for r in received] == [
        {
            "jobId": custom["jobId"],
            "continuationToken": "phase=finish",
            # optional int32: the 0 is sent, not dropped as a proto3 default.
            "executionDetails": {
                "summary": "started",
                "externalExecutionId": external_id(worker),
                "percentComplete": 0,
            },
        },
        {
            "jobId": partner["jobId"],
            "clientToken": partner["clientToken"],
            "executionDetails": {"summary": "partner action done"},
        },
        {
            "jobId": resumed["jobId"],
            "executionDetails": {
                "summary": "finished",
                "externalExecutionId": external_id(worker),
                "percentComplete": 100,
            },
            "outputVariables": {
                "IMAGE_TAG": "v1.4.2",
                "REPORT": "https://ci.example.com/42?a=b",
            },
        },
    ]

    # The worker printed the AWS request id of each report, in order.
    printed = ok_lines(run.stdout) + ok_lines(final.stdout)
    assert [(p["operation"], p["job_id"], p["phase"], p["attempts"]) for p in printed] == [
        ("PutJobSuccessResult", custom["jobId"], "continuation", "1"),
        ("PutThirdPartyJobSuccessResult", partner["jobId"], None, "1"),
        ("PutJobSuccessResult", resumed["jobId"], "final", "1"),
    ], run.output + final.output
    assert [p["request_id"] for p in printed] == [r["requestId"] for r in received]

    for job_id in (custom["jobId"], resumed["jobId"], partner["jobId"]):
        assert emulator.job(job_id)["state"] == "Succeeded"
        assert emulator.job(job_id)["resultsReceived"] == 1
    assert run.stderr == final.stderr == "", run.output + final.output


def test_worker_takes_its_settings_from_the_environment(worker, emulator):
    partner = emulator.create_job("thirdParty")

    run = worker(
        extra_env={
            "CPGW_TARGET": worker.target,
            "PARTNER_JOB_ID": partner["jobId"],
            "CLIENT_TOKEN": partner["clientToken"],
            "CPGW_DEADLINE": "5",
        }
    )

    assert run.returncode == 0, run.output
    assert [(r["operation"], r["status"]) for r in emulator.requests()] == [
        ("PutThirdPartyJobSuccessResult", 200)
    ]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--max-attempts", "0"], "--max-attempts must be at least 1"),
        (["--partner-job-id", "{job}"], "--partner-job-id needs --client-token"),
        (["--tls-cert-file", "worker.pem"], "--tls-cert-file and --tls-key-file go together"),
        (["--poll", "custom", "--max-batch-size", "0"], "--max-batch-size must be at least 1"),
        (["--poll", "custom", "--job-id", "{job}"], "leave out --job-id"),
    ],
)
def test_bad_usage_exits_2_naming_the_flag_and_sends_nothing(worker, emulator, args, needle):
    job = emulator.create_job("custom")
    args = [a.format(job=job["jobId"]) for a in args]
    if "--poll" not in args and "--partner-job-id" not in args:
        args = ["--job-id", job["jobId"], *args]

    run = worker(*args)

    assert run.returncode == 2, run.output
    assert needle in run.stderr, run.output
    assert emulator.requests() == []


def test_validation_error_reaches_the_worker_with_field_violations(worker, emulator):
    job = emulator.create_job("custom")

    run = worker("--job-id", job["jobId"], "--percent-complete", "150")

    assert run.returncode == 1, run.output
    assert run.stdout == "", run.output
    assert f"PutJobSuccessResult {job['jobId']} continuation: failed: INVALID_ARGUMENT:" in run.stderr
    assert "reason: INVALID_REQUEST (domain codepipeline-gateway)" in run.stderr
    assert (
        "field violation: executionDetails.percentComplete: must be between 0 and 100, but is 150"
        in run.stderr
    ), run.output
    # Never retried, and nothing reached AWS.
    assert "retrying" not in run.stderr
    assert emulator.requests() == []
    assert emulator.job(job["jobId"])["state"] == job["state"]  # untouched
    assert emulator.job(job["jobId"])["resultsReceived"] == 0


def test_every_bad_field_is_reported_at_once(worker, emulator):
    # --continuation-token: only the final report (with output variables) is sent.
    run = worker(
        "--job-id", "not-a-job-id",
        "--continuation-token", "phase=finish",
        "--output-variable", "bad key!=x",
    )  # fmt: skip

    assert run.returncode == 1, run.output
    violations = [
        line for line in run.stderr.splitlines() if line.startswith("  field violation: ")
    ]
    assert violations == [
        "  field violation: jobId: must be a job id as returned by PollForJobs: a lowercase UUID"
        " matching [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        '  field violation: outputVariables["bad key!"]: key must match [A-Za-z0-9@\\-_]+'
        " (letters, digits, @, - and _)",
    ], run.output
    assert emulator.requests() == []


def test_output_variables_over_the_limit_are_refused_before_aws(worker, emulator):
    job = emulator.create_job("custom")
    # 2 x 62,000 bytes of values: over the 122,880-byte total.
    big = "x" * 62_000

    run = worker(
        "--job-id", job["jobId"],
        "--continuation-token", "phase=finish",
        "--output-variable", f"A={big}",
        "--output-variable", f"B={big}",
    )  # fmt: skip

    assert run.returncode == 1, run.output
    assert "failed: INVALID_ARGUMENT" in run.stderr
    assert "reason: OUTPUT_VARIABLES_SIZE_EXCEEDED (domain codepipeline-gateway)" in run.stderr
    assert "field violation: outputVariables:" in run.stderr, run.output
    assert big not in run.stderr, "values are secrets: never echoed"
    assert emulator.requests() == []
    assert emulator.job(job["jobId"])["state"] == job["state"]  # untouched
    assert emulator.job(job["jobId"])["resultsReceived"] == 0


def test_throttle_is_retried_by_the_gateway_and_the_worker_sees_success(worker, emulator):
    job = emulator.create_job("custom")
    emulator.inject(operation="PutJobSuccessResult", kind="throttle", times=1)

    run = worker("--job-id", job["jobId"])

    assert run.returncode == 0, run.output
    assert "retrying" not in run.stderr, "the gateway, not the worker, retried"
    received = emulator.requests(job["jobId"])
    assert [(r["status"], r["errorType"]) for r in received] == [
        (400, "ThrottlingException"),
        (200, None),
    ]
    # The throttled attempt and its retry carried the same request.
    assert received[0]["body"] == received[1]["body"]
    assert received[0]["body"]["executionDetails"]["percentComplete"] == 0
    printed = ok_lines(run.stdout)
    assert [p["request_id"] for p in printed] == [received[1]["requestId"]]
    assert emulator.job(job["jobId"])["state"] == "Succeeded"


def test_worker_retries_unavailable_after_the_gateway_gave_up(worker, emulator):
    # Three throttles use up the gateway's three attempts: the worker gets
    # UNAVAILABLE with RetryInfo and tries again itself.
    job = emulator.create_job("custom")
    emulator.inject(operation="PutJobSuccessResult", kind="throttle", times=3)

    run = worker("--job-id", job["jobId"])

    assert run.returncode == 0, run.output
    assert re.search(
        rf"PutJobSuccessResult {job['jobId']} continuation: UNAVAILABLE on attempt 1 of 4"
        r" \(THROTTLING\); retrying in 1\.\d\ds",
        run.stderr,
    ), run.output
    received = emulator.requests(job["jobId"])
    assert [r["status"] for r in received] == [400, 400, 400, 200]
    printed = ok_lines(run.stdout)
    assert [(p["phase"], p["attempts"]) for p in printed] == [("continuation", "2")]
    assert [p["request_id"] for p in printed] == [received[3]["requestId"]]


def test_not_found_is_never_retried(worker, emulator):
    missing = str(uuid.uuid4())

    run = worker("--job-id", missing)

    assert run.returncode == 1, run.output
    assert "failed: NOT_FOUND" in run.stderr
    assert "reason: JOB_NOT_FOUND (domain codepipeline.amazonaws.com)" in run.stderr
    assert "metadata: awsErrorCode=JobNotFoundException" in run.stderr
    assert "retrying" not in run.stderr
    assert len(emulator.requests(missing)) == 1


def test_report_that_landed_before_a_reset_counts_as_already_reported(worker, emulator):
    # The final report is applied, then the connection is reset before AWS
    # answers. The gateway retries; AWS says the job is already Succeeded; the
    # gateway marks the error earlierAttemptMayHaveBeenApplied, and the worker
    # takes it as done.
    job = emulator.create_job("custom")
    emulator.inject(operation="PutJobSuccessResult", kind="resetAfterApply", times=1)

    run = worker("--job-id", job["jobId"], "--continuation-token", "phase=finish")

    assert run.returncode == 0, run.output
    assert re.search(
        rf"^PutJobSuccessResult {job['jobId']} final: already reported", run.stdout, re.MULTILINE
    ), run.output
    received = emulator.requests(job["jobId"])
    assert [(r["status"], r["errorType"]) for r in received] == [
        (0, None),
        (400, "InvalidJobStateException"),
    ]
    assert received[0]["body"] == received[1]["body"]
    assert "outputVariables" in received[0]["body"]
    assert emulator.job(job["jobId"])["state"] == "Succeeded"
    assert emulator.job(job["jobId"])["resultsReceived"] == 1


def test_a_second_final_report_without_unknown_outcome_fails(worker, emulator):
    # Without an attempt of unknown outcome, INVALID_JOB_STATE is a real error.
    job = emulator.create_job("custom")
    first = worker("--job-id", job["jobId"], "--continuation-token", "phase=finish")
    assert first.returncode == 0, first.output

    # A different report for the finished job (a progress report this time).
    again = worker("--job-id", job["jobId"])

    assert again.returncode == 1, again.output
    assert "failed: FAILED_PRECONDITION" in again.stderr
    assert "reason: INVALID_JOB_STATE" in again.stderr
    assert "earlierAttemptMayHaveBeenApplied" not in again.stderr
    assert len(emulator.requests(job["jobId"])) == 2


def test_the_identical_report_again_is_a_replay_that_never_reaches_aws(worker, emulator):
    # A worker whose answer was lost reports the same result again: the
    # gateway remembers delivering it and answers OK (replay) from memory.
    job = emulator.create_job("custom")
    first = worker("--job-id", job["jobId"], "--continuation-token", "phase=finish")
    assert first.returncode == 0, first.output

    again = worker("--job-id", job["jobId"], "--continuation-token", "phase=finish")

    assert again.returncode == 0, again.output
    assert len(emulator.requests(job["jobId"])) == 1
    assert emulator.job(job["jobId"])["resultsReceived"] == 1


def test_deadline_exceeded_is_retried_and_the_job_is_reported_once(
    worker, serve_gateway, standalone_emulator
):
    # AWS takes 1.5 s over the first attempt; the worker's deadline is 0.5 s.
    # The gateway answers DEADLINE_EXCEEDED (outcome unknown) before the
    # worker's own timer fires, the worker tries again, and the job ends up
    # with exactly one applied result whichever attempt lands.
    # A gateway of its own: the dev gateway's adaptive rate limit, slowed by
    # the throttling tests just before, could refuse a 0.5 s attempt before
    # it reached AWS (RATE_LIMITED), and this test is about the deadline.
    gateway = serve_gateway({})
    emulator = standalone_emulator.control
    emulator.clear_faults()
    job = emulator.create_job("custom")
    emulator.inject(operation="PutJobSuccessResult", kind="delay", delayMs=1500, times=1)

    run = worker(
        "--job-id", job["jobId"], "--continuation-token", "phase=finish", "--deadline", "0.5",
        target=gateway.grpc_target,
    )  # fmt: skip

    assert run.returncode == 0, run.output
    assert re.search(
        rf"PutJobSuccessResult {job['jobId']} final: DEADLINE_EXCEEDED on attempt 1 of 4",
        run.stderr,
    ), run.output
    assert re.search(
        rf"^PutJobSuccessResult {job['jobId']} final: (ok|already reported)",
        run.stdout,
        re.MULTILINE,
    ), run.output

    time.sleep(1.2)  # let the delayed first attempt finish, if it is going to
    received = emulator.requests(job["jobId"])
    assert len(received) == 2, received
    assert received[0]["fault"] == "delay(1500ms)"
    assert received[0]["body"] == received[1]["body"]
    assert emulator.job(job["jobId"])["state"] == "Succeeded"
    assert emulator.job(job["jobId"])["resultsReceived"] == 1


def test_round_robin_over_a_dns_target(worker, emulator):
    # The shape of a headless-Service target: dns:///name:port with round_robin.
    partner = emulator.create_job("thirdParty")
    port = worker.target.rsplit(":", 1)[1]

    run = worker(
        "--round-robin",
        "--partner-job-id", partner["jobId"],
        "--client-token", partner["clientToken"],
        "--deadline", "5",
        extra_env={"CPGW_TARGET": f"dns:///localhost:{port}"},
    )  # fmt: skip

    assert run.returncode == 0, run.output
    assert [(r["operation"], r["status"]) for r in emulator.requests()] == [
        ("PutThirdPartyJobSuccessResult", 200)
    ]


def test_worker_sends_the_bearer_token_from_its_token_file_reading_it_each_call(
    worker, serve_gateway, standalone_emulator, tmp_path
):
    """As with a projected service-account token: the kubelet rewrites the
    file, and the next call must carry the new token."""
    gateway = serve_gateway({}, callers={"old-runner": "token-one", "new-runner": "token-two"})
    token_file = tmp_path / "token"
    emulator = standalone_emulator.control

    token_file.write_text("token-one\n")
    first = emulator.create_job("custom")
    run = worker("--job-id", first["jobId"], "--token-file", str(token_file), target=gateway.grpc_target)
    assert run.returncode == 0, run.output

    token_file.write_text("token-two")  # rotated
    second = emulator.create_job("custom")
    run = worker("--job-id", second["jobId"], target=gateway.grpc_target,
                 extra_env={"CPGW_TOKEN_FILE": str(token_file)})  # fmt: skip
    assert run.returncode == 0, run.output

    # Without a token, or with one the gateway does not know: refused, nothing sent.
    third = emulator.create_job("custom")
    run = worker("--job-id", third["jobId"], target=gateway.grpc_target)
    assert run.returncode == 1, run.output
    assert "failed: UNAUTHENTICATED" in run.stderr, run.output
    assert "reason: UNAUTHENTICATED (domain codepipeline-gateway)" in run.stderr, run.output
    token_file.write_text("token-three")
    run = worker("--job-id", third["jobId"], "--token-file", str(token_file), target=gateway.grpc_target)
    assert run.returncode == 1 and "UNAUTHENTICATED" in run.stderr, run.output
    assert "token-three" not in run.stderr
    assert emulator.requests(third["jobId"]) == []
    assert [len(emulator.requests(j["jobId"])) for j in (first, second)] == [1, 1]


def test_worker_speaks_tls_and_presents_its_client_certificate(worker, serve_gateway, standalone_emulator, pki):
    """A gateway that serves TLS and takes client certificates as identities
    (mTLS): the worker verifies the gateway and proves who it is, no token."""
    gateway = serve_gateway({}, tls=pki)
    emulator = standalone_emulator.control
    tls = ["--tls-ca-file", str(pki.ca), "--tls-server-name", "localhost"]
    mtls = [*tls, "--tls-cert-file", str(pki.client_cert), "--tls-key-file", str(pki.client_key)]

    job = emulator.create_job("custom")
    run = worker("--job-id", job["jobId"], *mtls, target=gateway.grpc_target)
    assert run.returncode == 0, run.output
    assert len(emulator.requests(job["jobId"])) == 1

    # TLS without a client certificate (and no token): the gateway does not know it.
    other = emulator.create_job("custom")
    run = worker("--job-id", other["jobId"], *tls, target=gateway.grpc_target)
    assert run.returncode == 1 and "failed: UNAUTHENTICATED" in run.stderr, run.output
    # Plaintext to a TLS port gets nowhere.
    run = worker("--job-id", other["jobId"], "--max-attempts", "1", "--deadline", "3", target=gateway.grpc_target)
    assert run.returncode == 1, run.output
    assert emulator.requests(other["jobId"]) == []
