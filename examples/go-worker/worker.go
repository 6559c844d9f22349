package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	pb "github.com/codepipeline-gateway/codepipeline-gateway/gen/go/codepipeline_gateway/v1"
)

// ---------------------------------------------------------------------------
// The work. Replace doTheWork with what your action really does.

// workJob is a claimed job, custom or partner, as the work sees it.
type workJob struct {
	partner  bool
	id       string
	data     *pb.JobData
	clientID string // partner jobs only
	// target is the gateway target (AWS account) the poll said the job came
	// from: sent back on every call about the job, so any replica reaches it.
	target string
}

// result is one of progress, success or failure.
type result interface{ isResult() }

// progress: not done yet. Report success so far; CodePipeline hands the token
// back in the data of a continuation job.
type progress struct {
	continuationToken string
	summary           string
	percentComplete   int32
}

type success struct {
	summary         string
	outputVariables map[string]string // custom jobs only
}

type failure struct {
	message     string
	failureType pb.FailureType
}

func (progress) isResult() {}
func (success) isResult()  {}
func (failure) isResult()  {}

// doTheWork is a stand-in for real work, steered by the action's
// configuration. Mode=fail (or Fail=true) fails the job, with FailureMessage
// if set. Otherwise a job without a continuation token starts the work and
// asks to be continued; the continuation job, which carries the token,
// finishes it.
func doTheWork(job workJob, outputVariables map[string]string) result {
	configuration := job.data.GetActionConfiguration().GetConfiguration()
	if strings.EqualFold(configuration["Mode"], "fail") || strings.EqualFold(configuration["Fail"], "true") {
		message := configuration["FailureMessage"]
		if message == "" {
			message = "the action configuration asked for a failure (Mode=fail)"
		}
		return failure{message: message, failureType: pb.FailureType_FAILURE_TYPE_JOB_FAILED}
	}
	token := job.data.GetContinuationToken()
	if token == "" {
		return progress{continuationToken: "phase=finish", summary: "started", percentComplete: 0}
	}
	return success{summary: fmt.Sprintf("finished (%s)", token), outputVariables: outputVariables}
}

// workSafely runs the work; a panic in it is a failed job, not a dead worker.
func workSafely(job workJob, outputVariables map[string]string) (r result) {
	defer func() {
		if recovered := recover(); recovered != nil {
			message := fmt.Sprintf("the work panicked: %v", recovered)
			if len(message) > 5000 {
				message = message[:5000]
			}
			r = failure{message: message, failureType: pb.FailureType_FAILURE_TYPE_JOB_FAILED}
		}
	}()
	return doTheWork(job, outputVariables)
}

// ---------------------------------------------------------------------------
// The polling worker.

type pollSettings struct {
	partner         bool
	actionTypeID    *pb.ActionTypeId
	maxJobs         int // 0: no limit
	once            bool
	idleTimeout     time.Duration // 0 with hasIdleTimeout false: never
	hasIdleTimeout  bool
	pollInterval    time.Duration
	maxBatchSize    int
	subscribe       bool
	outputVariables map[string]string
	// pollTarget is the gateway target to poll; "" lets the gateway choose.
	pollTarget string
}

type counts struct{ succeeded, continued, failed, skipped, errors int }

type worker struct {
	stub     pb.JobWorkerServiceClient
	settings pollSettings
	policy   retryPolicy
	stopping <-chan struct{}
	counts   counts
}

func (w *worker) stopped() bool {
	select {
	case <-w.stopping:
		return true
	default:
		return false
	}
}

// run polls and works until a stop condition; it returns the exit status.
func (w *worker) run() int {
	s := w.settings
	handled := 0
	idleSince := time.Now()
	for !w.stopped() {
		if s.maxJobs > 0 && handled >= s.maxJobs {
			break
		}
		// Never ask for more jobs than will be worked on: a polled job that is
		// never acknowledged waits for CodePipeline's timeout.
		batch := s.maxBatchSize
		if s.maxJobs > 0 && s.maxJobs-handled < batch {
			batch = s.maxJobs - handled
		}
		jobs, err := w.poll(int32(batch))
		if err != nil {
			printFailure(err)
			w.counts.errors++
			break // a poll that fails for good is a configuration problem
		}
		for _, job := range jobs {
			w.count(w.handle(job))
			handled++
		}
		if len(jobs) > 0 {
			idleSince = time.Now()
		}
		if s.once {
			break
		}
		if len(jobs) == 0 {
			if s.hasIdleTimeout && time.Since(idleSince) >= s.idleTimeout {
				break
			}
			select {
			case <-w.stopping:
			case <-time.After(s.pollInterval):
			}
		}
	}
	return w.finish(handled)
}

