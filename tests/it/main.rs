//! relay's integration tests: one binary, shared harness in `support`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod budget;
mod cli;
mod config_fixtures;
mod control;
mod dashboard;
mod deploy;
mod edge;
mod failover;
mod gitops;
mod isolation;
mod ledger;
mod lifecycle;
mod metrics;
mod mock_selftest;
#[path = "../common/mock_upstream.rs"]
mod mock_upstream;
mod money;
mod plan;
mod proxy;
mod reload;
mod request_id;
mod retention;
mod schemas;
mod schemathesis;
mod sdk;
mod support;
mod translate;
