//! JSON Schemas for the config kinds: generated from the Rust types in
//! `kinds`, written to `schemas/` for editors and CI, and used by the loader
//! to check every document's shape before it is deserialised.

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::Validator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

use super::kinds::{BindingSpec, HostSpec, Kind, ModelSpec, PolicySpec, UserSpec};

/// The schema of one kind as it is published in `schemas/`.
pub fn schema_for(kind: Kind) -> Value {
    let settings = SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true);
    let generator = settings.into_generator();
    let schema = match kind {
        Kind::Host => generator.into_root_schema_for::<HostSpec>(),
        Kind::Model => generator.into_root_schema_for::<ModelSpec>(),
        Kind::Binding => generator.into_root_schema_for::<BindingSpec>(),
        Kind::Policy => generator.into_root_schema_for::<PolicySpec>(),
        Kind::User => generator.into_root_schema_for::<UserSpec>(),
    };
    let mut value = schema.to_value();
    strip_null(&mut value);
    add_kind(&mut value, kind);
    value
}

/// `Option<T>` fields are optional, not nullable: an empty `timeout:` in YAML
/// is almost always a mistake, so the schema says so.
fn strip_null(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            for key in ["anyOf", "oneOf"] {
                if let Some(Value::Array(alts)) = map.get_mut(key) {
                    alts.retain(|a| a.get("type") != Some(&Value::from("null")));
                    if alts.len() == 1 {
                        let only = alts.remove(0);
                        map.remove(key);
                        if let Value::Object(inner) = only {
                            for (k, val) in inner {
                                map.entry(k).or_insert(val);
                            }
                        }
                    }
                }
            }
            consts_to_enum(map);
            add_integer_bounds(map);
            // `Option` fields default to nothing, which is not worth saying.
            if map.get("default").is_some_and(Value::is_null) {
                map.remove("default");
            }
            if let Some(Value::Array(e)) = map.get_mut("enum") {
                e.retain(|x| !x.is_null());
            }
            map.values_mut().for_each(strip_null);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}

/// schemars notes `format: uint32` but no bound, so out-of-range numbers
/// would pass the schema and fail later without a position.
fn add_integer_bounds(map: &mut Map<String, Value>) {
    let (min, max): (i64, u64) = match map.get("format").and_then(Value::as_str) {
        Some("int32") => (i32::MIN as i64, i32::MAX as u64),
        Some("uint32") => (0, u32::MAX as u64),
        Some("uint64") => (0, u64::MAX),
        _ => return,
    };
    map.entry("minimum").or_insert(Value::from(min));
    map.insert("maximum".into(), Value::from(max));
}

/// schemars renders documented unit variants as `oneOf` of `const`s; a plain
/// `enum` gives editors a completion list and validators a one-line error.
fn consts_to_enum(map: &mut Map<String, Value>) {
    let Some(Value::Array(alts)) = map.get("oneOf") else {
        return;
    };
    if alts.is_empty()
        || !alts
            .iter()
            .all(|a| a.get("const").is_some_and(Value::is_string))
    {
        return;
    }
    let values: Vec<Value> = alts
        .iter()
        .filter_map(|a| a.get("const").cloned())
        .collect();
    let docs: Vec<String> = alts
        .iter()
        .filter_map(|a| {
            Some(format!(
                "`{}`: {}",
                a.get("const")?.as_str()?,
                a.get("description")?.as_str()?.trim_end_matches('.')
            ))
        })
        .collect();
    map.remove("oneOf");
    map.insert("type".into(), Value::from("string"));
    map.insert("enum".into(), Value::Array(values));
    if !docs.is_empty() {
        let base = map
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let joined = docs.join("; ");
        let full = if base.is_empty() {
            joined
        } else {
            format!("{base} {joined}")
        };
        map.insert("description".into(), Value::from(full));
    }
}

fn add_kind(v: &mut Value, kind: Kind) {
    let Value::Object(root) = v else { return };
    root.insert("title".into(), Value::from(format!("relay {kind}")));
    let mut props = Map::new();
    props.insert(
        "kind".into(),
        serde_json::json!({ "const": kind.as_str(), "description": "The document's kind." }),
    );
    if let Some(Value::Object(existing)) = root.remove("properties") {
        props.extend(existing);
    }
    root.insert("properties".into(), Value::Object(props));
    let mut required = vec![Value::from("kind")];
    if let Some(Value::Array(existing)) = root.remove("required") {
        required.extend(existing);
    }
    root.insert("required".into(), Value::Array(required));
}

struct Compiled {
    schema: Value,
    validator: Validator,
}

fn compiled(kind: Kind) -> &'static Compiled {
    static CACHE: OnceLock<Vec<Compiled>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        Kind::ALL
            .into_iter()
            .map(|k| {
                let schema = schema_for(k);
                // The schemas are generated from our own types; failing to
                // compile one is a bug caught by the schema tests.
                #[allow(clippy::expect_used)]
                let validator = jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft202012)
                    // Our patterns need no look-around; the plain regex engine
                    // compiles them in a fraction of fancy-regex's memory.
                    .with_pattern_options(jsonschema::PatternOptions::regex())
                    .build(&schema)
                    .expect("generated schema compiles");
                Compiled { schema, validator }
            })
            .collect()
    });
    &all[kind as usize]
}

