//! Helpers shared by the integration tests: a real SDK client pointed at the
//! emulator, and a minimal raw HTTP/1.1 client (optionally SigV4-signed).
#![allow(dead_code)]

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sdk_codepipeline::config::{BehaviorVersion, Region};
use aws_sdk_codepipeline::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::retry::RetryConfig;
use codepipeline_emulator::{
    DEV_ACCESS_KEY_ID, DEV_REGION, DEV_SECRET_ACCESS_KEY, Emulator, EmulatorConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator starts")
}

pub fn client_with(
    emu: &Emulator,
    access_key_id: &str,
    secret: &str,
    session_token: Option<String>,
    region: &str,
) -> aws_sdk_codepipeline::Client {
    let config = aws_sdk_codepipeline::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new(
            access_key_id,
            secret,
            session_token,
            None,
            "emulator-tests",
        ))
        .endpoint_url(emu.endpoint_url())
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_codepipeline::Client::from_conf(config)
}

pub fn client(emu: &Emulator) -> aws_sdk_codepipeline::Client {
    client_with(
        emu,
        DEV_ACCESS_KEY_ID,
        DEV_SECRET_ACCESS_KEY,
        None,
        DEV_REGION,
    )
}

/// The AWS error code of a service error, or a description of a non-service error.
pub fn code<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    err: &SdkError<E, R>,
) -> String {
    match err {
        SdkError::ServiceError(_) => err.code().unwrap_or("<no code>").to_owned(),
        other => format!("<not a service error: {other:?}>"),
    }
}

/// Whether the SDK saw no parsed HTTP response (connection closed without one).
pub fn is_transport_error<E, R>(err: &SdkError<E, R>) -> bool {
    matches!(
        err,
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    )
}

/// A parsed HTTP response; `status` 0 means the connection closed without one.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends one HTTP/1.1 request with `Connection: close` and reads the whole response.
pub async fn raw(
    emu: &Emulator,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let mut stream = TcpStream::connect(emu.local_addr()).await.expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n",
        emu.local_addr(),
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .expect("response within 10s")
        .expect("read response");
    let text = String::from_utf8(buf).expect("UTF-8 response");
    if text.is_empty() {
        // Connection closed without any response (reset faults).
        return RawResponse {
            status: 0,
            headers: Vec::new(),
            body: String::new(),
        };
    }
    let (head, body) = text.split_once("\r\n\r\n").expect("complete response head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    RawResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

pub struct Signed<'a> {
    pub target: &'a str,
    pub content_type: &'a str,
    pub time: SystemTime,
    pub secret: &'a str,
}

impl Default for Signed<'_> {
    fn default() -> Self {
        Signed {
            target: "CodePipeline_20150709.PutJobSuccessResult",
            content_type: "application/x-amz-json-1.1",
            time: SystemTime::now(),
            secret: DEV_SECRET_ACCESS_KEY,
        }
    }
}

/// A raw AWS request signed with the crate's own SigV4 signer.
pub async fn signed(emu: &Emulator, body: &str, opts: Signed<'_>) -> RawResponse {
    let host = emu.local_addr().to_string();
    let date = codepipeline_emulator::sigv4::amz_date(opts.time);
    let headers = [
        ("content-type", opts.content_type),
        ("host", host.as_str()),
        ("x-amz-date", date.as_str()),
        ("x-amz-target", opts.target),
    ];
    let auth = codepipeline_emulator::sigv4::sign(
        "POST",
        "/",
        &headers,
        body.as_bytes(),
        DEV_ACCESS_KEY_ID,
        opts.secret,
        DEV_REGION,
        "codepipeline",
        &date,
    );
    // `raw` adds host itself.
    let mut sent: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| *k != "host")
        .copied()
        .collect();
    sent.push(("authorization", auth.as_str()));
    raw(emu, "POST", "/", &sent, body.as_bytes()).await
}
