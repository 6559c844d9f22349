//! The job-worker lifecycle (poll → acknowledge → details → results,
//! continuations, failures) through the real `aws-sdk-codepipeline` client.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_codepipeline::Client;
use aws_sdk_codepipeline::types::{
    ActionCategory, ActionOwner, FailureDetails, FailureType, JobStatus,
};
use codepipeline_emulator::{
    ACCOUNT_ID, ActionTypeId, Emulator, EmulatorConfig, FailureSnapshot, JobKind, JobState, NewJob,
};
use common::{client, code, emulator};
use serde_json::{Value, json};

const UNKNOWN_JOB: &str = "00000000-0000-4000-8000-000000000000";

fn sdk_type(t: &ActionTypeId) -> aws_sdk_codepipeline::types::ActionTypeId {
    aws_sdk_codepipeline::types::ActionTypeId::builder()
        .category(ActionCategory::from(t.category.as_str()))
        .owner(ActionOwner::from(t.owner.as_str()))
        .provider(&t.provider)
        .version(&t.version)
        .build()
        .unwrap()
}

fn failure(kind: FailureType, message: &str, external: Option<&str>) -> FailureDetails {
    FailureDetails::builder()
        .r#type(kind)
        .message(message)
        .set_external_execution_id(external.map(str::to_owned))
        .build()
        .unwrap()
}

fn text(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
        })
}

/// Checks every field of an SDK-parsed `JobData` / `ThirdPartyJobData`
/// against the JSON the emulator holds for the job (which is what went over
/// the wire), so nothing the SDK parsed differs and nothing is missing.
macro_rules! assert_data_eq {
    ($data:expr, $expected:expr) => {{
        let d = $data;
        let e: &Value = $expected;
        let t = d.action_type_id().expect("actionTypeId");
        assert_eq!(t.category().as_str(), text(&e["actionTypeId"]["category"]));
        assert_eq!(t.owner().as_str(), text(&e["actionTypeId"]["owner"]));
        assert_eq!(t.provider(), text(&e["actionTypeId"]["provider"]));
        assert_eq!(t.version(), text(&e["actionTypeId"]["version"]));
        let config: HashMap<String, String> =
            serde_json::from_value(e["actionConfiguration"]["configuration"].clone()).unwrap();
        assert_eq!(
            d.action_configuration()
                .expect("actionConfiguration")
                .configuration()
                .cloned()
                .unwrap_or_default(),
            config
        );
        let p = d.pipeline_context().expect("pipelineContext");
        let ep = &e["pipelineContext"];
        assert_eq!(p.pipeline_name(), Some(text(&ep["pipelineName"])));
        assert_eq!(
            p.stage().and_then(|s| s.name()),
            Some(text(&ep["stage"]["name"]))
        );
        let a = p.action().expect("action");
        assert_eq!(a.name(), Some(text(&ep["action"]["name"])));
        assert_eq!(
            a.action_execution_id(),
            Some(text(&ep["action"]["actionExecutionId"]))
        );
        assert_eq!(p.pipeline_arn(), Some(text(&ep["pipelineArn"])));
        assert_eq!(
            p.pipeline_execution_id(),
            Some(text(&ep["pipelineExecutionId"]))
        );
        for (got, want) in [
            (d.input_artifacts(), &e["inputArtifacts"]),
            (d.output_artifacts(), &e["outputArtifacts"]),
        ] {
            let want = want.as_array().unwrap();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                assert_eq!(g.name(), Some(text(&w["name"])));
                assert_eq!(g.revision(), w.get("revision").map(text));
                let l = g.location().expect("location");
                assert_eq!(
                    l.r#type().map(|t| t.as_str()),
                    Some(text(&w["location"]["type"]))
                );
                let s3 = l.s3_location().expect("s3Location");
                assert_eq!(
                    s3.bucket_name(),
                    text(&w["location"]["s3Location"]["bucketName"])
                );
                assert_eq!(
                    s3.object_key(),
                    text(&w["location"]["s3Location"]["objectKey"])
                );
            }
        }
        let c = d.artifact_credentials().expect("artifactCredentials");
        assert_eq!(
            c.access_key_id(),
            text(&e["artifactCredentials"]["accessKeyId"])
        );
        assert_eq!(
            c.secret_access_key(),
            text(&e["artifactCredentials"]["secretAccessKey"])
        );
        assert_eq!(
            c.session_token(),
            text(&e["artifactCredentials"]["sessionToken"])
        );
        assert_eq!(d.continuation_token(), e.get("continuationToken").map(text));
        let k = d.encryption_key().expect("encryptionKey");
        assert_eq!(k.id(), text(&e["encryptionKey"]["id"]));
        assert_eq!(k.r#type().as_str(), text(&e["encryptionKey"]["type"]));
    }};
}

