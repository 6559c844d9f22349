//! What each subcommand does, from parsed arguments to exit.

use std::process::ExitCode;

use codepipeline_emulator::{CreatedJob, Emulator, EmulatorConfig};

use crate::{
    aws,
    cli::{Cli, Command, DevArgs, EmulatorArgs, GatewayArgs},
    config::Config,
    logging,
    server::Gateway,
};

impl Cli {
    pub async fn run(self) -> ExitCode {
        let format = match &self.command {
            None => self.serve.log_format,
            Some(Command::Serve(args) | Command::CheckConfig(args)) => args.log_format,
            Some(Command::Dev(args)) => args.gateway.log_format,
            Some(Command::Emulator(args)) => args.log_format,
        };
        // Held to the end, so that the last lines (an error) and spans are
        // written.
        let _guards = match logging::init(format) {
            Ok(guards) => guards,
            Err(message) => {
                eprintln!("{message}");
                return ExitCode::FAILURE;
            }
        };
        let outcome = match self.command {
            None => serve(self.serve).await,
            Some(Command::Serve(args)) => serve(args).await,
            Some(Command::CheckConfig(args)) => check_config(&args),
            Some(Command::Dev(args)) => dev(args).await,
            Some(Command::Emulator(args)) => emulator(args).await,
        };
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                // Once, in the log's own format; the writer is flushed when
                // `_guards` drops, before the process exits.
                tracing::error!("{message}");
                ExitCode::FAILURE
            }
        }
    }
}

async fn serve(args: GatewayArgs) -> Result<(), String> {
    let settings = Config::try_from(&args).map_err(|e| e.to_string())?;
    let base = aws::config_from_environment().await?;
    let stop = StopSignals::install()?;
    let gateway = Gateway::start(settings, base)
        .await
        .map_err(|e| e.to_string())?;
    run_until_signal(gateway, stop).await
}

/// The settings `serve` would run with, one per line (stdout), or the first
/// problem (the error log line, exit 1).
fn check_config(args: &GatewayArgs) -> Result<(), String> {
    let settings = Config::try_from(args).map_err(|e| e.to_string())?;
    println!("{settings:#?}");
    Ok(())
}

async fn dev(args: DevArgs) -> Result<(), String> {
    // Dev mode is zero-setup: open unless the developer configures a way in.
    let mut gateway_args = args.gateway.clone();
    let authenticated =
        gateway_args.auth_tokens_file.is_some() || gateway_args.auth_jwt_issuer.is_some();
    gateway_args.allow_unauthenticated |= !authenticated;
    let settings = Config::try_from(&gateway_args).map_err(|e| e.to_string())?;
    let targets = settings.targets.clone();
    let stop = StopSignals::install()?;
    let emulator = Emulator::start(EmulatorConfig {
        listen: args.emulator_listen,
        ..EmulatorConfig::default()
    })
    .await
    .map_err(|e| {
        format!(
            "cannot start the emulator on {} (--emulator-listen): {e}",
            args.emulator_listen
        )
    })?;
    // The embedded emulator plays every target's account: each target's role
    // exists there, trusting the gateway, with the target's external id.
    for target in &settings.targets {
        emulator.serve_region(&target.region);
        if let Some(role_arn) = &target.role_arn {
            let role = codepipeline_emulator::Role {
                role_arn: role_arn.clone(),
                external_id: target.external_id.clone(),
                trusted_accounts: Vec::new(),
                session_lifetime: None,
            };
            emulator.try_add_role(role).map_err(|e| {
                format!(
                    "target {:?}: the dev emulator cannot play its role: {e}",
                    target.name
                )
            })?;
        }
    }
    let base = aws::config_for_emulator(&emulator, None).await;
    let gateway = Gateway::start(settings, base)
        .await
        .map_err(|e| e.to_string())?;
    let jobs = [
        emulator.create_custom_job(),
        emulator.create_custom_job(),
        emulator.create_third_party_job(),
    ];
    println!("{}", dev_banner(&gateway, &emulator, &jobs));
    if let Some(text) = dev_targets(&targets, &emulator) {
        println!("{text}");
    }
    if !authenticated {
        println!("{}", DEV_AUTH_HINT.trim_end());
    }
    let result = run_until_signal(gateway, stop).await;
    emulator.shutdown().await;
    result
}

