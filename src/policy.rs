//! What each caller may do: the operator's policy file (YAML or JSON,
//! typically a ConfigMap), re-read when it changes. Once a policy is
//! configured, everything it does not allow is denied.
//!
//! ```yaml
//! rules:
//!   - identities: ["system:serviceaccount:ci:*"]   # exact, `<prefix>:*`, `<prefix>/*` or "*"
//!     verbs: [poll, acknowledge, get_details, put_result]   # or ["*"]
//!     actionTypes:
//!       - {category: Build, owner: Custom, provider: MyBuilder, version: "*"}
//!     targets: [team-a]     # optional; default ["default"]; ["*"] for all
//! ```
//!
//! A call is allowed when one rule names its caller, its operation's verb,
//! the action type of its job (for polls: the action type polled) and the
//! target (AWS account and region) it goes to. Every field of an action type
//! must be given; `"*"` matches any value. A rule without `targets` covers
//! only the gateway's own account (`default`), so that adding a target never
//! widens an existing rule.

use std::{path::Path, sync::Arc, time::Duration};

use aws_sdk_codepipeline::types::ActionTypeId;
use serde::Deserialize;

use crate::{operation::Verb, watched_file::WatchedFile};

pub(crate) const CATEGORIES: &[&str] = &[
    "Source", "Build", "Deploy", "Test", "Invoke", "Approval", "Compute",
];
pub(crate) const OWNERS: &[&str] = &["AWS", "ThirdParty", "Custom"];
const VERBS: &[Verb] = &[
    Verb::Poll,
    Verb::Acknowledge,
    Verb::GetDetails,
    Verb::PutResult,
];

#[derive(Debug, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

#[derive(Debug, PartialEq, Eq)]
struct Rule {
    identities: Vec<IdentityPattern>,
    verbs: Vec<Verb>,
    action_types: Vec<[Option<String>; 4]>,
    /// `None`: every target.
    targets: Option<Vec<String>>,
}

#[derive(Debug, PartialEq, Eq)]
enum IdentityPattern {
    Any,
    Exact(String),
    /// `system:serviceaccount:ci:*` → `system:serviceaccount:ci:`;
    /// `spiffe://td/ns/ci/*` → `spiffe://td/ns/ci/`.
    Prefix(String),
}

