//! Outbound URL policy for callbacks, webhooks and delivery reports (SSRF defence).
//!
//! Rules (from the product spec):
//! * scheme must be `https` (or `http` when [`UrlPolicy::new`] is given `allow_http = true`);
//! * no userinfo (`user:pass@`), at most [`MAX_URL_LEN`] characters, a host is required;
//! * the host — or every address it resolves to — must be public: loopback, private,
//!   link-local, CGNAT, unspecified, multicast, broadcast, reserved, benchmarking and
//!   documentation ranges are refused, also when wrapped in IPv4-mapped / -compatible /
//!   NAT64 / 6to4 IPv6 forms;
//! * names that can never be public are refused without asking DNS: `localhost` and
//!   `*.localhost` (unless `allowed_cidrs` opens loopback), single-label hosts and the
//!   special-use names `*.invalid`, `*.test`, `*.example`, `*.local`, `*.internal`,
//!   `*.home.arpa` (unless `allowed_cidrs` opens private ranges; `*.invalid` and
//!   `metadata.google.internal` never), with or without a trailing dot;
//! * the URL must spell its authority (`https://host/…`): `https:///cb`, which the
//!   WHATWG parser reads as host `cb`, is refused;
//! * addresses inside `allowed_cidrs` are permitted even if otherwise refused (tests, on-prem).
//!
//! Enforcement happens twice:
//! 1. at request time, [`UrlPolicy::check_url`] (syntax + IP literals, no I/O) or
//!    [`UrlPolicy::check_url_resolved`] (also resolves names and checks every address);
//! 2. at connect time, clients built with [`UrlPolicy::client_builder`] resolve names through
//!    [`PolicyResolver`], which drops refused addresses, so a name that re-resolves to an
//!    internal address after the request-time check (DNS rebinding) cannot be reached.
//!
//! **IP literals and connect time:** reqwest does not call a custom resolver for URLs whose
//! host is an IP literal, so the connect-time guard does not see them. Callers must therefore
//! run [`UrlPolicy::check_url`] on the exact URL right before every outbound request (it is
//! cheap: one parse, no allocation beyond the parsed `Url`, no I/O).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

/// Maximum accepted length of an outbound URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// Why a URL was refused (shown to API callers in the 422 message: keep them human and specific, never echo secrets).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UrlPolicyError {
    /// The string is not an absolute URL; carries the parser's reason (never the URL itself).
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The scheme is not `https` (or `http` when allowed).
    #[error("URL scheme `{0}` is not allowed; use https")]
    SchemeNotAllowed(String),
    /// The URL carries a user name and/or password.
    #[error("URL must not contain credentials (user:password@)")]
    UserInfo,
    /// The URL has no (or an empty) host.
    #[error("URL has no host")]
    MissingHost,
    /// The host is, or resolves to, a non-public address.
    #[error("destination address {0} is not allowed (loopback, private, link-local or otherwise non-public)")]
    ForbiddenAddress(IpAddr),
    /// The host name itself is refused (e.g. `localhost`).
    #[error("host `{0}` is not allowed")]
    ForbiddenHost(String),
    /// The host name can never be public: a single label, or a special-use name
    /// (`.invalid`, `.test`, `.example`, `.local`, `.internal`, `.home.arpa`).
    #[error("host `{0}` is not allowed: {1}")]
    NonPublicName(String, &'static str),
    /// The URL is longer than [`MAX_URL_LEN`].
    #[error("URL is longer than {MAX_URL_LEN} characters")]
    TooLong,
    /// DNS resolution of the host failed.
    #[error("could not resolve host: {0}")]
    ResolveFailed(String),
    /// DNS resolution succeeded but returned no address.
    #[error("host did not resolve to any address")]
    NoAddresses,
}

/// The one place the outbound URL rules live; cheap to clone; used at request time and at connect time.
#[derive(Debug, Clone, Default)]
pub struct UrlPolicy {
    allow_http: bool,
    allowed_cidrs: Vec<ipnet::IpNet>,
}

/// Longest scheme echoed back in [`UrlPolicyError::SchemeNotAllowed`].
const MAX_ECHOED_SCHEME: usize = 32;

/// Refused IPv4 ranges as (network, prefix length).
const REFUSED_V4: &[(u32, u8)] = &[
    (0x0000_0000, 8),  // 0.0.0.0/8 "this network" / unspecified
    (0x0A00_0000, 8),  // 10.0.0.0/8 private
    (0x6440_0000, 10), // 100.64.0.0/10 CGNAT
    (0x7F00_0000, 8),  // 127.0.0.0/8 loopback
    (0xA9FE_0000, 16), // 169.254.0.0/16 link-local (cloud metadata)
    (0xAC10_0000, 12), // 172.16.0.0/12 private
    (0xC000_0000, 24), // 192.0.0.0/24 IETF protocol assignments
    (0xC000_0200, 24), // 192.0.2.0/24 TEST-NET-1
    (0xC058_6300, 24), // 192.88.99.0/24 deprecated 6to4 relay anycast
    (0xC0A8_0000, 16), // 192.168.0.0/16 private
    (0xC612_0000, 15), // 198.18.0.0/15 benchmarking
    (0xC633_6400, 24), // 198.51.100.0/24 TEST-NET-2
    (0xCB00_7100, 24), // 203.0.113.0/24 TEST-NET-3
    (0xE000_0000, 4),  // 224.0.0.0/4 multicast
    (0xF000_0000, 4),  // 240.0.0.0/4 reserved, incl. 255.255.255.255 broadcast
];

