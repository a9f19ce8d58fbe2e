//! Scrubbing configured key values out of text relay did not write itself:
//! upstream error bodies (some upstreams echo the credential they were
//! sent) before they reach a client or a log line. Built once per snapshot
//! from every host's key values; used only on error paths.

use std::borrow::Cow;

use bytes::Bytes;
use memchr::memmem::Finder;

/// What a configured key value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Values shorter than this are not searched for: they would match ordinary
/// text, and a value that short is no credential worth the name.
pub const MIN_REDACTED_LEN: usize = 8;

/// Every configured key value of a snapshot, as prebuilt substring
/// finders. Its `Debug` never shows a value.
#[derive(Default)]
pub struct Redactor {
    finders: Vec<Finder<'static>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} values)", self.finders.len())
    }
}

impl Redactor {
    /// A redactor for these values (duplicates and short values dropped;
    /// longest first, so a value containing another is replaced whole).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Redactor {
        let mut values: Vec<&str> = values
            .into_iter()
            .filter(|v| v.len() >= MIN_REDACTED_LEN)
            .collect();
        values.sort_unstable_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        values.dedup();
        Redactor {
            finders: values
                .into_iter()
                .map(|v| Finder::new(v.as_bytes()).into_owned())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.finders.is_empty()
    }

    /// `bytes` with every configured value replaced by [`REDACTED`];
    /// the same buffer (no copy) when none occurs.
    pub fn redact_bytes(&self, bytes: Bytes) -> Bytes {
        match self.redact_slice(&bytes) {
            Cow::Borrowed(_) => bytes,
            Cow::Owned(v) => Bytes::from(v),
        }
    }

    /// `text` with every configured value replaced by [`REDACTED`].
    pub fn redact_str<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match self.redact_slice(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Values and the replacement are whole UTF-8 strings, so the
            // result is UTF-8 whenever the input was.
            Cow::Owned(v) => Cow::Owned(String::from_utf8_lossy(&v).into_owned()),
        }
    }

    fn redact_slice<'b>(&self, bytes: &'b [u8]) -> Cow<'b, [u8]> {
        let mut out: Cow<'b, [u8]> = Cow::Borrowed(bytes);
        for finder in &self.finders {
            if finder.find(&out).is_none() {
                continue;
            }
            let needle_len = finder.needle().len();
            let mut replaced = Vec::with_capacity(out.len());
            let mut rest: &[u8] = &out;
            while let Some(at) = finder.find(rest) {
                replaced.extend_from_slice(&rest[..at]);
                replaced.extend_from_slice(REDACTED.as_bytes());
                rest = &rest[at + needle_len..];
            }
            replaced.extend_from_slice(rest);
            out = Cow::Owned(replaced);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configured_value_is_replaced_wherever_it_occurs() {
        let r = Redactor::new(["sk-live-0123456789", "sk-live-0123456789-long", "short"]);
        let body = r#"{"error":{"message":"Incorrect API key provided: sk-live-0123456789-long (also sk-live-0123456789)"}}"#;
        assert_eq!(
            r.redact_str(body),
            r#"{"error":{"message":"Incorrect API key provided: [redacted] (also [redacted])"}}"#
        );
        let clean = Bytes::from_static(b"nothing to see, short");
        let same = r.redact_bytes(clean.clone());
        assert_eq!(
            same.as_ptr(),
            clean.as_ptr(),
            "no copy when nothing matches"
        );
        assert!(
            Redactor::new(["tiny"]).is_empty(),
            "short values are not searched"
        );
        assert_eq!(format!("{r:?}"), "Redactor(2 values)");
    }
}
