//! `GET /metrics` (SPEC section 8): Prometheus text.
//!
//! Counters and histograms are recorded where things happen, through the `metrics`
//! facade (HTTP requests in `request_log.rs`; OTP outcomes, deliveries and their
//! latency in the runtime). Figures that are states rather than events — live
//! actors, the delivery queue, group-commit totals — are read from the runtime at
//! scrape time. An embedding application that installs its own `metrics` recorder
//! gets the same series in its own exporter.
//!
//! The recorder keeps each histogram sample until an upkeep pass folds it into the
//! buckets. A scrape runs one, but a daemon nobody scrapes would keep every
//! request's latency sample forever (~8 bytes each, growing without bound), so
//! [`install_recorder`] also starts the `otpd-metrics` thread, which runs one every
//! [`UPKEEP_EVERY`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::error::ApiError;
use super::ApiState;

/// Latency buckets (seconds) for every `*_seconds` histogram.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often the `otpd-metrics` thread folds recorded histogram samples into their
/// buckets: what the recorder holds between two passes is this long's samples.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Upkeep passes run by the `otpd-metrics` thread since the start.
static UPKEEP_PASSES: AtomicU64 = AtomicU64::new(0);

/// Installs the process-wide Prometheus recorder (once; later calls return the same
/// handle) and starts its upkeep thread. `None` when another recorder was installed
/// first.
pub fn install_recorder() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    describe_families();
                    start_upkeep(handle.clone());
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics is off");
                    None
                }
            }
        })
        .clone()
}

/// Runs [`PrometheusHandle::run_upkeep`] every [`UPKEEP_EVERY`] on a thread of its
/// own, for the life of the process, so histogram samples are folded into their
/// buckets whether or not anyone scrapes.
fn start_upkeep(handle: PrometheusHandle) {
    let started = std::thread::Builder::new()
        .name("otpd-metrics".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
            UPKEEP_PASSES.fetch_add(1, Ordering::Relaxed);
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "metrics upkeep thread not started; only scrapes fold histogram samples");
    }
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
    metrics::counter!("otpd_snapshot_reads_total").absolute(g.snapshot_reads);
    metrics::counter!("otpd_snapshot_commit_failures_total").absolute(g.snapshot_failures);
    metrics::gauge!("otpd_snapshot_last_batch_size").set(g.snapshot_last_batch as f64);
    metrics::gauge!("otpd_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    handle.run_upkeep();
    let mut text = handle.render();
    // Fractional counters, which the `metrics` facade (u64 counters) cannot hold.
    text.push_str(&format!(
        "# HELP otpd_snapshot_commit_seconds_total {COMMIT_SECONDS_HELP}\n\
         # TYPE otpd_snapshot_commit_seconds_total counter\n\
         otpd_snapshot_commit_seconds_total {}\n\
         # HELP otpd_snapshot_commit_cpu_seconds_total {COMMIT_CPU_SECONDS_HELP}\n\
         # TYPE otpd_snapshot_commit_cpu_seconds_total counter\n\
         otpd_snapshot_commit_cpu_seconds_total {}\n",
        g.snapshot_commit_seconds, g.snapshot_commit_cpu_seconds
    ));
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

const COMMIT_SECONDS_HELP: &str = "Seconds spent in storage group commits since start.";
const COMMIT_CPU_SECONDS_HELP: &str = "Of the seconds spent in storage group commits, those the writer thread was on a CPU (the rest it waited for a core or for I/O).";

/// `# HELP` of every family (README "Metrics" lists the same ones). Counters end in
/// `_total`, histograms in `_seconds`, gauges in neither.
fn describe_families() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "otpd_build_info",
        "Always 1; the version label is the running otpd version."
    );
    describe_counter!(
        "otpd_http_requests_total",
        "HTTP requests answered, by route pattern, method and status."
    );
    describe_histogram!(
        "otpd_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by route pattern."
    );
    describe_counter!(
        "otpd_http_protocol_errors_total",
        "Requests too malformed to route (refused with 400 by the HTTP layer)."
    );
    describe_counter!(
        "otpd_otp_sends_total",
        "OTP requests and resends, by kind and outcome."
    );
    describe_counter!(
        "otpd_otp_verifications_total",
        "OTP verifications, by outcome."
    );
    describe_counter!(
        "otpd_provider_sends_total",
        "Provider calls (retries included), by provider and outcome (accepted, failed)."
    );
    describe_histogram!(
        "otpd_provider_send_duration_seconds",
        Unit::Seconds,
        "Provider call latency, by provider."
    );
    describe_counter!(
        "otpd_deliveries_total",
        "Deliveries finished, by kind (callback, webhook, report) and outcome (succeeded, failed)."
    );
    describe_histogram!(
        "otpd_delivery_attempt_duration_seconds",
        Unit::Seconds,
        "Delivery attempt latency, by kind."
    );
    describe_gauge!("otpd_otp_actors", "Live OTP actors (one per active flake).");
    describe_gauge!("otpd_message_actors", "Live message actors.");
    describe_gauge!("otpd_delivery_actors", "Live delivery actors.");
    describe_gauge!(
        "otpd_delivery_queue_depth",
        "Deliveries pending (waiting for an attempt or a retry)."
    );
    describe_gauge!(
        "otpd_delivery_endpoints_tracked",
        "Endpoints whose failure count or pause is held in memory."
    );
    describe_counter!(
        "otpd_snapshot_commits_total",
        "Storage group commits since start."
    );
    describe_counter!(
        "otpd_snapshot_ops_total",
        "Changes written by storage group commits since start."
    );
    describe_counter!(
        "otpd_snapshot_reads_total",
        "Storage reads (actor loads, API lookups) run on the read connections since start."
    );
    describe_counter!(
        "otpd_snapshot_commit_failures_total",
        "Storage group commits that failed since start."
    );
    describe_gauge!(
        "otpd_snapshot_last_batch_size",
        "Changes in the latest storage group commit."
    );
    describe_counter!(
        "otpd_retention_pruned_rows_total",
        "Rows removed by retention, by table."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upkeep_runs_without_a_scrape() {
        let Some(_handle) = install_recorder() else {
            panic!("another recorder was installed in this test binary");
        };
        let before = UPKEEP_PASSES.load(Ordering::Relaxed);
        metrics::histogram!("otpd_test_upkeep_seconds").record(0.001);
        let ran = otpd_test_support::poll_blocking(UPKEEP_EVERY * 5, || {
            UPKEEP_PASSES.load(Ordering::Relaxed) > before
        });
        assert!(ran, "no upkeep pass within {:?}", UPKEEP_EVERY * 5);
    }
}
