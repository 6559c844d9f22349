//! The forwarding stack: retry → rate limit → one AWS attempt, around one SDK
//! client. Every attempt, retries included, takes a token from the rate
//! limit, and every attempt's answer teaches the adaptive rate. Its shared parts (the limiter, the retry budget) are created once
//! and shared by every call; the tower stack itself is assembled per call
//! for the call's [`Operation`], which costs a few reference-count bumps.

use std::{sync::Arc, time::Duration};

use tokio::sync::Semaphore;
use tower::{ServiceBuilder, ServiceExt};

use crate::{
    aws::Forwarder,
    call::{Call, CallError, CallSuccess},
    identity::IdentityWatch,
    metrics::Metrics,
    operation::Operation,
    rate_limit::{RateLimitLayer, RateLimitSettings, RateLimiter},
    retry::{RetryPolicy, RetrySettings, shared_budget},
};

#[derive(Clone)]
pub struct ForwardingStack {
    rate_limit: RateLimitLayer,
    retry: RetryPolicy,
    forwarder: Forwarder,
}

/// What every target's stack shares, or is built alike from.
#[derive(Clone)]
pub struct StackSettings {
    pub rate_limit: RateLimitSettings,
    pub retry: RetrySettings,
    pub attempt_timeout: Duration,
    /// Attempts in flight at once, over all targets: one bound on the
    /// replica's connections to AWS.
    pub upstream: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
    /// Whether errors name the target they came from: only where the
    /// gateway has more than its own account, so that a gateway of one
    /// account answers as it did before targets.
    pub several_targets: bool,
}

impl ForwardingStack {
    /// The stack of one target: its own rate limit and retry budget.
    pub fn new(
        client: aws_sdk_codepipeline::Client,
        target: &'static str,
        settings: &StackSettings,
        identity: Option<Arc<IdentityWatch>>,
    ) -> Self {
        let StackSettings {
            rate_limit,
            retry,
            attempt_timeout,
            upstream,
            metrics,
            several_targets,
        } = settings.clone();
        ForwardingStack {
            rate_limit: RateLimitLayer::new(Arc::new(RateLimiter::new(
                rate_limit,
                target,
                metrics.clone(),
            ))),
            retry: RetryPolicy::new(retry, shared_budget(), metrics.clone()),
            forwarder: Forwarder::new(
                client,
                target,
                several_targets,
                attempt_timeout,
                upstream,
                metrics,
                identity,
            ),
        }
    }

    /// The target this stack forwards to.
    pub fn target(&self) -> &'static str {
        self.forwarder.target()
    }

    /// Sends one call through the whole stack.
    pub async fn forward<O: Operation>(
        &self,
        call: Call<O>,
    ) -> Result<CallSuccess<O::Output>, CallError> {
        ServiceBuilder::new()
            .layer(tower::retry::RetryLayer::new(self.retry.clone()))
            .layer(self.rate_limit.clone())
            .service(self.forwarder.clone())
            .oneshot(call)
            .await
    }
}