/// A schema violation, before it is given a file position.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// JSON pointer of the offending node.
    pub pointer: String,
    /// True when the position should be the value rather than its key.
    pub at_value: bool,
    pub message: String,
}

/// Checks one document against its kind's schema, returning every violation
/// with a message that says what to do.
pub fn check(kind: Kind, doc: &Value) -> Vec<Violation> {
    let c = compiled(kind);
    let mut out = Vec::new();
    for err in c.validator.iter_errors(doc) {
        let at = err.instance_path().as_str().to_string();
        match err.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let known = known_properties(&c.schema, err.schema_path().as_str());
                for field in unexpected {
                    out.push(Violation {
                        pointer: format!("{at}/{field}"),
                        at_value: false,
                        message: unknown_field_message(&at, field, &known),
                    });
                }
            }
            ValidationErrorKind::Required { property } => {
                let field = property.as_str().unwrap_or_default();
                out.push(Violation {
                    pointer: at.clone(),
                    at_value: true,
                    message: format!("missing required field `{field}`"),
                });
            }
            ValidationErrorKind::Type { kind }
                if is_host_key(&at) && err.instance().is_string() =>
            {
                let _ = kind;
                out.push(Violation {
                    pointer: at,
                    at_value: true,
                    message: PLAINTEXT.into(),
                });
            }
            ValidationErrorKind::Type { kind } => {
                out.push(Violation {
                    pointer: at,
                    // An empty value has no position of its own (the parser
                    // marks the next token): point at its key.
                    at_value: !err.instance().is_null(),
                    message: format!(
                        "expected {}, found {}",
                        type_name(kind),
                        describe(err.instance())
                    ),
                });
            }
            ValidationErrorKind::Enum { options } => {
                let choices: Vec<String> = options
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|o| o.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let field = last_segment(&at).to_string();
                let got = describe(err.instance());
                let hint = err
                    .instance()
                    .as_str()
                    .and_then(|s| closest(s, choices.iter().map(String::as_str)))
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                out.push(Violation {
                    pointer: at,
                    at_value: true,
                    message: format!(
                        "unknown {field} {got}; expected one of: {}{hint}",
                        choices.join(", ")
                    ),
                });
            }
            ValidationErrorKind::Constant { expected_value } => out.push(Violation {
                pointer: at,
                at_value: true,
                message: format!(
                    "expected {expected_value}, found {}",
                    describe(err.instance())
                ),
            }),
            ValidationErrorKind::Pattern { .. } => {
                let message = pattern_message(&at, err.instance());
                out.push(Violation {
                    pointer: at,
                    at_value: true,
                    message,
                });
            }
            _ => out.push(Violation {
                pointer: at,
                at_value: true,
                message: err.to_string(),
            }),
        }
    }
    drop_required_explained_by_typos(&mut out);
    out
}

/// `base_ulr: …` yields both "unknown field `base_ulr`; did you mean
/// `base_url`?" and "missing required field `base_url`": keep the first.
fn drop_required_explained_by_typos(out: &mut Vec<Violation>) {
    let typos: Vec<(String, String)> = out
        .iter()
        .filter_map(|v| {
            let (parent, _) = v.pointer.rsplit_once('/')?;
            let suggested = v
                .message
                .split("did you mean `")
                .nth(1)?
                .split('`')
                .next()?;
            Some((parent.to_string(), suggested.to_string()))
        })
        .collect();
    out.retain(|v| {
        let Some(field) = v
            .message
            .strip_prefix("missing required field `")
            .and_then(|m| m.strip_suffix('`'))
        else {
            return true;
        };
        !typos
            .iter()
            .any(|(parent, s)| *parent == v.pointer && s == field)
    });
}

pub const PLAINTEXT: &str = "plaintext secret values are not allowed in config; seal the value with \
     `relay secret encrypt` and put the output under `age:`, or reference an environment variable with `env:`";

/// Field names people use for a raw secret.
const PLAINTEXT_FIELDS: [&str; 6] = ["value", "key", "secret", "api_key", "apikey", "plaintext"];

fn is_host_key(pointer: &str) -> bool {
    let mut parts = pointer.split('/').skip(1);
    matches!((parts.next(), parts.next(), parts.next()), (Some("keys"), Some(i), None) if i.parse::<usize>().is_ok())
}

fn unknown_field_message(at: &str, field: &str, known: &[String]) -> String {
    if is_host_key(at) && PLAINTEXT_FIELDS.contains(&field.to_ascii_lowercase().as_str()) {
        return PLAINTEXT.into();
    }
    let mut msg = format!("unknown field `{field}`");
    match closest(field, known.iter().map(String::as_str)) {
        Some(c) => msg.push_str(&format!("; did you mean `{c}`?")),
        None if !known.is_empty() => {
            msg.push_str(&format!("; expected one of: {}", known.join(", ")))
        }
        None => {}
    }
    msg
}