/// The fixed and generated parts of job data every job has.
fn assert_data_shape(
    data: &Value,
    action_type: &ActionTypeId,
    pipeline: &str,
    config: &BTreeMap<String, String>,
) {
    assert_eq!(
        data["actionTypeId"],
        serde_json::to_value(action_type).unwrap()
    );
    assert_eq!(
        data["actionConfiguration"],
        json!({ "configuration": config })
    );
    let p = &data["pipelineContext"];
    assert_eq!(p["pipelineName"], json!(pipeline));
    assert_eq!(p["stage"]["name"], json!(action_type.category));
    assert_eq!(p["action"]["name"], json!(action_type.provider));
    assert!(is_uuid(text(&p["action"]["actionExecutionId"])));
    assert_eq!(
        p["pipelineArn"],
        json!(format!(
            "arn:aws:codepipeline:us-east-1:123456789012:{pipeline}"
        ))
    );
    assert!(is_uuid(text(&p["pipelineExecutionId"])));
    let bucket = json!("codepipeline-us-east-1-123456789012");
    let input = data["inputArtifacts"].as_array().unwrap();
    assert_eq!(input.len(), 1);
    assert_eq!(input[0]["name"], json!("SourceOutput"));
    assert_eq!(text(&input[0]["revision"]).len(), 40);
    assert_eq!(input[0]["location"]["type"], json!("S3"));
    assert_eq!(input[0]["location"]["s3Location"]["bucketName"], bucket);
    let output = data["outputArtifacts"].as_array().unwrap();
    assert_eq!(output.len(), 1);
    assert_eq!(
        output[0]["name"],
        json!(format!("{}Output", action_type.category))
    );
    assert!(output[0].get("revision").is_none());
    assert_eq!(output[0]["location"]["s3Location"]["bucketName"], bucket);
    for a in input.iter().chain(output) {
        let key = text(&a["location"]["s3Location"]["objectKey"]);
        assert!(
            key.starts_with(&format!("{}/", &pipeline[..pipeline.len().min(20)])),
            "{key}"
        );
    }
    let c = &data["artifactCredentials"];
    assert!(text(&c["accessKeyId"]).starts_with("ASIA"));
    assert_eq!(text(&c["accessKeyId"]).len(), 20);
    assert_eq!(text(&c["secretAccessKey"]).len(), 40);
    assert!(text(&c["sessionToken"]).len() > 100);
    assert_eq!(
        data["encryptionKey"],
        json!({"id": "arn:aws:kms:us-east-1:123456789012:alias/aws/s3", "type": "KMS"})
    );
}

async fn poll(
    c: &Client,
    t: &ActionTypeId,
    max: Option<i32>,
) -> Vec<aws_sdk_codepipeline::types::Job> {
    c.poll_for_jobs()
        .action_type_id(sdk_type(t))
        .set_max_batch_size(max)
        .send()
        .await
        .expect("poll")
        .jobs()
        .to_vec()
}

async fn poll_partner(c: &Client, t: &ActionTypeId, max: Option<i32>) -> Vec<(String, String)> {
    c.poll_for_third_party_jobs()
        .action_type_id(sdk_type(t))
        .set_max_batch_size(max)
        .send()
        .await
        .expect("poll partner")
        .jobs()
        .iter()
        .map(|j| {
            (
                j.job_id().unwrap().to_owned(),
                j.client_id().unwrap().to_owned(),
            )
        })
        .collect()
}

fn ids(jobs: &[aws_sdk_codepipeline::types::Job]) -> Vec<String> {
    jobs.iter().map(|j| j.id().unwrap().to_owned()).collect()
}

fn state(emu: &Emulator, id: &str) -> JobState {
    emu.job(id).unwrap().state
}

#[tokio::test]
async fn poll_for_jobs_returns_every_field_and_dispatches_once() {
    let emu = emulator().await;
    let c = client(&emu);
    let config: BTreeMap<String, String> = [
        ("ProjectName".to_owned(), "cpgw".to_owned()),
        ("Target".to_owned(), "x86_64".to_owned()),
    ]
    .into();
    let job = emu.create_job(NewJob {
        configuration: config.clone(),
        pipeline_name: Some("release-pipeline".to_owned()),
        ..NewJob::default()
    });
    assert_eq!(job.kind, JobKind::Custom);
    assert_eq!(job.action_type_id, ActionTypeId::default_custom());
    assert_eq!(state(&emu, &job.job_id), JobState::Queued);
    assert_eq!(emu.job(&job.job_id).unwrap().nonce, None);

    let jobs = poll(&c, &ActionTypeId::default_custom(), None).await;
    assert_eq!(jobs.len(), 1);
    let j = &jobs[0];
    let snap = emu.job(&job.job_id).unwrap();
    assert_eq!(snap.state, JobState::Dispatched);
    assert_eq!(j.id(), Some(job.job_id.as_str()));
    assert_eq!(j.account_id(), Some(ACCOUNT_ID));
    let nonce = j.nonce().expect("nonce");
    assert!(!nonce.is_empty() && nonce.len() <= 50);
    assert_eq!(snap.nonce.as_deref(), Some(nonce));
    let expected = emu.job_data(&job.job_id).unwrap();
    assert_data_shape(
        &expected,
        &ActionTypeId::default_custom(),
        "release-pipeline",
        &config,
    );
    assert!(expected.get("continuationToken").is_none());
    assert_data_eq!(j.data().expect("data"), &expected);

    // Dispatched jobs are not handed out again.
    assert!(
        poll(&c, &ActionTypeId::default_custom(), Some(10))
            .await
            .is_empty()
    );
    assert_eq!(state(&emu, &job.job_id), JobState::Dispatched);
}