/// Refused IPv6 ranges *inside* 2000::/3 (everything outside 2000::/3 is refused anyway,
/// except the translation prefixes whose embedded IPv4 address decides).
const REFUSED_V6_GLOBAL: &[(u128, u8)] = &[
    (0x2001_0000_0000_0000_0000_0000_0000_0000, 23), // 2001::/23 IETF protocol assignments (Teredo, ORCHID, benchmarking…)
    (0x2001_0db8_0000_0000_0000_0000_0000_0000, 32), // 2001:db8::/32 documentation
    (0x3fff_0000_0000_0000_0000_0000_0000_0000, 20), // 3fff::/20 documentation (RFC 9637)
];

fn in_v4(ip: u32, net: u32, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    ip & mask == net & mask
}

fn in_v6(ip: u128, net: u128, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    };
    ip & mask == net & mask
}

fn is_refused_v4(ip: Ipv4Addr) -> bool {
    let bits = u32::from(ip);
    REFUSED_V4
        .iter()
        .any(|&(net, prefix)| in_v4(bits, net, prefix))
}

/// The IPv4 address an IPv6 address stands for, if it is one of the IPv4-embedding forms:
/// IPv4-mapped `::ffff:a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d`, IPv4-compatible
/// `::a.b.c.d` (this includes `::` and `::1`, which map into the refused 0.0.0.0/8),
/// NAT64 `64:ff9b::a.b.c.d`, and 6to4 `2002:aabb:ccdd::/48`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    let prefix96 = bits >> 32;
    // ::ffff:0:0/96 mapped, ::ffff:0:0:0/96 translated, ::/96 compatible, 64:ff9b::/96 NAT64.
    if prefix96 == 0xffff
        || prefix96 == 0xffff_0000
        || prefix96 == 0
        || prefix96 == 0x0064_ff9b << 64
    {
        return Some(low32);
    }
    if in_v6(bits, 0x2002 << 112, 16) {
        // 6to4: the IPv4 address sits in bits 16..48.
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    None
}

fn is_refused_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_refused_v4(v4);
    }
    let bits = u128::from(ip);
    // Only global unicast 2000::/3 is acceptable: this refuses loopback, unspecified,
    // unique-local fc00::/7, link-local fe80::/10, site-local fec0::/10, multicast ff00::/8,
    // discard 100::/64, local-use NAT64 64:ff9b:1::/48 and every unallocated range.
    if !in_v6(bits, 0x2000 << 112, 3) {
        return true;
    }
    REFUSED_V6_GLOBAL
        .iter()
        .any(|&(net, prefix)| in_v6(bits, net, prefix))
}

/// Special-use and private-use name suffixes that are never public DNS (RFC 6761,
/// RFC 6762 `.local`, RFC 8375 `.home.arpa`, ICANN's `.internal`). Lower-case, no
/// trailing dot; a name is one of them when it equals the suffix or ends with `.suffix`.
const NON_PUBLIC_SUFFIXES: &[&str] = &[
    "invalid",
    "test",
    "example",
    "local",
    "internal",
    "home.arpa",
];

/// Names refused even when `allowed_cidrs` opens private destinations: they either
/// cannot resolve at all or exist only to reach cloud instance metadata.
const ALWAYS_REFUSED_NAMES: &[&str] = &["invalid", "metadata.google.internal"];

fn has_suffix(name: &str, suffix: &str) -> bool {
    name == suffix
        || name
            .strip_suffix(suffix)
            .is_some_and(|head| head.ends_with('.'))
}

/// Why a (lower-cased, trailing-dot-free) name can never be a public destination.
fn non_public_name(name: &str) -> Option<&'static str> {
    if !name.contains('.') {
        return Some("a single-label name is not a public host");
    }
    NON_PUBLIC_SUFFIXES
        .iter()
        .any(|s| has_suffix(name, s))
        .then_some("a special-use name is not a public host")
}

/// Whether `raw` spells an authority: `scheme://` followed by a host. The WHATWG
/// parser reads `https:///cb`, `https:/cb`, `https:cb` and `https:\\cb` as host `cb`;
/// a URL that is handed out as a callback should say exactly where it goes.
fn has_authority(raw: &str) -> bool {
    let raw = raw.trim_matches(|c: char| c.is_ascii_whitespace() || c.is_ascii_control());
    let Some((_, rest)) = raw.split_once(':') else {
        return false;
    };
    rest.strip_prefix("//")
        .and_then(|r| r.chars().next())
        .is_some_and(|c| !matches!(c, '/' | '\\' | '?' | '#'))
}

