//! Every validation rule at its boundaries, through real gRPC. An invalid
//! request answers INVALID_ARGUMENT with a BadRequest naming the field by its
//! JSON path, and the emulator (AWS) receives nothing.

mod common;

use codepipeline_gateway::proto::v1::{
    CurrentRevision, ExecutionDetails, PutJobSuccessResultRequest,
    PutThirdPartyJobSuccessResultRequest,
};
use tonic::Code;
use tonic_types::StatusExt;

fn s(n: usize) -> String {
    "x".repeat(n)
}

fn revision() -> CurrentRevision {
    CurrentRevision {
        revision: "r".into(),
        change_identifier: "c".into(),
        created: None,
        revision_summary: String::new(),
    }
}

type Edit = Box<dyn Fn(&mut PutJobSuccessResultRequest)>;

/// (what, edit, the field that must be named, or None when valid)
fn custom_cases() -> Vec<(&'static str, Edit, Option<&'static str>)> {
    fn rev(f: impl Fn(&mut CurrentRevision) + 'static) -> Edit {
        Box::new(move |r| {
            let mut revision = revision();
            f(&mut revision);
            r.current_revision = Some(revision);
        })
    }
    fn details(f: impl Fn(&mut ExecutionDetails) + 'static) -> Edit {
        Box::new(move |r| {
            let mut d = ExecutionDetails::default();
            f(&mut d);
            r.execution_details = Some(d);
        })
    }
    vec![
        (
            "jobId missing",
            Box::new(|r| r.job_id.clear()),
            Some("jobId"),
        ),
        (
            "jobId uppercase",
            Box::new(|r| r.job_id = r.job_id.to_uppercase()),
            Some("jobId"),
        ),
        (
            "jobId with prefix",
            Box::new(|r| r.job_id.insert(0, 'a')),
            Some("jobId"),
        ),
        (
            "jobId with suffix",
            Box::new(|r| r.job_id.push('a')),
            Some("jobId"),
        ),
        (
            "continuationToken 2048",
            Box::new(|r| r.continuation_token = s(2048)),
            None,
        ),
        (
            "continuationToken 2049",
            Box::new(|r| r.continuation_token = s(2049)),
            Some("continuationToken"),
        ),
        (
            "revision missing",
            rev(|v| v.revision.clear()),
            Some("currentRevision.revision"),
        ),
        ("revision 1", rev(|v| v.revision = s(1)), None),
        ("revision 1500", rev(|v| v.revision = s(1500)), None),
        (
            "revision 1501",
            rev(|v| v.revision = s(1501)),
            Some("currentRevision.revision"),
        ),
        (
            "changeIdentifier missing",
            rev(|v| v.change_identifier.clear()),
            Some("currentRevision.changeIdentifier"),
        ),
        (
            "changeIdentifier 100",
            rev(|v| v.change_identifier = s(100)),
            None,
        ),
        (
            "changeIdentifier 101",
            rev(|v| v.change_identifier = s(101)),
            Some("currentRevision.changeIdentifier"),
        ),
        (
            "changeIdentifier 100 multibyte",
            rev(|v| v.change_identifier = "ü".repeat(100)),
            None,
        ),
        (
            "revisionSummary 2048",
            rev(|v| v.revision_summary = s(2048)),
            None,
        ),
        (
            "revisionSummary 2049",
            rev(|v| v.revision_summary = s(2049)),
            Some("currentRevision.revisionSummary"),
        ),
        (
            "created out of range",
            rev(|v| {
                v.created = Some(prost_types::Timestamp {
                    seconds: 253_402_300_800,
                    nanos: 0,
                })
            }),
            Some("currentRevision.created"),
        ),
        (
            "created bad nanos",
            rev(|v| {
                v.created = Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -1,
                })
            }),
            Some("currentRevision.created"),
        ),
        ("summary 2048", details(|d| d.summary = s(2048)), None),
        (
            "summary 2049",
            details(|d| d.summary = s(2049)),
            Some("executionDetails.summary"),
        ),
        (
            "externalExecutionId 1500",
            details(|d| d.external_execution_id = s(1500)),
            None,
        ),
        (
            "externalExecutionId 1501",
            details(|d| d.external_execution_id = s(1501)),
            Some("executionDetails.externalExecutionId"),
        ),
        (
            "percentComplete -1",
            details(|d| d.percent_complete = Some(-1)),
            Some("executionDetails.percentComplete"),
        ),
        (
            "percentComplete 0",
            details(|d| d.percent_complete = Some(0)),
            None,
        ),
        (
            "percentComplete 100",
            details(|d| d.percent_complete = Some(100)),
            None,
        ),
        (
            "percentComplete 101",
            details(|d| d.percent_complete = Some(101)),
            Some("executionDetails.percentComplete"),
        ),
        (
            "output variable key pattern",
            Box::new(|r| {
                r.output_variables.insert("has space".into(), "v".into());
            }),
            Some(r#"outputVariables["has space"]"#),
        ),
        (
            "output variable key all allowed characters",
            Box::new(|r| {
                r.output_variables.insert("aZ09@-_".into(), "v".into());
            }),
            None,
        ),
        (
            "output variables with continuation token",
            Box::new(|r| {
                r.continuation_token = "t".into();
                r.output_variables.insert("k".into(), "v".into());
            }),
            Some("outputVariables"),
        ),
        (
            "output variables at 122880 bytes",
            Box::new(|r| {
                r.output_variables.insert("k".into(), s(122_879));
            }),
            None,
        ),
        (
            "output variables at 122881 bytes",
            Box::new(|r| {
                r.output_variables.insert("k".into(), s(122_880));
            }),
            Some("outputVariables"),
        ),
    ]
}

