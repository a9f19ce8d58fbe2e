//! `GET /login`: the sign-in form. `POST /login` and `/logout` belong to
//! the session module; they send failures back here as `?error=<code>`.

use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, DOCTYPE};

use super::layout;
use crate::http::{session, AppState};

#[derive(serde::Deserialize, Default)]
pub(crate) struct LoginQuery {
    error: Option<String>,
    next: Option<String>,
}

/// `/login?next=<where the visitor was going>`.
pub(crate) fn login_url(next: &str) -> String {
    if next == "/" {
        return "/login".to_string();
    }
    let enc: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
    format!("/login?next={enc}")
}

/// Only same-site paths: `next` must never send a visitor elsewhere (the
/// same check `POST /login` makes).
pub(crate) fn safe_next(next: Option<&str>) -> &str {
    session::safe_next(next)
}

fn message(code: &str) -> &'static str {
    match code {
        "invalid" => "Wrong name or password. Names and passwords come from the `kind: User` documents in the config repository.",
        "rate_limited" => "Too many failed attempts. Wait a few minutes, then try again.",
        "unavailable" => "relay could not store your session: its database is unreachable. Check /healthz on the data plane and relay's log.",
        "no_users" => "No dashboard users are configured. Add a `kind: User` document to the config repository (hash the password with `relay user hash-password`), or use the admin password relay printed on its first boot.",
        "csrf" => "Your session form expired. Sign in again.",
        "expired" => "Your session ended. Sign in again.",
        _ => "Sign-in failed. Try again.",
    }
}

pub(crate) async fn page(State(state): State<AppState>, parts: Parts) -> Response {
    let q = Query::<LoginQuery>::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let next = safe_next(q.next.as_deref()).to_string();
    // Already signed in (e.g. the back button): go where they were going.
    if q.error.is_none() && session::authenticate(&parts, &state).await.is_ok() {
        return Redirect::to(&next).into_response();
    }
    super::html(html! {
        (DOCTYPE)
        html lang="en" {
            (layout::head("Sign in", None))
            body.login {
                main.login-box {
                    p.brand { span.logo { "relay" } }
                    h1 { "Sign in to the dashboard" }
                    @if let Some(code) = &q.error {
                        p.alert.error #login-error role="alert" data-code=(code) { (message(code)) }
                    }
                    form method="post" action="/login" #login-form {
                        input type="hidden" name="next" value=(next);
                        label for="name" { "Name" }
                        input #name name="name" type="text" autocomplete="username" required autofocus;
                        label for="password" { "Password" }
                        input #password name="password" type="password" autocomplete="current-password" required;
                        button.primary type="submit" { "Sign in" }
                    }
                    p.hint #http-hint hidden {
                        "This page is served over plain HTTP. If signing in brings you back here, "
                        "the session cookie is marked Secure and the browser drops it: set "
                        code { "RELAY_COOKIE_SECURE=false" } " for local HTTP, or serve the control plane over HTTPS."
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/keys?x=1")), "/keys?x=1");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(None), "/");
        assert_eq!(login_url("/"), "/login");
        assert_eq!(
            login_url("/usage?range=7d"),
            "/login?next=%2Fusage%3Frange%3D7d"
        );
    }
}
