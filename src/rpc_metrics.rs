//! Every RPC observed where it enters and leaves HTTP, so the conventional
//! gRPC server metrics count each one: health, reflection, unknown methods
//! and calls tonic refuses before any handler runs included.
//!
//! The labels come from the methods this server knows, read once from the
//! compiled descriptor sets, never from the path a client sent (any other path
//! counts as `unknown`), so no client can grow the label set.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use prost::Message;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Counts a response: at once if its headers carry the status
/// (trailers-only), otherwise when its trailers pass or its stream ends.
pub fn observe(
    response: http::Response<tonic::body::Body>,
    method: RpcMethod,
    started: Instant,
    metrics: &Arc<Metrics>,
) -> http::Response<tonic::body::Body> {
    if let Some(code) = status_in(response.headers()) {
        metrics.record_handled(method, code, started.elapsed());
        return response;
    }
    response.map(|body| {
        tonic::body::Body::new(Observed {
            inner: body,
            pending: Some(Pending {
                method,
                started,
                metrics: metrics.clone(),
            }),
        })
    })
}

fn status_in(headers: &HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?;
    Some(tonic::Code::from_bytes(value.as_bytes()))
}

/// What is needed to count the call once its status is known.
struct Pending {
    method: RpcMethod,
    started: Instant,
    metrics: Arc<Metrics>,
}

impl Pending {
    fn record(self, code: tonic::Code) {
        self.metrics
            .record_handled(self.method, code, self.started.elapsed());
    }
}

/// A response body that counts its call when the status passes.
struct Observed {
    inner: tonic::body::Body,
    pending: Option<Pending>,
}

impl Body for Observed {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_in)
                    && let Some(pending) = self.pending.take()
                {
                    pending.record(code);
                }
            }
            // A stream that ends without a status is a broken call.
            Poll::Ready(Some(Err(_)) | None) => {
                if let Some(pending) = self.pending.take() {
                    pending.record(tonic::Code::Unknown);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    /// Not ended while the status is unseen: a wrapper that looked ended
    /// would be dropped unpolled and count the call as cancelled.
    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    /// The client went away (or the connection closed) before the status.
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.record(tonic::Code::Cancelled);
        }
    }
}

/// One method's labels: its full service name, its name and its kind in the
/// words grpc-ecosystem's middleware uses (`unary`, `server_stream`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RpcMethod {
    pub service: &'static str,
    pub method: &'static str,
    pub kind: &'static str,
}

impl RpcMethod {
    /// Whether the client sends a stream of messages (its request body stays
    /// open while the call lives).
    pub fn client_streams(&self) -> bool {
        matches!(self.kind, "client_stream" | "bidi_stream")
    }
}

/// What a path that names no method of this server is counted as.
pub const UNKNOWN: RpcMethod = RpcMethod {
    service: "unknown",
    method: "unknown",
    kind: "unknown",
};

/// The labels for a request path `/package.Service/Method`.
pub fn for_path(path: &str) -> RpcMethod {
    let table = TABLE.get_or_init(build);
    match table.get(path) {
        Some(entry) => RpcMethod {
            service: &entry.service,
            method: &entry.method,
            kind: entry.kind,
        },
        None => UNKNOWN,
    }
}

/// Every method of `service`, in a stable order.
pub fn methods_of(service: &str) -> Vec<RpcMethod> {
    let table = TABLE.get_or_init(build);
    let mut methods: Vec<RpcMethod> = table
        .values()
        .filter(|entry| entry.service == service)
        .map(|entry| RpcMethod {
            service: &entry.service,
            method: &entry.method,
            kind: entry.kind,
        })
        .collect();
    methods.sort_by_key(|m| m.method);
    methods
}

struct Entry {
    service: String,
    method: String,
    kind: &'static str,
}

static TABLE: OnceLock<HashMap<String, Entry>> = OnceLock::new();

fn build() -> HashMap<String, Entry> {
    let sets = [
        crate::proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut table = HashMap::new();
    for set in sets {
        let set = prost_types::FileDescriptorSet::decode(set)
            .expect("a descriptor set compiled into the binary decodes");
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = match package.as_str() {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                for method in service.method {
                    let kind = match (method.client_streaming(), method.server_streaming()) {
                        (false, false) => "unary",
                        (false, true) => "server_stream",
                        (true, false) => "client_stream",
                        (true, true) => "bidi_stream",
                    };
                    table.insert(
                        format!("/{service_name}/{}", method.name()),
                        Entry {
                            service: service_name.clone(),
                            method: method.name().to_owned(),
                            kind,
                        },
                    );
                }
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_every_served_method_and_nothing_else() {
        let call = for_path("/codepipeline_gateway.v1.JobWorkerService/PutJobSuccessResult");
        assert_eq!(
            call,
            RpcMethod {
                service: "codepipeline_gateway.v1.JobWorkerService",
                method: "PutJobSuccessResult",
                kind: "unary",
            }
        );
        assert_eq!(
            for_path("/grpc.health.v1.Health/Watch").kind,
            "server_stream"
        );
        assert_eq!(
            for_path("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo").kind,
            "bidi_stream"
        );
        assert_eq!(
            for_path("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo").kind,
            "bidi_stream"
        );
        assert_eq!(
            for_path("/codepipeline_gateway.v1.JobWorkerService/Nope"),
            UNKNOWN
        );
        assert_eq!(for_path("/x"), UNKNOWN);
    }
}
