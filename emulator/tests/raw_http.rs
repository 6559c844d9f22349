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
    assert_eq!(jobs[1]["state"], json!("Succeeded"));
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
    let job3 = emu.create_custom_job();
    let body = json!({"jobId": job2.job_id, "continuationToken": "t"}).to_string();
    assert_eq!(signed(&emu, &body, Signed::default()).await.status, 200);
    // resetAfterApply: the connection closes without a single byte, yet the result applied.
    let body = json!({"jobId": job3.job_id}).to_string();
    let r = signed(&emu, &body, Signed::default()).await;
    assert_eq!((r.status, r.body.as_str()), (0, ""));
    assert_eq!(emu.job(&job3.job_id).unwrap().results_received, 1);
    assert_eq!(emu.job(&job3.job_id).unwrap().state, JobState::Succeeded);
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
}

async fn call(
    emu: &codepipeline_emulator::Emulator,
    op: &str,
    body: serde_json::Value,
) -> common::RawResponse {
    let target = format!("CodePipeline_20150709.{op}");
    signed(
        emu,
        &body.to_string(),
        Signed {
            target: &target,
            ..Default::default()
        },
    )
    .await
}

#[tokio::test]
async fn job_worker_responses_are_exactly_aws_shaped_on_the_wire() {
    let emu = emulator().await;
    let job = emu.create_custom_job();
    let partner = emu.create_third_party_job();
    let token = partner.client_token.clone().unwrap();
    let custom_type = json!({"category": "Build", "owner": "Custom", "provider": "CpgwDevBuilder", "version": "1"});
    let partner_type = json!({"category": "Deploy", "owner": "ThirdParty", "provider": "CpgwDevPartner", "version": "1"});

    let r = call(&emu, "PollForJobs", json!({"actionTypeId": custom_type})).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.1"));
    let nonce = emu.job(&job.job_id).unwrap().nonce.unwrap();
    assert_eq!(
        r.json(),
        json!({"jobs": [{
            "id": job.job_id,
            "data": emu.job_data(&job.job_id).unwrap(),
            "nonce": nonce,
            "accountId": "123456789012"
        }]})
    );
    let r = call(
        &emu,
        "AcknowledgeJob",
        json!({"jobId": job.job_id, "nonce": nonce}),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "InProgress"})));
    let r = call(
        &emu,
        "AcknowledgeJob",
        json!({"jobId": job.job_id, "nonce": nonce}),
    )
    .await;
    assert_aws_error(&r, 400, "InvalidNonceException");
    let r = call(&emu, "GetJobDetails", json!({"jobId": job.job_id})).await;
    assert_eq!(
        r.json(),
        json!({"jobDetails": {
            "id": job.job_id,
            "data": emu.job_data(&job.job_id).unwrap(),
            "accountId": "123456789012"
        }})
    );
    let r = call(
        &emu,
        "PollForJobs",
        json!({"actionTypeId": custom_type, "maxBatchSize": 5}),
    )
    .await;
    assert_eq!(r.json(), json!({"jobs": []}));

    // Partner: details before a poll have no nonce member at all.
    let details = json!({"jobId": partner.job_id, "clientToken": token});
    let r = call(&emu, "GetThirdPartyJobDetails", details.clone()).await;
    assert_eq!(
        r.json(),
        json!({"jobDetails": {"id": partner.job_id, "data": emu.job_data(&partner.job_id).unwrap()}})
    );
    let r = call(
        &emu,
        "PollForThirdPartyJobs",
        json!({"actionTypeId": partner_type}),
    )
    .await;
    assert_eq!(
        r.json(),
        json!({"jobs": [{"clientId": partner.client_id, "jobId": partner.job_id}]})
    );
    let nonce = emu.job(&partner.job_id).unwrap().nonce.unwrap();
    let r = call(&emu, "GetThirdPartyJobDetails", details).await;
    assert_eq!(r.json()["jobDetails"]["nonce"], json!(nonce));
    let r = call(
        &emu,
        "AcknowledgeThirdPartyJob",
        json!({"jobId": partner.job_id, "nonce": nonce, "clientToken": token}),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "InProgress"})));
    let r = call(
        &emu,
        "PutThirdPartyJobFailureResult",
        json!({"jobId": partner.job_id, "clientToken": token, "failureDetails": {"type": "JobFailed", "message": "m"}}),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({})));

    // Model validation still comes first: an unknown failure type, a missing nonce.
    let r = call(
        &emu,
        "PutJobFailureResult",
        json!({"jobId": job.job_id, "failureDetails": {"type": "Oops", "message": "m"}}),
    )
    .await;
    assert_aws_error(&r, 400, "ValidationException");
    let r = call(&emu, "AcknowledgeJob", json!({"jobId": job.job_id})).await;
    assert_aws_error(&r, 400, "ValidationException");
    assert_eq!(emu.job(&job.job_id).unwrap().state, JobState::InProgress);
}

