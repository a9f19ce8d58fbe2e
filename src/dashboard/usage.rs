//! `/usage`: a chart of one metric over time, the totals, and the latest
//! calls, filtered by range, relay key and model (a plain GET form, so
//! every view has a URL).

use axum::extract::{Query, State};
use axum::response::Response;
use maud::html;

use super::{chart, count, datetime, layout, usd, SignedIn};
use crate::http::AppState;
use crate::store::{Bucket, UsagePoint, UsageQuery};

#[derive(serde::Deserialize, Default)]
pub(crate) struct Filters {
    range: Option<String>,
    metric: Option<String>,
    key_id: Option<String>,
    model: Option<String>,
}

/// (value, label, number of buckets, bucket)
const RANGES: &[(&str, &str, i64, Bucket)] = &[
    ("24h", "last 24 hours", 24, Bucket::Hour),
    ("7d", "last 7 days", 7 * 24, Bucket::Hour),
    ("30d", "last 30 days", 30, Bucket::Day),
    ("90d", "last 90 days", 90, Bucket::Day),
];

const METRICS: &[(&str, &str)] = &[
    ("requests", "Requests"),
    ("errors", "Errors"),
    ("tokens", "Tokens"),
    ("cost", "Cost (USD)"),
];

fn metric_value(metric: &str, p: &UsagePoint) -> f64 {
    match metric {
        "errors" => p.errors as f64,
        "tokens" => (p.input_tokens + p.output_tokens) as f64,
        "cost" => p.cost_usd,
        _ => p.requests as f64,
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

pub(crate) async fn page(
    SignedIn { principal }: SignedIn,
    State(state): State<AppState>,
    uri: axum::http::Uri,
) -> Response {
    let snap = state.config.snapshot();
    // Bad filter values fall back to the defaults rather than an error page.
    let f = Query::<Filters>::try_from_uri(&uri)
        .map(|Query(f)| f)
        .unwrap_or_default();
    let range = RANGES
        .iter()
        .find(|r| Some(r.0) == f.range.as_deref())
        .unwrap_or(&RANGES[0]);
    let metric = METRICS
        .iter()
        .find(|m| Some(m.0) == f.metric.as_deref())
        .unwrap_or(&METRICS[0]);
    let key_id = non_empty(f.key_id);
    let model = non_empty(f.model);
    let (from, to) = range.3.last(range.2, crate::store::now_ms());
    let q = UsageQuery {
        key_id: key_id.clone(),
        model: model.clone(),
        from: Some(from),
        to: Some(to),
        limit: Some(50),
    };
    let keys = state.store.list_keys().await.unwrap_or_default();
    let data = async {
        let (totals, records) = state.store.usage_report(&q).await?;
        Ok::<_, crate::store::StoreError>((
            state.store.usage_series(range.3, &q).await?,
            totals,
            records,
        ))
    }
    .await;
    let key_label = |id: &str| {
        keys.iter()
            .find(|k| k.id == id)
            .map(|k| k.name.clone().unwrap_or_else(|| format!("{}…", k.prefix)))
            .unwrap_or_else(|| "deleted key".to_string())
    };

    let body = html! {
        form.filters method="get" action="/usage" {
            label { "Range"
                select name="range" {
                    @for r in RANGES { option value=(r.0) selected[r.0 == range.0] { (r.1) } }
                }
            }
            label { "Metric"
                select name="metric" {
                    @for m in METRICS { option value=(m.0) selected[m.0 == metric.0] { (m.1) } }
                }
            }
            label { "Relay key"
                select name="key_id" {
                    option value="" { "all keys" }
                    @for k in &keys {
                        option value=(k.id) selected[key_id.as_deref() == Some(k.id.as_str())] {
                            (k.name.as_deref().unwrap_or("unnamed")) " (" (k.prefix) "…)"
                        }
                    }
                }
            }
            label { "Model"
                select name="model" {
                    option value="" { "all models" }
                    @for m in &snap.models {
                        option value=(m.name) selected[model.as_deref() == Some(m.name.as_str())] { (m.name) }
                    }
                }
            }
            button type="submit" { "Show" }
        }
        @match &data {
            Err(_) => { p.alert.error { "Usage could not be read from the database; see relay's log." } }
            Ok((series, totals, records)) => {
                div.stats {
                    div { span.num { (count(totals.requests)) } span.label { "requests" } }
                    div { span.num { (count(series.iter().map(|p| p.errors).sum())) } span.label { "errors" } }
                    div { span.num { (count(totals.throttled)) } span.label { "throttled" } }
                    div { span.num { (count(totals.input_tokens)) } span.label { "input tokens" } }
                    div { span.num { (count(totals.output_tokens)) } span.label { "output tokens" } }
                    div { span.num { (usd(totals.cost_usd)) } span.label { "cost" } }
                }
                section.card #usage-chart {
                    h2 { (metric.1) " per " (range.3.as_str()) ", " (range.1) " (UTC)" }
                    @let pts: Vec<(i64, f64)> = series.iter().map(|p| (p.start, metric_value(metric.0, p))).collect();
                    @if metric.0 == "cost" {
                        (chart::bars(&pts, range.3, "USD", false, usd))
                    } @else {
                        (chart::bars(&pts, range.3, &metric.1.to_lowercase(), true, |v| count(v.round() as i64)))
                    }
                }
                section #recent {
                    h2 { "Latest calls" }
                    @if records.is_empty() {
                        (layout::empty("No calls in this range."))
                    } @else {
                        table.usage {
                            thead { tr {
                                th { "Time" } th { "Relay key" } th { "Model" } th { "Binding → host" } th.num { "Status" }
                                th.num { "Latency" } th.num { "Tokens in / out" } th.num { "Cost" }
                            } }
                            tbody {
                                @for r in records {
                                    tr {
                                        td { (datetime(r.at)) }
                                        td { @match &r.key_id { Some(id) => (key_label(id)), None => span.muted { "—" } } }
                                        td { (r.model) }
                                        td { (r.binding.as_deref().unwrap_or("—")) " → " (r.host.as_deref().unwrap_or("—")) }
                                        td.num {
                                            @if r.status >= 400 { (layout::badge("bad", &r.status.to_string())) } @else { (r.status) }
                                            @if let Some(reason) = &r.reason { " " span.muted.reason { (reason) } }
                                            @if r.calls.0 > 1 { " " span.calls title="throttled calls merged into this row (one row per key, reason and minute)" { "×" (count(r.calls.0)) } }
                                        }
                                        td.num { (r.latency_ms) " ms" }
                                        td.num {
                                            (count(r.input_tokens)) " / " (count(r.output_tokens))
                                            @if r.estimated { " " span.muted title="relay's estimate: the client left before the upstream's usage arrived" { "est." } }
                                        }
                                        td.num { (usd(r.cost_usd)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    super::html(layout::page(&principal, &snap, "/usage", "Usage", body))
}
