//! The forwarding stack: retry → rate limit → one AWS attempt, around one SDK
//! client. Every attempt, retries included, takes a token from the rate
//! limit, and every attempt's answer teaches the adaptive rate. Its shared parts (the limiter, the retry budget) are created once
//! and shared by every call; the tower stack itself is assembled per call
//! for the call's [`Operation`], which costs a few reference-count bumps.

use std::{sync::Arc, time::Duration};

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

impl ForwardingStack {
    pub fn new(
        client: aws_sdk_codepipeline::Client,
        rate_limit: RateLimitSettings,
        retry: RetrySettings,
        attempt_timeout: Duration,
        upstream_concurrency: usize,
        metrics: Arc<Metrics>,
        identity: Arc<IdentityWatch>,
    ) -> Self {
        ForwardingStack {
            rate_limit: RateLimitLayer::new(Arc::new(RateLimiter::new(
                rate_limit,
                metrics.clone(),
            ))),
            retry: RetryPolicy::new(retry, shared_budget(), metrics.clone()),
            forwarder: Forwarder::new(
                client,
                attempt_timeout,
                upstream_concurrency,
                metrics,
                identity,
            ),
        }
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