// finish prints what became of the jobs and returns the exit status.
func (w *worker) finish(handled int) int {
	c := w.counts
	fmt.Printf("done: %d jobs (succeeded %d, continued %d, failed %d, skipped %d, errors %d)\n",
		handled, c.succeeded, c.continued, c.failed, c.skipped, c.errors)
	if c.errors > 0 {
		return 1
	}
	return 0
}

// polledJob is a job as a poll returns it: a custom job with its data and
// nonce, or a partner job's ids.
type polledJob struct {
	custom  *pb.Job
	partner *pb.ThirdPartyJob
}

func (w *worker) poll(batch int32) ([]polledJob, error) {
	s := w.settings
	var name string
	var jobs []polledJob
	var send func(ctx context.Context, opts ...grpc.CallOption) (response, error)
	if !s.partner {
		name = "PollForJobs"
		request := &pb.PollForJobsRequest{ActionTypeId: s.actionTypeID, MaxBatchSize: &batch, Target: s.pollTarget}
		send = func(ctx context.Context, opts ...grpc.CallOption) (response, error) {
			return w.stub.PollForJobs(ctx, request, opts...)
		}
	} else {
		name = "PollForThirdPartyJobs"
		request := &pb.PollForThirdPartyJobsRequest{ActionTypeId: s.actionTypeID, MaxBatchSize: &batch, Target: s.pollTarget}
		send = func(ctx context.Context, opts ...grpc.CallOption) (response, error) {
			return w.stub.PollForThirdPartyJobs(ctx, request, opts...)
		}
	}
	answer, o, err := callWithRetries(name, w.policy, "", send)
	if err != nil {
		return nil, err
	}
	switch a := answer.(type) {
	case *pb.PollForJobsResponse:
		for _, job := range a.GetJobs() {
			jobs = append(jobs, polledJob{custom: job})
		}
	case *pb.PollForThirdPartyJobsResponse:
		for _, job := range a.GetJobs() {
			jobs = append(jobs, polledJob{partner: job})
		}
	}
	if len(jobs) > 0 {
		plural := "s"
		if len(jobs) == 1 {
			plural = ""
		}
		fmt.Printf("%s: %d job%s awsRequestId=%s attempts=%d\n", name, len(jobs), plural, o.awsRequestID, o.attempts)
	}
	return jobs, nil
}

func (w *worker) count(what string) {
	switch what {
	case "succeeded":
		w.counts.succeeded++
	case "continued":
		w.counts.continued++
	case "failed":
		w.counts.failed++
	case "skipped":
		w.counts.skipped++
	default:
		w.counts.errors++
	}
}

// handle claims, works on and reports one polled job; it returns what became
// of it.
func (w *worker) handle(polled polledJob) string {
	job, claimed, err := w.claim(polled)
	if err == nil && !claimed {
		return "skipped"
	}
	if err == nil {
		var kept string
		kept, err = w.sendResult(job, workSafely(job, w.settings.outputVariables))
		if err == nil {
			return kept
		}
	}
	printFailure(err)
	return "error"
}

