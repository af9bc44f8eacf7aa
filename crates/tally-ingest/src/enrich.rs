//! Server-side enrichment of event properties: `$ip`, user-agent fields (`$browser`,
//! `$browser_version`, `$os`, `$os_version`, `$device_type`) and GeoIP fields
//! (`$geoip_*`).
//!
//! Enrichment never overwrites what the SDK sent: posthog-js computes its own
//! `$browser` and `$os`, and an SDK that sets `$ip` (a server relaying for a browser)
//! knows better than our socket. User-agent parses are cached in a bounded LRU because
//! a site's traffic comes from a few hundred distinct agents and a woothee parse runs
//! dozens of regexes. This module does not resolve the client address (see
//! [`crate::client_ip`]) and does not validate anything.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use maxminddb::geoip2;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tally_core::Properties;

use crate::config::{IngestConfig, canonical_ip};
use crate::error::{IngestError, Result};

/// User agents longer than this are not parsed: no real browser sends one, and the
/// cache should not hold multi-kilobyte keys an attacker chose.
const MAX_PARSED_USER_AGENT_LEN: usize = 1024;

/// What woothee made of a user agent, in PostHog's vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserAgentInfo {
    pub browser: Option<String>,
    pub browser_version: Option<String>,
    pub os: Option<String>,
    pub os_version: Option<String>,
    /// `Desktop`, `Mobile`, `Tablet`, `Console`, `TV` or `Bot`.
    pub device_type: Option<String>,
    /// Whether woothee recognised a crawler or HTTP library rather than a person's
    /// device.
    pub is_bot: bool,
}

impl UserAgentInfo {
    fn is_empty(&self) -> bool {
        self.browser.is_none() && self.os.is_none() && self.device_type.is_none()
    }
}

/// Location of an address, from a MaxMind City database.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GeoInfo {
    pub country_code: Option<String>,
    pub country_name: Option<String>,
    pub continent_code: Option<String>,
    pub continent_name: Option<String>,
    pub city_name: Option<String>,
    pub subdivision_1_code: Option<String>,
    pub subdivision_1_name: Option<String>,
    pub postal_code: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub time_zone: Option<String>,
}

/// Shared, thread-safe enrichment state: the user-agent cache and the GeoIP reader.
pub struct Enricher {
    parser: woothee::parser::Parser,
    user_agents: Mutex<LruCache<String, Arc<UserAgentInfo>>>,
    geoip: Option<maxminddb::Reader<Vec<u8>>>,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("user_agent_cache_len", &self.user_agents.lock().len())
            .field(
                "geoip",
                &self.geoip.as_ref().map(|r| &r.metadata.database_type),
            )
            .finish()
    }
}

impl Enricher {
    /// Builds the enricher, loading the GeoIP database when one is configured. A
    /// configured database that cannot be read is an error, not a silent fallback:
    /// the operator asked for GeoIP and would otherwise get none without noticing.
    pub fn new(config: &IngestConfig) -> Result<Self> {
        let geoip = match &config.geoip_db {
            None => None,
            Some(path) => {
                let reader = maxminddb::Reader::open_readfile(path).map_err(|source| {
                    IngestError::GeoIpDatabase {
                        path: path.clone(),
                        source,
                    }
                })?;
                tracing::info!(
                    path = %path.display(),
                    database_type = %reader.metadata.database_type,
                    build_epoch = reader.metadata.build_epoch,
                    "loaded GeoIP database"
                );
                Some(reader)
            }
        };
        let capacity = NonZeroUsize::new(config.user_agent_cache_size).unwrap_or(NonZeroUsize::MIN);
        Ok(Self {
            parser: woothee::parser::Parser::new(),
            user_agents: Mutex::new(LruCache::new(capacity)),
            geoip,
        })
    }

    /// Whether a GeoIP database is loaded.
    pub fn has_geoip(&self) -> bool {
        self.geoip.is_some()
    }

