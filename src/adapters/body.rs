//! Request bodies as top-level fields with raw values: enough to read and
//! rewrite a few fields (`model`, `stream_options`) while every other byte a
//! client sent passes through untouched and unparsed.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The top-level fields of a JSON object, in order, values unparsed.
pub struct RawObject<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is not valid JSON: {0}")]
    Json(String),
    #[error("request body must be a JSON object")]
    NotObject,
    #[error("`{field}` must be {expected}")]
    Field {
        field: &'static str,
        expected: &'static str,
    },
}

impl<'a> RawObject<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<RawObject<'a>, BodyError> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            // Distinguish "not JSON" from "JSON but not an object".
            return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => Err(BodyError::NotObject),
                Err(e) => Err(BodyError::Json(e.to_string())),
            };
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let fields = de
            .deserialize_map(FieldsVisitor)
            .map_err(|e| BodyError::Json(e.to_string()))?;
        de.end().map_err(|e| BodyError::Json(e.to_string()))?;
        Ok(RawObject { fields })
    }

    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// A string field; `Ok(None)` when absent.
    pub fn str(&self, key: &'static str) -> Result<Option<Cow<'a, str>>, BodyError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => Cow::<str>::deserialize(v)
                .map(Some)
                .map_err(|_| BodyError::Field {
                    field: key,
                    expected: "a string",
                }),
        }
    }

    /// A boolean field; `false` when absent or null.
    pub fn flag(&self, key: &'static str) -> Result<bool, BodyError> {
        match self.get(key) {
            None => Ok(false),
            Some(v) => Option::<bool>::deserialize(v)
                .map(|b| b.unwrap_or(false))
                .map_err(|_| BodyError::Field {
                    field: key,
                    expected: "true or false",
                }),
        }
    }

    /// Any field, deserialised.
    pub fn parse_field<T: Deserialize<'a>>(
        &self,
        key: &'static str,
        expected: &'static str,
    ) -> Result<Option<T>, BodyError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => T::deserialize(v).map(Some).map_err(|_| BodyError::Field {
                field: key,
                expected,
            }),
        }
    }

    /// Serialises the object with `set` fields replaced (or appended when
    /// absent), all other fields byte for byte as received.
    pub fn rewrite(&self, set: &[(&str, &str)]) -> Vec<u8> {
        let size: usize = self
            .fields
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum();
        let mut out = Vec::with_capacity(
            size + set
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>()
                + 2,
        );
        out.push(b'{');
        let mut first = true;
        let mut put = |out: &mut Vec<u8>, k: &str, v: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(super::json_string(k).as_bytes());
            out.push(b':');
            out.extend_from_slice(v.as_bytes());
        };
        for (k, v) in &self.fields {
            match set.iter().find(|(sk, _)| sk == k) {
                Some((_, nv)) => put(&mut out, k, nv),
                None => put(&mut out, k, v.get()),
            }
        }
        for (k, v) in set {
            if self.get(k).is_none() {
                put(&mut out, k, v);
            }
        }
        out.push(b'}');
        out
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(key) = map.next_key::<Key<'de>>()? {
            // Parsers disagree on duplicates (relay would read the first,
            // many upstreams the last), so one body could mean two things.
            if fields.iter().any(|(k, _)| *k == key.0) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate top-level field `{}`; send each field once",
                    key.0
                )));
            }
            let value: &'de RawValue = map.next_value()?;
            fields.push((key.0, value));
        }
        Ok(fields)
    }
}

/// A map key that borrows from the input unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_named_fields_and_keeps_the_rest_verbatim() {
        let body = br#"{"model":"m1", "messages":[{"role":"user","content":"hi \u00e9"}],"x_unknown":{"a":[1,2.50]},"stream":true}"#;
        let obj = RawObject::parse(body).unwrap();
        assert_eq!(obj.str("model").unwrap().as_deref(), Some("m1"));
        assert!(obj.flag("stream").unwrap());
        let out = obj.rewrite(&[
            ("model", "\"up-1\""),
            ("stream_options", r#"{"include_usage":true}"#),
        ]);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            r#"{"model":"up-1","messages":[{"role":"user","content":"hi \u00e9"}],"x_unknown":{"a":[1,2.50]},"stream":true,"stream_options":{"include_usage":true}}"#
        );
    }

    #[test]
    fn duplicate_fields_are_refused() {
        let err = RawObject::parse(br#"{"model":"a","stream":false,"stream":true}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("duplicate top-level field `stream`"), "{err}");
        // Nested objects are the upstream's business.
        assert!(RawObject::parse(br#"{"m":{"a":1,"a":2}}"#).is_ok());
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        assert!(matches!(
            RawObject::parse(b"not json"),
            Err(BodyError::Json(_))
        ));
        assert!(matches!(
            RawObject::parse(b"[1,2]"),
            Err(BodyError::NotObject)
        ));
        assert!(matches!(
            RawObject::parse(b"{\"a\":1} trailing"),
            Err(BodyError::Json(_))
        ));
        assert!(matches!(
            RawObject::parse(b"{\"a\":"),
            Err(BodyError::Json(_))
        ));
        let obj = RawObject::parse(br#"{"model":5,"stream":"yes"}"#).unwrap();
        assert!(matches!(
            obj.str("model"),
            Err(BodyError::Field { field: "model", .. })
        ));
        assert!(obj.flag("stream").is_err());
        let esc = RawObject::parse(br#"{"mo\u0064el":"x"}"#).unwrap();
        assert_eq!(esc.str("model").unwrap().as_deref(), Some("x"));
    }
}
