//! Command line and environment, as given: one clap struct per subcommand, a
//! default for every flag and an environment variable for every flag. Only
//! `config.rs` reads [`GatewayArgs`]; it turns them into the validated
//! [`Config`](crate::config::Config) that the rest of the code sees.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "codepipeline-gateway",
    version,
    about = "A gRPC gateway that lets job workers in any language report results to AWS \
             CodePipeline without holding AWS credentials.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// With no subcommand, `serve` runs with these flags.
    #[command(flatten)]
    pub serve: GatewayArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve real AWS CodePipeline through the default AWS credential chain (the default).
    Serve(GatewayArgs),
    /// Serve an embedded CodePipeline emulator on loopback, with ready-made jobs, for trying
    /// the gateway out. The gateway listens on loopback too unless told otherwise, and stops
    /// without a shutdown delay.
    #[command(
        mut_arg("listen", |a| a.default_value("127.0.0.1:50051")),
        mut_arg("admin_listen", |a| a.default_value("127.0.0.1:9090")),
        mut_arg("shutdown_delay", |a| a.default_value("0s"))
    )]
    Dev(DevArgs),
    /// Run the CodePipeline emulator alone, for tests and workers in other languages.
    Emulator(EmulatorArgs),
    /// Check `serve`'s flags and CPGW_* variables as `serve` would, print the
    /// settings they amount to, and exit: 0 when `serve` would accept them, 1
    /// naming the first problem. Starts nothing and reads no file or AWS
    /// credential (the chart's tests compare its values with it).
    CheckConfig(GatewayArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct GatewayArgs {
    /// Address for gRPC (the job-worker service, health and reflection).
    #[arg(long, env = "CPGW_LISTEN", default_value = "0.0.0.0:50051", value_parser = socket_address)]
    pub listen: SocketAddr,
    /// Address for the admin HTTP endpoint (Prometheus /metrics).
    #[arg(long, env = "CPGW_ADMIN_LISTEN", default_value = "0.0.0.0:9090", value_parser = socket_address)]
    pub admin_listen: SocketAddr,
    /// Calls per second admitted to each CodePipeline operation, for the whole process.
    #[arg(long, env = "CPGW_RATE_LIMIT_RPS", default_value_t = 10.0)]
    pub rate_limit_rps: f64,
    /// Calls admitted at once after a quiet spell (the token bucket's size).
    #[arg(long, env = "CPGW_RATE_LIMIT_BURST", default_value_t = 20)]
    pub rate_limit_burst: u32,
    /// Back off below --rate-limit-rps while CodePipeline throttles, and grow back when it stops
    /// (the AWS SDKs' adaptive mode), so replicas settle on the account's quota together.
    #[arg(long, env = "CPGW_RATE_LIMIT_ADAPTIVE", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub rate_limit_adaptive: bool,
    /// Calls that may wait for a token per operation; beyond that, RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "CPGW_RATE_LIMIT_QUEUE", default_value_t = 100)]
    pub rate_limit_queue: u32,
    /// Attempts per call to AWS, the first included (1 turns retries off).
    #[arg(long, env = "CPGW_RETRY_MAX_ATTEMPTS", default_value_t = 3)]
    pub retry_max_attempts: u32,
    /// Backoff cap before the first retry; it doubles per retry (full jitter).
    #[arg(long, env = "CPGW_RETRY_BASE_DELAY", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub retry_base_delay: Duration,
    /// Largest backoff between two attempts.
    #[arg(long, env = "CPGW_RETRY_MAX_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    pub retry_max_delay: Duration,
    /// Longest wait for one AWS attempt.
    #[arg(long, env = "CPGW_ATTEMPT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub attempt_timeout: Duration,
    /// Deadline for calls that carry none (no grpc-timeout).
    #[arg(long, env = "CPGW_DEFAULT_DEADLINE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub default_deadline: Duration,
    /// Connections older than this are asked to reconnect (HTTP/2 GOAWAY), so that clients
    /// balancing over the pods (round_robin on a headless Service) find new ones; calls in
    /// flight on the old connection finish first. 0s keeps connections forever.
    #[arg(long, env = "CPGW_MAX_CONNECTION_AGE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub max_connection_age: Duration,
    /// Calls at once on one client connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); a client
    /// queues the rest itself.
    #[arg(long, env = "CPGW_MAX_CONCURRENT_STREAMS", default_value_t = 100)]
    pub max_concurrent_streams: u32,
    /// Calls in flight in the whole process; beyond it a call is refused at once with
    /// RESOURCE_EXHAUSTED (reason OVERLOADED) and RetryInfo (load shedding).
    #[arg(long, env = "CPGW_MAX_CALLS_IN_FLIGHT", default_value_t = 1000)]
    pub max_calls_in_flight: u32,
    /// Job subscriptions (SubscribeJobs, SubscribeThirdPartyJobs) open at once in the process,
    /// counted apart from calls in flight; beyond it a subscription is refused with
    /// RESOURCE_EXHAUSTED (reason OVERLOADED).
    #[arg(long, env = "CPGW_MAX_SUBSCRIPTIONS", default_value_t = 1000)]
    pub max_subscriptions: u32,
    /// AWS attempts in flight at once, process-wide, and so the most connections to AWS; further
    /// attempts wait (within their deadline).
    #[arg(long, env = "CPGW_UPSTREAM_CONCURRENCY", default_value_t = 64)]
    pub upstream_concurrency: u32,
    /// How long a request's body may take to arrive after its headers, whatever its deadline.
    #[arg(long, env = "CPGW_REQUEST_ARRIVAL_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_arrival_timeout: Duration,
    /// How long a new connection may take to finish TLS and send the HTTP/2 preface.
    #[arg(long, env = "CPGW_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// A connection with no call for this long gets a GOAWAY and closes (clients reconnect when
    /// they need to). 0s keeps idle connections.
    #[arg(long, env = "CPGW_IDLE_TIMEOUT", default_value = "2m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// How often an HTTP/2 PING checks that a client is still there. 0s sends none.
    #[arg(long, env = "CPGW_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is dropped.
    #[arg(long, env = "CPGW_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub keepalive_timeout: Duration,
    /// Streams a client may reset before the gateway has served them, at once; more close the
    /// connection (the HTTP/2 rapid-reset attack).
    #[arg(long, env = "CPGW_MAX_PENDING_RESET_STREAMS", default_value_t = 20)]
    pub max_pending_reset_streams: u32,
    /// After SIGTERM/SIGINT, how long to keep serving while health reports NOT_SERVING, so
    /// that Kubernetes takes the pod out of its Service's endpoints before connections are
    /// told to go away. 0s drains at once.
    #[arg(long, env = "CPGW_SHUTDOWN_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,
    /// After the shutdown delay, how long calls in flight may take to finish.
    #[arg(long, env = "CPGW_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Log format: text for people, json for log pipelines.
    #[arg(long, env = "CPGW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Partner client tokens: a JSON file {"<clientId>": "<clientToken>"} (e.g. a mounted
    /// Secret). Third-party calls that omit clientToken get it from here. Off when unset.
    #[arg(long, env = "CPGW_CLIENT_TOKENS_FILE")]
    pub client_tokens_file: Option<std::path::PathBuf>,
    /// Targets: a YAML or JSON file naming the other AWS accounts and regions to forward to
    /// (`{targets: [{name, region, roleArn?, externalId?, sessionName?, endpointUrl?,
    /// actionTypes?}]}`, e.g. a ConfigMap), each reached by assuming its role. Read at
    /// start. Unset: only the gateway's own identity and region (the target "default").
    #[arg(long, env = "CPGW_TARGETS_FILE")]
    pub targets_file: Option<std::path::PathBuf>,
    /// How often the client-token file is checked for changes.
    #[arg(long, env = "CPGW_CLIENT_TOKENS_RELOAD", default_value = "10s", value_parser = humantime::parse_duration)]
    pub client_tokens_reload: Duration,
    /// Static bearer tokens: a YAML or JSON file mapping caller names to the SHA-256 (hex)
    /// of their tokens (e.g. a mounted Secret). Off when unset.
    #[arg(long, env = "CPGW_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,
    /// Accept JWTs (e.g. Kubernetes service-account tokens) from this issuer (`iss`). Off when
    /// unset.
    #[arg(long, env = "CPGW_AUTH_JWT_ISSUER")]
    pub auth_jwt_issuer: Option<String>,
    /// Audiences a JWT must be for (`aud`; comma-separated).
    #[arg(
        long,
        env = "CPGW_AUTH_JWT_AUDIENCE",
        default_value = "codepipeline-gateway",
        value_delimiter = ','
    )]
    pub auth_jwt_audience: Vec<String>,
    /// The issuer's key set (JWKS) URL; unset: found through the issuer's OIDC discovery.
    #[arg(long, env = "CPGW_AUTH_JWKS_URL")]
    pub auth_jwks_url: Option<String>,
    /// The issuer's key set from a file instead of over the network.
    #[arg(long, env = "CPGW_AUTH_JWKS_FILE", conflicts_with = "auth_jwks_url")]
    pub auth_jwks_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) for fetching the issuer's keys (in-cluster: the cluster CA).
    #[arg(long, env = "CPGW_AUTH_JWKS_CA_FILE")]
    pub auth_jwks_ca_file: Option<PathBuf>,
    /// A token file sent as bearer token when fetching the issuer's keys (in-cluster: the pod's
    /// service-account token).
    #[arg(long, env = "CPGW_AUTH_JWKS_BEARER_TOKEN_FILE")]
    pub auth_jwks_bearer_token_file: Option<PathBuf>,
    /// How often the issuer's keys are fetched again (also at once on an unknown key id).
    #[arg(long, env = "CPGW_AUTH_JWKS_REFRESH", default_value = "5m", value_parser = humantime::parse_duration)]
    pub auth_jwks_refresh: Duration,
    /// Caller policy: a YAML or JSON file of rules (identities x verbs x action types); once set,
    /// anything it does not allow is denied. Off when unset.
    #[arg(long, env = "CPGW_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,
    /// How often the token, policy, key-set and TLS files are checked for changes.
    #[arg(long, env = "CPGW_AUTH_RELOAD", default_value = "10s", value_parser = humantime::parse_duration)]
    pub auth_reload: Duration,
    /// Serve callers that present no credential, as `anonymous`. Without it, `serve` refuses to
    /// start unless --auth-jwt-issuer or --auth-tokens-file is set. Not for production.
    #[arg(long, env = "CPGW_ALLOW_UNAUTHENTICATED", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_unauthenticated: bool,
    /// Serve gRPC server reflection (v1 and v1alpha), which lets grpcurl and GUIs discover the
    /// API. Health is always served.
    #[arg(long, env = "CPGW_REFLECTION", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub reflection: bool,
    /// Serve gRPC over TLS with this certificate chain (PEM; re-read when it changes, e.g. from
    /// cert-manager). Plaintext when unset.
    #[arg(long, env = "CPGW_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert-file.
    #[arg(long, env = "CPGW_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Ask clients for certificates and verify them against this CA bundle (PEM): a verified
    /// certificate identifies its caller (SPIFFE ID, else subject CN). Needs --tls-cert-file.
    #[arg(long, env = "CPGW_TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct DevArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Address of the embedded emulator (control API at /_emulator/).
    #[arg(long, env = "CPGW_EMULATOR_LISTEN", default_value = "127.0.0.1:50052", value_parser = socket_address)]
    pub emulator_listen: SocketAddr,
}

