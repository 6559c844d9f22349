//! The innermost service of the forwarding stack: one attempt at one
//! CodePipeline call through the real `aws-sdk-codepipeline`, and the single
//! function that classifies what the SDK answered.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use aws_config::{AppName, BehaviorVersion, Region, SdkConfig};
use aws_credential_types::{Credentials, provider::error::CredentialsError};
use aws_sdk_codepipeline::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    operation::RequestId,
};
use aws_smithy_types::retry::RetryConfig;
use tokio::{sync::Semaphore, time::Instant};
use tracing::Instrument;

use crate::{
    call::{AwsErrorDetails, Call, CallError, CallSuccess, ErrorKind},
    identity::{IdentityWatch, Verdict},
    metrics::Metrics,
    operation::Operation,
    targets::DEFAULT_TARGET,
};

/// The SDK's own retries are switched off: the gateway's retry layer is the
/// only owner of retries, so attempts never multiply.
fn sdk_config_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .app_name(AppName::new("codepipeline-gateway").expect("valid app name"))
}

/// The sources of the SDK's default credential chain, in the order it tries
/// them, for messages that tell an operator where the gateway looked.
pub const CREDENTIAL_CHAIN: &str = "tried, in order: the environment (AWS_ACCESS_KEY_ID and \
     AWS_SECRET_ACCESS_KEY), the shared config and credentials files (AWS_PROFILE, \
     AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE), web identity (AWS_WEB_IDENTITY_TOKEN_FILE \
     with AWS_ROLE_ARN: IRSA), container credentials (AWS_CONTAINER_CREDENTIALS_FULL_URI: EKS \
     Pod Identity, ECS), and EC2 instance metadata (IMDS)";

/// How long start-up waits for the credential chain, over all tries.
const CREDENTIALS_CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// A client for real AWS: region, credentials and endpoint come from the
/// standard chain (`AWS_REGION`, `AWS_ENDPOINT_URL`, IRSA, Pod Identity, ...).
/// Start-up fails here, naming the chain, when it yields no credentials.
pub async fn config_from_environment() -> Result<SdkConfig, String> {
    let config = sdk_config_loader().load().await;
    if config.region().is_none() {
        return Err(
            "no AWS region is configured: set AWS_REGION (or a profile with a region)".into(),
        );
    }
    check_credentials(&config).await?;
    Ok(config)
}

/// Resolves credentials once, so a pod without them fails at start-up rather
/// than look healthy. A source that errs or times out (the metadata service
/// or STS still starting) is tried again within the timeout; a chain where
/// no source has credentials fails at once.
async fn check_credentials(config: &aws_config::SdkConfig) -> Result<(), String> {
    use aws_credential_types::provider::ProvideCredentials;
    let Some(provider) = config.credentials_provider() else {
        return Err(format!(
            "no AWS credentials: no credential provider is configured ({CREDENTIAL_CHAIN})"
        ));
    };
    let give_up = Instant::now() + CREDENTIALS_CHECK_TIMEOUT;
    let mut pause = Duration::from_millis(500);
    loop {
        let outcome = tokio::time::timeout_at(give_up, provider.provide_credentials()).await;
        let error = match outcome {
            Ok(Ok(_credentials)) => return Ok(()),
            Ok(Err(error)) => error,
            Err(_elapsed) => {
                return Err(format!(
                    "no AWS credentials within {}s ({CREDENTIAL_CHAIN})",
                    CREDENTIALS_CHECK_TIMEOUT.as_secs()
                ));
            }
        };
        let retry = matches!(
            error,
            CredentialsError::ProviderTimedOut(_) | CredentialsError::ProviderError(_)
        );
        if !retry || Instant::now() + pause >= give_up {
            return Err(format!(
                "no AWS credentials ({CREDENTIAL_CHAIN}): {}",
                error_chain(&error)
            ));
        }
        tracing::warn!(error = %error_chain(&error), "AWS credentials not available yet; trying again");
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
}

/// A client for a CodePipeline emulator: the same SDK path (SigV4 signing,
/// AWS JSON 1.1 over HTTP), with static credentials and an explicit endpoint.
pub async fn config_for_endpoint(
    endpoint_url: &str,
    region: &str,
    access_key_id: &str,
    secret_access_key: &str,
) -> SdkConfig {
    let credentials = Credentials::new(access_key_id, secret_access_key, None, None, "static");
    sdk_config_loader()
        .endpoint_url(endpoint_url)
        .region(Region::new(region.to_owned()))
        .credentials_provider(credentials)
        .load()
        .await
}

/// A client for an emulator started in this process (dev mode, tests and the
/// benchmark); `secret` replaces the emulator's secret key, to provoke
/// signature failures.
pub async fn config_for_emulator(
    emulator: &codepipeline_emulator::Emulator,
    secret: Option<&str>,
) -> SdkConfig {
    let config = emulator.config();
    config_for_endpoint(
        &emulator.endpoint_url(),
        &config.region,
        &config.access_key_id,
        secret.unwrap_or(&config.secret_access_key),
    )
    .await
}

/// `client` with a pool that keeps at most `max_idle` idle connections to
/// CodePipeline, so that a burst leaves no more behind than the attempt cap
/// lets run at once. Otherwise the SDK's default HTTPS client (rustls with
/// aws-lc, proxies from the environment).
pub fn with_bounded_pool(client: &Client, max_idle: usize) -> Client {
    use aws_smithy_http_client::{Builder, ConnectorBuilder, proxy::ProxyConfig, tls};
    let http_client = Builder::new()
        .pool_max_idle_per_host(max_idle)
        .build_with_connector_fn(|settings, components| {
            let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ));
            connector.set_connector_settings(settings.cloned());
            if let Some(components) = components {
                connector.set_sleep_impl(components.sleep_impl());
            }
            connector.set_proxy_config(Some(ProxyConfig::from_env()));
            connector.build()
        });
    Client::from_conf(
        client
            .config()
            .to_builder()
            .http_client(http_client)
            .build(),
    )
}

