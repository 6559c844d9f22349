//! HTTP responses, shared by the AWS path and the control API.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use serde_json::Value;

pub(crate) type HttpResponse = Response<Full<Bytes>>;

pub(crate) fn json_response(
    status: StatusCode,
    body: &Value,
    content_type: &str,
    request_id: Option<&str>,
) -> HttpResponse {
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type);
    if let Some(id) = request_id {
        builder = builder.header("x-amzn-RequestId", id);
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response parts are valid")
}