#[tokio::test]
async fn artifact_credentials_are_fresh_per_job() {
    let emu = emulator().await;
    let a = emu.create_custom_job();
    let b = emu.create_custom_job();
    let (da, db) = (
        emu.job_data(&a.job_id).unwrap(),
        emu.job_data(&b.job_id).unwrap(),
    );
    for field in ["accessKeyId", "secretAccessKey", "sessionToken"] {
        assert_ne!(
            da["artifactCredentials"][field],
            db["artifactCredentials"][field]
        );
    }
    assert_ne!(
        da["pipelineContext"]["pipelineExecutionId"],
        db["pipelineContext"]["pipelineExecutionId"]
    );
    assert!(emu.job_data(UNKNOWN_JOB).is_none());
}

#[tokio::test]
async fn poll_errors_and_registration() {
    let emu = emulator().await;
    let c = client(&emu);
    let partner_job = emu.create_third_party_job();

    // PollForJobs serves only Custom owners, PollForThirdPartyJobs only ThirdParty.
    let err = c
        .poll_for_jobs()
        .action_type_id(sdk_type(&ActionTypeId::default_third_party()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "ValidationException");
    assert!(err.as_service_error().unwrap().is_validation_exception());
    let err = c
        .poll_for_third_party_jobs()
        .action_type_id(sdk_type(&ActionTypeId::default_custom()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "ValidationException");
    let err = c
        .poll_for_jobs()
        .action_type_id(sdk_type(&ActionTypeId::new(
            "Build",
            "AWS",
            "CodeBuild",
            "1",
        )))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "ValidationException");
    // A wrong owner dispatches nothing.
    assert_eq!(state(&emu, &partner_job.job_id), JobState::Queued);

    // Unregistered types.
    let unknown = ActionTypeId::new("Test", "Custom", "Nobody", "7");
    let err = c
        .poll_for_jobs()
        .action_type_id(sdk_type(&unknown))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "ActionTypeNotFoundException");
    assert!(
        err.as_service_error()
            .unwrap()
            .is_action_type_not_found_exception()
    );
    let unknown_partner = ActionTypeId::new("Deploy", "ThirdParty", "Nobody", "1");
    let err = c
        .poll_for_third_party_jobs()
        .action_type_id(sdk_type(&unknown_partner))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "ActionTypeNotFoundException");
    assert!(
        err.as_service_error()
            .unwrap()
            .is_action_type_not_found_exception()
    );
    // A different version of a registered provider is a different type.
    let other_version = ActionTypeId::new("Build", "Custom", "CpgwDevBuilder", "2");
    let err = c
        .poll_for_jobs()
        .action_type_id(sdk_type(&other_version))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "ActionTypeNotFoundException");

    // Once registered (Rust API or control API), polls succeed with no jobs.
    emu.register_action_type(unknown.clone());
    emu.register_action_type(unknown.clone()); // idempotent
    assert!(poll(&c, &unknown, None).await.is_empty());
    let r = common::raw(
        &emu,
        "POST",
        "/_emulator/action-types",
        &[],
        serde_json::to_string(&unknown_partner).unwrap().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(poll_partner(&c, &unknown_partner, None).await.is_empty());
    assert_eq!(
        emu.action_types(),
        vec![
            ActionTypeId::default_custom(),
            ActionTypeId::default_third_party(),
            unknown,
            unknown_partner,
        ]
    );
    // Nothing to poll for the defaults is an empty list, not an error.
    assert!(
        poll(&c, &ActionTypeId::default_custom(), None)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn max_batch_size_oldest_first_and_exact_type() {
    let emu = emulator().await;
    let c = client(&emu);
    let other = ActionTypeId::new("Test", "Custom", "Tester", "1");
    let mut mine = Vec::new();
    for i in 0..5 {
        mine.push(emu.create_custom_job().job_id);
        if i % 2 == 0 {
            emu.create_job(NewJob {
                action_type_id: Some(other.clone()),
                ..NewJob::default()
            });
        }
    }
    // Partner jobs never show up in PollForJobs.
    emu.create_third_party_job();

    let t = ActionTypeId::default_custom();
    assert_eq!(ids(&poll(&c, &t, Some(2)).await), mine[0..2].to_vec());
    assert_eq!(ids(&poll(&c, &t, None).await), mine[2..3].to_vec());
    let rest = poll(&c, &t, Some(100)).await;
    assert_eq!(ids(&rest), mine[3..5].to_vec());
    // Each job of a batch has its own nonce.
    assert_ne!(rest[0].nonce(), rest[1].nonce());
    assert!(poll(&c, &t, Some(100)).await.is_empty());

    let others = poll(&c, &other, Some(100)).await;
    assert_eq!(others.len(), 3);
    for j in &others {
        assert_eq!(
            j.data().unwrap().action_type_id().unwrap().provider(),
            "Tester"
        );
    }

    // Partner polls: batch size and order too.
    let partners: Vec<String> = (0..3)
        .map(|_| emu.create_third_party_job().job_id)
        .collect();
    let pt = ActionTypeId::default_third_party();
    let got = poll_partner(&c, &pt, Some(2)).await;
    // The partner job created earlier is the oldest.
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].0, partners[0]);
    let got = poll_partner(&c, &pt, Some(5)).await;
    assert_eq!(
        got.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        partners[1..3].to_vec()
    );
    assert!(poll_partner(&c, &pt, None).await.is_empty());
}

