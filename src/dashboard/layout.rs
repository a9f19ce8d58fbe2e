//! The frame around every page: head, navigation, who is signed in, footer.

use maud::{html, Markup, DOCTYPE};

use super::assets;
use crate::config::kinds::Role;
use crate::config::snapshot::Snapshot;
use crate::http::session::Principal;

/// The pages in navigation order: (path, label).
const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/models", "Models"),
    ("/hosts", "Hosts"),
    ("/policies", "Policies"),
    ("/users", "Users"),
    ("/keys", "Relay keys"),
    ("/usage", "Usage"),
];

pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Viewer => "viewer",
    }
}

/// `<head>` shared by the login page and the signed-in pages.
pub(crate) fn head(title: &str, csrf: Option<&str>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            @if let Some(token) = csrf {
                meta name="csrf-token" content=(token);
            }
            title { (title) " · relay" }
            link rel="stylesheet" href=(assets::url("relay.css"));
            link rel="icon" href=(assets::url("favicon.svg")) type="image/svg+xml";
            script src=(assets::url("relay.js")) defer {}
        }
    }
}

/// A signed-in page. `active` is the navigation path to highlight.
pub(crate) fn page(
    who: &Principal,
    snap: &Snapshot,
    active: &str,
    title: &str,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, who.csrf()))
            body data-role=(role_name(who.role)) {
                header.topbar {
                    a.brand href="/" { span.logo { "relay" } }
                    nav aria-label="Dashboard" {
                        @for (path, label) in NAV {
                            @if *path == active {
                                a href=(path) aria-current="page" { (label) }
                            } @else {
                                a href=(path) { (label) }
                            }
                        }
                    }
                    div.who {
                        span.user { (who.name) }
                        span class={ "badge role-" (role_name(who.role)) } { (role_name(who.role)) }
                        @if let Some(token) = who.csrf() {
                            form method="post" action="/logout" {
                                input type="hidden" name="_csrf" value=(token);
                                button.link type="submit" id="logout" { "Log out" }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    div #flash role="status" aria-live="polite" {}
                    (body)
                }
                footer {
                    "relay " (crate::VERSION)
                    " · config " code { (snap.current_revision()) }
                    " · control plane"
                }
            }
        }
    }
}

/// The banner on configuration pages: they show config, they cannot change it.
pub(crate) fn config_banner(snap: &Snapshot) -> Markup {
    html! {
        p.banner.readonly {
            "Configuration is managed in git at revision "
            @let revision = snap.current_revision();
            @match &revision.git_commit {
                Some(commit) => {
                    code title=(commit) { (&commit[..commit.len().min(12)]) }
                    @if revision.dirty {
                        " with uncommitted changes (" code { "-dirty" } ")"
                    }
                    " (content " code { (revision.content_hash) } ")"
                }
                None => { code { (revision.content_hash) } " (content hash; the directory is not a git checkout)" }
            }
            " — read-only here. Change the YAML in the repository; relay reloads it on its own."
        }
    }
}

/// A small coloured label.
pub(crate) fn badge(class: &str, text: &str) -> Markup {
    html! { span class={ "badge " (class) } { (text) } }
}

/// A paragraph shown when a list has nothing in it.
pub(crate) fn empty(text: &str) -> Markup {
    html! { p.empty { (text) } }
}