/// `localhost`, `*.localhost` (RFC 6761) and the usual /etc/hosts loopback aliases.
/// Expects a lower-cased name; trailing dots are ignored.
fn is_localhost_name(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    name == "localhost"
        || name.ends_with(".localhost")
        || name == "localhost.localdomain"
        || name == "ip6-localhost"
        || name == "ip6-loopback"
}

impl UrlPolicy {
    /// Build a policy. `allow_http` permits the `http` scheme (addresses are still checked);
    /// addresses inside any of `allowed_cidrs` are permitted even if otherwise refused.
    pub fn new(allow_http: bool, allowed_cidrs: Vec<ipnet::IpNet>) -> Self {
        Self {
            allow_http,
            allowed_cidrs,
        }
    }

    fn cidr_allows(&self, ip: IpAddr) -> bool {
        self.allowed_cidrs.iter().any(|net| net.contains(&ip))
    }

    /// Request-time syntactic check: parses, checks scheme/userinfo/length/host; if the host is an IP literal, checks it. Returns the parsed Url. Does NOT do DNS.
    ///
    /// IPv4 spellings such as `0x7f.1`, `2130706433`, `017700000001`, `127.1` or percent-encoded
    /// hosts are normalised by the WHATWG parser into [`Host::Ipv4`] before being checked.
    /// `localhost` / `*.localhost` are refused unless `allowed_cidrs` permits 127.0.0.1.
    ///
    /// Because reqwest never consults [`PolicyResolver`] for IP-literal hosts, this check must
    /// be run on the URL before **every** outbound request, not only when the URL is
    /// registered; it performs no I/O and is cheap enough for that.
    pub fn check_url(&self, raw: &str) -> Result<Url, UrlPolicyError> {
        if raw.len() > MAX_URL_LEN {
            return Err(UrlPolicyError::TooLong);
        }
        let url = Url::parse(raw).map_err(|e| UrlPolicyError::InvalidUrl(e.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => {
                let shown: String = other.chars().take(MAX_ECHOED_SCHEME).collect();
                return Err(UrlPolicyError::SchemeNotAllowed(shown));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlPolicyError::UserInfo);
        }
        if !has_authority(raw) {
            return Err(UrlPolicyError::MissingHost);
        }
        match url.host() {
            None => return Err(UrlPolicyError::MissingHost),
            Some(Host::Ipv4(v4)) => self.check_ip(IpAddr::V4(v4))?,
            Some(Host::Ipv6(v6)) => self.check_ip(IpAddr::V6(v6))?,
            Some(Host::Domain(name)) => self.check_domain(name)?,
        }
        Ok(url)
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), UrlPolicyError> {
        if self.is_allowed_ip(ip) {
            Ok(())
        } else {
            Err(UrlPolicyError::ForbiddenAddress(ip))
        }
    }

    fn check_domain(&self, name: &str) -> Result<(), UrlPolicyError> {
        let trimmed = name.trim_end_matches('.');
        if trimmed.is_empty() {
            return Err(UrlPolicyError::MissingHost);
        }
        // Defence in depth: the parser already turns IP-looking hosts into Host::Ipv4.
        if let Ok(ip) = trimmed.parse::<IpAddr>() {
            return self.check_ip(ip);
        }
        let lower = trimmed.to_ascii_lowercase();
        if is_localhost_name(&lower) {
            let loopback_allowed = self.cidr_allows(IpAddr::V4(Ipv4Addr::LOCALHOST))
                || self.cidr_allows(IpAddr::V6(Ipv6Addr::LOCALHOST));
            return if loopback_allowed {
                Ok(())
            } else {
                Err(UrlPolicyError::ForbiddenHost(lower))
            };
        }
        if ALWAYS_REFUSED_NAMES.iter().any(|n| has_suffix(&lower, n)) {
            return Err(UrlPolicyError::NonPublicName(
                lower,
                "a name that is never public",
            ));
        }
        // With `allowed_cidrs` opening ranges beyond loopback (a private deployment),
        // internal names may resolve into them; the connect-time check still judges
        // every address. Loopback alone (the usual test set-up) opens no names.
        if let Some(why) = non_public_name(&lower) {
            if !self.opens_private_ranges() {
                return Err(UrlPolicyError::NonPublicName(lower, why));
            }
        }
        Ok(())
    }

    /// Whether `allowed_cidrs` holds a range that is not only loopback.
    fn opens_private_ranges(&self) -> bool {
        self.allowed_cidrs.iter().any(|net| match net {
            ipnet::IpNet::V4(n) => !n.network().is_loopback() || n.prefix_len() < 8,
            ipnet::IpNet::V6(n) => !(n.network().is_loopback() && n.prefix_len() == 128),
        })
    }

    /// Is this address permitted as a destination (allowed_cidrs first, then the refused ranges, unwrapping mapped/compatible/NAT64/6to4 forms)?
    ///
    /// For IPv6 only global unicast (2000::/3) is accepted, minus 2001::/23, 2001:db8::/32 and
    /// 3fff::/20; IPv6 forms embedding an IPv4 address are judged by that IPv4 address.
    /// An IPv4-mapped address (`::ffff:a.b.c.d`) is also permitted when `a.b.c.d` is inside
    /// `allowed_cidrs`, since it reaches the same socket.
    pub fn is_allowed_ip(&self, ip: IpAddr) -> bool {
        if self.cidr_allows(ip) {
            return true;
        }
        let canonical = ip.to_canonical();
        if canonical != ip && self.cidr_allows(canonical) {
            return true;
        }
        match canonical {
            IpAddr::V4(v4) => !is_refused_v4(v4),
            IpAddr::V6(v6) => !is_refused_v6(v6),
        }
    }

    /// Request-time full check: check_url, then resolve the host with tokio::net::lookup_host (port from the URL or scheme default) and refuse if ANY resolved address is refused or none resolves. IP literals skip DNS.
    ///
    /// This is advisory against DNS rebinding (the name may resolve differently later); the
    /// binding guard is [`PolicyResolver`] at connect time. Wrap the call in a timeout if the
    /// system resolver may be slow.
    pub async fn check_url_resolved(&self, raw: &str) -> Result<Url, UrlPolicyError> {
        let url = self.check_url(raw)?;
        if let Some(Host::Domain(name)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(443);
            self.resolve_checked(name, port, true).await?;
        }
        Ok(url)
    }

    /// Resolve `host` with the system resolver (`tokio::net::lookup_host`) and return only the
    /// permitted addresses; fails with [`UrlPolicyError::ForbiddenAddress`] if every address is
    /// refused, [`UrlPolicyError::NoAddresses`] if none resolves, or
    /// [`UrlPolicyError::ResolveFailed`] on a lookup error. This is the core of
    /// [`PolicyResolver`] (which passes port 0; reqwest fills in the real port). It does not
    /// apply the `localhost` name rule: only addresses count here.
    pub async fn resolve_allowed(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, UrlPolicyError> {
        self.resolve_checked(host, port, false).await
    }

    /// Shared resolution core: `strict` refuses if ANY address is refused (request time),
    /// otherwise refused addresses are dropped and only an empty result is an error.
    async fn resolve_checked(
        &self,
        host: &str,
        port: u16,
        strict: bool,
    ) -> Result<Vec<SocketAddr>, UrlPolicyError> {
        // Accept bracketed IPv6 literals too, in case a caller passes `Url::host_str()`.
        let lookup = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((lookup, port))
            .await
            .map_err(|e| UrlPolicyError::ResolveFailed(format!("{host}: {e}")))?
            .collect();
        if resolved.is_empty() {
            return Err(UrlPolicyError::NoAddresses);
        }
        let first_refused = resolved.iter().find(|a| !self.is_allowed_ip(a.ip()));
        match first_refused {
            None => Ok(resolved),
            Some(bad) if strict => Err(UrlPolicyError::ForbiddenAddress(bad.ip())),
            Some(bad) => {
                let bad_ip = bad.ip();
                let total = resolved.len();
                let kept: Vec<SocketAddr> = resolved
                    .into_iter()
                    .filter(|a| self.is_allowed_ip(a.ip()))
                    .collect();
                tracing::warn!(
                    host,
                    dropped = total - kept.len(),
                    kept = kept.len(),
                    example = %bad_ip,
                    "url policy: dropped refused resolved addresses"
                );
                if kept.is_empty() {
                    Err(UrlPolicyError::ForbiddenAddress(bad_ip))
                } else {
                    Ok(kept)
                }
            }
        }
    }

    /// A reqwest ClientBuilder with this policy's resolver installed and redirects disabled; callers add timeouts/UA.
    ///
    /// Proxies (including `HTTP(S)_PROXY` from the environment) are disabled too: a proxy
    /// resolves the target itself, which would bypass the connect-time address check.
    /// IP-literal URLs bypass the resolver: always call [`UrlPolicy::check_url`] before sending.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(PolicyResolver::new(self.clone())))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
    }
}

/// A reqwest DNS resolver that applies the policy at connect time: resolves with the system resolver, drops refused addresses, errors if none are left (so the connection is pinned to a checked address, defeating DNS rebinding).
///
/// Note: reqwest does not call resolvers for IP-literal hosts; see [`UrlPolicy::check_url`].
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: UrlPolicy,
}

