//! The dashboard's static files, compiled into the binary. Pages link them
//! as `/assets/<file>?v=<content hash>`, so they can be cached for a long
//! time and still change with each build that changes them.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const FILES: &[Asset] = &[
    Asset {
        name: "relay.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/relay.css"),
    },
    Asset {
        name: "relay.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/relay.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("assets/favicon.svg"),
    },
];

/// First 16 hex digits of each file's SHA-256, in `FILES` order.
static HASHES: LazyLock<Vec<String>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|a| hex::encode(&Sha256::digest(a.body)[..8]))
        .collect()
});

fn find(name: &str) -> Option<(&'static Asset, &'static str)> {
    let i = FILES.iter().position(|a| a.name == name)?;
    Some((&FILES[i], HASHES[i].as_str()))
}

/// The versioned URL of an embedded file.
pub(crate) fn url(name: &str) -> String {
    match find(name) {
        Some((_, hash)) => format!("/assets/{name}?v={hash}"),
        None => format!("/assets/{name}"),
    }
}

/// `GET /assets/{file}`: public (the login page needs them too).
pub(crate) async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some((asset, hash)) = find(&file) else {
        return (StatusCode::NOT_FOUND, "no such dashboard asset").into_response();
    };
    let etag = format!("\"{hash}\"");
    let cache = [
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=86400"),
        ),
        (
            header::ETAG,
            HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\"")),
        ),
    ];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        cache,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        asset.body,
    )
        .into_response()
}
