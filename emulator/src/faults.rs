//! Fault injection: a queue of faults consumed by matching AWS requests.

use std::time::Duration;

/// What an injected fault does to a request that matches it.
///
/// Faults are applied only after authentication and model validation passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer HTTP 400 `ThrottlingException` without touching job state.
    Throttle,
    /// Answer the given 5xx status: `__type` is `ServiceUnavailableException`
    /// for 503 and `InternalFailure` otherwise. Job state is unchanged.
    ServerError(u16),
    /// Sleep for the duration, then handle the request normally.
    Delay(Duration),
    /// Close the connection without a response; job state is unchanged.
    ResetBeforeApply,
    /// Apply the request to job state as usual, then close the connection
    /// without a response (the "outcome unknown" case).
    ResetAfterApply,
    /// Answer an arbitrary AWS error; job state is unchanged.
    Error {
        /// The `__type`, e.g. `AccessDeniedException`.
        error_type: String,
        /// HTTP status, e.g. 400.
        status: u16,
        /// The `message` field.
        message: String,
    },
}

impl FaultKind {
    /// Short label stored in [`RecordedRequest::fault`](crate::RecordedRequest::fault).
    pub fn label(&self) -> String {
        match self {
            FaultKind::Throttle => "throttle".to_owned(),
            FaultKind::ServerError(status) => format!("serverError({status})"),
            FaultKind::Delay(d) => format!("delay({}ms)", d.as_millis()),
            FaultKind::ResetBeforeApply => "resetBeforeApply".to_owned(),
            FaultKind::ResetAfterApply => "resetAfterApply".to_owned(),
            FaultKind::Error { error_type, .. } => format!("error({error_type})"),
        }
    }
}

/// A fault queued for the next `times` matching requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Operation name to match (e.g. `PutJobSuccessResult`); `None` matches any operation.
    pub operation: Option<String>,
    /// What to do.
    pub kind: FaultKind,
    /// How many matching requests it applies to.
    pub times: u32,
}

impl Fault {
    /// A fault for the next request of any operation.
    pub fn once(kind: FaultKind) -> Fault {
        Fault {
            operation: None,
            kind,
            times: 1,
        }
    }

    /// A fault for the next `times` requests of `operation`.
    pub fn for_operation(operation: &str, kind: FaultKind, times: u32) -> Fault {
        Fault {
            operation: Some(operation.to_owned()),
            kind,
            times,
        }
    }
}

/// Faults in injection order.
#[derive(Default)]
pub(crate) struct FaultQueue {
    faults: Vec<Fault>,
}

impl FaultQueue {
    pub fn push(&mut self, fault: Fault) {
        if fault.times > 0 {
            self.faults.push(fault);
        }
    }

    pub fn clear(&mut self) {
        self.faults.clear();
    }

    pub fn pending(&self) -> &[Fault] {
        &self.faults
    }

    /// Consumes one use of the first fault matching `operation`.
    pub fn take(&mut self, operation: &str) -> Option<FaultKind> {
        let pos = self
            .faults
            .iter()
            .position(|f| f.operation.as_deref().is_none_or(|op| op == operation))?;
        let fault = &mut self.faults[pos];
        fault.times -= 1;
        let kind = fault.kind.clone();
        if fault.times == 0 {
            self.faults.remove(pos);
        }
        Some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_fault_is_consumed_in_order() {
        let mut q = FaultQueue::default();
        q.push(Fault::for_operation("A", FaultKind::Throttle, 2));
        q.push(Fault::once(FaultKind::ServerError(503)));
        q.push(Fault::once(FaultKind::ResetAfterApply));
        assert_eq!(q.take("B"), Some(FaultKind::ServerError(503)));
        assert_eq!(q.take("A"), Some(FaultKind::Throttle));
        assert_eq!(q.take("A"), Some(FaultKind::Throttle));
        assert_eq!(q.take("A"), Some(FaultKind::ResetAfterApply));
        assert_eq!(q.take("A"), None);
    }

    #[test]
    fn zero_times_is_ignored_and_clear_empties() {
        let mut q = FaultQueue::default();
        q.push(Fault::for_operation("A", FaultKind::Throttle, 0));
        assert!(q.pending().is_empty());
        q.push(Fault::once(FaultKind::Throttle));
        q.clear();
        assert_eq!(q.take("A"), None);
    }
}
