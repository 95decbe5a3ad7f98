//! [`Endpoint`]: one path and its methods, the unit of the route table.
//!
//! Each resource module lists its endpoints (`otp::endpoints()`, …); `super`
//! assembles them per scope, [`super::configure`] registers exactly those, and
//! [`super::operations`] lists them, so the routed operations that
//! `tests/openapi.rs` compares with `/openapi.json` are not a copy of the routes.

use actix_web::guard::{self, Guard};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse, Resource, Route};

use super::error::ApiError;

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
        let unrouted = web::resource(self.path).default_service(web::to(method_not_allowed));
        self.methods
            .iter()
            .fold(unrouted, |resource, (method, handler)| {
                resource.route(handler(web::route().guard(method_is(method.clone()))))
            })
    }
}

/// A guard passing requests with `method`.
///
/// Not actix-web's `web::method`: its guard records every method it checks in the
/// request's extensions (a `Vec` and a boxed map entry per route tried, dropped
/// with the request) for actix's own `405` `Allow` header, which this API's `405`
/// envelope ([`method_not_allowed`]) does not use.
fn method_is(method: Method) -> impl Guard {
    guard::fn_guard(move |ctx| ctx.head().method == method)
}

/// What a method that is not routed on a path answers.
async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.path().to_string(),
    })
}