    /// Parses a user agent, through the cache. `None` when woothee recognises nothing.
    pub fn parse_user_agent(&self, user_agent: &str) -> Option<Arc<UserAgentInfo>> {
        let user_agent = user_agent.trim();
        if user_agent.is_empty() || user_agent.len() > MAX_PARSED_USER_AGENT_LEN {
            return None;
        }
        if let Some(hit) = self.user_agents.lock().get(user_agent) {
            metrics::counter!("tally_ingest_user_agent_cache_total", "result" => "hit")
                .increment(1);
            return (!hit.is_empty()).then(|| hit.clone());
        }
        metrics::counter!("tally_ingest_user_agent_cache_total", "result" => "miss").increment(1);
        // Parse outside the lock: woothee is the slow part.
        let info = Arc::new(self.parse_uncached(user_agent));
        self.user_agents
            .lock()
            .put(user_agent.to_string(), info.clone());
        (!info.is_empty()).then_some(info)
    }

    fn parse_uncached(&self, user_agent: &str) -> UserAgentInfo {
        let Some(parsed) = self.parser.parse(user_agent) else {
            return UserAgentInfo::default();
        };
        let known = |s: &str| (!s.is_empty() && s != "UNKNOWN").then(|| s.to_string());
        let is_bot = parsed.category == "crawler";
        let is_ios_device = matches!(parsed.os, "iPhone" | "iPad" | "iPod" | "iOS");
        let os = match parsed.os {
            "Mac OSX" => Some("Mac OS X".to_string()),
            "ChromeOS" => Some("Chrome OS".to_string()),
            "iPhone" | "iPad" | "iPod" => Some("iOS".to_string()),
            os if os.starts_with("Windows") && !os.starts_with("Windows Phone") => {
                Some("Windows".to_string())
            }
            os => known(os),
        };
        let os_version = match parsed.os {
            // woothee folds the Windows version into the OS name ("Windows 10").
            os if os.starts_with("Windows ") && !os.starts_with("Windows Phone") => {
                known(os.trim_start_matches("Windows ")).or_else(|| known(&parsed.os_version))
            }
            _ => known(&parsed.os_version),
        };
        let browser = match parsed.name {
            "Safari" if is_ios_device => Some("Mobile Safari".to_string()),
            name => known(name),
        };
        let is_tablet = parsed.os == "iPad"
            || (parsed.os == "Android" && !user_agent.contains("Mobile"))
            || user_agent.contains("Tablet");
        let device_type = match parsed.category {
            "crawler" => Some("Bot"),
            "pc" => Some("Desktop"),
            "smartphone" if is_tablet => Some("Tablet"),
            "smartphone" | "mobilephone" => Some("Mobile"),
            "appliance"
                if parsed.os.starts_with("Nintendo")
                    || parsed.os.starts_with("PlayStation")
                    || parsed.os.starts_with("Xbox") =>
            {
                Some("Console")
            }
            "appliance" => Some("TV"),
            _ => None,
        };
        UserAgentInfo {
            browser,
            browser_version: known(parsed.version),
            os,
            os_version,
            device_type: device_type.map(str::to_string),
            is_bot,
        }
    }

    /// Looks an address up in the GeoIP database. `None` without a database, for
    /// private addresses, and for addresses the database does not know.
    pub fn lookup_geo(&self, ip: IpAddr) -> Option<GeoInfo> {
        let reader = self.geoip.as_ref()?;
        let ip = canonical_ip(ip);
        let result = match reader.lookup(ip) {
            Ok(r) => r,
            Err(e) => {
                // An IPv6 address in an IPv4-only database, or a corrupt file; the
                // event is still good, it just has no location.
                tracing::debug!(%ip, error = %e, "GeoIP lookup failed");
                return None;
            }
        };
        let city = match result.decode::<geoip2::City>() {
            Ok(Some(city)) => city,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(%ip, error = %e, "GeoIP record could not be decoded");
                return None;
            }
        };
        let s = |v: Option<&str>| v.map(str::to_string);
        let first_subdivision = city.subdivisions.first();
        Some(GeoInfo {
            country_code: s(city.country.iso_code),
            country_name: s(city.country.names.english),
            continent_code: s(city.continent.code),
            continent_name: s(city.continent.names.english),
            city_name: s(city.city.names.english),
            subdivision_1_code: s(first_subdivision.and_then(|d| d.iso_code)),
            subdivision_1_name: s(first_subdivision.and_then(|d| d.names.english)),
            postal_code: s(city.postal.code),
            latitude: city.location.latitude,
            longitude: city.location.longitude,
            time_zone: s(city.location.time_zone),
        })
    }
}

