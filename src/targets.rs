//! Targets: the AWS accounts and regions one gateway serves, each reached
//! with its own SDK client, rate limit and metrics label.
//!
//! The operator's targets file (YAML or JSON, typically a ConfigMap) names
//! them:
//!
//! ```yaml
//! targets:
//!   - name: team-a                # [a-z0-9-], 1-63 characters; "default" is reserved
//!     region: eu-west-1
//!     roleArn: arn:aws:iam::111111111111:role/codepipeline-gateway   # optional
//!     externalId: team-a-7f3c     # optional, with roleArn
//!     sessionName: cpgw           # optional, with roleArn; default codepipeline-gateway
//!     endpointUrl: https://...    # optional: a VPC endpoint, say
//!     actionTypes:                # optional: polls of these that name no target go here
//!       - {category: Build, owner: Custom, provider: TeamABuild}   # "*" matches any
//!     rateLimitRps: 5             # optional: this account's --rate-limit-rps (and rateLimitBurst)
//! ```
//!
//! The target `default` is always there: the gateway's own identity and
//! region, as without a targets file. A target with a role is reached by STS
//! `AssumeRole` from that identity, through the SDK's own provider, whose
//! credentials the SDK caches and refreshes before they expire.
//!
//! Which target a call goes to: a poll's `target` field, else the first
//! target whose `actionTypes` match the polled type, else `default`. A
//! job-scoped call's `target` field (the poll answer says it), else what this
//! replica remembers from the poll, else `default`.

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use aws_config::{Region, SdkConfig, sts::AssumeRoleProvider};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_codepipeline::types::ActionTypeId;
use serde::Deserialize;

use crate::{
    forwarding::ForwardingStack, memory::JobMemory, rate_limit::RateLimitSettings,
    validation::InvalidRequest,
};

/// The gateway's own identity and region.
pub const DEFAULT_TARGET: &str = "default";

/// The role session name when a target names none.
const DEFAULT_SESSION_NAME: &str = "codepipeline-gateway";

/// How long start-up waits for one target's first credentials.
const FIRST_CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(20);

/// How many job → target assignments a replica remembers.
const REMEMBERED_JOB_TARGETS: usize = 50_000;

/// One target as the file describes it.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetSpec {
    pub name: String,
    pub region: String,
    #[serde(default)]
    pub role_arn: Option<String>,
    /// Not a secret in AWS's model, but not logged either.
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub session_name: Option<String>,
    #[serde(default)]
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub action_types: Vec<ActionTypeMatch>,
    /// This account's rate limit, where its CodePipeline quota differs:
    /// `--rate-limit-rps` / `--rate-limit-burst` otherwise.
    #[serde(default)]
    pub rate_limit_rps: Option<f64>,
    #[serde(default)]
    pub rate_limit_burst: Option<u32>,
}

impl TargetSpec {
    /// The rate limit of this target's calls: the gateway's, with the
    /// target's own rate and burst where it sets them.
    pub fn rate_limit(&self, gateway: RateLimitSettings) -> RateLimitSettings {
        RateLimitSettings {
            per_second: self.rate_limit_rps.unwrap_or(gateway.per_second),
            burst: self
                .rate_limit_burst
                .and_then(std::num::NonZeroU32::new)
                .unwrap_or(gateway.burst),
            ..gateway
        }
    }
}

/// Shows everything but the external id (check-config prints it).
impl std::fmt::Debug for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetSpec")
            .field("name", &self.name)
            .field("region", &self.region)
            .field("role_arn", &self.role_arn)
            .field("external_id", &self.external_id.as_ref().map(|_| "(set)"))
            .field("session_name", &self.session_name)
            .field("endpoint_url", &self.endpoint_url)
            .field("action_types", &self.action_types)
            .field("rate_limit_rps", &self.rate_limit_rps)
            .field("rate_limit_burst", &self.rate_limit_burst)
            .finish()
    }
}

/// Polled action types routed to a target; `"*"` matches any value.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionTypeMatch {
    pub category: String,
    pub owner: String,
    pub provider: String,
}

