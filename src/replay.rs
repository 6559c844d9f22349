//! A replica's memory of the acknowledgements and results it delivered, so
//! that a worker whose answer was lost (a reset, a client timeout) and that
//! sends the *identical* request again gets OK marked as a replay, not
//! CodePipeline's `FAILED_PRECONDITION` for a job it already closed itself.
//!
//! Only a BLAKE3 digest of the request is kept, never the request: results
//! carry secrets (output variable values, continuation and client tokens). A
//! different request for the same job is not a replay: it goes to AWS, which
//! answers honestly. Bounded in count and age; another replica, which does
//! not remember, forwards the repeat and AWS's error tells the worker what
//! docs/clients.md says it means.

use std::{any::Any, sync::Arc, time::Duration};

use prost::Message;

use crate::{call::CallSuccess, memory::JobMemory, operation::Operation};

/// How many deliveries a replica remembers.
pub const REMEMBERED_DELIVERIES: usize = 10_000;
/// How long a delivery is remembered: longer than a worker's retries take.
pub const DELIVERY_MEMORY: Duration = Duration::from_secs(600);

/// The digest of one request, operation included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Requests encode canonically (maps are sorted), so equal requests
    /// have equal fingerprints. BLAKE3 rather than SHA-256: as
    /// collision-resistant, and it took 4 % of the gateway's CPU on ~110 KB
    /// reports where SHA-256 took 10 % (perf, benches/gateway.rs).
    pub fn of<O: Operation>(request: &O::Request) -> Fingerprint {
        let mut hasher = blake3::Hasher::new();
        hasher.update(O::ID.name().as_bytes());
        hasher.update(&[0]);
        hasher.update(&request.encode_to_vec());
        Fingerprint(*hasher.finalize().as_bytes())
    }
}

#[derive(Clone)]
struct Delivered {
    fingerprint: Fingerprint,
    aws_request_id: Option<String>,
    output: Arc<dyn Any + Send + Sync>,
}

pub struct Deliveries {
    memory: JobMemory<Delivered>,
}

impl Deliveries {
    pub fn new() -> Self {
        Deliveries {
            memory: JobMemory::with_max_age(REMEMBERED_DELIVERIES, DELIVERY_MEMORY),
        }
    }

    /// The success this replica delivered for exactly this request, if any.
    pub fn recall<O: Operation>(
        &self,
        job_id: &str,
        fingerprint: Fingerprint,
    ) -> Option<CallSuccess<O::Output>> {
        let delivered = self.memory.get(&key::<O>(job_id))?;
        if delivered.fingerprint != fingerprint {
            return None;
        }
        let output = delivered.output.downcast_ref::<O::Output>()?.clone();
        Some(CallSuccess {
            aws_request_id: delivered.aws_request_id,
            attempts: 0,
            earlier_attempt_may_have_applied: false,
            replay: true,
            output,
        })
    }

    pub fn remember<O: Operation>(
        &self,
        job_id: &str,
        fingerprint: Fingerprint,
        success: &CallSuccess<O::Output>,
    ) {
        self.memory.remember(
            &key::<O>(job_id),
            Delivered {
                fingerprint,
                aws_request_id: success.aws_request_id.clone(),
                output: Arc::new(success.output.clone()),
            },
        );
    }
}

impl Default for Deliveries {
    fn default() -> Self {
        Deliveries::new()
    }
}

/// A job's acknowledgement and its result are remembered apart.
fn key<O: Operation>(job_id: &str) -> String {
    format!("{}/{job_id}", O::ID.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{operations::PutJobSuccessResult, proto::v1};

    fn success(job_id: &str, variables: &[(&str, &str)]) -> v1::PutJobSuccessResultRequest {
        v1::PutJobSuccessResultRequest {
            job_id: job_id.into(),
            output_variables: variables
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn equal_requests_have_equal_fingerprints_whatever_their_map_order() {
        let many: Vec<(String, String)> = (0..50)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        let forward: Vec<(&str, &str)> =
            many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let backward: Vec<(&str, &str)> = forward.iter().rev().copied().collect();
        assert_eq!(
            Fingerprint::of::<PutJobSuccessResult>(&success("j", &forward)),
            Fingerprint::of::<PutJobSuccessResult>(&success("j", &backward))
        );
        assert_ne!(
            Fingerprint::of::<PutJobSuccessResult>(&success("j", &[("k", "v")])),
            Fingerprint::of::<PutJobSuccessResult>(&success("j", &[("k", "w")]))
        );
    }

    #[test]
    fn only_the_identical_request_is_a_replay() {
        let deliveries = Deliveries::new();
        let sent = Fingerprint::of::<PutJobSuccessResult>(&success("j", &[("k", "v")]));
        let other = Fingerprint::of::<PutJobSuccessResult>(&success("j", &[("k", "w")]));
        let delivered = CallSuccess {
            aws_request_id: Some("req-1".into()),
            attempts: 1,
            earlier_attempt_may_have_applied: false,
            replay: false,
            output: (),
        };
        deliveries.remember::<PutJobSuccessResult>("j", sent, &delivered);
        let replay = deliveries
            .recall::<PutJobSuccessResult>("j", sent)
            .expect("the same request");
        assert_eq!(replay.aws_request_id.as_deref(), Some("req-1"));
        assert_eq!(replay.attempts, 0);
        assert!(replay.replay);
        assert!(
            deliveries
                .recall::<PutJobSuccessResult>("j", other)
                .is_none()
        );
        assert!(
            deliveries
                .recall::<PutJobSuccessResult>("k", sent)
                .is_none()
        );
    }
}
