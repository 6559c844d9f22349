#!/usr/bin/env python3
"""An example CodePipeline job worker that reports results through
codepipeline-gateway over gRPC, so it needs no AWS credentials.

For a custom-action job it reports twice, as a long-running action would:
first a success with a continuation token (the action goes on, 0% done), then
the final success with output variables. For a partner (third-party) job it
reports one success with the job's client token.

Every call has a deadline. Only UNAVAILABLE and RESOURCE_EXHAUSTED are retried
(the gateway has already retried AWS throttling and 5xx itself), waiting at
least as long as the error's google.rpc.RetryInfo asks, with exponential
backoff and full jitter. DEADLINE_EXCEEDED is retried too, because a success
report is safe to repeat: if the earlier attempt did land, the repeat fails
with FAILED_PRECONDITION (INVALID_JOB_STATE), which this worker then treats
as "already reported". See docs/clients.md.

Exit status: 0 when every report was accepted (or had already landed),
1 when a report failed, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
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
# A success report whose outcome is unknown may be repeated (see module doc).
RETRYABLE_IF_SAFE_TO_REPEAT = {grpc.StatusCode.DEADLINE_EXCEEDED}

# ErrorInfo metadata the gateway sets (docs/clients.md).
EARLIER_ATTEMPT_MAY_HAVE_BEEN_APPLIED = "earlierAttemptMayHaveBeenApplied"
OUTCOME_UNKNOWN = "outcomeUnknown"


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
    already_reported: bool = False


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


def report(label, method, request, *, deadline: float, policy: RetryPolicy) -> Outcome:
    """Calls `method` until it succeeds or fails for good."""
    earlier_outcome_unknown = False
    for attempt in range(1, policy.max_attempts + 1):
        try:
            response = method(request, timeout=deadline)
            return Outcome(response.aws_request_id, attempt)
        except grpc.RpcError as error:
            code = error.code()
            details = decode_details(error)

            # A success report that meets INVALID_JOB_STATE after an attempt of
            # unknown outcome (ours, or one of the gateway's own retries) means
            # the earlier report landed and closed the job: nothing to do.
            if (
                code == grpc.StatusCode.FAILED_PRECONDITION
                and details.reason == "INVALID_JOB_STATE"
                and (earlier_outcome_unknown or details.flag(EARLIER_ATTEMPT_MAY_HAVE_BEEN_APPLIED))
            ):
                return Outcome(
                    (details.error_info.metadata.get("awsRequestId", "") if details.error_info else ""),
                    attempt,
                    already_reported=True,
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


def print_outcome(label: str, outcome: Outcome) -> None:
    if outcome.already_reported:
        print(
            f"{label}: already reported (an earlier attempt landed)"
            f" awsRequestId={outcome.aws_request_id or '-'} attempts={outcome.attempts}",
            flush=True,
        )
    else:
        print(
            f"{label}: ok awsRequestId={outcome.aws_request_id} attempts={outcome.attempts}",
            flush=True,
        )


def parse_output_variable(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv: list[str]) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description="Report CodePipeline job results through codepipeline-gateway."
    )
    parser.add_argument(
        "--target",
        default=env("CPGW_TARGET", "127.0.0.1:50051"),
        help="gateway address, e.g. 127.0.0.1:50051 or "
        "dns:///codepipeline-gateway-headless.ci.svc:50051 (env CPGW_TARGET)",
    )
    parser.add_argument("--job-id", default=env("JOB_ID"), help="custom-action job id (env JOB_ID)")
    parser.add_argument(
        "--partner-job-id",
        default=env("PARTNER_JOB_ID"),
        help="partner (third-party) job id (env PARTNER_JOB_ID)",
    )
    parser.add_argument(
        "--client-token",
        default=env("CLIENT_TOKEN"),
        help="the partner job's client token (env CLIENT_TOKEN)",
    )
    parser.add_argument(
        "--continuation-token",
        default=env("CONTINUATION_TOKEN"),
        help="the custom job's data.continuationToken, when CodePipeline handed one back: "
        "the worker resumes and sends only the final report (env CONTINUATION_TOKEN)",
    )
    parser.add_argument(
        "--output-variable",
        action="append",
        type=parse_output_variable,
        metavar="KEY=VALUE",
        help="output variable of the final custom-job report (repeatable; default RESULT=passed)",
    )
    parser.add_argument(
        "--percent-complete",
        type=int,
        default=0,
        help="progress sent with the continuation report (default 0)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=float(env("CPGW_DEADLINE", "10")),
        help="seconds each call may take (env CPGW_DEADLINE, default 10)",
    )
    parser.add_argument("--max-attempts", type=int, default=4, help="attempts per report (default 4)")
    parser.add_argument(
        "--round-robin",
        action="store_true",
        help="balance calls over every address the target resolves to (use with dns:///)",
    )
    args = parser.parse_args(argv)
    if not args.job_id and not args.partner_job_id:
        parser.error("give --job-id and/or --partner-job-id")
    if args.partner_job_id and not args.client_token:
        parser.error("--partner-job-id needs --client-token")
    if args.max_attempts < 1:
        parser.error("--max-attempts must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    policy = RetryPolicy(max_attempts=args.max_attempts)
    options = []
    if args.round_robin:
        options.append(("grpc.lb_policy_name", "round_robin"))

    with grpc.insecure_channel(args.target, options=options) as channel:
        stub = pb_grpc.JobWorkerServiceStub(channel)
        try:
            if args.job_id and not args.continuation_token:
                # Phase 1: the action has started and is not done yet. The
                # continuation token comes back with the job's next run.
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
                outcome = report(
                    label, stub.PutJobSuccessResult, request, deadline=args.deadline, policy=policy
                )
                print_outcome(label, outcome)

            if args.job_id:
                # Phase 2: the final result, with output variables for later actions.
                label = f"PutJobSuccessResult {args.job_id} final"
                variables = dict(args.output_variable or [("RESULT", "passed")])
                request = pb.PutJobSuccessResultRequest(
                    job_id=args.job_id,
                    execution_details=pb.ExecutionDetails(
                        summary="finished",
                        external_execution_id="python-worker-run-1",
                        percent_complete=100,
                    ),
                    output_variables=variables,
                )
                outcome = report(
                    label, stub.PutJobSuccessResult, request, deadline=args.deadline, policy=policy
                )
                print_outcome(label, outcome)

            if args.partner_job_id:
                label = f"PutThirdPartyJobSuccessResult {args.partner_job_id}"
                request = pb.PutThirdPartyJobSuccessResultRequest(
                    job_id=args.partner_job_id,
                    client_token=args.client_token,
                    execution_details=pb.ExecutionDetails(summary="partner action done"),
                )
                outcome = report(
                    label,
                    stub.PutThirdPartyJobSuccessResult,
                    request,
                    deadline=args.deadline,
                    policy=policy,
                )
                print_outcome(label, outcome)
        except ReportFailed as failure:
            print(failure.describe(), file=sys.stderr, flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
