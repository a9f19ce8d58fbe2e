//! Who is calling the control plane: the admin bearer token, or a dashboard
//! session cookie made by `POST /login`. Roles come from config on every
//! request; CSRF is checked for every state-changing request a session
//! makes; login attempts are counted through the state backend (so the
//! limits are shared by replicas on Redis) before any password is checked.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::client_addr::TrustedProxies;
use super::error::ApiError;
use super::AppState;
use crate::auth::password;
use crate::config::kinds::Role;
use crate::config::Snapshot;
use crate::secrets::Secret;

pub const SESSION_COOKIE: &str = "relay_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Form field carrying the CSRF token where a header cannot (logout form).
pub const CSRF_FIELD: &str = "_csrf";
/// Sessions end this long after login.
pub const SESSION_TTL_MS: i64 = 12 * 60 * 60 * 1000;
/// Login attempts allowed per (login name, client address) pair, and per
/// client address, within `LOGIN_WINDOW_MS`. Each attempt is counted before
/// its password is checked (increment first, so parallel guesses cannot all
/// slip under the limit); the next one is refused unchecked.
pub const LOGIN_ATTEMPTS_PER_PAIR: i64 = 5;
pub const LOGIN_ATTEMPTS_PER_ADDR: i64 = 20;
pub const LOGIN_WINDOW_MS: u64 = 5 * 60 * 1000;
/// A login name alone is never locked — that would let anyone keep its
/// owner out — but past this many failures in the window each attempt for
/// it waits `LOGIN_NAME_DELAY_STEP_MS` per further failure, at most
/// `LOGIN_NAME_DELAY_MAX_MS`, before its password is checked.
pub const LOGIN_NAME_FREE_FAILURES: i64 = 5;
pub const LOGIN_NAME_DELAY_STEP_MS: u64 = 100;
pub const LOGIN_NAME_DELAY_MAX_MS: u64 = 2_000;
/// Admin tokens shorter than this are accepted with a warning at start.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;
/// Password checks running at once: each costs ~20 ms of CPU and 19 MiB,
/// so a login flood cannot starve the data plane.
const CONCURRENT_VERIFICATIONS: usize = 2;

/// Control-plane credentials, fixed at start.
pub struct ControlAuth {
    admin_token: Option<Secret>,
    cookie_secure: bool,
    /// Hash of the admin password generated on a standalone first boot;
    /// honoured only while config defines no User.
    generated_admin: Option<Secret>,
    verifications: Semaphore,
    /// Peers whose `Forwarded` / `X-Forwarded-For` name the client.
    trusted_proxies: TrustedProxies,
    /// The per-boot token in `RELAY_DATA_DIR/control.token` that lets a
    /// local CLI (`relay breakers …`) in without RELAY_ADMIN_TOKEN.
    local_token: Option<Secret>,
}

impl ControlAuth {
    pub fn new(
        admin_token: Option<Secret>,
        cookie_secure: bool,
        generated_admin: Option<Secret>,
    ) -> Self {
        if let Some(t) = &admin_token {
            let len = t.expose().chars().count();
            if len < MIN_ADMIN_TOKEN_LEN {
                tracing::warn!(
                    "RELAY_ADMIN_TOKEN is only {len} characters long: anyone who guesses it is admin; use at least \
                     {MIN_ADMIN_TOKEN_LEN} random characters (e.g. `openssl rand -hex 32`)"
                );
            }
        }
        ControlAuth {
            admin_token,
            cookie_secure,
            generated_admin,
            verifications: Semaphore::new(CONCURRENT_VERIFICATIONS),
            trusted_proxies: TrustedProxies::default(),
            local_token: None,
        }
    }

    /// Also accept this per-boot token (see [`LocalToken`]) as admin.
    pub fn with_local_token(mut self, token: Option<Secret>) -> Self {
        self.local_token = token;
        self
    }

