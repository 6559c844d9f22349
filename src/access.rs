//! Who may do what: the caller is authenticated ([`crate::auth`]) before its
//! request is read, and, once a policy is configured, authorized for the
//! operation's verb on the action type of the job it touches
//! ([`crate::policy`]).
//!
//! A poll names its action type. A job-scoped call (acknowledge, details,
//! results) names only a job: its action type comes from this replica's
//! memory of the polls it answered, and otherwise from one `GetJobDetails` /
//! `GetThirdPartyJobDetails` call to AWS, whose answer is remembered. So every
//! replica decides the same, whichever answered the poll.

use std::{fmt, time::Duration};

use aws_sdk_codepipeline::types::ActionTypeId;

use crate::{
    auth::{Authenticator, Caller, Unauthenticated},
    connections::ClientCertificates,
    memory::JobMemory,
    operation::Verb,
    policy::PolicyFile,
};

/// How many job → action type assignments a replica remembers.
const REMEMBERED_JOB_TYPES: usize = 50_000;

pub struct Access {
    pub authenticator: Authenticator,
    pub policy: Option<PolicyFile>,
    job_types: JobMemory<ActionTypeId>,
}

/// Why a call was refused before anything was sent to AWS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Unauthenticated(Unauthenticated),
    /// The caller is known, and the policy does not allow the call.
    NotAuthorized {
        action_type: String,
    },
}

impl Refusal {
    /// Every `reason` label, so the metrics can start each at zero.
    pub const LABELS: &[&str] = &[
        "missing_credential",
        "malformed_credential",
        "expired_credential",
        "untrusted_credential",
        "issuer_keys_unavailable",
        "not_authorized",
    ];

    /// The `reason` label in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated(why) => why.label(),
            Refusal::NotAuthorized { .. } => "not_authorized",
        }
    }
}

/// `Build/Custom/MyBuilder/1`, as refusals and audit events show it.
pub struct ShowActionType<'a>(pub &'a ActionTypeId);

impl fmt::Display for ShowActionType<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        write!(
            f,
            "{}/{}/{}/{}",
            t.category().as_str(),
            t.owner().as_str(),
            t.provider(),
            t.version()
        )
    }
}

impl Access {
    pub fn new(authenticator: Authenticator, policy: Option<PolicyFile>) -> Self {
        Access {
            authenticator,
            policy,
            job_types: JobMemory::new(REMEMBERED_JOB_TYPES),
        }
    }

    /// Who sends `request`: its connection's client certificates, else its
    /// bearer token; refused as a [`Refusal::Unauthenticated`].
    pub async fn caller_of<T>(&self, request: &tonic::Request<T>) -> Result<Caller, Refusal> {
        let certificates = request.extensions().get::<ClientCertificates>();
        self.authenticator
            .authenticate(certificates.map(|c| c.0.as_slice()), request.metadata())
            .await
            .map_err(Refusal::Unauthenticated)
    }

    /// Whether calls are decided by a policy (and so need the job's action type).
    pub fn has_policy(&self) -> bool {
        self.policy.is_some()
    }

    /// The action type of a job, if this replica knows it.
    pub fn known_job_type(&self, job_id: &str) -> Option<ActionTypeId> {
        self.job_types.get(job_id)
    }

    /// Remembers a job's action type (from a poll answer or a resolution).
    pub fn remember_job_type(&self, job_id: &str, action_type: &ActionTypeId) {
        self.job_types.remember(job_id, action_type.clone());
    }

    /// Refuses at once a caller that no rule lets do `verb` at all, before
    /// its job's action type is looked up: a caller with no business here
    /// cannot make the gateway read jobs from AWS.
    pub fn authorize_verb(&self, caller: &Caller, verb: Verb) -> Result<(), Refusal> {
        match &self.policy {
            Some(policy) if !policy.current().may_ever(&caller.identity, verb) => {
                Err(Refusal::NotAuthorized {
                    action_type: String::new(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Refuses a caller that no rule lets do `verb` in `target`, before
    /// anything is read from that target on its behalf.
    pub fn authorize_target(
        &self,
        caller: &Caller,
        verb: Verb,
        target: &str,
    ) -> Result<(), Refusal> {
        match &self.policy {
            Some(policy) if !policy.current().may_use(&caller.identity, verb, target) => {
                Err(Refusal::NotAuthorized {
                    action_type: String::new(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Whether `caller` may do `verb` on jobs of `action_type` in `target`;
    /// allowed when no policy is configured.
    pub fn authorize(
        &self,
        caller: &Caller,
        verb: Verb,
        action_type: &ActionTypeId,
        target: &str,
    ) -> Result<(), Refusal> {
        match &self.policy {
            Some(policy)
                if !policy
                    .current()
                    .allows(&caller.identity, verb, action_type, target) =>
            {
                Err(Refusal::NotAuthorized {
                    action_type: ShowActionType(action_type).to_string(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// What the operator configured for access, for start-up messages.
pub fn describe(access: &Access, reload: Duration) -> String {
    format!(
        "authentication {}, policy {} (files re-read every {})",
        if access.authenticator.is_enabled() {
            "on"
        } else {
            "OFF"
        },
        if access.has_policy() {
            "on"
        } else {
            "off (every authenticated caller may do everything)"
        },
        humantime::format_duration(reload)
    )
}
