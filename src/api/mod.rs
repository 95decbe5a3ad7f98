//! PLACEHOLDER — being written by the API engineer. The signature below is the contract.

use actix_web::web;
use otpd_actors::Runtime;

/// Options of the HTTP API that do not belong to the runtime.
#[derive(Debug, Clone, Default)]
pub struct ApiOptions {
    /// `server.admin_token`: enables `/admin/v1` when set.
    pub admin_token: Option<String>,
    /// `server.trusted_proxies`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// Mounts every otpd route on `cfg`.
pub fn configure(cfg: &mut web::ServiceConfig, runtime: Runtime, options: ApiOptions) {
    let _ = (cfg, runtime, options);
}
