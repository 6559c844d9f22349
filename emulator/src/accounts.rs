//! Accounts, regions and STS: the roles a caller may assume, the temporary
//! credentials `AssumeRole` hands out, and which account and region a signed
//! request acts in.
//!
//! The emulator's own access key acts in its home account ([`ACCOUNT_ID`]).
//! A role added with [`crate::Emulator::add_role`] lives in the account its
//! ARN names; `AssumeRole` (STS's query protocol: a form-encoded POST, an XML
//! answer, SigV4 with service `sts`) checks that the caller's account is
//! trusted and that the external id matches, then issues a session key whose
//! requests act in the role's account until the credentials expire. Requests
//! are scoped to a region by their signature: the home region, or one added
//! with [`crate::Emulator::serve_region`] (a job created in a region adds it).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::state::ACCOUNT_ID;

/// What STS allows for `DurationSeconds`, and its default.
const MIN_SESSION: Duration = Duration::from_secs(900);
const MAX_SESSION: Duration = Duration::from_secs(12 * 3600);
const DEFAULT_SESSION: Duration = Duration::from_secs(3600);
/// Sessions kept at once; the oldest expired ones go first.
const MAX_SESSIONS: usize = 10_000;
/// `AssumeRole` calls remembered for [`crate::Emulator::assume_role_calls`].
const MAX_CALLS_REMEMBERED: usize = 10_000;

/// A role that callers may assume.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Role {
    /// `arn:aws:iam::<12-digit account>:role/<name>`: the account its
    /// sessions act in.
    pub role_arn: String,
    /// When set, `AssumeRole` must send exactly this `ExternalId` (the
    /// trust policy's `sts:ExternalId` condition).
    #[serde(default)]
    pub external_id: Option<String>,
    /// The accounts whose principals the trust policy trusts; empty trusts
    /// the home account only.
    #[serde(default)]
    pub trusted_accounts: Vec<String>,
    /// How long issued credentials last, overriding `DurationSeconds`: an
    /// emulator knob (STS never issues less than 15 minutes) so that tests
    /// can watch credentials expire and be refreshed.
    #[serde(default, with = "optional_seconds")]
    pub session_lifetime: Option<Duration>,
}

impl Role {
    /// A role in `account_id` named `name`, trusting the home account, with
    /// no external id.
    pub fn new(account_id: &str, name: &str) -> Role {
        Role {
            role_arn: format!("arn:aws:iam::{account_id}:role/{name}"),
            external_id: None,
            trusted_accounts: Vec::new(),
            session_lifetime: None,
        }
    }

    /// The account the role's ARN names, if the ARN is well formed.
    pub fn account_id(&self) -> Option<&str> {
        role_account(&self.role_arn)
    }

    fn trusts(&self, account_id: &str) -> bool {
        if self.trusted_accounts.is_empty() {
            account_id == ACCOUNT_ID
        } else {
            self.trusted_accounts.iter().any(|a| a == account_id)
        }
    }
}

mod optional_seconds {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<f64>::deserialize(d)?
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64))
    }
}

/// One `AssumeRole` call, as the emulator saw it (never its credentials).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssumeRoleCall {
    pub role_arn: String,
    /// The account of the caller that asked.
    pub caller_account_id: String,
    pub session_name: String,
    /// Whether the call carried an `ExternalId`.
    pub external_id_sent: bool,
    /// `None` on success, else the STS error code (`AccessDenied`, ...).
    pub error: Option<String>,
    /// What a successful call issued, for tests that look for it where it
    /// must not be (logs): key id, secret, session token. Never serialized.
    #[serde(skip)]
    pub issued: Option<(String, String, String)>,
}

/// Temporary credentials issued by `AssumeRole`.
struct Session {
    secret_access_key: String,
    session_token: String,
    account_id: String,
    expires: SystemTime,
}

/// Who signed a request, once its key is known: the secret to verify the
/// signature with, and what else the request must carry.
pub(crate) struct Signer {
    pub secret_access_key: String,
    pub account_id: String,
    /// For a session key: the token `X-Amz-Security-Token` must carry, and
    /// when the credentials stop working.
    pub session: Option<(String, SystemTime)>,
}