    /// Believe forwarded headers from these peers (`RELAY_TRUSTED_PROXIES`).
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// The address a control-plane request comes from, for login limits
    /// and logs.
    pub fn client_ip(&self, parts: &Parts) -> Option<IpAddr> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>()?.0;
        Some(self.trusted_proxies.client_ip(peer, &parts.headers))
    }

    /// The password hash and role of a login name, as config says now.
    fn credential(&self, snap: &Snapshot, name: &str) -> Option<(Secret, Role)> {
        if let Some(u) = snap.users.iter().find(|u| u.name == name) {
            return Some((u.password_hash.clone(), u.role));
        }
        match &self.generated_admin {
            Some(h) if snap.users.is_empty() && name == password::GENERATED_ADMIN => {
                Some((h.clone(), Role::Admin))
            }
            _ => None,
        }
    }

    fn anyone_can_log_in(&self, snap: &Snapshot) -> bool {
        !snap.users.is_empty() || self.generated_admin.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer $RELAY_ADMIN_TOKEN`.
    Token,
    /// A dashboard session; `id` is the stored hash, not the cookie value.
    Session { id: String, csrf: String },
}

/// An authenticated control-plane caller.
#[derive(Debug, Clone)]
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

/// Resolves the caller. Page handlers call this to redirect to `/login`
/// instead of answering 401.
pub async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let auth = &state.auth;
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let (Some(local), Some(p)) = (&auth.local_token, presented) {
            if local.ct_eq(p.as_bytes()) {
                return Ok(Principal {
                    name: "local-cli".into(),
                    role: Role::Admin,
                    via: Via::Token,
                });
            }
        }
        return match (&auth.admin_token, presented) {
            (None, _) => Err(ApiError::Unauthorized(format!(
                "bearer tokens are not accepted: RELAY_ADMIN_TOKEN is unset; set it, sign in at /login, or (on \
                 the relay's machine) use the per-boot token in RELAY_DATA_DIR/{LOCAL_TOKEN_FILE}"
            ))),
            (Some(token), Some(p)) if token.ct_eq(p.as_bytes()) => Ok(Principal {
                name: "admin-token".into(),
                role: Role::Admin,
                via: Via::Token,
            }),
            (Some(_), Some(_)) => Err(ApiError::Unauthorized(
                "admin token is wrong; use the value of RELAY_ADMIN_TOKEN".into(),
            )),
            (Some(_), None) => Err(ApiError::Unauthorized(
                "malformed Authorization header: send `Authorization: Bearer <RELAY_ADMIN_TOKEN>`".into(),
            )),
        };
    }
    let Some(cookie) = session_cookie(&parts.headers) else {
        return Err(ApiError::Unauthorized(
            "sign in to the dashboard at /login, or send `Authorization: Bearer <RELAY_ADMIN_TOKEN>`".into(),
        ));
    };
    let id = session_id_hash(cookie);
    let session = state
        .store
        .session(&id, crate::store::now_ms())
        .await?
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "your session expired or was signed out; sign in again at /login".into(),
            )
        })?;
    let snap = state.config.snapshot();
    let (hash, role) = auth.credential(&snap, &session.user_name).ok_or_else(|| {
        ApiError::Unauthorized(format!(
            "user `{}` is no longer defined in config; sign in again as a configured User",
            session.user_name
        ))
    })?;
    drop(snap);
    // A session belongs to the password it was opened with: changing a
    // User's `password_hash` in git signs that user out everywhere.
    if !bool::from(
        credential_fingerprint(&hash)
            .as_bytes()
            .ct_eq(session.credential.as_bytes()),
    ) {
        if let Err(e) = state.store.delete_session(&id).await {
            tracing::warn!(error = %e, "cannot delete a session whose password changed");
        }
        return Err(ApiError::Unauthorized(
            "your password changed since you signed in (or the session predates this check); sign in again at \
             /login"
                .into(),
        ));
    }
    if !is_safe(&parts.method) {
        check_csrf(
            parts.headers.get(CSRF_HEADER).map(HeaderValue::as_bytes),
            &session.csrf,
        )?;
    }
    Ok(Principal {
        name: session.user_name,
        role,
        via: Via::Session {
            id,
            csrf: session.csrf,
        },
    })
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn check_csrf(presented: Option<&[u8]>, expected: &str) -> Result<(), ApiError> {
    match presented {
        Some(p) if bool::from(p.ct_eq(expected.as_bytes())) => Ok(()),
        Some(_) => Err(ApiError::Forbidden(
            "CSRF token is wrong for this session; reload the dashboard page and try again".into(),
        )),
        None => Err(ApiError::Forbidden(format!(
            "missing CSRF token: a signed-in session must send the `{CSRF_HEADER}` header on \
             state-changing requests (the dashboard does this; automation should use RELAY_ADMIN_TOKEN)"
        ))),
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state).await
    }
}

/// A caller with the `admin` role (viewers get 403).
pub struct AdminOnly(pub Principal);

impl FromRequestParts<AppState> for AdminOnly {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let p = authenticate(parts, state).await?;
        if !p.is_admin() {
            return Err(ApiError::Forbidden(format!(
                "user `{}` has the viewer role; managing keys, breakers and reloads needs `role: admin`",
                p.name
            )));
        }
        Ok(AdminOnly(p))
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

fn session_id_hash(cookie: &str) -> String {
    hex::encode(Sha256::digest(cookie.as_bytes()))
}

/// What a session remembers of the password it was opened with: a digest
/// of the User's `password_hash` (itself a salted argon2id hash), enough to
/// notice a change and useless for anything else.
fn credential_fingerprint(password_hash: &Secret) -> String {
    hex::encode(&Sha256::digest(password_hash.expose().as_bytes())[..16])
}

/// State-backend key for a login counter: hashed, so any name a client
/// sends makes a short key.
fn login_counter(scope: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    format!("login:{scope}:{}", hex::encode(&h.finalize()[..16]))
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn set_cookie(auth: &ControlAuth, value: &str, max_age_s: i64) -> HeaderValue {
    let secure = if auth.cookie_secure { "; Secure" } else { "" };
    let text = format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    );
    HeaderValue::from_str(&text)
        .unwrap_or_else(|_| HeaderValue::from_static("relay_session=; Max-Age=0"))
}

#[derive(serde::Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// Why a login failed; each has a `/login?error=` code for the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoginRefused {
    Invalid,
    RateLimited,
    NoUsers,
    BadRequest,
    /// The session could not be stored.
    Unavailable,
}

impl LoginRefused {
    fn code(self) -> &'static str {
        match self {
            LoginRefused::Invalid => "invalid",
            LoginRefused::RateLimited => "rate_limited",
            LoginRefused::NoUsers => "no_users",
            LoginRefused::BadRequest => "bad_request",
            LoginRefused::Unavailable => "unavailable",
        }
    }

    fn api_error(self) -> ApiError {
        match self {
            LoginRefused::Invalid => ApiError::Unauthorized("wrong user name or password".into()),
            LoginRefused::RateLimited => ApiError::TooManyRequests {
                message: "too many failed logins; wait a few minutes before trying again".into(),
                retry_after_s: LOGIN_WINDOW_MS / 1000,
            },
            LoginRefused::NoUsers => ApiError::Unauthorized(
                "no dashboard users are configured: add a `kind: User` to config (hash from \
                 `relay user hash-password`), or use RELAY_ADMIN_TOKEN for the API"
                    .into(),
            ),
            LoginRefused::BadRequest => ApiError::BadRequest(
                "expected a form or JSON body with `name` and `password`".into(),
            ),
            LoginRefused::Unavailable => ApiError::Unavailable(
                "cannot store the session: the runtime database is unreachable; check /healthz"
                    .into(),
            ),
        }
    }
}

/// `POST /login`: a form (answers with redirects, for the login page) or
/// JSON (answers with JSON, for scripts and tests).
pub async fn login(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let addr = state
        .auth
        .client_ip(&parts)
        .map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
    let form = match axum::body::to_bytes(body, 16 * 1024).await {
        Ok(bytes) if json => serde_json::from_slice::<LoginForm>(&bytes).ok(),
        Ok(bytes) => serde_urlencoded::from_bytes::<LoginForm>(&bytes).ok(),
        Err(_) => None,
    };
    let next = safe_next(form.as_ref().and_then(|f| f.next.as_deref())).to_string();
    let outcome = match form {
        Some(form) => attempt_login(&state, &form, &addr).await,
        None => Err(LoginRefused::BadRequest),
    };
    match outcome {
        Ok((cookie, principal, expires_at)) => {
            let mut resp = if json {
                Json(json!({
                    "name": principal.name,
                    "role": principal.role,
                    "csrf": principal.csrf(),
                    "expires_at": expires_at,
                }))
                .into_response()
            } else {
                Redirect::to(&next).into_response()
            };
            resp.headers_mut().insert(header::SET_COOKIE, cookie);
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(refused) if json => refused.api_error().into_response(),
        Err(refused) => {
            let to = format!(
                "/login?error={}&next={}",
                refused.code(),
                url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
            );
            Redirect::to(&to).into_response()
        }
    }
}

/// Where to send a visitor after signing in: `next` when it is a plain
/// local path, else `/`. `next` must not become an open redirect, and
/// browsers are generous readers of `Location` (they drop tabs and line
/// breaks, read `\\` as `/`, and `//host` leaves the site), so both the
/// value and its percent-decoded form must start with a single `/` and hold
/// only printable ASCII without `//`, `\\` or whitespace.
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if is_local_path(n) && is_local_path(&percent_decode(n)) => n,
        _ => "/",
    }
}

