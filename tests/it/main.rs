//! relay's integration tests: one binary, shared harness in `support`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod config_fixtures;
mod reload;
mod schemas;
mod support;
