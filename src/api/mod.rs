//! The HTTP API: every route of SPEC sections 2, 4, 7 and 8, wired in one place.
//!
//! The API layer only parses, authenticates and maps results to the envelope; every
//! rule lives in `otpd-actors`. One module per resource:
//!
//! | file | what lives there |
//! |---|---|
//! | `error.rs` | [`ApiError`]: the one place an error becomes `{"success": false, …}` |
//! | `reply.rs` | [`reply::Reply`]: a rendered success envelope (what idempotency stores) |
//! | `extract.rs` | `X-API-Key` and admin-token auth, JSON bodies, query strings, path ids |
//! | `idempotency.rs` | `Idempotency-Key` for every `POST` under `/v1`, implemented once |
//! | `otp.rs` | `/v1/otp/*` |
//! | `messages.rs` | `/v1/messages`, `/v1/messages/{id}` |
//! | `providers.rs` | `/v1/providers/status` (provider status reports, bearer token) |
//! | `webhooks.rs` | `/v1/webhooks…`, `/v1/deliveries` (webhook management, delivery log) |
//! | `stats.rs` | `/v1/stats/otp` (read-only OTP counts for the console) |
//! | `admin.rs` | `/admin/v1/apps…` |
//! | `health.rs` | `/healthz`, `/readyz` |
//! | `metrics.rs` | `/metrics` (Prometheus text) and the recorder it reads |
//! | `routes.rs` | [`routes::Endpoint`]: a path, its methods and handlers (the route table's unit) |
//! | `openapi.rs` | `/openapi.json`: the OpenAPI document derived from the handlers and types |
//! | `schemas.rs` | OpenAPI schemas of the `otpd-actors` records the handlers answer with |
//! | `request_log.rs` | one debug log line per request, client IP via trusted proxies |
//!
//! The route table is [`v1_endpoints`], [`admin_endpoints`] and [`top_level_endpoints`]:
//! [`configure`] registers exactly those and [`operations`] lists them.
//!
//! Unknown routes answer a 404 `not_found` envelope and wrong methods a 405
//! `method_not_allowed` envelope, so no `/v1` request gets a non-JSON body.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use otpd_actors::Runtime;

pub mod admin;
pub mod error;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod metrics;
pub mod openapi;

pub mod messages;
pub mod otp;
pub mod providers;

pub mod reply;
pub mod request_log;
pub mod routes;
mod schemas;
pub mod stats;
pub mod webhooks;

pub use error::ApiError;

use request_log::RequestLog;
use routes::Endpoint;

/// The largest request body accepted (SPEC section 1: 413 above 64 KiB).
pub const BODY_LIMIT: usize = 64 * 1024;

