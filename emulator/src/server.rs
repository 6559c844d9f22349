//! The HTTP server: accept loop, connection handling, routing (the control
//! API to `control.rs`), and the AWS request pipeline (auth → protocol checks
//! → model validation → faults → operation → response), with request
//! recording. It depends on `control.rs`, never the reverse: what both need
//! lives in `shared.rs` and `response.rs`.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::EmulatorConfig;
use crate::faults::FaultKind;
use crate::model::model;
use crate::operations::{self, AwsError};
use crate::recording::RecordedRequest;
use crate::response::{HttpResponse, json_response};
use crate::shared::{Shared, World};
use crate::sigv4;
use crate::state::{JobStore, Place};

/// Largest request body accepted (AWS JSON requests of these operations are far smaller).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// How long a stopping server waits for in-flight requests before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const SERVICE: &str = "codepipeline";
const STS_SERVICE: &str = "sts";
const AWS_CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Binds and spawns the accept loop.
pub(crate) async fn start(config: EmulatorConfig) -> io::Result<Arc<Shared>> {
    let listener = TcpListener::bind(config.listen).await?;
    let local_addr = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let world = World {
        jobs: JobStore::new(&config.region, config.acknowledge_timeout),
        ..World::default()
    };
    let shared = Arc::new(Shared::new(config, local_addr, world, stop));
    let task = tokio::spawn(accept_loop(shared.clone(), listener, stop_rx));
    shared.set_accept_task(task);
    tracing::debug!(%local_addr, "codepipeline emulator listening");
    Ok(shared)
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(shared.clone(), stream, stop.clone()));
                }
                Err(e) => {
                    // E.g. EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "emulator accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        connections.abort_all();
    }
    tracing::debug!("codepipeline emulator stopped");
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream, mut stop: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| handle(shared.clone(), req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "emulator connection ended");
    }
}

/// Returned from the service to make hyper drop the connection without writing
/// a response (reset faults).
#[derive(Debug)]
pub(crate) struct ConnectionReset;

impl std::fmt::Display for ConnectionReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by injected fault")
    }
}

impl std::error::Error for ConnectionReset {}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<HttpResponse, ConnectionReset> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            tracing::debug!(error = %e, "emulator could not read request body");
            let body = serde_json::json!({"__type": "SerializationException", "message": "Request body could not be read or is too large."});
            return Ok(json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &body,
                AWS_CONTENT_TYPE,
                None,
            ));
        }
    };
    let path = parts.uri.path();
    if path == "/_emulator" || path.starts_with("/_emulator/") {
        return Ok(crate::control::handle(&shared, &parts.method, path, &body));
    }
    handle_aws(&shared, parts, body).await
}

/// What to do with a request once preflight and fault lookup are done.
enum Action {
    Apply(String),
    Fail(AwsError),
    ResetBeforeApply,
    ResetAfterApply(String),
}

