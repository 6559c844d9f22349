// Command go-worker is a CodePipeline job worker that works through
// codepipeline-gateway: the Go twin of examples/python-worker, with the same
// flags, output and exit statuses.
//
//	go-worker --poll custom                          # poll, work, report
//	go-worker --job-id ID                            # report progress for a given job
//	go-worker --job-id ID --continuation-token T     # and its final result
//	go-worker --partner-job-id ID --client-token T   # a given partner job
//
// Exit status: 0 done, 1 a call failed for good, 2 bad flags.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	pb "github.com/codepipeline-gateway/codepipeline-gateway/gen/go/codepipeline_gateway/v1"
)

var categories = map[string]pb.ActionCategory{
	"Source":   pb.ActionCategory_ACTION_CATEGORY_SOURCE,
	"Build":    pb.ActionCategory_ACTION_CATEGORY_BUILD,
	"Deploy":   pb.ActionCategory_ACTION_CATEGORY_DEPLOY,
	"Test":     pb.ActionCategory_ACTION_CATEGORY_TEST,
	"Invoke":   pb.ActionCategory_ACTION_CATEGORY_INVOKE,
	"Approval": pb.ActionCategory_ACTION_CATEGORY_APPROVAL,
	"Compute":  pb.ActionCategory_ACTION_CATEGORY_COMPUTE,
}

// The action types of `codepipeline-gateway dev`.
var defaultActionTypes = map[string]struct{ category, provider string }{
	"custom":  {"Build", "CpgwDevBuilder"},
	"partner": {"Deploy", "CpgwDevPartner"},
}

// optional is a flag that may be left unset, as opposed to set to zero.
type optional struct {
	set   bool
	value string
}

func (o *optional) String() string     { return o.value }
func (o *optional) Set(v string) error { o.set, o.value = true, v; return nil }

// keyValues is the repeatable --output-variable KEY=VALUE.
type keyValues map[string]string

func (kv keyValues) String() string { return "" }
func (kv keyValues) Set(text string) error {
	key, value, found := strings.Cut(text, "=")
	if !found {
		// Not the text itself: an output variable's value may be a secret.
		return errors.New("expected KEY=VALUE")
	}
	kv[key] = value
	return nil
}

type options struct {
	target, poll, category, provider, actionVersion string
	maxJobs, idleTimeout                            optional
	once, roundRobin, subscribe                     bool
	pollInterval, deadline                          float64
	maxBatchSize, maxAttempts, percentComplete      int
	jobID, partnerJobID, clientToken, continuation  string
	outputVariables                                 keyValues
	authority, tokenFile, pollTarget                string
	tlsCAFile, tlsCertFile, tlsKeyFile, tlsServer   string

	dialTarget     string           // target, or the static resolver's for ipv4: and ipv6:
	staticResolver resolver.Builder // nil for other targets
}

// usageError ends the process as argparse does: status 2, the reason on stderr.
func usageError(flags *flag.FlagSet, message string) {
	flags.Usage()
	fmt.Fprintf(os.Stderr, "%s: error: %s\n", flags.Name(), message)
	os.Exit(2)
}

func briefUsage() {
	fmt.Fprintln(os.Stderr, "usage: go-worker --poll custom|partner [flags], or go-worker --job-id ID [flags]; "+
		"go-worker -help lists the flags")
}

func env(name, fallback string) string {
	if value, ok := os.LookupEnv(name); ok {
		return value
	}
	return fallback
}