impl PolicyResolver {
    /// Wrap a policy for use with [`reqwest::ClientBuilder::dns_resolver`].
    pub fn new(policy: UrlPolicy) -> Self {
        Self { policy }
    }
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            match policy.resolve_allowed(&host, 0).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Err(e) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn net(s: &str) -> ipnet::IpNet {
        s.parse().expect("test cidr")
    }

    fn loopback_policy(allow_http: bool) -> UrlPolicy {
        UrlPolicy::new(allow_http, vec![net("127.0.0.0/8"), net("::1/128")])
    }

    #[test]
    fn table_default_policy() {
        let rows: &[(&str, bool)] = &[
            // --- loopback, many spellings ---
            ("https://127.0.0.1/", false),
            ("https://127.1/", false),
            ("https://0x7f.1/", false),
            ("https://0x7f000001/", false),
            ("https://2130706433/", false),
            ("https://017700000001/", false),
            ("https://0177.0.0.1/", false),
            ("https://127.0.0.1./", false),
            ("https://%31%32%37.0.0.1/", false),
            ("HTTPS://127.0.0.1:8443/x", false),
            ("  https://127.0.0.1/  ", false),
            ("https://[::1]/", false),
            ("https://[0:0:0:0:0:0:0:1]:443/", false),
            ("https://[::ffff:127.0.0.1]/", false),
            ("https://[::ffff:7f00:1]/", false),
            ("https://[::FFFF:7F00:1]/", false),
            ("https://[::127.0.0.1]/", false),
            ("https://[::ffff:0:7f00:1]/", false),
            ("https://[64:ff9b::7f00:1]/", false),
            ("https://[2002:7f00:1::1]/", false),
            // --- unspecified / this network ---
            ("https://0.0.0.0/", false),
            ("https://0/", false),
            ("https://0.1.2.3/", false),
            ("https://[::]/", false),
            // --- private ---
            ("https://10.0.0.1/", false),
            ("https://012.0.0.1/", false),
            ("https://167772161/", false),
            ("https://10.255.255.255/", false),
            ("https://172.16.0.1/", false),
            ("https://0xac.0x10.0.1/", false),
            ("https://172.31.255.254/", false),
            ("https://192.168.1.1/", false),
            ("https://3232235777/", false),
            ("https://[64:ff9b::a00:1]/", false),
            ("https://[2002:c0a8:101::1]/", false),
            ("https://[::ffff:10.0.0.1]/", false),
            ("https://[fc00::1]/", false),
            ("https://[FD12:3456::1]/", false),
            // --- link-local / metadata ---
            ("https://169.254.169.254/latest/meta-data/", false),
            ("https://0xa9fea9fe/", false),
            ("https://[::ffff:169.254.169.254]/", false),
            ("https://[fe80::1]/", false),
            ("https://[fe80::1%25eth0]/", false),
            ("https://[FE80::1%eth0]/", false),
            // --- CGNAT ---
            ("https://100.64.0.1/", false),
            ("https://100.127.255.255/", false),
            // --- multicast / broadcast / reserved ---
            ("https://224.0.0.1/", false),
            ("https://239.255.255.250/", false),
            ("https://[ff02::1]/", false),
            ("https://255.255.255.255/", false),
            ("https://0xffffffff/", false),
            ("https://240.0.0.1/", false),
            ("https://192.0.0.8/", false),
            ("https://198.18.0.1/", false),
            ("https://198.19.255.255/", false),
            // --- documentation ---
            ("https://192.0.2.1/", false),
            ("https://198.51.100.7/", false),
            ("https://203.0.113.9/", false),
            ("https://[2001:db8::1]/", false),
            ("https://[2001:DB8:ffff::]/", false),
            // --- scheme / userinfo ---
            ("http://93.184.216.34/", false),
            ("http://example.com/", false),
            ("https://user:pass@93.184.216.34/", false),
            ("https://user@example.com/", false),
            ("https://:secret@example.com/", false),
            ("ftp://example.com/", false),
            ("javascript:alert(1)", false),
            ("data:text/html,<script>alert(1)</script>", false),
            ("file:///etc/passwd", false),
            ("gopher://example.com/", false),
            ("wss://example.com/", false),
            // --- garbage ---
            ("", false),
            ("   ", false),
            ("not a url", false),
            ("https://", false),
            ("https:///", false),
            ("//example.com/cb", false),
            ("https://exa mple.com/", false),
            ("https://1.2.3.4.5/", false),
            ("https://256.0.0.1/", false),
            // --- localhost names ---
            ("https://localhost/", false),
            ("https://LOCALHOST/", false),
            ("https://localhost./", false),
            ("https://localhost:8443/cb", false),
            ("https://foo.localhost/", false),
            ("https://a.b.LocalHost./", false),
            ("https://%6c%6f%63%61%6c%68%6f%73%74/", false),
            // --- empty authority: the parser would read the path as the host ---
            ("https:///cb", false),
            ("https:////cb", false),
            ("https:/cb", false),
            ("https:cb", false),
            ("https:\\\\cb/", false),
            ("https:/\\cb/", false),
            ("https:///example.com/cb", false),
            ("HTTPS:///Example.COM/cb", false),
            ("https://?x=1", false),
            ("https://#frag", false),
            // --- single-label hosts ---
            ("https://intranet/", false),
            ("https://intranet./", false),
            ("https://INTRANET:8443/cb", false),
            ("https://cb/", false),
            ("https://metadata/", false),
            ("https://router/admin", false),
            ("https://com/", false),
            ("https://com./", false),
            ("https://xn--e1afmkfd/", false),
            ("https://%69ntranet/", false),
            // --- special-use and private-use names, with and without a trailing dot ---
            ("https://invalid/", false),
            ("https://foo.invalid/", false),
            ("https://foo.invalid./", false),
            ("https://a.b.INVALID/", false),
            ("https://test/", false),
            ("https://foo.test/", false),
            ("https://foo.test./", false),
            ("https://api.staging.TEST/cb", false),
            ("https://example/", false),
            ("https://foo.example/", false),
            ("https://foo.example./", false),
            ("https://hooks.Example/", false),
            ("https://local/", false),
            ("https://printer.local/", false),
            ("https://printer.local./", false),
            ("https://Printer.LOCAL:631/", false),
            ("https://internal/", false),
            ("https://billing.internal/", false),
            ("https://billing.internal./", false),
            ("https://a.b.c.INTERNAL/x", false),
            (
                "https://metadata.google.internal/computeMetadata/v1/",
                false,
            ),
            ("https://metadata.google.internal./", false),
            ("https://METADATA.GOOGLE.INTERNAL/", false),
            ("https://home.arpa/", false),
            ("https://nas.home.arpa/", false),
            ("https://nas.home.arpa./", false),
            ("https://NAS.Home.Arpa/", false),
            ("https://x.y.home.arpa:8443/", false),
            ("https://%66oo.test/", false),
            ("https://foo.te%73t/", false),
            // --- localhost, more spellings ---
            ("https://localhost.localdomain/", false),
            ("https://ip6-localhost/", false),
            ("https://ip6-loopback/", false),
            ("https://api.localhost./", false),
            // --- public names that only look special: accepted ---
            ("https://example.com/", true),
            ("https://example.com./", true),
            ("https://www.example.org/", true),
            ("https://test.com/", true),
            ("https://test.example.com/", true),
            ("https://local.example.net/", true),
            ("https://internal.example.io/", true),
            ("https://invalid.example.com/", true),
            ("https://foo.testing/", true),
            ("https://foo.examples/", true),
            ("https://foo.locals/", true),
            ("https://myinternal.com/", true),
            ("https://homearpa.com/", true),
            ("https://arpa.example.com/", true),
            ("https://home.arpa.example.com/", true),
            ("https://metadata.google.com/", true),
            ("https://google.internal.example.com/", true),
            ("https://localhostname.com/", true),
            ("https://does-not-exist-otpd-xyz.example.com/", true),
            ("https://a-b.c-d.co.tz/cb", true),
            ("https://hooks.slack.com/services/T000/B000/XXXX", true),
            ("https://api.example.com:8443/v1/cb?token=abc", true),
            ("https://xn--e1afmkfd.xn--p1ai/", true),
            // --- allowed ---
            ("https://93.184.216.34/cb", true),
            ("https://[2606:4700:4700::1111]/", true),
            ("https://[2606:4700:4700::1111]:8443/x", true),
            ("https://1.1.1.1/", true),
            ("https://8.8.8.8:8443/x?y=1", true),
            ("https://[::ffff:8.8.8.8]/", true),
            ("https://[64:ff9b::808:808]/", true),
            ("https://[2002:808:808::1]/", true),
            ("https://172.32.0.1/", true),
            ("https://100.128.0.1/", true),
            ("https://11.0.0.1/", true),
            ("https://example.com/webhook?x=1#frag", true),
            ("HTTPS://Example.COM./cb", true),
            ("https://hooks.localhost.example.com/", true),
            ("https://例え.jp/", true),
        ];
        assert!(rows.len() >= 150, "table too short: {}", rows.len());
        let policy = UrlPolicy::default();
        let mut failures = Vec::new();
        for (url, allowed) in rows {
            let got = policy.check_url(url);
            if got.is_ok() != *allowed {
                failures.push(format!("{url:?}: expected allowed={allowed}, got {got:?}"));
            }
        }
        assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
    }

