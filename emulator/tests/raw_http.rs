//! Wire-level tests over raw HTTP/1.1: the AWS protocol edges (signed with the
//! crate's own signer) and the `/_emulator/` control API.

mod common;

use std::time::{Duration, SystemTime};

use codepipeline_emulator::{Fault, FaultKind, JobState};
use common::{Signed, emulator, raw, signed};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn assert_aws_error(r: &common::RawResponse, status: u16, error_type: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.json()["__type"], json!(error_type), "{r:?}");
    assert!(r.json()["message"].is_string(), "{r:?}");
    assert_eq!(
        r.header("x-amzn-requestid").map(str::len),
        Some(36),
        "{r:?}"
    );
    assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.1"));
}

#[tokio::test]
async fn signed_raw_request_succeeds_with_empty_object() {
    let emu = emulator().await;
    let job = emu.create_custom_job();
    let r = signed(
        &emu,
        &json!({"jobId": job.job_id}).to_string(),
        Signed::default(),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "{}");
    assert_eq!(
        r.header("x-amzn-requestid").unwrap(),
        emu.requests()[0].request_id
    );
    assert_eq!(emu.job(&job.job_id).unwrap().state, JobState::Succeeded);
    emu.shutdown().await;
}

#[tokio::test]
async fn model_validation_errors() {
    let emu = emulator().await;
    let job = emu.create_custom_job();

    let r = signed(&emu, r#"{"jobId":"not-a-uuid"}"#, Signed::default()).await;
    assert_aws_error(&r, 400, "ValidationException");
    assert_eq!(
        r.json()["message"],
        json!(
            "1 validation error detected: Value at 'jobId' failed to satisfy constraint: Member must satisfy regular expression pattern: [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
        )
    );

    let body =
        json!({"jobId": job.job_id, "executionDetails": {"percentComplete": 101}}).to_string();
    let r = signed(&emu, &body, Signed::default()).await;
    assert_aws_error(&r, 400, "ValidationException");
    assert!(r.body.contains("executionDetails.percentComplete"));

    let r = signed(&emu, "{}", Signed::default()).await;
    assert_aws_error(&r, 400, "ValidationException");
    assert!(r.body.contains("Value null at 'jobId'"));

    // Wrong JSON type, and not JSON at all.
    let body =
        json!({"jobId": job.job_id, "executionDetails": {"percentComplete": "5"}}).to_string();
    assert_aws_error(
        &signed(&emu, &body, Signed::default()).await,
        400,
        "SerializationException",
    );
    assert_aws_error(
        &signed(&emu, "{not json", Signed::default()).await,
        400,
        "SerializationException",
    );
    // An empty body reads as {} (so the required jobId is missing).
    assert_aws_error(
        &signed(&emu, "", Signed::default()).await,
        400,
        "ValidationException",
    );

    // Unknown members are ignored, as AWS does.
    let body = json!({"jobId": job.job_id, "futureMember": [1, 2]}).to_string();
    assert_eq!(signed(&emu, &body, Signed::default()).await.status, 200);

    let recorded = emu.requests();
    assert_eq!(recorded.len(), 7);
    assert!(recorded.iter().all(|r| r.signature_valid));
    assert_eq!(
        recorded[4].body,
        serde_json::Value::Null,
        "non-JSON body is recorded as null"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn protocol_errors() {
    let emu = emulator().await;
    let job = emu.create_custom_job();
    let body = json!({"jobId": job.job_id}).to_string();

    let r = signed(
        &emu,
        &body,
        Signed {
            target: "CodePipeline_20150709.ListPipelines",
            ..Default::default()
        },
    )
    .await;
    assert_aws_error(&r, 400, "UnknownOperationException");
    let r = signed(
        &emu,
        &body,
        Signed {
            target: "Bogus.PutJobSuccessResult",
            ..Default::default()
        },
    )
    .await;
    assert_aws_error(&r, 400, "UnknownOperationException");
    let r = signed(
        &emu,
        &body,
        Signed {
            content_type: "application/json",
            ..Default::default()
        },
    )
    .await;
    assert_aws_error(&r, 400, "UnknownOperationException");
    assert!(r.body.contains("Content-Type"));

    // Every modelled operation is emulated: the same body is a valid GetJobDetails.
    let r = signed(
        &emu,
        &body,
        Signed {
            target: "CodePipeline_20150709.GetJobDetails",
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["jobDetails"]["id"], json!(job.job_id));

    // Missing authentication, and a stale signature.
    let r = raw(
        &emu,
        "POST",
        "/",
        &[
            ("x-amz-target", "CodePipeline_20150709.PutJobSuccessResult"),
            ("content-type", "application/x-amz-json-1.1"),
        ],
        body.as_bytes(),
    )
    .await;
    assert_aws_error(&r, 403, "MissingAuthenticationTokenException");
    let old = SystemTime::now() - Duration::from_secs(16 * 60);
    let r = signed(
        &emu,
        &body,
        Signed {
            time: old,
            ..Default::default()
        },
    )
    .await;
    assert_aws_error(&r, 403, "InvalidSignatureException");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("Signature expired")
    );
    let r = signed(
        &emu,
        &body,
        Signed {
            secret: "nope",
            ..Default::default()
        },
    )
    .await;
    assert_aws_error(&r, 403, "InvalidSignatureException");

    let ops: Vec<_> = emu.requests().into_iter().map(|r| r.operation).collect();
    assert_eq!(
        ops,
        vec![
            "CodePipeline_20150709.ListPipelines",
            "Bogus.PutJobSuccessResult",
            "PutJobSuccessResult",
            "GetJobDetails",
            "PutJobSuccessResult",
            "PutJobSuccessResult",
            "PutJobSuccessResult"
        ]
    );
    assert_eq!(emu.job(&job.job_id).unwrap().results_received, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let emu = emulator().await;
    let mut stream = tokio::net::TcpStream::connect(emu.local_addr())
        .await
        .unwrap();
    for _ in 0..3 {
        stream
            .write_all(b"GET /_emulator/jobs HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        // Read until this response's body is complete (the connection stays open).
        let mut buf = Vec::new();
        while !buf.ends_with(br#"{"jobs":[]}"#) {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed early");
            buf.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with(r#"{"jobs":[]}"#), "{text}");
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn control_api_jobs() {
    let emu = emulator().await;
    let r = raw(&emu, "POST", "/_emulator/jobs", &[], b"").await;
    assert_eq!(r.status, 201, "{r:?}");
    let custom = r.json();
    assert_eq!(custom["kind"], json!("custom"));
    assert_eq!(custom["state"], json!("Queued"));
    assert!(custom.get("clientToken").is_none());

    let r = raw(
        &emu,
        "POST",
        "/_emulator/jobs",
        &[("content-type", "application/json")],
        br#"{"kind":"thirdParty"}"#,
    )
    .await;
    assert_eq!(r.status, 201);
    let third = r.json();
    assert_eq!(third["kind"], json!("thirdParty"));
    assert_eq!(third["clientId"].as_str().unwrap().len(), 36);
    assert!(!third["clientToken"].as_str().unwrap().is_empty());
    let r = raw(
        &emu,
        "POST",
        "/_emulator/jobs",
        &[],
        br#"{"kind":"custom"}"#,
    )
    .await;
    assert_eq!(r.status, 201);

    // The job is real for the AWS path.
    let third_id = third["jobId"].as_str().unwrap();
    let body =
        json!({"jobId": third_id, "clientToken": third["clientToken"], "continuationToken": "c"})
            .to_string();
    let r = signed(
        &emu,
        &body,
        Signed {
            target: "CodePipeline_20150709.PutThirdPartyJobSuccessResult",
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");

    let r = raw(&emu, "GET", "/_emulator/jobs", &[], b"").await;
    let jobs = r.json()["jobs"].as_array().unwrap().clone();
    // The continuation result also queued a continuation job (the fourth, newest).
    assert_eq!(jobs.len(), 4);
    assert_eq!(jobs[0]["jobId"], custom["jobId"]);
    assert_eq!(jobs[1]["resultsReceived"], json!(1));
    assert_eq!(jobs[1]["continuationToken"], json!("c"));
    assert_eq!(jobs[1]["state"], json!("InProgress"));
    assert_eq!(jobs[3]["continuationOf"], json!(third_id));
    assert_eq!(jobs[3]["state"], json!("Queued"));
    assert_eq!(jobs[3]["data"]["continuationToken"], json!("c"));

    let r = raw(
        &emu,
        "GET",
        &format!("/_emulator/jobs/{third_id}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(
        (r.status, r.json()["jobId"].as_str()),
        (200, Some(third_id))
    );
    let r = raw(&emu, "GET", "/_emulator/jobs/nope", &[], b"").await;
    assert_eq!(r.status, 404);

    for (body, needle) in [
        (&br#"{"kind":"weird"}"#[..], "weird"),
        (b"{oops", "invalid JSON"),
        (br#"{"knd":"custom"}"#, "knd"),
    ] {
        let r = raw(&emu, "POST", "/_emulator/jobs", &[], body).await;
        assert_eq!(r.status, 400);
        assert!(
            r.json()["message"].as_str().unwrap().contains(needle),
            "{r:?}"
        );
    }
    assert_eq!(
        raw(&emu, "PUT", "/_emulator/jobs", &[], b"").await.status,
        405
    );
    assert_eq!(
        raw(&emu, "GET", "/_emulator/nothing", &[], b"")
            .await
            .status,
        404
    );
    // Control requests are not recorded.
    assert_eq!(emu.requests().len(), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn control_api_requests_and_faults() {
    let emu = emulator().await;
    let job = emu.create_custom_job();

    let fault =
        br#"{"operation":"PutJobSuccessResult","kind":"serverError","status":503,"times":1}"#;
    let r = raw(&emu, "POST", "/_emulator/faults", &[], fault).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["kind"], json!("serverError"));
    let r = raw(&emu, "POST", "/_emulator/faults", &[], br#"{"operation":null,"kind":"error","errorType":"AccessDeniedException","message":"nope","times":1}"#).await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = raw(&emu, "GET", "/_emulator/faults", &[], b"").await;
    assert_eq!(r.json()["faults"].as_array().unwrap().len(), 2);

    let body = json!({"jobId": job.job_id}).to_string();
    assert_aws_error(
        &signed(&emu, &body, Signed::default()).await,
        503,
        "ServiceUnavailableException",
    );
    let r = signed(&emu, &body, Signed::default()).await;
    assert_aws_error(&r, 400, "AccessDeniedException");
    assert_eq!(r.json()["message"], json!("nope"));

    raw(
        &emu,
        "POST",
        "/_emulator/faults",
        &[],
        br#"{"kind":"throttle","times":5}"#,
    )
    .await;
    let r = raw(&emu, "DELETE", "/_emulator/faults", &[], b"").await;
    assert_eq!(r.status, 204);
    assert_eq!(r.body, "");
    assert_eq!(signed(&emu, &body, Signed::default()).await.status, 200);

    let r = raw(&emu, "GET", "/_emulator/requests", &[], b"").await;
    let requests = r.json()["requests"].as_array().unwrap().clone();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0]["operation"], json!("PutJobSuccessResult"));
    assert_eq!(requests[0]["status"], json!(503));
    assert_eq!(
        requests[0]["errorType"],
        json!("ServiceUnavailableException")
    );
    assert_eq!(requests[0]["fault"], json!("serverError(503)"));
    assert_eq!(requests[0]["signatureValid"], json!(true));
    assert_eq!(requests[0]["body"]["jobId"], json!(job.job_id));
    assert_eq!(requests[2]["errorType"], json!(null));

    assert_eq!(
        raw(&emu, "DELETE", "/_emulator/requests", &[], b"")
            .await
            .status,
        204
    );
    assert!(emu.requests().is_empty());

    for (body, needle) in [
        (&br#"{"kind":"nope"}"#[..], "unknown fault kind"),
        (br#"{"kind":"delay"}"#, "delayMs"),
        (
            br#"{"kind":"throttle","operation":"PutJobSucessResult"}"#,
            "operation",
        ),
        (b"", "kind"),
    ] {
        let r = raw(&emu, "POST", "/_emulator/faults", &[], body).await;
        assert_eq!(r.status, 400, "{r:?}");
        assert!(
            r.json()["message"].as_str().unwrap().contains(needle),
            "{r:?}"
        );
    }

    // Delay and reset faults through the control API, checked via the Rust API.
    raw(
        &emu,
        "POST",
        "/_emulator/faults",
        &[],
        br#"{"kind":"delay","delayMs":50}"#,
    )
    .await;
    raw(
        &emu,
        "POST",
        "/_emulator/faults",
        &[],
        br#"{"kind":"resetAfterApply"}"#,
    )
    .await;
    emu.inject_fault(Fault::once(FaultKind::Throttle));
    let job2 = emu.create_custom_job();
    let body = json!({"jobId": job2.job_id, "continuationToken": "t"}).to_string();
    assert_eq!(signed(&emu, &body, Signed::default()).await.status, 200);
    // resetAfterApply: the connection closes without a single byte, yet the result applied.
    let r = signed(&emu, &body, Signed::default()).await;
    assert_eq!((r.status, r.body.as_str()), (0, ""));
    assert_eq!(emu.job(&job2.job_id).unwrap().results_received, 2);
    let r = signed(&emu, &body, Signed::default()).await;
    assert_aws_error(&r, 400, "ThrottlingException");
    let recorded: Vec<_> = emu
        .requests()
        .into_iter()
        .map(|r| (r.fault, r.status))
        .collect();
    assert_eq!(
        recorded,
        vec![
            (Some("delay(50ms)".to_owned()), 200),
            (Some("resetAfterApply".to_owned()), 0),
            (Some("throttle".to_owned()), 400)
        ]
    );
    let r = raw(&emu, "GET", "/_emulator/faults", &[], b"").await;
    assert_eq!(r.json(), json!({"faults": []}));
    emu.shutdown().await;
}
