//! Ingest configuration: the documented limits every request and event is held to,
//! the proxies whose `X-Forwarded-For` we believe, the GeoIP database and the
//! future-timestamp tolerance.
//!
//! This module only describes configuration; it does not read files or environment
//! variables (the binary does) and it does not enforce anything (the decoders and the
//! normaliser do).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// Size and shape limits. Every one is enforced with a 4xx and a message that names
/// the limit; see `docs/INGEST.md` for the table of defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Request body as received on the wire (before any decompression). 413 when over.
    pub max_body_bytes: usize,
    /// Request payload after gzip / deflate / base64 decoding. Decompression stops,
    /// with a 413, the moment this is exceeded, so a gzip bomb never inflates.
    pub max_decompressed_bytes: usize,
    /// Events in one request. 413 when over (the whole request is refused).
    pub max_events_per_batch: usize,
    /// One event, measured as its compact JSON serialisation as sent by the client.
    pub max_event_bytes: usize,
    /// Top-level keys in `properties`, and separately in `$set` and `$set_once`.
    pub max_properties: usize,
    /// Nesting of arrays and objects inside one property value; a scalar is depth 0,
    /// `[1]` and `{"a": 1}` are depth 1.
    pub max_nesting_depth: usize,
    /// Any object key anywhere inside properties, `$set` and `$set_once`, in bytes.
    pub max_key_len: usize,
    /// Any string value anywhere inside properties, `$set` and `$set_once`, in bytes.
    pub max_string_value_len: usize,
    /// `distinct_id` after trimming whitespace, in bytes.
    pub max_distinct_id_len: usize,
    /// The event name, in bytes.
    pub max_event_name_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 20 * 1024 * 1024,
            max_decompressed_bytes: 100 * 1024 * 1024,
            max_events_per_batch: 10_000,
            max_event_bytes: 1024 * 1024,
            max_properties: 1000,
            max_nesting_depth: 10,
            max_key_len: 200,
            max_string_value_len: 64 * 1024,
            max_distinct_id_len: 200,
            max_event_name_len: 200,
        }
    }
}

/// Everything the ingest API needs to know beyond its sink and tenant directory.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub limits: Limits,
    /// Peers whose `X-Forwarded-For` header is believed (load balancers, reverse
    /// proxies). Empty means the socket peer is always the client.
    pub trusted_proxies: Vec<Cidr>,
    /// A MaxMind City database (GeoLite2-City or GeoIP2-City). `None` disables GeoIP.
    pub geoip_db: Option<PathBuf>,
    /// Events claiming to be further in the future than this are clamped to the
    /// receive time (and keep the claim in `$tally_clamped_timestamp`).
    pub max_future_skew: Duration,
    /// Capacity of the user-agent parse cache (entries). User agents repeat a lot,
    /// and parsing one costs tens of regex evaluations.
    pub user_agent_cache_size: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            trusted_proxies: Vec::new(),
            geoip_db: None,
            max_future_skew: Duration::from_secs(24 * 60 * 60),
            user_agent_cache_size: 4096,
        }
    }
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `fd00::/8`); a bare address means a
/// single host. IPv4-mapped IPv6 peers (`::ffff:10.1.2.3`) match IPv4 networks, because
/// dual-stack listeners report IPv4 clients that way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

/// A string that is not an address or CIDR network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR network {input:?}: {reason}")]
pub struct CidrParseError {
    input: String,
    reason: &'static str,
}

impl Cidr {
    /// A network from an address and prefix length; host bits are cleared.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, CidrParseError> {
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix_len > max {
            return Err(CidrParseError {
                input: format!("{addr}/{prefix_len}"),
                reason: "prefix length too long for the address family",
            });
        }
        let network = match addr {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(prefix_len))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix_len))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        };
        Ok(Self {
            network,
            prefix_len,
        })
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses become plain IPv4, so that one rule covers both ways a
/// dual-stack socket can report the same client.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl FromStr for Cidr {
    type Err = CidrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| CidrParseError {
            input: s.to_string(),
            reason,
        };
        let s = s.trim();
        match s.split_once('/') {
            None => {
                let addr: IpAddr = s.parse().map_err(|_| err("not an IP address"))?;
                let len = if addr.is_ipv4() { 32 } else { 128 };
                Cidr::new(addr, len)
            }
            Some((addr, len)) => {
                let addr: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
                let len: u8 = len
                    .parse()
                    .map_err(|_| err("prefix length is not a number"))?;
                Cidr::new(addr, len).map_err(|e| err(e.reason))
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_matches() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert_eq!(net.to_string(), "10.1.0.0/16");

        let host: Cidr = "192.168.1.7".parse().unwrap();
        assert!(host.contains("192.168.1.7".parse().unwrap()));
        assert!(!host.contains("192.168.1.8".parse().unwrap()));

        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("2001:db8::1".parse().unwrap()));

        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));

        // Host bits are cleared rather than refused: "10.1.2.3/8" means 10.0.0.0/8.
        let sloppy: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(sloppy.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn cidr_refuses_garbage() {
        for bad in ["", "10.0.0.0/33", "::/129", "ten/8", "10.0.0.0/x", "1.2.3"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn limits_deserialize_with_defaults() {
        let l: Limits = serde_json::from_str(r#"{"max_properties": 5}"#).unwrap();
        assert_eq!(l.max_properties, 5);
        assert_eq!(l.max_key_len, Limits::default().max_key_len);
        assert!(serde_json::from_str::<Limits>(r#"{"max_propertys": 5}"#).is_err());
    }
}
