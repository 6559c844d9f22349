//! Caller authentication and authorization through the real path: real JWTs
//! signed in the test with keys served by a loopback JWKS endpoint, static
//! bearer tokens, and policy files; a real tonic client, the gateway, the
//! real SDK and the emulator, which shows what (if anything) reached "AWS".

mod common;

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use codepipeline_emulator::{Emulator, EmulatorConfig};
use codepipeline_gateway::{
    config::{AccessSettings, ClientTokenSettings, JwksLocation, JwtSettings},
    error::metadata,
    proto::v1::{self, job_worker_service_client::JobWorkerServiceClient},
};
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const AUDIENCE: &str = "codepipeline-gateway";
const CI: &str = "system:serviceaccount:ci:builder";
const OTHER: &str = "system:serviceaccount:web:frontend";

/// A signing key of the test's issuer, with its public JWK.
struct SigningKey {
    kid: String,
    pkcs8: Vec<u8>,
    jwk: Value,
}

impl SigningKey {
    fn new(kid: &str) -> SigningKey {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        // An uncompressed P-256 point: 0x04, then x and y.
        let point = pair.public_key().as_ref().to_vec();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        SigningKey {
            kid: kid.into(),
            pkcs8: pkcs8.as_ref().to_vec(),
            jwk,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of a projected service-account token, valid for ten minutes.
fn claims(sub: &str) -> Value {
    json!({"iss": ISSUER, "aud": [AUDIENCE], "sub": sub, "iat": now(), "nbf": now(), "exp": now() + 600})
}

/// A loopback JWKS endpoint whose key set the test can rotate; counts fetches.
#[derive(Clone)]
struct Issuer {
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<Mutex<usize>>,
    url: String,
}

impl Issuer {
    async fn start(keys: &[&SigningKey]) -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/openid/v1/jwks", listener.local_addr().unwrap());
        let issuer = Issuer {
            keys: Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect())),
            fetches: Arc::new(Mutex::new(0)),
            url,
        };
        let served = issuer.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let served = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_: Request<Incoming>| {
                        let served = served.clone();
                        async move {
                            *served.fetches.lock().unwrap() += 1;
                            let body = json!({"keys": *served.keys.lock().unwrap()}).to_string();
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        issuer
    }

    /// The key set becomes exactly `keys` (the others are withdrawn).
    fn replace(&self, keys: &[&SigningKey]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// Adds an arbitrary JWK (say, a huge one) to the key set.
    fn publish_raw(&self, jwk: Value) {
        self.keys.lock().unwrap().push(jwk);
    }

    fn publish(&self, key: &SigningKey) {
        self.keys.lock().unwrap().push(key.jwk.clone());
    }

    fn fetches(&self) -> usize {
        *self.fetches.lock().unwrap()
    }
}

fn jwt_settings(issuer: &Issuer) -> JwtSettings {
    JwtSettings {
        issuer: ISSUER.into(),
        audiences: vec![AUDIENCE.into()],
        keys: JwksLocation::Remote {
            url: Some(issuer.url.clone()),
            ca_file: None,
            bearer_token_file: None,
        },
        refresh: Duration::from_secs(300),
        min_refetch: Duration::from_millis(50),
    }
}

async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::default()).await.unwrap()
}

use common::TempDir as Dir;

/// ci may work Build jobs of the dev emulator's custom type; nobody else
/// may do anything.
const POLICY: &str = r#"
rules:
  - identities: ["system:serviceaccount:ci:*", "ci-runner"]
    verbs: ["*"]
    actionTypes:
      - {category: Build, owner: Custom, provider: CpgwDevBuilder, version: "*"}
  - identities: ["system:serviceaccount:deploy:*"]
    verbs: ["*"]
    actionTypes:
      - {category: Deploy, owner: Custom, provider: Deployer, version: "*"}
"#;
const DEPLOYER: &str = "system:serviceaccount:deploy:pusher";

fn with_bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn poll_request() -> v1::PollForJobsRequest {
    common::poll(10)
}

fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

#[tokio::test]
async fn every_bad_token_is_unauthenticated_and_nothing_reaches_aws() {
    let key = SigningKey::new("key-1");
    let issuer = Issuer::start(&[&key]).await;
    let mut h = with_issuer(&issuer).await;
    let job = h.emulator.create_custom_job();

    let unknown_key = SigningKey::new("key-unknown");
    let mut expired = claims(CI);
    expired["exp"] = json!(now() - 120);
    let mut not_yet = claims(CI);
    not_yet["nbf"] = json!(now() + 600);
    let mut other_audience = claims(CI);
    other_audience["aud"] = json!(["kubernetes"]);
    let mut other_issuer = claims(CI);
    other_issuer["iss"] = json!("https://evil.example");
    let mut no_sub = claims(CI);
    no_sub.as_object_mut().unwrap().remove("sub");
    let body = URL_SAFE_NO_PAD.encode(claims(CI).to_string());
    let alg_none = format!(
        "{}.{body}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"key-1"}"#)
    );
    // HMAC "signed" with the issuer's public key, the classic confusion attack.
    let mut hmac_header = Header::new(Algorithm::HS256);
    hmac_header.kid = Some("key-1".into());
    let hmac = jsonwebtoken::encode(
        &hmac_header,
        &claims(CI),
        &EncodingKey::from_secret(key.jwk.to_string().as_bytes()),
    )
    .unwrap();
    let valid = key.sign(&claims(CI));
    let tampered = {
        let mut parts: Vec<&str> = valid.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(claims(OTHER).to_string());
        parts[1] = &forged;
        parts.join(".")
    };

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no credential", None),
        ("not bearer", Some("Basic Y2k6Y2k=".into())),
        ("expired", Some(format!("Bearer {}", key.sign(&expired)))),
        (
            "not yet valid",
            Some(format!("Bearer {}", key.sign(&not_yet))),
        ),
        (
            "wrong audience",
            Some(format!("Bearer {}", key.sign(&other_audience))),
        ),
        (
            "wrong issuer",
            Some(format!("Bearer {}", key.sign(&other_issuer))),
        ),
        ("no subject", Some(format!("Bearer {}", key.sign(&no_sub)))),
        (
            "unknown kid",
            Some(format!("Bearer {}", unknown_key.sign(&claims(CI)))),
        ),
        ("alg none", Some(format!("Bearer {alg_none}"))),
        ("hmac with the public key", Some(format!("Bearer {hmac}"))),
        ("tampered claims", Some(format!("Bearer {tampered}"))),
        ("not a token", Some("Bearer definitely-not-a-jwt".into())),
    ];
    for (what, authorization) in cases {
        let mut request = tonic::Request::new(common::success(&job.job_id));
        if let Some(value) = &authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        let status = h
            .client
            .put_job_success_result(request)
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert_eq!(reason(&status), "UNAUTHENTICATED", "{what}");
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.metadata[metadata::OPERATION], "PutJobSuccessResult");
        if let Some(value) = authorization {
            let token = value.rsplit(' ').next().unwrap();
            assert!(!status.message().contains(token), "{what}: {status:?}");
        }
    }
    assert!(
        h.emulator.requests().is_empty(),
        "a refused call reached AWS"
    );

    // The valid token, twice (the second from the verified-token cache).
    for _ in 0..2 {
        h.client
            .get_job_details(with_bearer(
                v1::GetJobDetailsRequest {
                    target: String::new(),
                    job_id: job.job_id.clone(),
                },
                &valid,
            ))
            .await
            .expect("a valid service-account token is accepted");
    }
    assert_eq!(h.emulator.requests().len(), 2);
    let metrics = common::metrics(&h).await;
    assert!(
        metrics.contains(
            r#"cpgw_auth_refusals_total{method="PutJobSuccessResult",reason="expired_credential"} 2"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_rotated_signing_key_is_fetched_when_a_token_names_it() {
    let old = SigningKey::new("2026-01");
    let issuer = Issuer::start(&[&old]).await;
    let mut h = with_issuer(&issuer).await;
    let job = h.emulator.create_custom_job();
    let details = || v1::GetJobDetailsRequest {
        target: String::new(),
        job_id: job.job_id.clone(),
    };
    h.client
        .get_job_details(with_bearer(details(), &old.sign(&claims(CI))))
        .await
        .unwrap();
    let fetched_at_start = issuer.fetches();

    let new = SigningKey::new("2026-02");
    let token = new.sign(&claims(CI));
    let status = h
        .client
        .get_job_details(with_bearer(details(), &token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "not published yet");
    issuer.publish(&new);
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.client
        .get_job_details(with_bearer(details(), &token))
        .await
        .expect("the new key is fetched on the unknown kid");
    assert!(issuer.fetches() > fetched_at_start);
    // Made-up key ids cannot make the gateway hammer the issuer.
    let before = issuer.fetches();
    for i in 0..20 {
        let stranger = SigningKey::new(&format!("made-up-{i}"));
        let _ = h
            .client
            .get_job_details(with_bearer(details(), &stranger.sign(&claims(CI))))
            .await;
    }
    assert!(
        issuer.fetches() - before <= 4,
        "{} fetches for 20 unknown key ids",
        issuer.fetches() - before
    );
}

/// A gateway that accepts the test issuer's tokens, with no policy.
async fn with_issuer(issuer: &Issuer) -> common::Harness {
    let mut settings = common::settings();
    settings.access = AccessSettings {
        jwt: Some(jwt_settings(issuer)),
        ..AccessSettings::default()
    };
    common::start_with(settings).await
}

/// Two gateways (two replicas) against one emulator, with the same policy.
async fn replicas(
    dir: &Dir,
    issuer: &Issuer,
    emulator: Emulator,
    tokens: Option<&str>,
) -> (common::Harness, common::Harness) {
    let policy = dir.file("policy.yaml", POLICY);
    let mut settings = common::settings();
    settings.access = AccessSettings {
        jwt: Some(jwt_settings(issuer)),
        policy_file: Some(policy),
        ..AccessSettings::default()
    };
    if let Some(tokens) = tokens {
        settings.client_tokens = Some(ClientTokenSettings {
            path: dir.file("client-tokens.json", tokens),
            reload_interval: Duration::from_secs(10),
        });
    }
    let a = common::start_against(emulator.clone(), settings.clone(), None).await;
    let b = common::start_against(emulator, settings, None).await;
    (a, b)
}

#[tokio::test]
async fn the_policy_decides_by_identity_verb_and_the_jobs_action_type_on_every_replica() {
    let key = SigningKey::new("k");
    let issuer = Issuer::start(&[&key]).await;
    let dir = Dir::new();
    let (mut a, mut b) = replicas(&dir, &issuer, emulator().await, None).await;
    let ci = key.sign(&claims(CI));
    let other = key.sign(&claims(OTHER));
    let job = a.emulator.create_custom_job();

    // Another namespace's service account may do nothing at all: refused
    // before its job is looked up, so it cannot make the gateway read jobs.
    let unknown_job = a.emulator.create_custom_job();
    let status = b
        .client
        .put_job_success_result(with_bearer(common::success(&unknown_job.job_id), &other))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let info = status.get_details_error_info().unwrap();
    assert!(
        !info.metadata.contains_key(metadata::ACTION_TYPE),
        "{info:?}"
    );
    assert_eq!(info.metadata[metadata::IDENTITY], OTHER);

    // Another namespace's service account may not even poll.
    let status = a
        .client
        .poll_for_jobs(with_bearer(poll_request(), &other))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(reason(&status), "NOT_AUTHORIZED");
    let info = status.get_details_error_info().unwrap();
    assert_eq!(
        info.metadata[metadata::ACTION_TYPE],
        "Build/Custom/CpgwDevBuilder/1"
    );
    assert_eq!(info.metadata[metadata::IDENTITY], OTHER);
    assert!(a.emulator.requests().is_empty());

    // ci polls through replica a...
    let polled = a
        .client
        .poll_for_jobs(with_bearer(poll_request(), &ci))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let nonce = polled
        .iter()
        .find(|j| j.id == job.job_id)
        .expect("the job was polled")
        .nonce
        .clone();
    a.emulator.clear_requests();

    // ...and replica b, which never saw that poll, decides the same: it reads
    // the job's action type from AWS once and remembers it.
    let ack = |token: &str| {
        with_bearer(
            v1::AcknowledgeJobRequest {
                target: String::new(),
                job_id: job.job_id.clone(),
                nonce: nonce.clone(),
            },
            token,
        )
    };
    // A caller that no rule lets acknowledge anything is refused at once...
    let status = b.client.acknowledge_job(ack(&other)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(a.emulator.requests().is_empty(), "no lookup for it");
    // ...one allowed on other action types only after the lookup.
    let deployer = key.sign(&claims(DEPLOYER));
    let status = b.client.acknowledge_job(ack(&deployer)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.get_details_error_info().unwrap().metadata[metadata::ACTION_TYPE],
        "Build/Custom/CpgwDevBuilder/1"
    );
    assert_eq!(
        a.emulator
            .requests()
            .iter()
            .map(|r| r.operation.as_str())
            .collect::<Vec<_>>(),
        ["GetJobDetails"],
        "only the lookup, never the refused acknowledgement"
    );
    b.client
        .acknowledge_job(ack(&ci))
        .await
        .expect("ci may acknowledge");
    b.client
        .put_job_success_result(with_bearer(common::success(&job.job_id), &ci))
        .await
        .expect("ci may report");
    let operations: Vec<_> = a
        .emulator
        .requests()
        .into_iter()
        .map(|r| r.operation)
        .collect();
    assert_eq!(
        operations,
        ["GetJobDetails", "AcknowledgeJob", "PutJobSuccessResult"],
        "one lookup, remembered"
    );
    let metrics = common::metrics(&b).await;
    assert!(
        metrics.contains(r#"cpgw_job_type_lookups_total{method="AcknowledgeJob"} 1"#),
        "{metrics}"
    );
    // Replica a remembered the type from its own poll: no lookup at all.
    a.emulator.clear_requests();
    let other_job = a.emulator.create_custom_job();
    a.client
        .poll_for_jobs(with_bearer(poll_request(), &ci))
        .await
        .unwrap();
    let status = a
        .client
        .put_job_success_result(with_bearer(common::success(&other_job.job_id), &other))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        a.emulator
            .requests()
            .iter()
            .map(|r| r.operation.as_str())
            .collect::<Vec<_>>(),
        ["PollForJobs"]
    );
}

#[tokio::test]
async fn the_client_token_map_fills_in_only_for_an_authorized_caller() {
    let key = SigningKey::new("k");
    let issuer = Issuer::start(&[&key]).await;
    let dir = Dir::new();
    let emulator = emulator().await;
    let partner = emulator.create_third_party_job();
    let tokens =
        json!({ partner.client_id.clone().unwrap(): partner.client_token.clone().unwrap() })
            .to_string();
    let (mut a, _b) = replicas(&dir, &issuer, emulator, Some(&tokens)).await;
    let ci = key.sign(&claims(CI));
    // ci may only work custom Build jobs: the partner job's type is looked up
    // (with the map's token, inside the gateway), and the call refused
    // before the map's token is put into it.
    let status = a
        .client
        .put_third_party_job_success_result(with_bearer(
            v1::PutThirdPartyJobSuccessResultRequest {
                job_id: partner.job_id.clone(),
                client_id: partner.client_id.clone().unwrap(),
                ..Default::default()
            },
            &ci,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.get_details_error_info().unwrap().metadata[metadata::ACTION_TYPE],
        "Deploy/ThirdParty/CpgwDevPartner/1"
    );
    let operations: Vec<_> = a
        .emulator
        .requests()
        .into_iter()
        .map(|r| r.operation)
        .collect();
    assert_eq!(operations, ["GetThirdPartyJobDetails"]);
    assert_eq!(a.emulator.job(&partner.job_id).unwrap().results_received, 0);
}

#[tokio::test]
async fn static_tokens_identify_callers_outside_kubernetes() {
    let dir = Dir::new();
    let digest: String = {
        use sha2::{Digest, Sha256};
        Sha256::digest(b"runner-secret-token")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let mut settings = common::settings();
    settings.access = AccessSettings {
        static_tokens_file: Some(dir.file("tokens.yaml", &format!("ci-runner: {digest}\n"))),
        policy_file: Some(dir.file("policy.yaml", POLICY)),
        ..AccessSettings::default()
    };
    let mut h = common::start_with(settings).await;
    let job = h.emulator.create_custom_job();
    h.client
        .poll_for_jobs(with_bearer(poll_request(), "runner-secret-token"))
        .await
        .expect("a known static token");
    let status = h
        .client
        .poll_for_jobs(with_bearer(poll_request(), "runner-secret-tokeN"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(!status.message().contains("runner-secret"), "{status:?}");
    h.client
        .put_job_success_result(with_bearer(
            common::success(&job.job_id),
            "runner-secret-token",
        ))
        .await
        .expect("the static caller may report on its action type");
}

#[tokio::test]
async fn health_stays_open_without_a_credential() {
    let dir = Dir::new();
    let mut settings = common::settings();
    settings.access = AccessSettings {
        static_tokens_file: Some(dir.file("tokens.yaml", "{}")),
        ..AccessSettings::default()
    };
    let h = common::start_with(settings).await;
    let channel = Channel::from_shared(format!("http://{}", h.gateway.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health needs no credential");
    let status = JobWorkerServiceClient::new(channel)
        .poll_for_jobs(poll_request())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn policy_and_token_files_reload_under_load_without_a_failed_call() {
    use sha2::{Digest, Sha256};
    let digest = |token: &str| -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let dir = Dir::new();
    let tokens = dir.file(
        "tokens.yaml",
        &format!("ci-runner: {}\n", digest("busy-token")),
    );
    let policy = dir.file("policy.yaml", POLICY);
    let mut settings = common::settings();
    settings.access = AccessSettings {
        static_tokens_file: Some(tokens.clone()),
        policy_file: Some(policy.clone()),
        reload_interval: Duration::from_millis(50),
        ..AccessSettings::default()
    };
    let h = common::start_with(settings).await;

    // A caller allowed by every version of the files keeps calling...
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut busy = h.client.clone();
    let load = {
        let (stop, failures) = (stop.clone(), failures.clone());
        tokio::spawn(async move {
            let mut calls = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && calls < 5_000 {
                calls += 1;
                if let Err(status) = busy
                    .poll_for_jobs(with_bearer(poll_request(), "busy-token"))
                    .await
                {
                    failures.lock().unwrap().push(status.code());
                }
            }
            calls
        })
    };
    // ...while a newcomer is added to both files, a broken policy is refused,
    // and the newcomer's rule is taken away again.
    let mut newcomer = h.client.clone();
    let newcomer_polls = |client: &mut JobWorkerServiceClient<Channel>| {
        let mut client = client.clone();
        async move {
            client
                .poll_for_jobs(with_bearer(poll_request(), "new-token"))
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }
    };
    assert_eq!(
        newcomer_polls(&mut newcomer).await,
        Err(Code::Unauthenticated)
    );
    std::fs::write(
        &tokens,
        format!(
            "ci-runner: {}\nnewcomer: {}\n",
            digest("busy-token"),
            digest("new-token")
        ),
    )
    .unwrap();
    let wait_for = |want: Result<(), Code>| {
        let mut client = newcomer.clone();
        async move {
            for _ in 0..100 {
                if newcomer_polls(&mut client).await == want {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        }
    };
    assert!(
        wait_for(Err(Code::PermissionDenied)).await,
        "the new token was never read"
    );
    std::fs::write(
        &policy,
        POLICY.replace("\"ci-runner\"", "\"ci-runner\", \"newcomer\""),
    )
    .unwrap();
    assert!(wait_for(Ok(())).await, "the new rule was never read");
    std::fs::write(&policy, "rules: [{broken").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        newcomer_polls(&mut h.client.clone()).await,
        Ok(()),
        "the last good policy stays"
    );
    std::fs::write(&policy, POLICY).unwrap();
    assert!(
        wait_for(Err(Code::PermissionDenied)).await,
        "the rule was never taken away"
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let calls = load.await.unwrap();
    assert!(calls > 10, "{calls} calls");
    assert_eq!(
        *failures.lock().unwrap(),
        [],
        "calls failed during the reloads"
    );
}

/// Kubernetes signs service-account tokens with RS256, and serves its keys
/// over HTTPS behind OIDC discovery, to callers with a token of their own:
/// the chart's default path, end to end.
#[tokio::test]
async fn rs256_tokens_with_keys_found_by_discovery_over_https_with_a_cluster_ca() {
    use aws_lc_rs::{
        rsa::{KeyPair as RsaKeyPair, KeySize},
        signature::{KeyPair as _, RSA_PKCS1_SHA256},
    };
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

    // The cluster CA and the "API server" certificate.
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "cluster CA");
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let ca = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut server_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    server_params.subject_alt_names =
        vec![SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())];
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![server_cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    // The issuer's RSA signing key, as a JWK.
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let jwk = json!({
        "kty": "RSA", "alg": "RS256", "use": "sig", "kid": "k8s-2026",
        "n": URL_SAFE_NO_PAD.encode(rsa.public_key().modulus().big_endian_without_leading_zero()),
        "e": URL_SAFE_NO_PAD.encode(rsa.public_key().exponent().big_endian_without_leading_zero()),
    });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    const POD_TOKEN: &str = "the-gateway-pods-own-token";
    let seen_authorization = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let (base, seen) = (base.clone(), seen_authorization.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, base, seen, jwk) =
                    (acceptor.clone(), base.clone(), seen.clone(), jwk.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (base, seen, jwk) = (base.clone(), seen.clone(), jwk.clone());
                        async move {
                            let authorization = request
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            seen.lock().unwrap().push(authorization.clone());
                            let body = match request.uri().path() {
                                _ if authorization != format!("Bearer {POD_TOKEN}") => None,
                                "/.well-known/openid-configuration" => Some(json!({
                                    "issuer": base, "jwks_uri": format!("{base}/openid/v1/jwks"),
                                })),
                                "/openid/v1/jwks" => Some(json!({"keys": [jwk]})),
                                _ => None,
                            };
                            let status = if body.is_some() {
                                hyper::StatusCode::OK
                            } else {
                                hyper::StatusCode::UNAUTHORIZED
                            };
                            let mut response = Response::new(Full::new(Bytes::from(
                                body.map(|b| b.to_string()).unwrap_or_default(),
                            )));
                            *response.status_mut() = status;
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }

    let dir = Dir::new();
    let mut settings = common::settings();
    settings.access = AccessSettings {
        jwt: Some(JwtSettings {
            issuer: base.clone(),
            audiences: vec![AUDIENCE.into()],
            keys: JwksLocation::Remote {
                url: None,
                ca_file: Some(dir.file("ca.crt", &ca_pem)),
                bearer_token_file: Some(dir.file("token", &format!("{POD_TOKEN}\n"))),
            },
            refresh: Duration::from_secs(300),
            min_refetch: Duration::from_millis(50),
        }),
        ..AccessSettings::default()
    };
    let mut h = common::start_with(settings).await;

    // A token signed as the API server signs them: RS256.
    let sign = |claims: &Value| {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"k8s-2026","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let message = format!("{header}.{payload}");
        let mut signature = vec![0; rsa.public_modulus_len()];
        rsa.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            message.as_bytes(),
            &mut signature,
        )
        .unwrap();
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
    };
    let mut claims = claims(CI);
    claims["iss"] = json!(base);
    let job = h.emulator.create_custom_job();
    h.client
        .put_job_success_result(with_bearer(common::success(&job.job_id), &sign(&claims)))
        .await
        .expect("an RS256 service-account token");
    claims["aud"] = json!(["another-service"]);
    let status = h
        .client
        .get_job_details(with_bearer(
            v1::GetJobDetailsRequest {
                target: String::new(),
                job_id: job.job_id.clone(),
            },
            &sign(&claims),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let seen = seen_authorization.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|a| a == &format!("Bearer {POD_TOKEN}")),
        "every fetch carried the pod's own token: {seen:?}"
    );
}

#[tokio::test]
async fn a_withdrawn_key_stops_vouching_for_tokens_even_cached_ones() {
    let compromised = SigningKey::new("compromised");
    let issuer = Issuer::start(&[&compromised]).await;
    let mut h = with_issuer(&issuer).await;
    let job = h.emulator.create_custom_job();
    let details = || v1::GetJobDetailsRequest {
        target: String::new(),
        job_id: job.job_id.clone(),
    };
    let token = compromised.sign(&claims(CI));
    h.client
        .get_job_details(with_bearer(details(), &token))
        .await
        .expect("valid, and now cached");

    // The issuer rotates the key out; the next fetch (here on a token naming
    // the new key) sees it gone.
    let next = SigningKey::new("next");
    issuer.replace(&[&next]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.client
        .get_job_details(with_bearer(details(), &next.sign(&claims(CI))))
        .await
        .expect("the new key");
    let status = h
        .client
        .get_job_details(with_bearer(details(), &token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        h.emulator.requests().len(),
        2,
        "the refused call sent nothing"
    );
}

#[tokio::test]
async fn an_oversized_key_set_is_refused_and_no_token_passes_meanwhile() {
    // The real key, plus 2 MB of junk: over the 1 MiB the gateway reads.
    let key = SigningKey::new("real");
    let issuer = Issuer::start(&[&key]).await;
    issuer.publish_raw(json!({"kty": "oct", "kid": "junk", "k": "A".repeat(2_000_000)}));
    let mut h = with_issuer(&issuer).await;
    let job = h.emulator.create_custom_job();
    let status = h
        .client
        .get_job_details(with_bearer(
            v1::GetJobDetailsRequest {
                target: String::new(),
                job_id: job.job_id.clone(),
            },
            &key.sign(&claims(CI)),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "ISSUER_KEYS_UNAVAILABLE");
    assert!(h.emulator.requests().is_empty());
}
