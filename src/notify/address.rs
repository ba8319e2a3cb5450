//! Which addresses a webhook may be delivered to. Endpoints are registered
//! by API clients, so a delivery must not become a way into the network
//! Tuma runs in (its database, a cloud's metadata service, an admin port on
//! loopback): unless `webhooks.allow_private_addresses` is set, an endpoint
//! whose address is loopback, private, link-local, shared, unspecified,
//! multicast or otherwise not routable on the internet is refused when it is
//! registered (an address written in the URL) and at every delivery (a name,
//! checked on what it resolves to at that moment, so a name that later
//! points inward is caught too). Deliveries follow no redirects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // Protocol assignments, benchmarking and reserved ranges.
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // Unique local fc00::/7, link-local fe80::/10, documentation
        // 2001:db8::/32.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first == 0x2001 && ip.segments()[1] == 0x0db8))
}

/// What is wrong with a webhook URL's host when it is written as an
/// address (or as `localhost`): `None` for a public address or a name.
pub fn refused_host(url: &url::Url) -> Option<String> {
    let ip = match url.host()? {
        url::Host::Ipv4(v4) => IpAddr::V4(v4),
        url::Host::Ipv6(v6) => IpAddr::V6(v6),
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            return (name == "localhost" || name.ends_with(".localhost"))
                .then(|| format!("{name} is not a public address"));
        }
    };
    (!is_public(ip)).then(|| format!("{ip} is not a public address"))
}

/// A resolver that keeps only public addresses, and fails a name that has
/// none: reqwest connects to nothing else.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves to no public address").into();
                return Err(refused);
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inward_addresses_are_not_public() {
        for inward in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.9",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(inward.parse().unwrap()), "{inward}");
        }
        for public in ["196.201.214.200", "8.8.8.8", "2a00:1450:4001::1", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn a_name_resolving_only_inward_is_not_connected_to() {
        use std::str::FromStr;
        let refused = PublicOnly.resolve(Name::from_str("localhost").unwrap()).await;
        let error = refused.err().expect("localhost has no public address").to_string();
        assert!(error.contains("no public address"), "{error}");
    }

    #[test]
    fn urls_naming_an_inward_host_are_refused_and_names_are_left_to_delivery() {
        for url in [
            "http://127.0.0.1:9/hook",
            "http://[::1]/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost:8080/x",
            "http://api.localhost/x",
        ] {
            assert!(refused_host(&url::Url::parse(url).unwrap()).is_some(), "{url}");
        }
        for url in ["https://hooks.example.org/tuma", "https://196.201.214.200/x"] {
            assert!(refused_host(&url::Url::parse(url).unwrap()).is_none(), "{url}");
        }
    }
}
