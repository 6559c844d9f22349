//! Request validation driven by the embedded botocore model subset
//! (`model/codepipeline-job-worker.json`, written by `model/extract.py`).
//!
//! Nothing here is written per field: every constraint comes from the model.
//! Type mismatches (a string where an integer belongs, …) are reported as
//! `SerializationException`, like AWS's JSON deserializer does; constraint
//! violations are collected and reported together as `ValidationException`.
//! Messages never contain the offending values.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

const MODEL_JSON: &str = include_str!("../model/codepipeline-job-worker.json");

/// The parsed model, built once.
pub(crate) fn model() -> &'static Model {
    static MODEL: LazyLock<Model> =
        LazyLock::new(|| Model::parse(MODEL_JSON).expect("embedded CodePipeline model is valid"));
    &MODEL
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawModel {
    metadata: RawMetadata,
    operations: HashMap<String, RawOperation>,
    shapes: HashMap<String, RawShape>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMetadata {
    target_prefix: String,
}

#[derive(Deserialize)]
struct RawOperation {
    input: Option<ShapeRef>,
    output: Option<ShapeRef>,
}

#[derive(Deserialize)]
struct ShapeRef {
    shape: String,
}

#[derive(Deserialize)]
struct RawShape {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    members: BTreeMap<String, ShapeRef>,
    #[serde(default)]
    required: Vec<String>,
    #[serde(default)]
    union: bool,
    min: Option<f64>,
    max: Option<f64>,
    pattern: Option<String>,
    #[serde(rename = "enum")]
    enum_values: Option<Vec<String>>,
    member: Option<ShapeRef>,
    key: Option<ShapeRef>,
    value: Option<ShapeRef>,
}

/// A shape with its constraints compiled.
#[derive(Debug)]
enum Shape {
    Structure {
        members: Vec<(String, String)>,
        required: Vec<String>,
        union: bool,
    },
    List {
        member: String,
        min: Option<f64>,
        max: Option<f64>,
    },
    Map {
        key: String,
        value: String,
        min: Option<f64>,
        max: Option<f64>,
    },
    String {
        min: Option<f64>,
        max: Option<f64>,
        pattern: Option<(String, Regex)>,
        enum_values: Option<Vec<String>>,
    },
    Integer {
        min: Option<f64>,
        max: Option<f64>,
    },
    Float {
        min: Option<f64>,
        max: Option<f64>,
    },
    Boolean,
    Timestamp,
    Blob,
}

/// The job-worker subset of the CodePipeline model.
#[derive(Debug)]
pub(crate) struct Model {
    target_prefix: String,
    /// Operation name → input shape name (if the operation has input).
    operations: HashMap<String, Option<String>>,
    /// Operation name → output shape name (if the operation has output).
    outputs: HashMap<String, Option<String>>,
    shapes: HashMap<String, Shape>,
}

/// Why a request body was rejected.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ValidationFailure {
    /// The JSON types do not match the model (→ `SerializationException`).
    Serialization(String),
    /// Constraint violations (→ `ValidationException`), one message each.
    Constraints(Vec<String>),
}

impl ValidationFailure {
    pub fn error_type(&self) -> &'static str {
        match self {
            ValidationFailure::Serialization(_) => "SerializationException",
            ValidationFailure::Constraints(_) => "ValidationException",
        }
    }

    /// The AWS-style message, e.g. `1 validation error detected: Value at …`.
    pub fn message(&self) -> String {
        match self {
            ValidationFailure::Serialization(m) => m.clone(),
            ValidationFailure::Constraints(v) => {
                let noun = if v.len() == 1 { "error" } else { "errors" };
                format!("{} validation {noun} detected: {}", v.len(), v.join("; "))
            }
        }
    }
}

#[derive(Default)]
struct Findings {
    /// Also report structure members the model does not know (used for the
    /// emulator's own output, where an unknown member is a bug; requests may
    /// carry members newer than the model, which AWS ignores).
    strict: bool,
    type_errors: Vec<String>,
    violations: Vec<String>,
}

impl Findings {
    fn at(&mut self, path: &str, constraint: String) {
        self.violations.push(format!(
            "Value at '{path}' failed to satisfy constraint: {constraint}"
        ));
    }
}

fn join_path(path: &str, member: &str) -> String {
    if path.is_empty() {
        member.to_owned()
    } else {
        format!("{path}.{member}")
    }
}