    #[test]
    fn url_crate_normalises_ipv4_spellings() {
        for raw in [
            "https://0x7f.1/",
            "https://2130706433/",
            "https://017700000001/",
            "https://127.1/",
            "https://0177.0.0.1/",
            "https://127.0.0.1./",
            "https://%31%32%37.0.0.1/",
        ] {
            let url = Url::parse(raw).expect("parses");
            assert_eq!(
                url.host(),
                Some(Host::Ipv4(Ipv4Addr::new(127, 0, 0, 1))),
                "{raw}"
            );
        }
        let url = Url::parse("https://[::FFFF:7F00:1]/").expect("parses");
        assert_eq!(
            url.host(),
            Some(Host::Ipv6("::ffff:127.0.0.1".parse().expect("v6")))
        );
    }

    #[test]
    fn specific_errors() {
        let p = UrlPolicy::default();
        assert_eq!(
            p.check_url("http://example.com/"),
            Err(UrlPolicyError::SchemeNotAllowed("http".into()))
        );
        assert_eq!(
            p.check_url("https://u:hunter2@example.com/"),
            Err(UrlPolicyError::UserInfo)
        );
        let msg = p
            .check_url("https://u:hunter2@example.com/")
            .expect_err("refused")
            .to_string();
        assert!(!msg.contains("hunter2"));
        assert_eq!(
            p.check_url("https://0x7f.1/"),
            Err(UrlPolicyError::ForbiddenAddress(IpAddr::V4(
                Ipv4Addr::LOCALHOST
            )))
        );
        assert_eq!(
            p.check_url("https://Foo.LocalHost./"),
            Err(UrlPolicyError::ForbiddenHost("foo.localhost".into()))
        );
        assert!(matches!(
            p.check_url("not a url"),
            Err(UrlPolicyError::InvalidUrl(_))
        ));
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(p.check_url(&long), Err(UrlPolicyError::TooLong));
        let exact = format!(
            "https://example.com/{}",
            "a".repeat(MAX_URL_LEN - "https://example.com/".len())
        );
        assert!(p.check_url(&exact).is_ok());
        let weird = format!("{}:x", "a".repeat(100));
        match p.check_url(&weird) {
            Err(UrlPolicyError::SchemeNotAllowed(s)) => assert!(s.len() <= MAX_ECHOED_SCHEME),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn is_allowed_ip_ranges() {
        let p = UrlPolicy::default();
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.0",
            "169.254.0.1",
            "172.16.0.0",
            "192.0.0.1",
            "192.0.2.255",
            "192.168.255.255",
            "198.18.0.0",
            "198.51.100.1",
            "203.0.113.1",
            "224.0.0.0",
            "240.0.0.0",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:0:10.0.0.1",
            "::192.168.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b:1::1",
            "2002:a9fe:a9fe::",
            "fc00::",
            "fdff::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff00::",
            "100::1",
            "2001::1",
            "2001:db8::",
            "3fff::1",
            "4000::1",
        ] {
            assert!(!p.is_allowed_ip(ip(bad)), "{bad} should be refused");
        }
        for good in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450::1",
            "::ffff:1.1.1.1",
            "64:ff9b::1.1.1.1",
            "2002:101:101::1",
        ] {
            assert!(p.is_allowed_ip(ip(good)), "{good} should be allowed");
        }
        let lp = loopback_policy(false);
        assert!(lp.is_allowed_ip(ip("127.0.0.1")));
        assert!(lp.is_allowed_ip(ip("127.9.9.9")));
        assert!(lp.is_allowed_ip(ip("::1")));
        assert!(lp.is_allowed_ip(ip("::ffff:127.0.0.1")));
        assert!(!lp.is_allowed_ip(ip("10.0.0.1")));
        assert!(!lp.is_allowed_ip(ip("::2")));
    }

