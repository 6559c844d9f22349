//! Bounded resources, over real connections: what one careless or hostile
//! client can hold is limited (streams per connection, calls in flight,
//! attempts to AWS, slow bodies, silent or dead connections, reset floods),
//! and a call refused by a limit says so and reaches no one.

mod common;

use std::time::Duration;

use codepipeline_emulator::{Fault, FaultKind};
use codepipeline_gateway::{proto::v1::PutJobSuccessResultRequest, server::MAX_REQUEST_BYTES};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};
use tonic::Code;
use tonic_types::StatusExt;

/// Waits for the gateway to close a raw TCP connection, reading (and
/// discarding) whatever it sends; `None` if it is still open after `limit`.
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(started + limit, tcp.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
fn preface() -> Vec<u8> {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend([0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    bytes
}

#[tokio::test]
async fn each_connection_is_told_its_stream_limit() {
    let mut settings = common::settings();
    settings.connections.max_concurrent_streams = 3;
    let h = common::start_with(settings).await;
    let tcp = TcpStream::connect(h.gateway.grpc_addr()).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let mut connection = connection;
    // The server's SETTINGS arrive with the first exchange.
    let client = tokio::select! {
        ready = client.ready() => ready.unwrap(),
        _ = &mut connection => panic!("the connection closed"),
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), &mut connection).await;
    assert_eq!(connection.max_concurrent_send_streams(), 3);
    drop(client);
}

#[tokio::test]
async fn calls_beyond_the_in_flight_cap_are_shed_at_once() {
    let mut settings = common::settings();
    settings.max_calls_in_flight = 2;
    let h = common::start_with(settings).await;
    h.emulator.inject_fault(Fault::for_operation(
        "PutJobSuccessResult",
        FaultKind::Delay(Duration::from_millis(1500)),
        2,
    ));
    let held: Vec<_> = (0..2).map(|_| common::report_in_background(&h)).collect();
    // Both held calls are in flight once AWS has seen them.
    common::until_received(&h.emulator, "PutJobSuccessResult", 2).await;
    let shed_job = h.emulator.create_custom_job();
    let asked = Instant::now();
    let status = h
        .client
        .clone()
        .put_job_success_result(common::success(&shed_job.job_id))
        .await
        .expect_err("a third call is shed");
    let answered_in = asked.elapsed();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "OVERLOADED");
    assert_eq!(info.metadata["attempts"], "0");
    assert!(!info.metadata.contains_key("outcomeUnknown"));
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert!(retry.retry_delay.is_some_and(|d| d > Duration::ZERO));
    // Refused at once, not after the held calls: they take 1.5 s.
    assert!(answered_in < Duration::from_millis(1000), "{answered_in:?}");
    for call in held {
        call.await.unwrap().expect("the held calls finish");
    }
    assert_eq!(
        common::received(&h.emulator, "PutJobSuccessResult").len(),
        2,
        "the shed call never reached AWS"
    );
    let metrics = common::metrics(&h).await;
    assert!(
        metrics.contains("cpgw_shed_calls_total{method=\"PutJobSuccessResult\"} 1"),
        "{metrics}"
    );
    // Capacity is back once the held calls are done.
    h.client
        .clone()
        .put_job_success_result(common::success(&shed_job.job_id))
        .await
        .expect("served again");
}

#[tokio::test]
async fn attempts_beyond_the_upstream_cap_wait_their_turn() {
    let mut settings = common::settings();
    settings.upstream_concurrency = 1;
    let h = common::start_with(settings).await;
    let delay = Duration::from_millis(300);
    h.emulator.inject_fault(Fault::for_operation(
        "PutJobSuccessResult",
        FaultKind::Delay(delay),
        3,
    ));
    let started = Instant::now();
    let calls: Vec<_> = (0..3).map(|_| common::report_in_background(&h)).collect();
    for call in calls {
        call.await.unwrap().expect("every call succeeds in turn");
    }
    // One attempt at a time: three delayed attempts cannot overlap.
    assert!(started.elapsed() >= delay * 3, "{:?}", started.elapsed());

    // A call whose deadline passes while it waits was never sent: its
    // outcome is known.
    h.emulator.inject_fault(Fault::for_operation(
        "PutJobSuccessResult",
        FaultKind::Delay(Duration::from_millis(1500)),
        1,
    ));
    let seen = common::received(&h.emulator, "PutJobSuccessResult").len();
    let held = common::report_in_background(&h);
    common::until_received(&h.emulator, "PutJobSuccessResult", seen + 1).await;
    let waiting_job = h.emulator.create_custom_job();
    let mut request = tonic::Request::new(common::success(&waiting_job.job_id));
    request.set_timeout(Duration::from_millis(400));
    let status = h
        .client
        .clone()
        .put_job_success_result(request)
        .await
        .expect_err("its deadline passes while it waits");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.metadata["attempts"], "0");
    assert!(
        !info.metadata.contains_key("outcomeUnknown"),
        "nothing was sent: {info:?}"
    );
    held.await.unwrap().expect("the held call finishes");
    let reports = common::received(&h.emulator, "PutJobSuccessResult");
    assert!(
        reports
            .iter()
            .all(|r| r.body["jobId"] != waiting_job.job_id.as_str())
    );
}

