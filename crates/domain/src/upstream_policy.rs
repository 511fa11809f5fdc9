//! Which addresses an upstream may be: the guard against a tenant pointing the gateway at what it
//! must not reach (server-side request forgery). Checked on the address actually connected to —
//! after DNS resolution, at every new connection — so a name that resolves elsewhere later (DNS
//! rebinding) gains nothing; and when an API is saved, so the tenant hears of the problem then.
//!
//! - Always refused: link-local addresses (`169.254.0.0/16`, `fe80::/10`: cloud metadata lives
//!   there), other metadata addresses (`100.100.100.200`, `fd00:ec2::254`), unspecified,
//!   multicast and broadcast addresses, and the gateway's own services: its listeners, Redis and
//!   the database.
//! - Loopback (`127.0.0.0/8`, `::1`) and private ranges (`10/8`, `172.16/12`, `192.168/16`,
//!   `100.64/10`, `fc00::/7`): only inside the operator's allow list (`GATEWAY_UPSTREAM_ALLOW`),
//!   or for a tenant a platform admin trusts.
//! - Anything else (public addresses): allowed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

/// How long validating an API's upstream waits for its name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why an address is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Link-local, a metadata service, unspecified, multicast or broadcast: never an upstream.
    Never { addr: IpAddr, what: &'static str },
    /// One of the gateway's own services.
    OwnService { addr: SocketAddr, what: String },
    /// Loopback or private, and not allowed for this tenant.
    NotAllowed { addr: IpAddr, what: &'static str },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Never { addr, what } => {
                write!(f, "{addr} is {what}, which is never an upstream")
            }
            Self::OwnService { addr, what } => {
                write!(f, "{addr} is the gateway's own {what}")
            }
            Self::NotAllowed { addr, what } => write!(
                f,
                "{addr} is {what}: the operator has not allowed it (GATEWAY_UPSTREAM_ALLOW) and \
                 this tenant is not trusted with such upstreams"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// An address of the gateway's own, never an upstream.
#[derive(Debug, Clone)]
struct Own {
    addr: SocketAddr,
    what: String,
}

/// The operator's rules for upstream addresses.
#[derive(Debug, Clone, Default)]
pub struct UpstreamPolicy {
    allow: Vec<IpNet>,
    /// Exact sockets allowed whatever the ranges say (the all-in-one's demo upstream).
    allow_sockets: Vec<SocketAddr>,
    own: Vec<Own>,
    /// The other planes' listeners, as they registered them in the database (refreshed).
    peers: Arc<arc_swap::ArcSwap<Vec<Own>>>,
    /// This host's interface addresses: a listener on `0.0.0.0` is reachable on each of them.
    local: Vec<IpAddr>,
}

/// Parses one entry of `GATEWAY_UPSTREAM_ALLOW`: a CIDR range (`10.0.0.0/8`) or one address.
pub fn parse_allow_entry(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("'{s}' is not a CIDR range (like 10.0.0.0/8) or an IP address"))
}

impl UpstreamPolicy {
    pub fn new(allow: Vec<IpNet>) -> Self {
        let local = if_addrs::get_if_addrs()
            .map(|ifs| ifs.into_iter().map(|i| normalize(i.ip())).collect())
            .unwrap_or_default();
        Self {
            allow,
            allow_sockets: Vec::new(),
            own: Vec::new(),
            peers: Arc::default(),
            local,
        }
    }

    /// Replaces the other planes' listeners (`what` naming each kind in refusals).
    pub fn set_peers(&self, listeners: &[(String, SocketAddr)]) {
        let peers = listeners
            .iter()
            .map(|(what, addr)| Own {
                addr: SocketAddr::new(normalize(addr.ip()), addr.port()),
                what: what.clone(),
            })
            .collect();
        self.peers.store(Arc::new(peers));
    }

    /// Also allows this exact socket (the all-in-one's demo upstream).
    #[must_use]
    pub fn allowing_socket(mut self, addr: SocketAddr) -> Self {
        self.allow_sockets.push(addr);
        self
    }

    /// Marks `addr` as one of the gateway's own services, `what` naming it in refusals.
    pub fn add_own(&mut self, addr: SocketAddr, what: impl Into<String>) {
        self.own.push(Own {
            addr: SocketAddr::new(normalize(addr.ip()), addr.port()),
            what: what.into(),
        });
    }

    /// Marks the address a URL (`redis://h:6379`, `postgres://u@h:5432/db`) points at as one of
    /// the gateway's own services; names are resolved now (one that does not resolve is skipped).
    pub async fn add_own_url(&mut self, url: &str, what: &str) {
        let Ok(u) = url::Url::parse(url) else { return };
        let (Some(host), Some(port)) = (
            u.host_str(),
            u.port_or_known_default().or_else(|| match u.scheme() {
                "redis" | "rediss" => Some(6379),
                "postgres" | "postgresql" => Some(5432),
                _ => None,
            }),
        ) else {
            return;
        };
        self.add_own_host(host, port, what).await;
    }

    /// Marks `host:port` (an address, or a name resolved now) as the gateway's own service.
    pub async fn add_own_host(&mut self, host: &str, port: u16, what: &str) {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.add_own(SocketAddr::new(ip, port), what);
            return;
        }
        if let Ok(Ok(addrs)) =
            tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await
        {
            for a in addrs {
                self.add_own(a, what);
            }
        }
    }

    /// Whether the gateway may connect to `addr` for a tenant (`trusted`: a platform admin lets
    /// it use loopback and private upstreams).
    pub fn check(&self, addr: SocketAddr, trusted: bool) -> Result<(), Refusal> {
        let ip = normalize(addr.ip());
        let addr = SocketAddr::new(ip, addr.port());
        let peers = self.peers.load();
        for own in self.own.iter().chain(peers.iter()) {
            if own.addr.port() == addr.port() && self.same_host(own.addr.ip(), ip) {
                return Err(Refusal::OwnService {
                    addr,
                    what: own.what.clone(),
                });
            }
        }
        if let Some(what) = never(ip) {
            return Err(Refusal::Never { addr: ip, what });
        }
        if let Some(what) = internal(ip) {
            let allowed = trusted
                || self.allow_sockets.contains(&addr)
                || self.allow.iter().any(|n| n.contains(&ip));
            if !allowed {
                return Err(Refusal::NotAllowed { addr: ip, what });
            }
        }
        Ok(())
    }

    /// Resolves `host:port` and keeps the addresses the policy allows; `Err` with the first
    /// refusal when none is allowed, or an I/O error when the name does not resolve.
    pub async fn resolve(
        &self,
        host_port: &str,
        trusted: bool,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host_port)
            .await
            .map_err(ResolveError::Lookup)?
            .collect();
        let mut first = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.check(*a, trusted) {
                Ok(()) => true,
                Err(r) => {
                    first.get_or_insert(r);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), first) {
            (true, Some(r)) => Err(ResolveError::Refused(r)),
            (true, None) => Err(ResolveError::Lookup(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the name resolved to no address",
            ))),
            (false, _) => Ok(allowed),
        }
    }

    /// What is wrong with an upstream `host:port` for this tenant, as a sentence for the form
    /// (`None`: nothing the policy can see now; a name that does not resolve yet is left to the
    /// connect-time check).
    pub async fn problem(&self, host_port: &str, trusted: bool) -> Option<String> {
        match tokio::time::timeout(RESOLVE_TIMEOUT, self.resolve(host_port, trusted)).await {
            Ok(Err(ResolveError::Refused(r))) => Some(r.to_string()),
            _ => None,
        }
    }

    /// Whether `a` (an own service's address) and `b` are the same host: equal, both loopback,
    /// or `a` unspecified (a listener on every interface) and `b` one of this host's addresses.
    fn same_host(&self, a: IpAddr, b: IpAddr) -> bool {
        a == b
            || (a.is_loopback() && b.is_loopback())
            || (a.is_unspecified()
                && (b.is_loopback() || b.is_unspecified() || self.local.contains(&b)))
    }
}