fn fmt_bound(b: f64) -> String {
    if b.fract() == 0.0 && b.abs() < 1e15 {
        format!("{}", b as i64)
    } else {
        format!("{b}")
    }
}

impl Model {
    fn parse(json: &str) -> Result<Model, String> {
        let raw: RawModel = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut shapes = HashMap::new();
        for (name, s) in raw.shapes {
            let missing = |what: &str| format!("shape {name}: missing {what}");
            let shape = match s.kind.as_str() {
                "structure" => Shape::Structure {
                    members: s.members.into_iter().map(|(k, v)| (k, v.shape)).collect(),
                    required: s.required,
                    union: s.union,
                },
                "list" => Shape::List {
                    member: s.member.ok_or_else(|| missing("member"))?.shape,
                    min: s.min,
                    max: s.max,
                },
                "map" => Shape::Map {
                    key: s.key.ok_or_else(|| missing("key"))?.shape,
                    value: s.value.ok_or_else(|| missing("value"))?.shape,
                    min: s.min,
                    max: s.max,
                },
                "string" => Shape::String {
                    min: s.min,
                    max: s.max,
                    pattern: match s.pattern {
                        None => None,
                        Some(p) => {
                            // Anchored: the whole value must match, as in AWS (Java `matches`).
                            let re = Regex::new(&format!("^(?:{p})$"))
                                .map_err(|e| format!("shape {name}: bad pattern: {e}"))?;
                            Some((p, re))
                        }
                    },
                    enum_values: s.enum_values,
                },
                "integer" | "long" => Shape::Integer {
                    min: s.min,
                    max: s.max,
                },
                "float" | "double" => Shape::Float {
                    min: s.min,
                    max: s.max,
                },
                "boolean" => Shape::Boolean,
                "timestamp" => Shape::Timestamp,
                "blob" => Shape::Blob,
                other => return Err(format!("shape {name}: unsupported type {other}")),
            };
            shapes.insert(name, shape);
        }
        let mut operations = HashMap::new();
        let mut outputs = HashMap::new();
        for (name, op) in raw.operations {
            outputs.insert(name.clone(), op.output.map(|r| r.shape));
            operations.insert(name, op.input.map(|r| r.shape));
        }
        let model = Model {
            target_prefix: raw.metadata.target_prefix,
            operations,
            outputs,
            shapes,
        };
        model.check_references()?;
        Ok(model)
    }

    fn check_references(&self) -> Result<(), String> {
        let mut refs: Vec<&String> = self
            .operations
            .values()
            .chain(self.outputs.values())
            .flatten()
            .collect();
        for shape in self.shapes.values() {
            match shape {
                Shape::Structure { members, .. } => refs.extend(members.iter().map(|(_, s)| s)),
                Shape::List { member, .. } => refs.push(member),
                Shape::Map { key, value, .. } => refs.extend([key, value]),
                _ => {}
            }
        }
        match refs.into_iter().find(|r| !self.shapes.contains_key(*r)) {
            Some(r) => Err(format!("dangling shape reference {r}")),
            None => Ok(()),
        }
    }

    /// `CodePipeline_20150709`.
    pub fn target_prefix(&self) -> &str {
        &self.target_prefix
    }

    /// Whether the operation is part of the modelled job-worker API.
    pub fn has_operation(&self, operation: &str) -> bool {
        self.operations.contains_key(operation)
    }

    /// Validates an operation's JSON input against the model.
    pub fn validate_input(&self, operation: &str, input: &Value) -> Result<(), ValidationFailure> {
        let Some(input_shape) = self.operations.get(operation) else {
            return Err(ValidationFailure::Serialization(format!(
                "Unknown operation {operation}"
            )));
        };
        if !input.is_object() {
            return Err(ValidationFailure::Serialization(
                "Request body must be a JSON object".to_owned(),
            ));
        }
        match input_shape {
            Some(shape) => self.run(shape, input, false, ""),
            None => Ok(()),
        }
    }

    /// Validates an operation's JSON output (what the emulator answers)
    /// against the model, strictly: members the model does not define are
    /// violations too. Operations without an output shape must answer `{}`.
    pub fn validate_output(
        &self,
        operation: &str,
        output: &Value,
    ) -> Result<(), ValidationFailure> {
        let Some(output_shape) = self.outputs.get(operation) else {
            return Err(ValidationFailure::Serialization(format!(
                "Unknown operation {operation}"
            )));
        };
        match output_shape {
            Some(shape) => self.run(shape, output, true, ""),
            None if output.as_object().is_some_and(|o| o.is_empty()) => Ok(()),
            None => Err(ValidationFailure::Constraints(vec![format!(
                "{operation} has no output shape, so its output must be an empty object"
            )])),
        }
    }

