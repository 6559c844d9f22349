//! codepipeline-gateway: job workers in any language report results to AWS
//! CodePipeline over gRPC, without holding AWS credentials.
//!
//! A call flows: gRPC ([`service`]) → local validation ([`validation`]) →
//! rate limit ([`rate_limit`]) → retry ([`retry`]) → one AWS attempt through
//! `aws-sdk-codepipeline` ([`aws`]). Failures become gRPC statuses in one
//! place ([`error`]). [`server`] wires it all up with health, reflection,
//! metrics ([`metrics`], [`admin`]) and graceful shutdown.

pub mod admin;
pub mod aws;
pub mod call;
pub mod cli;
pub mod client_tokens;
pub mod convert;
pub mod deadline;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod proto;
pub mod rate_limit;
pub mod retry;
mod run;
pub mod server;
pub mod service;
pub mod validation;
