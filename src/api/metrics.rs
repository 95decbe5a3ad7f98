//! `GET /metrics` (SPEC section 8): Prometheus text.
//!
//! Counters and histograms are recorded where things happen, through the `metrics`
//! facade (HTTP requests in `request_log.rs`; OTP outcomes, deliveries and their
//! latency in the runtime). Figures that are states rather than events — live
//! actors, the delivery queue, group-commit totals — are read from the runtime at
//! scrape time. An embedding application that installs its own `metrics` recorder
//! gets the same series in its own exporter.

use std::sync::OnceLock;

use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::error::ApiError;
use super::ApiState;

/// Latency buckets (seconds) for every `*_seconds` histogram.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide Prometheus recorder (once; later calls return the same
/// handle). `None` when another recorder was installed first.
pub fn install_recorder() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics is off");
                    None
                }
            }
        })
        .clone()
}

/// `GET /metrics`: 404 when an embedder renders the metrics itself.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus text",
    responses(
        (status = 200, description = "Prometheus exposition format", body = String, content_type = "text/plain"),
        (status = 404, description = "Metrics are rendered by the embedding application", body = super::error::ErrorEnvelope),
    )
)]
pub async fn render(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let Some(handle) = &state.metrics else {
        return Err(ApiError::RouteNotFound {
            method: "GET".into(),
            path: "/metrics".into(),
        });
    };
    let g = state.runtime.gauges();
    metrics::gauge!("otpd_otp_actors").set(g.otp_actors as f64);
    metrics::gauge!("otpd_message_actors").set(g.message_actors as f64);
    metrics::gauge!("otpd_delivery_actors").set(g.delivery_actors as f64);
    metrics::gauge!("otpd_delivery_queue_depth").set(g.deliveries_pending as f64);
    metrics::gauge!("otpd_delivery_endpoints_tracked").set(g.delivery_endpoints_tracked as f64);
    metrics::counter!("otpd_snapshot_commits_total").absolute(g.snapshot_commits);
    metrics::counter!("otpd_snapshot_ops_total").absolute(g.snapshot_ops);
    metrics::counter!("otpd_snapshot_commit_failures_total").absolute(g.snapshot_failures);
    metrics::gauge!("otpd_snapshot_last_batch_size").set(g.snapshot_last_batch as f64);
    metrics::gauge!("otpd_snapshot_commit_seconds_total").set(g.snapshot_commit_seconds);
    handle.run_upkeep();
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render()))
}
