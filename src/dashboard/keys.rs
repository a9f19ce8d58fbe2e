//! `/keys`: relay keys. Everyone signed in sees the list; admins also get
//! the create form and the disable / enable / delete buttons, which call
//! the JSON admin API (`/api/keys…`) from the page's script. The plaintext
//! of a new key exists only in that API response: this page never has it.

use axum::extract::State;
use axum::response::Response;
use maud::html;

use super::{datetime, layout, SignedIn};
use crate::http::AppState;

pub(crate) async fn page(
    SignedIn { principal }: SignedIn,
    State(state): State<AppState>,
) -> Response {
    let snap = state.config.snapshot();
    let admin = principal.is_admin();
    let now = crate::store::now_ms();
    let keys = state.store.list_keys().await;
    let body = html! {
        p.muted {
            "Relay keys are runtime state, kept in the " (state.store.backend()) " database, not in git. "
            "Clients send one as " code { "Authorization: Bearer <key>" } "; its policy decides which models it reaches."
        }
        @if admin {
            section.card #create-key {
                h2 { "Create a relay key" }
                form #create-key-form {
                    div.row {
                        label { "Policy"
                            select name="policy" required {
                                @for p in &snap.policies { option value=(p.name) { (p.name) } }
                            }
                        }
                        label { "Name " span.muted { "(optional)" }
                            input name="name" type="text" maxlength="100" placeholder="ci-pipeline";
                        }
                        label { "Expires"
                            select name="expires_in" {
                                option value="" { "never" }
                                option value="1d" { "in 1 day" }
                                option value="7d" { "in 7 days" }
                                option value="30d" { "in 30 days" }
                                option value="90d" { "in 90 days" }
                            }
                        }
                        button.primary type="submit" disabled[snap.policies.is_empty()] { "Create key" }
                    }
                }
                div.alert.success #new-key hidden {
                    p { strong { "Copy this key now. " } "It is shown only this once; relay keeps only a hash." }
                    p.secret { code #new-key-value {} " " button type="button" data-action="copy-key" { "Copy" } }
                    p { button type="button" data-action="dismiss-key" { "Done" } }
                }
            }
        }
        div #keys-table {
            @match &keys {
                Err(_) => { p.alert.error { "Relay keys could not be read from the database; see relay's log." } }
                Ok(keys) if keys.is_empty() => {
                    (layout::empty(if admin { "No relay keys yet. Create one above, or with `relay keys create`." } else { "No relay keys yet." }))
                }
                Ok(keys) => {
                    table.keys {
                        thead { tr {
                            th { "Name" } th { "Key" } th { "Policy" } th { "State" } th { "Created" } th { "Last used" } th { "Expires" }
                            @if admin { th { "Actions" } }
                        } }
                        tbody {
                            @for k in keys {
                                @let expired = k.expires_at.is_some_and(|e| e <= now);
                                tr data-id=(k.id) data-enabled=(k.enabled) {
                                    td.name { (k.name.as_deref().unwrap_or("—")) }
                                    td { code { (k.prefix) "…" } }
                                    td {
                                        @if snap.policy(&k.policy).is_some() { a href={ "/policies#policy-" (k.policy) } { (k.policy) } }
                                        @else { (k.policy) " " (layout::badge("bad", "policy not in config")) }
                                    }
                                    td.state {
                                        @if !k.enabled { (layout::badge("off", "disabled")) }
                                        @else if expired { (layout::badge("warn", "expired")) }
                                        @else { (layout::badge("ok", "enabled")) }
                                    }
                                    td { (datetime(k.created_at)) }
                                    td { @match k.last_used_at { Some(t) => (datetime(t)), None => span.muted { "never" } } }
                                    td { @match k.expires_at { Some(t) => (datetime(t)), None => span.muted { "never" } } }
                                    @if admin {
                                        td.actions {
                                            @if k.enabled {
                                                button type="button" data-action="disable-key" data-id=(k.id) { "Disable" }
                                            } @else {
                                                button type="button" data-action="enable-key" data-id=(k.id) { "Enable" }
                                            }
                                            " "
                                            button.danger type="button" data-action="delete-key" data-id=(k.id) data-name=(k.name.as_deref().unwrap_or(&k.prefix)) { "Delete" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    super::html(layout::page(&principal, &snap, "/keys", "Relay keys", body))
}