/// Why resolving an upstream gave no address to connect to.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}")]
    Refused(Refusal),
    #[error("the upstream's name did not resolve: {0}")]
    Lookup(std::io::Error),
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is the IPv4 address.
fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// Addresses that are never an upstream, and what they are.
fn never(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_link_local() {
                Some("a link-local address (where cloud metadata services answer)")
            } else if v4 == Ipv4Addr::new(100, 100, 100, 200) {
                Some("a cloud metadata service")
            } else if v4.octets()[0] == 0 {
                Some("an unspecified address")
            } else if v4.is_multicast() || v4.is_broadcast() {
                Some("a multicast or broadcast address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                Some("a link-local address (where cloud metadata services answer)")
            } else if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some("a cloud metadata service")
            } else if v6.is_unspecified() {
                Some("an unspecified address")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else {
                None
            }
        }
    }
}

/// Loopback and private addresses, and what they are.
fn internal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
                Some("a private address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                Some("a loopback address")
            } else if (v6.segments()[0] & 0xfe00) == 0xfc00 {
                Some("a private address")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn metadata_and_link_local_are_never_allowed_even_when_trusted_or_listed() {
        let p = UpstreamPolicy::new(vec![parse_allow_entry("0.0.0.0/0").unwrap()]);
        for a in [
            "169.254.169.254:80",
            "169.254.1.1:8080",
            "[fe80::1]:80",
            "100.100.100.200:80",
            "[fd00:ec2::254]:80",
            "0.0.0.0:80",
            "[::]:80",
            "224.0.0.1:80",
            "[::ffff:169.254.169.254]:80",
        ] {
            assert!(
                matches!(p.check(sa(a), true), Err(Refusal::Never { .. })),
                "{a}"
            );
        }
    }

    #[test]
    fn loopback_and_private_need_the_allow_list_or_trust() {
        let closed = UpstreamPolicy::new(Vec::new());
        for a in [
            "127.0.0.1:8080",
            "127.1.2.3:80",
            "[::1]:80",
            "[::ffff:127.0.0.1]:80",
            "10.1.2.3:80",
            "172.20.0.5:80",
            "192.168.1.10:80",
            "100.64.0.1:80",
            "[fd12::1]:80",
        ] {
            assert!(
                matches!(closed.check(sa(a), false), Err(Refusal::NotAllowed { .. })),
                "{a}"
            );
            assert!(closed.check(sa(a), true).is_ok(), "{a} trusted");
        }
        let open = UpstreamPolicy::new(vec![
            parse_allow_entry("127.0.0.0/8").unwrap(),
            parse_allow_entry("10.0.0.7").unwrap(),
        ]);
        assert!(open.check(sa("127.0.0.1:9000"), false).is_ok());
        assert!(open.check(sa("10.0.0.7:80"), false).is_ok());
        assert!(open.check(sa("10.0.0.8:80"), false).is_err());
        assert!(closed.check(sa("93.184.215.14:443"), false).is_ok());
        let demo = UpstreamPolicy::new(Vec::new()).allowing_socket(sa("127.0.0.1:7070"));
        assert!(demo.check(sa("127.0.0.1:7070"), false).is_ok());
        assert!(demo.check(sa("127.0.0.1:7071"), false).is_err());
        assert!(parse_allow_entry("10.0.0.0/33").is_err());
        assert!(parse_allow_entry("nope").is_err());
    }

    #[test]
    fn the_gateways_own_services_are_never_upstreams() {
        let mut p = UpstreamPolicy::new(vec![parse_allow_entry("0.0.0.0/0").unwrap()]);
        p.add_own(sa("0.0.0.0:8000"), "control plane");
        p.add_own(sa("127.0.0.1:6379"), "Redis");
        p.add_own(sa("10.0.0.9:5432"), "database");
        for a in [
            "127.0.0.1:8000",
            "127.0.0.2:8000",
            "[::1]:8000",
            "127.0.0.1:6379",
            "127.9.9.9:6379",
            "10.0.0.9:5432",
        ] {
            assert!(
                matches!(p.check(sa(a), true), Err(Refusal::OwnService { .. })),
                "{a}"
            );
        }
        assert!(p.check(sa("127.0.0.1:8001"), false).is_ok());
        assert!(p.check(sa("10.0.0.10:5432"), false).is_ok());
        let msg = p.check(sa("127.0.0.1:6379"), true).unwrap_err().to_string();
        assert!(msg.contains("Redis"), "{msg}");
    }
}