#[derive(Args, Debug, Clone)]
pub struct EmulatorArgs {
    /// Address of the emulator (AWS JSON 1.1 at /, control API at /_emulator/).
    #[arg(long, env = "CPGW_EMULATOR_LISTEN", default_value = "127.0.0.1:50052", value_parser = socket_address)]
    pub listen: SocketAddr,
    /// Throttle each operation above this many requests a second, like CodePipeline's quotas
    /// (ThrottlingException). Off when unset.
    #[arg(long, env = "CPGW_EMULATOR_QUOTA_PER_SECOND")]
    pub quota_per_second: Option<f64>,
    /// How long a job handed out by a poll waits for its acknowledgement before the next poll
    /// offers it again, with a new nonce (CodePipeline does not document this; the emulator's
    /// assumption).
    #[arg(long, env = "CPGW_EMULATOR_ACKNOWLEDGE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub acknowledge_timeout: Duration,
    /// Log format: text for people, json for log pipelines.
    #[arg(long, env = "CPGW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A listen address: an IP address and a port. Host names are not resolved
/// (what `localhost` means differs between machines and stacks), and the
/// message says what to write instead.
fn socket_address(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        String::from(
            "expected IP:port, such as 0.0.0.0:50051, 127.0.0.1:50051 or [::]:50051 \
             (host names such as localhost are not resolved)",
        )
    })
}