// claim acknowledges the job; claimed is false when another worker has it.
func (w *worker) claim(polled polledJob) (job workJob, claimed bool, err error) {
	var label string
	var send func(ctx context.Context, opts ...grpc.CallOption) (response, error)
	if polled.custom != nil {
		job = workJob{id: polled.custom.GetId(), data: polled.custom.GetData(), target: polled.custom.GetTarget()}
		label = "AcknowledgeJob " + job.id
		request := &pb.AcknowledgeJobRequest{JobId: job.id, Nonce: polled.custom.GetNonce(), Target: job.target}
		send = func(ctx context.Context, opts ...grpc.CallOption) (response, error) {
			return w.stub.AcknowledgeJob(ctx, request, opts...)
		}
	} else {
		// A partner poll returns only ids: the data and the nonce come with the
		// details. No client token: the gateway fills it in from its map.
		// client_id lets any replica of the gateway do that.
		id, clientID, target := polled.partner.GetJobId(), polled.partner.GetClientId(), polled.partner.GetTarget()
		detailsLabel := "GetThirdPartyJobDetails " + id
		detailsRequest := &pb.GetThirdPartyJobDetailsRequest{JobId: id, ClientId: clientID, Target: target}
		answer, o, err := callWithRetries(detailsLabel, w.policy, "",
			func(ctx context.Context, opts ...grpc.CallOption) (response, error) {
				return w.stub.GetThirdPartyJobDetails(ctx, detailsRequest, opts...)
			})
		if err != nil {
			return job, false, err
		}
		printOutcome(detailsLabel, o, "already reported")
		details := answer.(*pb.GetThirdPartyJobDetailsResponse).GetJobDetails()
		job = workJob{partner: true, id: id, data: details.GetData(), clientID: clientID, target: target}
		label = "AcknowledgeThirdPartyJob " + id
		request := &pb.AcknowledgeThirdPartyJobRequest{JobId: id, Nonce: details.GetNonce(), ClientId: clientID, Target: target}
		send = func(ctx context.Context, opts ...grpc.CallOption) (response, error) {
			return w.stub.AcknowledgeThirdPartyJob(ctx, request, opts...)
		}
	}
	_, o, err := callWithRetries(label, w.policy, ackLanded, send)
	var failed *callFailed
	if errors.As(err, &failed) && failed.code == codes.FailedPrecondition && failed.details.reason() == ackLanded {
		// No earlier attempt of ours may have landed: the nonce is stale
		// because another worker claimed the job. Leave it alone.
		fmt.Printf("%s: skipped: another worker has claimed the job (INVALID_NONCE)\n", label)
		return job, false, nil
	}
	if err != nil {
		return job, false, err
	}
	printOutcome(label, o, "already acknowledged by this worker")
	return job, true, nil
}

func (w *worker) sendResult(job workJob, r result) (string, error) {
	executionID := job.data.GetPipelineContext().GetAction().GetActionExecutionId()
	if executionID == "" {
		executionID = job.id
	}
	runID := "go-worker-" + executionID
	var label, kept string
	var send func(ctx context.Context, opts ...grpc.CallOption) (response, error)
	switch r := r.(type) {
	case failure:
		details := &pb.FailureDetails{Type: r.failureType, Message: r.message, ExternalExecutionId: runID}
		if !job.partner {
			label = "PutJobFailureResult " + job.id
			request := &pb.PutJobFailureResultRequest{JobId: job.id, FailureDetails: details, Target: job.target}
			send = func(ctx context.Context, opts ...grpc.CallOption) (response, error) {
				return w.stub.PutJobFailureResult(ctx, request, opts...)
			}
		} else {
			label = "PutThirdPartyJobFailureResult " + job.id
			request := &pb.PutThirdPartyJobFailureResultRequest{
				JobId: job.id, ClientId: job.clientID, FailureDetails: details, Target: job.target,
			}
			send = func(ctx context.Context, opts ...grpc.CallOption) (response, error) {
				return w.stub.PutThirdPartyJobFailureResult(ctx, request, opts...)
			}
		}
		kept = "failed"
	case progress:
		execution := &pb.ExecutionDetails{Summary: r.summary, ExternalExecutionId: runID, PercentComplete: int32Ptr(r.percentComplete)}
		label, send = w.success(job, "continuation", execution, r.continuationToken, nil)
		kept = "continued"
	case success:
		// optional int32: 100 is sent as 100.
		execution := &pb.ExecutionDetails{Summary: r.summary, ExternalExecutionId: runID, PercentComplete: int32Ptr(100)}
		label, send = w.success(job, "final", execution, "", r.outputVariables)
		kept = "succeeded"
	}
	_, o, err := callWithRetries(label, w.policy, reportLanded, send)
	if err != nil {
		return "", err
	}
	printOutcome(label, o, "already reported")
	return kept, nil
}