#[tokio::test]
async fn query_param_filters_on_configuration() {
    let emu = emulator().await;
    let c = client(&emu);
    let with = |pairs: &[(&str, &str)]| {
        emu.create_job(NewJob {
            configuration: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..NewJob::default()
        })
        .job_id
    };
    let prod = with(&[("Env", "prod"), ("Team", "a")]);
    let dev = with(&[("Env", "dev")]);
    let dev2 = with(&[("Env", "dev"), ("Team", "b")]);
    let none = with(&[]);
    let t = sdk_type(&ActionTypeId::default_custom());

    let q = |key: &'static str, value: &'static str| {
        c.poll_for_jobs()
            .action_type_id(t.clone())
            .max_batch_size(10)
            .query_param(key, value)
            .send()
    };
    let got = q("Env", "dev").await.unwrap();
    assert_eq!(ids(got.jobs()), vec![dev.clone(), dev2.clone()]);
    for j in got.jobs() {
        assert_eq!(
            j.data()
                .unwrap()
                .action_configuration()
                .unwrap()
                .configuration()
                .unwrap()["Env"],
            "dev"
        );
    }
    assert!(q("Env", "staging").await.unwrap().jobs().is_empty());
    assert!(q("Missing", "x").await.unwrap().jobs().is_empty());
    // Values match exactly (case-sensitive).
    assert!(q("Env", "PROD").await.unwrap().jobs().is_empty());
    assert_eq!(ids(q("Env", "prod").await.unwrap().jobs()), vec![prod]);
    // Two query parameters are a model violation.
    let err = c
        .poll_for_jobs()
        .action_type_id(t.clone())
        .query_param("Env", "dev")
        .query_param("Team", "b")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "ValidationException");
    // Without a query, the rest.
    assert_eq!(
        ids(&poll(&c, &ActionTypeId::default_custom(), Some(10)).await),
        vec![none]
    );
}

#[tokio::test]
async fn acknowledge_job_rules() {
    let emu = emulator().await;
    let c = client(&emu);
    let job = emu.create_custom_job();
    let partner = emu.create_third_party_job();
    let ack = |id: &str, nonce: &str| c.acknowledge_job().job_id(id).nonce(nonce).send();

    let err = ack(UNKNOWN_JOB, "n").await.unwrap_err();
    assert_eq!(code(&err), "JobNotFoundException");
    assert!(err.as_service_error().unwrap().is_job_not_found_exception());
    let err = ack(&partner.job_id, "n").await.unwrap_err();
    assert_eq!(code(&err), "JobNotFoundException");
    // Never polled: there is no dispatch to acknowledge.
    let err = ack(&job.job_id, "n").await.unwrap_err();
    assert_eq!(code(&err), "InvalidNonceException");
    assert!(err.as_service_error().unwrap().is_invalid_nonce_exception());
    assert_eq!(state(&emu, &job.job_id), JobState::Queued);

    let nonce = poll(&c, &ActionTypeId::default_custom(), None).await[0]
        .nonce()
        .unwrap()
        .to_owned();
    let err = ack(&job.job_id, "not-the-nonce").await.unwrap_err();
    assert_eq!(code(&err), "InvalidNonceException");
    assert_eq!(state(&emu, &job.job_id), JobState::Dispatched);

    let out = ack(&job.job_id, &nonce).await.expect("acknowledge");
    assert_eq!(out.status(), Some(&JobStatus::InProgress));
    assert_eq!(state(&emu, &job.job_id), JobState::InProgress);

    // A retried acknowledgement meets its own earlier success.
    let err = ack(&job.job_id, &nonce).await.unwrap_err();
    assert_eq!(code(&err), "InvalidNonceException");
    assert_eq!(state(&emu, &job.job_id), JobState::InProgress);
    // An acknowledged job is not handed out again.
    assert!(
        poll(&c, &ActionTypeId::default_custom(), Some(10))
            .await
            .is_empty()
    );

    // Finished jobs cannot be acknowledged either.
    c.put_job_success_result()
        .job_id(&job.job_id)
        .send()
        .await
        .unwrap();
    let err = ack(&job.job_id, &nonce).await.unwrap_err();
    assert_eq!(code(&err), "InvalidNonceException");
    assert_eq!(state(&emu, &job.job_id), JobState::Succeeded);
}

