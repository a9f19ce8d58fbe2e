#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
//! relay: a self-hosted LLM API gateway configured entirely from git.
//!
//! See ARCHITECTURE.md for how the modules fit together.

pub mod cli;
pub mod config;
pub mod http;
pub mod secrets;
pub mod serve;
pub mod telemetry;

/// Build version and the git commit it was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_SHA: &str = match option_env!("RELAY_BUILD_GIT_SHA") {
    Some(s) => s,
    None => "unknown",
};