fn is_local_path(p: &str) -> bool {
    p.starts_with('/') && !p.contains("//") && p.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
}

/// `%XX` sequences decoded (invalid ones kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, ..) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn attempt_login(
    state: &AppState,
    form: &LoginForm,
    addr: &str,
) -> Result<(HeaderValue, Principal, i64), LoginRefused> {
    let auth = &state.auth;
    let snap = state.config.snapshot();
    if !auth.anyone_can_log_in(&snap) {
        return Err(LoginRefused::NoUsers);
    }
    let backend = state.breakers.state();
    // Counted first, checked second: of N parallel guesses only the first
    // few reach a password check, however they interleave.
    let pair = login_counter("pair", &[&form.name, addr]);
    let by_addr = login_counter("addr", &[addr]);
    let by_name = login_counter("name", &[&form.name]);
    let (pair_n, addr_n, name_failures) = tokio::join!(
        backend.incr(&pair, 1, LOGIN_WINDOW_MS),
        backend.incr(&by_addr, 1, LOGIN_WINDOW_MS),
        backend.get_many(std::slice::from_ref(&by_name)),
    );
    if pair_n > LOGIN_ATTEMPTS_PER_PAIR || addr_n > LOGIN_ATTEMPTS_PER_ADDR {
        tracing::warn!(user = %form.name, addr, "login refused: too many failed attempts");
        return Err(LoginRefused::RateLimited);
    }
    // A name under attack from elsewhere only slows down, never locks.
    let name_failures = name_failures
        .first()
        .and_then(|v| v.as_deref())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let delay = name_delay(name_failures);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let credential = auth.credential(&snap, &form.name);
    drop(snap);
    let ok = {
        let _permit = auth.verifications.acquire().await;
        let password = form.password.clone();
        let phc = credential.as_ref().map(|(h, _)| h.clone());
        tokio::task::spawn_blocking(move || match phc {
            Some(h) => password::verify(h.expose(), &password),
            None => {
                password::verify_nothing(&password);
                false
            }
        })
        .await
        .unwrap_or(false)
    };
    let (hash, role) = match (ok, credential) {
        (true, Some(c)) => c,
        _ => {
            backend.incr(&by_name, 1, LOGIN_WINDOW_MS).await;
            tracing::warn!(user = %form.name, addr, "dashboard login failed");
            return Err(LoginRefused::Invalid);
        }
    };
    backend.del(std::slice::from_ref(&pair)).await;
    let cookie = random_token();
    let now = crate::store::now_ms();
    let row = crate::store::SessionRow {
        id_hash: session_id_hash(&cookie),
        user_name: form.name.clone(),
        csrf: random_token(),
        created_at: now,
        expires_at: now + SESSION_TTL_MS,
        credential: credential_fingerprint(&hash),
    };
    if let Err(e) = state.store.insert_session(&row).await {
        tracing::error!(error = %e, "cannot store the dashboard session");
        return Err(LoginRefused::Unavailable);
    }
    tracing::info!(user = %form.name, addr, "dashboard login");
    let principal = Principal {
        name: row.user_name,
        role,
        via: Via::Session {
            id: row.id_hash,
            csrf: row.csrf,
        },
    };
    Ok((
        set_cookie(auth, &cookie, SESSION_TTL_MS / 1000),
        principal,
        row.expires_at,
    ))
}