/// Roles, issued sessions and served regions.
#[derive(Default)]
pub(crate) struct Accounts {
    roles: HashMap<String, Role>,
    sessions: HashMap<String, Session>,
    regions: BTreeSet<String>,
    calls: VecDeque<AssumeRoleCall>,
}

/// Why an STS call failed: its code, HTTP status and message.
#[derive(Debug)]
pub(crate) struct StsError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl StsError {
    fn denied(message: String) -> StsError {
        StsError {
            status: 403,
            code: "AccessDenied",
            message,
        }
    }

    fn invalid(message: impl Into<String>) -> StsError {
        StsError {
            status: 400,
            code: "ValidationError",
            message: message.into(),
        }
    }
}

/// Issued credentials, as `AssumeRole` answers them.
#[derive(Debug)]
pub(crate) struct Issued {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expires: SystemTime,
    pub assumed_role_arn: String,
    pub assumed_role_id: String,
}

impl Accounts {
    pub fn add_role(&mut self, role: Role) -> Result<(), String> {
        if role.account_id().is_none() {
            return Err(format!(
                "invalid roleArn '{}': expected arn:aws:iam::<12-digit account id>:role/<name>",
                role.role_arn
            ));
        }
        if let Some(bad) = role.trusted_accounts.iter().find(|a| !is_account_id(a)) {
            return Err(format!(
                "invalid trustedAccounts entry '{bad}': an AWS account id is 12 digits"
            ));
        }
        self.roles.insert(role.role_arn.clone(), role);
        Ok(())
    }

    pub fn serve_region(&mut self, region: &str) {
        self.regions.insert(region.to_owned());
    }

    pub fn serves_region(&self, home: &str, region: &str) -> bool {
        region == home || self.regions.contains(region)
    }

    pub fn calls(&self) -> Vec<AssumeRoleCall> {
        self.calls.iter().cloned().collect()
    }

    /// The signer of `access_key_id`: the home key, or a session key STS
    /// issued (expired or not: expiry is its own error).
    pub fn signer(&self, home_key: &str, home_secret: &str, access_key_id: &str) -> Option<Signer> {
        if access_key_id == home_key {
            return Some(Signer {
                secret_access_key: home_secret.to_owned(),
                account_id: ACCOUNT_ID.to_owned(),
                session: None,
            });
        }
        self.sessions.get(access_key_id).map(|s| Signer {
            secret_access_key: s.secret_access_key.clone(),
            account_id: s.account_id.clone(),
            session: Some((s.session_token.clone(), s.expires)),
        })
    }

    /// STS `AssumeRole` for a caller of `caller_account`, with the call's
    /// form parameters.
    pub fn assume_role(
        &mut self,
        caller_account: &str,
        params: &HashMap<String, String>,
        now: SystemTime,
    ) -> Result<Issued, StsError> {
        let role_arn = params.get("RoleArn").cloned().unwrap_or_default();
        let session_name = params.get("RoleSessionName").cloned().unwrap_or_default();
        let external_id = params.get("ExternalId");
        let result = self.try_assume_role(caller_account, &role_arn, &session_name, params, now);
        if self.calls.len() == MAX_CALLS_REMEMBERED {
            self.calls.pop_front();
        }
        self.calls.push_back(AssumeRoleCall {
            role_arn,
            caller_account_id: caller_account.to_owned(),
            session_name,
            external_id_sent: external_id.is_some(),
            error: result.as_ref().err().map(|e| e.code.to_owned()),
            issued: result.as_ref().ok().map(|i| {
                (
                    i.access_key_id.clone(),
                    i.secret_access_key.clone(),
                    i.session_token.clone(),
                )
            }),
        });
        result
    }

