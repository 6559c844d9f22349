//! Command line and environment: one clap struct per subcommand, a default for
//! every flag, an environment variable for every flag Kubernetes sets, and one
//! conversion into validated [`Settings`] that names the bad setting.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    rate_limit::RateLimitSettings,
    retry::RetrySettings,
    server::{ClientTokenSettings, Settings},
};

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
    /// the gateway out.
    Dev(DevArgs),
    /// Run the CodePipeline emulator alone, for tests and workers in other languages.
    Emulator(EmulatorArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct GatewayArgs {
    /// Address for gRPC (the job-worker service, health and reflection).
    #[arg(long, env = "CPGW_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// Address for the admin HTTP endpoint (Prometheus /metrics).
    #[arg(long, env = "CPGW_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,
    /// Calls per second admitted to each CodePipeline operation, for the whole process.
    #[arg(long, env = "CPGW_RATE_LIMIT_RPS", default_value_t = 10.0)]
    pub rate_limit_rps: f64,
    /// Calls admitted at once after a quiet spell (the token bucket's size).
    #[arg(long, env = "CPGW_RATE_LIMIT_BURST", default_value_t = 20)]
    pub rate_limit_burst: u32,
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
    /// After SIGTERM/SIGINT, how long calls in flight may take to finish.
    #[arg(long, env = "CPGW_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Log format: text for people, json for log pipelines.
    #[arg(long, env = "CPGW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Partner client tokens: a JSON file {"<clientId>": "<clientToken>"} (e.g. a mounted
    /// Secret). Third-party calls that omit clientToken get it from here. Off when unset.
    #[arg(long, env = "CPGW_CLIENT_TOKENS_FILE")]
    pub client_tokens_file: Option<std::path::PathBuf>,
    /// How often the client-token file is checked for changes.
    #[arg(long, env = "CPGW_CLIENT_TOKENS_RELOAD", default_value = "10s", value_parser = humantime::parse_duration)]
    pub client_tokens_reload: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct DevArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Address of the embedded emulator (control API at /_emulator/).
    #[arg(long, env = "CPGW_EMULATOR_LISTEN", default_value = "127.0.0.1:50052")]
    pub emulator_listen: SocketAddr,
}

#[derive(Args, Debug, Clone)]
pub struct EmulatorArgs {
    /// Address of the emulator (AWS JSON 1.1 at /, control API at /_emulator/).
    #[arg(long, env = "CPGW_EMULATOR_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,
    /// Log format: text for people, json for log pipelines.
    #[arg(long, env = "CPGW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A setting that cannot work, named by its flag and variable.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn bad(flag: &str, env: &str, problem: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("invalid --{flag} ({env}): {problem}"))
}

impl GatewayArgs {
    /// Checks what clap's types cannot, and builds the typed settings.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        // Destructured so that a new flag cannot be forgotten here.
        let GatewayArgs {
            listen,
            admin_listen,
            rate_limit_rps,
            rate_limit_burst,
            rate_limit_queue,
            retry_max_attempts,
            retry_base_delay,
            retry_max_delay,
            attempt_timeout,
            default_deadline,
            max_connection_age,
            shutdown_grace,
            log_format: _,
            client_tokens_file,
            client_tokens_reload,
        } = self.clone();
        if client_tokens_reload.is_zero() {
            return Err(bad(
                "client-tokens-reload",
                "CPGW_CLIENT_TOKENS_RELOAD",
                "must be greater than 0",
            ));
        }
        if !(rate_limit_rps.is_finite() && rate_limit_rps > 0.0) {
            return Err(bad(
                "rate-limit-rps",
                "CPGW_RATE_LIMIT_RPS",
                format!("must be a number greater than 0, got {rate_limit_rps}"),
            ));
        }
        if rate_limit_burst == 0 {
            return Err(bad(
                "rate-limit-burst",
                "CPGW_RATE_LIMIT_BURST",
                "must be at least 1",
            ));
        }
        if !(1..=10).contains(&retry_max_attempts) {
            return Err(bad(
                "retry-max-attempts",
                "CPGW_RETRY_MAX_ATTEMPTS",
                format!("must be 1 to 10, got {retry_max_attempts}"),
            ));
        }
        if retry_base_delay.is_zero() {
            return Err(bad(
                "retry-base-delay",
                "CPGW_RETRY_BASE_DELAY",
                "must be greater than 0",
            ));
        }
        if retry_max_delay < retry_base_delay {
            return Err(bad(
                "retry-max-delay",
                "CPGW_RETRY_MAX_DELAY",
                "must not be shorter than --retry-base-delay",
            ));
        }
        if attempt_timeout.is_zero() {
            return Err(bad(
                "attempt-timeout",
                "CPGW_ATTEMPT_TIMEOUT",
                "must be greater than 0",
            ));
        }
        if default_deadline.is_zero() {
            return Err(bad(
                "default-deadline",
                "CPGW_DEFAULT_DEADLINE",
                "must be greater than 0",
            ));
        }
        if listen == admin_listen && listen.port() != 0 {
            return Err(bad(
                "admin-listen",
                "CPGW_ADMIN_LISTEN",
                "must differ from --listen",
            ));
        }
        Ok(Settings {
            listen,
            admin_listen,
            rate_limit: RateLimitSettings {
                per_second: rate_limit_rps,
                burst: rate_limit_burst,
                max_waiting: rate_limit_queue,
            },
            retry: RetrySettings {
                max_attempts: retry_max_attempts,
                base_delay: retry_base_delay,
                max_delay: retry_max_delay,
            },
            attempt_timeout,
            default_deadline,
            max_connection_age: (!max_connection_age.is_zero()).then_some(max_connection_age),
            shutdown_grace,
            client_tokens: client_tokens_file.map(|path| ClientTokenSettings {
                path,
                reload_interval: client_tokens_reload,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("codepipeline-gateway").chain(args.iter().copied()))
            .expect("parses")
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let settings = parse(&[]).serve.settings().unwrap();
        assert_eq!(settings.listen, "0.0.0.0:50051".parse().unwrap());
        assert_eq!(settings.admin_listen, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(settings.retry.max_attempts, 3);
        assert_eq!(settings.shutdown_grace, Duration::from_secs(20));
        assert_eq!(settings.max_connection_age, Some(Duration::from_secs(300)));
        let forever = parse(&["--max-connection-age", "0s"])
            .serve
            .settings()
            .unwrap();
        assert_eq!(forever.max_connection_age, None);
    }

    #[test]
    fn no_subcommand_means_serve_with_flags() {
        let cli = parse(&["--rate-limit-rps", "2.5", "--retry-base-delay", "250ms"]);
        assert!(cli.command.is_none());
        let settings = cli.serve.settings().unwrap();
        assert_eq!(settings.rate_limit.per_second, 2.5);
        assert_eq!(settings.retry.base_delay, Duration::from_millis(250));
    }

    #[test]
    fn bad_settings_name_the_flag_and_variable() {
        let cases: [(&[&str], &str); 4] = [
            (
                &["serve", "--rate-limit-rps", "0"],
                "--rate-limit-rps (CPGW_RATE_LIMIT_RPS)",
            ),
            (
                &["serve", "--retry-max-attempts", "0"],
                "--retry-max-attempts (CPGW_RETRY_MAX_ATTEMPTS)",
            ),
            (
                &[
                    "serve",
                    "--retry-base-delay",
                    "2s",
                    "--retry-max-delay",
                    "1s",
                ],
                "--retry-max-delay",
            ),
            (&["serve", "--rate-limit-burst", "0"], "--rate-limit-burst"),
        ];
        for (args, expected) in cases {
            let Some(Command::Serve(serve)) = parse(args).command else {
                panic!()
            };
            let error = serve.settings().unwrap_err();
            assert!(error.0.contains(expected), "{error} lacks {expected}");
        }
    }

    #[test]
    fn unparsable_values_are_refused_by_clap_with_the_flag_name() {
        let error =
            Cli::try_parse_from(["codepipeline-gateway", "serve", "--shutdown-grace", "soon"])
                .unwrap_err();
        assert!(error.to_string().contains("--shutdown-grace"), "{error}");
    }
}