/// The inputs to enrichment for one event.
pub(crate) struct EnrichInput<'a> {
    pub client_ip: Option<IpAddr>,
    /// The request's `User-Agent` header, used when the event carries no
    /// `$raw_user_agent` of its own.
    pub header_user_agent: Option<&'a str>,
}

/// Per-request memo of the last GeoIP lookup: every event of a request usually shares
/// one address, so a batch of 1000 costs one lookup.
#[derive(Default)]
pub(crate) struct GeoMemo {
    last: Option<(IpAddr, Option<GeoInfo>)>,
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.trim(), "true" | "1" | "True" | "TRUE"),
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    }
}

fn set_if_absent(props: &mut Properties, key: &str, value: Option<Value>) {
    if let Some(value) = value
        && props.get(key).is_none_or(Value::is_null)
    {
        props.insert(key.to_string(), value);
    }
}

impl Enricher {
    /// Adds `$ip`, user-agent and GeoIP properties that the event does not already
    /// carry.
    pub(crate) fn enrich(
        &self,
        props: &mut Properties,
        input: &EnrichInput<'_>,
        memo: &mut GeoMemo,
    ) {
        let geoip_disabled = truthy(props.get("$geoip_disable"));

        if !geoip_disabled {
            set_if_absent(
                props,
                "$ip",
                input.client_ip.map(|ip| json!(ip.to_string())),
            );
        }

        self.enrich_user_agent(props, input.header_user_agent);

        if geoip_disabled || self.geoip.is_none() {
            return;
        }
        // The event's own `$ip` wins: a backend relaying for a browser sets it.
        let ip = props
            .get("$ip")
            .and_then(Value::as_str)
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
            .or(input.client_ip);
        let Some(ip) = ip else { return };
        let geo = match &memo.last {
            Some((last_ip, geo)) if *last_ip == ip => geo.clone(),
            _ => {
                let geo = self.lookup_geo(ip);
                memo.last = Some((ip, geo.clone()));
                geo
            }
        };
        if let Some(geo) = geo {
            let s = |v: Option<String>| v.map(Value::String);
            let f = |v: Option<f64>| v.and_then(serde_json::Number::from_f64).map(Value::Number);
            set_if_absent(props, "$geoip_country_code", s(geo.country_code));
            set_if_absent(props, "$geoip_country_name", s(geo.country_name));
            set_if_absent(props, "$geoip_continent_code", s(geo.continent_code));
            set_if_absent(props, "$geoip_continent_name", s(geo.continent_name));
            set_if_absent(props, "$geoip_city_name", s(geo.city_name));
            set_if_absent(
                props,
                "$geoip_subdivision_1_code",
                s(geo.subdivision_1_code),
            );
            set_if_absent(
                props,
                "$geoip_subdivision_1_name",
                s(geo.subdivision_1_name),
            );
            set_if_absent(props, "$geoip_postal_code", s(geo.postal_code));
            set_if_absent(props, "$geoip_latitude", f(geo.latitude));
            set_if_absent(props, "$geoip_longitude", f(geo.longitude));
            set_if_absent(props, "$geoip_time_zone", s(geo.time_zone));
        }
    }

