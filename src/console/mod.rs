//! The web console at `/console` (SPEC section 8): static HTML, CSS and JavaScript
//! compiled into the binary, talking to the public `/v1` API with an app's API key.
//!
//! The console has no routes of its own beyond its files: sign-in keeps the key in
//! the browser's `sessionStorage`, and every page is `fetch` calls to `/v1` with
//! `X-API-Key`, so it can do nothing a client with that key cannot. Loading the page
//! needs no key.
//!
//! Every response carries a strict Content-Security-Policy ([`CONTENT_SECURITY_POLICY`]:
//! scripts, styles and connections to this origin only, no inline script, no framing),
//! `nosniff`, `no-referrer` and `X-Frame-Options: DENY`. The scripts build every node
//! with `createElement` and `textContent`, so payloads, URLs and descriptions are shown
//! as text, never parsed as HTML.
//!
//! The console is not an API: it is deliberately absent from [`crate::api::operations`]
//! and `/openapi.json`. [`crate::api::configure`] mounts it beside the API, in whatever
//! scope the API is mounted (`web::scope("/otp")` serves `/otp/console`): the page
//! links its files under that prefix and the scripts find `/v1` relative to their own
//! URL. An embedder composing its own routes can mount it with [`routes`], in the same
//! scope as the API.
//!
//! | file | what lives there |
//! |---|---|
//! | `assets/index.html` | the page shell: header, navigation, one `<main>` the pages render into |
//! | `assets/console.css` | the styles |
//! | `assets/api.js` | the key in `sessionStorage`, `fetch` to `/v1` with `X-API-Key`, the envelope |
//! | `assets/dom.js` | `el()` (elements from `createElement`/`textContent`), time formats, the SVG charts |
//! | `assets/app.js` | sign-in and hash routing; the webhooks, deliveries, messages and OTP pages |
//! | `assets/favicon.svg` | the tab icon |

use std::borrow::Cow;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

/// Where the console is served.
pub const PATH: &str = "/console";

/// The `Content-Security-Policy` of every console response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// One file of the console.
struct Asset {
    /// The name under `/console/assets/`.
    name: &'static str,
    /// Its `Content-Type`.
    content_type: &'static str,
    /// Its bytes.
    body: &'static [u8],
}

/// The page shell, served at `/console` and `/console/`.
const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("assets/index.html"),
};

/// Everything under `/console/assets/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/console.css"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/api.js"),
    },
    Asset {
        name: "dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/dom.js"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/app.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("assets/favicon.svg"),
    },
];

/// Mounts the console on `cfg`: `/console`, `/console/` and `/console/assets/{name}`.
///
/// [`crate::api::configure`] already calls it; call it yourself only when you mount
/// the console without the API's `configure` (its pages need the `/v1` API on the
/// same origin).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource([PATH, "/console/"]).route(web::get().to(index)))
        .service(web::resource("/console/assets/{name}").route(web::get().to(asset)));
}

async fn index(req: HttpRequest) -> HttpResponse {
    let body = page(mount_prefix(req.path()));
    serve(&req, INDEX.content_type, body.into_bytes().into())
}

async fn asset(req: HttpRequest) -> HttpResponse {
    let name = req.match_info().get("name").unwrap_or_default();
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(&req, asset.content_type, Cow::Borrowed(asset.body)),
        None => {
            let mut resp = HttpResponse::NotFound()
                .content_type("text/plain; charset=utf-8")
                .body("no such console asset\n");
            secure(&mut resp);
            resp
        }
    }
}

/// Where the console is mounted: the part of the page's path before `/console`
/// (`/otp` when an embedder mounts the API in `web::scope("/otp")`), or `""`.
/// Anything but a plain path (it goes into HTML attributes) is ignored.
fn mount_prefix(path: &str) -> &str {
    let prefix = path
        .strip_suffix('/')
        .unwrap_or(path)
        .strip_suffix(PATH)
        .unwrap_or("");
    let plain = prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-._~%".contains(&b));
    if plain {
        prefix
    } else {
        ""
    }
}

/// The page shell with its asset links under `prefix` (the scripts find the API
/// from their own URL, so the page works wherever it is mounted).
fn page(prefix: &str) -> String {
    let html = String::from_utf8_lossy(INDEX.body);
    html.replace("\"/console/assets/", &format!("\"{prefix}/console/assets/"))
}

/// Answers with `body`, or 304 when the browser already holds this version.
fn serve(req: &HttpRequest, content_type: &'static str, body: Cow<'static, [u8]>) -> HttpResponse {
    let etag = etag(&body);
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut resp = if fresh {
        HttpResponse::NotModified().finish()
    } else {
        HttpResponse::Ok().content_type(content_type).body(body)
    };
    let headers = resp.headers_mut();
    // The files change with the binary, not with a hashed name: the browser revalidates
    // every time, and the ETag makes that a 304.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    secure(&mut resp);
    resp
}

/// A strong ETag: the first 16 bytes of the SHA-256 of the body, in hex.
fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// The security headers of every console response.
fn secure(resp: &mut HttpResponse) {
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_name_and_a_body() {
        let mut names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ASSETS.len());
        assert!(ASSETS.iter().all(|a| !a.body.is_empty()));
    }

    #[test]
    fn the_page_links_its_assets_under_the_mount_prefix() {
        assert_eq!(mount_prefix("/console"), "");
        assert_eq!(mount_prefix("/console/"), "");
        assert_eq!(mount_prefix("/otp/console"), "/otp");
        assert_eq!(mount_prefix("/a/b/console/"), "/a/b");
        assert_eq!(mount_prefix("/x\"y/console"), "");
        let html = page("/otp");
        assert!(html.contains("src=\"/otp/console/assets/app.js\""));
        assert!(html.contains("href=\"/otp/console/assets/console.css\""));
        assert!(!html.contains("\"/console/assets/"));
    }
}
