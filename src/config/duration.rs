//! Human durations in config (`120s`, `1h30m`, `500ms`).

use std::borrow::Cow;
use std::time::Duration;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};

/// The pattern the schema enforces; `humantime` parses what it admits.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h|d))+$";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(ConfigDuration)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

impl JsonSchema for ConfigDuration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "examples": ["120s", "1h30m", "500ms"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_pattern_and_parser_agree() {
        for ok in ["120s", "1h30m", "500ms", "2d", "1m"] {
            let d: ConfigDuration = serde_json::from_value(serde_json::json!(ok)).unwrap();
            assert!(d.0 > Duration::ZERO, "{ok}");
        }
        assert_eq!(
            serde_json::from_value::<ConfigDuration>(serde_json::json!("1h30m"))
                .unwrap()
                .0,
            Duration::from_secs(5400)
        );
        assert!(serde_json::from_value::<ConfigDuration>(serde_json::json!("soon")).is_err());
    }
}