// success builds a success report: progress with a continuation token, or
// the final one (with output variables, for custom jobs).
func (w *worker) success(job workJob, phase string, execution *pb.ExecutionDetails, token string,
	outputVariables map[string]string) (string, func(ctx context.Context, opts ...grpc.CallOption) (response, error)) {
	if job.partner {
		request := &pb.PutThirdPartyJobSuccessResultRequest{
			JobId: job.id, ClientId: job.clientID, ExecutionDetails: execution, ContinuationToken: token,
			Target: job.target,
		}
		return fmt.Sprintf("PutThirdPartyJobSuccessResult %s %s", job.id, phase),
			func(ctx context.Context, opts ...grpc.CallOption) (response, error) {
				return w.stub.PutThirdPartyJobSuccessResult(ctx, request, opts...)
			}
	}
	request := &pb.PutJobSuccessResultRequest{
		JobId: job.id, ExecutionDetails: execution, ContinuationToken: token, OutputVariables: outputVariables,
		Target: job.target,
	}
	return fmt.Sprintf("PutJobSuccessResult %s %s", job.id, phase),
		func(ctx context.Context, opts ...grpc.CallOption) (response, error) {
			return w.stub.PutJobSuccessResult(ctx, request, opts...)
		}
}

// ---------------------------------------------------------------------------
// Report-only mode: results for jobs whose ids are given.

type givenJobs struct {
	jobID             string
	continuationToken string
	percentComplete   int32
	partnerJobID      string
	clientToken       string
	outputVariables   map[string]string
}

func reportGivenJobs(stub pb.JobWorkerServiceClient, given givenJobs, policy retryPolicy) int {
	report := func(label string, send func(ctx context.Context, opts ...grpc.CallOption) (response, error)) bool {
		_, o, err := callWithRetries(label, policy, reportLanded, send)
		if err != nil {
			printFailure(err)
			return false
		}
		printOutcome(label, o, "already reported")
		return true
	}
	if given.jobID != "" && given.continuationToken == "" {
		// Phase 1: the action has started and is not done yet. This closes
		// the job; CodePipeline hands the token back in a new (continuation)
		// job, reported on with --continuation-token.
		request := &pb.PutJobSuccessResultRequest{
			JobId:             given.jobID,
			ContinuationToken: "phase=finish",
			ExecutionDetails: &pb.ExecutionDetails{
				Summary: "started", ExternalExecutionId: "go-worker-run-1", PercentComplete: int32Ptr(given.percentComplete),
			},
		}
		if !report("PutJobSuccessResult "+given.jobID+" continuation",
			func(ctx context.Context, opts ...grpc.CallOption) (response, error) {
				return stub.PutJobSuccessResult(ctx, request, opts...)
			}) {
			return 1
		}
	} else if given.jobID != "" {
		// Phase 2, on the job that brought the token back: the final result,
		// with output variables for later actions.
		request := &pb.PutJobSuccessResultRequest{
			JobId: given.jobID,
			ExecutionDetails: &pb.ExecutionDetails{
				Summary: "finished", ExternalExecutionId: "go-worker-run-1", PercentComplete: int32Ptr(100),
			},
			OutputVariables: given.outputVariables,
		}
		if !report("PutJobSuccessResult "+given.jobID+" final",
			func(ctx context.Context, opts ...grpc.CallOption) (response, error) {
				return stub.PutJobSuccessResult(ctx, request, opts...)
			}) {
			return 1
		}
	}
	if given.partnerJobID != "" {
		request := &pb.PutThirdPartyJobSuccessResultRequest{
			JobId:            given.partnerJobID,
			ClientToken:      given.clientToken,
			ExecutionDetails: &pb.ExecutionDetails{Summary: "partner action done"},
		}
		if !report("PutThirdPartyJobSuccessResult "+given.partnerJobID,
			func(ctx context.Context, opts ...grpc.CallOption) (response, error) {
				return stub.PutThirdPartyJobSuccessResult(ctx, request, opts...)
			}) {
			return 1
		}
	}
	return 0
}

func int32Ptr(v int32) *int32 { return &v }

func printFailure(err error) {
	var failed *callFailed
	if errors.As(err, &failed) {
		fmt.Fprintln(os.Stderr, failed.describe())
		return
	}
	fmt.Fprintln(os.Stderr, err)
}