    #[test]
    fn allow_http_only_relaxes_scheme() {
        let p = UrlPolicy::new(true, vec![]);
        assert!(p.check_url("http://93.184.216.34/").is_ok());
        assert!(p.check_url("https://93.184.216.34/").is_ok());
        assert_eq!(
            p.check_url("http://127.0.0.1/"),
            Err(UrlPolicyError::ForbiddenAddress(IpAddr::V4(
                Ipv4Addr::LOCALHOST
            )))
        );
        assert!(p.check_url("http://localhost/").is_err());
        assert!(p.check_url("ftp://93.184.216.34/").is_err());
        assert!(p.check_url("http://u:p@93.184.216.34/").is_err());
    }

    #[test]
    fn allowed_cidrs_permit_listed_ranges_only() {
        let p = UrlPolicy::new(false, vec![net("127.0.0.0/8")]);
        assert!(p.check_url("https://127.0.0.1:8443/x").is_ok());
        assert!(p.check_url("https://0x7f.1/").is_ok());
        assert!(
            p.check_url("http://127.0.0.1/").is_err(),
            "scheme still refused"
        );
        assert!(p.check_url("https://10.0.0.1/").is_err());
        assert!(p.check_url("https://169.254.169.254/").is_err());
        // With loopback explicitly allowed, the localhost name rule defers to DNS.
        assert!(p.check_url("https://localhost:8443/").is_ok());

        let p = UrlPolicy::new(true, vec![net("127.0.0.0/8")]);
        assert!(p.check_url("http://127.0.0.1/").is_ok());
        assert!(p.check_url("http://127.0.0.1:9000/cb").is_ok());
        assert!(p.check_url("http://10.0.0.1/").is_err());
        assert!(p.check_url("https://10.0.0.1/").is_err());
    }