#[tokio::test]
async fn a_body_that_never_arrives_is_answered_after_the_arrival_timeout() {
    let mut settings = common::settings();
    settings.connections.request_arrival_timeout = Duration::from_millis(300);
    let h = common::start_with(settings).await;
    let (mut client, _connection) = common::raw_http2(&h.gateway).await;
    // Headers with a 60 s deadline, and then nothing.
    let mut request = common::grpc_request(&h.gateway, "PutJobSuccessResult");
    request
        .headers_mut()
        .insert("grpc-timeout", "60S".parse().unwrap());
    let started = Instant::now();
    let (response, _body) = client.send_request(request, false).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), common::grpc_status(response))
        .await
        .expect("answered well before the caller's deadline");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("--request-arrival-timeout"),
        "{status:?}"
    );
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "REQUEST_ARRIVAL_TIMEOUT");
    assert!(h.emulator.requests().is_empty());
    let metrics = common::metrics(&h).await;
    assert!(metrics.contains("cpgw_slow_requests_total 1"), "{metrics}");
}

#[tokio::test]
async fn the_default_deadline_counts_from_the_headers() {
    let mut settings = common::settings();
    settings.default_deadline = Duration::from_millis(300);
    let h = common::start_with(settings).await;
    let (mut client, _connection) = common::raw_http2(&h.gateway).await;
    let job = h.emulator.create_custom_job();
    let request = common::grpc_request(&h.gateway, "PutJobSuccessResult");
    let (response, mut body) = client.send_request(request, false).unwrap();
    // The body comes after the default deadline has passed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    body.send_data(
        common::grpc_frame(&PutJobSuccessResultRequest {
            job_id: job.job_id,
            ..Default::default()
        }),
        true,
    )
    .unwrap();
    let status = common::grpc_status(response).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        h.emulator.requests().is_empty(),
        "a call past its deadline is not sent"
    );
}