#[tokio::test]
async fn an_unacknowledged_job_is_offered_again_and_only_the_new_nonce_claims_it() {
    let emu = Emulator::start(EmulatorConfig {
        acknowledge_timeout: Duration::from_millis(300),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let c = client(&emu);
    let custom = ActionTypeId::default_custom();
    let job = emu.create_custom_job();
    let partner = emu.create_third_party_job();
    let partner_type = ActionTypeId::default_third_party();

    let first = poll(&c, &custom, None).await;
    assert_eq!(ids(&first), vec![job.job_id.clone()]);
    assert_eq!(poll_partner(&c, &partner_type, None).await.len(), 1);
    // Before the timeout, no other worker gets them.
    assert!(poll(&c, &custom, None).await.is_empty());
    assert!(poll_partner(&c, &partner_type, None).await.is_empty());

    tokio::time::sleep(Duration::from_millis(350)).await;
    let second = poll(&c, &custom, None).await;
    assert_eq!(ids(&second), vec![job.job_id.clone()]);
    let (old, new) = (first[0].nonce().unwrap(), second[0].nonce().unwrap());
    assert_ne!(old, new);
    assert_eq!(emu.job(&job.job_id).unwrap().dispatches, 2);
    assert_eq!(poll_partner(&c, &partner_type, None).await.len(), 1);
    assert_eq!(emu.job(&partner.job_id).unwrap().dispatches, 2);

    // The first poller's nonce is stale: only the second claims the job.
    let err = c
        .acknowledge_job()
        .job_id(&job.job_id)
        .nonce(old)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "InvalidNonceException");
    c.acknowledge_job()
        .job_id(&job.job_id)
        .nonce(new)
        .send()
        .await
        .expect("the latest nonce acknowledges");
    // Acknowledged: never offered again, however long it runs.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(poll(&c, &custom, Some(10)).await.is_empty());
    assert_eq!(state(&emu, &job.job_id), JobState::InProgress);
}

#[tokio::test]
async fn get_job_details_every_field_and_errors() {
    let emu = emulator().await;
    let c = client(&emu);
    let t = ActionTypeId::new("Deploy", "Custom", "Shipper", "3");
    let config: BTreeMap<String, String> = [("Region".to_owned(), "eu-west-1".to_owned())].into();
    let job = emu.create_job(NewJob {
        action_type_id: Some(t.clone()),
        configuration: config.clone(),
        pipeline_name: Some("shipping".to_owned()),
        ..NewJob::default()
    });
    assert_eq!(job.action_type_id, t);
    // Creating the job registered its type.
    assert!(emu.action_types().contains(&t));

    // Details are available in any state, without changing it.
    let out = c
        .get_job_details()
        .job_id(&job.job_id)
        .send()
        .await
        .expect("details");
    let d = out.job_details().expect("jobDetails");
    assert_eq!(d.id(), Some(job.job_id.as_str()));
    assert_eq!(d.account_id(), Some(ACCOUNT_ID));
    let expected = emu.job_data(&job.job_id).unwrap();
    assert_data_shape(&expected, &t, "shipping", &config);
    assert_data_eq!(d.data().expect("data"), &expected);
    assert_eq!(state(&emu, &job.job_id), JobState::Queued);

    let err = c
        .get_job_details()
        .job_id(UNKNOWN_JOB)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "JobNotFoundException");
    assert!(err.as_service_error().unwrap().is_job_not_found_exception());
    let partner = emu.create_third_party_job();
    let err = c
        .get_job_details()
        .job_id(&partner.job_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "JobNotFoundException");
}

#[tokio::test]
async fn put_job_failure_result_rules() {
    let emu = emulator().await;
    let c = client(&emu);
    let job = emu.create_custom_job();
    let partner = emu.create_third_party_job();
    let fail = |id: &str, details: FailureDetails| {
        c.put_job_failure_result()
            .job_id(id)
            .failure_details(details)
            .send()
    };
    let details = failure(
        FailureType::ConfigurationError,
        "bad config",
        Some("build-7"),
    );

    let err = fail(UNKNOWN_JOB, details.clone()).await.unwrap_err();
    assert_eq!(code(&err), "JobNotFoundException");
    let err = fail(&partner.job_id, details.clone()).await.unwrap_err();
    assert_eq!(code(&err), "JobNotFoundException");
    assert!(err.as_service_error().unwrap().is_job_not_found_exception());
    assert_eq!(emu.job(&partner.job_id).unwrap().failure, None);

    // Accepted for a job that was never polled.
    fail(&job.job_id, details.clone()).await.expect("failure");
    let snap = emu.job(&job.job_id).unwrap();
    assert_eq!((snap.state, snap.results_received), (JobState::Failed, 1));
    assert_eq!(
        snap.failure,
        Some(FailureSnapshot {
            failure_type: "ConfigurationError".to_owned(),
            message: "bad config".to_owned(),
            external_execution_id: Some("build-7".to_owned()),
        })
    );
    assert_eq!(
        emu.requests_for("PutJobFailureResult")[2].body,
        json!({"jobId": job.job_id, "failureDetails": {"type": "ConfigurationError", "message": "bad config", "externalExecutionId": "build-7"}})
    );

    // A failed job accepts no more results of either kind.
    let err = fail(&job.job_id, details).await.unwrap_err();
    assert_eq!(code(&err), "InvalidJobStateException");
    assert!(
        err.as_service_error()
            .unwrap()
            .is_invalid_job_state_exception()
    );
    let err = c
        .put_job_success_result()
        .job_id(&job.job_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&err), "InvalidJobStateException");
    // And a succeeded job accepts no failure.
    let done = emu.create_custom_job();
    c.put_job_success_result()
        .job_id(&done.job_id)
        .send()
        .await
        .unwrap();
    let err = fail(&done.job_id, failure(FailureType::JobFailed, "late", None))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "InvalidJobStateException");
    assert_eq!(emu.job(&done.job_id).unwrap().failure, None);
    assert_eq!(state(&emu, &job.job_id), JobState::Failed);
}

