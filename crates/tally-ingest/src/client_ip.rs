//! Which address is the client: the socket peer, unless the peer is a trusted proxy,
//! in which case `X-Forwarded-For` is walked from the right (the hop nearest to us)
//! past every trusted proxy, and the first untrusted address is the client.
//!
//! Walking from the right matters: everything left of the nearest untrusted hop was
//! written by the client itself and can be forged, so taking the left-most entry
//! would let anyone choose their `$ip` (and GeoIP). This module does not decide
//! whether the address is stored; enrichment does.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

use crate::config::{Cidr, canonical_ip};

/// The client's address, or `None` when the peer is unknown (the server was not
/// started with connect info).
pub fn resolve_client_ip(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted_proxies: &[Cidr],
) -> Option<IpAddr> {
    let peer = canonical_ip(peer?);
    let is_trusted = |ip: IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    // Several X-Forwarded-For headers are one list, in order.
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            // A hop we cannot read ends the chain: the last address we could read
            // was added by a proxy we trust, so it is the best answer we have.
            None => break,
        }
    }
    Some(client)
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or
/// `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    if let Ok(sock) = hop.parse::<SocketAddr>() {
        return Some(canonical_ip(sock.ip()));
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        .map(canonical_ip)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn xff(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_static(v));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_header_says() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            resolve_client_ip(Some(ip("203.0.113.9")), &xff(&["1.1.1.1"]), &trusted),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(resolve_client_ip(None, &xff(&["1.1.1.1"]), &trusted), None);
    }

    #[test]
    fn walks_from_the_right_past_trusted_hops() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        // Client forged "6.6.6.6"; real client 198.51.100.7; then two internal proxies.
        let h = xff(&["6.6.6.6, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(
            resolve_client_ip(Some(ip("10.0.0.1")), &h, &trusted),
            Some(ip("198.51.100.7"))
        );
        // Ports and brackets.
        let h = xff(&["[2001:db8::5]:443, 10.0.0.3:8080"]);
        assert_eq!(
            resolve_client_ip(Some(ip("::ffff:10.0.0.1")), &h, &trusted),
            Some(ip("2001:db8::5"))
        );
        // All hops trusted: the left-most is the best we know.
        let h = xff(&["10.1.1.1, 10.2.2.2"]);
        assert_eq!(
            resolve_client_ip(Some(ip("10.0.0.1")), &h, &trusted),
            Some(ip("10.1.1.1"))
        );
        // No header: the proxy itself.
        assert_eq!(
            resolve_client_ip(Some(ip("10.0.0.1")), &HeaderMap::new(), &trusted),
            Some(ip("10.0.0.1"))
        );
        // Garbage ends the walk at the last readable (trusted) hop.
        let h = xff(&["198.51.100.7, garbage, 10.0.0.9"]);
        assert_eq!(
            resolve_client_ip(Some(ip("10.0.0.1")), &h, &trusted),
            Some(ip("10.0.0.9"))
        );
    }
}
