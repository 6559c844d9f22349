//! The real binary as a platform team runs it: start-up errors, graceful
//! shutdown on SIGTERM (a delay while NOT_SERVING, then a drain of the calls
//! in flight), and logs that keep secrets out.

mod common;

use std::time::Duration;

use common::{SERVE_ON_LOOPBACK, gateway_command, started};

use codepipeline_emulator::NewJob;
use codepipeline_emulator::{DEV_SECRET_ACCESS_KEY, Emulator, EmulatorConfig, Fault, FaultKind};
use codepipeline_gateway::proto::v1::{
    ActionCategory, ActionOwner, ActionTypeId, ExecutionDetails, GetJobDetailsRequest,
    PollForJobsRequest, PutJobSuccessResultRequest, PutThirdPartyJobSuccessResultRequest,
    job_worker_service_client::JobWorkerServiceClient,
};
use tokio::{process::Child, sync::mpsc};

/// The gateway on loopback ports, logging JSON at trace level (so that a
/// secret logged anywhere would show), with `extra` flags.
async fn traced_gateway(
    emulator: &Emulator,
    extra: &[&str],
) -> (Child, String, mpsc::UnboundedReceiver<String>) {
    let mut args = SERVE_ON_LOOPBACK.to_vec();
    args.extend(["--shutdown-delay", "0s", "--shutdown-grace", "1s"]);
    args.extend_from_slice(extra);
    let mut child = gateway_command(emulator, &args)
        .env("RUST_LOG", "trace")
        .spawn()
        .unwrap();
    let (addr, lines) = started(&mut child).await;
    (child, addr, lines)
}

/// Sends SIGTERM, as Kubernetes does, through the shell's `kill` builtin (no
/// `unsafe` libc call, and no dependency on a separate `kill` binary).
fn sigterm(child: &Child) -> bool {
    let pid = child.id().expect("still running");
    std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .is_ok_and(|s| s.success())
}

fn drain(mut lines: mpsc::UnboundedReceiver<String>) -> Vec<String> {
    let mut all = Vec::new();
    while let Ok(line) = lines.try_recv() {
        all.push(line);
    }
    all
}

#[tokio::test]
async fn sigterm_lets_calls_in_flight_finish_then_exits_zero() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let mut child = gateway_command(
        &emulator,
        &[SERVE_ON_LOOPBACK, &["--shutdown-grace", "20s"]].concat(),
    )
    .spawn()
    .unwrap();
    let (addr, lines) = started(&mut child).await;

    const IN_FLIGHT: usize = 3;
    emulator.inject_fault(Fault::for_operation(
        "PutJobSuccessResult",
        FaultKind::Delay(Duration::from_millis(1500)),
        IN_FLIGHT as u32,
    ));
    let mut client = JobWorkerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut calls = Vec::new();
    for _ in 0..IN_FLIGHT {
        let job = emulator.create_custom_job();
        let mut client = client.clone();
        calls.push(tokio::spawn(async move {
            client
                .put_job_success_result(PutJobSuccessResultRequest {
                    job_id: job.job_id,
                    ..Default::default()
                })
                .await
        }));
    }
    // Wait until AWS has all of them, so they are truly in flight.
    tokio::time::timeout(Duration::from_secs(10), async {
        while emulator.requests_for("PutJobSuccessResult").len() < IN_FLIGHT {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("calls reach the emulator");

    assert!(sigterm(&child));

    for call in calls {
        call.await
            .unwrap()
            .expect("a call in flight at SIGTERM completes");
    }
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");

    // Once it has gone, nothing answers on its address.
    let job = emulator.create_custom_job();
    let after = client
        .put_job_success_result(PutJobSuccessResultRequest {
            job_id: job.job_id,
            ..Default::default()
        })
        .await;
    assert!(after.is_err());
    assert_eq!(
        emulator.requests_for("PutJobSuccessResult").len(),
        IN_FLIGHT
    );
    let logs = drain(lines).join("\n");
    assert!(logs.contains("shutting down"), "{logs}");
}

/// Kubernetes takes a pod out of its Service's endpoints only some time after
/// it sends SIGTERM, and new connections arrive until then. With
/// --shutdown-delay the gateway reports NOT_SERVING at once, keeps accepting
/// and serving for the delay, and only then drains and exits.
#[tokio::test]
async fn sigterm_reports_not_serving_but_serves_through_the_shutdown_delay() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    const DELAY: Duration = Duration::from_secs(3);
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let mut child = gateway_command(
        &emulator,
        &[
            SERVE_ON_LOOPBACK,
            &["--shutdown-delay", "3s", "--shutdown-grace", "5s"],
        ]
        .concat(),
    )
    .spawn()
    .unwrap();
    let (addr, lines) = started(&mut child).await;
    let terminated = tokio::time::Instant::now();
    assert!(sigterm(&child));

    // Each check on a new connection: the listener still accepts.
    let not_serving = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .expect("accepted during the delay");
            let mut health = HealthClient::new(channel);
            let status = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap_or_else(|e| {
                    panic!("health check {:?} after SIGTERM: {e}", terminated.elapsed())
                })
                .into_inner()
                .status;
            if status == ServingStatus::NotServing as i32 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        not_serving.is_ok(),
        "health turns NOT_SERVING after SIGTERM"
    );
    let mut client = JobWorkerServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("a new connection is accepted during the delay");
    let job = emulator.create_custom_job();
    client
        .put_job_success_result(PutJobSuccessResultRequest {
            job_id: job.job_id,
            ..Default::default()
        })
        .await
        .expect("a call during the delay is served");
    assert!(
        terminated.elapsed() < DELAY,
        "the checks above ran within the delay ({:?})",
        terminated.elapsed()
    );

    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits after the delay and the drain")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        terminated.elapsed() >= DELAY,
        "it served out the delay before exiting ({:?})",
        terminated.elapsed()
    );
    let logs = drain(lines).join("\n");
    assert!(
        logs.contains("still serving until the delay is over"),
        "{logs}"
    );
}