/// Messages for values that do not match their pattern. Fields that may
/// hold a secret typed in the wrong place never echo the value: messages
/// reach logs and the control plane.
fn pattern_message(at: &str, instance: &Value) -> String {
    let field = last_segment(at);
    let got = describe(instance);
    match field {
        "age" => format!(
            "not a sealed value (expected an armored `-----BEGIN AGE ENCRYPTED FILE-----` block); \
             {PLAINTEXT}"
        ),
        "env" => "not an environment variable name (letters, digits and `_`); `env:` takes the name of a \
                  variable, never the secret itself"
            .into(),
        "base_url" => format!("{got} is not an http(s) URL; use the API root, e.g. https://api.openai.com/v1"),
        "password_hash" => "not an argon2id hash; generate one with `relay user hash-password` \
                            (never put a password here)"
            .into(),
        _ if instance.is_string() && looks_like_duration_field(field) => {
            format!("{got} is not a duration; write it like `120s`, `1h30m` or `500ms`")
        }
        _ => format!("{got} does not match the expected format"),
    }
}

fn looks_like_duration_field(field: &str) -> bool {
    field.ends_with("timeout") || field.ends_with("cooldown")
}

/// Property names allowed where an `additionalProperties` check failed.
fn known_properties(schema: &Value, schema_path: &str) -> Vec<String> {
    let parent = schema_path
        .strip_suffix("/additionalProperties")
        .unwrap_or(schema_path);
    schema
        .pointer(parent)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// The candidate closest to `word`, if it is close enough to be a typo.
pub fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let len = lower.chars().count();
    candidates
        .filter_map(|c| {
            let limit = 2.max(c.len() / 3);
            // Cheap length filter first: distance is at least the length gap.
            if c.len().abs_diff(len) > limit {
                return None;
            }
            let d = strsim::osa_distance(&lower, &c.to_ascii_lowercase());
            (d <= limit).then_some((d, c))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn last_segment(pointer: &str) -> &str {
    pointer.rsplit('/').next().unwrap_or("")
}

fn type_name(kind: &TypeKind) -> String {
    match kind {
        TypeKind::Single(t) => article(&t.to_string()),
        TypeKind::Multiple(ts) => {
            let names: Vec<String> = ts.iter().map(|t| t.to_string()).collect();
            format!("one of {}", names.join(", "))
        }
    }
}

fn article(t: &str) -> String {
    match t {
        "array" => "a list".into(),
        "object" => "a mapping".into(),
        "integer" => "an integer".into(),
        "null" => "nothing".into(),
        other => format!("a {other}"),
    }
}

/// A short description of a YAML value for messages.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "an empty value".into(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("`{n}`"),
        Value::String(s) if s.chars().count() > 40 => {
            format!("\"{}…\"", s.chars().take(37).collect::<String>())
        }
        Value::String(s) => format!("\"{s}\""),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_schema_compiles_and_requires_kind() {
        for kind in Kind::ALL {
            let s = schema_for(kind);
            assert_eq!(s["properties"]["kind"]["const"], kind.as_str());
            assert_eq!(s["required"][0], "kind");
            assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
            let _ = compiled(kind);
        }
    }

    #[test]
    fn unknown_field_suggests_closest() {
        let v = check(
            Kind::Host,
            &json!({"kind":"Host","name":"h","base_ur":"https://x","keys":[]}),
        );
        assert!(
            v.iter()
                .any(|x| x.pointer == "/base_ur" && x.message.contains("did you mean `base_url`")),
            "{v:?}"
        );
        // The typo explains the missing field; it is not reported twice.
        assert!(
            !v.iter()
                .any(|x| x.message.contains("missing required field")),
            "{v:?}"
        );
    }

    #[test]
    fn plaintext_keys_are_named_as_such() {
        for keys in [
            json!(["sk-abc"]),
            json!([{"name":"k","value":"sk-abc"}]),
            json!([{"name":"k","age":"sk-abc"}]),
        ] {
            let v = check(
                Kind::Host,
                &json!({"kind":"Host","name":"h","base_url":"https://x","keys":keys}),
            );
            assert!(
                v.iter().any(|x| x
                    .message
                    .contains("plaintext secret values are not allowed")),
                "{v:?}"
            );
        }
    }

    #[test]
    fn enum_and_duration_messages() {
        let v = check(
            Kind::Binding,
            &json!({"kind":"Binding","name":"b","model":"m","host":"h","adapter":"opneai","upstream":"u"}),
        );
        assert_eq!(v[0].message, "unknown adapter \"opneai\"; expected one of: openai, anthropic (did you mean `openai`?)");
        let v = check(
            Kind::Host,
            &json!({"kind":"Host","name":"h","base_url":"https://x","keys":[],"timeout":"2 minutes"}),
        );
        assert!(v[0].message.contains("is not a duration"), "{v:?}");
    }
}
