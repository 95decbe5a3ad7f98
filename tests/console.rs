//! The web console at `/console` over plain HTTP (no browser): the page and its
//! files, their content types and security headers, no inline script or handler, and
//! that loading it needs no key while every data call it makes does.
//! `tests/console_browser.rs` drives it in headless Chromium.

mod common;

use common::Fixture;
use otpd::console::CONTENT_SECURITY_POLICY;

/// The console's files, with the content type each must be served with.
const ASSETS: [(&str, &str); 5] = [
    ("/console/assets/app.js", "text/javascript; charset=utf-8"),
    ("/console/assets/api.js", "text/javascript; charset=utf-8"),
    ("/console/assets/dom.js", "text/javascript; charset=utf-8"),
    ("/console/assets/console.css", "text/css; charset=utf-8"),
    ("/console/assets/favicon.svg", "image/svg+xml"),
];

#[track_caller]
fn assert_security_headers(resp: &common::Resp, what: &str) {
    assert_eq!(
        resp.header("content-security-policy"),
        Some(CONTENT_SECURITY_POLICY),
        "{what}"
    );
    assert_eq!(
        CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    assert_eq!(
        resp.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        resp.header("referrer-policy"),
        Some("no-referrer"),
        "{what}"
    );
    assert_eq!(resp.header("x-frame-options"), Some("DENY"), "{what}");
}

/// `GET path` with no API key.
fn fetch(fx: &Fixture, path: &str) -> common::Resp {
    fx.call("GET", path).no_auth().send()
}

/// Every `name="…"` attribute value of `tag` elements in `html` (a small scan: the
/// page is ours and simple).
fn attributes<'a>(html: &'a str, tag: &str, name: &str) -> Vec<&'a str> {
    let open = format!("<{tag} ");
    let needle = format!("{name}=\"");
    html.match_indices(&open)
        .filter_map(|(at, _)| {
            let rest = &html[at..];
            let tag_text = &rest[..rest.find('>')?];
            let start = tag_text.find(&needle)? + needle.len();
            let len = tag_text[start..].find('"')?;
            Some(&tag_text[start..start + len])
        })
        .collect()
}

#[test]
fn console_serves_html_with_every_security_header_and_no_key() {
    let fx = Fixture::start();
    for path in ["/console", "/console/"] {
        let resp = fetch(&fx, path);
        assert_eq!(resp.status, 200, "{path}: {}", resp.text);
        assert_eq!(
            resp.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{path}"
        );
        assert_eq!(resp.header("cache-control"), Some("no-cache"), "{path}");
        assert!(resp.header("etag").is_some(), "{path}");
        assert_security_headers(&resp, path);
        assert!(resp.text.starts_with("<!doctype html>"), "{path}");
        assert!(resp.text.contains("<title>otpd console</title>"));
    }
}

#[test]
fn assets_have_their_content_types_security_headers_and_revalidate() {
    let fx = Fixture::start();
    for (path, content_type) in ASSETS {
        let resp = fetch(&fx, path);
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.header("content-type"), Some(content_type), "{path}");
        assert_eq!(resp.header("cache-control"), Some("no-cache"), "{path}");
        assert_security_headers(&resp, path);
        assert!(!resp.text.is_empty(), "{path}");

        // The ETag makes a revalidation a 304 without a body.
        let etag = resp.header("etag").expect("etag").to_string();
        let again = fx
            .call("GET", path)
            .no_auth()
            .header("if-none-match", &etag)
            .send();
        assert_eq!(again.status, 304, "{path}");
        assert!(again.text.is_empty(), "{path}");
        assert_security_headers(&again, path);
    }
}

#[test]
fn the_page_references_only_its_own_served_assets() {
    let fx = Fixture::start();
    let html = fetch(&fx, "/console").text;
    let mut referenced: Vec<&str> = attributes(&html, "script", "src");
    referenced.extend(attributes(&html, "link", "href"));
    assert!(referenced.len() >= 3, "{referenced:?}");
    for path in referenced {
        assert!(
            path.starts_with("/console/assets/"),
            "{path} is not a console asset (no third-party assets)"
        );
        assert!(
            ASSETS.iter().any(|(p, _)| *p == path),
            "{path} is not tested"
        );
        assert_eq!(fetch(&fx, path).status, 200, "{path}");
    }
    // The modules app.js imports are served too.
    let app = fetch(&fx, "/console/assets/app.js").text;
    for module in ["./api.js", "./dom.js"] {
        assert!(app.contains(&format!("from \"{module}\"")), "{module}");
    }
}

