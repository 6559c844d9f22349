package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/codepipeline-gateway/codepipeline-gateway/gen/go/codepipeline_gateway/v1"
)

// lasted: a subscription that ended after this long starts its backoff over.
const lasted = 10 * time.Second

// subscription is one open SubscribeJobs or SubscribeThirdPartyJobs stream.
type subscription struct {
	addCredit func() error
	next      func() (polledJob, error)
}

func (w *worker) openSubscription(ctx context.Context) (subscription, error) {
	s := w.settings
	if !s.partner {
		stream, err := w.stub.SubscribeJobs(ctx)
		if err != nil {
			return subscription{}, err
		}
		err = stream.Send(&pb.SubscribeJobsRequest{ActionTypeId: s.actionTypeID, Credit: 1, Target: s.pollTarget})
		return subscription{
			addCredit: func() error { return stream.Send(&pb.SubscribeJobsRequest{Credit: 1}) },
			next: func() (polledJob, error) {
				message, err := stream.Recv()
				return polledJob{custom: message.GetJob()}, err
			},
		}, err
	}
	stream, err := w.stub.SubscribeThirdPartyJobs(ctx)
	if err != nil {
		return subscription{}, err
	}
	err = stream.Send(&pb.SubscribeThirdPartyJobsRequest{ActionTypeId: s.actionTypeID, Credit: 1, Target: s.pollTarget})
	return subscription{
		addCredit: func() error { return stream.Send(&pb.SubscribeThirdPartyJobsRequest{Credit: 1}) },
		next: func() (polledJob, error) {
			message, err := stream.Recv()
			return polledJob{partner: message.GetJob()}, err
		},
	}, err
}

// subscribe works jobs the gateway pushes (SubscribeJobs /
// SubscribeThirdPartyJobs) instead of polling: credit 1 (one job at a time),
// one more credit after each job. The gateway ends a subscription with
// UNAVAILABLE when its connection closes (its shutdown, maximum connection
// age): subscribe again, after a jittered backoff. It returns the exit status.
func (w *worker) subscribe() int {
	s := w.settings
	name := "SubscribeJobs"
	if s.partner {
		name = "SubscribeThirdPartyJobs"
	}
	handled, retries := 0, 0
	lastJob := time.Now()
	stop := false
	for !stop && !w.stopped() && (s.maxJobs == 0 || handled < s.maxJobs) {
		ctx, cancel := context.WithCancel(context.Background())
		opened := time.Now()
		sub, err := w.openSubscription(ctx)
		jobs := make(chan polledJob)
		ended := make(chan error, 1)
		if err != nil {
			ended <- err
		} else {
			fmt.Printf("%s: subscribed\n", name)
			go func() {
				for {
					job, err := sub.next()
					if err != nil {
						ended <- err
						return
					}
					select {
					case jobs <- job:
					case <-ctx.Done():
						return
					}
				}
			}()
		}
		var failure error
		for failure == nil && !stop {
			var idle <-chan time.Time
			if s.hasIdleTimeout {
				idle = time.After(s.idleTimeout - time.Since(lastJob))
			}
			select {
			case <-w.stopping:
				stop = true
			case <-idle:
				stop = true
			case failure = <-ended:
			case job := <-jobs:
				retries = 0
				id := job.custom.GetId()
				if job.partner != nil {
					id = job.partner.GetJobId()
				}
				fmt.Printf("%s: job %s\n", name, id)
				w.count(w.handle(job))
				handled++
				lastJob = time.Now()
				if s.maxJobs > 0 && handled >= s.maxJobs {
					stop = true
				} else if err := sub.addCredit(); err != nil {
					failure = err
				}
			}
		}
		cancel()
		if stop {
			break
		}
		st := status.Convert(failure)
		if failure == io.EOF {
			st = status.New(codes.OK, "the gateway ended the subscription")
		}
		details := decodeDetails(st)
		if st.Code() != codes.OK && st.Code() != codes.Unavailable && st.Code() != codes.ResourceExhausted {
			failed := &callFailed{label: name, code: st.Code(), message: st.Message(), details: details}
			fmt.Fprintln(os.Stderr, failed.describe())
			w.counts.errors++
			break
		}
		// A subscription that lasted (until the connection's maximum age, say)
		// starts the backoff over.
		if time.Since(opened) >= lasted {
			retries = 1
		} else {
			retries++
		}
		wait := w.policy.delay(retries, details)
		fmt.Printf("%s: ended: %s: %s; subscribing again in %.2fs\n", name, codeName(st.Code()), st.Message(), wait.Seconds())
		select {
		case <-w.stopping:
		case <-time.After(wait):
		}
	}
	return w.finish(handled)
}