async fn handle_aws(
    shared: &Shared,
    parts: http::request::Parts,
    body: Bytes,
) -> Result<HttpResponse, ConnectionReset> {
    let request_id = uuid::Uuid::new_v4().to_string();
    if sigv4::claimed_scope(&parts.headers).is_some_and(|(_, _, service)| service == STS_SERVICE) {
        return Ok(handle_sts(shared, &parts, &body, &request_id));
    }
    let raw_target = header_text(&parts.headers, "x-amz-target");
    let operation = raw_target
        .strip_prefix(model().target_prefix())
        .and_then(|rest| rest.strip_prefix('.'))
        .filter(|op| model().has_operation(op))
        .map(str::to_owned);
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // An empty body is read as `{}`, like AWS does.
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({})
    } else {
        json_body.clone()
    };

    let (auth, place) = authenticate(shared, &parts, &body, SERVICE);
    let signature_valid = auth.is_ok();
    let preflight = preflight(auth, &parts, operation.as_deref(), &input);

    let (seq, fault) = {
        let mut world = shared.world();
        let fault = match &preflight {
            Ok(op) => world.faults.take(op).or_else(|| {
                // Over the quota: throttled like an injected fault.
                (!world.quota.admit(op, std::time::Instant::now())).then_some(FaultKind::Throttle)
            }),
            Err(_) => None,
        };
        let seq = world.requests.push(RecordedRequest {
            request_id: request_id.clone(),
            operation: operation.clone().unwrap_or_else(|| raw_target.clone()),
            body: json_body.clone(),
            signature_valid,
            status: 0,
            error_type: None,
            fault: fault.as_ref().map(FaultKind::label),
        });
        (seq, fault)
    };
    let fault_label = fault.as_ref().map(FaultKind::label);

    let action = match (preflight, fault) {
        (Err(e), _) => Action::Fail(e),
        (Ok(op), None) => Action::Apply(op),
        (Ok(op), Some(FaultKind::Delay(d))) => {
            tokio::time::sleep(d).await;
            Action::Apply(op)
        }
        (Ok(_), Some(FaultKind::Throttle)) => {
            Action::Fail(AwsError::client("ThrottlingException", "Rate exceeded"))
        }
        (Ok(_), Some(FaultKind::ServerError(status))) => Action::Fail(server_error(status)),
        (
            Ok(_),
            Some(FaultKind::Error {
                error_type,
                status,
                message,
            }),
        ) => Action::Fail(AwsError::new(status, &error_type, message)),
        (Ok(_), Some(FaultKind::ResetBeforeApply)) => Action::ResetBeforeApply,
        (Ok(op), Some(FaultKind::ResetAfterApply)) => Action::ResetAfterApply(op),
    };

    let op_label = operation.as_deref().unwrap_or(raw_target.as_str());
    let outcome = match action {
        Action::Apply(op) => {
            let mut world = shared.world();
            let result = operations::dispatch_in(&op, &mut world.jobs, &place, &input);
            match &result {
                Ok(_) => world.requests.finish(seq, 200, None),
                Err(e) => world
                    .requests
                    .finish(seq, e.status, Some(e.error_type.clone())),
            }
            result
        }
        Action::Fail(e) => {
            shared
                .world()
                .requests
                .finish(seq, e.status, Some(e.error_type.clone()));
            Err(e)
        }
        Action::ResetBeforeApply => {
            shared.world().requests.finish(seq, 0, None);
            tracing::debug!(operation = op_label, %request_id, fault = ?fault_label, "codepipeline request: connection reset");
            return Err(ConnectionReset);
        }
        Action::ResetAfterApply(op) => {
            let mut world = shared.world();
            let _ = operations::dispatch_in(&op, &mut world.jobs, &place, &input);
            world.requests.finish(seq, 0, None);
            drop(world);
            tracing::debug!(operation = op_label, %request_id, fault = ?fault_label, "codepipeline request: applied, connection reset");
            return Err(ConnectionReset);
        }
    };

    let (status, body, error_type) = match outcome {
        Ok(output) => (200, output, None),
        Err(e) => (e.status, e.body(), Some(e.error_type)),
    };
    tracing::debug!(operation = op_label, status, %request_id, error_type = ?error_type, fault = ?fault_label, "codepipeline request");
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Ok(json_response(
        status,
        &body,
        AWS_CONTENT_TYPE,
        Some(&request_id),
    ))
}

/// Verifies a request's signature with the secret of the key it claims, in
/// the region it claims if the emulator serves it, and for a session key its
/// token and expiry. Answers the account and region the request acts in.
fn authenticate(
    shared: &Shared,
    parts: &http::request::Parts,
    body: &[u8],
    service: &str,
) -> (Result<(), sigv4::AuthError>, Place) {
    let config = &shared.config;
    let (claimed_key, claimed_region) =
        sigv4::claimed_scope(&parts.headers).map_or(("", ""), |(key, region, _)| (key, region));
    let (signer, region) = {
        let world = shared.world();
        let signer = world.accounts.signer(
            &config.access_key_id,
            &config.secret_access_key,
            claimed_key,
        );
        let served = world.accounts.serves_region(&config.region, claimed_region);
        (
            signer,
            if served {
                claimed_region
            } else {
                config.region.as_str()
            },
        )
    };
    // An unknown key is checked against the home key: verify says it is unknown.
    let (key, secret) = match &signer {
        Some(signer) => (claimed_key, signer.secret_access_key.as_str()),
        None => (
            config.access_key_id.as_str(),
            config.secret_access_key.as_str(),
        ),
    };
    let verified = sigv4::verify(
        parts.method.as_str(),
        &parts.uri,
        &parts.headers,
        body,
        &sigv4::Expected {
            access_key_id: key,
            secret_access_key: secret,
            region,
            service,
        },
        SystemTime::now(),
    );
    let account = signer
        .as_ref()
        .map_or(crate::ACCOUNT_ID, |s| s.account_id.as_str());
    let place = Place::new(account, region);
    let verified = verified.and_then(|()| match signer.and_then(|s| s.session) {
        Some((token, expires)) => {
            if header_text(&parts.headers, "x-amz-security-token") != token {
                Err(sigv4::AuthError::UnknownKey)
            } else if SystemTime::now() >= expires {
                Err(sigv4::AuthError::Expired)
            } else {
                Ok(())
            }
        }
        None => Ok(()),
    });
    (verified, place)
}