/// Options of the HTTP API that do not belong to the runtime.
#[derive(Debug, Clone, Default)]
pub struct ApiOptions {
    /// `server.admin_token`: enables `/admin/v1` when set.
    pub admin_token: Option<String>,
    /// `server.trusted_proxies`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Renders `/metrics`; `None` (an embedder with its own recorder) answers 404.
    /// See [`metrics::install_recorder`].
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// What every handler shares, registered as `web::Data<ApiState>`.
pub struct ApiState {
    /// The runtime every call goes to.
    pub runtime: Runtime,
    /// SHA-256 of the admin token; `None` disables `/admin/v1`.
    admin_token_digest: Option<[u8; 32]>,
    /// Request body limit in bytes.
    pub body_limit: usize,
    /// Renders `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("admin_api", &self.admin_token_digest.is_some())
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

/// The most header bytes a request may carry (every name and value plus `": "` and
/// CRLF): actix-http itself accepts a single 100 KB header.
pub const HEADER_LIMIT: usize = 32 * 1024;

/// `Err(431)` when the header block of a request is over [`HEADER_LIMIT`].
pub fn check_header_size(headers: &actix_web::http::header::HeaderMap) -> Result<(), ApiError> {
    let size: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > HEADER_LIMIT {
        return Err(ApiError::HeadersTooLarge {
            limit: HEADER_LIMIT,
        });
    }
    Ok(())
}

/// The `/v1` scope: the app-facing API.
pub const V1: &str = "/v1";
/// The `/admin/v1` scope: apps and API keys.
pub const ADMIN: &str = "/admin/v1";

/// The endpoints of the `/v1` scope, in match order.
pub fn v1_endpoints() -> Vec<Endpoint> {
    let mut all = otp::endpoints();
    all.extend(webhooks::endpoints());
    all.extend(messages::endpoints());
    all.extend(providers::endpoints());
    all.extend(stats::endpoints());
    all
}

/// The endpoints of the `/admin/v1` scope.
pub fn admin_endpoints() -> Vec<Endpoint> {
    admin::endpoints()
}

/// The endpoints outside any scope, each with whether `RequestLog` logs it.
pub fn top_level_endpoints() -> Vec<(Endpoint, bool)> {
    vec![
        (
            Endpoint::new("/healthz").get(|r| r.to(health::healthz)),
            true,
        ),
        (
            Endpoint::new("/metrics").get(|r| r.to(metrics::render)),
            false,
        ),
        (
            Endpoint::new("/openapi.json").get(|r| r.to(openapi::serve)),
            false,
        ),
        (Endpoint::new("/readyz").get(|r| r.to(health::readyz)), true),
    ]
}

/// Every routed operation as (method, full path), in the path syntax OpenAPI and
/// actix share (`/v1/messages/{message_id}`).
pub fn operations() -> Vec<(Method, String)> {
    let scoped = |prefix: &str, endpoints: Vec<Endpoint>| -> Vec<(Method, String)> {
        endpoints
            .iter()
            .flat_map(|e| {
                let path = format!("{prefix}{}", e.path);
                e.methods().map(move |m| (m.clone(), path.clone()))
            })
            .collect()
    };
    let mut all = scoped(V1, v1_endpoints());
    all.extend(scoped(ADMIN, admin_endpoints()));
    let top = top_level_endpoints().into_iter().map(|(e, _)| e).collect();
    all.extend(scoped("", top));
    all
}

/// Mounts every otpd route on `cfg`, and the web console at `/console`
/// ([`crate::console`]).
///
/// Call it from `App::configure` or `Scope::configure`; it also sets the default
/// service of that App or Scope to a JSON 404, so unknown paths get the envelope.
/// Called from the app factory, it marks the worker thread it runs on as a home
/// for OTP actors ([`otpd_actors::host_actors_here`]): an actor lives on the worker
/// that first called it, and the pool's arbiters keep the ones called from
/// elsewhere.
pub fn configure(cfg: &mut web::ServiceConfig, runtime: Runtime, options: ApiOptions) {
    let state = web::Data::new(ApiState {
        runtime,
        // An empty token would let `Authorization: Bearer ` in: treat it as unset.
        admin_token_digest: options
            .admin_token
            .as_deref()
            .filter(|t| !t.trim().is_empty())
            .map(extract::token_digest),
        body_limit: BODY_LIMIT,
        metrics: options.metrics,
    });
    let log = RequestLog::new(options.trusted_proxies);
    // `configure` runs on each HTTP worker's thread (actix-web calls the app
    // factory there): each worker then hosts the OTP actors first called from it,
    // so a request, its actor and its reply stay on one thread.
    otpd_actors::host_actors_here();
    // Reading stops at the limit (by `Content-Length` or while streaming a chunked
    // body); `extract::json_object` turns the overflow into a 413 envelope.
    let payload = || web::PayloadConfig::new(BODY_LIMIT);

    cfg.app_data(state);

    let register = |endpoints: Vec<Endpoint>| {
        move |cfg: &mut web::ServiceConfig| {
            for endpoint in &endpoints {
                cfg.service(endpoint.resource());
            }
        }
    };
    cfg.service(
        web::scope(V1)
            .app_data(payload())
            .wrap(log.clone())
            .configure(register(v1_endpoints()))
            .default_service(web::to(not_found)),
    );
    cfg.service(
        web::scope(ADMIN)
            .app_data(payload())
            .wrap(log.clone())
            .configure(register(admin_endpoints()))
            .default_service(web::to(not_found)),
    );
    for (endpoint, logged) in top_level_endpoints() {
        if logged {
            cfg.service(endpoint.resource().wrap(log.clone()));
        } else {
            cfg.service(endpoint.resource());
        }
    }

    // The console is static files, not an API: deliberately not in `operations()`.
    cfg.configure(crate::console::routes);

    cfg.default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound {
        method: req.method().to_string(),
        path: req.path().to_string(),
    })
}