func parseFlags(argv []string) (options, pollSettings) {
	o := options{outputVariables: keyValues{}}
	flags := flag.NewFlagSet("go-worker", flag.ContinueOnError)
	flags.Usage = briefUsage
	flags.StringVar(&o.target, "target", env("CPGW_TARGET", "127.0.0.1:50051"),
		"gateway address, e.g. 127.0.0.1:50051, dns:///codepipeline-gateway-headless.ci.svc:50051 or "+
			"ipv4:10.0.0.1:50051,10.0.0.2:50051 (env CPGW_TARGET)")

	flags.StringVar(&o.poll, "poll", env("CPGW_POLL", ""),
		"custom|partner: poll for jobs of a custom or a partner action type and work on them (env CPGW_POLL)")
	flags.StringVar(&o.category, "category", "",
		"the action type's category: Source, Build, Deploy, Test, Invoke, Approval or Compute "+
			"(default Build for custom, Deploy for partner)")
	flags.StringVar(&o.provider, "provider", "",
		"the action type's provider (default CpgwDevBuilder / CpgwDevPartner, as in dev mode)")
	flags.StringVar(&o.actionVersion, "action-version", "1", "the action type's version")
	flags.Var(&o.maxJobs, "max-jobs", "stop after this many jobs (default: no limit)")
	flags.BoolVar(&o.once, "once", false, "poll once, work on what it returns, stop")
	flags.Var(&o.idleTimeout, "idle-timeout", "stop after this many seconds without a job (default: never)")
	flags.Float64Var(&o.pollInterval, "poll-interval", 1, "seconds between empty polls")
	flags.IntVar(&o.maxBatchSize, "max-batch-size", 1, "jobs per poll")
	flags.StringVar(&o.pollTarget, "poll-target", env("CPGW_POLL_TARGET", ""),
		"the gateway target (an AWS account and region the operator named) to poll; default: the one "+
			"the gateway maps the action type to, else its own (env CPGW_POLL_TARGET)")
	flags.BoolVar(&o.subscribe, "subscribe", env("CPGW_SUBSCRIBE", "") == "true",
		"have the gateway push jobs (SubscribeJobs) instead of polling; reconnects with backoff "+
			"when the subscription ends (env CPGW_SUBSCRIBE=true)")

	flags.StringVar(&o.jobID, "job-id", env("JOB_ID", ""), "custom-action job id (env JOB_ID)")
	flags.StringVar(&o.partnerJobID, "partner-job-id", env("PARTNER_JOB_ID", ""),
		"partner (third-party) job id (env PARTNER_JOB_ID)")
	flags.StringVar(&o.clientToken, "client-token", env("CLIENT_TOKEN", ""),
		"the partner job's client token (env CLIENT_TOKEN)")
	flags.StringVar(&o.continuation, "continuation-token", env("CONTINUATION_TOKEN", ""),
		"the custom job's data.continuationToken, when CodePipeline handed one back: "+
			"the worker resumes and sends only the final report (env CONTINUATION_TOKEN)")
	flags.IntVar(&o.percentComplete, "percent-complete", 0, "progress sent with the continuation report")

	flags.Var(o.outputVariables, "output-variable",
		"KEY=VALUE: output variable of a final custom-job report (repeatable; default RESULT=passed)")
	deadline := env("CPGW_DEADLINE", "10")
	flags.StringVar(&deadline, "deadline", deadline, "seconds each call may take (env CPGW_DEADLINE)")
	flags.IntVar(&o.maxAttempts, "max-attempts", 4, "attempts per call")
	flags.BoolVar(&o.roundRobin, "round-robin", false,
		"balance calls over every address the target resolves to (use with dns:/// or ipv4:)")
	flags.StringVar(&o.authority, "authority", env("CPGW_AUTHORITY", ""),
		"the :authority to send instead of the target's name, e.g. for a list of addresses "+
			"such as ipv4:10.0.0.1:50051,10.0.0.2:50051 (env CPGW_AUTHORITY)")
	flags.StringVar(&o.tokenFile, "token-file", env("CPGW_TOKEN_FILE", ""),
		"a file holding the bearer token to send (a projected service-account token, "+
			"re-read on every call since the kubelet rotates it; env CPGW_TOKEN_FILE)")
	flags.StringVar(&o.tlsCAFile, "tls-ca-file", env("CPGW_TLS_CA_FILE", ""),
		"CA certificates (PEM) to trust for the gateway's certificate; plaintext without it (env CPGW_TLS_CA_FILE)")
	flags.StringVar(&o.tlsCertFile, "tls-cert-file", env("CPGW_TLS_CERT_FILE", ""),
		"this worker's client certificate (PEM), for mTLS (env CPGW_TLS_CERT_FILE)")
	flags.StringVar(&o.tlsKeyFile, "tls-key-file", env("CPGW_TLS_KEY_FILE", ""),
		"the client certificate's key (PEM) (env CPGW_TLS_KEY_FILE)")
	flags.StringVar(&o.tlsServer, "tls-server-name", env("CPGW_TLS_SERVER_NAME", ""),
		"the name to expect in the gateway's certificate, when the target's is another (env CPGW_TLS_SERVER_NAME)")

	if err := flags.Parse(argv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			flags.SetOutput(os.Stdout)
			flags.PrintDefaults()
			os.Exit(0)
		}
		os.Exit(2) // flag has printed the error and the usage
	}
	fail := func(format string, args ...interface{}) { usageError(flags, fmt.Sprintf(format, args...)) }
	if flags.NArg() > 0 {
		fail("unexpected argument %q", flags.Arg(0))
	}
	number := func(name, text string) float64 {
		value, err := strconv.ParseFloat(text, 64)
		if err != nil {
			fail("%s: %q is not a number", name, text)
		}
		return value
	}
	o.deadline = number("--deadline", deadline)
	if o.deadline <= 0 {
		fail("--deadline must be positive")
	}
	var err error
	if o.dialTarget, o.staticResolver, err = staticTarget(o.target); err != nil {
		fail("%v", err)
	}
	if (o.tlsCertFile == "") != (o.tlsKeyFile == "") {
		fail("--tls-cert-file and --tls-key-file go together")
	}
	if o.tlsCertFile != "" && o.tlsCAFile == "" {
		fail("--tls-cert-file needs --tls-ca-file")
	}
	if o.maxAttempts < 1 {
		fail("--max-attempts must be at least 1")
	}
	if len(o.outputVariables) == 0 {
		o.outputVariables["RESULT"] = "passed"
	}

	if o.subscribe && o.poll == "" {
		fail("--subscribe needs --poll custom|partner (the kind of jobs to subscribe to)")
	}
	if o.subscribe && o.once {
		fail("--subscribe and --once do not go together: a subscription waits for jobs")
	}
	if o.poll == "" {
		if o.jobID == "" && o.partnerJobID == "" {
			fail("give --poll custom|partner, or --job-id and/or --partner-job-id")
		}
		if o.partnerJobID != "" && o.clientToken == "" {
			fail("--partner-job-id needs --client-token")
		}
		return o, pollSettings{}
	}

	defaults, known := defaultActionTypes[o.poll]
	if !known {
		fail("--poll: %q is neither custom nor partner", o.poll)
	}
	if o.jobID != "" || o.partnerJobID != "" {
		fail("--poll works on the jobs it polls: leave out --job-id and --partner-job-id")
	}
	settings := pollSettings{
		partner:         o.poll == "partner",
		pollInterval:    time.Duration(o.pollInterval * float64(time.Second)),
		maxBatchSize:    o.maxBatchSize,
		once:            o.once,
		subscribe:       o.subscribe,
		outputVariables: o.outputVariables,
		pollTarget:      o.pollTarget,
	}
	if o.maxJobs.set {
		maxJobs, err := strconv.Atoi(o.maxJobs.value)
		if err != nil || maxJobs < 1 {
			fail("--max-jobs must be at least 1")
		}
		settings.maxJobs = maxJobs
	}
	if o.maxBatchSize < 1 {
		fail("--max-batch-size must be at least 1")
	}
	if o.pollInterval < 0 {
		fail("--poll-interval must not be negative")
	}
	if o.idleTimeout.set {
		idle := number("--idle-timeout", o.idleTimeout.value)
		if idle < 0 {
			fail("--idle-timeout must not be negative")
		}
		settings.hasIdleTimeout = true
		settings.idleTimeout = time.Duration(idle * float64(time.Second))
	}
	category := defaults.category
	if o.category != "" {
		category = o.category
	}
	value, known := categories[category]
	if !known {
		names := make([]string, 0, len(categories))
		for name := range categories {
			names = append(names, name)
		}
		sort.Strings(names)
		fail("--category: %q is not one of %s", category, strings.Join(names, ", "))
	}
	owner := pb.ActionOwner_ACTION_OWNER_CUSTOM
	if settings.partner {
		owner = pb.ActionOwner_ACTION_OWNER_THIRD_PARTY
	}
	provider := defaults.provider
	if o.provider != "" {
		provider = o.provider
	}
	settings.actionTypeID = &pb.ActionTypeId{Category: value, Owner: owner, Provider: provider, Version: o.actionVersion}
	return o, settings
}