// The file's shape; unknown fields are refused, so a typo cannot widen a rule.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyShape {
    rules: Vec<RuleShape>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuleShape {
    identities: Vec<String>,
    verbs: Vec<String>,
    action_types: Vec<ActionTypeShape>,
    #[serde(default)]
    targets: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionTypeShape {
    category: String,
    owner: String,
    provider: String,
    version: String,
}

fn identity_pattern(text: &str) -> Result<IdentityPattern, String> {
    if text == "*" {
        return Ok(IdentityPattern::Any);
    }
    match text.strip_suffix('*') {
        Some(prefix) if prefix.ends_with(':') || prefix.ends_with('/') => {
            if prefix.contains('*') {
                Err(format!("identity {text:?}: `*` only as the last segment"))
            } else {
                Ok(IdentityPattern::Prefix(prefix.to_owned()))
            }
        }
        _ if text.contains('*') => Err(format!(
            "identity {text:?}: `*` only as a whole last segment (`…:*` or `…/*`) or alone"
        )),
        _ if text.trim().is_empty() => Err("an identity is empty".into()),
        _ => Ok(IdentityPattern::Exact(text.to_owned())),
    }
}

/// `value` checked as an action type field of a rule: `"*"` (any: `None`),
/// or one of `allowed` (any non-empty text when `allowed` is empty).
pub(crate) fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<Option<String>, String> {
    if value == "*" {
        Ok(None)
    } else if allowed.is_empty() || allowed.contains(&value) {
        if value.is_empty() {
            return Err(format!("{field} is empty (use \"*\" for any)"));
        }
        Ok(Some(value.to_owned()))
    } else {
        Err(format!(
            "{field} {value:?} is not one of {} or \"*\"",
            allowed.join(", ")
        ))
    }
}

fn parse(raw: &[u8], path: &Path) -> Result<Policy, String> {
    let file: PolicyShape = serde_yaml_ng::from_slice(raw)
        .map_err(|e| format!("{} is not a valid policy: {e}", path.display()))?;
    let mut rules = Vec::with_capacity(file.rules.len());
    for (i, rule) in file.rules.into_iter().enumerate() {
        let at = |problem: String| format!("{}: rule {}: {problem}", path.display(), i + 1);
        if rule.identities.is_empty() || rule.verbs.is_empty() || rule.action_types.is_empty() {
            return Err(at(
                "identities, verbs and actionTypes must each name at least one".into(),
            ));
        }
        let identities = rule
            .identities
            .iter()
            .map(|text| identity_pattern(text))
            .collect::<Result<_, _>>()
            .map_err(at)?;
        let mut verbs = Vec::new();
        for verb in &rule.verbs {
            if verb == "*" {
                verbs.extend_from_slice(VERBS);
            } else {
                let found = VERBS.iter().find(|v| v.name() == verb).ok_or_else(|| {
                    at(format!(
                        "verb {verb:?} is not one of poll, acknowledge, get_details, put_result or \"*\""
                    ))
                })?;
                verbs.push(*found);
            }
        }
        let mut action_types = Vec::new();
        for t in &rule.action_types {
            action_types.push([
                one_of("category", &t.category, CATEGORIES).map_err(at)?,
                one_of("owner", &t.owner, OWNERS).map_err(at)?,
                one_of("provider", &t.provider, &[]).map_err(at)?,
                one_of("version", &t.version, &[]).map_err(at)?,
            ]);
        }
        let targets = match rule.targets {
            None => Some(vec![crate::targets::DEFAULT_TARGET.to_owned()]),
            Some(names) if names.iter().any(|n| n == "*") => None,
            Some(names) if names.is_empty() => {
                return Err(at("targets must name at least one (or be left out)".into()));
            }
            Some(names) => {
                if let Some(bad) = names.iter().find(|n| !crate::targets::is_target_name(n)) {
                    return Err(at(format!(
                        "target {bad:?} is not a target name (a-z, 0-9, '-') or \"*\""
                    )));
                }
                Some(names)
            }
        };
        rules.push(Rule {
            identities,
            verbs,
            action_types,
            targets,
        });
    }
    Ok(Policy { rules })
}

impl IdentityPattern {
    fn matches(&self, identity: &str) -> bool {
        match self {
            IdentityPattern::Any => true,
            IdentityPattern::Exact(exact) => exact == identity,
            IdentityPattern::Prefix(prefix) => {
                identity.len() > prefix.len() && identity.starts_with(prefix.as_str())
            }
        }
    }
}

impl Rule {
    fn covers(&self, identity: &str, verb: Verb, target: &str) -> bool {
        self.identities.iter().any(|p| p.matches(identity))
            && self.verbs.contains(&verb)
            && self
                .targets
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| n == target))
    }
}

impl Policy {
    /// Whether some rule lets `identity` do `verb` to jobs of some action
    /// type: when none does, a call can be refused without learning its
    /// job's action type (which may cost a read from AWS).
    pub fn may_ever(&self, identity: &str, verb: Verb) -> bool {
        self.rules.iter().any(|rule| {
            rule.identities.iter().any(|p| p.matches(identity)) && rule.verbs.contains(&verb)
        })
    }

    /// Whether some rule lets `identity` do `verb` in `target` at all: when
    /// none does, the gateway reads nothing from that target for it.
    pub fn may_use(&self, identity: &str, verb: Verb, target: &str) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.covers(identity, verb, target))
    }

    /// Whether `identity` may do `verb` to jobs of `action_type` in `target`.
    pub fn allows(
        &self,
        identity: &str,
        verb: Verb,
        action_type: &ActionTypeId,
        target: &str,
    ) -> bool {
        let actual = [
            action_type.category().as_str(),
            action_type.owner().as_str(),
            action_type.provider(),
            action_type.version(),
        ];
        self.rules.iter().any(|rule| {
            rule.covers(identity, verb, target)
                && rule.action_types.iter().any(|pattern| {
                    pattern
                        .iter()
                        .zip(actual)
                        .all(|(want, have)| want.as_deref().is_none_or(|w| w == have))
                })
        })
    }
}

