//! TLS and mTLS through real handshakes: certificates made in the test (a CA,
//! the server, clients with SPIFFE URI SANs or only a CN, expired ones, one
//! from another CA), a real tonic TLS client, and a rotation of the server's
//! files while calls run.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use codepipeline_gateway::{
    config::{AccessSettings, Config},
    error::metadata,
    proto::v1::{self, job_worker_service_client::JobWorkerServiceClient},
    tls::TlsSettings,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType, date_time_ymd,
};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};
use tonic_types::StatusExt;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A leaf certificate and its key, in PEM.
    fn issue(&self, configure: impl FnOnce(&mut CertificateParams)) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        configure(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn server(&self) -> (String, String) {
        self.issue(|p| {
            p.subject_alt_names = vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        })
    }

    fn client(&self, spiffe_id: Option<&str>, common_name: &str) -> (String, String) {
        self.issue(|p| {
            p.distinguished_name.push(DnType::CommonName, common_name);
            if let Some(id) = spiffe_id {
                p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
            }
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        })
    }
}

use common::TempDir as Dir;

const CI_WORKER: &str = "spiffe://example.org/ns/ci/sa/builder";
const POLICY: &str = r#"
rules:
  - identities: ["spiffe://example.org/ns/ci/*", "legacy-runner"]
    verbs: ["*"]
    actionTypes:
      - {category: Build, owner: Custom, provider: CpgwDevBuilder, version: "*"}
"#;

/// Settings with server TLS from `dir` (and client certificates against
/// `client_ca`, with the policy above).
fn tls_settings(dir: &Dir, server: &(String, String), client_ca: Option<&Ca>) -> Config {
    let mut settings = common::settings();
    settings.tls = Some(TlsSettings {
        cert_file: dir.file("tls.crt", &server.0),
        key_file: dir.file("tls.key", &server.1),
        client_ca_file: client_ca.map(|ca| dir.file("ca.crt", &ca.pem)),
    });
    settings.access = AccessSettings {
        policy_file: client_ca.map(|_| dir.file("policy.yaml", POLICY)),
        reload_interval: Duration::from_millis(100),
        ..AccessSettings::default()
    };
    settings
}

async fn tls_client(
    addr: std::net::SocketAddr,
    trusted: &Ca,
    identity: Option<&(String, String)>,
) -> Result<JobWorkerServiceClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&trusted.pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(JobWorkerServiceClient::new(channel))
}

fn poll() -> v1::PollForJobsRequest {
    common::poll(1)
}

#[tokio::test]
async fn server_tls_serves_grpc_and_plaintext_gets_nowhere() {
    let ca = Ca::new("test CA");
    let dir = Dir::new();
    let h = common::start_with(tls_settings(&dir, &ca.server(), None)).await;
    let job = h.emulator.create_custom_job();
    let mut client = tls_client(h.gateway.grpc_addr(), &ca, None).await.unwrap();
    client
        .put_job_success_result(common::success(&job.job_id))
        .await
        .expect("a call over TLS");
    // A plaintext client cannot talk to a TLS port.
    let plaintext = Channel::from_shared(format!("http://{}", h.gateway.grpc_addr()))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let status = JobWorkerServiceClient::new(channel)
            .put_job_success_result(common::success(&job.job_id))
            .await
            .unwrap_err();
        assert_ne!(status.code(), Code::Ok);
    }
    assert_eq!(h.emulator.requests().len(), 1);
}

#[tokio::test]
async fn client_certificates_identify_callers_and_the_policy_decides() {
    let ca = Ca::new("workload CA");
    let dir = Dir::new();
    let h = common::start_with(tls_settings(&dir, &ca.server(), Some(&ca))).await;
    let addr = h.gateway.grpc_addr();

    // A SPIFFE ID in the URI SAN is the identity.
    let ci = ca.client(Some(CI_WORKER), "ignored-cn");
    tls_client(addr, &ca, Some(&ci))
        .await
        .unwrap()
        .poll_for_jobs(poll())
        .await
        .expect("ci's workload certificate");
    // Without one, the subject CN.
    let legacy = ca.client(None, "legacy-runner");
    tls_client(addr, &ca, Some(&legacy))
        .await
        .unwrap()
        .poll_for_jobs(poll())
        .await
        .expect("the CN identity");
    // Another namespace's workload is known, and not allowed.
    let web = ca.client(Some("spiffe://example.org/ns/web/sa/frontend"), "web");
    let status = tls_client(addr, &ca, Some(&web))
        .await
        .unwrap()
        .poll_for_jobs(poll())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.reason, "NOT_AUTHORIZED");
    assert_eq!(
        info.metadata[metadata::IDENTITY],
        "spiffe://example.org/ns/web/sa/frontend"
    );
    // No certificate and no token: unauthenticated.
    let status = tls_client(addr, &ca, None)
        .await
        .unwrap()
        .poll_for_jobs(poll())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let polls_before = h.emulator.requests().len();

    // A certificate from another CA, or an expired one, fails the handshake.
    let stranger = Ca::new("someone else's CA").client(Some(CI_WORKER), "x");
    let expired = ca.issue(|p| {
        p.subject_alt_names = vec![SanType::URI(CI_WORKER.try_into().unwrap())];
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2021, 1, 1);
    });
    for (what, identity) in [("other CA", stranger), ("expired", expired)] {
        let refused = match tls_client(addr, &ca, Some(&identity)).await {
            Err(_) => true,
            Ok(mut client) => client.poll_for_jobs(poll()).await.is_err(),
        };
        assert!(refused, "{what}: a call got through");
    }
    assert_eq!(h.emulator.requests().len(), polls_before);
    assert_eq!(polls_before, 2, "only the two allowed polls reached AWS");
}

#[tokio::test]
async fn certificates_rotate_without_a_restart_or_a_failed_call() {
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let dir = Dir::new();
    let h = common::start_with(tls_settings(&dir, &old_ca.server(), None)).await;
    let addr = h.gateway.grpc_addr();

    // A client keeps calling on its connection while the files change.
    let mut busy = tls_client(addr, &old_ca, None).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let emulator = h.emulator.clone();
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            for _ in 0..2_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let job = emulator.create_custom_job();
                match busy
                    .put_job_success_result(common::success(&job.job_id))
                    .await
                {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // cert-manager renews: new certificate and key.
    let (cert, key) = new_ca.server();
    dir.file("tls.key", &key);
    dir.file("tls.crt", &cert);

    // New connections get the new certificate (within a few reload ticks).
    let mut rotated = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(mut client) = tls_client(addr, &new_ca, None).await
            && client.poll_for_jobs(poll()).await.is_ok()
        {
            rotated = true;
            break;
        }
    }
    assert!(rotated, "the new certificate was never served");
    assert!(
        tls_client(addr, &old_ca, None).await.is_err()
            || tls_client(addr, &old_ca, None)
                .await
                .unwrap()
                .poll_for_jobs(poll())
                .await
                .is_err(),
        "a client that trusts only the old CA still got in"
    );
    // A broken change is refused and the good certificate stays.
    dir.file(
        "tls.crt",
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    tls_client(addr, &new_ca, None)
        .await
        .unwrap()
        .poll_for_jobs(poll())
        .await
        .expect("the last good certificate is still served");

    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(ok.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "a call failed during the rotation"
    );
}
