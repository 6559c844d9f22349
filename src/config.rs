//! Configuration in two steps: clap's raw [`GatewayArgs`] (cli.rs), then the
//! validated, typed [`Config`] built here, which is the only thing the rest
//! of the code sees. A setting that cannot work stops start-up with a
//! message that names its flag and environment variable.

use std::{net::SocketAddr, num::NonZeroU32, path::PathBuf, time::Duration};

use crate::{
    cli::GatewayArgs, connections::ConnectionLimits, rate_limit::RateLimitSettings,
    retry::RetrySettings, tls::TlsSettings,
};

/// Everything the gateway needs to run, validated.
/// The highest `--rate-limit-rps`: far above any CodePipeline quota, low
/// enough that the token bucket's arithmetic stays exact.
pub const MAX_RATE_LIMIT_RPS: f64 = 10_000.0;

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub rate_limit: RateLimitSettings,
    pub retry: RetrySettings,
    pub attempt_timeout: Duration,
    pub default_deadline: Duration,
    /// What one client connection may hold.
    pub connections: ConnectionLimits,
    /// Calls in flight in the process before new ones are shed.
    pub max_calls_in_flight: usize,
    /// Job subscriptions open at once in the process.
    pub max_subscriptions: usize,
    /// AWS attempts in flight at once (and so connections to AWS).
    pub upstream_concurrency: usize,
    /// Serving on while health reports NOT_SERVING, before the drain.
    pub shutdown_delay: Duration,
    pub shutdown_grace: Duration,
    /// The AWS accounts and regions besides the gateway's own.
    pub targets: Vec<crate::targets::TargetSpec>,
    /// The partner client-token map, if the operator configured one.
    pub client_tokens: Option<ClientTokenSettings>,
    /// Who may call, and what each caller may do.
    pub access: AccessSettings,
    /// Serve gRPC server reflection.
    pub reflection: bool,
    /// Serve gRPC over TLS (and verify client certificates), or plaintext.
    pub tls: Option<TlsSettings>,
}

impl Config {
    /// The flags' documented defaults (and `CPGW_*` variables, if set), open
    /// to every caller: a base for tests and benchmarks, so that they never
    /// restate a default.
    pub fn defaults_without_auth() -> Config {
        use clap::Parser;
        let cli =
            crate::cli::Cli::try_parse_from(["codepipeline-gateway", "--allow-unauthenticated"])
                .expect("the default flags parse");
        Config::try_from(&cli.serve).expect("the defaults are valid")
    }
}

/// Authentication and authorization; all off by default.
#[derive(Clone, Debug)]
pub struct AccessSettings {
    pub static_tokens_file: Option<PathBuf>,
    pub jwt: Option<JwtSettings>,
    pub policy_file: Option<PathBuf>,
    /// How often the token, policy and key-set files are checked for changes.
    pub reload_interval: Duration,
}

impl Default for AccessSettings {
    fn default() -> Self {
        AccessSettings {
            static_tokens_file: None,
            jwt: None,
            policy_file: None,
            reload_interval: Duration::from_secs(10),
        }
    }
}

/// Which JWTs are accepted, and where their issuer's keys come from.
#[derive(Clone, Debug)]
pub struct JwtSettings {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: JwksLocation,
    pub refresh: Duration,
    /// Unknown-key refetches are at most this frequent ([`MIN_REFETCH`]
    /// from the command line; tests shorten it).
    ///
    /// [`MIN_REFETCH`]: crate::auth::jwt::MIN_REFETCH
    pub min_refetch: Duration,
}

#[derive(Clone, Debug)]
pub enum JwksLocation {
    File(PathBuf),
    /// `url`, or the issuer's OIDC discovery when `None`.
    Remote {
        url: Option<String>,
        ca_file: Option<PathBuf>,
        bearer_token_file: Option<PathBuf>,
    },
}

/// Where the client-token map lives and how often to look for changes.
#[derive(Clone, Debug)]
pub struct ClientTokenSettings {
    pub path: PathBuf,
    pub reload_interval: Duration,
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

impl TryFrom<&GatewayArgs> for Config {
    type Error = ConfigError;

