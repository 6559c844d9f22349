//! What the gateway knows about a CodePipeline operation, said once per
//! operation: the [`Operation`] trait. `operations.rs` implements it for each
//! of the ten job-worker operations; the gRPC adapter, the forwarding layers,
//! metrics, logs and the client-token fill-in are generic over it.
//!
//! A call moves through the types of its operation:
//! `Request` (the proto message) → [`Operation::validate`] → `Checked` (every
//! field proved, typed for the SDK) → [`Resolve`] (a partner call gets its
//! client token) → `Valid` → [`Operation::send`] → `Output` →
//! [`Operation::respond`] → `Response` (the proto message).

use std::{fmt, future::Future};

use aws_sdk_codepipeline::{Client, types::ActionTypeId};

use crate::{
    call::CallError,
    client_tokens::{ClientTokens, TokenSource},
    validation::InvalidRequest,
};

/// Declares [`OperationId`] from the one list of operation types, with its
/// `ALL` and names, and checks at compile time that each type's
/// [`Operation::ID`] is its own variant.
macro_rules! operation_ids {
    ($($operation:ident),+ $(,)?) => {
        /// The CodePipeline operations the gateway forwards. Rate limits, metrics
        /// and logs are kept per operation.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum OperationId {
            $($operation,)+
        }

        impl OperationId {
            /// Every operation, in declaration order.
            pub const ALL: &[OperationId] = &[$(OperationId::$operation),+];

            /// The AWS operation name, as in `X-Amz-Target`, IAM actions and
            /// the gRPC method names.
            pub const fn name(self) -> &'static str {
                match self {
                    $(OperationId::$operation => stringify!($operation),)+
                }
            }

            /// The operation's place in [`OperationId::ALL`], for tables
            /// indexed by operation.
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        const _: () = {
            $(assert!(
                <crate::operations::$operation as Operation>::ID.index()
                    == OperationId::$operation.index(),
                concat!(stringify!($operation), "::ID must be OperationId::", stringify!($operation)),
            );)+
        };
    };
}

operation_ids!(
    PollForJobs,
    AcknowledgeJob,
    GetJobDetails,
    PutJobSuccessResult,
    PutJobFailureResult,
    PollForThirdPartyJobs,
    AcknowledgeThirdPartyJob,
    GetThirdPartyJobDetails,
    PutThirdPartyJobSuccessResult,
    PutThirdPartyJobFailureResult,
);

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an operation does to a job, as authorization policies name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// Asks for jobs of an action type.
    Poll,
    /// Claims a job with its nonce.
    Acknowledge,
    /// Reads a job's data.
    GetDetails,
    /// Reports success, progress or failure.
    PutResult,
}

impl Verb {
    /// The verb's name in policies and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Verb::Poll => "poll",
            Verb::Acknowledge => "acknowledge",
            Verb::GetDetails => "get_details",
            Verb::PutResult => "put_result",
        }
    }

    /// Whether a call changes a job's state in CodePipeline (and so is audited).
    pub const fn changes_state(self) -> bool {
        matches!(self, Verb::Acknowledge | Verb::PutResult)
    }
}

/// What a validated call is about: the job it touches, or the action type it
/// polls. Never a secret.
#[derive(Clone, Copy, Debug, Default)]
pub struct Subject<'a> {
    pub job_id: Option<&'a str>,
    pub action_type: Option<&'a ActionTypeId>,
    /// For partner jobs: where the call's client token comes from.
    pub partner_token: Option<&'a TokenSource>,
}

/// A job that a poll answer handed out, and what the answer says about it.
#[derive(Clone, Copy, Debug)]
pub struct PolledJob<'a> {
    pub job_id: &'a str,
    /// The partner client the job belongs to (partner polls only).
    pub client_id: Option<&'a str>,
}

/// How a success was delivered, beside what AWS answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// `x-amzn-RequestId` of the attempt that succeeded.
    pub aws_request_id: String,
    /// The gateway retried after an attempt of unknown outcome.
    pub earlier_attempt_may_have_been_applied: bool,
    /// Answered from the replica's memory of an identical delivered request.
    pub replay: bool,
}

/// What one successful AWS attempt answered.
pub struct Answer<T> {
    /// `x-amzn-RequestId`.
    pub request_id: Option<String>,
    pub output: T,
}