async fn emulator(args: EmulatorArgs) -> Result<(), String> {
    if args.acknowledge_timeout.is_zero() {
        return Err(
            "invalid --acknowledge-timeout (CPGW_EMULATOR_ACKNOWLEDGE_TIMEOUT): must be longer \
             than 0s"
                .to_owned(),
        );
    }
    let stop = StopSignals::install()?;
    let emulator = Emulator::start(EmulatorConfig {
        listen: args.listen,
        acknowledge_timeout: args.acknowledge_timeout,
        ..EmulatorConfig::default()
    })
    .await
    .map_err(|e| {
        format!(
            "cannot start the emulator on {} (--listen): {e}",
            args.listen
        )
    })?;
    if let Some(quota) = args.quota_per_second {
        if !(quota.is_finite() && quota > 0.0) {
            return Err(format!(
                "invalid --quota-per-second (CPGW_EMULATOR_QUOTA_PER_SECOND): must be a number \
                 greater than 0, got {quota}"
            ));
        }
        emulator.set_quota(Some(quota));
    }
    let config = emulator.config();
    println!(
        "CodePipeline emulator on {url}\n\
         \n\
         Point an AWS SDK at it with:\n\
         \x20 AWS_ENDPOINT_URL={url} AWS_REGION={region} AWS_ACCESS_KEY_ID={key} AWS_SECRET_ACCESS_KEY={secret}\n\
         \n\
         Create a job:   curl -s -X POST {url}/_emulator/jobs -d '{{\"kind\":\"custom\"}}'\n\
         Partner job:    curl -s -X POST {url}/_emulator/jobs -d '{{\"kind\":\"thirdParty\"}}'\n\
         What AWS got:   curl -s {url}/_emulator/requests",
        url = emulator.endpoint_url(),
        region = config.region,
        key = config.access_key_id,
        secret = config.secret_access_key,
    );
    stop.received().await;
    emulator.shutdown().await;
    Ok(())
}

/// How to try authentication in dev mode, which starts without it.
const DEV_AUTH_HINT: &str = "
Authentication is off in dev mode, so any caller is served. To try it, give a caller a token
(the gateway keeps only its SHA-256) and restart with the file:
  echo \"me: $(printf %s my-secret-token | sha256sum | cut -d' ' -f1)\" > tokens.yaml
  cargo run -- dev --auth-tokens-file tokens.yaml
then add -H 'authorization: Bearer my-secret-token' to the grpcurl commands above (without it they
get UNAUTHENTICATED). Add --policy-file to decide what each caller may do (README: Authentication).
";