/// The policy file, re-read when it changes.
pub struct PolicyFile {
    file: Arc<WatchedFile<Policy>>,
}

impl PolicyFile {
    pub fn load(path: &Path, reload_interval: Duration) -> Result<Self, String> {
        let file = Arc::new(WatchedFile::load("policy file", path, parse)?);
        tracing::info!(rules = file.get().rules.len(), "caller policy loaded");
        file.watch(reload_interval);
        Ok(PolicyFile { file })
    }

    pub fn current(&self) -> Arc<Policy> {
        self.file.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_codepipeline::types::{ActionCategory, ActionOwner};

    fn policy(yaml: &str) -> Result<Policy, String> {
        parse(yaml.as_bytes(), Path::new("policy.yaml"))
    }

    fn action(category: ActionCategory, owner: ActionOwner, provider: &str) -> ActionTypeId {
        ActionTypeId::builder()
            .category(category)
            .owner(owner)
            .provider(provider)
            .version("1")
            .build()
            .unwrap()
    }

    const POLICY: &str = r#"
rules:
  - identities: ["system:serviceaccount:ci:*", "system:serviceaccount:ops:deployer"]
    verbs: [poll, acknowledge, get_details, put_result]
    actionTypes:
      - {category: Build, owner: Custom, provider: Builder, version: "*"}
  - identities: ["spiffe://example.org/ns/partners/*"]
    verbs: ["*"]
    actionTypes:
      - {category: "*", owner: ThirdParty, provider: "*", version: "1"}
  - identities: ["*"]
    verbs: [get_details]
    actionTypes:
      - {category: Test, owner: Custom, provider: "*", version: "*"}
"#;

    #[test]
    fn the_matrix_of_identity_verb_and_action_type() {
        let p = policy(POLICY).unwrap();
        let build = action(ActionCategory::Build, ActionOwner::Custom, "Builder");
        let other_build = action(ActionCategory::Build, ActionOwner::Custom, "Other");
        let deploy = action(ActionCategory::Deploy, ActionOwner::ThirdParty, "Partner");
        let test = action(ActionCategory::Test, ActionOwner::Custom, "Tester");
        let ci = "system:serviceaccount:ci:runner";
        let deployer = "system:serviceaccount:ops:deployer";
        let partner = "spiffe://example.org/ns/partners/sa/worker";
        for verb in VERBS.iter().copied() {
            assert!(p.allows(ci, verb, &build, "default"), "{verb:?}");
            assert!(p.allows(deployer, verb, &build, "default"), "{verb:?}");
            assert!(!p.allows(ci, verb, &other_build, "default"), "{verb:?}");
            assert!(!p.allows(ci, verb, &deploy, "default"), "{verb:?}");
            assert!(p.allows(partner, verb, &deploy, "default"), "{verb:?}");
            assert!(!p.allows(partner, verb, &build, "default"), "{verb:?}");
        }
        // Namespace wildcards do not reach other namespaces or the namespace itself.
        assert!(!p.allows(
            "system:serviceaccount:ci-other:runner",
            Verb::Poll,
            &build,
            "default"
        ));
        assert!(!p.allows("system:serviceaccount:ci:", Verb::Poll, &build, "default"));
        assert!(!p.allows(
            "system:serviceaccount:ops:deployer2",
            Verb::Poll,
            &build,
            "default"
        ));
        assert!(p.may_ever(ci, Verb::PutResult));
        assert!(!p.may_ever("system:serviceaccount:web:frontend", Verb::PutResult));
        assert!(p.may_ever("anyone", Verb::GetDetails));
        assert!(!p.may_ever("anyone", Verb::Acknowledge));
        // Anyone may read details of test jobs, and do nothing else with them.
        assert!(p.allows("anonymous", Verb::GetDetails, &test, "default"));
        assert!(!p.allows("anonymous", Verb::PutResult, &test, "default"));
        assert!(!p.allows("anonymous", Verb::GetDetails, &build, "default"));
    }

    #[test]
    fn an_empty_policy_denies_everything() {
        let p = policy("rules: []").unwrap();
        let build = action(ActionCategory::Build, ActionOwner::Custom, "Builder");
        assert!(!p.allows(
            "system:serviceaccount:ci:runner",
            Verb::Poll,
            &build,
            "default"
        ));
    }

    #[test]
    fn mistakes_are_refused_with_the_rule_named() {
        for (bad, says) in [
            (
                "rules: [{identities: [x], verbs: [poll], actionTypes: []}]",
                "rule 1",
            ),
            (
                "rules: [{identities: [\"sys*\"], verbs: [poll], actionTypes: [{category: Build, owner: Custom, provider: p, version: v}]}]",
                "`*` only",
            ),
            (
                "rules: [{identities: [x], verbs: [deploy], actionTypes: [{category: Build, owner: Custom, provider: p, version: v}]}]",
                "verb \"deploy\"",
            ),
            (
                "rules: [{identities: [x], verbs: [poll], actionTypes: [{category: Bild, owner: Custom, provider: p, version: v}]}]",
                "category \"Bild\"",
            ),
            (
                "rules: [{identities: [x], verbs: [poll], actionTypes: [{category: Build, owner: Custom, provider: p}]}]",
                "version",
            ),
            (
                "rules: [{identities: [x], verb: [poll], actionTypes: []}]",
                "verb",
            ),
            ("{not yaml", "not a valid policy"),
        ] {
            let error = policy(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn json_is_yaml_too() {
        let p = policy(r#"{"rules": [{"identities": ["a"], "verbs": ["poll"], "actionTypes": [{"category": "*", "owner": "*", "provider": "*", "version": "*"}]}]}"#).unwrap();
        let build = action(ActionCategory::Build, ActionOwner::Custom, "Builder");
        assert!(p.allows("a", Verb::Poll, &build, "default"));
        assert!(!p.allows("a", Verb::PutResult, &build, "default"));
    }

    #[test]
    fn targets_are_part_of_a_rule_and_default_to_the_gateways_own() {
        let p = policy(
            r#"
rules:
  - identities: ["team-a"]
    verbs: ["*"]
    actionTypes: [{category: "*", owner: "*", provider: "*", version: "*"}]
    targets: [team-a]
  - identities: ["old"]
    verbs: ["*"]
    actionTypes: [{category: "*", owner: "*", provider: "*", version: "*"}]
  - identities: ["ops"]
    verbs: [poll]
    actionTypes: [{category: "*", owner: "*", provider: "*", version: "*"}]
    targets: ["*"]
"#,
        )
        .unwrap();
        let build = action(ActionCategory::Build, ActionOwner::Custom, "Builder");
        assert!(p.allows("team-a", Verb::Poll, &build, "team-a"));
        assert!(!p.allows("team-a", Verb::Poll, &build, "team-b"));
        assert!(!p.allows("team-a", Verb::Poll, &build, "default"));
        assert!(p.allows("old", Verb::PutResult, &build, "default"));
        assert!(!p.allows("old", Verb::PutResult, &build, "team-a"));
        assert!(p.allows("ops", Verb::Poll, &build, "team-b"));
        assert!(!p.may_use("team-a", Verb::GetDetails, "team-b"));
        assert!(p.may_use("team-a", Verb::GetDetails, "team-a"));
        for (bad, says) in [("[]", "at least one"), ("[Team]", "not a target name")] {
            let text = format!(
                "rules: [{{identities: [a], verbs: [poll], actionTypes: [{{category: '*', owner: '*', provider: '*', version: '*'}}], targets: {bad}}}]"
            );
            let error = policy(&text).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
