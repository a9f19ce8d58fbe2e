//! Tracing setup. Logs go to stderr so stdout stays clean for command output
//! (`relay keys create` prints a key there, `validate --format json` JSON).
//! Prometheus metrics live in [`metrics`].

pub mod metrics;

use std::borrow::Cow;
use std::fmt::Write as _;

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("RELAY_LOG={filter:?} is not a valid filter ({e}); using `info`");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        // Field values can carry what clients sent (a login name, a model
        // name, an upstream's message): written raw, a `\n` in one would
        // forge a log line. JSON logs escape them already.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .fmt_fields(
                tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
                    let text = format!("{value:?}");
                    match field.name() {
                        "message" => write!(w, "{}", escape_controls(&text)),
                        name => write!(w, "{name}={}", escape_controls(&text)),
                    }
                })
                .delimited(" "),
            )
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// `text` with control characters (and Unicode line separators) written as
/// escapes (`\n`, `\r`, `\t`, `\u{1b}`), so text a client chose can never
/// start a new log line or drive a terminal. Borrowed when already clean.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_characters_cannot_start_a_log_line() {
        assert_eq!(escape_controls("alice"), "alice");
        assert!(matches!(
            escape_controls("alice"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("x\nINFO relay: dashboard login user=admin"),
            "x\\nINFO relay: dashboard login user=admin"
        );
        assert_eq!(
            escape_controls("a\r\tb\u{1b}[2Jc\u{2028}"),
            "a\\r\\tb\\u{1b}[2Jc\\u{2028}"
        );
        assert_eq!(
            escape_controls("naïve ✓"),
            "naïve ✓",
            "printable Unicode stays"
        );
    }
}
