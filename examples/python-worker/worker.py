#!/usr/bin/env python3
"""An example CodePipeline job worker that talks to AWS CodePipeline only
through codepipeline-gateway over gRPC, so it needs no AWS credentials.

It runs in one of two ways:

* As a complete job worker (`--poll custom` or `--poll partner`): a loop that
  polls for jobs of one action type, claims each with its nonce
  (AcknowledgeJob; a partner job's nonce comes from GetThirdPartyJobDetails),
  does the work (`do_the_work` below: replace it with yours) and reports
  progress with a continuation token, success, or failure. Partner jobs need
  no client token: the gateway's client-token map supplies it. The loop ends
  after `--max-jobs` jobs, after one poll with `--once`, after
  `--idle-timeout` seconds without a job, or on SIGTERM/SIGINT (after the job
  in hand).
* As a reporter for jobs whose ids it is given (`--job-id`, and
  `--partner-job-id` with `--client-token`): a custom job gets a success with
  a continuation token (the action goes on, 0% done; CodePipeline closes the
  job and hands the token back in a continuation job), or, given
  `--continuation-token` (the job brought one back), the final success with
  output variables; a partner job gets a success.

Every call has a deadline. Only UNAVAILABLE and RESOURCE_EXHAUSTED are retried
(the gateway has already retried AWS throttling and 5xx itself), waiting at
least as long as the error's google.rpc.RetryInfo asks, with exponential
backoff and full jitter. DEADLINE_EXCEEDED is retried too, because every call
here is safe to repeat: when an earlier attempt did land, a repeated report
fails with FAILED_PRECONDITION (INVALID_JOB_STATE) and a repeated
acknowledgement with FAILED_PRECONDITION (INVALID_NONCE), which this worker
then reads as "already done". INVALID_NONCE without such an earlier attempt
means that another worker claimed the job: it is skipped. See docs/clients.md.

Exit status: 0 when every call was accepted or had already landed (skipped
jobs included), 1 when a call failed for good, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "generated"))
try:
    from codepipeline_gateway.v1 import job_worker_pb2 as pb
    from codepipeline_gateway.v1 import job_worker_pb2_grpc as pb_grpc
except ImportError:  # pragma: no cover - a setup problem, not a code path
    sys.exit("the gRPC stubs are missing: run `python generate_stubs.py` first")

# The gateway retries AWS throttling, 5xx and transport errors itself; what it
# still answers with these codes is worth another try later.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
# A call whose outcome is unknown may be repeated (see the module doc).
RETRYABLE_IF_SAFE_TO_REPEAT = {grpc.StatusCode.DEADLINE_EXCEEDED}

# ErrorInfo metadata the gateway sets (docs/clients.md).
EARLIER_ATTEMPT_MAY_HAVE_BEEN_APPLIED = "earlierAttemptMayHaveBeenApplied"
OUTCOME_UNKNOWN = "outcomeUnknown"

# What a repeated call answers when its earlier attempt landed.
REPORT_LANDED = "INVALID_JOB_STATE"  # the job already has this result
ACK_LANDED = "INVALID_NONCE"  # the nonce was already used, by this worker
LASTED = 10.0  # seconds: a subscription that ended after this starts its backoff over


@dataclass
class ErrorDetails:
    """The google.rpc details of a failed call, decoded."""

    error_info: error_details_pb2.ErrorInfo | None = None
    field_violations: list[tuple[str, str]] = field(default_factory=list)
    retry_delay: float | None = None

    @property
    def reason(self) -> str:
        return self.error_info.reason if self.error_info else ""

    def flag(self, key: str) -> bool:
        return bool(self.error_info) and self.error_info.metadata.get(key) == "true"


def decode_details(error: grpc.RpcError) -> ErrorDetails:
    """Reads google.rpc.Status from the `grpc-status-details-bin` trailer."""
    decoded = ErrorDetails()
    status = rpc_status.from_call(error)  # None when the trailer is absent
    if status is None:
        return decoded
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            decoded.error_info = info
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            decoded.field_violations.extend(
                (v.field, v.description) for v in bad_request.field_violations
            )
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry_info = error_details_pb2.RetryInfo()
            detail.Unpack(retry_info)
            decoded.retry_delay = retry_info.retry_delay.ToTimedelta().total_seconds()
    return decoded


class ReportFailed(Exception):
    """A call that failed for good (after any retries)."""

    def __init__(self, label: str, code: grpc.StatusCode, message: str, details: ErrorDetails):
        super().__init__(f"{label}: failed: {code.name}: {message}")
        self.code = code
        self.message = message
        self.details = details

    def describe(self) -> str:
        lines = [str(self)]
        info = self.details.error_info
        if info is not None:
            lines.append(f"  reason: {info.reason} (domain {info.domain})")
            for key in sorted(info.metadata):
                lines.append(f"  metadata: {key}={info.metadata[key]}")
        for path, description in self.details.field_violations:
            lines.append(f"  field violation: {path}: {description}")
        if self.details.retry_delay is not None:
            lines.append(f"  retry after: {self.details.retry_delay:.3f}s")
        return "\n".join(lines)


@dataclass
class Outcome:
    aws_request_id: str
    attempts: int
    already_done: bool = False
    response: object = None


@dataclass
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, retry: int, details: ErrorDetails) -> float:
        """Full-jitter exponential backoff, never shorter than RetryInfo asks."""
        cap = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        jittered = random.uniform(0, cap)
        return max(jittered, details.retry_delay or 0.0)


def call(
    label,
    method,
    request,
    *,
    deadline: float,
    policy: RetryPolicy,
    landed_reason: str | None = REPORT_LANDED,
) -> Outcome:
    """Calls `method` until it succeeds or fails for good.

    `landed_reason` is the FAILED_PRECONDITION reason that, after an attempt
    of unknown outcome, means that attempt landed: INVALID_JOB_STATE for a
    report, INVALID_NONCE for an acknowledgement, None for reads and polls.
    """
    earlier_outcome_unknown = False
    for attempt in range(1, policy.max_attempts + 1):
        try:
            response = method(request, timeout=deadline)
            return Outcome(response.aws_request_id, attempt, response=response)
        except grpc.RpcError as error:
            code = error.code()
            details = decode_details(error)

            # The call's own "already done" answer after an attempt of unknown
            # outcome (ours, or one of the gateway's own retries): the earlier
            # attempt landed. Nothing more to do.
            if (
                landed_reason is not None
                and code == grpc.StatusCode.FAILED_PRECONDITION
                and details.reason == landed_reason
                and (earlier_outcome_unknown or details.flag(EARLIER_ATTEMPT_MAY_HAVE_BEEN_APPLIED))
            ):
                return Outcome(
                    (details.error_info.metadata.get("awsRequestId", "") if details.error_info else ""),
                    attempt,
                    already_done=True,
                )

            # Remember when this attempt itself may have reached AWS.
            if (
                code == grpc.StatusCode.DEADLINE_EXCEEDED
                or details.flag(OUTCOME_UNKNOWN)
                or details.flag(EARLIER_ATTEMPT_MAY_HAVE_BEEN_APPLIED)
                # UNAVAILABLE without the gateway's ErrorInfo: the connection to
                # the gateway itself broke, perhaps after the call was sent.
                or (code == grpc.StatusCode.UNAVAILABLE and details.error_info is None)
            ):
                earlier_outcome_unknown = True

            retryable = code in RETRYABLE or code in RETRYABLE_IF_SAFE_TO_REPEAT
            if not retryable or attempt == policy.max_attempts:
                raise ReportFailed(label, code, error.details() or "", details) from None
            wait = policy.delay(attempt, details)
            print(
                f"{label}: {code.name} on attempt {attempt} of {policy.max_attempts}"
                f" ({details.reason or 'no reason'}); retrying in {wait:.2f}s",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(wait)
    raise AssertionError("unreachable")


def report(label, method, request, *, deadline: float, policy: RetryPolicy) -> Outcome:
    """Sends a success or failure report (see `call`)."""
    return call(label, method, request, deadline=deadline, policy=policy)


def print_outcome(label: str, outcome: Outcome, already: str = "already reported") -> None:
    if outcome.already_done:
        print(
            f"{label}: {already} (an earlier attempt landed)"
            f" awsRequestId={outcome.aws_request_id or '-'} attempts={outcome.attempts}",
            flush=True,
        )
    else:
        print(
            f"{label}: ok awsRequestId={outcome.aws_request_id} attempts={outcome.attempts}",
            flush=True,
        )


# ---------------------------------------------------------------------------
# The work. Replace `do_the_work` with what your action really does.


@dataclass
class WorkJob:
    """A claimed job, custom or partner, as the work sees it."""

    kind: str  # "custom" or "partner"
    id: str
    data: pb.JobData
    client_id: str = ""  # partner jobs only
    # The gateway target (AWS account) the poll said the job came from: sent
    # back on every call about the job, so that any replica reaches it.
    target: str = ""


@dataclass
class Progress:
    """Not done yet: report success so far; CodePipeline hands the token back
    in the data of a continuation job."""

    continuation_token: str
    summary: str
    percent_complete: int


@dataclass
class Success:
    summary: str
    output_variables: dict[str, str] = field(default_factory=dict)  # custom jobs only


@dataclass
class Failure:
    message: str
    type: int = pb.FAILURE_TYPE_JOB_FAILED


def do_the_work(job: WorkJob, output_variables: dict[str, str]) -> Progress | Success | Failure:
    """A stand-in for real work, steered by the action's configuration.

    `Mode=fail` (or `Fail=true`) fails the job, with `FailureMessage` if set.
    Otherwise a job without a continuation token starts the work and asks to
    be continued; the continuation job, which carries the token, finishes it.
    """
    configuration = dict(job.data.action_configuration.configuration)
    if configuration.get("Mode", "").lower() == "fail" or configuration.get("Fail", "").lower() == "true":
        return Failure(
            configuration.get("FailureMessage")
            or "the action configuration asked for a failure (Mode=fail)"
        )
    if not job.data.continuation_token:
        return Progress(continuation_token="phase=finish", summary="started", percent_complete=0)
    return Success(summary=f"finished ({job.data.continuation_token})", output_variables=output_variables)


# ---------------------------------------------------------------------------
# The polling worker.


@dataclass
class PollSettings:
    mode: str  # "custom" or "partner"
    action_type_id: pb.ActionTypeId
    max_jobs: int | None
    once: bool
    idle_timeout: float | None
    poll_interval: float
    max_batch_size: int
    output_variables: dict[str, str]
    subscribe: bool = False
    # The gateway target (AWS account and region) to poll; "" lets the
    # gateway choose (the target mapped to the action type, else its own).
    poll_target: str = ""


class Worker:
    def __init__(self, stub, settings: PollSettings, *, deadline: float, policy: RetryPolicy):
        self.stub = stub
        self.settings = settings
        self.deadline = deadline
        self.policy = policy
        self.stopping = threading.Event()
        self.counts: Counter[str] = Counter()

    def _call(self, label, method, request, landed_reason=None) -> Outcome:
        return call(
            label, method, request, deadline=self.deadline, policy=self.policy, landed_reason=landed_reason
        )

    def run(self) -> int:
        """Polls and works until a stop condition; returns the exit status."""
        s = self.settings
        handled = 0
        idle_since = time.monotonic()
        while not self.stopping.is_set():
            if s.max_jobs is not None and handled >= s.max_jobs:
                break
            # Never ask for more jobs than will be worked on: a polled job that
            # is never acknowledged waits for CodePipeline's timeout.
            batch = s.max_batch_size if s.max_jobs is None else min(s.max_batch_size, s.max_jobs - handled)
            try:
                jobs = self.poll(batch)
            except ReportFailed as failure:
                print(failure.describe(), file=sys.stderr, flush=True)
                self.counts["error"] += 1
                break  # a poll that fails for good is a configuration problem
            for job in jobs:
                self.counts[self.handle(job)] += 1
                handled += 1
            if jobs:
                idle_since = time.monotonic()
            if s.once:
                break
            if not jobs:
                if s.idle_timeout is not None and time.monotonic() - idle_since >= s.idle_timeout:
                    break
                self.stopping.wait(s.poll_interval)
        return self.finish(handled)

    def finish(self, handled: int) -> int:
        """Prints what became of the jobs; returns the exit status."""
        c = self.counts
        print(
            f"done: {handled} jobs (succeeded {c['succeeded']}, continued {c['continued']},"
            f" failed {c['failed']}, skipped {c['skipped']}, errors {c['error']})",
            flush=True,
        )
        return 1 if c["error"] else 0

    def subscribe(self) -> int:
        """Works jobs the gateway pushes (SubscribeJobs / SubscribeThirdPartyJobs)
        instead of polling: credit 1 (one job at a time), one more credit after
        each job. The gateway ends a subscription with UNAVAILABLE when its
        connection closes (its shutdown, maximum connection age): subscribe
        again, after a jittered backoff."""
        s = self.settings
        if s.mode == "custom":
            method, name, message = self.stub.SubscribeJobs, "SubscribeJobs", pb.SubscribeJobsRequest
        else:
            method, name, message = (
                self.stub.SubscribeThirdPartyJobs,
                "SubscribeThirdPartyJobs",
                pb.SubscribeThirdPartyJobsRequest,
            )
        handled, retries = 0, 0
        last_job = time.monotonic()
        busy = threading.Event()
        while not self.stopping.is_set() and (s.max_jobs is None or handled < s.max_jobs):
            credit: queue.Queue = queue.Queue()
            credit.put(message(action_type_id=s.action_type_id, credit=1, target=s.poll_target))
            stream = method(iter(credit.get, None))
            opened = time.monotonic()
            ended = threading.Event()

            def watch(stream=stream, ended=ended):
                # Ends the stream between jobs on SIGTERM or after the idle timeout.
                while not ended.wait(0.1):
                    idle = s.idle_timeout is not None and time.monotonic() - last_job >= s.idle_timeout
                    if (self.stopping.is_set() or idle) and not busy.is_set():
                        self.stopping.set()
                        stream.cancel()
                        return

            threading.Thread(target=watch, daemon=True).start()
            try:
                print(f"{name}: subscribed", flush=True)
                for pushed in stream:
                    busy.set()
                    retries = 0
                    print(f"{name}: job {pushed.job.id if s.mode == 'custom' else pushed.job.job_id}", flush=True)
                    self.counts[self.handle(pushed.job)] += 1
                    handled += 1
                    last_job = time.monotonic()
                    busy.clear()
                    if s.max_jobs is not None and handled >= s.max_jobs:
                        break
                    credit.put(message(credit=1))
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.CANCELLED and self.stopping.is_set():
                    break
                details = decode_details(error)
                if error.code() not in RETRYABLE:
                    print(ReportFailed(name, error.code(), error.details() or "", details).describe(),
                          file=sys.stderr, flush=True)  # fmt: skip
                    self.counts["error"] += 1
                    break
                # A subscription that lasted (until the connection's maximum
                # age, say) starts the backoff over.
                retries = 1 if time.monotonic() - opened >= LASTED else retries + 1
                wait = self.policy.delay(retries, details)
                print(f"{name}: ended: {error.code().name}: {error.details()}; subscribing again in {wait:.2f}s",
                      flush=True)  # fmt: skip
                self.stopping.wait(wait)
            finally:
                ended.set()
                credit.put(None)
                stream.cancel()
        return self.finish(handled)

    def poll(self, batch: int) -> list:
        s = self.settings
        if s.mode == "custom":
            method, name = self.stub.PollForJobs, "PollForJobs"
            request = pb.PollForJobsRequest(
                action_type_id=s.action_type_id, max_batch_size=batch, target=s.poll_target
            )
        else:
            method, name = self.stub.PollForThirdPartyJobs, "PollForThirdPartyJobs"
            request = pb.PollForThirdPartyJobsRequest(
                action_type_id=s.action_type_id, max_batch_size=batch, target=s.poll_target
            )
        outcome = self._call(name, method, request)
        jobs = list(outcome.response.jobs)
        if jobs:
            print(
                f"{name}: {len(jobs)} job{'s' if len(jobs) != 1 else ''}"
                f" awsRequestId={outcome.aws_request_id} attempts={outcome.attempts}",
                flush=True,
            )
        return jobs

    def handle(self, polled) -> str:
        """Claims, works on and reports one polled job; returns what became of it."""
        try:
            job = self.claim(polled)
            if job is None:
                return "skipped"
            try:
                result = do_the_work(job, self.settings.output_variables)
            except Exception as error:  # the work broke: that is a failed job
                result = Failure(f"the work raised {type(error).__name__}: {error}"[:5000])
            return self.send_result(job, result)
        except ReportFailed as failure:
            print(failure.describe(), file=sys.stderr, flush=True)
            return "error"

    def claim(self, polled) -> WorkJob | None:
        """Acknowledges the job; None when another worker has it."""
        if self.settings.mode == "custom":
            job = WorkJob("custom", polled.id, polled.data, target=polled.target)
            label = f"AcknowledgeJob {job.id}"
            method = self.stub.AcknowledgeJob
            request = pb.AcknowledgeJobRequest(job_id=job.id, nonce=polled.nonce, target=job.target)
        else:
            # A partner poll returns only ids: the data and the nonce come with
            # the details. No client token: the gateway fills it in from its
            # map. client_id lets any replica of the gateway do that.
            label = f"GetThirdPartyJobDetails {polled.job_id}"
            outcome = self._call(
                label,
                self.stub.GetThirdPartyJobDetails,
                pb.GetThirdPartyJobDetailsRequest(
                    job_id=polled.job_id, client_id=polled.client_id, target=polled.target
                ),
            )
            print_outcome(label, outcome)
            details = outcome.response.job_details
            job = WorkJob("partner", polled.job_id, details.data, client_id=polled.client_id, target=polled.target)
            label = f"AcknowledgeThirdPartyJob {job.id}"
            method = self.stub.AcknowledgeThirdPartyJob
            request = pb.AcknowledgeThirdPartyJobRequest(
                job_id=job.id, nonce=details.nonce, client_id=job.client_id, target=job.target
            )
        try:
            outcome = self._call(label, method, request, landed_reason=ACK_LANDED)
        except ReportFailed as failure:
            if failure.code == grpc.StatusCode.FAILED_PRECONDITION and failure.details.reason == "INVALID_NONCE":
                # No earlier attempt of ours may have landed: the nonce is
                # stale because another worker claimed the job. Leave it alone.
                print(f"{label}: skipped: another worker has claimed the job (INVALID_NONCE)", flush=True)
                return None
            raise
        print_outcome(label, outcome, already="already acknowledged by this worker")
        return job

    def send_result(self, job: WorkJob, result: Progress | Success | Failure) -> str:
        context = job.data.pipeline_context
        run_id = f"python-worker-{context.action.action_execution_id or job.id}"
        custom = job.kind == "custom"
        if isinstance(result, Failure):
            details = pb.FailureDetails(type=result.type, message=result.message, external_execution_id=run_id)
            if custom:
                name, method = "PutJobFailureResult", self.stub.PutJobFailureResult
                request = pb.PutJobFailureResultRequest(job_id=job.id, failure_details=details, target=job.target)
            else:
                name, method = "PutThirdPartyJobFailureResult", self.stub.PutThirdPartyJobFailureResult
                request = pb.PutThirdPartyJobFailureResultRequest(
                    job_id=job.id, client_id=job.client_id, failure_details=details, target=job.target
                )
            label, kept = f"{name} {job.id}", "failed"
        else:
            progress = isinstance(result, Progress)
            execution = pb.ExecutionDetails(
                summary=result.summary,
                external_execution_id=run_id,
                # optional int32: 0 is sent as 0.
                percent_complete=result.percent_complete if progress else 100,
            )
            fields = {"job_id": job.id, "execution_details": execution, "target": job.target}
            if progress:
                fields["continuation_token"] = result.continuation_token
            if custom:
                name, method = "PutJobSuccessResult", self.stub.PutJobSuccessResult
                if not progress and result.output_variables:
                    fields["output_variables"] = result.output_variables
                request = pb.PutJobSuccessResultRequest(**fields)
            else:
                name, method = "PutThirdPartyJobSuccessResult", self.stub.PutThirdPartyJobSuccessResult
                request = pb.PutThirdPartyJobSuccessResultRequest(client_id=job.client_id, **fields)
            label = f"{name} {job.id} {'continuation' if progress else 'final'}"
            kept = "continued" if progress else "succeeded"
        print_outcome(label, self._call(label, method, request, landed_reason=REPORT_LANDED))
        return kept


# ---------------------------------------------------------------------------
# Report-only mode: results for jobs whose ids are given.


def report_given_jobs(stub, args, policy: RetryPolicy) -> int:
    try:
        if args.job_id and not args.continuation_token:
            # Phase 1: the action has started and is not done yet. This
            # closes the job; CodePipeline hands the token back in a new
            # (continuation) job, reported on with --continuation-token.
            label = f"PutJobSuccessResult {args.job_id} continuation"
            request = pb.PutJobSuccessResultRequest(
                job_id=args.job_id,
                continuation_token="phase=finish",
                execution_details=pb.ExecutionDetails(
                    summary="started",
                    external_execution_id="python-worker-run-1",
                    percent_complete=args.percent_complete,
                ),
            )
            outcome = report(label, stub.PutJobSuccessResult, request, deadline=args.deadline, policy=policy)
            print_outcome(label, outcome)

        elif args.job_id:
            # Phase 2, on the job that brought the token back: the final
            # result, with output variables for later actions.
            label = f"PutJobSuccessResult {args.job_id} final"
            request = pb.PutJobSuccessResultRequest(
                job_id=args.job_id,
                execution_details=pb.ExecutionDetails(
                    summary="finished",
                    external_execution_id="python-worker-run-1",
                    percent_complete=100,
                ),
                output_variables=output_variables(args),
            )
            outcome = report(label, stub.PutJobSuccessResult, request, deadline=args.deadline, policy=policy)
            print_outcome(label, outcome)

        if args.partner_job_id:
            label = f"PutThirdPartyJobSuccessResult {args.partner_job_id}"
            request = pb.PutThirdPartyJobSuccessResultRequest(
                job_id=args.partner_job_id,
                client_token=args.client_token,
                execution_details=pb.ExecutionDetails(summary="partner action done"),
            )
            outcome = report(
                label, stub.PutThirdPartyJobSuccessResult, request, deadline=args.deadline, policy=policy
            )
            print_outcome(label, outcome)
    except ReportFailed as failure:
        print(failure.describe(), file=sys.stderr, flush=True)
        return 1
    return 0


# ---------------------------------------------------------------------------
# Command line.

CATEGORIES = ["Source", "Build", "Deploy", "Test", "Invoke", "Approval", "Compute"]
DEFAULT_ACTION_TYPES = {  # those of `codepipeline-gateway dev`
    "custom": ("Build", "CpgwDevBuilder"),
    "partner": ("Deploy", "CpgwDevPartner"),
}


def parse_output_variable(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def output_variables(args) -> dict[str, str]:
    return dict(args.output_variable or [("RESULT", "passed")])


def parse_args(argv: list[str]) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description="A CodePipeline job worker that works through codepipeline-gateway."
    )
    parser.add_argument(
        "--target",
        default=env("CPGW_TARGET", "127.0.0.1:50051"),
        help="gateway address, e.g. 127.0.0.1:50051 or "
        "dns:///codepipeline-gateway-headless.ci.svc:50051 (env CPGW_TARGET)",
    )
    worker = parser.add_argument_group("polling worker")
    worker.add_argument(
        "--poll",
        choices=["custom", "partner"],
        default=env("CPGW_POLL"),
        help="poll for jobs of a custom or a partner action type and work on them (env CPGW_POLL)",
    )
    worker.add_argument(
        "--category",
        choices=CATEGORIES,
        help="the action type's category (default Build for custom, Deploy for partner)",
    )
    worker.add_argument(
        "--provider",
        help="the action type's provider (default CpgwDevBuilder / CpgwDevPartner, as in dev mode)",
    )
    worker.add_argument("--action-version", default="1", help="the action type's version (default 1)")
    worker.add_argument("--max-jobs", type=int, help="stop after this many jobs (default: no limit)")
    worker.add_argument("--once", action="store_true", help="poll once, work on what it returns, stop")
    worker.add_argument(
        "--idle-timeout", type=float, help="stop after this many seconds without a job (default: never)"
    )
    worker.add_argument(
        "--poll-interval", type=float, default=1.0, help="seconds between empty polls (default 1)"
    )
    worker.add_argument("--max-batch-size", type=int, default=1, help="jobs per poll (default 1)")
    worker.add_argument(
        "--poll-target",
        default=env("CPGW_POLL_TARGET", ""),
        help="the gateway target (an AWS account and region the operator named) to poll; default: "
        "the one the gateway maps the action type to, else its own (env CPGW_POLL_TARGET)",
    )
    worker.add_argument(
        "--subscribe",
        action="store_true",
        default=env("CPGW_SUBSCRIBE", "") == "true",
        help="have the gateway push jobs (SubscribeJobs) instead of polling; reconnects with "
        "backoff when the subscription ends (env CPGW_SUBSCRIBE=true)",
    )

    given = parser.add_argument_group("reporting for given jobs")
    given.add_argument("--job-id", default=env("JOB_ID"), help="custom-action job id (env JOB_ID)")
    given.add_argument(
        "--partner-job-id",
        default=env("PARTNER_JOB_ID"),
        help="partner (third-party) job id (env PARTNER_JOB_ID)",
    )
    given.add_argument(
        "--client-token",
        default=env("CLIENT_TOKEN"),
        help="the partner job's client token (env CLIENT_TOKEN)",
    )
    given.add_argument(
        "--continuation-token",
        default=env("CONTINUATION_TOKEN"),
        help="the custom job's data.continuationToken, when CodePipeline handed one back: "
        "the worker resumes and sends only the final report (env CONTINUATION_TOKEN)",
    )
    given.add_argument(
        "--percent-complete",
        type=int,
        default=0,
        help="progress sent with the continuation report (default 0)",
    )

    common = parser.add_argument_group("both")
    common.add_argument(
        "--output-variable",
        action="append",
        type=parse_output_variable,
        metavar="KEY=VALUE",
        help="output variable of a final custom-job report (repeatable; default RESULT=passed)",
    )
    common.add_argument(
        "--deadline",
        type=float,
        default=float(env("CPGW_DEADLINE", "10")),
        help="seconds each call may take (env CPGW_DEADLINE, default 10)",
    )
    common.add_argument("--max-attempts", type=int, default=4, help="attempts per call (default 4)")
    common.add_argument(
        "--round-robin",
        action="store_true",
        help="balance calls over every address the target resolves to (use with dns:///)",
    )
    common.add_argument(
        "--authority",
        default=env("CPGW_AUTHORITY"),
        help="the :authority to send instead of the target's name, e.g. for a list of "
        "addresses such as ipv4:10.0.0.1:50051,10.0.0.2:50051 (env CPGW_AUTHORITY)",
    )
    parser.add_argument(
        "--token-file",
        default=env("CPGW_TOKEN_FILE"),
        help="a file holding the bearer token to send (a projected service-account token, "
        "re-read on every call since the kubelet rotates it; env CPGW_TOKEN_FILE)",
    )
    tls = parser.add_argument_group("TLS (a gateway that serves TLS; plaintext without --tls-ca-file)")
    tls.add_argument("--tls-ca-file", default=env("CPGW_TLS_CA_FILE"),
                     help="CA certificates (PEM) to trust for the gateway's certificate (env CPGW_TLS_CA_FILE)")
    tls.add_argument("--tls-cert-file", default=env("CPGW_TLS_CERT_FILE"),
                     help="this worker's client certificate (PEM), for mTLS (env CPGW_TLS_CERT_FILE)")
    tls.add_argument("--tls-key-file", default=env("CPGW_TLS_KEY_FILE"),
                     help="the client certificate's key (PEM) (env CPGW_TLS_KEY_FILE)")
    tls.add_argument("--tls-server-name", default=env("CPGW_TLS_SERVER_NAME"),
                     help="the name to expect in the gateway's certificate, when the target's is "
                     "another (env CPGW_TLS_SERVER_NAME)")  # fmt: skip
    args = parser.parse_args(argv)
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        parser.error("--tls-cert-file and --tls-key-file go together")
    if args.tls_cert_file and not args.tls_ca_file:
        parser.error("--tls-cert-file needs --tls-ca-file")
    if args.max_attempts < 1:
        parser.error("--max-attempts must be at least 1")
    if args.subscribe and not args.poll:
        parser.error("--subscribe needs --poll custom|partner (the kind of jobs to subscribe to)")
    if args.subscribe and args.once:
        parser.error("--subscribe and --once do not go together: a subscription waits for jobs")
    if args.poll:
        if args.job_id or args.partner_job_id:
            parser.error("--poll works on the jobs it polls: leave out --job-id and --partner-job-id")
        if args.max_jobs is not None and args.max_jobs < 1:
            parser.error("--max-jobs must be at least 1")
        if args.max_batch_size < 1:
            parser.error("--max-batch-size must be at least 1")
        if args.idle_timeout is not None and args.idle_timeout < 0:
            parser.error("--idle-timeout must not be negative")
        return args
    if not args.job_id and not args.partner_job_id:
        parser.error("give --poll custom|partner, or --job-id and/or --partner-job-id")
    if args.partner_job_id and not args.client_token:
        parser.error("--partner-job-id needs --client-token")
    return args


def poll_settings(args) -> PollSettings:
    category, provider = DEFAULT_ACTION_TYPES[args.poll]
    category = args.category or category
    return PollSettings(
        mode=args.poll,
        action_type_id=pb.ActionTypeId(
            category=pb.ActionCategory.Value(f"ACTION_CATEGORY_{category.upper()}"),
            owner=pb.ACTION_OWNER_CUSTOM if args.poll == "custom" else pb.ACTION_OWNER_THIRD_PARTY,
            provider=args.provider or provider,
            version=args.action_version,
        ),
        max_jobs=args.max_jobs,
        once=args.once,
        idle_timeout=args.idle_timeout,
        poll_interval=args.poll_interval,
        max_batch_size=args.max_batch_size,
        output_variables=output_variables(args),
        subscribe=args.subscribe,
        poll_target=args.poll_target,
    )


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Sends `authorization: Bearer <token>` on every call and subscription,
    reading the token file each time: the kubelet rotates projected
    service-account tokens, so a token read once at start-up would expire
    under a long-running worker."""

    def __init__(self, path: str):
        self.path = path

    def _with_token(self, call_details):
        with open(self.path, encoding="utf-8") as file:
            token = file.read().strip()
        metadata = [*(call_details.metadata or []), ("authorization", f"Bearer {token}")]
        return call_details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation, call_details, request):
        return continuation(self._with_token(call_details), request)

    def intercept_stream_stream(self, continuation, call_details, request_iterator):
        return continuation(self._with_token(call_details), request_iterator)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    policy = RetryPolicy(max_attempts=args.max_attempts)
    options = []
    if args.round_robin:
        options.append(("grpc.lb_policy_name", "round_robin"))
    if args.authority:
        options.append(("grpc.default_authority", args.authority))

    if args.tls_ca_file:
        if args.tls_server_name:
            options.append(("grpc.ssl_target_name_override", args.tls_server_name))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read_bytes(args.tls_ca_file),
            private_key=read_bytes(args.tls_key_file) if args.tls_key_file else None,
            certificate_chain=read_bytes(args.tls_cert_file) if args.tls_cert_file else None,
        )
        channel = grpc.secure_channel(args.target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(args.target, options=options)
    with channel:
        if args.token_file:
            channel = grpc.intercept_channel(channel, BearerToken(args.token_file))
        stub = pb_grpc.JobWorkerServiceStub(channel)
        if not args.poll:
            return report_given_jobs(stub, args, policy)
        worker = Worker(stub, poll_settings(args), deadline=args.deadline, policy=policy)

        def stop(signum, _frame):
            print(f"{signal.Signals(signum).name}: stopping after the job in hand", file=sys.stderr, flush=True)
            worker.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        return worker.subscribe() if args.subscribe else worker.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