/// How long an attempt for a name with `failures` recent failures waits.
fn name_delay(failures: i64) -> Duration {
    let over = failures.saturating_sub(LOGIN_NAME_FREE_FAILURES).max(0) as u64;
    Duration::from_millis(
        over.saturating_mul(LOGIN_NAME_DELAY_STEP_MS)
            .min(LOGIN_NAME_DELAY_MAX_MS),
    )
}

/// `POST /logout`: ends the session. Needs the CSRF token (header, or the
/// `_csrf` form field of the dashboard's logout button).
pub async fn logout(State(state): State<AppState>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    if parts.headers.get(CSRF_HEADER).is_none() {
        // A form post: lift the field into the header the check reads.
        let bytes = axum::body::to_bytes(body, 16 * 1024)
            .await
            .unwrap_or_default();
        let token = url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == CSRF_FIELD)
            .map(|(_, v)| v.into_owned());
        if let Some(v) = token.and_then(|t| HeaderValue::from_str(&t).ok()) {
            parts.headers.insert(CSRF_HEADER, v);
        }
    }
    let principal = match authenticate(&parts, &state).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Via::Session { id, .. } = &principal.via {
        if let Err(e) = state.store.delete_session(id).await {
            return ApiError::from(e).into_response();
        }
        tracing::info!(user = %principal.name, "dashboard logout");
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&state.auth, "", 0));
    resp
}

