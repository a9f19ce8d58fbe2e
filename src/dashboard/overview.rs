//! `/`: what is being served, whether the last config change made it, and
//! how much traffic went through in the last day.

use axum::extract::State;
use axum::response::Response;
use maud::html;

use super::{chart, count, layout, usd, SignedIn};
use crate::http::AppState;
use crate::store::{Bucket, UsageQuery};

pub(crate) async fn page(
    SignedIn { principal }: SignedIn,
    State(state): State<AppState>,
) -> Response {
    let snap = state.config.snapshot();
    let status = state.config.status();
    let (from, to) = Bucket::Hour.last(24, crate::store::now_ms());
    let day = UsageQuery {
        from: Some(from),
        to: Some(to),
        ..UsageQuery::default()
    };
    // The store being down must not take the overview with it.
    let totals = state.store.usage_totals(&day).await;
    let series = state.store.usage_series(Bucket::Hour, &day).await;
    let errors: i64 = series
        .as_ref()
        .map(|s| s.iter().map(|p| p.errors).sum())
        .unwrap_or(0);
    let breakers = super::catalog::breakers(&state).await;
    let open = breakers.keys.iter().filter(|k| k.state == "open").count();
    let unavailable = breakers
        .keys
        .iter()
        .filter(|k| k.state == "unavailable")
        .count();

    let body = html! {
        (layout::config_banner(&snap))
        section.cards {
            div.card {
                h2 { "Config revision" }
                p.big { code #revision { (snap.current_revision()) } }
                p.muted { "loaded " (status.loaded_at) }
                p.muted { "from " code { (status.config_dir.display()) } }
            }
            div.card {
                h2 { "Catalog" }
                p.big { (status.objects.models) " models" }
                p.muted {
                    (status.objects.bindings) " bindings · " (status.objects.hosts) " hosts · "
                    (status.objects.policies) " policies · " (status.objects.users) " users"
                }
            }
            div.card {
                h2 { "Reloads" }
                p.big {
                    @if status.last_attempt_failed {
                        (layout::badge("bad", "last change rejected"))
                    } @else {
                        (layout::badge("ok", "up to date"))
                    }
                }
                p.muted { (status.reloads_applied) " applied · " (status.reloads_failed) " rejected" }
            }
            div.card {
                h2 { "Host keys" }
                p.big {
                    @if open == 0 { (layout::badge("ok", "all breakers closed")) }
                    @else { a href="/hosts" { (layout::badge("bad", &format!("{open} open"))) } }
                }
                p.muted {
                    (breakers.keys.len()) " keys · " (unavailable) " unavailable · state in " (breakers.backend)
                }
            }
        }

        section #reload {
            h2 { "Config reload status" }
            @if let Some(failed) = &status.last_failed_reload {
                div class={ "alert " (if status.last_attempt_failed { "error" } else { "info" }) } {
                    @if status.last_attempt_failed {
                        p { strong { "The latest change was rejected" } " at " (failed.at)
                            "; relay keeps serving revision " code { (snap.current_revision()) } ". Fix these problems and push again:" }
                    } @else {
                        p { "A change was rejected at " (failed.at) "; a later one was applied, so this is history:" }
                    }
                    (problems(&failed.problems))
                }
            } @else {
                p { "Every reload so far was applied." }
            }
            @if !status.warnings.is_empty() {
                h3 { "Warnings in the live config" }
                (problems(&status.warnings))
            }
            @if principal.is_admin() {
                p { button type="button" data-action="reload-config" { "Reload config now" } }
            }
        }

        section #traffic {
            h2 { "Traffic, last 24 hours" }
            @match (&totals, &series) {
                (Ok(t), Ok(s)) => {
                    div.stats {
                        div { span.num { (count(t.requests)) } span.label { "requests" } }
                        div { span.num { (count(errors)) } span.label { "errors" } }
                        div { span.num { (count(t.input_tokens + t.output_tokens)) } span.label { "tokens" } }
                        div { span.num { (usd(t.cost_usd)) } span.label { "cost" } }
                    }
                    @let pts: Vec<(i64, f64)> = s.iter().map(|p| (p.start, p.requests as f64)).collect();
                    (chart::bars(&pts, Bucket::Hour, "requests", true, |v| count(v.round() as i64)))
                    p.muted { a href="/usage" { "More on the usage page →" } }
                }
                _ => { p.alert.error { "Usage could not be read from the database; see relay's log." } }
            }
        }
    };
    super::html(layout::page(&principal, &snap, "/", "Overview", body))
}

/// Config problems as a table: where, what, and the message.
pub(crate) fn problems(list: &[crate::config::problem::Problem]) -> maud::Markup {
    html! {
        table.problems {
            thead { tr { th { "Where" } th { "Object" } th { "Field" } th { "Problem" } } }
            tbody {
                @for p in list {
                    tr {
                        td { code { (p.file.display()) @if p.line > 0 { ":" (p.line) ":" (p.column) } } }
                        td { @if let Some(k) = p.kind { (k.as_str()) " " } (p.name.as_deref().unwrap_or("")) }
                        td { code { (p.field.as_deref().unwrap_or("")) } }
                        td { (p.message) }
                    }
                }
            }
        }
    }
}