/// One CodePipeline operation, described once.
pub trait Operation: Send + Sync + 'static {
    /// Which operation this is; [`OperationId`]'s list is checked against it.
    const ID: OperationId;
    /// What the operation does, for authorization and audit.
    const VERB: Verb;

    /// The gRPC request message.
    type Request: prost::Message + Send + 'static;
    /// The request once every field is proved valid, in the SDK's types.
    type Checked: Resolve<Self::Valid> + Send + 'static;
    /// What is sent to AWS: `Checked` with anything the gateway fills in.
    type Valid: Send + Sync + 'static;
    /// What AWS answered, in the gateway's proto types.
    type Output: Clone + Send + Sync + 'static;
    /// The gRPC response message.
    type Response;

    /// The request's `target` field: which AWS account and region it names
    /// (empty: the gateway chooses).
    fn requested_target(request: &Self::Request) -> &str;

    /// Checks every constraint of the model, reporting every bad field at once.
    fn validate(request: Self::Request) -> Result<Self::Checked, InvalidRequest>;

    /// The job or action type the call is about.
    fn subject(checked: &Self::Checked) -> Subject<'_>;

    /// One attempt through the SDK; failures are classified by `aws::classify`.
    fn send(
        client: &Client,
        valid: &Self::Valid,
    ) -> impl Future<Output = Result<Answer<Self::Output>, CallError>> + Send;

    /// The gRPC response for AWS's answer.
    fn respond(output: Self::Output, delivery: Delivery) -> Self::Response;

    /// Whether the gateway may send `valid` again after an attempt whose
    /// outcome is unknown. Yes for everything AWS answers a repeat of with
    /// an error (a closed job, a used nonce); a progress report says no.
    fn may_repeat_after_unknown_outcome(_valid: &Self::Valid) -> bool {
        true
    }

    /// Tells each job of a poll answer which target it came from (nothing
    /// for other operations).
    fn mark_target(_output: &mut Self::Output, _target: &'static str) {}

    /// The jobs a poll answer handed out (none for other operations).
    fn polled(_output: &Self::Output) -> Vec<PolledJob<'_>> {
        Vec::new()
    }
}

/// Completes a checked request with what the gateway fills in: a partner
/// call's client token from the operator's map. Custom calls need nothing, so
/// every type resolves to itself.
pub trait Resolve<Valid> {
    fn resolve(self, client_tokens: Option<&ClientTokens>) -> Result<Valid, InvalidRequest>;
}

impl<T> Resolve<T> for T {
    fn resolve(self, _: Option<&ClientTokens>) -> Result<T, InvalidRequest> {
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::FILE_DESCRIPTOR_SET;
    use prost::Message;

    /// The operations are exactly the proto service's unary methods, so an
    /// RPC added to the proto without an operation (or the reverse) fails
    /// here; the streaming ones are the subscriptions.
    #[test]
    fn the_operations_are_the_proto_services_unary_methods() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let service = set
            .file
            .iter()
            .flat_map(|file| &file.service)
            .find(|service| service.name() == "JobWorkerService")
            .expect("JobWorkerService in the descriptor set");
        let (streaming, unary): (Vec<_>, Vec<_>) = service
            .method
            .iter()
            .partition(|m| m.client_streaming() || m.server_streaming());
        let mut methods: Vec<&str> = unary.iter().map(|m| m.name()).collect();
        let streaming: Vec<&str> = streaming.iter().map(|m| m.name()).collect();
        use crate::subscriptions::{CustomJobs, Feed, PartnerJobs};
        assert_eq!(streaming, [CustomJobs::METHOD, PartnerJobs::METHOD]);
        let mut operations: Vec<&str> = OperationId::ALL.iter().map(|o| o.name()).collect();
        methods.sort();
        operations.sort();
        assert_eq!(methods, operations);
    }

    #[test]
    fn indexes_follow_all() {
        for (i, operation) in OperationId::ALL.iter().enumerate() {
            assert_eq!(operation.index(), i);
        }
    }

    #[test]
    fn only_acknowledgements_and_results_change_state() {
        let changing: Vec<Verb> = [
            Verb::Poll,
            Verb::Acknowledge,
            Verb::GetDetails,
            Verb::PutResult,
        ]
        .into_iter()
        .filter(|v| v.changes_state())
        .collect();
        assert_eq!(changing, [Verb::Acknowledge, Verb::PutResult]);
    }
}
