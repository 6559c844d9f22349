//! The unauthenticated control API under `/_emulator/` (see the crate docs for
//! the routes). All bodies are JSON; bad input gets 400 `{"message": …}`.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::accounts::Role;
use crate::faults::{Fault, FaultKind};
use crate::model::model;
use crate::response::{HttpResponse, json_response};
use crate::shared::Shared;
use crate::state::{ActionTypeId, Job, JobKind, NewJob, Place};

const CONTENT_TYPE: &str = "application/json";

pub(crate) fn handle(shared: &Shared, method: &Method, path: &str, body: &[u8]) -> HttpResponse {
    let path = path.trim_end_matches('/');
    let response = match (method.as_str(), path) {
        ("POST", "/_emulator/jobs") => create_job(shared, body),
        ("GET", "/_emulator/jobs") => {
            let world = shared.world();
            let jobs: Vec<Value> = world.jobs.iter().map(job_json).collect();
            ok(json!({ "jobs": jobs }))
        }
        ("GET", p) if p.starts_with("/_emulator/jobs/") => {
            let id = &p["/_emulator/jobs/".len()..];
            match shared.world().jobs.get(id) {
                Some(job) => ok(job_json(job)),
                None => Err((StatusCode::NOT_FOUND, "no job with this id".to_owned())),
            }
        }
        ("POST", "/_emulator/action-types") => register_action_type(shared, body),
        ("POST", "/_emulator/roles") => add_role(shared, body),
        ("POST", "/_emulator/regions") => serve_region(shared, body),
        ("GET", "/_emulator/action-types") => {
            let types = shared.world().jobs.action_types().to_vec();
            ok(json!({ "actionTypes": types }))
        }
        ("GET", "/_emulator/requests") => ok(json!({ "requests": shared.world().requests.all() })),
        ("DELETE", "/_emulator/requests") => {
            shared.world().requests.clear();
            Ok((StatusCode::NO_CONTENT, Value::Null))
        }
        ("POST", "/_emulator/faults") => parse_fault(body).map(|fault| {
            let echoed = fault_json(&fault);
            shared.world().faults.push(fault);
            (StatusCode::CREATED, echoed)
        }),
        ("GET", "/_emulator/faults") => {
            let faults: Vec<Value> = shared
                .world()
                .faults
                .pending()
                .iter()
                .map(fault_json)
                .collect();
            ok(json!({ "faults": faults }))
        }
        ("DELETE", "/_emulator/faults") => {
            shared.world().faults.clear();
            Ok((StatusCode::NO_CONTENT, Value::Null))
        }
        (
            _,
            "/_emulator/jobs"
            | "/_emulator/action-types"
            | "/_emulator/requests"
            | "/_emulator/faults",
        ) => Err((
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not supported on {path}"),
        )),
        _ => Err((
            StatusCode::NOT_FOUND,
            format!(
                "unknown control path {path}; see /_emulator/jobs, /_emulator/action-types, /_emulator/requests, /_emulator/faults"
            ),
        )),
    };
    let (status, body) =
        response.unwrap_or_else(|(status, message)| (status, json!({ "message": message })));
    if status == StatusCode::NO_CONTENT {
        let mut r = json_response(status, &Value::Null, CONTENT_TYPE, None);
        *r.body_mut() = Default::default();
        return r;
    }
    json_response(status, &body, CONTENT_TYPE, None)
}

type ControlResult = Result<(StatusCode, Value), (StatusCode, String)>;

fn ok(body: Value) -> ControlResult {
    Ok((StatusCode::OK, body))
}

fn bad(message: impl Into<String>) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, message.into())
}

fn parse_body<T: for<'de> Deserialize<'de>>(
    body: &[u8],
) -> Result<Option<T>, (StatusCode, String)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| bad(format!("invalid JSON body: {e}")))
}

/// `ActionTypeId` as the control API accepts it: all four members, nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionTypeRequest {
    category: String,
    owner: String,
    provider: String,
    version: String,
}

