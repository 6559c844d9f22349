//! Puts the pieces together: the forwarding stack, the gRPC server (job
//! worker, health, reflection) and the admin endpoint, with graceful shutdown.

use std::{net::SocketAddr, sync::Arc};

use crate::{
    access::{self, Access},
    auth::{
        Authenticator,
        jwks::JwksSource,
        jwt::{self, JwtVerifier},
        static_tokens::StaticTokens,
    },
    client_tokens::ClientTokens,
    config::{AccessSettings, Config, JwksLocation},
    forwarding::{ForwardingStack, StackSettings},
    identity::{IdentityWatch, Readiness},
    metrics::Metrics,
    policy::PolicyFile,
    proto::{
        ERROR_DETAILS_DESCRIPTOR_SET, FILE_DESCRIPTOR_SET,
        v1::job_worker_service_server::JobWorkerServiceServer,
    },
    service::{Bounds, JobWorker},
    targets::{DEFAULT_TARGET, Targets},
    tls::TlsFiles,
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic::service::Routes;

/// After the grace period, how long the calls that were cut short get to
/// send their answers before their connections close.
const CUT_FLUSH: std::time::Duration = std::time::Duration::from_millis(500);

/// The largest request message the gateway decodes, compressed or not.
///
/// The largest request CodePipeline accepts is under 160 KB: 122,880 bytes of
/// output variables plus the revision, summary and ids, each a few thousand
/// characters of up to 4 bytes. tonic's default, 4 MB, let 256 gzip bombs of
/// 4 KB each (4 MB once inflated) raise the gateway's peak memory from 34 MB
/// to 1.26 GB, because a decoded request is held until its stream ends. A
/// request up to this size still gets the validator's field-by-field answer;
/// a larger one is refused as it is read, OUT_OF_RANGE (RESOURCE_EXHAUSTED
/// when it only grows past the limit while being decompressed).
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// Bounds what a request may decode to, accepts gzip- and deflate-compressed
/// requests (decompressed no further than that bound) and compresses answers
/// for clients that ask (`grpc-accept-encoding`).
macro_rules! bounded_with_compression {
    ($server:expr) => {{
        use tonic::codec::CompressionEncoding::{Deflate, Gzip};
        $server
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .accept_compressed(Gzip)
            .accept_compressed(Deflate)
            .send_compressed(Gzip)
            .send_compressed(Deflate)
    }};
}

/// A running gateway.
pub struct Gateway {
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Gateway {
    /// Binds both ports and starts serving; returns once the ports are bound.
    /// `base` is the gateway's own AWS configuration (identity, region,
    /// endpoint): the default target's, and what other targets' roles are
    /// assumed with.
    pub async fn start(settings: Config, base: aws_config::SdkConfig) -> std::io::Result<Gateway> {
        let client = aws_sdk_codepipeline::Client::new(&base);
        // Each target's first credentials before anything listens: a role
        // the gateway cannot assume fails start-up, naming the target.
        let mut target_clients = Vec::with_capacity(settings.targets.len());
        for spec in &settings.targets {
            let target_client = crate::targets::client_for(spec, &base)
                .await
                .map_err(std::io::Error::other)?;
            target_clients.push((spec.clone(), target_client));
        }
        let listener = bind(settings.listen, "--listen").await?;
        let admin_listener = bind(settings.admin_listen, "--admin-listen").await?;
        let grpc_addr = listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;

        let client_tokens = match &settings.client_tokens {
            Some(tokens) => {
                let map =
                    Arc::new(ClientTokens::load(&tokens.path).map_err(std::io::Error::other)?);
                map.watch(tokens.reload_interval);
                Some(map)
            }
            None => None,
        };
        let tls = match &settings.tls {
            Some(tls) => {
                let files = TlsFiles::load(tls.clone()).map_err(std::io::Error::other)?;
                files.watch(settings.access.reload_interval);
                Some(files)
            }
            None => None,
        };
        let client_certificates = tls.as_ref().is_some_and(|t| t.verifies_clients());
        let access = Arc::new(
            start_access(&settings.access, client_certificates)
                .await
                .map_err(std::io::Error::other)?,
        );
        if access.authenticator.is_enabled() {
            tracing::info!(
                "{}",
                access::describe(&access, settings.access.reload_interval)
            );
        } else {
            tracing::warn!(
                "authentication is OFF: anyone who can reach {grpc_addr} acts with the gateway's AWS \
                 identity. Configure --auth-jwt-issuer or --auth-tokens-file."
            );
        }
        let metrics = Arc::new(Metrics::new());
        let (cut, cut_short) = watch::channel(false);
        let (stop, stopped) = watch::channel(false);
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let readiness = Arc::new(Readiness::new(health_reporter));
        readiness.start().await;
        let identity = Arc::new(IdentityWatch::new(readiness.clone()));
        identity.probe(client.clone(), stopped.clone());
        let stack_settings = StackSettings {
            rate_limit: settings.rate_limit,
            retry: settings.retry.clone(),
            attempt_timeout: settings.attempt_timeout,
            upstream: Arc::new(tokio::sync::Semaphore::new(settings.upstream_concurrency)),
            metrics: metrics.clone(),
            several_targets: !settings.targets.is_empty(),
        };
        let default_stack =
            ForwardingStack::new(client, DEFAULT_TARGET, &stack_settings, Some(identity));
        let others = target_clients
            .into_iter()
            .map(|(spec, target_client)| {
                // The stack wants the name for the process's life: leaked
                // once per configured target.
                let name: &'static str = Box::leak(spec.name.clone().into_boxed_str());
                let own = StackSettings {
                    rate_limit: spec.rate_limit(stack_settings.rate_limit),
                    ..stack_settings.clone()
                };
                let stack = ForwardingStack::new(target_client, name, &own, None);
                (spec, stack)
            })
            .collect();
        let targets = Arc::new(Targets::new(default_stack, others));
        for name in targets.names() {
            metrics.add_target(name);
        }
        if targets.several() {
            tracing::info!(targets = ?targets, "forwarding to several targets");
        }
        let job_worker = JobWorker::new(
            targets,
            metrics.clone(),
            Bounds {
                default_deadline: settings.default_deadline,
                max_calls_in_flight: settings.max_calls_in_flight,
                max_subscriptions: settings.max_subscriptions,
                first_message_timeout: settings.connections.request_arrival_timeout,
                cut_short,
            },
            settings.retry.clone(),
            client_tokens,
            access,
        );

        // grpcurl 1.8.x and many GUIs ask for v1alpha, newer tools for v1.
        let reflection = if settings.reflection {
            let builder = || {
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(ERROR_DETAILS_DESCRIPTOR_SET)
            };
            Some((
                builder().build_v1().map_err(std::io::Error::other)?,
                builder().build_v1alpha().map_err(std::io::Error::other)?,
            ))
        } else {
            None
        };

        tokio::spawn(crate::admin::serve(
            admin_listener,
            metrics.clone(),
            readiness.clone(),
            stopped.clone(),
        ));

        let mut routes = Routes::new(bounded_with_compression!(health_service));
        if let Some((v1, v1alpha)) = reflection {
            routes = routes
                .add_service(bounded_with_compression!(v1))
                .add_service(bounded_with_compression!(v1alpha));
        }
        let routes = routes
            .add_service(bounded_with_compression!(JobWorkerServiceServer::new(
                job_worker
            )))
            .prepare();
        let (delay, grace) = (settings.shutdown_delay, settings.shutdown_grace);
        let connections = settings.connections.clone();
        // The connections drain on their own signal, given `delay` after the
        // stop: until then the listener accepts and calls are served.
        let (drain, draining) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut on_stop = stopped.clone();
            let serving =
                crate::connections::serve(listener, tls, routes, connections, metrics, draining);
            tokio::pin!(serving);
            tokio::select! {
                () = &mut serving => return Ok(()),
                _ = async { let _ = on_stop.wait_for(|stop| *stop).await; } => {}
            }
            // Health turns NOT_SERVING first, so that readiness probes fail and
            // the endpoints controller drops the pod while it still serves
            // whoever has not heard yet.
            readiness.stopping().await;
            if !delay.is_zero() {
                tracing::info!(delay = %humantime::format_duration(delay), "shutting down: NOT_SERVING, still serving until the delay is over");
                tokio::select! {
                    () = &mut serving => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            // Now every connection gets its GOAWAY and the listener closes.
            let _ = drain.send(true);
            tracing::info!(grace = %humantime::format_duration(grace), "shutting down: draining in-flight calls");
            if tokio::time::timeout(grace, &mut serving).await.is_ok() {
                return Ok(());
            }
            // Calls still in flight answer UNAVAILABLE, saying whether an
            // attempt was on its way to AWS, rather than vanish with the
            // connection; their answers get a moment to leave.
            tracing::warn!("shutdown grace period over: cutting the calls still in flight");
            let _ = cut.send(true);
            let _ = tokio::time::timeout(CUT_FLUSH, &mut serving).await;
            Ok(())
        });
        tracing::info!(%grpc_addr, %admin_addr, "gateway listening (gRPC on {grpc_addr}, metrics on http://{admin_addr}/metrics)");
        Ok(Gateway {
            grpc_addr,
            admin_addr,
            stop,
            task,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Shuts down gracefully: health turns NOT_SERVING, no new calls are
    /// taken, and calls in flight finish (up to the grace period).
    pub async fn shutdown(self) -> Result<(), tonic::transport::Error> {
        self.begin_shutdown();
        self.wait().await
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) -> Result<(), tonic::transport::Error> {
        match self.task.await {
            Ok(result) => result,
            Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
        }
    }
}

/// Loads the token and policy files and fetches the issuer's keys; a
/// missing or broken file stops start-up.
async fn start_access(
    settings: &AccessSettings,
    client_certificates: bool,
) -> Result<Access, String> {
    let reload = settings.reload_interval;
    let static_tokens = settings
        .static_tokens_file
        .as_deref()
        .map(|path| StaticTokens::load(path, reload))
        .transpose()?;
    let jwt = match &settings.jwt {
        None => None,
        Some(jwt) => {
            let source = match &jwt.keys {
                JwksLocation::File(path) => JwksSource::file(path, reload)?,
                JwksLocation::Remote {
                    url,
                    ca_file,
                    bearer_token_file,
                } => JwksSource::remote(
                    &jwt.issuer,
                    url.as_deref(),
                    ca_file.as_deref(),
                    bearer_token_file.clone(),
                )?,
            };
            Some(
                JwtVerifier::start(jwt::JwtSettings {
                    issuer: jwt.issuer.clone(),
                    audiences: jwt.audiences.clone(),
                    source,
                    refresh: jwt.refresh,
                    min_refetch: jwt.min_refetch,
                })
                .await,
            )
        }
    };
    let policy = settings
        .policy_file
        .as_deref()
        .map(|path| PolicyFile::load(path, reload))
        .transpose()?;
    Ok(Access::new(
        Authenticator::new(client_certificates, static_tokens, jwt),
        policy,
    ))
}

async fn bind(addr: SocketAddr, flag: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("cannot listen on {addr} ({flag}): {error}"),
        )
    })
}