    fn try_assume_role(
        &mut self,
        caller_account: &str,
        role_arn: &str,
        session_name: &str,
        params: &HashMap<String, String>,
        now: SystemTime,
    ) -> Result<Issued, StsError> {
        if role_arn.len() < 20 || role_arn.len() > 2048 {
            return Err(StsError::invalid(
                "1 validation error detected: Value at 'roleArn' failed to satisfy constraint: \
                 Member must have length between 20 and 2048",
            ));
        }
        let name_ok = (2..=64).contains(&session_name.len())
            && session_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
        if !name_ok {
            return Err(StsError::invalid(
                "1 validation error detected: Value at 'roleSessionName' failed to satisfy \
                 constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]* and \
                 have length between 2 and 64",
            ));
        }
        let requested = match params.get("DurationSeconds") {
            None => DEFAULT_SESSION,
            Some(text) => match text.parse::<u64>().map(Duration::from_secs) {
                Ok(d) if (MIN_SESSION..=MAX_SESSION).contains(&d) => d,
                _ => {
                    return Err(StsError::invalid(
                        "1 validation error detected: Value at 'durationSeconds' failed to \
                         satisfy constraint: Member must have value between 900 and 43200",
                    ));
                }
            },
        };
        // AWS answers an unknown role, an untrusted caller and a wrong
        // external id alike, so that a caller learns nothing about the role.
        let denied = || {
            StsError::denied(format!(
                "User: arn:aws:iam::{caller_account}:user/cpgw-emulator is not authorized to \
                 perform: sts:AssumeRole on resource: {role_arn}"
            ))
        };
        let role = self.roles.get(role_arn).ok_or_else(denied)?;
        if !role.trusts(caller_account) || role.external_id.as_ref() != params.get("ExternalId") {
            return Err(denied());
        }
        let lifetime = role.session_lifetime.unwrap_or(requested);
        let account_id = role.account_id().expect("checked when added").to_owned();
        let role_name = role_arn.rsplit('/').next().unwrap_or_default();
        let issued = Issued {
            access_key_id: format!("ASIA{}", random_upper(16)),
            secret_access_key: random_upper(40),
            session_token: format!("IQoJb3JpZ2luX2Vj{}", random_upper(120)),
            expires: now + lifetime,
            assumed_role_arn: format!(
                "arn:aws:sts::{account_id}:assumed-role/{role_name}/{session_name}"
            ),
            assumed_role_id: format!("AROA{}:{session_name}", random_upper(17)),
        };
        self.forget_expired(now);
        self.sessions.insert(
            issued.access_key_id.clone(),
            Session {
                secret_access_key: issued.secret_access_key.clone(),
                session_token: issued.session_token.clone(),
                account_id,
                expires: issued.expires,
            },
        );
        Ok(issued)
    }

    /// Keeps the session table bounded: expired sessions go once it is full
    /// (an hour after expiry they are forgotten regardless).
    fn forget_expired(&mut self, now: SystemTime) {
        let stale = now - Duration::from_secs(3600);
        self.sessions.retain(|_, s| s.expires > stale);
        if self.sessions.len() >= MAX_SESSIONS {
            self.sessions.retain(|_, s| s.expires > now);
        }
        if self.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            self.sessions.remove(&oldest);
        }
    }
}

/// The account of `arn:aws:iam::<account>:role/<name>`.
fn role_account(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("arn:aws:iam::")?;
    let (account, name) = rest.split_once(":role/")?;
    (is_account_id(account) && !name.is_empty()).then_some(account)
}

pub(crate) fn is_account_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}

/// `us-east-1`, `eu-west-2`, `ap-southeast-3`, `us-gov-west-1`, ...
pub(crate) fn is_region_name(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

fn random_upper(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for byte in uuid::Uuid::new_v4().as_bytes() {
            if out.len() < len {
                out.push(ALPHABET[usize::from(byte % 32)] as char);
            }
        }
    }
    out
}

