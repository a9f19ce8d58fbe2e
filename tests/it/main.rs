//! relay's integration tests: one binary, shared harness in `support`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
#[path = "../common/mock_upstream.rs"]
mod mock_upstream;
mod mock_selftest;
mod config_fixtures;
mod reload;
mod schemas;
mod support;
