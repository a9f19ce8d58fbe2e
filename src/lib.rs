#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
//! relay: a self-hosted LLM API gateway configured entirely from git.
//!
//! See ARCHITECTURE.md for how the modules fit together.

pub mod adapters;
pub mod auth;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod gateway;
pub mod http;
pub mod lifecycle;
pub mod plan;
pub mod retention;
pub mod secrets;
pub mod serve;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod upstream;

/// Build version and the git commit it was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_SHA: &str = match option_env!("RELAY_BUILD_GIT_SHA") {
    Some(s) => s,
    None => "unknown",
};