#[test]
fn the_html_has_no_inline_script_handler_or_style() {
    let fx = Fixture::start();
    let html = fetch(&fx, "/console").text;
    let lower = html.to_ascii_lowercase();
    // Every <script> has a src and an empty body.
    let scripts: Vec<usize> = lower.match_indices("<script").map(|(at, _)| at).collect();
    assert!(!scripts.is_empty());
    for at in scripts {
        let rest = &lower[at..];
        let open_end = rest.find('>').expect("a closed <script> tag");
        assert!(
            rest[..open_end].contains(" src=\""),
            "{}",
            &rest[..open_end]
        );
        assert!(
            rest[open_end + 1..].starts_with("</script>"),
            "an inline script body: {}",
            &rest[..open_end + 20]
        );
    }
    // No on…= handler attribute, no style attribute or element, no javascript: URL.
    for (at, _) in lower.match_indices(" on") {
        let word: String = lower[at + 3..]
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect();
        let after = &lower[at + 3 + word.len()..];
        assert!(
            word.is_empty() || !after.starts_with('='),
            "an inline handler on{word}= in the HTML"
        );
    }
    assert!(!lower.contains(" style="), "an inline style attribute");
    assert!(!lower.contains("<style"), "an inline style element");
    assert!(!lower.contains("javascript:"));
}

#[test]
fn the_scripts_never_parse_data_as_html_and_only_fetch_v1() {
    let fx = Fixture::start();
    let mut fetches = 0;
    for (path, _) in ASSETS.iter().filter(|(p, _)| p.ends_with(".js")) {
        let js = fetch(&fx, path).text;
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "localStorage",
            "document.cookie",
        ] {
            assert!(!js.contains(banned), "{path} uses {banned}");
        }
        fetches += js.matches("fetch(").count();
        if js.contains("fetch(") {
            assert!(
                js.contains("fetch(API + path")
                    && js.contains("new URL(\"../../v1\", import.meta.url)"),
                "{path}: the one fetch goes to the /v1 beside the console"
            );
            assert!(js.contains("\"X-API-Key\""), "{path} sends X-API-Key");
            assert!(js.contains("sessionStorage"), "{path} keeps the key there");
        }
    }
    assert_eq!(fetches, 1, "every call goes through api.js's one fetch");
}

#[test]
fn unknown_console_paths_are_404() {
    let fx = Fixture::start();
    let resp = fetch(&fx, "/console/assets/nope.js");
    assert_eq!(resp.status, 404);
    assert_security_headers(&resp, "unknown asset");
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    for path in [
        "/console/assets/../index.html",
        "/console/assets/",
        "/console/other",
    ] {
        assert_eq!(fetch(&fx, path).status, 404, "{path}");
    }
    // Only GET (and the HEAD actix derives from it) serves the console.
    let post = fx.call("POST", "/console").no_auth().send();
    assert!(post.status == 404 || post.status == 405, "{}", post.status);
}

#[test]
fn the_console_needs_no_key_but_every_data_call_it_makes_does() {
    let fx = Fixture::start();
    assert_eq!(fetch(&fx, "/console").status, 200);
    let message_id = fx.request_otp(common::PHONE)["message_id"]
        .as_str()
        .expect("message_id")
        .to_string();
    // The /v1 reads behind the console's pages.
    let reads = [
        "/v1/webhooks".to_string(),
        "/v1/deliveries?limit=50".to_string(),
        "/v1/stats/otp?window=hour".to_string(),
        "/v1/stats/otp?window=day".to_string(),
        format!("/v1/messages/{message_id}"),
    ];
    for path in &reads {
        fetch(&fx, path).assert_error(401, "unauthorized");
        fx.call("GET", path)
            .api_key("otpd_wrong")
            .send()
            .assert_error(401, "unauthorized");
        fx.get(path).assert_ok(200);
    }
}

#[test]
fn the_console_is_not_in_the_openapi_document() {
    let fx = Fixture::start();
    let doc = fetch(&fx, "/openapi.json").body;
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.keys().all(|p| !p.starts_with("/console")));
    assert!(otpd::api::operations()
        .iter()
        .all(|(_, path)| !path.starts_with("/console")));
}

#[test]
fn under_a_scope_the_page_links_its_files_and_the_api_beside_it() {
    let fx = Fixture::start();
    // An embedder's application: otpd under /otp, on a real socket.
    let addr = fx.run(|runtime| async move {
        let server = actix_web::HttpServer::new(move || {
            let runtime = runtime.clone();
            actix_web::App::new().service(actix_web::web::scope("/otp").configure(move |cfg| {
                otpd::api::configure(cfg, runtime, otpd::api::ApiOptions::default())
            }))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind");
        let addr = server.addrs()[0];
        actix_rt::spawn(server.run());
        addr
    });
    let get = |path: &str| {
        common::daemon::client()
            .get(format!("http://{addr}{path}"))
            .send()
            .expect("answered")
    };
    let html = get("/otp/console").text().expect("html");
    assert!(
        html.contains("src=\"/otp/console/assets/app.js\""),
        "{html}"
    );
    assert!(html.contains("href=\"/otp/console/assets/console.css\""));
    for (path, _) in ASSETS {
        assert_eq!(get(&format!("/otp{path}")).status(), 200, "/otp{path}");
    }
    // api.js calls "../../v1" from /otp/console/assets/: /otp/v1, which needs a key.
    assert_eq!(get("/otp/v1/webhooks").status(), 401);
}