#[tokio::test]
async fn poll_for_third_party_jobs_every_field() {
    let emu = emulator().await;
    let c = client(&emu);
    let job = emu.create_third_party_job();
    assert_eq!(job.kind, JobKind::ThirdParty);
    assert_eq!(job.action_type_id, ActionTypeId::default_third_party());
    let out = c
        .poll_for_third_party_jobs()
        .action_type_id(sdk_type(&ActionTypeId::default_third_party()))
        .send()
        .await
        .expect("poll");
    assert_eq!(out.jobs().len(), 1);
    let j = &out.jobs()[0];
    assert_eq!(j.job_id(), Some(job.job_id.as_str()));
    assert_eq!(j.client_id(), job.client_id.as_deref());
    let snap = emu.job(&job.job_id).unwrap();
    assert_eq!(snap.state, JobState::Dispatched);
    let nonce = snap.nonce.expect("dispatch nonce");
    assert!(!nonce.is_empty() && nonce.len() <= 50);
    assert!(
        poll_partner(&c, &ActionTypeId::default_third_party(), Some(9))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn get_third_party_job_details_every_field_and_errors() {
    let emu = emulator().await;
    let c = client(&emu);
    let job = emu.create_third_party_job();
    let token = job.client_token.clone().unwrap();
    let custom = emu.create_custom_job();
    let details = |id: &str, token: &str| {
        c.get_third_party_job_details()
            .job_id(id)
            .client_token(token)
            .send()
    };

    // Before a poll there is no nonce yet.
    let out = details(&job.job_id, &token).await.expect("details");
    let d = out.job_details().unwrap();
    assert_eq!(d.id(), Some(job.job_id.as_str()));
    assert_eq!(d.nonce(), None);
    let expected = emu.job_data(&job.job_id).unwrap();
    assert_data_shape(
        &expected,
        &ActionTypeId::default_third_party(),
        "cpgw-dev-pipeline",
        &BTreeMap::new(),
    );
    assert_data_eq!(d.data().expect("data"), &expected);

    poll_partner(&c, &ActionTypeId::default_third_party(), None).await;
    let out = details(&job.job_id, &token).await.expect("details");
    let d = out.job_details().unwrap();
    assert_eq!(d.nonce(), emu.job(&job.job_id).unwrap().nonce.as_deref());
    assert!(d.nonce().is_some());
    assert_data_eq!(d.data().expect("data"), &expected);

    let err = details("no-such-job", &token).await.unwrap_err();
    assert_eq!(code(&err), "JobNotFoundException");
    assert!(err.as_service_error().unwrap().is_job_not_found_exception());
    let err = details(&custom.job_id, &token).await.unwrap_err();
    assert_eq!(code(&err), "InvalidJobException");
    assert!(err.as_service_error().unwrap().is_invalid_job_exception());
    let err = details(&job.job_id, "wrong-token").await.unwrap_err();
    assert_eq!(code(&err), "InvalidClientTokenException");
    assert!(
        err.as_service_error()
            .unwrap()
            .is_invalid_client_token_exception()
    );
}

#[tokio::test]
async fn acknowledge_third_party_job_rules() {
    let emu = emulator().await;
    let c = client(&emu);
    let job = emu.create_third_party_job();
    let token = job.client_token.clone().unwrap();
    let custom = emu.create_custom_job();
    let ack = |id: &str, nonce: &str, token: &str| {
        c.acknowledge_third_party_job()
            .job_id(id)
            .nonce(nonce)
            .client_token(token)
            .send()
    };

    let err = ack(UNKNOWN_JOB, "n", &token).await.unwrap_err();
    assert_eq!(code(&err), "JobNotFoundException");
    let err = ack(&custom.job_id, "n", &token).await.unwrap_err();
    assert_eq!(code(&err), "JobNotFoundException");
    let err = ack(&job.job_id, "n", &token).await.unwrap_err();
    assert_eq!(code(&err), "InvalidNonceException");

    poll_partner(&c, &ActionTypeId::default_third_party(), None).await;
    let nonce = emu.job(&job.job_id).unwrap().nonce.unwrap();
    // The token is checked before the nonce.
    let err = ack(&job.job_id, &nonce, "wrong-token").await.unwrap_err();
    assert_eq!(code(&err), "InvalidClientTokenException");
    let err = ack(&job.job_id, "wrong-nonce", "wrong-token")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "InvalidClientTokenException");
    let err = ack(&job.job_id, "wrong-nonce", &token).await.unwrap_err();
    assert_eq!(code(&err), "InvalidNonceException");
    assert!(err.as_service_error().unwrap().is_invalid_nonce_exception());
    assert_eq!(state(&emu, &job.job_id), JobState::Dispatched);

    let out = ack(&job.job_id, &nonce, &token).await.expect("acknowledge");
    assert_eq!(out.status(), Some(&JobStatus::InProgress));
    assert_eq!(state(&emu, &job.job_id), JobState::InProgress);
    let err = ack(&job.job_id, &nonce, &token).await.unwrap_err();
    assert_eq!(code(&err), "InvalidNonceException");
    assert!(
        poll_partner(&c, &ActionTypeId::default_third_party(), Some(5))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn put_third_party_job_failure_result_rules() {
    let emu = emulator().await;
    let c = client(&emu);
    let job = emu.create_third_party_job();
    let token = job.client_token.clone().unwrap();
    let custom = emu.create_custom_job();
    let fail = |id: &str, token: &str| {
        c.put_third_party_job_failure_result()
            .job_id(id)
            .client_token(token)
            .failure_details(failure(FailureType::RevisionOutOfSync, "stale", None))
            .send()
    };
    let err = fail("no-such-job", &token).await.unwrap_err();
    assert_eq!(code(&err), "JobNotFoundException");
    let err = fail(&custom.job_id, &token).await.unwrap_err();
    assert_eq!(code(&err), "JobNotFoundException");
    let err = fail(&job.job_id, "wrong-token").await.unwrap_err();
    assert_eq!(code(&err), "InvalidClientTokenException");
    assert!(
        err.as_service_error()
            .unwrap()
            .is_invalid_client_token_exception()
    );
    assert_eq!(state(&emu, &job.job_id), JobState::Queued);

    fail(&job.job_id, &token).await.expect("failure");
    let snap = emu.job(&job.job_id).unwrap();
    assert_eq!((snap.state, snap.results_received), (JobState::Failed, 1));
    assert_eq!(
        snap.failure,
        Some(FailureSnapshot {
            failure_type: "RevisionOutOfSync".to_owned(),
            message: "stale".to_owned(),
            external_execution_id: None,
        })
    );
    let err = fail(&job.job_id, &token).await.unwrap_err();
    assert_eq!(code(&err), "InvalidJobStateException");
    // The token check comes before the state check.
    let err = fail(&job.job_id, "wrong-token").await.unwrap_err();
    assert_eq!(code(&err), "InvalidClientTokenException");
}

#[tokio::test]
async fn custom_lifecycle_with_a_continuation() {
    let emu = emulator().await;
    let c = client(&emu);
    let t = ActionTypeId::new("Build", "Custom", "LongBuild", "2");
    emu.register_action_type(t.clone());
    let config: BTreeMap<String, String> = [("Project".to_owned(), "big".to_owned())].into();
    let job = emu.create_job(NewJob {
        action_type_id: Some(t.clone()),
        configuration: config.clone(),
        pipeline_name: Some("long-builds".to_owned()),
        ..NewJob::default()
    });

    // poll → acknowledge → details
    let polled = poll(&c, &t, None).await;
    assert_eq!(ids(&polled), vec![job.job_id.clone()]);
    let ack = c
        .acknowledge_job()
        .job_id(&job.job_id)
        .nonce(polled[0].nonce().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), Some(&JobStatus::InProgress));
    let details = c
        .get_job_details()
        .job_id(&job.job_id)
        .send()
        .await
        .unwrap();
    let first_data = emu.job_data(&job.job_id).unwrap();
    assert_data_eq!(details.job_details().unwrap().data().unwrap(), &first_data);

    // A continuation result closes the job, as CodePipeline does, and
    // queues a continuation job in which the action goes on.
    c.put_job_success_result()
        .job_id(&job.job_id)
        .continuation_token("build-42/phase-2")
        .send()
        .await
        .unwrap();
    let snap = emu.job(&job.job_id).unwrap();
    assert_eq!(snap.state, JobState::Succeeded);
    assert_eq!(snap.continuation_token.as_deref(), Some("build-42/phase-2"));
    assert_eq!(snap.continuation_of, None);

    // The continuation job is polled like any other and carries the token.
    let polled = poll(&c, &t, Some(10)).await;
    assert_eq!(polled.len(), 1);
    let cont_id = polled[0].id().unwrap().to_owned();
    assert_ne!(cont_id, job.job_id);
    let cont = emu.job(&cont_id).unwrap();
    assert_eq!(cont.continuation_of.as_deref(), Some(job.job_id.as_str()));
    assert_eq!(
        (cont.kind, cont.state),
        (JobKind::Custom, JobState::Dispatched)
    );
    assert_eq!(cont.action_type_id, t);
    let data = polled[0].data().unwrap();
    assert_eq!(data.continuation_token(), Some("build-42/phase-2"));
    let cont_data = emu.job_data(&cont_id).unwrap();
    assert_data_eq!(data, &cont_data);
    assert_data_shape(&cont_data, &t, "long-builds", &config);
    // Same action type, pipeline context, configuration and artifacts; fresh credentials.
    for same in [
        "actionTypeId",
        "actionConfiguration",
        "pipelineContext",
        "inputArtifacts",
        "outputArtifacts",
        "encryptionKey",
    ] {
        assert_eq!(cont_data[same], first_data[same], "{same}");
    }
    assert_ne!(
        cont_data["artifactCredentials"],
        first_data["artifactCredentials"]
    );

    c.acknowledge_job()
        .job_id(&cont_id)
        .nonce(polled[0].nonce().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(state(&emu, &cont_id), JobState::InProgress);
    c.put_job_success_result()
        .job_id(&cont_id)
        .output_variables("ARTIFACT", "s3://bucket/key")
        .send()
        .await
        .unwrap();
    assert_eq!(state(&emu, &cont_id), JobState::Succeeded);
    assert!(poll(&c, &t, Some(10)).await.is_empty());
    let all: Vec<_> = emu.jobs().into_iter().map(|j| j.job_id).collect();
    assert_eq!(all, vec![job.job_id.clone(), cont_id]);
}

#[tokio::test]
async fn custom_lifecycle_ending_in_failure() {
    let emu = emulator().await;
    let c = client(&emu);
    let job = emu.create_custom_job();
    let polled = poll(&c, &ActionTypeId::default_custom(), None).await;
    c.acknowledge_job()
        .job_id(&job.job_id)
        .nonce(polled[0].nonce().unwrap())
        .send()
        .await
        .unwrap();
    c.put_job_failure_result()
        .job_id(&job.job_id)
        .failure_details(failure(
            FailureType::JobFailed,
            "tests failed",
            Some("run-9"),
        ))
        .send()
        .await
        .unwrap();
    let snap = emu.job(&job.job_id).unwrap();
    assert_eq!(snap.state, JobState::Failed);
    assert_eq!(snap.failure.unwrap().message, "tests failed");
    // No continuation job for failures.
    assert_eq!(emu.jobs().len(), 1);
}

#[tokio::test]
async fn partner_lifecycle_with_a_continuation() {
    let emu = emulator().await;
    let c = client(&emu);
    let t = ActionTypeId::default_third_party();
    let job = emu.create_third_party_job();
    let (client_id, token) = (
        job.client_id.clone().unwrap(),
        job.client_token.clone().unwrap(),
    );

    // poll → details (nonce) → acknowledge
    let polled = poll_partner(&c, &t, None).await;
    assert_eq!(polled, vec![(job.job_id.clone(), client_id.clone())]);
    let details = c
        .get_third_party_job_details()
        .job_id(&job.job_id)
        .client_token(&token)
        .send()
        .await
        .unwrap();
    let nonce = details.job_details().unwrap().nonce().unwrap().to_owned();
    c.acknowledge_third_party_job()
        .job_id(&job.job_id)
        .nonce(&nonce)
        .client_token(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(state(&emu, &job.job_id), JobState::InProgress);

    c.put_third_party_job_success_result()
        .job_id(&job.job_id)
        .client_token(&token)
        .continuation_token("deploy-step-2")
        .send()
        .await
        .unwrap();
    assert_eq!(state(&emu, &job.job_id), JobState::Succeeded);

    // The continuation job belongs to the same partner client.
    let polled = poll_partner(&c, &t, Some(10)).await;
    assert_eq!(polled.len(), 1);
    let (cont_id, cont_client) = polled[0].clone();
    assert_ne!(cont_id, job.job_id);
    assert_eq!(cont_client, client_id);
    let cont = emu.job(&cont_id).unwrap();
    assert_eq!(cont.continuation_of.as_deref(), Some(job.job_id.as_str()));
    assert_eq!(cont.kind, JobKind::ThirdParty);
    let details = c
        .get_third_party_job_details()
        .job_id(&cont_id)
        .client_token(&token)
        .send()
        .await
        .unwrap();
    let d = details.job_details().unwrap();
    assert_eq!(
        d.data().unwrap().continuation_token(),
        Some("deploy-step-2")
    );
    assert_data_eq!(d.data().unwrap(), &emu.job_data(&cont_id).unwrap());
    let cont_nonce = d.nonce().unwrap().to_owned();
    assert_ne!(cont_nonce, nonce);
    c.acknowledge_third_party_job()
        .job_id(&cont_id)
        .nonce(&cont_nonce)
        .client_token(&token)
        .send()
        .await
        .unwrap();
    c.put_third_party_job_success_result()
        .job_id(&cont_id)
        .client_token(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(state(&emu, &cont_id), JobState::Succeeded);
    // The original job was closed by its continuation result.
    let again = c
        .put_third_party_job_success_result()
        .job_id(&job.job_id)
        .client_token(&token)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&again), "InvalidJobStateException");
    assert!(poll_partner(&c, &t, Some(10)).await.is_empty());
}

#[tokio::test]
async fn partner_lifecycle_ending_in_failure() {
    let emu = emulator().await;
    let c = client(&emu);
    let job = emu.create_third_party_job();
    let token = job.client_token.clone().unwrap();
    poll_partner(&c, &ActionTypeId::default_third_party(), None).await;
    let nonce = c
        .get_third_party_job_details()
        .job_id(&job.job_id)
        .client_token(&token)
        .send()
        .await
        .unwrap()
        .job_details()
        .unwrap()
        .nonce()
        .unwrap()
        .to_owned();
    c.acknowledge_third_party_job()
        .job_id(&job.job_id)
        .nonce(nonce)
        .client_token(&token)
        .send()
        .await
        .unwrap();
    c.put_third_party_job_failure_result()
        .job_id(&job.job_id)
        .client_token(&token)
        .failure_details(failure(
            FailureType::PermissionError,
            "no access to the account",
            Some("deploy-3"),
        ))
        .send()
        .await
        .unwrap();
    let snap = emu.job(&job.job_id).unwrap();
    assert_eq!(snap.state, JobState::Failed);
    assert_eq!(
        snap.failure,
        Some(FailureSnapshot {
            failure_type: "PermissionError".to_owned(),
            message: "no access to the account".to_owned(),
            external_execution_id: Some("deploy-3".to_owned()),
        })
    );
}

#[tokio::test]
#[should_panic(expected = "owner 'Custom'")]
async fn create_job_panics_on_an_owner_that_does_not_match_the_kind() {
    let emu = emulator().await;
    emu.create_job(NewJob {
        kind: JobKind::Custom,
        action_type_id: Some(ActionTypeId::default_third_party()),
        ..NewJob::default()
    });
}

#[tokio::test]
#[should_panic(expected = "actionTypeId.category")]
async fn register_action_type_panics_on_a_model_violation() {
    let emu = emulator().await;
    emu.register_action_type(ActionTypeId::new("Bake", "Custom", "Oven", "1"));
}