impl ActionTypeMatch {
    fn matches(&self, t: &ActionTypeId) -> bool {
        let field = |pattern: &str, value: &str| pattern == "*" || pattern == value;
        field(&self.category, t.category().as_str())
            && field(&self.owner, t.owner().as_str())
            && field(&self.provider, t.provider())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsFile {
    targets: Vec<TargetSpec>,
}

/// Whether `name` can name a target: what a request's `target` field is
/// checked against before it is looked up.
pub fn is_target_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Reads and checks a targets file: every problem names the target and field.
pub fn load(path: &Path) -> Result<Vec<TargetSpec>, String> {
    let raw = std::fs::read(path)
        .map_err(|e| format!("cannot read the targets file {}: {e}", path.display()))?;
    parse(&raw).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse(raw: &[u8]) -> Result<Vec<TargetSpec>, String> {
    let file: TargetsFile =
        serde_yaml_ng::from_slice(raw).map_err(|e| format!("not a valid targets file: {e}"))?;
    let mut seen = std::collections::HashSet::new();
    for (i, t) in file.targets.iter().enumerate() {
        let at = format!("targets[{i}] ({:?})", t.name);
        if t.name == DEFAULT_TARGET {
            return Err(format!(
                "{at}: \"default\" is the gateway's own identity and region; name the target otherwise"
            ));
        }
        if !is_target_name(&t.name) {
            return Err(format!(
                "{at}: name must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
            ));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(format!("{at}: a second target with this name"));
        }
        if !is_region(&t.region) {
            return Err(format!(
                "{at}: region {:?} is not an AWS region name (e.g. eu-west-1)",
                t.region
            ));
        }
        if let Some(arn) = &t.role_arn
            && !is_role_arn(arn)
        {
            return Err(format!(
                "{at}: roleArn {arn:?} is not arn:<partition>:iam::<12-digit account>:role/<name>"
            ));
        }
        if t.role_arn.is_none() && (t.external_id.is_some() || t.session_name.is_some()) {
            return Err(format!("{at}: externalId and sessionName need a roleArn"));
        }
        if let Some(id) = &t.external_id
            && !(2..=1224).contains(&id.len())
        {
            return Err(format!("{at}: externalId must be 2-1224 characters"));
        }
        if let Some(name) = &t.session_name {
            let ok = (2..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
            if !ok {
                return Err(format!(
                    "{at}: sessionName must be 2-64 characters of letters, digits and _+=,.@-"
                ));
            }
        }
        if let Some(url) = &t.endpoint_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(format!("{at}: endpointUrl must be an http(s) URL"));
        }
        if let Some(rps) = t.rate_limit_rps
            && !(rps > 0.0 && rps <= crate::config::MAX_RATE_LIMIT_RPS)
        {
            return Err(format!(
                "{at}: rateLimitRps must be greater than 0 and at most {}, got {rps}",
                crate::config::MAX_RATE_LIMIT_RPS
            ));
        }
        if t.rate_limit_burst == Some(0) {
            return Err(format!("{at}: rateLimitBurst must be at least 1"));
        }
        // The same rules as a policy's action types.
        for (j, m) in t.action_types.iter().enumerate() {
            use crate::policy::{CATEGORIES, OWNERS, one_of};
            let field = |name: &str, value: &str, allowed: &[&str]| {
                one_of(&format!("actionTypes[{j}].{name}"), value, allowed)
                    .map_err(|problem| format!("{at}: {problem}"))
            };
            field("category", &m.category, CATEGORIES)?;
            field("owner", &m.owner, OWNERS)?;
            field("provider", &m.provider, &[])?;
        }
    }
    Ok(file.targets)
}

fn is_region(text: &str) -> bool {
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

fn is_role_arn(arn: &str) -> bool {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    !partition.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource
            .strip_prefix("role/")
            .is_some_and(|n| !n.is_empty())
}

/// The SDK client for `spec`: the base configuration's HTTP client, retry
/// and identity cache, in the target's region, with `AssumeRole` credentials
/// when it has a role. Resolves the first credentials before it returns, so
/// that a role the gateway cannot assume fails start-up, naming the target.
pub async fn client_for(
    spec: &TargetSpec,
    base: &SdkConfig,
) -> Result<aws_sdk_codepipeline::Client, String> {
    let mut builder = base.to_builder();
    builder.set_region(Some(Region::new(spec.region.clone())));
    if let Some(url) = &spec.endpoint_url {
        builder.set_endpoint_url(Some(url.clone()));
    }
    if let Some(role_arn) = &spec.role_arn {
        let mut provider = AssumeRoleProvider::builder(role_arn.clone()).session_name(
            spec.session_name
                .clone()
                .unwrap_or_else(|| DEFAULT_SESSION_NAME.to_owned()),
        );
        if let Some(external_id) = &spec.external_id {
            provider = provider.external_id(external_id.clone());
        }
        // STS is called with the base configuration: the gateway's own
        // identity, region and endpoint.
        let provider = provider.configure(base).build().await;
        let first = tokio::time::timeout(FIRST_CREDENTIALS_TIMEOUT, provider.provide_credentials());
        match first.await {
            Ok(Ok(_credentials)) => {}
            Ok(Err(error)) => {
                return Err(format!(
                    "target {:?}: cannot assume {role_arn}: {}",
                    spec.name,
                    crate::aws::error_chain(&error)
                ));
            }
            Err(_elapsed) => {
                return Err(format!(
                    "target {:?}: no answer from STS within {}s assuming {role_arn}",
                    spec.name,
                    FIRST_CREDENTIALS_TIMEOUT.as_secs()
                ));
            }
        }
        builder.set_credentials_provider(Some(SharedCredentialsProvider::new(provider)));
    }
    Ok(aws_sdk_codepipeline::Client::new(&builder.build()))
}

/// A target the gateway forwards to.
#[derive(Clone)]
pub struct Target {
    /// Its name: in metrics labels, answers and logs. Leaked once at start:
    /// targets are configured, few, and live as long as the process.
    pub name: &'static str,
    pub stack: ForwardingStack,
    action_types: Vec<ActionTypeMatch>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// How a job-scoped call's target was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chosen {
    /// The call named it.
    Named,
    /// The operator mapped the polled action type to it.
    Mapped,
    /// This replica remembered it from the job's poll.
    Remembered,
    /// Neither: the default target, for want of anything better.
    Fallback,
}

/// Every target, and this replica's memory of which job came from which.
pub struct Targets {
    in_order: Vec<Arc<Target>>,
    by_name: HashMap<&'static str, Arc<Target>>,
    jobs: JobMemory<&'static str>,
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.in_order.iter().map(|t| t.name))
            .finish()
    }
}

impl Targets {
    /// The default target first, then the file's, in its order.
    pub fn new(default: ForwardingStack, others: Vec<(TargetSpec, ForwardingStack)>) -> Self {
        let mut in_order = vec![Arc::new(Target {
            name: DEFAULT_TARGET,
            stack: default,
            action_types: Vec::new(),
        })];
        for (spec, stack) in others {
            in_order.push(Arc::new(Target {
                name: stack.target(),
                stack,
                action_types: spec.action_types,
            }));
        }
        let by_name = in_order.iter().map(|t| (t.name, t.clone())).collect();
        Targets {
            in_order,
            by_name,
            jobs: JobMemory::new(REMEMBERED_JOB_TARGETS),
        }
    }

    /// Whether more than the default target is configured.
    pub fn several(&self) -> bool {
        self.in_order.len() > 1
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.in_order.iter().map(|t| t.name)
    }

    pub fn default_target(&self) -> &Arc<Target> {
        &self.in_order[0]
    }

    /// The target a request's `target` field names; a name the gateway
    /// does not have is the caller's mistake, on the field `target`.
    fn named(&self, name: &str) -> Result<&Arc<Target>, InvalidRequest> {
        self.by_name.get(name).ok_or_else(|| {
            InvalidRequest::one(
                "target",
                if is_target_name(name) {
                    "no target of this name is configured on the gateway"
                } else {
                    "must be a target name: 1-63 characters of a-z, 0-9 and '-'"
                },
            )
        })
    }

    /// Where a poll of `action_type` goes, and how that was decided.
    pub fn for_poll(
        &self,
        requested: &str,
        action_type: &ActionTypeId,
    ) -> Result<(&Arc<Target>, Chosen), InvalidRequest> {
        if !requested.is_empty() {
            return Ok((self.named(requested)?, Chosen::Named));
        }
        match self
            .in_order
            .iter()
            .find(|t| t.action_types.iter().any(|m| m.matches(action_type)))
        {
            Some(target) => Ok((target, Chosen::Mapped)),
            None => Ok((&self.in_order[0], Chosen::Fallback)),
        }
    }

    /// Where a call about `job_id` goes, and how that was decided.
    pub fn for_job(
        &self,
        requested: &str,
        job_id: &str,
    ) -> Result<(&Arc<Target>, Chosen), InvalidRequest> {
        if !requested.is_empty() {
            return Ok((self.named(requested)?, Chosen::Named));
        }
        if !self.several() {
            // Nothing is remembered with one target: no lock on every call.
            return Ok((&self.in_order[0], Chosen::Fallback));
        }
        match self
            .jobs
            .get(job_id)
            .and_then(|name| self.by_name.get(name))
        {
            Some(target) => Ok((target, Chosen::Remembered)),
            None => Ok((&self.in_order[0], Chosen::Fallback)),
        }
    }

    /// Remembers that a poll of `target` handed out `job_id`.
    pub fn remember(&self, job_id: &str, target: &'static str) {
        if self.several() {
            self.jobs.remember(job_id, target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_file_parses_and_every_bad_field_is_named() {
        let good = br#"
targets:
  - name: team-a
    region: eu-west-1
    roleArn: arn:aws:iam::111111111111:role/cpgw
    externalId: ext-123
    actionTypes:
      - {category: Build, owner: Custom, provider: "*"}
  - name: team-b
    region: us-west-2
"#;
        let targets = parse(good).unwrap();
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].external_id.as_deref(), Some("ext-123"));
        let bad = [
            (
                "targets: [{name: default, region: eu-west-1}]",
                "own identity",
            ),
            ("targets: [{name: Team, region: eu-west-1}]", "name must be"),
            (
                "targets: [{name: a, region: eu-west-1}, {name: a, region: eu-west-1}]",
                "second target",
            ),
            ("targets: [{name: a, region: europe}]", "region"),
            (
                "targets: [{name: a, region: eu-west-1, roleArn: 'arn:aws:iam::1:role/x'}]",
                "roleArn",
            ),
            (
                "targets: [{name: a, region: eu-west-1, externalId: abc}]",
                "need a roleArn",
            ),
            (
                "targets: [{name: a, region: eu-west-1, endpointUrl: 'ftp://x'}]",
                "endpointUrl",
            ),
            (
                "targets: [{name: a, region: eu-west-1, roles: []}]",
                "unknown field",
            ),
            (
                "targets: [{name: a, region: eu-west-1, rateLimitRps: 0}]",
                "rateLimitRps",
            ),
            (
                "targets: [{name: a, region: eu-west-1, rateLimitRps: 10000.5}]",
                "rateLimitRps",
            ),
            (
                "targets: [{name: a, region: eu-west-1, rateLimitBurst: 0}]",
                "rateLimitBurst",
            ),
            (
                "targets: [{name: a, region: eu-west-1, rateLimitBurst: 4294967296}]",
                "not a valid",
            ),
            (
                "targets: [{name: a, region: eu-west-1, actionTypes: [{category: Bild, owner: Custom, provider: x}]}]",
                "actionTypes[0].category",
            ),
        ];
        for (text, needle) in bad {
            let error = parse(text.as_bytes()).unwrap_err();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn names_and_matches() {
        assert!(is_target_name("team-a") && is_target_name("a1"));
        assert!(!is_target_name("") && !is_target_name("-a") && !is_target_name("A"));
        assert!(!is_target_name(&"a".repeat(64)));
        let m = ActionTypeMatch {
            category: "Build".into(),
            owner: "*".into(),
            provider: "X".into(),
        };
        let t = |category: &str, provider: &str| {
            ActionTypeId::builder()
                .category(category.into())
                .owner("Custom".into())
                .provider(provider)
                .version("1")
                .build()
                .unwrap()
        };
        assert!(m.matches(&t("Build", "X")));
        assert!(!m.matches(&t("Deploy", "X")) && !m.matches(&t("Build", "Y")));
    }
}