/// Sends one attempt of a [`Call`] to CodePipeline. An attempt never outlives
/// the caller's deadline nor the gateway's attempt timeout.
///
/// At most `max_concurrency` attempts are in flight at once, process-wide;
/// further attempts wait (within the caller's deadline) rather than open more
/// connections to AWS, so upstream connections stay within that number.
#[derive(Clone)]
pub struct Forwarder {
    client: Client,
    /// The target this client reaches, for metrics and errors.
    target: &'static str,
    /// Whether errors name the target (see `StackSettings::several_targets`).
    target_in_errors: bool,
    attempt_timeout: Duration,
    upstream: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    /// The default target's answers tell readiness whether AWS accepts the
    /// gateway's own identity; another target's refusal is that target's.
    identity: Option<Arc<IdentityWatch>>,
}

impl Forwarder {
    pub fn new(
        client: Client,
        target: &'static str,
        target_in_errors: bool,
        attempt_timeout: Duration,
        upstream: Arc<Semaphore>,
        metrics: Arc<Metrics>,
        identity: Option<Arc<IdentityWatch>>,
    ) -> Self {
        let max_idle = upstream.available_permits();
        Forwarder {
            client: with_bounded_pool(&client, max_idle),
            target,
            target_in_errors,
            attempt_timeout,
            upstream,
            metrics,
            identity,
        }
    }