    fn enrich_user_agent(&self, props: &mut Properties, header_user_agent: Option<&str>) {
        let own = props
            .get("$raw_user_agent")
            .and_then(Value::as_str)
            .map(str::to_string);
        let (user_agent, from_header) = match own {
            Some(ua) => (ua, false),
            None => match header_user_agent {
                Some(ua) => (ua.to_string(), true),
                None => return,
            },
        };
        let Some(info) = self.parse_user_agent(&user_agent) else {
            return;
        };
        // A server-side SDK's header names its HTTP library ("Go-http-client/1.1"),
        // which woothee calls a crawler. That describes the relay, not the person,
        // so header-derived bot results are not attached to the event.
        if from_header && info.is_bot {
            return;
        }
        let s = |v: &Option<String>| v.clone().map(Value::String);
        set_if_absent(props, "$browser", s(&info.browser));
        set_if_absent(props, "$browser_version", s(&info.browser_version));
        set_if_absent(props, "$os", s(&info.os));
        set_if_absent(props, "$os_version", s(&info.os_version));
        set_if_absent(props, "$device_type", s(&info.device_type));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enricher() -> Enricher {
        Enricher::new(&IngestConfig {
            user_agent_cache_size: 2,
            ..Default::default()
        })
        .unwrap()
    }

    const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 \
                              (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 \
                          (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
    const IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 \
                        (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1";
    const FIREFOX_WIN: &str =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0";
    const ANDROID_PHONE: &str = "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 \
                                 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

    #[test]
    fn parses_common_agents() {
        let e = enricher();
        let chrome = e.parse_user_agent(CHROME_MAC).unwrap();
        assert_eq!(chrome.browser.as_deref(), Some("Chrome"));
        assert_eq!(chrome.browser_version.as_deref(), Some("120.0.0.0"));
        assert_eq!(chrome.os.as_deref(), Some("Mac OS X"));
        assert_eq!(chrome.device_type.as_deref(), Some("Desktop"));

        let iphone = e.parse_user_agent(IPHONE).unwrap();
        assert_eq!(iphone.browser.as_deref(), Some("Mobile Safari"));
        assert_eq!(iphone.os.as_deref(), Some("iOS"));
        assert_eq!(iphone.device_type.as_deref(), Some("Mobile"));

        let ipad = e.parse_user_agent(IPAD).unwrap();
        assert_eq!(ipad.device_type.as_deref(), Some("Tablet"));

        let firefox = e.parse_user_agent(FIREFOX_WIN).unwrap();
        assert_eq!(firefox.browser.as_deref(), Some("Firefox"));
        assert_eq!(firefox.os.as_deref(), Some("Windows"));
        assert_eq!(firefox.os_version.as_deref(), Some("10"));

        let android = e.parse_user_agent(ANDROID_PHONE).unwrap();
        assert_eq!(android.os.as_deref(), Some("Android"));
        assert_eq!(android.device_type.as_deref(), Some("Mobile"));

        let bot = e.parse_user_agent(GOOGLEBOT).unwrap();
        assert!(bot.is_bot);
        assert_eq!(bot.device_type.as_deref(), Some("Bot"));

        assert!(e.parse_user_agent("").is_none());
        assert!(e.parse_user_agent(&"x".repeat(5000)).is_none());
    }

    #[test]
    fn cache_is_bounded_and_consistent() {
        let e = enricher();
        for ua in [CHROME_MAC, IPHONE, FIREFOX_WIN, CHROME_MAC, IPHONE] {
            let fresh = e.parse_uncached(ua);
            assert_eq!(*e.parse_user_agent(ua).unwrap(), fresh);
        }
        assert!(e.user_agents.lock().len() <= 2);
    }

    #[test]
    fn enrichment_respects_sdk_values_and_geoip_disable() {
        let e = enricher();
        let input = EnrichInput {
            client_ip: Some("198.51.100.7".parse().unwrap()),
            header_user_agent: Some(FIREFOX_WIN),
        };
        let mut memo = GeoMemo::default();

        let mut props = Properties::new();
        props.insert("$browser".into(), json!("MyBrowser"));
        e.enrich(&mut props, &input, &mut memo);
        assert_eq!(props["$ip"], "198.51.100.7");
        assert_eq!(props["$browser"], "MyBrowser", "SDK value kept");
        assert_eq!(
            props["$os"], "Windows",
            "missing values filled from the header"
        );

        let mut props = Properties::new();
        props.insert("$ip".into(), json!("203.0.113.1"));
        props.insert("$raw_user_agent".into(), json!(IPHONE));
        e.enrich(&mut props, &input, &mut memo);
        assert_eq!(props["$ip"], "203.0.113.1");
        assert_eq!(props["$os"], "iOS", "$raw_user_agent beats the header");

        let mut props = Properties::new();
        props.insert("$geoip_disable".into(), json!(true));
        e.enrich(&mut props, &input, &mut memo);
        assert!(!props.contains_key("$ip"));

        // A backend SDK's HTTP library is not a bot visiting the site.
        let mut props = Properties::new();
        e.enrich(
            &mut props,
            &EnrichInput {
                client_ip: None,
                header_user_agent: Some("Googlebot/2.1 (+http://www.google.com/bot.html)"),
            },
            &mut memo,
        );
        assert!(!props.contains_key("$device_type"));
    }

    #[test]
    fn missing_geoip_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Enricher::new(&IngestConfig {
            geoip_db: Some(dir.path().join("nope.mmdb")),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, IngestError::GeoIpDatabase { .. }));
    }
}