/// `GET /api/session`: who the caller is, and the CSRF token a session
/// must send back.
pub async fn whoami(p: Principal) -> Response {
    let via = match p.via {
        Via::Token => "token",
        Via::Session { .. } => "session",
    };
    (
        StatusCode::OK,
        Json(json!({ "name": p.name, "role": p.role, "via": via, "csrf": p.csrf() })),
    )
        .into_response()
}

/// The per-boot control token's file name in the data directory.
pub const LOCAL_TOKEN_FILE: &str = "control.token";

/// A random admin credential written at start to
/// `RELAY_DATA_DIR/control.token` (mode 0600), so a CLI on the same machine
/// as the same user can call the control plane without RELAY_ADMIN_TOKEN
/// (embedded mode has none). Removed when dropped (clean shutdown), unless
/// another boot has replaced it meanwhile.
pub struct LocalToken {
    path: std::path::PathBuf,
    token: Secret,
}

impl LocalToken {
    /// Writes a new token, replacing one a previous boot left behind.
    pub fn create(data_dir: &std::path::Path) -> std::io::Result<LocalToken> {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let token = Secret::new(hex::encode(bytes));
        crate::secrets::create_private_dir(data_dir)?;
        let path = data_dir.join(LOCAL_TOKEN_FILE);
        let tmp = data_dir.join(format!(".{LOCAL_TOKEN_FILE}.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        crate::secrets::write_private_file(&tmp, token.expose().as_bytes())?;
        std::fs::rename(&tmp, &path)?;
        Ok(LocalToken { path, token })
    }

    pub fn secret(&self) -> Secret {
        self.token.clone()
    }
}

impl Drop for LocalToken {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .map(|t| self.token.ct_eq(t.trim().as_bytes()))
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What `serve` decides about dashboard credentials at start.
pub fn first_boot(
    data_dir: &std::path::Path,
    admin_token: Option<&Secret>,
    snap: &Snapshot,
) -> Result<Option<Secret>, password::FirstBootError> {
    if admin_token.is_some() {
        return Ok(None);
    }
    if !snap.users.is_empty() {
        // Pinned Users win; an earlier generated password stays on disk for
        // the day config defines no User again.
        return password::read_admin_hash(data_dir);
    }
    let (hash, created) = password::load_or_generate_admin(data_dir)?;
    let path = password::admin_hash_path(data_dir);
    match created {
        Some(pw) => {
            // The one time the password exists outside this process.
            tracing::warn!(
                "generated dashboard login: admin / {} (printed only now; its hash is in {}). To pin \
                 credentials instead, add a `kind: User` to config (`relay user hash-password`) or set \
                 RELAY_ADMIN_TOKEN; delete that file to generate a new password",
                pw.expose(),
                path.display()
            );
        }
        None => tracing::info!(
            path = %path.display(),
            "dashboard login `admin` uses the password generated on first boot (printed in that boot's log); \
             pin credentials with a `kind: User` or RELAY_ADMIN_TOKEN"
        ),
    }
    Ok(Some(hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_token_is_private_per_boot_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCAL_TOKEN_FILE);
        let first = LocalToken::create(dir.path()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 64);
        assert!(first.secret().ct_eq(text.as_bytes()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A later boot replaces it; the earlier one's drop leaves it alone.
        let second = LocalToken::create(dir.path()).unwrap();
        assert!(!second.secret().ct_eq(text.as_bytes()));
        drop(first);
        assert!(path.exists());
        drop(second);
        assert!(!path.exists());
    }

    #[test]
    fn session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; relay_session=abc ; b=2"),
        );
        assert_eq!(session_cookie(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("relay_session="));
        assert_eq!(session_cookie(&h), None);
    }

    #[test]
    fn next_must_stay_on_this_site() {
        for ok in ["/", "/keys", "/usage?range=7d&model=gpt-4o", "/keys/%41"] {
            assert_eq!(safe_next(Some(ok)), ok);
        }
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil.example",
            // Browsers drop tabs and line breaks: these are `//evil.example`.
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r/evil.example",
            // Encoded forms, decoded once more by the checker.
            "/%09/evil.example",
            "/%2F/evil.example",
            "/%5Cevil.example",
            "/%0d%0aSet-Cookie:x=1",
            "javascript:alert(1)",
            " /keys",
            "/ke ys",
            "/é",
            "",
            "/a//b",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn a_flooded_name_is_slowed_never_locked() {
        assert_eq!(name_delay(0), Duration::ZERO);
        assert_eq!(name_delay(LOGIN_NAME_FREE_FAILURES), Duration::ZERO);
        assert_eq!(
            name_delay(LOGIN_NAME_FREE_FAILURES + 3),
            Duration::from_millis(300)
        );
        assert_eq!(
            name_delay(i64::MAX),
            Duration::from_millis(LOGIN_NAME_DELAY_MAX_MS)
        );
    }

    #[test]
    fn login_counters_are_short_whatever_the_name() {
        let long = "x".repeat(10_000);
        let k = login_counter("pair", &[&long, "127.0.0.1"]);
        assert!(k.len() < 64, "{k}");
        assert_ne!(
            login_counter("pair", &["ab", "c"]),
            login_counter("pair", &["a", "bc"])
        );
    }

    #[test]
    fn cookie_attributes_follow_the_secure_setting() {
        let secure = ControlAuth::new(None, true, None);
        let v = set_cookie(&secure, "tok", 60);
        assert_eq!(
            v.to_str().unwrap(),
            "relay_session=tok; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        let plain = ControlAuth::new(None, false, None);
        assert!(!set_cookie(&plain, "tok", 60)
            .to_str()
            .unwrap()
            .contains("Secure"));
    }

    #[test]
    fn csrf_must_match() {
        assert!(check_csrf(Some(b"abc"), "abc").is_ok());
        assert!(matches!(
            check_csrf(Some(b"abd"), "abc"),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            check_csrf(None, "abc"),
            Err(ApiError::Forbidden(_))
        ));
    }
}