    pub fn target(&self) -> &'static str {
        self.target
    }

    async fn attempt<O: Operation>(
        self,
        call: Call<O>,
    ) -> Result<CallSuccess<O::Output>, CallError> {
        let now = Instant::now();
        if call.deadline <= now {
            return Err(CallError::deadline_exceeded(0));
        }
        // Waiting for a slot sends nothing: a deadline met here is not an
        // unknown outcome.
        let Ok(Ok(_slot)) = tokio::time::timeout_at(call.deadline, self.upstream.acquire()).await
        else {
            return Err(CallError::deadline_exceeded(0));
        };
        let by_attempt_timeout = Instant::now() + self.attempt_timeout;
        let limit = by_attempt_timeout.min(call.deadline);
        let attempt = call.progress.attempt_sent();
        let span = crate::traces::attempt_span(O::ID.name(), attempt);
        let sent = O::send(&self.client, &call.request);
        let result = tokio::time::timeout_at(limit, sent)
            .instrument(span.clone())
            .await;
        let result = match result {
            Ok(answer) => answer.map(|answer| CallSuccess {
                aws_request_id: answer.request_id,
                attempts: 1,
                earlier_attempt_may_have_applied: false,
                replay: false,
                output: answer.output,
            }),
            Err(_elapsed) => {
                let mut error = if limit == call.deadline {
                    CallError::deadline_exceeded(0)
                } else {
                    CallError::new(
                        ErrorKind::AttemptTimedOut,
                        format!(
                            "CodePipeline did not answer within the attempt timeout ({})",
                            humantime::format_duration(self.attempt_timeout)
                        ),
                    )
                };
                // The request may have reached AWS and been applied.
                error.outcome_unknown = true;
                Err(error)
            }
        };
        call.progress
            .attempt_ended(result.as_ref().is_err_and(|e| e.outcome_unknown));
        self.metrics.record_attempt(
            self.target,
            O::ID.name(),
            result.as_ref().err().map(|e| e.kind),
        );
        if !span.is_disabled() {
            let kind = result.as_ref().err().map(|e| e.kind);
            span.record("aws.outcome", crate::metrics::attempt_outcome(kind));
            span.record(
                "otel.status_code",
                if kind.is_none() { "ok" } else { "error" },
            );
            let request_id = match &result {
                Ok(success) => success.aws_request_id.as_deref(),
                Err(error) => error.aws.as_ref().and_then(|a| a.request_id.as_deref()),
            };
            if let Some(request_id) = request_id {
                span.record("aws.request_id", request_id);
            }
        }
        if let Some(identity) = &self.identity {
            identity.observe(Verdict::of(&result)).await;
        }
        // This attempt started: the retry layer counts it.
        result.map_err(|mut error| {
            error.attempts = 1;
            error.target = self.target_in_errors.then_some(self.target);
            if error.kind == ErrorKind::NoCredentials {
                // Where the credentials were to come from: the default chain,
                // or the target's role.
                let source = if self.target == DEFAULT_TARGET {
                    CREDENTIAL_CHAIN.to_owned()
                } else {
                    format!("assuming the role of target {:?}", self.target)
                };
                error.detail = format!(
                    "the gateway has no usable AWS credentials ({source}): {}",
                    error.detail
                );
            }
            error
        })
    }
}

impl<O: Operation> tower::Service<Call<O>> for Forwarder {
    type Response = CallSuccess<O::Output>;
    type Error = CallError;
    type Future = Pin<Box<dyn Future<Output = Result<CallSuccess<O::Output>, CallError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call<O>) -> Self::Future {
        Box::pin(self.clone().attempt(call))
    }
}

/// AWS error codes that mean AWS authenticated the gateway and its role may
/// not do this: a permissions problem, not a refused identity.
const PERMISSION_CODES: &[&str] = &["AccessDeniedException", "AccessDenied"];

/// AWS error codes that mean AWS does not accept the gateway's identity at
/// all: no call can succeed until the operator acts.
const IDENTITY_REFUSED_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationTokenException",
    "InvalidClientTokenId",
    "ExpiredTokenException",
    "ExpiredToken",
];

/// AWS error codes for throttling (CodePipeline uses `ThrottlingException`;
/// the others are the SDK-wide spellings).
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
];

/// Maps an AWS error code and HTTP status to the gateway's error kinds.
/// Pure, so it is unit-tested below without any network.
pub fn kind_of(code: Option<&str>, http_status: Option<u16>) -> ErrorKind {
    match code {
        Some("ValidationException") => ErrorKind::Validation,
        Some("OutputVariablesSizeExceededException") => ErrorKind::OutputVariablesSizeExceeded,
        Some("JobNotFoundException") => ErrorKind::JobNotFound,
        Some("InvalidJobStateException") => ErrorKind::InvalidJobState,
        Some("InvalidClientTokenException") => ErrorKind::InvalidClientToken,
        Some("ActionTypeNotFoundException") => ErrorKind::ActionTypeNotFound,
        Some("InvalidNonceException") => ErrorKind::InvalidNonce,
        Some("InvalidJobException") => ErrorKind::InvalidJob,
        Some(c) if THROTTLING_CODES.contains(&c) => ErrorKind::Throttled,
        Some(c) if PERMISSION_CODES.contains(&c) || IDENTITY_REFUSED_CODES.contains(&c) => {
            ErrorKind::Misconfigured
        }
        _ => match http_status {
            Some(429) => ErrorKind::Throttled,
            Some(500..=599) => ErrorKind::ServerError,
            Some(401 | 403) => ErrorKind::Misconfigured,
            _ => ErrorKind::Unexpected,
        },
    }
}