#[tokio::test]
async fn every_custom_rule_at_its_boundaries() {
    let mut h = common::start().await;
    let mut forwarded = 0;
    for (what, edit, bad_field) in custom_cases() {
        let job = h.emulator.create_custom_job();
        let mut request = PutJobSuccessResultRequest {
            job_id: job.job_id,
            ..Default::default()
        };
        edit(&mut request);
        let before = h.emulator.requests().len();
        let result = h.client.put_job_success_result(request).await;
        match bad_field {
            None => {
                result.unwrap_or_else(|s| panic!("{what}: expected OK, got {s:?}"));
                forwarded += 1;
            }
            Some(field) => {
                let status = result.expect_err(what);
                assert_eq!(status.code(), Code::InvalidArgument, "{what}");
                let bad_request = status.get_details_bad_request().expect("BadRequest");
                let fields: Vec<_> = bad_request
                    .field_violations
                    .iter()
                    .map(|v| v.field.as_str())
                    .collect();
                assert_eq!(fields, [field], "{what}");
                assert!(!bad_request.field_violations[0].description.is_empty());
                assert!(
                    status.message().contains(field),
                    "{what}: {}",
                    status.message()
                );
                assert_eq!(h.emulator.requests().len(), before, "{what}: reached AWS");
            }
        }
    }
    assert_eq!(h.emulator.requests().len(), forwarded);
}

#[tokio::test]
async fn all_violations_are_reported_at_once() {
    let mut h = common::start().await;
    let status = h
        .client
        .put_job_success_result(PutJobSuccessResultRequest {
            job_id: "nope".into(),
            current_revision: Some(CurrentRevision::default()),
            execution_details: Some(ExecutionDetails {
                percent_complete: Some(101),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let fields: Vec<_> = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        [
            "jobId",
            "currentRevision.revision",
            "currentRevision.changeIdentifier",
            "executionDetails.percentComplete"
        ]
    );
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "INVALID_REQUEST");
    assert_eq!(info.metadata["attempts"], "0");
    assert!(h.emulator.requests().is_empty());
}

#[tokio::test]
async fn oversized_output_variables_have_their_own_reason() {
    let mut h = common::start().await;
    let job = h.emulator.create_custom_job();
    let status = h
        .client
        .put_job_success_result(PutJobSuccessResultRequest {
            job_id: job.job_id,
            output_variables: [("A".to_owned(), s(70_000)), ("B".to_owned(), s(70_000))].into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "OUTPUT_VARIABLES_SIZE_EXCEEDED"
    );
    assert!(h.emulator.requests().is_empty());
}

#[tokio::test]
async fn third_party_rules_at_their_boundaries() {
    let mut h = common::start().await;
    let cases: Vec<(&str, usize, usize, Option<&str>)> = vec![
        ("jobId missing", 0, 10, Some("jobId")),
        ("clientToken missing", 10, 0, Some("clientToken")),
        ("jobId 513", 513, 10, Some("jobId")),
        ("clientToken 257", 10, 257, Some("clientToken")),
    ];
    for (what, job_len, token_len, field) in cases {
        let status = h
            .client
            .put_third_party_job_success_result(PutThirdPartyJobSuccessResultRequest {
                job_id: s(job_len),
                client_token: s(token_len),
                ..Default::default()
            })
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}");
        let fields: Vec<_> = status
            .get_details_bad_request()
            .unwrap()
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, [field.unwrap()], "{what}");
    }
    assert!(h.emulator.requests().is_empty());

    // At the maximum lengths the request is valid and reaches AWS, which does
    // not know such a job.
    let status = h
        .client
        .put_third_party_job_success_result(PutThirdPartyJobSuccessResultRequest {
            job_id: s(512),
            client_token: s(256),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(h.emulator.requests().len(), 1);
}

/// Bytes that are no protobuf message at all, sent as real HTTP/2 frames (no
/// gRPC client library would send them): the caller's mistake, so
/// INVALID_ARGUMENT with an ErrorInfo, not INTERNAL, and nothing reaches AWS.
#[tokio::test]
async fn a_body_that_is_not_the_message_is_invalid_argument() {
    let h = common::start().await;
    let addr = h.gateway.grpc_addr();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{addr}/codepipeline_gateway.v1.JobWorkerService/PutJobSuccessResult"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    // One uncompressed gRPC message: flag 0, a 4-byte length, then garbage
    // (0xff starts a varint that never ends).
    let garbage = [0xffu8; 7];
    let mut message = vec![0u8];
    message.extend((garbage.len() as u32).to_be_bytes());
    message.extend(garbage);
    body.send_data(bytes::Bytes::from(message), true).unwrap();
    let response = response.await.unwrap();
    let (parts, mut stream) = response.into_parts();
    let mut fields = parts.headers.clone();
    while let Some(chunk) = stream.data().await {
        chunk.unwrap();
    }
    if let Some(trailers) = stream.trailers().await.unwrap() {
        fields.extend(trailers);
    }
    let status = tonic::Status::from_header_map(&fields).expect("a gRPC status");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("not this method's protobuf message"),
        "{status:?}"
    );
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "UNDECODABLE_REQUEST");
    assert_eq!(info.metadata["attempts"], "0");
    assert!(h.emulator.requests().is_empty());
}