// staticTarget turns the gRPC naming scheme's ipv4:a:p,b:p and ipv6:[a]:p
// (which grpcio and grpc-js resolve, and grpc-go does not) into a resolver
// holding those addresses, and a target naming it.
func staticTarget(target string) (string, resolver.Builder, error) {
	scheme, list, found := strings.Cut(target, ":")
	if !found || (scheme != "ipv4" && scheme != "ipv6") {
		return target, nil, nil
	}
	var addresses []resolver.Address
	for _, address := range strings.Split(list, ",") {
		host, port, err := net.SplitHostPort(address)
		if err != nil { // no port: the scheme's default is 443
			host, port = strings.Trim(address, "[]"), "443"
		}
		ip := net.ParseIP(host)
		if ip == nil || (scheme == "ipv4") != (ip.To4() != nil) {
			return "", nil, fmt.Errorf("--target %s: %q is not an %s address", target, host, scheme)
		}
		addresses = append(addresses, resolver.Address{Addr: net.JoinHostPort(host, port)})
	}
	builder := manual.NewBuilderWithScheme("cpgw-" + scheme)
	builder.InitialState(resolver.State{Addresses: addresses})
	return builder.Scheme() + ":///" + list, builder, nil
}

// bearerToken sends `authorization: Bearer <token>` on every call, reading
// the token file each time: the kubelet rotates projected service-account
// tokens, so a token read once at start-up would expire under a
// long-running worker.
func bearerToken(path string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, request, reply interface{}, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		token, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading the token file: %w", err)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.TrimSpace(string(token)))
		return invoker(ctx, method, request, reply, cc, opts...)
	}
}