#[tokio::test]
async fn secrets_never_reach_the_logs_even_at_trace_level() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let (mut child, addr, lines) = traced_gateway(&emulator, &[]).await;
    let mut client = JobWorkerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    const CONTINUATION: &str = "continuation-SECRET-4711";
    const VALUE: &str = "output-value-SECRET-4712";
    let custom = emulator.create_custom_job();
    client
        .put_job_success_result(PutJobSuccessResultRequest {
            job_id: custom.job_id.clone(),
            continuation_token: CONTINUATION.into(),
            execution_details: Some(ExecutionDetails {
                summary: "s".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .put_job_success_result(PutJobSuccessResultRequest {
            // The continuation closed the first job (as in CodePipeline).
            job_id: emulator.create_custom_job().job_id,
            output_variables: [("KEY".to_owned(), VALUE.to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let partner = emulator.create_third_party_job();
    let token = partner.client_token.clone().unwrap();
    client
        .put_third_party_job_success_result(PutThirdPartyJobSuccessResultRequest {
            job_id: partner.job_id.clone(),
            client_token: token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    // An error path too: a wrong token is refused, and still not logged.
    client
        .put_third_party_job_success_result(PutThirdPartyJobSuccessResultRequest {
            job_id: partner.job_id,
            client_token: "wrong-token-SECRET-4713".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();

    // Job data carries artifact credentials and configuration values.
    let polled_job = emulator.create_job(NewJob {
        configuration: [("ApiKey".to_owned(), "config-value-SECRET-4714".to_owned())].into(),
        ..NewJob::default()
    });
    let data = emulator.job_data(&polled_job.job_id).unwrap();
    let artifact_secret = data["artifactCredentials"]["secretAccessKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let artifact_session = data["artifactCredentials"]["sessionToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let jobs = client
        .poll_for_jobs(PollForJobsRequest {
            action_type_id: Some(ActionTypeId {
                category: ActionCategory::Build.into(),
                owner: ActionOwner::Custom.into(),
                provider: "CpgwDevBuilder".into(),
                version: "1".into(),
            }),
            max_batch_size: Some(10),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(jobs.iter().any(|j| j.id == polled_job.job_id));
    client
        .get_job_details(GetJobDetailsRequest {
            target: String::new(),
            job_id: polled_job.job_id.clone(),
        })
        .await
        .unwrap();

    assert!(sigterm(&child));
    child.wait().await.unwrap();
    let logs = drain(lines).join("\n");
    assert!(
        logs.contains("call finished"),
        "one line a call is logged:\n{logs}"
    );
    for secret in [
        CONTINUATION,
        VALUE,
        token.as_str(),
        "wrong-token-SECRET-4713",
        DEV_SECRET_ACCESS_KEY,
        "config-value-SECRET-4714",
        &artifact_secret,
        &artifact_session,
    ] {
        assert!(
            !logs.contains(secret),
            "secret {secret:?} found in the logs:\n{logs}"
        );
    }
}

#[tokio::test]
async fn bad_configuration_stops_start_up_naming_the_setting_once_in_plain_text() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let output = gateway_command(&emulator, &["serve", "--admin-listen", "127.0.0.1:0"])
        .env("CPGW_RATE_LIMIT_RPS", "-1")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Said once, flag and variable both, and in plain text: stderr is a pipe
    // here, as under a log collector, so no colour codes.
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("CPGW_RATE_LIMIT_RPS"))
        .collect();
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(said[0].contains("--rate-limit-rps"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr:?}"
    );

    let output = gateway_command(
        &emulator,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
    )
    .env_remove("AWS_REGION")
    .output()
    .await
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AWS_REGION"), "{stderr}");
}

#[tokio::test]
async fn the_emulators_acknowledge_timeout_must_be_a_positive_duration() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    for (value, needle) in [
        ("0s", "must be longer than 0s"),
        ("soon", "CPGW_EMULATOR_ACKNOWLEDGE_TIMEOUT"),
    ] {
        let output = gateway_command(&emulator, &["emulator", "--listen", "127.0.0.1:0"])
            .env("CPGW_EMULATOR_ACKNOWLEDGE_TIMEOUT", value)
            .output()
            .await
            .unwrap();
        assert!(!output.status.success(), "{value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{value}: {stderr}");
        assert!(stderr.contains("acknowledge-timeout"), "{value}: {stderr}");
    }
}

#[tokio::test]
async fn an_unparsable_value_names_the_variable_it_came_from() {
    // Under the chart, settings arrive as CPGW_* variables: an error naming
    // only the flag would send the operator looking for a flag nobody set.
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let from_env = gateway_command(&emulator, &["check-config"])
        .env("CPGW_RETRY_BASE_DELAY", "soon")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&from_env.stderr);
    assert_eq!(from_env.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'--retry-base-delay"), "{stderr}");
    assert_eq!(
        stderr.matches("CPGW_RETRY_BASE_DELAY").count(),
        1,
        "{stderr}"
    );

    // On the command line the flag is the whole story.
    let from_flag = gateway_command(&emulator, &["check-config", "--retry-base-delay=soon"])
        .env("CPGW_RETRY_BASE_DELAY", "soon")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&from_flag.stderr);
    assert_eq!(from_flag.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("CPGW_RETRY_BASE_DELAY"), "{stderr}");
}

#[tokio::test]
async fn serve_without_aws_credentials_fails_at_start_naming_the_chain() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let started = std::time::Instant::now();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        gateway_command(&emulator, SERVE_ON_LOOPBACK)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .output(),
    )
    .await
    .expect("start-up gave up on its own")
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("no AWS credentials"))
        .collect();
    assert_eq!(said.len(), 1, "said once: {stderr}");
    for source in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "IMDS",
    ] {
        assert!(said[0].contains(source), "{source} not named: {stderr}");
    }
    // Nothing is listening, and nothing was sent.
    assert!(!stderr.contains("gateway listening"), "{stderr}");
    assert!(emulator.requests().is_empty());
    // No source has credentials: that is final, not waited out.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn state_changes_are_audited_with_who_what_and_outcome_and_no_token() {
    use sha2::{Digest, Sha256};
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("cpgw-audit-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    const TOKEN: &str = "audited-runner-SECRET-4715";
    let digest: String = Sha256::digest(TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tokens = dir.join("tokens.yaml");
    std::fs::write(&tokens, format!("ci-runner: {digest}\n")).unwrap();
    let (mut child, addr, lines) =
        traced_gateway(&emulator, &["--auth-tokens-file", tokens.to_str().unwrap()]).await;
    let mut client = JobWorkerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let job = emulator.create_custom_job();
    let mut request = tonic::Request::new(PutJobSuccessResultRequest {
        job_id: job.job_id.clone(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let response = client.put_job_success_result(request).await.unwrap();
    let aws_request_id = response.into_inner().aws_request_id;
    // A second, different report fails: audited with its outcome too.
    let mut again = tonic::Request::new(PutJobSuccessResultRequest {
        job_id: job.job_id.clone(),
        continuation_token: "another".into(),
        ..Default::default()
    });
    again
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    client.put_job_success_result(again).await.unwrap_err();
    // Reads are not audited.
    let mut read = tonic::Request::new(GetJobDetailsRequest {
        target: String::new(),
        job_id: job.job_id.clone(),
    });
    read.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    client.get_job_details(read).await.unwrap();

    assert!(sigterm(&child));
    child.wait().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let logs = drain(lines);
    let audit: Vec<serde_json::Value> = logs
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|json| json["target"] == "audit")
        .collect();
    assert_eq!(audit.len(), 2, "{logs:#?}");
    // Flattened JSON: the event's fields beside timestamp, level and target.
    let fields: Vec<serde_json::Value> = audit
        .iter()
        .map(|a| {
            let mut a = a.clone();
            for envelope in ["timestamp", "level", "target"] {
                a.as_object_mut().unwrap().remove(envelope);
            }
            a
        })
        .collect();
    assert_eq!(
        fields[0],
        serde_json::json!({
            "message": "state-changing call",
            "caller": "ci-runner",
            "auth_method": "static_token",
            "operation": "PutJobSuccessResult",
            "job_id": job.job_id,
            "aws_target": "default",
            "action_type": "",
            "outcome": "OK",
            "aws_request_id": aws_request_id,
        })
    );
    assert_eq!(fields[1]["outcome"], "FAILED_PRECONDITION");
    assert_ne!(fields[1]["aws_request_id"], "");
    let all = logs.join("\n");
    assert!(!all.contains(TOKEN), "the bearer token reached the logs");
    assert!(
        !all.contains(&digest),
        "the token's digest reached the logs"
    );
}

#[tokio::test]
async fn serve_refuses_to_start_without_authentication() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let output = gateway_command(&emulator, &["serve", "--listen", "127.0.0.1:0"])
        .env_remove("CPGW_ALLOW_UNAUTHENTICATED")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no authentication is configured")
            && stderr.contains("--allow-unauthenticated"),
        "{stderr}"
    );
}

#[tokio::test]
async fn refused_credentials_reach_neither_aws_nor_the_logs() {
    use aws_lc_rs::{
        rand::SystemRandom,
        signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
    };
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use sha2::{Digest, Sha256};

    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("cpgw-refused-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, content: &str| {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    };
    // A known static token whose caller the policy does not allow.
    const KNOWN: &str = "known-but-not-allowed-SECRET-4716";
    let digest: String = Sha256::digest(KNOWN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tokens = write("tokens.yaml", &format!("ci-runner: {digest}\n"));
    let policy = write(
        "policy.yaml",
        r#"rules: [{identities: [someone-else], verbs: ["*"], actionTypes: [{category: "*", owner: "*", provider: "*", version: "*"}]}]"#,
    );
    // The issuer's key, and a stranger's key claiming the issuer's kid.
    let key = |kid: &str| {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])});
        (pkcs8.as_ref().to_vec(), jwk)
    };
    let (issuer_key, issuer_jwk) = key("k1");
    let (stranger_key, _) = key("k1");
    let jwks = write(
        "jwks.json",
        &serde_json::json!({"keys": [issuer_jwk]}).to_string(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |pkcs8: &[u8], exp: u64| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".into());
        let claims = serde_json::json!({"iss": "https://issuer.test", "aud": "codepipeline-gateway",
            "sub": "system:serviceaccount:ci:builder", "exp": exp});
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_der(pkcs8),
        )
        .unwrap()
    };
    let forged = sign(&stranger_key, now + 600);
    let expired = sign(&issuer_key, now - 600);

    let (mut child, addr, lines) = traced_gateway(
        &emulator,
        &[
            "--auth-tokens-file",
            &tokens,
            "--auth-jwt-issuer",
            "https://issuer.test",
            "--auth-jwks-file",
            &jwks,
            "--policy-file",
            &policy,
        ],
    )
    .await;
    let mut client = JobWorkerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let job = emulator.create_custom_job();
    let cases = [
        ("wrong-static-SECRET-4717", tonic::Code::Unauthenticated),
        (forged.as_str(), tonic::Code::Unauthenticated),
        (expired.as_str(), tonic::Code::Unauthenticated),
        (KNOWN, tonic::Code::PermissionDenied),
    ];
    for (token, code) in cases {
        let mut request = tonic::Request::new(PutJobSuccessResultRequest {
            job_id: job.job_id.clone(),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let status = client.put_job_success_result(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(!status.message().contains(token), "{status:?}");
    }
    assert!(emulator.requests().is_empty(), "a refused call reached AWS");

    assert!(sigterm(&child));
    child.wait().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let logs = drain(lines);
    let outcomes: Vec<String> = logs
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|json| json["target"] == "audit")
        .map(|json| json["outcome"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        outcomes,
        [
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "PERMISSION_DENIED"
        ],
        "every refused report is audited"
    );
    let all = logs.join("\n");
    for secret in [
        "wrong-static-SECRET-4717",
        &forged,
        &expired,
        KNOWN,
        &digest,
    ] {
        assert!(!all.contains(secret), "a credential reached the logs");
    }
    // No part of either JWT either.
    for part in forged.split('.').chain(expired.split('.')) {
        assert!(!all.contains(part), "part of a JWT reached the logs");
    }
}

/// Many small compressed requests that inflate to megabytes, at once over
/// several connections, and as many that inflate to just under the request
/// size limit: the gateway's peak memory stays bounded, because nothing is
/// decompressed past the limit.
#[tokio::test]
async fn concurrent_compression_bombs_leave_memory_bounded() {
    use codepipeline_gateway::server::MAX_REQUEST_BYTES;
    use tonic::codec::CompressionEncoding::Gzip;
    const CONNECTIONS: usize = 4;
    const CALLS: usize = 256;
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let mut child = gateway_command(&emulator, SERVE_ON_LOOPBACK)
        .spawn()
        .unwrap();
    let (addr, _lines) = started(&mut child).await;
    let pid = child.id().unwrap();
    let peak_mib = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            / 1024
    };
    let job = emulator.create_custom_job();
    let bomb = |bytes: usize| PutJobSuccessResultRequest {
        job_id: job.job_id.clone(),
        output_variables: [("v".to_owned(), "0".repeat(bytes))].into(),
        ..Default::default()
    };
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let client = JobWorkerServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
            .send_compressed(Gzip);
        clients.push(client);
    }
    let before = peak_mib();
    // 1 MB of zeros is about 1 KB on the wire; 250 KB fits the limit and is
    // then refused by the validator (output variables over 122,880 bytes).
    for (bytes, code) in [
        (1 << 20, tonic::Code::ResourceExhausted),
        (MAX_REQUEST_BYTES - 6 * 1024, tonic::Code::InvalidArgument),
    ] {
        let request = bomb(bytes);
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..CALLS {
            let mut client = clients[i % CONNECTIONS].clone();
            let request = request.clone();
            calls.spawn(async move { client.put_job_success_result(request).await });
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while let Some(call) = tokio::time::timeout_at(deadline, calls.join_next())
            .await
            .expect("every bomb is answered within 60 s")
        {
            let refused = call.unwrap().unwrap_err();
            assert_eq!(refused.code(), code, "{refused:?}");
        }
    }
    let after = peak_mib();
    eprintln!("peak RSS {before} MiB before, {after} MiB after {CALLS} bombs of each size");
    // Under tonic's default 4 MB limit this was 34 -> 1,261 MiB.
    assert!(after < before + 128, "peak RSS {before} -> {after} MiB");
    assert!(emulator.requests().is_empty());
}
