//! Which addresses a remote fetch may connect to, and the resolver that
//! enforces it.
//!
//! A federation server fetches whatever URL a stranger puts in an activity,
//! so without this guard anyone could make Chorus probe its own network
//! (server-side request forgery): the database, a cloud metadata endpoint at
//! 169.254.169.254, an admin port on localhost. The check sits in the DNS
//! resolver that reqwest connects through, so the addresses that were checked
//! are the very addresses the connection uses; a name that resolves to a
//! public address when checked and to a private one when connecting (DNS
//! rebinding) has no second resolution to exploit.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::FetchError;

/// Decides whether an address is off limits, and names the range that makes
/// it so for logs and errors. A plain function pointer so that tests can
/// stand in a classifier that lets one loopback address count as public.
pub(super) type Classifier = fn(IpAddr) -> Option<&'static str>;

/// Names the special-purpose range `ip` falls in, or `None` when it is an
/// ordinary public unicast address a remote server may live at.
///
/// The lists follow the IANA special-purpose address registries. Ranges that
/// embed an IPv4 address (IPv4-mapped, NAT64, 6to4) are judged by the
/// address they embed, because that is where the packets end up.
pub(super) fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        _ if ip.is_unspecified() => Some("unspecified"),
        _ if ip.is_broadcast() => Some("broadcast"),
        (0, _, _) => Some("this network"),
        (10, _, _) => Some("private"),
        (100, 64..=127, _) => Some("shared address space (CGNAT)"),
        (127, _, _) => Some("loopback"),
        (169, 254, _) => Some("link-local"),
        (172, 16..=31, _) => Some("private"),
        (192, 0, 0) => Some("IETF protocol assignments"),
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Some("documentation"),
        (192, 88, 99) => Some("6to4 relay anycast"),
        (192, 168, _) => Some("private"),
        (198, 18..=19, _) => Some("benchmarking"),
        (224..=239, _, _) => Some("multicast"),
        (240..=255, _, _) => Some("reserved"),
        _ => None,
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    let s = ip.segments();
    match s {
        _ if ip.is_unspecified() => Some("unspecified"),
        _ if ip.is_loopback() => Some("loopback"),
        // The deprecated IPv4-compatible form `::a.b.c.d`: nothing public
        // lives there any more, and stacks differ in how they route it.
        [0, 0, 0, 0, 0, 0, _, _] => Some("IPv4-compatible"),
        // NAT64 translates to the embedded IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => v4_reason(embedded_v4(hi, lo)),
        [0x64, 0xff9b, 1, ..] => Some("local-use NAT64"),
        [0x100, 0, 0, 0, ..] => Some("discard-only"),
        // Teredo, ORCHID, benchmarking and the other IETF assignments.
        [0x2001, 0..=0x1ff, ..] => Some("IETF protocol assignments"),
        [0x2001, 0xdb8, ..] => Some("documentation"),
        [0x3fff, 0..=0x0fff, ..] => Some("documentation"),
        // 6to4 tunnels to the IPv4 address in the second and third segments.
        [0x2002, hi, lo, ..] => v4_reason(embedded_v4(hi, lo)),
        [0xfc00..=0xfdff, ..] => Some("unique local"),
        [0xfe80..=0xfebf, ..] => Some("link-local"),
        [0xfec0..=0xfeff, ..] => Some("site-local"),
        [0xff00..=0xffff, ..] => Some("multicast"),
        _ => None,
    }
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

/// Refuses `addr` for `host` unless it is public.
pub(super) fn check_address(
    classify: Classifier,
    host: &str,
    addr: IpAddr,
) -> Result<(), FetchError> {
    match classify(addr) {
        None => Ok(()),
        Some(range) => {
            tracing::warn!(%host, %addr, range, "refused a fetch to a non-public address");
            Err(FetchError::PrivateAddress {
                host: host.to_owned(),
                addr,
            })
        }
    }
}