    /// Validates a value against one named shape, strictly (unknown members
    /// are violations). Used for emulator-side inputs such as control API
    /// bodies and the data of created jobs.
    /// Messages name members relative to `path` (e.g. `actionTypeId`).
    pub fn validate_shape(
        &self,
        shape: &str,
        value: &Value,
        path: &str,
    ) -> Result<(), ValidationFailure> {
        if !self.shapes.contains_key(shape) {
            return Err(ValidationFailure::Serialization(format!(
                "Unknown shape {shape}"
            )));
        }
        self.run(shape, value, true, path)
    }

    fn run(
        &self,
        shape: &str,
        value: &Value,
        strict: bool,
        path: &str,
    ) -> Result<(), ValidationFailure> {
        let mut findings = Findings {
            strict,
            ..Findings::default()
        };
        self.check(shape, value, path, &mut findings);
        if let Some(first) = findings.type_errors.into_iter().next() {
            return Err(ValidationFailure::Serialization(first));
        }
        if findings.violations.is_empty() {
            Ok(())
        } else {
            Err(ValidationFailure::Constraints(findings.violations))
        }
    }

    fn check(&self, shape_name: &str, value: &Value, path: &str, out: &mut Findings) {
        let shape = &self.shapes[shape_name];
        match shape {
            Shape::Structure {
                members,
                required,
                union,
            } => {
                let Some(obj) = value.as_object() else {
                    out.type_errors.push(type_error(path, "an object"));
                    return;
                };
                if out.strict {
                    for key in obj.keys() {
                        if !members.iter().any(|(name, _)| name == key) {
                            out.at(
                                &join_path(path, key),
                                "Member is not defined by the model".to_owned(),
                            );
                        }
                    }
                }
                let mut present = 0;
                for (name, target) in members {
                    match obj.get(name) {
                        None | Some(Value::Null) => {
                            if required.contains(name) {
                                out.violations.push(format!(
                                    "Value null at '{}' failed to satisfy constraint: Member must not be null",
                                    join_path(path, name)
                                ));
                            }
                        }
                        Some(v) => {
                            present += 1;
                            self.check(target, v, &join_path(path, name), out);
                        }
                    }
                }
                if *union && present != 1 {
                    out.at(
                        if path.is_empty() { "input" } else { path },
                        "Exactly one member must be set".to_owned(),
                    );
                }
            }
            Shape::List { member, min, max } => {
                let Some(items) = value.as_array() else {
                    out.type_errors.push(type_error(path, "a list"));
                    return;
                };
                for c in length_constraints(items.len(), *min, *max) {
                    out.at(path, c);
                }
                for (i, item) in items.iter().enumerate() {
                    if !item.is_null() {
                        self.check(member, item, &format!("{path}.{}.member", i + 1), out);
                    }
                }
            }
            Shape::Map {
                key,
                value: value_shape,
                min,
                max,
            } => {
                let Some(entries) = value.as_object() else {
                    out.type_errors.push(type_error(path, "a map"));
                    return;
                };
                for c in length_constraints(entries.len(), *min, *max) {
                    out.at(path, c);
                }
                let value_is_scalar = !matches!(
                    self.shapes[value_shape],
                    Shape::Structure { .. } | Shape::List { .. } | Shape::Map { .. }
                );
                for (k, v) in entries {
                    match self.scalar(key, &Value::String(k.clone())) {
                        Ok(cs) if !cs.is_empty() => out.at(
                            path,
                            format!("Map keys must satisfy constraint: [{}]", cs.join(", ")),
                        ),
                        Ok(_) => {}
                        Err(expected) => out.type_errors.push(type_error(path, expected)),
                    }
                    if v.is_null() {
                        continue;
                    }
                    if value_is_scalar {
                        match self.scalar(value_shape, v) {
                            Ok(cs) if !cs.is_empty() => out.at(
                                path,
                                format!("Map value must satisfy constraint: [{}]", cs.join(", ")),
                            ),
                            Ok(_) => {}
                            Err(expected) => out.type_errors.push(format!(
                                "Unexpected value type in map '{path}': expected {expected}"
                            )),
                        }
                    } else {
                        self.check(value_shape, v, &format!("{path}.value"), out);
                    }
                }
            }
            _ => match self.scalar(shape_name, value) {
                Ok(cs) => cs.into_iter().for_each(|c| out.at(path, c)),
                Err(expected) => out.type_errors.push(type_error(path, expected)),
            },
        }
    }