#[tokio::test]
async fn control_api_action_types_and_job_details() {
    let emu = emulator().await;
    let post = |path: &'static str, body: serde_json::Value| {
        let emu = emu.clone();
        async move { raw(&emu, "POST", path, &[], body.to_string().as_bytes()).await }
    };

    // Action types.
    let tester =
        json!({"category": "Test", "owner": "Custom", "provider": "Tester", "version": "2"});
    let r = post("/_emulator/action-types", tester.clone()).await;
    assert_eq!((r.status, r.json()), (201, tester.clone()));
    let r = post("/_emulator/action-types", tester.clone()).await;
    assert_eq!(r.status, 201, "registering twice is fine");
    let r = raw(&emu, "GET", "/_emulator/action-types", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["actionTypes"],
        json!([
            {"category": "Build", "owner": "Custom", "provider": "CpgwDevBuilder", "version": "1"},
            {"category": "Deploy", "owner": "ThirdParty", "provider": "CpgwDevPartner", "version": "1"},
            tester
        ])
    );
    for (body, needle) in [
        (
            json!({"category": "Test", "owner": "Custom", "provider": "X"}),
            "version",
        ),
        (
            json!({"category": "Test", "owner": "Custom", "provider": "X", "version": "1", "extra": 1}),
            "extra",
        ),
        (
            json!({"category": "Cook", "owner": "Custom", "provider": "X", "version": "1"}),
            "actionTypeId.category",
        ),
        (
            json!({"category": "Test", "owner": "Custom", "provider": "has space", "version": "1"}),
            "actionTypeId.provider",
        ),
    ] {
        let r = post("/_emulator/action-types", body).await;
        assert_eq!(r.status, 400, "{r:?}");
        assert!(
            r.json()["message"].as_str().unwrap().contains(needle),
            "{r:?}"
        );
    }
    let r = raw(&emu, "POST", "/_emulator/action-types", &[], b"").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        raw(&emu, "DELETE", "/_emulator/action-types", &[], b"")
            .await
            .status,
        405
    );

    // Rich job creation: the kind follows the action type's owner when omitted.
    let partner_type =
        json!({"category": "Deploy", "owner": "ThirdParty", "provider": "Shipper", "version": "1"});
    let r = post(
        "/_emulator/jobs",
        json!({"actionTypeId": partner_type, "configuration": {"Env": "prod"}, "pipelineName": "ship-it"}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let job = r.json();
    let id = job["jobId"].as_str().unwrap().to_owned();
    assert_eq!(job["kind"], json!("thirdParty"));
    assert_eq!(job["state"], json!("Queued"));
    assert_eq!(job["actionTypeId"], partner_type);
    assert_eq!(job["nonce"], json!(null));
    assert_eq!(job["failure"], json!(null));
    assert_eq!(job["continuationOf"], json!(null));
    assert!(job["clientToken"].is_string());
    assert_eq!(job["data"], emu.job_data(&id).unwrap());
    assert_eq!(
        job["data"]["actionConfiguration"],
        json!({"configuration": {"Env": "prod"}})
    );
    assert_eq!(
        job["data"]["pipelineContext"]["pipelineName"],
        json!("ship-it")
    );
    assert_eq!(
        job["data"]["pipelineContext"]["pipelineArn"],
        json!("arn:aws:codepipeline:us-east-1:123456789012:ship-it")
    );
    // The new type was registered by creating the job.
    let r = raw(&emu, "GET", "/_emulator/action-types", &[], b"").await;
    assert_eq!(r.json()["actionTypes"][3], partner_type);

    // Poll and fail it through AWS; the control API shows nonce, state and failure.
    let r = call(
        &emu,
        "PollForThirdPartyJobs",
        json!({"actionTypeId": partner_type}),
    )
    .await;
    assert_eq!(r.json()["jobs"][0]["jobId"], json!(id));
    let r = raw(&emu, "GET", &format!("/_emulator/jobs/{id}"), &[], b"").await;
    let shown = r.json();
    assert_eq!(shown["state"], json!("Dispatched"));
    assert_eq!(shown["nonce"], json!(emu.job(&id).unwrap().nonce.unwrap()));
    let r = call(
        &emu,
        "PutThirdPartyJobFailureResult",
        json!({"jobId": id, "clientToken": job["clientToken"], "failureDetails": {"type": "JobFailed", "message": "boom", "externalExecutionId": "e-1"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = raw(&emu, "GET", &format!("/_emulator/jobs/{id}"), &[], b"").await;
    assert_eq!(r.json()["state"], json!("Failed"));
    assert_eq!(
        r.json()["failure"],
        json!({"type": "JobFailed", "message": "boom", "externalExecutionId": "e-1"})
    );

    // A continuation job shows what it continues.
    let r = post("/_emulator/jobs", json!({"kind": "custom"})).await;
    let custom_id = r.json()["jobId"].as_str().unwrap().to_owned();
    let r = call(
        &emu,
        "PutJobSuccessResult",
        json!({"jobId": custom_id, "continuationToken": "next"}),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = raw(&emu, "GET", "/_emulator/jobs", &[], b"").await;
    let jobs = r.json()["jobs"].as_array().unwrap().clone();
    let cont = jobs.last().unwrap();
    assert_eq!(cont["continuationOf"], json!(custom_id));
    assert_eq!(cont["data"]["continuationToken"], json!("next"));
    assert_eq!(cont["state"], json!("Queued"));

    for (body, needle) in [
        (
            json!({"kind": "custom", "actionTypeId": partner_type}),
            "owner 'Custom'",
        ),
        (
            json!({"actionTypeId": {"category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"}}),
            "owner 'Custom'",
        ),
        (json!({"configuration": {"k": ""}}), "configuration"),
        (json!({"configuration": {"k": 5}}), "invalid JSON"),
        (json!({"pipelineName": "bad name"}), "pipelineName"),
        (json!({"actionTypeId": {"category": "Build"}}), "owner"),
    ] {
        let r = post("/_emulator/jobs", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert!(
            r.json()["message"].as_str().unwrap().contains(needle),
            "{body}: {r:?}"
        );
    }
}
