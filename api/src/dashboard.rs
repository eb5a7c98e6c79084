//! The dashboard: static HTML, CSS and vanilla JS compiled into the binary and served at `/` and
//! `/assets/{file}`. No build step and nothing from elsewhere: the page talks only to this node's
//! own API, so it runs under a strict Content-Security-Policy (no inline script or style, no other
//! origin). Every asset carries a strong `ETag` (a hash of its bytes) and `Cache-Control:
//! no-cache`, so browsers revalidate cheaply (`If-None-Match` → 304) and never run stale code
//! after an upgrade.
//!
//! The files live in `src/dashboard/`; `docs/dashboard.md` describes the pages.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::problem::Problem;

/// The policy every dashboard response carries. `style-src 'self'` still lets scripts set
/// `element.style` (CSSOM), which the capacity bars use; style *attributes* in markup are refused.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Everything the dashboard serves; `index.html` is also the answer at `/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("dashboard/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/app.js"),
    },
    Asset {
        name: "theme.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/theme.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("dashboard/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("dashboard/favicon.svg"),
    },
];

/// The names `GET /assets/{file}` serves, for the OpenAPI document.
pub(crate) fn asset_names() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|a| a.name)
}

/// Strong entity tags of [`ASSETS`], in the same order, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body);
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// `GET /`: the dashboard page.
#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 200, description = "The dashboard", content_type = "text/html")))]
pub(crate) async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

/// `GET /assets/{file}`: one embedded file, or a problem+json 404.
#[utoipa::path(get, path = "/assets/{file}", tag = "dashboard",
    params(("file" = String, Path, description = "An embedded asset's name")),
    responses((status = 200, description = "The file"), (status = 404, description = "No such asset")))]
pub(crate) async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.name == file) {
        Some(i) => serve(i, &headers),
        None => Problem::not_found(format!("no dashboard asset {file:?}")).into_response(),
    }
}

fn serve(i: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[i];
    let etag = &etags()[i];
    let matches = headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).any(|list| {
        list.split(',').map(str::trim).any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
    });
    let common = [
        (header::ETAG, HeaderValue::from_str(etag).unwrap_or(HeaderValue::from_static("\"0\""))),
        // Revalidate every time: a 304 is cheap, and an upgraded node never runs old code.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    ];
    if matches {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        StatusCode::OK,
        common,
        [(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type))],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_served() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        for link in html.split("/assets/").skip(1) {
            let name = link.split('"').next().unwrap();
            assert!(ASSETS.iter().any(|a| a.name == name), "index.html names {name}, which is not embedded");
        }
    }

    #[test]
    fn no_inline_script_or_style_in_the_page() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        // The CSP would block them; catching them here is kinder than a blank page.
        assert!(!html.contains("<style"), "inline <style>");
        assert!(!html.contains(" style="), "style attribute");
        let handler = html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            name_len > 0 && rest[name_len..].starts_with('=')
        });
        assert!(!handler, "inline event handler");
        for script in html.split("<script").skip(1) {
            let open = script.split('>').next().unwrap();
            assert!(open.contains("src="), "inline <script>: {open}");
        }
    }

    #[test]
    fn etags_differ_per_asset() {
        let tags = etags();
        let mut sorted = tags.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ASSETS.len());
    }
}