#[tokio::test]
async fn connections_that_never_speak_http2_are_closed() {
    let mut settings = common::settings();
    settings.connections.handshake_timeout = Duration::from_millis(300);
    let h = common::start_with(settings).await;
    let limit = Duration::from_secs(10);

    let mut silent = TcpStream::connect(h.gateway.grpc_addr()).await.unwrap();
    let mut half = TcpStream::connect(h.gateway.grpc_addr()).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let closed = closed_within(&mut silent, limit).await.expect("closed");
    assert!(closed >= Duration::from_millis(250), "{closed:?}");
    closed_within(&mut half, limit)
        .await
        .expect("half a preface is not enough");

    // A client that did speak HTTP/2 is not subject to it.
    let mut client = common::connect(&h.gateway).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let job = h.emulator.create_custom_job();
    client
        .put_job_success_result(common::success(&job.job_id))
        .await
        .expect("served");
    let metrics = common::metrics(&h).await;
    assert!(
        metrics.contains("cpgw_connections_closed_total{reason=\"handshake_timeout\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn idle_connections_get_a_goaway_but_busy_ones_do_not() {
    let mut settings = common::settings();
    settings.connections.idle_timeout = Some(Duration::from_millis(300));
    let h = common::start_with(settings).await;

    // A call longer than the idle timeout keeps its connection.
    h.emulator.inject_fault(Fault::for_operation(
        "PutJobSuccessResult",
        FaultKind::Delay(Duration::from_millis(800)),
        1,
    ));
    let (mut client, connection) = common::raw_http2(&h.gateway).await;
    let job = h.emulator.create_custom_job();
    let (response, mut body) = client
        .send_request(
            common::grpc_request(&h.gateway, "PutJobSuccessResult"),
            false,
        )
        .unwrap();
    body.send_data(common::grpc_frame(&common::success(&job.job_id)), true)
        .unwrap();
    let status = common::grpc_status(response).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");

    // Then, idle, it is sent a GOAWAY and closes cleanly.
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("an idle connection is closed")
        .unwrap();
    assert!(ended.is_ok(), "closed with GOAWAY(NO_ERROR): {ended:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    let metrics = common::metrics(&h).await;
    assert!(
        metrics.contains("cpgw_connections_closed_total{reason=\"idle\"}"),
        "{metrics}"
    );

    // A tonic channel reconnects by itself after an idle close.
    let mut tonic_client = common::connect(&h.gateway).await;
    for _ in 0..2 {
        let job = h.emulator.create_custom_job();
        tonic_client
            .put_job_success_result(common::success(&job.job_id))
            .await
            .expect("served, reconnecting when needed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn peers_that_stop_answering_pings_are_dropped() {
    let mut settings = common::settings();
    settings.connections.idle_timeout = None;
    settings.connections.keepalive_interval = Some(Duration::from_millis(200));
    settings.connections.keepalive_timeout = Duration::from_millis(200);
    let h = common::start_with(settings).await;
    // Speaks HTTP/2, then never answers anything (a peer that vanished).
    let mut dead = TcpStream::connect(h.gateway.grpc_addr()).await.unwrap();
    dead.write_all(&preface()).await.unwrap();
    closed_within(&mut dead, Duration::from_secs(10))
        .await
        .expect("an unanswered PING closes the connection");

    // Without keepalive the same peer is kept: the bound above is the PING.
    let mut settings = common::settings();
    settings.connections.idle_timeout = None;
    settings.connections.keepalive_interval = None;
    let h = common::start_with(settings).await;
    let mut quiet = TcpStream::connect(h.gateway.grpc_addr()).await.unwrap();
    quiet.write_all(&preface()).await.unwrap();
    assert_eq!(
        closed_within(&mut quiet, Duration::from_secs(1)).await,
        None
    );
}

#[tokio::test]
async fn a_rapid_reset_flood_reaches_no_one_and_leaves_others_served() {
    let h = common::start().await;
    let (mut client, connection) = common::raw_http2(&h.gateway).await;
    let job = h.emulator.create_custom_job();
    // Open streams and reset each at once, as fast as the client can.
    let mut sent = 0;
    for _ in 0..5_000 {
        let Ok(ready) = client.clone().ready().await else {
            break;
        };
        client = ready;
        let Ok((_response, mut body)) = client.send_request(
            common::grpc_request(&h.gateway, "PutJobSuccessResult"),
            false,
        ) else {
            break;
        };
        body.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    assert!(sent > 0);
    // Whatever the flood did to its own connection, another client is served.
    let job_id = job.job_id.clone();
    let mut other = common::connect(&h.gateway).await;
    other
        .put_job_success_result(common::success(&job_id))
        .await
        .expect("served");
    assert_eq!(
        common::received(&h.emulator, "PutJobSuccessResult").len(),
        1,
        "no reset stream reached AWS"
    );
    // The flood's own connection is closed as a rapid-reset attack.
    drop(client);
    let ended = tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the flooding connection is closed")
        .unwrap()
        .expect_err("closed by the gateway");
    assert_eq!(
        ended.reason(),
        Some(h2::Reason::ENHANCE_YOUR_CALM),
        "{ended:?}"
    );
}

#[tokio::test]
async fn compressed_calls_are_served_and_answered_compressed_when_asked() {
    use tonic::codec::CompressionEncoding::{Deflate, Gzip};
    let h = common::start().await;
    for encoding in [Gzip, Deflate] {
        let job = h.emulator.create_custom_job();
        let mut client = h
            .client
            .clone()
            .send_compressed(encoding)
            .accept_compressed(encoding);
        let details = client
            .get_job_details(codepipeline_gateway::proto::v1::GetJobDetailsRequest {
                target: String::new(),
                job_id: job.job_id.clone(),
            })
            .await
            .unwrap();
        let said = details.metadata().get("grpc-encoding").unwrap();
        assert_eq!(said, encoding.to_string().as_str());
        assert_eq!(details.into_inner().job_details.unwrap().id, job.job_id);
        client
            .put_job_success_result(common::success(&job.job_id))
            .await
            .unwrap();
    }
    // A client that does not ask gets no compression.
    let job = h.emulator.create_custom_job();
    let plain = h
        .client
        .clone()
        .get_job_details(codepipeline_gateway::proto::v1::GetJobDetailsRequest {
            target: String::new(),
            job_id: job.job_id,
        })
        .await
        .unwrap();
    assert!(plain.metadata().get("grpc-encoding").is_none());
}

/// A small compressed request that expands to megabytes: it cannot grow past
/// the message size limit while it is decompressed, and what fits is still
/// validated before anything reaches AWS.
#[tokio::test]
async fn a_compression_bomb_stops_at_the_message_size_limit() {
    use tonic::codec::CompressionEncoding::Gzip;
    let h = common::start().await;
    let job = h.emulator.create_custom_job();
    let mut client = h.client.clone().send_compressed(Gzip);
    let bomb = |bytes: usize| PutJobSuccessResultRequest {
        job_id: job.job_id.clone(),
        output_variables: [("v".to_owned(), "0".repeat(bytes))].into(),
        ..Default::default()
    };
    let over = client
        .put_job_success_result(bomb(8 << 20))
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
    assert!(over.message().contains("size limit"), "{over:?}");
    // Inflated, it fits the limit: the validator names the field.
    let under = client
        .put_job_success_result(bomb(MAX_REQUEST_BYTES - 6 * 1024))
        .await
        .unwrap_err();
    assert_eq!(under.code(), Code::InvalidArgument, "{under:?}");
    assert!(under.message().contains("outputVariables"), "{under:?}");
    // Uncompressed and over the limit: refused from its length prefix.
    let plain = h
        .client
        .clone()
        .put_job_success_result(bomb(MAX_REQUEST_BYTES))
        .await
        .unwrap_err();
    assert_eq!(plain.code(), Code::OutOfRange, "{plain:?}");
    assert!(
        h.emulator.requests_for("PutJobSuccessResult").is_empty(),
        "nothing reached AWS"
    );
}
