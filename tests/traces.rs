//! OpenTelemetry traces, end to end: the gateway binary, configured only by
//! the standard OTEL_* variables, exports over OTLP/gRPC to a collector
//! written here; the spans of a call that needed a retry form the expected
//! tree under the worker's own traceparent, and carry no request value.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

mod common;

use codepipeline_emulator::{Emulator, EmulatorConfig, Fault, FaultKind};
use codepipeline_gateway::proto::v1::{
    PutJobSuccessResultRequest, job_worker_service_client::JobWorkerServiceClient,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind},
};

/// An OTLP trace collector that keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    }
}

fn every_value(attributes: &[KeyValue]) -> Vec<String> {
    attributes
        .iter()
        .map(|KeyValue { value, .. }| {
            let value: Option<&AnyValue> = value.as_ref();
            text(value.and_then(|v| v.value.as_ref()))
        })
        .collect()
}

#[tokio::test]
async fn a_call_and_its_attempts_are_spans_under_the_workers_trace() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);

    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let mut args = common::SERVE_ON_LOOPBACK.to_vec();
    args.extend(["--shutdown-delay", "0s"]);
    let mut child = common::gateway_command(&emulator, &args)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{collector_addr}"),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .spawn()
        .unwrap();
    let (addr, mut lines) = common::started(&mut child).await;

    // The first attempt meets a 503; the retry succeeds.
    let job = emulator.create_custom_job();
    emulator.inject_fault(Fault::for_operation(
        "PutJobSuccessResult",
        FaultKind::ServerError(503),
        1,
    ));
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let mut request = tonic::Request::new(PutJobSuccessResultRequest {
        job_id: job.job_id.clone(),
        output_variables: [("secret".to_owned(), "s3cr3t-value".to_owned())].into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
    );
    let mut client = JobWorkerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    client.put_job_success_result(request).await.unwrap();

    let spans = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let spans = collector.0.lock().unwrap().clone();
            if spans.len() >= 3 {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the spans are exported within 20 s");

    let server: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(server.len(), 1, "{spans:#?}");
    let server = server[0];
    assert_eq!(server.name, "PutJobSuccessResult");
    assert_eq!(hex(&server.trace_id), trace_id, "joined the worker's trace");
    assert_eq!(hex(&server.parent_span_id), parent_id);
    assert_eq!(text(attribute(server, "rpc.system")), "grpc");
    assert_eq!(
        text(attribute(server, "rpc.service")),
        "codepipeline_gateway.v1.JobWorkerService"
    );
    assert_eq!(text(attribute(server, "rpc.grpc.status_code")), "0");
    assert_eq!(text(attribute(server, "job_id")), job.job_id);
    assert_eq!(text(attribute(server, "cpgw.target")), "default");

    let mut attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    attempts.sort_by_key(|s| text(attribute(s, "aws.attempt")));
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    for (attempt, outcome) in attempts.iter().zip(["server_error", "ok"]) {
        assert_eq!(attempt.name, "PutJobSuccessResult");
        assert_eq!(attempt.trace_id, server.trace_id);
        assert_eq!(
            attempt.parent_span_id, server.span_id,
            "a child of the call"
        );
        assert_eq!(text(attribute(attempt, "aws.outcome")), outcome);
        assert_eq!(text(attribute(attempt, "rpc.service")), "CodePipeline");
    }
    assert_eq!(text(attribute(attempts[0], "aws.attempt")), "1");
    assert_eq!(text(attribute(attempts[1], "aws.attempt")), "2");
    assert!(!text(attribute(attempts[1], "aws.request_id")).is_empty());

    for span in &spans {
        for value in every_value(&span.attributes) {
            assert!(
                !value.contains("s3cr3t"),
                "a request value in a span: {span:?}"
            );
        }
    }
    child.kill().await.unwrap();
    let mut logged = Vec::new();
    while let Some(line) = lines.recv().await {
        logged.push(line);
    }
    assert!(
        logged.iter().any(|l| l.contains("call finished")),
        "{logged:?}"
    );
    // The trace spans stay out of the log lines.
    assert!(
        !logged
            .iter()
            .any(|l| l.contains("\"spans\"") || l.contains("cpgw_trace")),
        "{logged:?}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