    /// Checks what clap's types cannot, and builds the typed settings.
    fn try_from(args: &GatewayArgs) -> Result<Config, ConfigError> {
        // Destructured so that a new flag cannot be forgotten here.
        let GatewayArgs {
            listen,
            admin_listen,
            rate_limit_rps,
            rate_limit_burst,
            rate_limit_queue,
            rate_limit_adaptive,
            retry_max_attempts,
            retry_base_delay,
            retry_max_delay,
            attempt_timeout,
            default_deadline,
            max_connection_age,
            max_concurrent_streams,
            max_calls_in_flight,
            max_subscriptions,
            upstream_concurrency,
            request_arrival_timeout,
            handshake_timeout,
            idle_timeout,
            keepalive_interval,
            keepalive_timeout,
            max_pending_reset_streams,
            shutdown_delay,
            shutdown_grace,
            log_format: _,
            targets_file,
            client_tokens_file,
            client_tokens_reload,
            auth_tokens_file,
            auth_jwt_issuer,
            auth_jwt_audience,
            auth_jwks_url,
            auth_jwks_file,
            auth_jwks_ca_file,
            auth_jwks_bearer_token_file,
            auth_jwks_refresh,
            policy_file,
            auth_reload,
            allow_unauthenticated,
            reflection,
            tls_cert_file,
            tls_key_file,
            tls_client_ca_file,
        } = args.clone();
        let targets = match &targets_file {
            Some(path) => crate::targets::load(path)
                .map_err(|e| bad("targets-file", "CPGW_TARGETS_FILE", e))?,
            None => Vec::new(),
        };
        let tls = match (tls_cert_file, tls_key_file) {
            (Some(cert_file), Some(key_file)) => Some(TlsSettings {
                cert_file,
                key_file,
                client_ca_file: tls_client_ca_file,
            }),
            // clap's `requires` makes the flags come together.
            _ => None,
        };
        let client_certificates = tls.as_ref().is_some_and(|t| t.client_ca_file.is_some());
        if auth_tokens_file.is_none()
            && auth_jwt_issuer.is_none()
            && !client_certificates
            && !allow_unauthenticated
        {
            return Err(ConfigError(
                "no authentication is configured: anyone who can reach the gateway would act \
                 with its AWS identity. Set --auth-jwt-issuer (CPGW_AUTH_JWT_ISSUER, e.g. for \
                 Kubernetes service-account tokens), --auth-tokens-file \
                 (CPGW_AUTH_TOKENS_FILE) or --tls-client-ca-file (CPGW_TLS_CLIENT_CA_FILE), or say --allow-unauthenticated \
                 (CPGW_ALLOW_UNAUTHENTICATED=true) to run open, which is not for production"
                    .into(),
            ));
        }
        if auth_reload.is_zero() {
            return Err(bad(
                "auth-reload",
                "CPGW_AUTH_RELOAD",
                "must be greater than 0",
            ));
        }
        if auth_jwks_refresh < crate::auth::jwt::MIN_REFETCH {
            return Err(bad(
                "auth-jwks-refresh",
                "CPGW_AUTH_JWKS_REFRESH",
                "must be at least 10s",
            ));
        }
        let audiences: Vec<String> = auth_jwt_audience
            .into_iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        let jwt = match auth_jwt_issuer {
            Some(issuer) if issuer.trim().is_empty() => {
                return Err(bad(
                    "auth-jwt-issuer",
                    "CPGW_AUTH_JWT_ISSUER",
                    "must not be empty",
                ));
            }
            Some(_) if audiences.is_empty() => {
                return Err(bad(
                    "auth-jwt-audience",
                    "CPGW_AUTH_JWT_AUDIENCE",
                    "must name at least one audience",
                ));
            }
            Some(issuer) => Some(JwtSettings {
                issuer,
                audiences,
                keys: match auth_jwks_file {
                    Some(path) => JwksLocation::File(path),
                    None => JwksLocation::Remote {
                        url: auth_jwks_url,
                        ca_file: auth_jwks_ca_file,
                        bearer_token_file: auth_jwks_bearer_token_file,
                    },
                },
                refresh: auth_jwks_refresh,
                min_refetch: crate::auth::jwt::MIN_REFETCH,
            }),
            None => {
                let stray = [
                    (
                        "auth-jwks-url",
                        "CPGW_AUTH_JWKS_URL",
                        auth_jwks_url.is_some(),
                    ),
                    (
                        "auth-jwks-file",
                        "CPGW_AUTH_JWKS_FILE",
                        auth_jwks_file.is_some(),
                    ),
                    (
                        "auth-jwks-ca-file",
                        "CPGW_AUTH_JWKS_CA_FILE",
                        auth_jwks_ca_file.is_some(),
                    ),
                    (
                        "auth-jwks-bearer-token-file",
                        "CPGW_AUTH_JWKS_BEARER_TOKEN_FILE",
                        auth_jwks_bearer_token_file.is_some(),
                    ),
                ];
                if let Some((flag, env, _)) = stray.into_iter().find(|(_, _, set)| *set) {
                    return Err(bad(flag, env, "needs --auth-jwt-issuer"));
                }
                None
            }
        };
        if client_tokens_reload.is_zero() {
            return Err(bad(
                "client-tokens-reload",
                "CPGW_CLIENT_TOKENS_RELOAD",
                "must be greater than 0",
            ));
        }
        if !(rate_limit_rps > 0.0 && rate_limit_rps <= MAX_RATE_LIMIT_RPS) {
            return Err(bad(
                "rate-limit-rps",
                "CPGW_RATE_LIMIT_RPS",
                format!(
                    "must be a number greater than 0 and at most {MAX_RATE_LIMIT_RPS}, got \
                     {rate_limit_rps}"
                ),
            ));
        }
        let Some(rate_limit_burst) = NonZeroU32::new(rate_limit_burst) else {
            return Err(bad(
                "rate-limit-burst",
                "CPGW_RATE_LIMIT_BURST",
                "must be at least 1",
            ));
        };
        let Some(retry_max_attempts) =
            NonZeroU32::new(retry_max_attempts).filter(|n| n.get() <= 10)
        else {
            return Err(bad(
                "retry-max-attempts",
                "CPGW_RETRY_MAX_ATTEMPTS",
                format!("must be 1 to 10, got {retry_max_attempts}"),
            ));
        };
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
        let at_least_one = [
            (
                "max-concurrent-streams",
                "CPGW_MAX_CONCURRENT_STREAMS",
                max_concurrent_streams,
            ),
            (
                "max-calls-in-flight",
                "CPGW_MAX_CALLS_IN_FLIGHT",
                max_calls_in_flight,
            ),
            (
                "max-subscriptions",
                "CPGW_MAX_SUBSCRIPTIONS",
                max_subscriptions,
            ),
            (
                "upstream-concurrency",
                "CPGW_UPSTREAM_CONCURRENCY",
                upstream_concurrency,
            ),
            (
                "max-pending-reset-streams",
                "CPGW_MAX_PENDING_RESET_STREAMS",
                max_pending_reset_streams,
            ),
        ];
        if let Some((flag, env, _)) = at_least_one.into_iter().find(|(_, _, n)| *n == 0) {
            return Err(bad(flag, env, "must be at least 1"));
        }
        let positive = [
            (
                "request-arrival-timeout",
                "CPGW_REQUEST_ARRIVAL_TIMEOUT",
                request_arrival_timeout,
            ),
            (
                "handshake-timeout",
                "CPGW_HANDSHAKE_TIMEOUT",
                handshake_timeout,
            ),
            (
                "keepalive-timeout",
                "CPGW_KEEPALIVE_TIMEOUT",
                keepalive_timeout,
            ),
        ];
        if let Some((flag, env, _)) = positive.into_iter().find(|(_, _, d)| d.is_zero()) {
            return Err(bad(flag, env, "must be greater than 0"));
        }
        let zero_means_never = |d: Duration| (!d.is_zero()).then_some(d);
        if listen == admin_listen && listen.port() != 0 {
            return Err(bad(
                "admin-listen",
                "CPGW_ADMIN_LISTEN",
                "must differ from --listen",
            ));
        }
        Ok(Config {
            listen,
            admin_listen,
            rate_limit: RateLimitSettings {
                per_second: rate_limit_rps,
                burst: rate_limit_burst,
                max_waiting: rate_limit_queue,
                adaptive: rate_limit_adaptive,
            },
            retry: RetrySettings {
                max_attempts: retry_max_attempts,
                base_delay: retry_base_delay,
                max_delay: retry_max_delay,
            },
            attempt_timeout,
            default_deadline,
            connections: ConnectionLimits {
                max_concurrent_streams,
                handshake_timeout,
                idle_timeout: zero_means_never(idle_timeout),
                max_connection_age: zero_means_never(max_connection_age),
                keepalive_interval: zero_means_never(keepalive_interval),
                keepalive_timeout,
                request_arrival_timeout,
                max_pending_reset_streams: max_pending_reset_streams as usize,
            },
            max_calls_in_flight: max_calls_in_flight as usize,
            max_subscriptions: max_subscriptions as usize,
            upstream_concurrency: upstream_concurrency as usize,
            shutdown_delay,
            shutdown_grace,
            targets,
            client_tokens: client_tokens_file.map(|path| ClientTokenSettings {
                path,
                reload_interval: client_tokens_reload,
            }),
            access: AccessSettings {
                static_tokens_file: auth_tokens_file,
                jwt,
                policy_file,
                reload_interval: auth_reload,
            },
            reflection,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    /// Parses the command line, with authentication switched off unless the
    /// test configures it.
    fn parse(args: &[&str]) -> Cli {
        let open = ["--allow-unauthenticated"];
        let auth = args
            .iter()
            .any(|a| a.starts_with("--auth-") || a.starts_with("--allow-"));
        let args = args
            .iter()
            .copied()
            .chain(open.into_iter().filter(|_| !auth));
        let mut argv: Vec<&str> = vec!["codepipeline-gateway"];
        argv.extend(args);
        Cli::try_parse_from(argv).expect("parses")
    }

    #[test]
    fn a_listen_address_is_an_ip_and_a_port() {
        for flag in ["--listen", "--admin-listen"] {
            let error =
                Cli::try_parse_from(["codepipeline-gateway", "serve", flag, "localhost:50051"])
                    .unwrap_err()
                    .to_string();
            assert!(
                error.contains(flag) && error.contains("expected IP:port"),
                "{error}"
            );
        }
        let args = parse(&["--listen", "[::1]:50051"]);
        assert_eq!(args.serve.listen, "[::1]:50051".parse().unwrap());
    }

    #[test]
    fn dev_mode_listens_on_loopback_unless_told_otherwise() {
        use crate::cli::Command;
        let dev = |args: &[&str]| match Cli::try_parse_from(args).expect("parses").command {
            Some(Command::Dev(dev)) => dev.gateway,
            _ => panic!("dev parses as dev"),
        };
        let settings = dev(&["codepipeline-gateway", "dev"]);
        assert_eq!(settings.listen, "127.0.0.1:50051".parse().unwrap());
        assert_eq!(settings.admin_listen, "127.0.0.1:9090".parse().unwrap());
        let settings = dev(&["codepipeline-gateway", "dev", "--listen", "0.0.0.0:50051"]);
        assert_eq!(settings.listen, "0.0.0.0:50051".parse().unwrap());
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let settings = Config::try_from(&parse(&[]).serve).unwrap();
        assert_eq!(settings.listen, "0.0.0.0:50051".parse().unwrap());
        assert_eq!(settings.admin_listen, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(settings.retry.max_attempts.get(), 3);
        assert_eq!(settings.shutdown_delay, Duration::from_secs(5));
        assert_eq!(settings.shutdown_grace, Duration::from_secs(20));
        let connections = &settings.connections;
        assert_eq!(
            connections.max_connection_age,
            Some(Duration::from_secs(300))
        );
        assert_eq!(connections.max_concurrent_streams, 100);
        assert_eq!(connections.handshake_timeout, Duration::from_secs(10));
        assert_eq!(connections.idle_timeout, Some(Duration::from_secs(120)));
        assert_eq!(
            connections.keepalive_interval,
            Some(Duration::from_secs(30))
        );
        assert_eq!(connections.keepalive_timeout, Duration::from_secs(10));
        assert_eq!(connections.request_arrival_timeout, Duration::from_secs(10));
        assert_eq!(connections.max_pending_reset_streams, 20);
        assert_eq!(settings.max_calls_in_flight, 1000);
        assert_eq!(settings.upstream_concurrency, 64);
        let forever = Config::try_from(
            &parse(&[
                "--max-connection-age",
                "0s",
                "--idle-timeout",
                "0s",
                "--keepalive-interval",
                "0s",
            ])
            .serve,
        )
        .unwrap();
        assert_eq!(forever.connections.max_connection_age, None);
        assert_eq!(forever.connections.idle_timeout, None);
        assert_eq!(forever.connections.keepalive_interval, None);
    }

    #[test]
    fn no_subcommand_means_serve_with_flags() {
        let cli = parse(&["--rate-limit-rps", "2.5", "--retry-base-delay", "250ms"]);
        assert!(cli.command.is_none());
        let settings = Config::try_from(&cli.serve).unwrap();
        assert_eq!(settings.rate_limit.per_second, 2.5);
        assert_eq!(settings.retry.base_delay, Duration::from_millis(250));
    }

    #[test]
    fn bad_settings_name_the_flag_and_variable() {
        let cases: [(&[&str], &str); 9] = [
            (
                &["serve", "--max-concurrent-streams", "0"],
                "--max-concurrent-streams (CPGW_MAX_CONCURRENT_STREAMS): must be at least 1",
            ),
            (
                &["serve", "--max-calls-in-flight", "0"],
                "--max-calls-in-flight (CPGW_MAX_CALLS_IN_FLIGHT)",
            ),
            (
                &["serve", "--upstream-concurrency", "0"],
                "--upstream-concurrency (CPGW_UPSTREAM_CONCURRENCY)",
            ),
            (
                &["serve", "--request-arrival-timeout", "0s"],
                "--request-arrival-timeout (CPGW_REQUEST_ARRIVAL_TIMEOUT): must be greater than 0",
            ),
            (
                &["serve", "--handshake-timeout", "0s"],
                "--handshake-timeout (CPGW_HANDSHAKE_TIMEOUT)",
            ),
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
            let error = Config::try_from(&serve).unwrap_err();
            assert!(error.0.contains(expected), "{error} lacks {expected}");
        }
    }

    #[test]
    fn serve_refuses_to_start_without_authentication_unless_told_to_run_open() {
        let closed = Cli::try_parse_from(["codepipeline-gateway", "serve"]).unwrap();
        let Some(Command::Serve(closed)) = closed.command else {
            panic!()
        };
        let error = Config::try_from(&closed).unwrap_err();
        assert!(error.0.contains("--allow-unauthenticated"), "{error}");
        for open in [
            &["--allow-unauthenticated"][..],
            &["--allow-unauthenticated", "true"],
            &["--auth-tokens-file", "/t"],
            &["--auth-jwt-issuer", "https://issuer"],
        ] {
            assert!(Config::try_from(&parse(open).serve).is_ok(), "{open:?}");
        }
        let explicit_no = parse(&["--allow-unauthenticated", "false"]).serve;
        assert!(Config::try_from(&explicit_no).is_err());
    }

    #[test]
    fn tls_flags_come_together_and_client_certificates_are_a_way_in() {
        let without_key = Cli::try_parse_from([
            "codepipeline-gateway",
            "--tls-cert-file",
            "/c",
            "--allow-unauthenticated",
        ]);
        assert!(
            without_key
                .unwrap_err()
                .to_string()
                .contains("--tls-key-file")
        );
        let config = Config::try_from(
            &Cli::try_parse_from([
                "codepipeline-gateway",
                "--tls-cert-file",
                "/c",
                "--tls-key-file",
                "/k",
                "--tls-client-ca-file",
                "/ca",
            ])
            .unwrap()
            .serve,
        )
        .expect("mTLS alone is a way to authenticate");
        let tls = config.tls.unwrap();
        assert_eq!(
            tls.client_ca_file.as_deref(),
            Some(std::path::Path::new("/ca"))
        );
        let server_only = Cli::try_parse_from([
            "codepipeline-gateway",
            "--tls-cert-file",
            "/c",
            "--tls-key-file",
            "/k",
        ])
        .unwrap()
        .serve;
        assert!(
            Config::try_from(&server_only).is_err(),
            "server TLS alone identifies no caller"
        );
    }

    #[test]
    fn jwt_flags_need_an_issuer_and_an_audience() {
        let error = Config::try_from(
            &parse(&[
                "--auth-tokens-file",
                "/t",
                "--auth-jwks-url",
                "https://x/jwks",
            ])
            .serve,
        )
        .unwrap_err();
        assert!(error.0.contains("--auth-jwks-url"), "{error}");
        let error = Config::try_from(
            &parse(&["--auth-jwt-issuer", "https://i", "--auth-jwt-audience", ","]).serve,
        )
        .unwrap_err();
        assert!(error.0.contains("--auth-jwt-audience"), "{error}");
        let config = Config::try_from(
            &parse(&[
                "--auth-jwt-issuer",
                "https://i",
                "--auth-jwt-audience",
                "a,b",
            ])
            .serve,
        )
        .unwrap();
        assert_eq!(config.access.jwt.unwrap().audiences, ["a", "b"]);
    }

    #[test]
    fn unparsable_values_are_refused_by_clap_with_the_flag_name() {
        let error =
            Cli::try_parse_from(["codepipeline-gateway", "serve", "--shutdown-grace", "soon"])
                .unwrap_err();
        assert!(error.to_string().contains("--shutdown-grace"), "{error}");
    }
}