impl Cli {
    /// Parses `argv` as [`Parser::parse`] does, except that an invalid value
    /// taken from a `CPGW_*` variable is said to come from that variable:
    /// clap names only the flag, and under the Helm chart (which sets
    /// variables, not flags) the flag is nowhere to be seen.
    pub fn parse_naming_variables(argv: Vec<std::ffi::OsString>) -> Cli {
        Cli::try_parse_from(&argv).unwrap_or_else(|error| {
            let Some(variable) = variable_behind(&error, &argv) else {
                error.exit()
            };
            let rendered = error.render().to_string();
            let (first, rest) = rendered.split_once('\n').unwrap_or((&rendered, ""));
            eprint!(
                "{first}\n  (the value comes from the environment variable {variable})\n{rest}"
            );
            std::process::exit(error.exit_code())
        })
    }
}

/// The environment variable that supplied the value `error` refuses, if the
/// value came from one rather than from the command line.
fn variable_behind(error: &clap::Error, argv: &[std::ffi::OsString]) -> Option<String> {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    // "--retry-base-delay <RETRY_BASE_DELAY>" -> "retry-base-delay"
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    let on_command_line = argv.iter().any(|a| {
        a.to_str()
            .and_then(|a| a.strip_prefix("--"))
            .is_some_and(|a| a == long || a.starts_with(&format!("{long}=")))
    });
    if on_command_line {
        return None;
    }
    let command = Cli::command();
    let mut commands = vec![&command];
    while let Some(command) = commands.pop() {
        commands.extend(command.get_subcommands());
        for argument in command.get_arguments() {
            // Subcommands share long names (--listen); the variable that is
            // set tells which one was meant.
            if argument.get_long() == Some(long)
                && let Some(variable) = argument.get_env().and_then(|v| v.to_str())
                && std::env::var_os(variable).is_some()
            {
                return Some(variable.to_owned());
            }
        }
    }
    None
}
