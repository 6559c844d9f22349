//! Accounts, regions and STS over raw HTTP, signed with the crate's own
//! signer: what AssumeRole hands out, and that a forged, missing or expired
//! session token, or a region the emulator does not serve, is refused
//! without touching any job.

mod common;

use std::time::{Duration, SystemTime};

use codepipeline_emulator::{
    ACCOUNT_ID, DEV_ACCESS_KEY_ID, DEV_REGION, DEV_SECRET_ACCESS_KEY, Emulator, JobState, NewJob,
    Place, Role,
};
use common::{RawResponse, emulator, raw};
use serde_json::json;

const OTHER_ACCOUNT: &str = "222222222222";
const OTHER_REGION: &str = "us-west-2";

struct Key<'a> {
    id: &'a str,
    secret: &'a str,
    token: Option<&'a str>,
    region: &'a str,
}

const HOME: Key<'static> = Key {
    id: DEV_ACCESS_KEY_ID,
    secret: DEV_SECRET_ACCESS_KEY,
    token: None,
    region: DEV_REGION,
};

/// A POST signed with `key` for `service`; `extra` headers are signed too.
async fn send(
    emu: &Emulator,
    key: &Key<'_>,
    service: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> RawResponse {
    let host = emu.local_addr().to_string();
    let date = codepipeline_emulator::sigv4::amz_date(SystemTime::now());
    let mut headers = vec![("host", host.as_str()), ("x-amz-date", date.as_str())];
    headers.extend_from_slice(extra);
    if let Some(token) = key.token {
        headers.push(("x-amz-security-token", token));
    }
    let auth = codepipeline_emulator::sigv4::sign(
        "POST",
        "/",
        &headers,
        body.as_bytes(),
        key.id,
        key.secret,
        key.region,
        service,
        &date,
    );
    let mut sent: Vec<(&str, &str)> = headers.into_iter().filter(|(k, _)| *k != "host").collect();
    sent.push(("authorization", auth.as_str()));
    raw(emu, "POST", "/", &sent, body.as_bytes()).await
}

async fn codepipeline(emu: &Emulator, key: &Key<'_>, operation: &str, body: &str) -> RawResponse {
    let target = format!("CodePipeline_20150709.{operation}");
    let headers = [
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", target.as_str()),
    ];
    send(emu, key, "codepipeline", &headers, body).await
}

async fn assume_role(emu: &Emulator, role_arn: &str, external_id: Option<&str>) -> RawResponse {
    let mut body = format!(
        "Action=AssumeRole&Version=2011-06-15&RoleSessionName=cpgw&RoleArn={}",
        role_arn.replace(':', "%3A").replace('/', "%2F")
    );
    if let Some(id) = external_id {
        body.push_str(&format!("&ExternalId={id}"));
    }
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    send(emu, &HOME, "sts", &headers, &body).await
}

/// The text of `<tag>` in an XML answer.
fn xml<'a>(body: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = body
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {body}"))
        + open.len();
    let end = body[start..].find("</").unwrap() + start;
    &body[start..end]
}

/// Session credentials for a role in OTHER_ACCOUNT: (key id, secret, token).
async fn session(emu: &Emulator, lifetime: Option<Duration>) -> (String, String, String) {
    let mut role = Role::new(OTHER_ACCOUNT, "gateway");
    role.external_id = Some("ext-1".into());
    role.session_lifetime = lifetime;
    emu.add_role(role.clone());
    let r = assume_role(emu, &role.role_arn, Some("ext-1")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        xml(&r.body, "Arn"),
        format!("arn:aws:sts::{OTHER_ACCOUNT}:assumed-role/gateway/cpgw")
    );
    (
        xml(&r.body, "AccessKeyId").to_owned(),
        xml(&r.body, "SecretAccessKey").to_owned(),
        xml(&r.body, "SessionToken").to_owned(),
    )
}

fn job_in_other_account(emu: &Emulator) -> String {
    emu.create_job(NewJob {
        place: Some(Place::new(OTHER_ACCOUNT, OTHER_REGION)),
        ..NewJob::default()
    })
    .job_id
}