    #[test]
    fn private_deployments_may_name_internal_hosts_but_never_metadata_or_invalid() {
        let private = UrlPolicy::new(false, vec![net("10.0.0.0/8")]);
        for url in [
            "https://billing.internal/cb",
            "https://billing/cb",
            "https://nas.home.arpa./",
            "https://printer.local/",
            "https://api.test/",
        ] {
            assert!(
                private.check_url(url).is_ok(),
                "{url} with private CIDRs open"
            );
            assert!(
                matches!(
                    UrlPolicy::default().check_url(url),
                    Err(UrlPolicyError::NonPublicName(..))
                ),
                "{url} by default"
            );
        }
        for url in [
            "https://metadata.google.internal/",
            "https://foo.invalid/",
            "https:///cb",
        ] {
            assert!(private.check_url(url).is_err(), "{url} is never allowed");
        }
        // Opening private ranges does not open loopback names.
        assert!(private.check_url("https://localhost/").is_err());
        // Opening loopback alone (tests) opens no internal names.
        let loopback = loopback_policy(true);
        assert!(loopback.check_url("http://localhost:9000/").is_ok());
        for url in [
            "https://billing.internal/",
            "https://intranet/",
            "http://foo.test/",
        ] {
            assert!(
                matches!(
                    loopback.check_url(url),
                    Err(UrlPolicyError::NonPublicName(..))
                ),
                "{url} with loopback open"
            );
        }
    }