/// Decodes an `application/x-www-form-urlencoded` body.
pub(crate) fn form_params(body: &[u8]) -> HashMap<String, String> {
    let decode = |text: &str| {
        let text = text.replace('+', " ");
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if bytes[i] == b'%'
                && let (Some(h), Some(l)) = (
                    bytes.get(i + 1).and_then(|b| hex(*b)),
                    bytes.get(i + 2).and_then(|b| hex(*b)),
                )
            {
                out.push((h * 16 + l) as u8);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// `AssumeRole`'s XML answer.
pub(crate) fn assume_role_xml(issued: &Issued, request_id: &str) -> String {
    format!(
        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <AssumeRoleResult><Credentials>\
         <AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey>\
         <SessionToken>{}</SessionToken><Expiration>{}</Expiration>\
         </Credentials><AssumedRoleUser><AssumedRoleId>{}</AssumedRoleId><Arn>{}</Arn>\
         </AssumedRoleUser></AssumeRoleResult>\
         <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>\
         </AssumeRoleResponse>",
        issued.access_key_id,
        issued.secret_access_key,
        issued.session_token,
        crate::sigv4::rfc3339(issued.expires),
        xml_escape(&issued.assumed_role_id),
        xml_escape(&issued.assumed_role_arn),
    )
}

/// STS's XML error.
pub(crate) fn error_xml(code: &str, message: &str, request_id: &str) -> String {
    let kind = if code == "InternalFailure" {
        "Receiver"
    } else {
        "Sender"
    };
    format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <Error><Type>{kind}</Type><Code>{code}</Code><Message>{}</Message></Error>\
         <RequestId>{request_id}</RequestId></ErrorResponse>",
        xml_escape(message)
    )
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn assume_role_checks_trust_external_id_and_session_rules() {
        let mut accounts = Accounts::default();
        let mut role = Role::new("222222222222", "gateway");
        role.external_id = Some("ext-1".into());
        accounts.add_role(role.clone()).unwrap();
        let now = SystemTime::now();
        let call = |accounts: &mut Accounts, caller: &str, extra: &[(&str, &str)]| {
            let mut p = params(&[("RoleArn", &role.role_arn), ("RoleSessionName", "cpgw")]);
            p.extend(params(extra));
            accounts
                .assume_role(caller, &p, now)
                .map(|i| i.access_key_id)
        };
        let key = call(&mut accounts, ACCOUNT_ID, &[("ExternalId", "ext-1")]).unwrap();
        let signer = accounts.signer("home", "s", &key).unwrap();
        assert_eq!(signer.account_id, "222222222222");
        let (_, expires) = signer.session.unwrap();
        assert_eq!(expires, now + DEFAULT_SESSION);
        for (caller, extra, code) in [
            (ACCOUNT_ID, vec![], "AccessDenied"),
            (ACCOUNT_ID, vec![("ExternalId", "wrong")], "AccessDenied"),
            (
                "333333333333",
                vec![("ExternalId", "ext-1")],
                "AccessDenied",
            ),
            (
                ACCOUNT_ID,
                vec![("ExternalId", "ext-1"), ("DurationSeconds", "60")],
                "ValidationError",
            ),
        ] {
            let error = call(&mut accounts, caller, &extra).unwrap_err();
            assert_eq!(error.code, code, "{caller} {extra:?}");
        }
        let unknown = accounts
            .assume_role(
                ACCOUNT_ID,
                &params(&[
                    ("RoleArn", "arn:aws:iam::222222222222:role/other"),
                    ("RoleSessionName", "cpgw"),
                ]),
                now,
            )
            .unwrap_err();
        assert_eq!(unknown.code, "AccessDenied");
        assert_eq!(accounts.calls().len(), 6);
        assert!(accounts.signer("home", "s", "ASIANOTISSUED").is_none());
    }

    #[test]
    fn roles_regions_and_forms_are_checked() {
        let mut accounts = Accounts::default();
        let mut bad = Role::new("22", "x");
        assert!(accounts.add_role(bad.clone()).is_err());
        bad.role_arn = "arn:aws:iam::222222222222:role/x".into();
        bad.trusted_accounts = vec!["nope".into()];
        assert!(accounts.add_role(bad).is_err());
        assert!(is_region_name("eu-west-1") && is_region_name("us-gov-west-1"));
        assert!(!is_region_name("eu-west") && !is_region_name("EU-west-1"));
        accounts.serve_region("eu-west-1");
        assert!(accounts.serves_region("us-east-1", "eu-west-1"));
        assert!(!accounts.serves_region("us-east-1", "ap-south-1"));
        let form = form_params(b"Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fa+b&X=");
        assert_eq!(form["RoleArn"], "arn:aws:iam::1:role/a b");
        assert_eq!(form["X"], "");
    }
}
