//! Recording of every request received on the AWS path.

use serde::Serialize;

/// One request received on the AWS path, as the emulator saw and answered it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedRequest {
    /// The `x-amzn-RequestId` of the response (also set when no response was sent).
    pub request_id: String,
    /// Operation name from `X-Amz-Target`, or the raw header value when it is
    /// unknown (empty when the header is missing).
    pub operation: String,
    /// The request body as JSON; `Null` when it is not valid JSON.
    pub body: serde_json::Value,
    /// Whether the SigV4 signature verified.
    pub signature_valid: bool,
    /// HTTP status answered; 0 while the request is still being handled or when
    /// the connection was closed without a response (reset faults).
    pub status: u16,
    /// The `__type` of the error answered, if any.
    pub error_type: Option<String>,
    /// Label of the injected fault applied to this request, if any.
    pub fault: Option<String>,
}

/// Recorded requests in arrival order, addressable by a sequence number so a
/// slow request can be completed after later ones arrived.
#[derive(Default)]
pub(crate) struct RequestLog {
    next_seq: u64,
    entries: Vec<(u64, RecordedRequest)>,
}

impl RequestLog {
    pub fn push(&mut self, request: RecordedRequest) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.push((seq, request));
        seq
    }

    /// Sets the outcome of a recorded request (no-op if it was cleared meanwhile).
    pub fn finish(&mut self, seq: u64, status: u16, error_type: Option<String>) {
        if let Some((_, r)) = self.entries.iter_mut().rev().find(|(s, _)| *s == seq) {
            r.status = status;
            r.error_type = error_type;
        }
    }

    pub fn all(&self) -> Vec<RecordedRequest> {
        self.entries.iter().map(|(_, r)| r.clone()).collect()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}