/// A resolver that fails a name outright when any of its addresses is not
/// public.
///
/// Refusing the whole name, rather than dropping the bad addresses and
/// connecting to the rest, is deliberate: a name that mixes public and
/// private answers is either misconfigured or an attack, and a partial
/// answer would make the outcome depend on which address the connector
/// happens to try first.
#[derive(Debug)]
pub(super) struct GuardedResolver {
    pub(super) classify: Classifier,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let classify = self.classify;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0 is replaced by reqwest with the URL's port.
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                check_address(classify, &host, addr.ip())?;
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    /// Asserts the verdict on one address; `expected` is the range name, or
    /// `None` for a public address.
    fn check(addr: &str, expected: Option<&str>) {
        let ip = IpAddr::from_str(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
        assert_eq!(non_public_reason(ip), expected, "{addr}");
    }

    #[test]
    fn classifies_ipv4() {
        let table: &[(&str, Option<&str>)] = &[
            ("0.0.0.0", Some("unspecified")),
            ("0.1.2.3", Some("this network")),
            ("10.0.0.1", Some("private")),
            ("10.255.255.255", Some("private")),
            ("100.63.255.255", None),
            ("100.64.0.1", Some("shared address space (CGNAT)")),
            ("100.127.255.255", Some("shared address space (CGNAT)")),
            ("100.128.0.0", None),
            ("127.0.0.1", Some("loopback")),
            ("127.255.255.254", Some("loopback")),
            ("169.254.169.254", Some("link-local")),
            ("172.15.255.255", None),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("172.32.0.0", None),
            ("192.0.0.8", Some("IETF protocol assignments")),
            ("192.0.2.1", Some("documentation")),
            ("192.88.99.1", Some("6to4 relay anycast")),
            ("192.168.1.1", Some("private")),
            ("192.169.0.1", None),
            ("198.18.0.1", Some("benchmarking")),
            ("198.19.255.255", Some("benchmarking")),
            ("198.20.0.0", None),
            ("198.51.100.7", Some("documentation")),
            ("203.0.113.9", Some("documentation")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("240.0.0.1", Some("reserved")),
            ("255.255.255.255", Some("broadcast")),
            ("1.1.1.1", None),
            ("8.8.8.8", None),
            ("93.184.215.14", None),
            ("223.255.255.255", None),
        ];
        for (addr, expected) in table {
            check(addr, *expected);
        }
    }

    #[test]
    fn classifies_ipv6() {
        let table: &[(&str, Option<&str>)] = &[
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("::7f00:1", Some("IPv4-compatible")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.1.2.3", Some("private")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::127.0.0.1", Some("loopback")),
            ("64:ff9b::192.168.0.1", Some("private")),
            ("64:ff9b::8.8.8.8", None),
            ("64:ff9b:1::1", Some("local-use NAT64")),
            ("100::1", Some("discard-only")),
            ("2001::1", Some("IETF protocol assignments")),
            ("2001:1ff::1", Some("IETF protocol assignments")),
            ("2001:db8::1", Some("documentation")),
            ("3fff::1", Some("documentation")),
            ("2002:7f00:1::", Some("loopback")),
            ("2002:0a00:1::", Some("private")),
            ("2002:0808:0808::", None),
            ("fc00::1", Some("unique local")),
            ("fd12:3456::1", Some("unique local")),
            ("fe80::1", Some("link-local")),
            ("febf::1", Some("link-local")),
            ("fec0::1", Some("site-local")),
            ("ff02::1", Some("multicast")),
            ("2001:4860:4860::8888", None),
            ("2606:4700:4700::1111", None),
            ("2a01:4f8::1", None),
        ];
        for (addr, expected) in table {
            check(addr, *expected);
        }
    }

    /// Names go through the resolver, which must refuse a name that
    /// resolves to loopback before anything connects.
    #[tokio::test]
    async fn resolver_refuses_localhost() {
        let resolver = GuardedResolver {
            classify: non_public_reason,
        };
        let name = Name::from_str("localhost").unwrap_or_else(|e| panic!("{e:?}"));
        let Err(error) = resolver.resolve(name).await else {
            panic!("localhost resolved to an allowed address");
        };
        match error.downcast_ref::<FetchError>() {
            Some(FetchError::PrivateAddress { host, addr }) => {
                assert_eq!(host, "localhost");
                assert!(addr.is_loopback(), "{addr}");
            }
            other => panic!("expected PrivateAddress, got {other:?} ({error})"),
        }
    }
}
