//! relay's integration tests: one binary, shared harness in `support`.

mod cli;
mod config_fixtures;
mod reload;
mod schemas;
mod support;