/// STS: `AssumeRole` only, in the query protocol (form in, XML out).
fn handle_sts(
    shared: &Shared,
    parts: &http::request::Parts,
    body: &[u8],
    request_id: &str,
) -> HttpResponse {
    let xml = |status: u16, text: String| {
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "text/xml")
            .header("x-amzn-RequestId", request_id)
            .body(http_body_util::Full::new(Bytes::from(text)))
            .expect("static response parts are valid")
    };
    let (auth, place) = authenticate(shared, parts, body, STS_SERVICE);
    if let Err(e) = auth {
        let status = if matches!(e, sigv4::AuthError::Expired) {
            400
        } else {
            403
        };
        let code = match e.error_type() {
            "UnrecognizedClientException" => "InvalidClientTokenId",
            "InvalidSignatureException" => "SignatureDoesNotMatch",
            other => other,
        };
        return xml(
            status,
            crate::accounts::error_xml(code, &e.message(), request_id),
        );
    }
    let params = crate::accounts::form_params(body);
    if params.get("Action").map(String::as_str) != Some("AssumeRole") {
        let message = format!(
            "The emulator's STS implements AssumeRole only, not {}.",
            params.get("Action").map_or("(no Action)", String::as_str)
        );
        return xml(
            400,
            crate::accounts::error_xml("InvalidAction", &message, request_id),
        );
    }
    let outcome =
        shared
            .world()
            .accounts
            .assume_role(&place.account_id, &params, SystemTime::now());
    match outcome {
        Ok(issued) => xml(200, crate::accounts::assume_role_xml(&issued, request_id)),
        Err(e) => {
            tracing::debug!(code = e.code, "emulator AssumeRole refused");
            xml(
                e.status,
                crate::accounts::error_xml(e.code, &e.message, request_id),
            )
        }
    }
}

/// Auth and protocol checks plus model validation; returns the operation name.
fn preflight(
    auth: Result<(), sigv4::AuthError>,
    parts: &http::request::Parts,
    operation: Option<&str>,
    input: &Value,
) -> Result<String, AwsError> {
    auth.map_err(|e| {
        let status = if matches!(e, sigv4::AuthError::Expired) {
            400
        } else {
            403
        };
        AwsError::new(status, e.error_type(), e.message())
    })?;
    if parts.method != http::Method::POST {
        return Err(AwsError::client(
            "UnknownOperationException",
            "Only POST requests are supported.",
        ));
    }
    let Some(operation) = operation else {
        return Err(AwsError::client(
            "UnknownOperationException",
            "The X-Amz-Target header is missing or names an operation this emulator does not know.",
        ));
    };
    let content_type = header_text(&parts.headers, "content-type");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case(AWS_CONTENT_TYPE) {
        return Err(AwsError::client(
            "UnknownOperationException",
            format!("Content-Type must be {AWS_CONTENT_TYPE}."),
        ));
    }
    if input.is_null() {
        return Err(AwsError::client(
            "SerializationException",
            "The request body is not valid JSON.",
        ));
    }
    model()
        .validate_input(operation, input)
        .map_err(|f| AwsError::client(f.error_type(), f.message()))?;
    Ok(operation.to_owned())
}

fn server_error(status: u16) -> AwsError {
    match status {
        503 => AwsError::new(
            status,
            "ServiceUnavailableException",
            "Service is unavailable.",
        ),
        _ => AwsError::new(
            status,
            "InternalFailure",
            "The request processing has failed because of an unknown error, exception or failure.",
        ),
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}
