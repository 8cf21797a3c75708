//! Egress guard: resolve the destination once, refuse private and metadata addresses, and pin
//! the connection to the address that was checked (no second lookup an attacker could race).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// An address block such as `10.1.2.0/24` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, width: u8, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(width - prefix);
    (a >> shift) == (b >> shift)
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid CIDR {s:?}; write e.g. \"10.1.2.0/24\" or \"fd00::/8\"");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => width,
        };
        if prefix > width {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why an address may not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Loopback,
    Private,
    LinkLocal,
    SharedCgnat,
    Unspecified,
    Multicast,
    Reserved,
}

impl AddressClass {
    pub fn describe(self) -> &'static str {
        match self {
            AddressClass::Public => "a public address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private address",
            AddressClass::LinkLocal => "a link-local or cloud metadata address",
            AddressClass::SharedCgnat => "a shared (CGNAT) address",
            AddressClass::Unspecified => "an unspecified address",
            AddressClass::Multicast => "a multicast or broadcast address",
            AddressClass::Reserved => "a reserved address",
        }
    }
}

/// Classifies an address; IPv6 forms that embed an IPv4 address are judged by that address.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, _, _] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() {
        AddressClass::Private
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if a == 100 && (64..128).contains(&b) {
        AddressClass::SharedCgnat
    } else if ip.is_multicast() || ip.is_broadcast() {
        AddressClass::Multicast
    } else if a >= 240
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b & 0xfe) == 18)
    {
        // 240/4 future use, 192.0.0.0/24 protocol assignments, 198.18/15 benchmarking.
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let seg = ip.segments();
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if (seg[0] & 0xfe00) == 0xfc00 {
        AddressClass::Private // fc00::/7 unique local
    } else if (seg[0] & 0xffc0) == 0xfe80 || (seg[0] & 0xffc0) == 0xfec0 {
        AddressClass::LinkLocal // fe80::/10, deprecated site-local fec0::/10
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        AddressClass::Reserved // documentation
    } else {
        AddressClass::Public
    }
}

/// The IPv4 address an IPv6 address carries, for the forms routers translate:
/// v4-mapped `::ffff:a.b.c.d`, v4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`,
/// 6to4 `2002:AABB:CCDD::/48`, Teredo `2001::/32` (obfuscated client address).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let seg = ip.segments();
    let tail = Ipv4Addr::new(
        (seg[6] >> 8) as u8,
        seg[6] as u8,
        (seg[7] >> 8) as u8,
        seg[7] as u8,
    );
    if seg[..5] == [0; 5] && seg[5] == 0xffff {
        return Some(tail);
    }
    if seg[..6] == [0; 6] && !(seg[6] == 0 && seg[7] <= 1) {
        return Some(tail);
    }
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0; 4] {
        return Some(tail);
    }
    if seg[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        ));
    }
    if seg[0] == 0x2001 && seg[1] == 0 {
        return Some(Ipv4Addr::from(
            !((u32::from(seg[6]) << 16) | u32::from(seg[7])),
        ));
    }
    None
}

/// Egress rules compiled from `[egress]`.
#[derive(Debug, Clone)]
pub struct EgressGuard {
    deny_private: bool,
    allow: Vec<Cidr>,
}

/// Why a destination was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EgressError {
    #[error("cannot resolve {host}: {message}")]
    Resolve { host: String, message: String },
    #[error("destination {host} ({ip}) is {}", class.describe())]
    Forbidden {
        host: String,
        ip: IpAddr,
        class: AddressClass,
    },
}

impl EgressGuard {
    pub fn new(config: &crate::config::EgressConfig) -> EgressGuard {
        EgressGuard {
            deny_private: config.deny_private,
            allow: config.allow_cidrs.clone(),
        }
    }

    /// Whether `ip` may be reached, and if not, its class.
    pub fn check(&self, ip: IpAddr) -> Result<(), AddressClass> {
        let class = classify(ip);
        if class == AddressClass::Public || !self.deny_private {
            return Ok(());
        }
        let mapped = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        if self
            .allow
            .iter()
            .any(|c| c.contains(ip) || mapped.is_some_and(|m| c.contains(m)))
        {
            return Ok(());
        }
        Err(class)
    }

    /// Resolves `host` once and returns the first address that passes the check. Every resolved
    /// address must pass: a name that points at both a public and a private address is refused.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, EgressError> {
        let addrs: Vec<SocketAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, port)]
        } else {
            tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| EgressError::Resolve {
                    host: host.to_string(),
                    message: e.to_string(),
                })?
                .collect()
        };
        let first = *addrs.first().ok_or_else(|| EgressError::Resolve {
            host: host.to_string(),
            message: "no addresses".into(),
        })?;
        for addr in &addrs {
            self.check(addr.ip())
                .map_err(|class| EgressError::Forbidden {
                    host: host.to_string(),
                    ip: addr.ip(),
                    class,
                })?;
        }
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(allow: &[&str]) -> EgressGuard {
        EgressGuard {
            deny_private: true,
            allow: allow.iter().map(|c| c.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn address_classes() {
        let table: &[(&str, AddressClass)] = &[
            ("8.8.8.8", AddressClass::Public),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.255.0.9", AddressClass::Loopback),
            ("10.0.0.1", AddressClass::Private),
            ("172.16.5.4", AddressClass::Private),
            ("172.32.0.1", AddressClass::Public),
            ("192.168.1.1", AddressClass::Private),
            ("169.254.169.254", AddressClass::LinkLocal),
            ("100.64.0.1", AddressClass::SharedCgnat),
            ("100.128.0.1", AddressClass::Public),
            ("0.0.0.0", AddressClass::Unspecified),
            ("0.1.2.3", AddressClass::Unspecified),
            ("224.0.0.1", AddressClass::Multicast),
            ("255.255.255.255", AddressClass::Multicast),
            ("240.0.0.1", AddressClass::Reserved),
            ("::1", AddressClass::Loopback),
            ("::", AddressClass::Unspecified),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:169.254.169.254", AddressClass::LinkLocal),
            ("::127.0.0.1", AddressClass::Loopback),
            ("64:ff9b::10.0.0.1", AddressClass::Private),
            ("2002:a9fe:a9fe::1", AddressClass::LinkLocal),
            ("fd00::1", AddressClass::Private),
            ("fe80::1", AddressClass::LinkLocal),
            ("ff02::1", AddressClass::Multicast),
            ("2606:4700::1111", AddressClass::Public),
        ];
        for (ip, class) in table {
            assert_eq!(classify(ip.parse().unwrap()), *class, "{ip}");
        }
    }

    #[test]
    fn allow_cidrs_make_exceptions() {
        let g = guard(&["10.1.2.0/24", "127.0.0.1/32"]);
        assert!(g.check("10.1.2.7".parse().unwrap()).is_ok());
        assert!(g.check("10.1.3.7".parse().unwrap()).is_err());
        assert!(g.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(g.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(g.check("127.0.0.2".parse().unwrap()).is_err());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    }

    #[tokio::test]
    async fn resolve_refuses_private_literal() {
        let g = guard(&[]);
        let err = g.resolve("169.254.169.254", 80).await.unwrap_err();
        assert!(err.to_string().contains("metadata"), "{err}");
        assert!(g.resolve("localhost", 80).await.is_err());
    }
}