/// Classifies one SDK failure. Used for every operation.
pub fn classify<E>(error: SdkError<E, aws_smithy_runtime_api::http::Response>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let request_id = error.request_id().map(str::to_owned);
    match &error {
        SdkError::ServiceError(service) => {
            let http_status = service.raw().status().as_u16();
            let code = error.code().map(str::to_owned);
            let kind = kind_of(code.as_deref(), Some(http_status));
            let mut call_error = CallError::new(kind, "CodePipeline refused the request");
            call_error.aws = Some(Box::new(AwsErrorDetails {
                code,
                message: error.message().map(str::to_owned),
                request_id,
                http_status: Some(http_status),
            }));
            call_error
        }
        SdkError::ConstructionFailure(_) => CallError::new(
            ErrorKind::Misconfigured,
            format!(
                "the AWS request could not be built: {}",
                error_chain(&error)
            ),
        ),
        // The forwarder says where the credentials were to come from.
        SdkError::DispatchFailure(_) if has_credentials_error(&error) => {
            CallError::new(ErrorKind::NoCredentials, error_chain(&error))
        }
        // No connection was made (refused, DNS, TLS handshake): the request
        // was never sent, so it cannot have been applied.
        SdkError::DispatchFailure(_) if never_connected(&error) => CallError::new(
            ErrorKind::Transport,
            format!("could not connect to CodePipeline: {}", error_chain(&error)),
        ),
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            let mut call_error = CallError::new(
                ErrorKind::Transport,
                format!(
                    "no usable answer from CodePipeline: {}",
                    error_chain(&error)
                ),
            );
            // The request may have been sent, and so may have been applied.
            call_error.outcome_unknown = true;
            call_error
        }
        _ => CallError::new(ErrorKind::Unexpected, error_chain(&error)),
    }
}

/// Whether `error` says that AWS does not accept the gateway's identity (or
/// that it has none), as opposed to refusing one call or not answering.
pub fn refuses_identity(error: &CallError) -> bool {
    match error.kind {
        ErrorKind::NoCredentials => true,
        ErrorKind::Misconfigured => match error.aws.as_deref() {
            Some(aws) => match aws.code.as_deref() {
                Some(code) => IDENTITY_REFUSED_CODES.contains(&code),
                None => aws.http_status == Some(401),
            },
            // The request could not even be built: nothing will succeed.
            None => true,
        },
        _ => false,
    }
}

/// Whether the HTTP client failed while connecting, before any byte of the
/// request could be written.
fn never_connected(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(|e| e.is_connect())
        {
            return true;
        }
        current = e.source();
    }
    false
}

fn has_credentials_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<CredentialsError>().is_some() {
            return true;
        }
        current = e.source();
    }
    false
}

/// The error and its sources on one line, for logs and INTERNAL details.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        text.push_str(": ");
        text.push_str(&e.to_string());
        current = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_codes_map_to_kinds() {
        let cases = [
            ("ValidationException", 400, ErrorKind::Validation),
            (
                "OutputVariablesSizeExceededException",
                400,
                ErrorKind::OutputVariablesSizeExceeded,
            ),
            ("JobNotFoundException", 400, ErrorKind::JobNotFound),
            ("InvalidJobStateException", 400, ErrorKind::InvalidJobState),
            (
                "InvalidClientTokenException",
                400,
                ErrorKind::InvalidClientToken,
            ),
            ("ThrottlingException", 400, ErrorKind::Throttled),
            ("AccessDeniedException", 400, ErrorKind::Misconfigured),
            ("ExpiredTokenException", 400, ErrorKind::Misconfigured),
            ("UnrecognizedClientException", 403, ErrorKind::Misconfigured),
            ("InvalidSignatureException", 403, ErrorKind::Misconfigured),
            ("InternalFailure", 500, ErrorKind::ServerError),
            ("ServiceUnavailableException", 503, ErrorKind::ServerError),
            ("SomethingNew", 400, ErrorKind::Unexpected),
        ];
        for (code, status, kind) in cases {
            assert_eq!(kind_of(Some(code), Some(status)), kind, "{code}");
        }
        assert_eq!(kind_of(None, Some(429)), ErrorKind::Throttled);
        assert_eq!(kind_of(None, Some(502)), ErrorKind::ServerError);
    }

    #[test]
    fn only_throttling_server_and_transport_errors_are_transient() {
        let transient: Vec<ErrorKind> = ErrorKind::ALL
            .iter()
            .copied()
            .filter(|k| k.is_transient())
            .collect();
        assert_eq!(
            transient,
            [
                ErrorKind::Throttled,
                ErrorKind::ServerError,
                ErrorKind::Transport,
                ErrorKind::AttemptTimedOut
            ]
        );
    }
}