    /// Constraint messages for a scalar value, or `Err(expected type)`.
    fn scalar(&self, shape_name: &str, value: &Value) -> Result<Vec<String>, &'static str> {
        let mut cs = Vec::new();
        match &self.shapes[shape_name] {
            Shape::String {
                min,
                max,
                pattern,
                enum_values,
            } => {
                let s = value.as_str().ok_or("a string")?;
                cs.extend(length_constraints(s.chars().count(), *min, *max));
                if let Some((source, re)) = pattern
                    && !re.is_match(s)
                {
                    cs.push(format!(
                        "Member must satisfy regular expression pattern: {source}"
                    ));
                }
                if let Some(values) = enum_values
                    && !values.iter().any(|v| v == s)
                {
                    cs.push(format!(
                        "Member must satisfy enum value set: [{}]",
                        values.join(", ")
                    ));
                }
            }
            Shape::Integer { min, max } => {
                let n = value.as_i64().ok_or("an integer")?;
                cs.extend(value_constraints(n as f64, *min, *max));
            }
            Shape::Float { min, max } => {
                let n = value.as_f64().ok_or("a number")?;
                cs.extend(value_constraints(n, *min, *max));
            }
            Shape::Boolean => {
                value.as_bool().ok_or("a boolean")?;
            }
            Shape::Timestamp => {
                value.as_f64().ok_or("a timestamp (epoch seconds)")?;
            }
            Shape::Blob => {
                value.as_str().ok_or("a base64 string")?;
            }
            Shape::Structure { .. } | Shape::List { .. } | Shape::Map { .. } => {
                return Err("a scalar");
            }
        }
        Ok(cs)
    }
}

fn type_error(path: &str, expected: &str) -> String {
    let path = if path.is_empty() { "input" } else { path };
    format!("Unexpected value type at '{path}': expected {expected}")
}

fn length_constraints(len: usize, min: Option<f64>, max: Option<f64>) -> Vec<String> {
    let mut cs = Vec::new();
    if let Some(max) = max
        && len as f64 > max
    {
        cs.push(format!(
            "Member must have length less than or equal to {}",
            fmt_bound(max)
        ));
    }
    if let Some(min) = min
        && (len as f64) < min
    {
        cs.push(format!(
            "Member must have length greater than or equal to {}",
            fmt_bound(min)
        ));
    }
    cs
}

