//! One info-level log line per request (target `otpd::request`): method, route
//! pattern, path, status, latency in milliseconds, client IP.
//!
//! Only the path is logged, never the query string (it carries phone numbers),
//! bodies, headers, codes or keys. The client IP is the TCP peer unless the peer
//! is a trusted proxy (`server.trusted_proxies`), in which case `X-Forwarded-For`
//! is read right to left and the first address that is not a trusted proxy wins:
//! a client can prepend whatever it likes to that header, but not append.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{ready, Ready};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::HeaderMap;
use actix_web::http::Method;
use futures::future::LocalBoxFuture;
use ipnet::IpNet;
use otpd_actors::clock::Stopwatch;
use tracing::Instrument;

/// Middleware factory: wrap a scope or resource with it.
#[derive(Debug, Clone)]
pub struct RequestLog {
    trusted_proxies: Arc<Vec<IpNet>>,
}

impl RequestLog {
    /// Believes `X-Forwarded-For` only from peers inside `trusted_proxies`.
    pub fn new(trusted_proxies: Vec<IpNet>) -> RequestLog {
        RequestLog {
            trusted_proxies: Arc::new(trusted_proxies),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for RequestLog
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = RequestLogService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestLogService {
            service: Rc::new(service),
            trusted_proxies: self.trusted_proxies.clone(),
        }))
    }
}

/// The per-worker service created by [`RequestLog`].
#[derive(Debug)]
pub struct RequestLogService<S> {
    service: Rc<S>,
    trusted_proxies: Arc<Vec<IpNet>>,
}

impl<S, B> Service<ServiceRequest> for RequestLogService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Stopwatch::start();
        // Formatted only where a line is written: an address is cheap to keep, and
        // a worker answers tens of thousands of requests a second.
        let client_ip = ClientIp(client_ip(
            req.peer_addr(),
            req.headers(),
            &self.trusted_proxies,
        ));
        let method = req.method().clone();
        // For the path once the request is answered: a `Uri` clone shares its
        // bytes (the request itself must stay unshared while it is routed).
        let uri = req.uri().clone();
        let span = tracing::debug_span!(
            "http_request",
            method = %method,
            path = %uri.path(),
            client_ip = %client_ip,
        );
        let fut = self.service.call(req);
        Box::pin(
            async move {
                let result = fut.await;
                let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                match &result {
                    Ok(res) => {
                        // The route pattern (not the path) keeps label cardinality bounded.
                        let route = res
                            .request()
                            .match_pattern()
                            .unwrap_or_else(|| "unmatched".into());
                        tracing::info!(
                            target: "otpd::request",
                            method = %method,
                            route = %route,
                            path = %uri.path(),
                            status = res.status().as_u16(),
                            latency_ms,
                            client_ip = %client_ip,
                            "request"
                        );
                        record(
                            route,
                            method_label(&method),
                            res.status().as_u16(),
                            latency_ms / 1000.0,
                        );
                    }
                    Err(e) => tracing::info!(
                        target: "otpd::request",
                        method = %method,
                        route = "unmatched",
                        path = %uri.path(),
                        status = e.as_response_error().status_code().as_u16(),
                        latency_ms,
                        client_ip = %client_ip,
                        "request"
                    ),
                }
                result
            }
            .instrument(span),
        )
    }
}

/// A request's client address as logged: the address, or `-` when unknown.
#[derive(Debug, Clone, Copy)]
struct ClientIp(Option<IpAddr>);

impl std::fmt::Display for ClientIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// The `method` label: a standard method by name, any other `other`. A method is
/// a token the client chooses; labelled as sent, each invented one would add a
/// series to `/metrics` (and to the recorder's memory) for good.
fn method_label(method: &Method) -> &'static str {
    const STANDARD: [&str; 9] = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    STANDARD
        .into_iter()
        .find(|m| *m == method.as_str())
        .unwrap_or("other")
}

/// One request series' handles: `otpd_http_requests_total` and
/// `otpd_http_request_duration_seconds`.
struct Series {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

thread_local! {
    /// Each worker's handles to the series it has recorded, by (route pattern,
    /// method label, status): a request then costs one map lookup instead of
    /// building its labels and looking them up in the recorder. Bounded: route
    /// patterns, method labels and status codes are all finite sets.
    static SERIES: RefCell<HashMap<(String, &'static str, u16), Series, foldhash::fast::RandomState>> =
        RefCell::default();
}

/// Counts one answered request and records its latency.
///
/// Handles are taken from the recorder installed when a worker first records a
/// series; otpd installs its own before it serves (as an embedding application
/// installs its own at start-up).
fn record(route: String, method: &'static str, status: u16, seconds: f64) {
    SERIES.with(|series| {
        let mut series = series.borrow_mut();
        let handles =
            series
                .entry((route, method, status))
                .or_insert_with_key(|(route, method, status)| Series {
                    requests: metrics::counter!(
                        "otpd_http_requests_total",
                        "route" => route.clone(),
                        "method" => *method,
                        "status" => status.to_string()
                    ),
                    duration: metrics::histogram!(
                        "otpd_http_request_duration_seconds",
                        "route" => route.clone()
                    ),
                });
        handles.requests.increment(1);
        handles.duration.record(seconds);
    });
}

/// The address a request came from, honouring `X-Forwarded-For` only from
/// trusted proxies.
pub fn client_ip(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted_proxies: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?.ip();
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            // Garbage in the chain: stop at the last address we could trust.
            break;
        };
        client = ip;
        if !trusted(&ip) {
            break;
        }
    }
    Some(client)
}

/// One `X-Forwarded-For` entry: a bare address, or one with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_str(xff).unwrap(),
        );
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers("1.2.3.4, 5.6.7.8");
        let untrusted: SocketAddr = "9.9.9.9:1000".parse().unwrap();
        assert_eq!(
            client_ip(Some(untrusted), &h, &proxies),
            Some("9.9.9.9".parse().unwrap())
        );
        let proxy: SocketAddr = "10.1.1.1:1000".parse().unwrap();
        assert_eq!(
            client_ip(Some(proxy), &h, &proxies),
            Some("5.6.7.8".parse().unwrap())
        );
        let chained = headers("1.2.3.4, 10.0.0.7");
        assert_eq!(
            client_ip(Some(proxy), &chained, &proxies),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(
            client_ip(Some(proxy), &headers("nonsense"), &proxies),
            Some("10.1.1.1".parse().unwrap())
        );
    }
}