fn dev_banner(gateway: &Gateway, emulator: &Emulator, jobs: &[CreatedJob]) -> String {
    let target = reachable(gateway.grpc_addr());
    let url = emulator.endpoint_url();
    let mut text = format!(
        "codepipeline-gateway dev mode: gRPC on {target}, metrics on http://{}/metrics,\n\
         forwarding through the real AWS SDK to the embedded CodePipeline emulator at {url}\n\nReady-made jobs:\n",
        reachable(gateway.admin_addr())
    );
    for job in jobs {
        match (&job.client_id, &job.client_token) {
            (Some(client_id), Some(token)) => text.push_str(&format!(
                "  partner (third-party) job {}  clientId {client_id}  clientToken {token}\n",
                job.job_id
            )),
            _ => text.push_str(&format!("  custom job {}\n", job.job_id)),
        }
    }
    let custom_type = codepipeline_emulator::ActionTypeId::default_custom();
    text.push_str(&format!(
        "\nThe custom jobs belong to the action type {{{}, {}, {}, {}}}. Poll for them, then acknowledge one\n\
         with the nonce the poll returned:\n\
         \x20 grpcurl -plaintext -d '{{\"actionTypeId\":{{\"category\":\"ACTION_CATEGORY_BUILD\",\"owner\":\"ACTION_OWNER_CUSTOM\",\"provider\":\"{}\",\"version\":\"{}\"}},\"maxBatchSize\":5}}' {target} codepipeline_gateway.v1.JobWorkerService/PollForJobs\n\
         \x20 grpcurl -plaintext -d '{{\"jobId\":\"<id>\",\"nonce\":\"<nonce>\"}}' {target} codepipeline_gateway.v1.JobWorkerService/AcknowledgeJob\n",
        custom_type.category,
        custom_type.owner,
        custom_type.provider,
        custom_type.version,
        custom_type.provider,
        custom_type.version,
    ));
    let custom = &jobs[0].job_id;
    text.push_str(&format!(
        "\nReport success for the first custom job:\n\
         \x20 grpcurl -plaintext -d '{{\"jobId\":\"{custom}\",\"executionDetails\":{{\"summary\":\"built\",\"percentComplete\":100}},\"outputVariables\":{{\"IMAGE_TAG\":\"v1\"}}}}' {target} codepipeline_gateway.v1.JobWorkerService/PutJobSuccessResult\n"
    ));
    if let Some(partner) = jobs.iter().find(|j| j.client_token.is_some()) {
        text.push_str(&format!(
            "Report success for the partner job:\n\
             \x20 grpcurl -plaintext -d '{{\"jobId\":\"{}\",\"clientToken\":\"{}\"}}' {target} codepipeline_gateway.v1.JobWorkerService/PutThirdPartyJobSuccessResult\n",
            partner.job_id,
            partner.client_token.as_deref().unwrap_or_default()
        ));
    }
    text.push_str(&format!(
        "\nMore jobs:      curl -s -X POST {url}/_emulator/jobs -d '{{\"kind\":\"custom\"}}'   (or \"thirdParty\")\n\
         What AWS got:   curl -s {url}/_emulator/requests\n\
         Stop with Ctrl-C."
    ));
    text
}

/// Where each target's jobs live in the dev emulator, and how to queue one.
fn dev_targets(targets: &[crate::targets::TargetSpec], emulator: &Emulator) -> Option<String> {
    if targets.is_empty() {
        return None;
    }
    let url = emulator.endpoint_url();
    let mut text =
        String::from("Targets (the emulator plays each one's account; poll with \"target\"):\n");
    for target in targets {
        let account = target
            .role_arn
            .as_deref()
            .and_then(|arn| arn.split(':').nth(4))
            .unwrap_or(codepipeline_emulator::ACCOUNT_ID);
        text.push_str(&format!(
            "  {}  account {account}  region {}\n\
             \x20   a job there: curl -s -X POST {url}/_emulator/jobs -d '{{\"kind\":\"custom\",\"accountId\":\"{account}\",\"region\":\"{}\"}}'\n",
            target.name, target.region, target.region
        ));
    }
    Some(text.trim_end().to_owned())
}

/// An address to paste into a client: a wildcard bind (0.0.0.0, ::) is
/// reached through loopback.
fn reachable(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

async fn run_until_signal(gateway: Gateway, stop: StopSignals) -> Result<(), String> {
    stop.received().await;
    gateway
        .shutdown()
        .await
        .map_err(|e| format!("the gRPC server failed: {e}"))
}

/// SIGTERM (Kubernetes) and SIGINT (Ctrl-C), listened for from before the
/// listeners open: a signal that arrives as soon as the process says it
/// listens starts the graceful shutdown instead of killing the process.
struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self, String> {
        use tokio::signal::unix::{SignalKind, signal};
        let handler = |kind, name| {
            signal(kind).map_err(|e| format!("cannot install the {name} handler: {e}"))
        };
        Ok(StopSignals {
            terminate: handler(SignalKind::terminate(), "SIGTERM")?,
            interrupt: handler(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    async fn received(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM received"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT received"),
        }
    }
}