fn value_constraints(n: f64, min: Option<f64>, max: Option<f64>) -> Vec<String> {
    let mut cs = Vec::new();
    if let Some(max) = max
        && n > max
    {
        cs.push(format!(
            "Member must have value less than or equal to {}",
            fmt_bound(max)
        ));
    }
    if let Some(min) = min
        && n < min
    {
        cs.push(format!(
            "Member must have value greater than or equal to {}",
            fmt_bound(min)
        ));
    }
    cs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const JOB: &str = "abcdef12-3456-4789-8abc-def012345678";

    fn constraints(op: &str, input: Value) -> Vec<String> {
        match model().validate_input(op, &input) {
            Err(ValidationFailure::Constraints(v)) => v,
            other => panic!("expected constraint violations, got {other:?}"),
        }
    }

    #[test]
    fn embedded_model_parses_and_has_all_job_worker_operations() {
        let m = model();
        assert_eq!(m.target_prefix(), "CodePipeline_20150709");
        for op in [
            "PutJobSuccessResult",
            "PutThirdPartyJobSuccessResult",
            "PutJobFailureResult",
            "PutThirdPartyJobFailureResult",
            "PollForJobs",
            "PollForThirdPartyJobs",
            "AcknowledgeJob",
            "AcknowledgeThirdPartyJob",
            "GetJobDetails",
            "GetThirdPartyJobDetails",
        ] {
            assert!(m.has_operation(op), "{op}");
        }
        assert!(!m.has_operation("ListPipelines"));
    }

    #[test]
    fn full_valid_success_input_passes() {
        let input = json!({
            "jobId": JOB,
            "currentRevision": {"revision": "r1", "changeIdentifier": "c1", "created": 1700000000.5, "revisionSummary": "s"},
            "executionDetails": {"summary": "ok", "externalExecutionId": "x", "percentComplete": 0},
            "outputVariables": {"key_1": "v", "k-2@": ""},
            "someUnknownMember": {"ignored": true}
        });
        assert_eq!(
            model().validate_input("PutJobSuccessResult", &input),
            Ok(())
        );
    }

    #[test]
    fn missing_required_member_is_reported_as_null() {
        assert_eq!(
            constraints("PutThirdPartyJobSuccessResult", json!({"jobId": "x"})),
            vec![
                "Value null at 'clientToken' failed to satisfy constraint: Member must not be null"
            ]
        );
        // Explicit null counts as absent.
        assert_eq!(
            constraints("PutJobSuccessResult", json!({"jobId": null})).len(),
            1
        );
    }

    #[test]
    fn pattern_is_anchored_to_the_whole_string() {
        let v = constraints(
            "PutJobSuccessResult",
            json!({"jobId": format!("{JOB}-extra")}),
        );
        assert_eq!(
            v,
            vec![
                "Value at 'jobId' failed to satisfy constraint: Member must satisfy regular expression pattern: [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
            ]
        );
        let upper = JOB.to_uppercase();
        assert_eq!(
            constraints("PutJobSuccessResult", json!({ "jobId": upper })).len(),
            1
        );
    }

    #[test]
    fn nested_lengths_count_unicode_characters_and_messages_hide_values() {
        // 100 multi-byte characters are fine (300 bytes), 101 are not.
        let ok = "é".repeat(100);
        let input =
            json!({"jobId": JOB, "currentRevision": {"revision": "r", "changeIdentifier": ok}});
        assert_eq!(
            model().validate_input("PutJobSuccessResult", &input),
            Ok(())
        );
        let secret = "秘".repeat(101);
        let input =
            json!({"jobId": JOB, "currentRevision": {"revision": "", "changeIdentifier": secret}});
        let failure = model()
            .validate_input("PutJobSuccessResult", &input)
            .unwrap_err();
        let msg = failure.message();
        assert_eq!(
            msg,
            "2 validation errors detected: \
             Value at 'currentRevision.changeIdentifier' failed to satisfy constraint: Member must have length less than or equal to 100; \
             Value at 'currentRevision.revision' failed to satisfy constraint: Member must have length greater than or equal to 1"
        );
        assert!(!msg.contains('秘'));
    }

    #[test]
    fn integer_bounds() {
        let input = |p: i64| json!({"jobId": JOB, "executionDetails": {"percentComplete": p}});
        assert_eq!(
            model().validate_input("PutJobSuccessResult", &input(100)),
            Ok(())
        );
        assert_eq!(
            constraints("PutJobSuccessResult", input(101)),
            vec![
                "Value at 'executionDetails.percentComplete' failed to satisfy constraint: Member must have value less than or equal to 100"
            ]
        );
        assert_eq!(
            constraints("PutJobSuccessResult", input(-1)),
            vec![
                "Value at 'executionDetails.percentComplete' failed to satisfy constraint: Member must have value greater than or equal to 0"
            ]
        );
    }

    #[test]
    fn wrong_json_types_are_serialization_errors() {
        for (input, path) in [
            (json!({"jobId": 5}), "jobId"),
            (
                json!({"jobId": JOB, "executionDetails": {"percentComplete": "5"}}),
                "executionDetails.percentComplete",
            ),
            (
                json!({"jobId": JOB, "executionDetails": {"percentComplete": 5.5}}),
                "executionDetails.percentComplete",
            ),
            (
                json!({"jobId": JOB, "currentRevision": {"revision": "r", "changeIdentifier": "c", "created": "2020-01-01"}}),
                "currentRevision.created",
            ),
            (
                json!({"jobId": JOB, "outputVariables": []}),
                "outputVariables",
            ),
        ] {
            let failure = model()
                .validate_input("PutJobSuccessResult", &input)
                .unwrap_err();
            assert_eq!(failure.error_type(), "SerializationException");
            assert!(
                failure.message().contains(&format!("'{path}'")),
                "{failure:?}"
            );
        }
        let failure = model()
            .validate_input("PutJobSuccessResult", &json!([1]))
            .unwrap_err();
        assert_eq!(failure.error_type(), "SerializationException");
    }

    #[test]
    fn enums_lists_and_map_keys() {
        let v = constraints(
            "PutJobFailureResult",
            json!({"jobId": JOB, "failureDetails": {"type": "Oops", "message": "m"}}),
        );
        assert_eq!(v.len(), 1);
        assert!(v[0].starts_with("Value at 'failureDetails.type' failed to satisfy constraint: Member must satisfy enum value set: [JobFailed, "));

        let v = constraints(
            "PutJobSuccessResult",
            json!({"jobId": JOB, "outputVariables": {"bad key": "v", "good": "v"}}),
        );
        assert_eq!(
            v,
            vec![
                "Value at 'outputVariables' failed to satisfy constraint: Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [A-Za-z0-9@\\-_]+]"
            ]
        );

        // PollForJobs: actionTypeId is a nested required structure, queryParam a bounded map.
        let v = constraints(
            "PollForJobs",
            json!({"actionTypeId": {"category": "Build", "owner": "Custom", "provider": "p", "version": "1"},
                   "maxBatchSize": 0, "queryParam": {"a": "b", "c": "d"}}),
        );
        assert_eq!(
            v,
            vec![
                "Value at 'maxBatchSize' failed to satisfy constraint: Member must have value greater than or equal to 1",
                "Value at 'queryParam' failed to satisfy constraint: Member must have length less than or equal to 1",
            ]
        );
        let v = constraints(
            "PollForJobs",
            json!({"actionTypeId": {"category": "Build"}}),
        );
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(
            v.iter()
                .all(|m| m.starts_with("Value null at 'actionTypeId."))
        );
    }

    #[test]
    fn list_items_are_validated_with_coral_paths() {
        // No list in the job-worker inputs, so exercise a list shape directly.
        let m = model();
        let mut out = Findings::default();
        m.check(
            "ArtifactList",
            &json!([{"name": "ok", "location": {"type": "S3"}}, {"name": "bad name"}]),
            "artifacts",
            &mut out,
        );
        assert_eq!(
            out.violations,
            vec![
                "Value at 'artifacts.2.member.name' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_\\-]+"
            ]
        );
    }

    #[test]
    fn outputs_are_validated_strictly() {
        let m = model();
        let job = json!({"id": JOB, "nonce": "n", "accountId": "123456789012",
                         "data": {"actionTypeId": {"category": "Build", "owner": "Custom", "provider": "p", "version": "1"}}});
        assert_eq!(
            m.validate_output("PollForJobs", &json!({ "jobs": [job] })),
            Ok(())
        );
        assert_eq!(
            m.validate_output("AcknowledgeJob", &json!({"status": "InProgress"})),
            Ok(())
        );
        // Operations without an output shape answer `{}`.
        assert_eq!(m.validate_output("PutJobSuccessResult", &json!({})), Ok(()));
        assert!(
            m.validate_output("PutJobSuccessResult", &json!({"x": 1}))
                .is_err()
        );
        // Unknown members, bad nonces, account ids and enum values are violations.
        let v = match m.validate_output(
            "PollForJobs",
            &json!({"jobs": [{"id": JOB, "nonce": "n".repeat(51), "accountId": "1", "extra": true}]}),
        ) {
            Err(ValidationFailure::Constraints(v)) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(
            v.iter()
                .any(|m| m.starts_with("Value at 'jobs.1.member.extra'"))
        );
        assert!(
            v.iter()
                .any(|m| m.starts_with("Value at 'jobs.1.member.nonce'"))
        );
        assert!(
            m.validate_output("AcknowledgeJob", &json!({"status": "Done"}))
                .is_err()
        );
        // Requests stay lenient about unknown members.
        assert_eq!(
            m.validate_input(
                "AcknowledgeJob",
                &json!({"jobId": JOB, "nonce": "n", "new": 1})
            ),
            Ok(())
        );
    }

    #[test]
    fn shapes_are_validated_with_a_path_prefix() {
        let err = model()
            .validate_shape("PipelineName", &json!("a b"), "pipelineName")
            .unwrap_err();
        assert!(err.message().contains("Value at 'pipelineName'"), "{err:?}");
        assert!(
            model()
                .validate_shape("NoSuchShape", &json!({}), "x")
                .is_err()
        );
    }
}
