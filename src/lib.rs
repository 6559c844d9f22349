//! codepipeline-gateway: job workers in any language report results to AWS
//! CodePipeline over gRPC, without holding AWS credentials.
//!
//! Each CodePipeline operation is described once, as an
//! [`operation::Operation`] impl in [`operations`]; everything else is generic
//! over it. A call flows: gRPC ([`service`]) → local validation
//! ([`validation`]) → the client-token fill-in ([`client_tokens`]) → the
//! [`forwarding`] stack: retry ([`retry`]) → adaptive rate limit ([`rate_limit`]) → one
//! AWS attempt through `aws-sdk-codepipeline` ([`aws`]). Failures become gRPC
//! statuses in one place ([`error`]). [`server`] wires it all up with health,
//! reflection, metrics ([`metrics`], [`admin`]) and graceful shutdown, from the
//! validated [`config`]. [`subscriptions`] pushes jobs to workers over streams,
//! polling through the same forwarding stack for all of an action type's
//! subscribers.

pub mod access;
pub mod admin;
pub mod auth;
pub mod aws;
pub mod call;
pub mod cli;
pub mod client_tokens;
pub mod codec;
pub mod config;
pub mod connections;
pub mod convert;
pub mod deadline;
pub mod error;
pub mod forwarding;
pub mod identity;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod operation;
pub mod operations;
pub mod policy;
pub mod process_metrics;
pub mod proto;
pub mod rate_limit;
pub mod replay;
pub mod retry;
pub mod rpc_metrics;
mod run;
pub mod server;
pub mod service;
pub mod subscriptions;
pub mod targets;
pub mod tls;
pub mod traces;
pub mod validation;
pub mod watched_file;
