//! Targets (several AWS accounts and regions) end to end: the real SDK, the
//! real STS `AssumeRole` credential provider of aws-config, SigV4-checked by
//! the emulator, which keeps each job in one account and region.

mod common;

use std::time::Duration;

use codepipeline_emulator::{Emulator, EmulatorConfig, JobState, NewJob, Place, Role};
use codepipeline_gateway::{
    config::{AccessSettings, Config},
    proto::v1::{
        self as v1, AcknowledgeJobRequest, GetJobDetailsRequest, PollForJobsRequest,
        PutJobSuccessResultRequest, job_worker_service_client::JobWorkerServiceClient,
    },
    server::Gateway,
    targets::{ActionTypeMatch, TargetSpec},
};
use common::{SERVE_ON_LOOPBACK, TempDir, gateway_command, started};
use tokio_stream::StreamExt;
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt;

const ACCOUNT_A: &str = "111111111111";
const ACCOUNT_B: &str = "222222222222";
const REGION_A: &str = "eu-west-1";
const REGION_B: &str = "us-west-2";
const EXTERNAL_ID_A: &str = "team-a-external-7f3c";

fn role_a() -> Role {
    let mut role = Role::new(ACCOUNT_A, "codepipeline-gateway");
    role.external_id = Some(EXTERNAL_ID_A.into());
    role
}

fn role_b() -> Role {
    Role::new(ACCOUNT_B, "codepipeline-gateway")
}

fn target(name: &str, region: &str, role: &Role) -> TargetSpec {
    TargetSpec {
        rate_limit_rps: None,
        rate_limit_burst: None,
        name: name.into(),
        region: region.into(),
        role_arn: Some(role.role_arn.clone()),
        external_id: role.external_id.clone(),
        session_name: None,
        endpoint_url: None,
        action_types: Vec::new(),
    }
}

/// An emulator that knows both roles, and the settings with both targets.
async fn two_accounts() -> (Emulator, Config) {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emulator.add_role(role_a());
    emulator.add_role(role_b());
    emulator.serve_region(REGION_A);
    emulator.serve_region(REGION_B);
    let mut settings = common::settings();
    settings.targets = vec![
        target("team-a", REGION_A, &role_a()),
        target("team-b", REGION_B, &role_b()),
    ];
    (emulator, settings)
}

fn job_in(emulator: &Emulator, account: &str, region: &str) -> String {
    emulator
        .create_job(NewJob {
            place: Some(Place::new(account, region)),
            ..NewJob::default()
        })
        .job_id
}

fn poll_in(target: &str) -> PollForJobsRequest {
    PollForJobsRequest {
        target: target.into(),
        ..common::poll(10)
    }
}

async fn gateway(
    emulator: &Emulator,
    settings: Config,
) -> (Gateway, JobWorkerServiceClient<Channel>) {
    let harness = common::start_against(emulator.clone(), settings, None).await;
    (harness.gateway, harness.client)
}

