//! The route table: every routed operation (method, path, handler), in match order.
//!
//! Each resource module lists its endpoints (`otp::endpoints()`, …) and
//! [`super::configure`] registers exactly those, so [`operations`] is the set of
//! routed operations, not a copy of it: `tests/openapi.rs` compares it with the
//! operations of `/openapi.json` in both directions.

use actix_web::http::Method;
use actix_web::{web, Resource, Route};

/// Attaches a handler to a route (`|r| r.to(otp::request)`).
pub type Handler = fn(Route) -> Route;

/// One path and the methods routed on it.
pub struct Endpoint {
    /// The path inside its scope (`/otp/request` in `/v1`).
    pub path: &'static str,
    /// Each routed method with its handler, in registration order.
    methods: Vec<(Method, Handler)>,
}

impl Endpoint {
    /// A path with no methods yet.
    pub fn new(path: &'static str) -> Endpoint {
        Endpoint {
            path,
            methods: Vec::new(),
        }
    }

    /// Routes `GET` to `handler`.
    pub fn get(self, handler: Handler) -> Endpoint {
        self.method(Method::GET, handler)
    }

    /// Routes `POST` to `handler`.
    pub fn post(self, handler: Handler) -> Endpoint {
        self.method(Method::POST, handler)
    }

    /// Routes `PATCH` to `handler`.
    pub fn patch(self, handler: Handler) -> Endpoint {
        self.method(Method::PATCH, handler)
    }

    /// Routes `DELETE` to `handler`.
    pub fn delete(self, handler: Handler) -> Endpoint {
        self.method(Method::DELETE, handler)
    }

    fn method(mut self, method: Method, handler: Handler) -> Endpoint {
        self.methods.push((method, handler));
        self
    }

    /// The methods routed on this path.
    pub fn methods(&self) -> impl Iterator<Item = &Method> {
        self.methods.iter().map(|(m, _)| m)
    }

    /// The actix resource: every method routed, any other one a 405 envelope.
    pub fn resource(&self) -> Resource {
        self.methods
            .iter()
            .fold(super::resource(self.path), |resource, (method, handler)| {
                resource.route(handler(web::method(method.clone())))
            })
    }
}

/// The `/v1` scope: the app-facing API.
pub const V1: &str = "/v1";
/// The `/admin/v1` scope: apps and API keys.
pub const ADMIN: &str = "/admin/v1";

/// The endpoints of the `/v1` scope, in match order.
pub fn v1() -> Vec<Endpoint> {
    let mut all = super::otp::endpoints();
    all.extend(super::webhooks::endpoints());
    all.extend(super::messages::endpoints());
    all.extend(super::providers::endpoints());
    all
}

/// The endpoints of the `/admin/v1` scope.
pub fn admin() -> Vec<Endpoint> {
    super::admin::endpoints()
}

/// The endpoints outside any scope, and whether each is logged by `RequestLog`.
pub fn top_level() -> Vec<(Endpoint, bool)> {
    vec![
        (
            Endpoint::new("/healthz").get(|r| r.to(super::health::healthz)),
            true,
        ),
        (
            Endpoint::new("/metrics").get(|r| r.to(super::metrics::render)),
            false,
        ),
        (
            Endpoint::new("/openapi.json").get(|r| r.to(super::openapi::serve)),
            false,
        ),
        (
            Endpoint::new("/readyz").get(|r| r.to(super::health::readyz)),
            true,
        ),
    ]
}

/// Every routed operation as (method, full path), in the path syntax of OpenAPI
/// (`/v1/messages/{message_id}`; actix uses the same).
pub fn operations() -> Vec<(Method, String)> {
    let scoped = |prefix: &str, endpoints: Vec<Endpoint>| {
        endpoints
            .into_iter()
            .flat_map(|e| {
                let path = format!("{prefix}{}", e.path);
                e.methods()
                    .cloned()
                    .map(move |m| (m, path.clone()))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let mut all = scoped(V1, v1());
    all.extend(scoped(ADMIN, admin()));
    all.extend(scoped(
        "",
        top_level().into_iter().map(|(e, _)| e).collect(),
    ));
    all
}
