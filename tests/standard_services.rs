//! Health, reflection (v1 and v1alpha) and the metrics endpoint answer.

mod common;

use codepipeline_gateway::proto::{JOB_WORKER_SERVICE_NAME, v1::PutJobSuccessResultRequest};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

async fn channel(h: &common::Harness) -> Channel {
    Channel::from_shared(format!("http://{}", h.gateway.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn health_reports_serving_overall_and_per_service() {
    let h = common::start().await;
    let mut health = HealthClient::new(channel(&h).await);
    for service in ["", JOB_WORKER_SERVICE_NAME] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn reflection_v1_lists_and_describes_the_services() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let h = common::start().await;
    let mut client = ServerReflectionClient::new(channel(&h).await);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                JOB_WORKER_SERVICE_NAME.into(),
            )),
        },
        // So that grpcurl can decode error details instead of printing bytes.
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "google.rpc.BadRequest".into(),
            )),
        },
    ];
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&JOB_WORKER_SERVICE_NAME.to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected file descriptors")
    };
    assert!(!files.file_descriptor_proto.is_empty());
    let Some(MessageResponse::FileDescriptorResponse(details)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected the google.rpc error details")
    };
    assert!(!details.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn reflection_v1alpha_answers_for_older_grpcurl() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let h = common::start().await;
    let mut client = ServerReflectionClient::new(channel(&h).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list")
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == JOB_WORKER_SERVICE_NAME)
    );
}

#[tokio::test]
async fn metrics_count_every_rpc_under_the_conventional_names() {
    let mut h = common::start().await;
    let job = h.emulator.create_custom_job();
    h.client
        .put_job_success_result(PutJobSuccessResultRequest {
            job_id: job.job_id,
            ..Default::default()
        })
        .await
        .unwrap();
    h.client
        .put_job_success_result(PutJobSuccessResultRequest {
            job_id: "bad".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    // Calls no handler of ours sees: health, and a method this server lacks.
    HealthClient::new(channel(&h).await)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    let mut raw = tonic::client::Grpc::new(channel(&h).await);
    raw.ready().await.unwrap();
    let unknown = raw
        .unary(
            tonic::Request::new(()),
            http::uri::PathAndQuery::from_static("/codepipeline_gateway.v1.JobWorkerService/Nope"),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::Unimplemented);

    let text = common::metrics(&h).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let put = r#"grpc_type="unary",grpc_service="codepipeline_gateway.v1.JobWorkerService",grpc_method="PutJobSuccessResult""#;
    for line in [
        format!("grpc_server_started_total{{{put}}} 2"),
        format!(r#"grpc_server_handled_total{{{put},grpc_code="OK"}} 1"#),
        format!(r#"grpc_server_handled_total{{{put},grpc_code="InvalidArgument"}} 1"#),
        format!("grpc_server_handling_seconds_count{{{put}}} 2"),
        r#"grpc_server_handled_total{grpc_type="unary",grpc_service="grpc.health.v1.Health",grpc_method="Check",grpc_code="OK"} 1"#.into(),
        // The client's path is not a label: it counts as unknown.
        r#"grpc_server_handled_total{grpc_type="unknown",grpc_service="unknown",grpc_method="unknown",grpc_code="Unimplemented"} 1"#.into(),
        // Only the valid report reached AWS, and waited for no token.
        r#"cpgw_aws_attempts_total{method="PutJobSuccessResult",outcome="ok",target="default"} 1"#.into(),
        r#"cpgw_rate_limit_wait_seconds_count{method="PutJobSuccessResult"} 1"#.into(),
        r#"cpgw_rate_limit_wait_seconds_bucket{le="0.001",method="PutJobSuccessResult"} 1"#.into(),
        "cpgw_calls_in_flight 0".into(),
        format!(
            r#"cpgw_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(text.contains(&line), "no {line} in\n{text}");
    }
    assert!(!text.contains("Nope"), "{text}");
    for process in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(text.contains(process), "no {process} in\n{text}");
    }
}

#[tokio::test]
async fn reflection_can_be_switched_off_and_health_stays() {
    use tonic_reflection::pb::{v1, v1alpha};
    let mut settings = common::settings();
    settings.reflection = false;
    let h = common::start_with(settings).await;
    let list = || v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let status = v1::server_reflection_client::ServerReflectionClient::new(channel(&h).await)
        .server_reflection_info(tokio_stream::iter(vec![list()]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let list_alpha = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let status = v1alpha::server_reflection_client::ServerReflectionClient::new(channel(&h).await)
        .server_reflection_info(tokio_stream::iter(vec![list_alpha]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    HealthClient::new(channel(&h).await)
        .check(HealthCheckRequest::default())
        .await
        .expect("health is always served");
}

/// The chart's alerts and dashboard, and the README's metrics table, name
/// only metrics the gateway serves: a renamed metric fails here, not in a
/// platform team's silent dashboard.
#[tokio::test]
async fn the_chart_and_the_readme_name_only_metrics_the_gateway_serves() {
    let h = common::start().await;
    let text = common::metrics(&h).await;
    let mut served = std::collections::BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["", "_bucket", "_count", "_sum"],
                "info" => &["_info"],
                _ => &[""],
            };
            served.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
        }
    }
    assert!(served.contains("grpc_server_handled_total"), "{served:?}");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let name = regex::Regex::new(r"\b(?:grpc_server|cpgw|process)_[a-z_]+\b").unwrap();
    for file in [
        "helm/codepipeline-gateway/dashboards/codepipeline-gateway.json",
        "helm/codepipeline-gateway/templates/prometheusrule.yaml",
        "README.md",
    ] {
        let content = std::fs::read_to_string(root.join(file)).unwrap();
        let used: std::collections::BTreeSet<&str> =
            name.find_iter(&content).map(|m| m.as_str()).collect();
        assert!(used.len() >= 3, "{file}: {used:?}");
        let unknown: Vec<_> = used
            .into_iter()
            .filter(|used| !served.contains(*used))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} names {unknown:?}; served: {served:?}"
        );
    }
}
