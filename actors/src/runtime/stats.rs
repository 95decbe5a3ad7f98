//! Read-only statistics calls (`GET /v1/stats/otp`).

use crate::app::App;
use crate::error::Error;
use crate::stats::{otp_stats, OtpStats, StatsWindow};

use super::Runtime;

impl Runtime {
    /// OTP sends and outcomes of `app` over the last hour or day, with chart buckets.
    ///
    /// `window` is `hour` (the default) or `day`; anything else is `InvalidRequest`.
    pub async fn otp_stats(&self, app: &App, window: Option<&str>) -> Result<OtpStats, Error> {
        let window = match window {
            None => StatsWindow::Hour,
            Some(w) => StatsWindow::parse(w)
                .ok_or_else(|| Error::InvalidRequest("window must be hour or day".into()))?,
        };
        let now = self.clock().now();
        let app_id = app.app_id;
        Ok(self
            .inner
            .shared
            .snapshot
            .read(move |c| otp_stats(c, &app_id, window, now))
            .await?)
    }
}