fn aws_error(r: &RawResponse) -> (u16, String) {
    (
        r.status,
        r.json()["__type"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn a_session_acts_in_its_roles_account_and_region_only() {
    let emu = emulator().await;
    let (id, secret, token) = session(&emu, None).await;
    let theirs = job_in_other_account(&emu);
    let ours = emu.create_custom_job().job_id;
    let key = Key {
        id: &id,
        secret: &secret,
        token: Some(&token),
        region: OTHER_REGION,
    };
    let r = codepipeline(
        &emu,
        &key,
        "GetJobDetails",
        &json!({"jobId": theirs}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["jobDetails"]["accountId"], OTHER_ACCOUNT);
    // The home account's job does not exist for that account, nor the other
    // account's job for the home key, nor in another region.
    let r = codepipeline(
        &emu,
        &key,
        "GetJobDetails",
        &json!({"jobId": ours}).to_string(),
    )
    .await;
    assert_eq!(aws_error(&r), (400, "JobNotFoundException".into()));
    let r = codepipeline(
        &emu,
        &HOME,
        "GetJobDetails",
        &json!({"jobId": theirs}).to_string(),
    )
    .await;
    assert_eq!(aws_error(&r), (400, "JobNotFoundException".into()));
    let elsewhere = Key {
        region: DEV_REGION,
        ..key
    };
    let r = codepipeline(
        &emu,
        &elsewhere,
        "GetJobDetails",
        &json!({"jobId": theirs}).to_string(),
    )
    .await;
    assert_eq!(aws_error(&r), (400, "JobNotFoundException".into()));
    assert_eq!(emu.assume_role_calls()[0].caller_account_id, ACCOUNT_ID);
}

#[tokio::test]
async fn a_forged_missing_or_expired_session_token_is_refused_and_nothing_is_applied() {
    let emu = emulator().await;
    let (id, secret, token) = session(&emu, Some(Duration::from_secs(1))).await;
    let job = job_in_other_account(&emu);
    let report = json!({"jobId": job}).to_string();
    let forged = format!("{token}x");
    for (what, token, expected) in [
        (
            "forged",
            Some(forged.as_str()),
            (403, "UnrecognizedClientException"),
        ),
        ("missing", None, (403, "UnrecognizedClientException")),
    ] {
        let key = Key {
            id: &id,
            secret: &secret,
            token,
            region: OTHER_REGION,
        };
        let r = codepipeline(&emu, &key, "PutJobSuccessResult", &report).await;
        assert_eq!(
            aws_error(&r),
            (expected.0, expected.1.into()),
            "{what}: {r:?}"
        );
    }
    // A secret that is not the session's.
    let key = Key {
        id: &id,
        secret: DEV_SECRET_ACCESS_KEY,
        token: Some(&token),
        region: OTHER_REGION,
    };
    let r = codepipeline(&emu, &key, "PutJobSuccessResult", &report).await;
    assert_eq!(aws_error(&r), (403, "InvalidSignatureException".into()));
    // A region the emulator does not serve.
    let key = Key {
        id: &id,
        secret: &secret,
        token: Some(&token),
        region: "ap-south-2",
    };
    let r = codepipeline(&emu, &key, "PutJobSuccessResult", &report).await;
    assert_eq!(aws_error(&r), (403, "InvalidSignatureException".into()));
    // The real session, once its lifetime is over.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let key = Key {
        id: &id,
        secret: &secret,
        token: Some(&token),
        region: OTHER_REGION,
    };
    let r = codepipeline(&emu, &key, "PutJobSuccessResult", &report).await;
    assert_eq!(aws_error(&r), (400, "ExpiredTokenException".into()));
    assert_eq!(
        emu.job(&job).unwrap().state,
        JobState::Queued,
        "nothing was applied"
    );
    // Nothing secret in what the emulator recorded of the calls.
    let recorded = serde_json::to_string(&emu.assume_role_calls()).unwrap();
    assert!(
        !recorded.contains(&secret) && !recorded.contains(&token),
        "{recorded}"
    );
}

#[tokio::test]
async fn assume_role_refuses_a_wrong_external_id_an_untrusted_caller_and_other_actions() {
    let emu = emulator().await;
    let mut role = Role::new(OTHER_ACCOUNT, "gateway");
    role.external_id = Some("ext-1".into());
    emu.add_role(role.clone());
    let mut untrusting = Role::new(OTHER_ACCOUNT, "untrusting");
    untrusting.trusted_accounts = vec!["999999999999".into()];
    emu.add_role(untrusting.clone());
    for (arn, external_id) in [
        (role.role_arn.as_str(), Some("ext-2")),
        (role.role_arn.as_str(), None),
        (untrusting.role_arn.as_str(), None),
        ("arn:aws:iam::222222222222:role/nobody", None),
    ] {
        let r = assume_role(&emu, arn, external_id).await;
        assert_eq!(r.status, 403, "{arn} {external_id:?}: {r:?}");
        assert_eq!(xml(&r.body, "Code"), "AccessDenied");
        assert!(!r.body.contains("<Credentials>"));
    }
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    let r = send(
        &emu,
        &HOME,
        "sts",
        &headers,
        "Action=GetSessionToken&Version=2011-06-15",
    )
    .await;
    assert_eq!((r.status, xml(&r.body, "Code")), (400, "InvalidAction"));
    // Signed with a wrong secret: no credentials either.
    let wrong = Key {
        secret: "not-the-secret",
        ..HOME
    };
    let body = format!(
        "Action=AssumeRole&RoleSessionName=cpgw&RoleArn={}",
        role.role_arn
    );
    let r = send(&emu, &wrong, "sts", &headers, &body).await;
    assert_eq!(
        (r.status, xml(&r.body, "Code")),
        (403, "SignatureDoesNotMatch")
    );
    let calls = emu.assume_role_calls();
    assert_eq!(
        calls.len(),
        4,
        "the unsigned and the other action are not AssumeRole calls"
    );
    assert!(
        calls
            .iter()
            .all(|c| c.error.as_deref() == Some("AccessDenied") && c.issued.is_none())
    );
}
