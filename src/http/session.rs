//! TEMPORARY SHIM (dashboard branch): same signatures as the lead's session
//! module; bearer token only. Replaced by main's `src/http/session.rs` on merge.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::error::ApiError;
use super::AppState;
use crate::config::kinds::Role;

pub const SESSION_COOKIE: &str = "relay_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

pub enum Via {
    Token,
    Session { id: String, csrf: String },
}

pub struct Principal {
    pub name: String,
    pub role: Role,
    pub via: Via,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
    pub fn csrf(&self) -> Option<&str> {
        match &self.via {
            Via::Session { csrf, .. } => Some(csrf),
            Via::Token => None,
        }
    }
}

pub async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let Some(token) = &state.admin_token else {
        return Err(ApiError::Unauthorized("not logged in"));
    };
    let presented = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(p) if token.ct_eq(p.as_bytes()) => Ok(Principal {
            name: "admin token".into(),
            role: Role::Admin,
            via: Via::Token,
        }),
        _ => Err(ApiError::Unauthorized("not logged in")),
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state).await
    }
}

pub struct AdminOnly(pub Principal);

impl FromRequestParts<AppState> for AdminOnly {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let p = authenticate(parts, state).await?;
        if !p.is_admin() {
            return Err(ApiError::Unauthorized("admins only"));
        }
        Ok(AdminOnly(p))
    }
}