// bearerTokenOnStreams does the same for subscriptions, once per stream.
func bearerTokenOnStreams(path string) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
		streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		token, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading the token file: %w", err)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.TrimSpace(string(token)))
		return streamer(ctx, desc, cc, method, opts...)
	}
}

func transportCredentials(o options) (grpc.DialOption, error) {
	if o.tlsCAFile == "" {
		return grpc.WithInsecure(), nil
	}
	pem, err := os.ReadFile(o.tlsCAFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", o.tlsCAFile)
	}
	config := &tls.Config{RootCAs: roots, ServerName: o.tlsServer, MinVersion: tls.VersionTLS12}
	if o.tlsCertFile != "" {
		certificate, err := tls.LoadX509KeyPair(o.tlsCertFile, o.tlsKeyFile)
		if err != nil {
			return nil, err
		}
		config.Certificates = []tls.Certificate{certificate}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(config)), nil
}

func dial(o options) (*grpc.ClientConn, error) {
	security, err := transportCredentials(o)
	if err != nil {
		return nil, err
	}
	dialOptions := []grpc.DialOption{security}
	if o.staticResolver != nil {
		dialOptions = append(dialOptions, grpc.WithResolvers(o.staticResolver))
	}
	if o.roundRobin {
		dialOptions = append(dialOptions, grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	}
	if o.authority != "" {
		dialOptions = append(dialOptions, grpc.WithAuthority(o.authority))
	}
	if o.tokenFile != "" {
		dialOptions = append(dialOptions, grpc.WithUnaryInterceptor(bearerToken(o.tokenFile)),
			grpc.WithStreamInterceptor(bearerTokenOnStreams(o.tokenFile)))
	}
	return grpc.Dial(o.dialTarget, dialOptions...)
}

// stopOnSignal closes the returned channel on SIGTERM or SIGINT: the worker
// finishes the job in hand, reports it, and stops.
func stopOnSignal() <-chan struct{} {
	stopping := make(chan struct{})
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	var once sync.Once
	go func() {
		for received := range signals {
			name := "SIGTERM"
			if received == syscall.SIGINT {
				name = "SIGINT"
			}
			fmt.Fprintf(os.Stderr, "%s: stopping after the job in hand\n", name)
			once.Do(func() { close(stopping) })
		}
	}()
	return stopping
}

func main() {
	o, settings := parseFlags(os.Args[1:])
	policy := retryPolicy{
		maxAttempts: o.maxAttempts,
		baseDelay:   200 * time.Millisecond,
		maxDelay:    5 * time.Second,
		deadline:    time.Duration(o.deadline * float64(time.Second)),
	}
	conn, err := dial(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-worker: %v\n", err)
		os.Exit(1)
	}
	stub := pb.NewJobWorkerServiceClient(conn)
	var status int
	if o.poll == "" {
		status = reportGivenJobs(stub, givenJobs{
			jobID:             o.jobID,
			continuationToken: o.continuation,
			percentComplete:   int32(o.percentComplete),
			partnerJobID:      o.partnerJobID,
			clientToken:       o.clientToken,
			outputVariables:   o.outputVariables,
		}, policy)
	} else {
		w := &worker{stub: stub, settings: settings, policy: policy, stopping: stopOnSignal()}
		if settings.subscribe {
			status = w.subscribe()
		} else {
			status = w.run()
		}
	}
	conn.Close()
	os.Exit(status)
}