impl From<ActionTypeRequest> for ActionTypeId {
    fn from(r: ActionTypeRequest) -> ActionTypeId {
        ActionTypeId::new(r.category, r.owner, r.provider, r.version)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateJobRequest {
    kind: Option<String>,
    action_type_id: Option<ActionTypeRequest>,
    configuration: Option<BTreeMap<String, String>>,
    pipeline_name: Option<String>,
    account_id: Option<String>,
    region: Option<String>,
}

fn create_job(shared: &Shared, body: &[u8]) -> ControlResult {
    let request: CreateJobRequest = parse_body(body)?.unwrap_or(CreateJobRequest {
        kind: None,
        action_type_id: None,
        configuration: None,
        pipeline_name: None,
        account_id: None,
        region: None,
    });
    let action_type_id = request.action_type_id.map(ActionTypeId::from);
    let kind = match request.kind.as_deref() {
        Some("custom") => JobKind::Custom,
        Some("thirdParty") => JobKind::ThirdParty,
        // Without a kind, the action type's owner decides.
        None => match &action_type_id {
            Some(t) if t.owner == "ThirdParty" => JobKind::ThirdParty,
            _ => JobKind::Custom,
        },
        Some(other) => {
            return Err(bad(format!(
                "unknown job kind '{other}'; expected 'custom' or 'thirdParty'"
            )));
        }
    };
    let mut world = shared.world();
    let place = match (request.account_id, request.region) {
        (None, None) => None,
        (account, region) => Some(Place {
            account_id: account.unwrap_or_else(|| world.jobs.home().account_id.clone()),
            region: region.unwrap_or_else(|| world.jobs.home().region.clone()),
        }),
    };
    let created = world
        .create_job(NewJob {
            kind,
            action_type_id,
            configuration: request.configuration.unwrap_or_default(),
            pipeline_name: request.pipeline_name,
            place,
        })
        .map_err(bad)?;
    let job = world
        .jobs
        .get(&created.job_id)
        .expect("job was just created");
    Ok((StatusCode::CREATED, job_json(job)))
}

fn add_role(shared: &Shared, body: &[u8]) -> ControlResult {
    let role: Role = parse_body(body)?.ok_or_else(|| {
        bad("a JSON body {\"roleArn\", \"externalId\"?, \"trustedAccounts\"?, \"sessionLifetime\"?} is required")
    })?;
    shared
        .world()
        .accounts
        .add_role(role.clone())
        .map_err(bad)?;
    Ok((StatusCode::CREATED, json!({ "roleArn": role.role_arn })))
}

fn serve_region(shared: &Shared, body: &[u8]) -> ControlResult {
    #[derive(Deserialize)]
    struct RegionRequest {
        region: String,
    }
    let request: RegionRequest =
        parse_body(body)?.ok_or_else(|| bad("a JSON body {\"region\"} is required"))?;
    if !crate::accounts::is_region_name(&request.region) {
        return Err(bad(format!("invalid region '{}'", request.region)));
    }
    shared.world().accounts.serve_region(&request.region);
    Ok((StatusCode::CREATED, json!({ "region": request.region })))
}

fn register_action_type(shared: &Shared, body: &[u8]) -> ControlResult {
    let request: ActionTypeRequest = parse_body(body)?.ok_or_else(|| {
        bad("a JSON body {\"category\", \"owner\", \"provider\", \"version\"} is required")
    })?;
    let action_type_id = ActionTypeId::from(request);
    action_type_id.validate().map_err(bad)?;
    shared
        .world()
        .jobs
        .register_action_type(action_type_id.clone());
    Ok((
        StatusCode::CREATED,
        serde_json::to_value(action_type_id).expect("action type serializes"),
    ))
}

/// The snapshot plus the partner's client id and token, and the job data.
fn job_json(job: &Job) -> Value {
    let mut v = serde_json::to_value(job.snapshot()).expect("snapshot serializes");
    if let (Some(id), Some(token)) = (&job.client_id, &job.client_token) {
        v["clientId"] = json!(id);
        v["clientToken"] = json!(token);
    }
    v["data"] = job.data_json();
    v
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultRequest {
    #[serde(default)]
    operation: Option<String>,
    kind: String,
    times: Option<u32>,
    status: Option<u16>,
    delay_ms: Option<u64>,
    error_type: Option<String>,
    message: Option<String>,
}

fn parse_fault(body: &[u8]) -> Result<Fault, (StatusCode, String)> {
    let r: FaultRequest =
        parse_body(body)?.ok_or_else(|| bad("a JSON body with at least 'kind' is required"))?;
    let times = r.times.unwrap_or(1);
    if times == 0 {
        return Err(bad("'times' must be at least 1"));
    }
    if let Some(op) = &r.operation
        && !model().has_operation(op)
    {
        return Err(bad(format!(
            "'operation' names an unknown operation '{op}'; use a CodePipeline job-worker operation name or null"
        )));
    }
    let kind = match r.kind.as_str() {
        "throttle" => FaultKind::Throttle,
        "serverError" => {
            let status = r.status.unwrap_or(500);
            if !(500..=599).contains(&status) {
                return Err(bad(
                    "'status' must be between 500 and 599 for kind 'serverError'",
                ));
            }
            FaultKind::ServerError(status)
        }
        "delay" => {
            let ms = r
                .delay_ms
                .ok_or_else(|| bad("'delayMs' is required for kind 'delay'"))?;
            FaultKind::Delay(Duration::from_millis(ms))
        }
        "resetBeforeApply" => FaultKind::ResetBeforeApply,
        "resetAfterApply" => FaultKind::ResetAfterApply,
        "error" => {
            let error_type = r
                .error_type
                .filter(|t| !t.is_empty())
                .ok_or_else(|| bad("'errorType' is required for kind 'error'"))?;
            let status = r.status.unwrap_or(400);
            if !(400..=599).contains(&status) {
                return Err(bad("'status' must be between 400 and 599 for kind 'error'"));
            }
            FaultKind::Error {
                error_type,
                status,
                message: r.message.unwrap_or_default(),
            }
        }
        other => {
            return Err(bad(format!(
                "unknown fault kind '{other}'; expected one of throttle, serverError, delay, resetBeforeApply, resetAfterApply, error"
            )));
        }
    };
    Ok(Fault {
        operation: r.operation,
        kind,
        times,
    })
}

fn fault_json(fault: &Fault) -> Value {
    let mut v = json!({ "operation": fault.operation, "times": fault.times });
    match &fault.kind {
        FaultKind::Throttle => v["kind"] = json!("throttle"),
        FaultKind::ServerError(status) => {
            v["kind"] = json!("serverError");
            v["status"] = json!(status);
        }
        FaultKind::Delay(d) => {
            v["kind"] = json!("delay");
            v["delayMs"] = json!(d.as_millis() as u64);
        }
        FaultKind::ResetBeforeApply => v["kind"] = json!("resetBeforeApply"),
        FaultKind::ResetAfterApply => v["kind"] = json!("resetAfterApply"),
        FaultKind::Error {
            error_type,
            status,
            message,
        } => {
            v["kind"] = json!("error");
            v["status"] = json!(status);
            v["errorType"] = json!(error_type);
            v["message"] = json!(message);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Fault, String> {
        parse_fault(body.as_bytes()).map_err(|(_, m)| m)
    }

    #[test]
    fn fault_requests_parse_with_defaults() {
        assert_eq!(
            parse(r#"{"kind":"throttle"}"#).unwrap(),
            Fault::once(FaultKind::Throttle)
        );
        assert_eq!(
            parse(
                r#"{"operation":"PutJobSuccessResult","kind":"serverError","status":503,"times":2}"#
            )
            .unwrap(),
            Fault::for_operation("PutJobSuccessResult", FaultKind::ServerError(503), 2)
        );
        assert_eq!(
            parse(r#"{"operation":null,"kind":"delay","delayMs":500}"#)
                .unwrap()
                .kind,
            FaultKind::Delay(Duration::from_millis(500))
        );
        assert_eq!(
            parse(r#"{"kind":"error","errorType":"AccessDeniedException","message":"no"}"#)
                .unwrap()
                .kind,
            FaultKind::Error {
                error_type: "AccessDeniedException".into(),
                status: 400,
                message: "no".into()
            }
        );
        for f in [
            Fault::once(FaultKind::ResetAfterApply),
            Fault::for_operation("PollForJobs", FaultKind::ResetBeforeApply, 3),
        ] {
            assert_eq!(parse(&fault_json(&f).to_string()).unwrap(), f);
        }
    }

    #[test]
    fn bad_fault_requests_name_the_problem() {
        for (body, needle) in [
            ("", "'kind'"),
            ("{", "invalid JSON"),
            (r#"{"kind":"explode"}"#, "unknown fault kind 'explode'"),
            (r#"{"kind":"delay"}"#, "'delayMs'"),
            (r#"{"kind":"serverError","status":404}"#, "'status'"),
            (r#"{"kind":"error"}"#, "'errorType'"),
            (r#"{"kind":"throttle","times":0}"#, "'times'"),
            (
                r#"{"kind":"throttle","operation":"PutJobSucessResult"}"#,
                "'operation'",
            ),
            (r#"{"kind":"throttle","delayms":1}"#, "delayms"),
        ] {
            let err = parse(body).unwrap_err();
            assert!(err.contains(needle), "{body}: {err}");
        }
    }
}