#[tokio::test]
async fn jobs_of_two_accounts_in_two_regions_and_the_default_each_go_back_where_they_came_from() {
    let (emulator, mut settings) = two_accounts().await;
    // Team A's account has a quota of its own.
    settings.targets[0].rate_limit_rps = Some(5.0);
    let home = emulator.create_custom_job().job_id;
    let in_a = job_in(&emulator, ACCOUNT_A, REGION_A);
    let in_b = job_in(&emulator, ACCOUNT_B, REGION_B);
    let harness = common::start_against(emulator.clone(), settings, None).await;
    let mut client = harness.client.clone();

    let mut polled = Vec::new();
    for (target, expected_job, account, answered_target) in [
        ("team-a", &in_a, ACCOUNT_A, "team-a"),
        ("team-b", &in_b, ACCOUNT_B, "team-b"),
        ("", &home, codepipeline_emulator::ACCOUNT_ID, "default"),
    ] {
        let jobs = client
            .poll_for_jobs(poll_in(target))
            .await
            .unwrap()
            .into_inner()
            .jobs;
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, [expected_job.as_str()], "target {target:?}");
        assert_eq!(jobs[0].account_id, account);
        assert_eq!(jobs[0].target, answered_target);
        polled.push(jobs[0].clone());
    }
    // The worker sends no target back: the replica that polled remembers.
    for job in &polled {
        client
            .acknowledge_job(AcknowledgeJobRequest {
                job_id: job.id.clone(),
                nonce: job.nonce.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("acknowledge {}: {s:?}", job.target));
        client
            .put_job_success_result(PutJobSuccessResultRequest {
                job_id: job.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("result {}: {s:?}", job.target));
    }
    for id in [&home, &in_a, &in_b] {
        assert_eq!(emulator.job(id).unwrap().state, JobState::Succeeded);
    }
    let calls = emulator.assume_role_calls();
    assert!(calls.iter().all(|c| c.error.is_none()), "{calls:?}");
    let a: Vec<_> = calls
        .iter()
        .filter(|c| c.role_arn == role_a().role_arn)
        .collect();
    assert!(!a.is_empty() && a.iter().all(|c| c.external_id_sent));
    assert!(calls.iter().any(|c| c.role_arn == role_b().role_arn));
    assert!(
        calls
            .iter()
            .all(|c| c.caller_account_id == codepipeline_emulator::ACCOUNT_ID),
        "roles are assumed with the gateway's own identity"
    );
    // Each target is its own series, its rate limit included.
    let metrics = common::metrics(&harness).await;
    for target in ["default", "team-a", "team-b"] {
        for series in [
            format!(
                r#"cpgw_aws_attempts_total{{method="PollForJobs",outcome="ok",target="{target}"}} 1"#
            ),
            format!(
                r#"cpgw_aws_attempts_total{{method="PutJobSuccessResult",outcome="ok",target="{target}"}} 1"#
            ),
            format!(r#"cpgw_rate_limit_per_second{{method="PollForJobs",target="{target}"}}"#),
        ] {
            assert!(metrics.contains(&series), "{series} in\n{metrics}");
        }
    }
    for (target, rate) in [("default", 10000), ("team-a", 5), ("team-b", 10000)] {
        let gauge = format!(
            r#"cpgw_rate_limit_per_second{{method="GetJobDetails",target="{target}"}} {rate}"#
        );
        assert!(metrics.contains(&gauge), "{gauge} in\n{metrics}");
    }
}

#[tokio::test]
async fn another_replica_finds_the_job_by_its_target_and_says_so_when_it_was_not_sent() {
    let (emulator, settings) = two_accounts().await;
    let in_a = job_in(&emulator, ACCOUNT_A, REGION_A);
    let (_one, mut first) = gateway(&emulator, settings.clone()).await;
    let (_two, mut second) = gateway(&emulator, settings).await;
    let job = first
        .poll_for_jobs(poll_in("team-a"))
        .await
        .unwrap()
        .into_inner()
        .jobs
        .remove(0);
    assert_eq!(job.id, in_a);

    // The second replica did not answer the poll: without the target, the
    // job is looked for in the default account, and the answer says why it
    // was not found there.
    let status = second
        .get_job_details(GetJobDetailsRequest {
            job_id: in_a.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(
        status.message().contains("may belong to another target"),
        "{status:?}"
    );
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.metadata["jobMayBelongToAnotherTarget"], "true");
    assert_eq!(info.metadata["target"], "default");

    let details = second
        .get_job_details(GetJobDetailsRequest {
            job_id: in_a.clone(),
            target: "team-a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(details.job_details.unwrap().account_id, ACCOUNT_A);
    second
        .acknowledge_job(AcknowledgeJobRequest {
            job_id: in_a.clone(),
            nonce: job.nonce,
            target: job.target,
        })
        .await
        .unwrap();
    assert_eq!(emulator.job(&in_a).unwrap().state, JobState::InProgress);

    // A target the gateway does not have is the caller's mistake, named.
    emulator.clear_requests();
    let status = second.poll_for_jobs(poll_in("team-z")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields: Vec<String> = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["target"]);
    // A job-scoped call, a malformed name, and a subscription alike.
    let status = second
        .get_job_details(GetJobDetailsRequest {
            job_id: in_a.clone(),
            target: "Team_A".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        target_violation(&status).as_deref(),
        Some("must be a target name: 1-63 characters of a-z, 0-9 and '-'"),
        "{status:?}"
    );
    let status = subscribe_to(&mut second, "team-z").await;
    assert_eq!(
        target_violation(&status).as_deref(),
        Some("no target of this name is configured on the gateway"),
        "{status:?}"
    );
    assert!(emulator.requests().is_empty(), "nothing was sent to AWS");
}

/// The description of a status's one violation, when it is on `target`.
fn target_violation(status: &tonic::Status) -> Option<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let violations = status.get_details_bad_request()?.field_violations;
    match &violations[..] {
        [only] if only.field == "target" => Some(only.description.clone()),
        _ => None,
    }
}

/// What a subscription naming `target` ends with, before or after it starts.
async fn subscribe_to(client: &mut JobWorkerServiceClient<Channel>, target: &str) -> tonic::Status {
    let first = v1::SubscribeJobsRequest {
        action_type_id: Some(common::custom_type()),
        credit: 1,
        target: target.into(),
        ..Default::default()
    };
    let requests = tokio_stream::iter([first]).chain(tokio_stream::pending());
    match client.subscribe_jobs(requests).await {
        Err(status) => status,
        Ok(response) => {
            let mut jobs = response.into_inner();
            match tokio::time::timeout(Duration::from_secs(10), jobs.message()).await {
                Ok(Err(status)) => status,
                other => panic!("the subscription to {target:?} was not refused: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_gateway_without_targets_takes_only_default() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let job = emulator.create_custom_job().job_id;
    let (_gateway, mut client) = gateway(&emulator, common::settings()).await;
    emulator.clear_requests();
    let status = client.poll_for_jobs(poll_in("team-a")).await.unwrap_err();
    assert_eq!(
        target_violation(&status).as_deref(),
        Some("no target of this name is configured on the gateway")
    );
    let status = subscribe_to(&mut client, "team-a").await;
    assert!(target_violation(&status).is_some(), "{status:?}");
    assert!(emulator.requests().is_empty(), "nothing was sent to AWS");
    // Naming the gateway's own account is always fine, and answers as before.
    let jobs = client
        .poll_for_jobs(poll_in("default"))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(
        (jobs[0].id.as_str(), jobs[0].target.as_str()),
        (job.as_str(), "")
    );
}

#[tokio::test]
async fn an_action_type_mapped_to_a_target_is_polled_there_without_naming_it() {
    let (emulator, mut settings) = two_accounts().await;
    settings.targets[1].action_types = vec![ActionTypeMatch {
        category: "Build".into(),
        owner: "Custom".into(),
        provider: "*".into(),
    }];
    let in_b = job_in(&emulator, ACCOUNT_B, REGION_B);
    let home = emulator.create_custom_job().job_id;
    let (_gateway, mut client) = gateway(&emulator, settings).await;
    let jobs = client
        .poll_for_jobs(common::poll(10))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].id.as_str(), jobs[0].target.as_str()),
        (in_b.as_str(), "team-b")
    );
    // Naming a target still wins over the mapping.
    let jobs = client
        .poll_for_jobs(poll_in("default"))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(jobs[0].id, home);
}

#[tokio::test]
async fn credentials_are_refreshed_before_they_expire_under_load_with_no_failed_call() {
    let (emulator, mut settings) = two_accounts().await;
    // Credentials that last 15 s: the SDK's cache takes new ones some
    // seconds before expiry, and the emulator refuses expired ones.
    let mut short = role_b();
    short.session_lifetime = Some(Duration::from_secs(15));
    emulator.add_role(short);
    settings.targets.truncate(2);
    let in_b = job_in(&emulator, ACCOUNT_B, REGION_B);
    let (_gateway, client) = gateway(&emulator, settings).await;

    let until = tokio::time::Instant::now() + Duration::from_secs(24);
    let mut workers = Vec::new();
    for _ in 0..4 {
        let mut client = client.clone();
        let job_id = in_b.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while tokio::time::Instant::now() < until {
                let call = client.get_job_details(GetJobDetailsRequest {
                    job_id: job_id.clone(),
                    target: "team-b".into(),
                });
                match call.await {
                    Ok(_) => ok += 1,
                    Err(status) => failed.push(status.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        }));
    }
    let mut total = 0;
    for worker in workers {
        let (ok, failed) = worker.await.unwrap();
        assert!(failed.is_empty(), "failed calls: {failed:?}");
        total += ok;
    }
    assert!(total > 100, "{total} calls");
    let assumed = emulator
        .assume_role_calls()
        .into_iter()
        .filter(|c| c.role_arn == role_b().role_arn && c.error.is_none())
        .count();
    assert!(
        assumed >= 3,
        "credentials were refreshed {assumed} times in 24 s"
    );
    let expired = emulator
        .requests()
        .into_iter()
        .filter(|r| r.error_type.as_deref() == Some("ExpiredTokenException"))
        .count();
    assert_eq!(expired, 0, "no call was signed with expired credentials");
}

#[tokio::test]
async fn a_role_the_gateway_cannot_assume_fails_start_up_naming_the_target() {
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emulator.add_role(role_a());
    let mut untrusting = Role::new(ACCOUNT_B, "codepipeline-gateway");
    untrusting.trusted_accounts = vec!["999999999999".into()];
    emulator.add_role(untrusting);
    let cases = [
        ("bad external id", {
            let mut spec = target("team-a", REGION_A, &role_a());
            spec.external_id = Some("guessed".into());
            spec
        }),
        ("no external id", {
            let mut spec = target("team-a", REGION_A, &role_a());
            spec.external_id = None;
            spec
        }),
        ("untrusted", target("team-b", REGION_B, &role_b())),
    ];
    for (what, spec) in cases {
        let mut settings = common::settings();
        let name = spec.name.clone();
        settings.targets = vec![spec];
        let base = codepipeline_gateway::aws::config_for_emulator(&emulator, None).await;
        let error = match Gateway::start(settings, base).await {
            Ok(_) => panic!("{what}: the gateway started"),
            Err(error) => error.to_string(),
        };
        assert!(
            error.contains(&format!("target {name:?}")),
            "{what}: {error}"
        );
        assert!(error.contains("AccessDenied"), "{what}: {error}");
        assert!(!error.contains(EXTERNAL_ID_A), "{what}: {error}");
    }
}

#[tokio::test]
async fn the_policy_keeps_each_caller_to_its_own_targets() {
    let (emulator, mut settings) = two_accounts().await;
    let dir = TempDir::new();
    let digest = |token: &str| -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    settings.access = AccessSettings {
        static_tokens_file: Some(dir.file(
            "tokens.yaml",
            &format!(
                "team-a: {}\nteam-b: {}\n",
                digest("token-a"),
                digest("token-b")
            ),
        )),
        policy_file: Some(dir.file(
            "policy.yaml",
            r#"
rules:
  - identities: [team-a]
    verbs: ["*"]
    actionTypes: [{category: "*", owner: "*", provider: "*", version: "*"}]
    targets: [team-a]
  - identities: [team-b]
    verbs: ["*"]
    actionTypes: [{category: "*", owner: "*", provider: "*", version: "*"}]
    targets: [team-b]
"#,
        )),
        ..AccessSettings::default()
    };
    let in_a = job_in(&emulator, ACCOUNT_A, REGION_A);
    let in_b = job_in(&emulator, ACCOUNT_B, REGION_B);
    let (_gateway, mut client) = gateway(&emulator, settings).await;
    fn as_caller<T>(token: &str, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }
    emulator.clear_requests();
    for (token, target) in [
        ("token-a", "team-b"),
        ("token-a", ""),
        ("token-b", "team-a"),
    ] {
        let status = client
            .poll_for_jobs(as_caller(token, poll_in(target)))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{token} → {target:?}: {status:?}"
        );
        let status = client
            .get_job_details(as_caller(
                token,
                GetJobDetailsRequest {
                    job_id: if target == "team-a" {
                        in_a.clone()
                    } else {
                        in_b.clone()
                    },
                    target: target.into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{token} → {target:?}: {status:?}"
        );
    }
    assert!(
        emulator.requests().is_empty(),
        "nothing reached AWS for a refused caller"
    );
    let jobs = client
        .poll_for_jobs(as_caller("token-a", poll_in("team-a")))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(jobs[0].id, in_a);
    assert_eq!(emulator.job(&in_b).unwrap().state, JobState::Queued);
}

#[tokio::test]
async fn no_credential_of_any_target_reaches_the_logs_even_at_trace_level() {
    let (emulator, _) = two_accounts().await;
    let in_a = job_in(&emulator, ACCOUNT_A, REGION_A);
    let dir = TempDir::new();
    let targets = dir.file(
        "targets.yaml",
        &format!(
            "targets:\n  - name: team-a\n    region: {REGION_A}\n    roleArn: {}\n    externalId: {EXTERNAL_ID_A}\n",
            role_a().role_arn
        ),
    );
    let mut args = SERVE_ON_LOOPBACK.to_vec();
    let targets = targets.to_string_lossy().into_owned();
    args.extend(["--targets-file", targets.as_str(), "--shutdown-delay", "0s"]);
    let mut child = gateway_command(&emulator, &args)
        .env("RUST_LOG", "trace")
        .spawn()
        .unwrap();
    let (addr, mut lines) = started(&mut child).await;
    let mut client = JobWorkerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let jobs = client
        .poll_for_jobs(poll_in("team-a"))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(jobs[0].id, in_a);
    // Lines are written by a thread of their own: wait for the call's line
    // (bounded) before stopping the process.
    let mut logs = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while !logs
        .iter()
        .any(|line: &String| line.contains("call finished"))
    {
        match tokio::time::timeout_at(until, lines.recv()).await {
            Ok(Some(line)) => logs.push(line),
            Ok(None) | Err(_) => break,
        }
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    while let Ok(line) = lines.try_recv() {
        logs.push(line);
    }
    let logs = logs.join("\n");
    assert!(
        logs.lines().any(|line| line.contains("call finished")
            && line.contains(r#""aws_target":"team-a""#)),
        "each call's line names its target:\n{logs}"
    );
    let issued: Vec<_> = emulator
        .assume_role_calls()
        .into_iter()
        .filter_map(|c| c.issued)
        .collect();
    assert!(!issued.is_empty());
    for (key_id, secret, token) in &issued {
        for credential in [key_id, secret, token] {
            assert!(
                !logs.contains(credential.as_str()),
                "{credential} in the logs:\n{logs}"
            );
        }
    }
    assert!(
        !logs.contains(EXTERNAL_ID_A),
        "the external id is in the logs:\n{logs}"
    );
}

#[tokio::test]
async fn a_subscription_names_its_target_and_its_jobs_say_where_they_came_from() {
    use tokio_stream::wrappers::ReceiverStream;
    let (emulator, settings) = two_accounts().await;
    let home = emulator.create_custom_job().job_id;
    let in_b = job_in(&emulator, ACCOUNT_B, REGION_B);
    let (_gateway, mut client) = gateway(&emulator, settings).await;
    let (credit, requests) = tokio::sync::mpsc::channel(4);
    credit
        .send(v1::SubscribeJobsRequest {
            action_type_id: Some(common::custom_type()),
            credit: 1,
            target: "team-b".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut jobs = client
        .subscribe_jobs(ReceiverStream::new(requests))
        .await
        .unwrap()
        .into_inner();
    let pushed = tokio::time::timeout(Duration::from_secs(10), jobs.message())
        .await
        .expect("a job within 10 s")
        .unwrap()
        .unwrap()
        .job
        .unwrap();
    assert_eq!(
        (pushed.id.as_str(), pushed.target.as_str()),
        (in_b.as_str(), "team-b")
    );
    assert_eq!(pushed.account_id, ACCOUNT_B);
    // Acknowledged without the target: this replica remembers it.
    client
        .acknowledge_job(AcknowledgeJobRequest {
            job_id: pushed.id.clone(),
            nonce: pushed.nonce.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(emulator.job(&in_b).unwrap().state, JobState::InProgress);
    assert_eq!(
        emulator.job(&home).unwrap().state,
        JobState::Queued,
        "the default account's job was not polled for team-b's subscriber"
    );

    // A later message may not change the target.
    credit
        .send(v1::SubscribeJobsRequest {
            credit: 1,
            target: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), jobs.message())
            .await
            .expect("the stream ends")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("target"), "{status:?}");
}

#[tokio::test]
async fn a_role_that_stops_being_assumable_fails_calls_naming_the_target_and_nothing_else() {
    let (emulator, mut settings) = two_accounts().await;
    // Sessions of 12 s: the SDK's cache asks for new ones 5-10 s before expiry.
    let mut short = role_b();
    short.session_lifetime = Some(Duration::from_secs(12));
    emulator.add_role(short.clone());
    settings.targets.truncate(2);
    let in_b = job_in(&emulator, ACCOUNT_B, REGION_B);
    let home = emulator.create_custom_job().job_id;
    let (_gateway, mut client) = gateway(&emulator, settings).await;
    let details = |job_id: &str, target: &str| GetJobDetailsRequest {
        job_id: job_id.into(),
        target: target.into(),
    };
    client
        .get_job_details(details(&in_b, "team-b"))
        .await
        .unwrap();
    // The account's owner changes the trust policy: the gateway is no longer trusted.
    short.trusted_accounts = vec!["999999999999".into()];
    emulator.add_role(short);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let status = client
        .get_job_details(details(&in_b, "team-b"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        status
            .message()
            .contains("could not assume the role of target \"team-b\""),
        "{status:?}"
    );
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "NO_AWS_CREDENTIALS");
    assert_eq!(info.metadata["target"], "team-b");
    assert!(
        emulator
            .assume_role_calls()
            .iter()
            .any(|c| c.error.as_deref() == Some("AccessDenied")),
        "the refresh was refused by STS"
    );
    // Other targets are unaffected, and the replica stays ready.
    client.get_job_details(details(&home, "")).await.unwrap();
}
