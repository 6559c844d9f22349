package main

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorInfo metadata the gateway sets (docs/clients.md).
const (
	earlierAttemptMayHaveBeenApplied = "earlierAttemptMayHaveBeenApplied"
	outcomeUnknown                   = "outcomeUnknown"
)

// What a repeated call answers when its earlier attempt landed.
const (
	reportLanded = "INVALID_JOB_STATE" // the job already has this result
	ackLanded    = "INVALID_NONCE"     // the nonce was already used, by this worker
)

// codeNames spells status codes as the gRPC specification (and grpcio,
// grpc-js, grpcurl) does; Go's codes.Code.String() says "InvalidArgument".
var codeNames = map[codes.Code]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

func codeName(code codes.Code) string {
	if name, ok := codeNames[code]; ok {
		return name
	}
	return fmt.Sprintf("CODE_%d", code)
}

// retryable: the gateway retries AWS throttling, 5xx and transport errors
// itself; what it still answers with these codes is worth another try later.
// DEADLINE_EXCEEDED is retried because every call this worker makes is safe
// to repeat (see callWithRetries).
func retryable(code codes.Code) bool {
	return code == codes.Unavailable || code == codes.ResourceExhausted || code == codes.DeadlineExceeded
}

type fieldViolation struct{ field, description string }

// errorDetails holds the google.rpc details of a failed call, decoded from
// the grpc-status-details-bin trailer.
type errorDetails struct {
	info       *errdetails.ErrorInfo
	violations []fieldViolation
	retryDelay *time.Duration
}

func decodeDetails(st *status.Status) errorDetails {
	var decoded errorDetails
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			decoded.info = d
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				decoded.violations = append(decoded.violations, fieldViolation{v.GetField(), v.GetDescription()})
			}
		case *errdetails.RetryInfo:
			delay := d.GetRetryDelay().AsDuration()
			decoded.retryDelay = &delay
		}
	}
	return decoded
}

func (d errorDetails) reason() string { return d.info.GetReason() }

func (d errorDetails) flag(key string) bool { return d.info.GetMetadata()[key] == "true" }

// callFailed is a call that failed for good (after any retries).
type callFailed struct {
	label   string
	code    codes.Code
	message string
	details errorDetails
}

func (f *callFailed) Error() string {
	return fmt.Sprintf("%s: failed: %s: %s", f.label, codeName(f.code), f.message)
}

// describe is the error with its decoded details, one per line.
func (f *callFailed) describe() string {
	lines := []string{f.Error()}
	if info := f.details.info; info != nil {
		lines = append(lines, fmt.Sprintf("  reason: %s (domain %s)", info.GetReason(), info.GetDomain()))
		keys := make([]string, 0, len(info.GetMetadata()))
		for key := range info.GetMetadata() {
			keys = append(keys, key)
		}
		sort.Strings(keys)
		for _, key := range keys {
			lines = append(lines, fmt.Sprintf("  metadata: %s=%s", key, info.GetMetadata()[key]))
		}
	}
	for _, v := range f.details.violations {
		lines = append(lines, fmt.Sprintf("  field violation: %s: %s", v.field, v.description))
	}
	if f.details.retryDelay != nil {
		lines = append(lines, fmt.Sprintf("  retry after: %.3fs", f.details.retryDelay.Seconds()))
	}
	return strings.Join(lines, "\n")
}

// outcome of a call that succeeded, or whose earlier attempt landed.
type outcome struct {
	awsRequestID string
	attempts     int
	alreadyDone  bool
}

type retryPolicy struct {
	maxAttempts int
	baseDelay   time.Duration
	maxDelay    time.Duration
	deadline    time.Duration // of each attempt
}

// delay is full-jitter exponential backoff, never shorter than RetryInfo asks.
func (p retryPolicy) delay(retry int, details errorDetails) time.Duration {
	ceiling := p.baseDelay << uint(retry-1)
	if ceiling > p.maxDelay || ceiling <= 0 {
		ceiling = p.maxDelay
	}
	wait := time.Duration(rand.Int63n(int64(ceiling) + 1))
	if details.retryDelay != nil && *details.retryDelay > wait {
		wait = *details.retryDelay
	}
	return wait
}

// response is what every job worker answer has in common.
type response interface{ GetAwsRequestId() string }

// callWithRetries calls send until it succeeds or fails for good.
//
// landedReason is the FAILED_PRECONDITION reason that, after an attempt of
// unknown outcome, means that attempt landed: INVALID_JOB_STATE for a report,
// INVALID_NONCE for an acknowledgement, "" for reads and polls.
func callWithRetries(label string, policy retryPolicy, landedReason string,
	send func(ctx context.Context, opts ...grpc.CallOption) (response, error)) (response, outcome, error) {
	earlierOutcomeUnknown := false
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), policy.deadline)
		answer, err := send(ctx)
		cancel()
		if err == nil {
			return answer, outcome{awsRequestID: answer.GetAwsRequestId(), attempts: attempt}, nil
		}
		st := status.Convert(err)
		code := st.Code()
		details := decodeDetails(st)

		// The call's own "already done" answer after an attempt of unknown
		// outcome (ours, or one of the gateway's own retries): the earlier
		// attempt landed. Nothing more to do.
		if landedReason != "" && code == codes.FailedPrecondition && details.reason() == landedReason &&
			(earlierOutcomeUnknown || details.flag(earlierAttemptMayHaveBeenApplied)) {
			return nil, outcome{
				awsRequestID: details.info.GetMetadata()["awsRequestId"],
				attempts:     attempt,
				alreadyDone:  true,
			}, nil
		}

		// Remember when this attempt itself may have reached AWS. UNAVAILABLE
		// without the gateway's ErrorInfo: the connection to the gateway
		// itself broke, perhaps after the call was sent.
		if code == codes.DeadlineExceeded || details.flag(outcomeUnknown) ||
			details.flag(earlierAttemptMayHaveBeenApplied) ||
			(code == codes.Unavailable && details.info == nil) {
			earlierOutcomeUnknown = true
		}

		if !retryable(code) || attempt >= policy.maxAttempts {
			return nil, outcome{}, &callFailed{label: label, code: code, message: st.Message(), details: details}
		}
		wait := policy.delay(attempt, details)
		reason := details.reason()
		if reason == "" {
			reason = "no reason"
		}
		fmt.Fprintf(os.Stderr, "%s: %s on attempt %d of %d (%s); retrying in %.2fs\n",
			label, codeName(code), attempt, policy.maxAttempts, reason, wait.Seconds())
		time.Sleep(wait)
	}
}

func printOutcome(label string, o outcome, already string) {
	if o.alreadyDone {
		id := o.awsRequestID
		if id == "" {
			id = "-"
		}
		fmt.Printf("%s: %s (an earlier attempt landed) awsRequestId=%s attempts=%d\n", label, already, id, o.attempts)
		return
	}
	fmt.Printf("%s: ok awsRequestId=%s attempts=%d\n", label, o.awsRequestID, o.attempts)
}
