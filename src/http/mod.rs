//! The HTTP edge: routers for the data plane and the control plane, and the
//! one place errors become responses.

pub mod body;
pub mod client_addr;
pub mod config_view;
pub mod conn;
pub mod control;
pub mod data;
pub mod error;
pub mod metrics;
pub mod session;

use std::sync::Arc;

use crate::config::{watch::Reloader, ConfigHandle};
use crate::gateway::Gateway;
use crate::lifecycle::Lifecycle;
use crate::store::Store;
use crate::upstream::breaker::Breakers;

/// What handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ConfigHandle>,
    pub reloader: Reloader,
    pub auth: Arc<session::ControlAuth>,
    pub gateway: Arc<Gateway>,
    pub store: Store,
    pub breakers: Breakers,
    pub lifecycle: Arc<Lifecycle>,
    /// Bearer token that may read `/metrics` and nothing else.
    pub metrics_token: Option<Arc<crate::secrets::Secret>>,
    /// Request-body bytes the data plane may hold at once.
    pub body_budget: Arc<body::BodyBudget>,
}