    #[tokio::test]
    async fn check_url_resolved_rules() {
        let p = UrlPolicy::default();
        assert_eq!(
            p.check_url_resolved("https://localhost/").await,
            Err(UrlPolicyError::ForbiddenHost("localhost".into()))
        );
        assert!(matches!(
            p.check_url_resolved("https://[::ffff:7f00:1]/").await,
            Err(UrlPolicyError::ForbiddenAddress(_))
        ));
        // IP literals skip DNS.
        assert!(p.check_url_resolved("https://93.184.216.34/").await.is_ok());
        // .invalid never resolves: refused by name, before any lookup.
        assert!(matches!(
            p.check_url_resolved("https://no-such-host.invalid/").await,
            Err(UrlPolicyError::NonPublicName(..))
        ));
        // A policy that relaxes the name rule (127/8 allowed) still checks every address.
        let lp = loopback_policy(false);
        assert!(lp
            .check_url_resolved("https://localhost:8443/")
            .await
            .is_ok());
        let v6_only = UrlPolicy::new(false, vec![net("::1/128")]);
        assert!(v6_only
            .check_url_resolved("https://localhost/")
            .await
            .is_err());
    }

    #[tokio::test]
    async fn resolve_allowed_localhost() {
        let p = UrlPolicy::default();
        let err = p
            .resolve_allowed("localhost", 443)
            .await
            .expect_err("loopback refused");
        assert!(
            matches!(err, UrlPolicyError::ForbiddenAddress(ip) if ip.is_loopback()),
            "{err:?}"
        );
        // A literal handed to the resolver is checked too.
        assert!(p.resolve_allowed("127.0.0.1", 443).await.is_err());
        assert!(p.resolve_allowed("[::1]", 443).await.is_err());

        let lp = loopback_policy(false);
        let addrs = lp
            .resolve_allowed("localhost", 443)
            .await
            .expect("allowed by cidrs");
        assert!(!addrs.is_empty());
        assert!(addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 443));
    }

    #[tokio::test]
    async fn policy_resolver_trait() {
        use reqwest::dns::Resolve;
        let name = || reqwest::dns::Name::from_str("localhost").expect("name");
        let refused = PolicyResolver::new(UrlPolicy::default())
            .resolve(name())
            .await;
        assert!(refused.is_err());
        let ok = PolicyResolver::new(loopback_policy(false))
            .resolve(name())
            .await
            .expect("resolves");
        let addrs: Vec<SocketAddr> = ok.collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }

    /// Minimal HTTP/1.1 server on 127.0.0.1 answering every request with `response`.
    async fn spawn_server(response: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = sock.write_all(response.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        port
    }

    const OK_RESPONSE: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

    #[tokio::test]
    async fn real_socket_resolver_enforced_at_connect_time() {
        let port = spawn_server(OK_RESPONSE).await;
        let url = format!("http://localhost:{port}/");

        // allow_http but no allowed_cidrs: the resolver refuses loopback.
        let client = UrlPolicy::new(true, vec![])
            .client_builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let err = client.get(&url).send().await.expect_err("must be refused");
        // The refusal must come from our resolver, not from e.g. a connection error.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        let mut found = None;
        while let Some(e) = source {
            if let Some(policy_err) = e.downcast_ref::<UrlPolicyError>() {
                found = Some(policy_err.clone());
            }
            source = e.source();
        }
        assert!(
            matches!(found, Some(UrlPolicyError::ForbiddenAddress(ip)) if ip.is_loopback()),
            "{err:?}"
        );

        // Same for the default policy's client.
        let client = UrlPolicy::default()
            .client_builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        assert!(client.get(&url).send().await.is_err());

        // With loopback allowed, the same request goes through.
        let client = loopback_policy(true)
            .client_builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let resp = client.get(&url).send().await.expect("allowed");
        assert_eq!(resp.status(), reqwest::StatusCode::OK);
        assert_eq!(resp.text().await.expect("body"), "ok");
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let port = spawn_server(
            "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        let client = loopback_policy(true)
            .client_builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let resp = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .expect("response");
        assert_eq!(resp.status(), reqwest::StatusCode::FOUND);
    }
}
