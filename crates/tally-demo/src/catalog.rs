//! The fixed vocabulary of the demo world: countries, devices, acquisition channels,
//! pages, app screens, in-app actions, names and company words.
//!
//! Everything here is static data plus the weighted distributions over it. It owns no
//! randomness and no per-tenant state: the simulation (`person`) samples from these
//! tables, and the event builder (`build`) turns the sampled indices into property
//! values. Weights are relative, not percentages.

use std::sync::LazyLock;

use crate::sample::Weighted;

/// A visitor's country, with the attributes that follow from it.
pub(crate) struct Country {
    pub code: &'static str,
    pub name: &'static str,
    pub continent: &'static str,
    pub timezone: &'static str,
    /// Standard-time offset; daylight saving is ignored, the diurnal curve is broad.
    pub utc_offset_minutes: i32,
    pub cities: &'static [&'static str],
    pub locale: &'static str,
    pub currency: &'static str,
    pub weight: f64,
    /// Multiplier on sign-up and purchase probability, so that a breakdown by
    /// country shows differences worth looking at.
    pub conversion: f64,
}

macro_rules! country {
    ($code:literal, $name:literal, $cont:literal, $tz:literal, $off:literal, [$($city:literal),+],
     $locale:literal, $cur:literal, $w:literal, $conv:literal) => {
        Country {
            code: $code,
            name: $name,
            continent: $cont,
            timezone: $tz,
            utc_offset_minutes: $off,
            cities: &[$($city),+],
            locale: $locale,
            currency: $cur,
            weight: $w,
            conversion: $conv,
        }
    };
}

pub(crate) const COUNTRIES: &[Country] = &[
    country!(
        "US",
        "United States",
        "NA",
        "America/New_York",
        -300,
        ["New York", "San Francisco", "Austin", "Chicago", "Seattle"],
        "en-US",
        "USD",
        30.0,
        1.2
    ),
    country!(
        "IN",
        "India",
        "AS",
        "Asia/Kolkata",
        330,
        ["Bengaluru", "Mumbai", "Delhi", "Pune"],
        "en-IN",
        "USD",
        9.0,
        0.55
    ),
    country!(
        "GB",
        "United Kingdom",
        "EU",
        "Europe/London",
        0,
        ["London", "Manchester", "Edinburgh"],
        "en-GB",
        "GBP",
        8.0,
        1.15
    ),
    country!(
        "DE",
        "Germany",
        "EU",
        "Europe/Berlin",
        60,
        ["Berlin", "Munich", "Hamburg"],
        "de-DE",
        "EUR",
        7.0,
        1.05
    ),
    country!(
        "BR",
        "Brazil",
        "SA",
        "America/Sao_Paulo",
        -180,
        ["São Paulo", "Rio de Janeiro"],
        "pt-BR",
        "USD",
        5.0,
        0.7
    ),
    country!(
        "FR",
        "France",
        "EU",
        "Europe/Paris",
        60,
        ["Paris", "Lyon"],
        "fr-FR",
        "EUR",
        5.0,
        0.95
    ),
    country!(
        "CA",
        "Canada",
        "NA",
        "America/Toronto",
        -300,
        ["Toronto", "Vancouver", "Montreal"],
        "en-CA",
        "USD",
        4.5,
        1.1
    ),
    country!(
        "NL",
        "Netherlands",
        "EU",
        "Europe/Amsterdam",
        60,
        ["Amsterdam", "Rotterdam"],
        "nl-NL",
        "EUR",
        3.0,
        1.1
    ),
    country!(
        "JP",
        "Japan",
        "AS",
        "Asia/Tokyo",
        540,
        ["Tokyo", "Osaka"],
        "ja-JP",
        "USD",
        3.0,
        0.9
    ),
    country!(
        "AU",
        "Australia",
        "OC",
        "Australia/Sydney",
        600,
        ["Sydney", "Melbourne"],
        "en-AU",
        "USD",
        3.0,
        1.1
    ),
    country!(
        "ES",
        "Spain",
        "EU",
        "Europe/Madrid",
        60,
        ["Madrid", "Barcelona"],
        "es-ES",
        "EUR",
        2.5,
        0.85
    ),
    country!(
        "IT",
        "Italy",
        "EU",
        "Europe/Rome",
        60,
        ["Milan", "Rome"],
        "it-IT",
        "EUR",
        2.0,
        0.85
    ),
    country!(
        "PL",
        "Poland",
        "EU",
        "Europe/Warsaw",
        60,
        ["Warsaw", "Kraków"],
        "pl-PL",
        "EUR",
        2.0,
        0.8
    ),
    country!(
        "SE",
        "Sweden",
        "EU",
        "Europe/Stockholm",
        60,
        ["Stockholm", "Gothenburg"],
        "sv-SE",
        "EUR",
        1.5,
        1.15
    ),
    country!(
        "MX",
        "Mexico",
        "NA",
        "America/Mexico_City",
        -360,
        ["Mexico City", "Guadalajara"],
        "es-MX",
        "USD",
        1.5,
        0.65
    ),
    country!(
        "ID",
        "Indonesia",
        "AS",
        "Asia/Jakarta",
        420,
        ["Jakarta", "Surabaya"],
        "id-ID",
        "USD",
        1.5,
        0.5
    ),
    country!(
        "SG",
        "Singapore",
        "AS",
        "Asia/Singapore",
        480,
        ["Singapore"],
        "en-SG",
        "USD",
        1.0,
        1.2
    ),
    country!(
        "KR",
        "South Korea",
        "AS",
        "Asia/Seoul",
        540,
        ["Seoul", "Busan"],
        "ko-KR",
        "USD",
        1.0,
        0.9
    ),
    country!(
        "IE",
        "Ireland",
        "EU",
        "Europe/Dublin",
        0,
        ["Dublin", "Cork"],
        "en-IE",
        "EUR",
        1.0,
        1.1
    ),
    country!(
        "CH",
        "Switzerland",
        "EU",
        "Europe/Zurich",
        60,
        ["Zurich", "Geneva"],
        "de-CH",
        "EUR",
        1.0,
        1.25
    ),
    country!(
        "NG",
        "Nigeria",
        "AF",
        "Africa/Lagos",
        60,
        ["Lagos", "Abuja"],
        "en-NG",
        "USD",
        1.0,
        0.45
    ),
    country!(
        "ZA",
        "South Africa",
        "AF",
        "Africa/Johannesburg",
        120,
        ["Cape Town", "Johannesburg"],
        "en-ZA",
        "USD",
        0.8,
        0.7
    ),
    country!(
        "TR",
        "Turkey",
        "AS",
        "Europe/Istanbul",
        180,
        ["Istanbul", "Ankara"],
        "tr-TR",
        "USD",
        1.0,
        0.6
    ),
    country!(
        "UA",
        "Ukraine",
        "EU",
        "Europe/Kyiv",
        120,
        ["Kyiv", "Lviv"],
        "uk-UA",
        "USD",
        1.0,
        0.7
    ),
    country!(
        "AR",
        "Argentina",
        "SA",
        "America/Argentina/Buenos_Aires",
        -180,
        ["Buenos Aires", "Córdoba"],
        "es-AR",
        "USD",
        0.8,
        0.6
    ),
    country!(
        "VN",
        "Vietnam",
        "AS",
        "Asia/Ho_Chi_Minh",
        420,
        ["Ho Chi Minh City", "Hanoi"],
        "vi-VN",
        "USD",
        0.8,
        0.5
    ),
];

pub(crate) static COUNTRY_DIST: LazyLock<Weighted> =
    LazyLock::new(|| Weighted::new(COUNTRIES.iter().map(|c| c.weight)));

/// Whether events from this platform are page views in a browser or screens in a
/// native app (which changes the event name and most properties).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlatformKind {
    Web,
    App,
}

/// A device/OS/browser (or native app) combination a person uses consistently.
pub(crate) struct Platform {
    pub kind: PlatformKind,
    pub device_type: &'static str,
    pub os: &'static str,
    pub os_versions: &'static [&'static str],
    /// Browser name; empty for native apps.
    pub browser: &'static str,
    /// Browser versions (web) or unused (app).
    pub browser_versions: &'static [&'static str],
    /// `(manufacturer, model)` for native apps; empty for web.
    pub models: &'static [(&'static str, &'static str)],
    pub lib: &'static str,
    pub lib_version: &'static str,
    pub screens: &'static [(u16, u16)],
    /// User agent with `{os}` (dotted), `{os_}` (underscored) and `{bv}` placeholders.
    pub user_agent: &'static str,
    /// Share among web visitors (web platforms) or among app users (app platforms).
    pub weight: f64,
}

const CHROME: &[&str] = &["126.0.0.0", "127.0.0.0", "128.0.0.0", "129.0.0.0"];
const FIREFOX: &[&str] = &["127.0", "128.0", "129.0"];
const SAFARI: &[&str] = &["17.5", "17.6", "18.0", "18.1"];
const MAC_SCREENS: &[(u16, u16)] = &[(1440, 900), (1512, 982), (1728, 1117), (2560, 1440)];
const PC_SCREENS: &[(u16, u16)] = &[(1920, 1080), (1366, 768), (1536, 864), (2560, 1440)];
const WEB_LIB: &str = "web";
const WEB_LIB_VERSION: &str = "1.166.0";

pub(crate) const PLATFORMS: &[Platform] = &[
    Platform {
        kind: PlatformKind::Web,
        device_type: "Desktop",
        os: "Mac OS X",
        os_versions: &["14.5.0", "14.6.1", "15.1.0", "15.3.0"],
        browser: "Chrome",
        browser_versions: CHROME,
        models: &[],
        lib: WEB_LIB,
        lib_version: WEB_LIB_VERSION,
        screens: MAC_SCREENS,
        user_agent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{bv} Safari/537.36",
        weight: 22.0,
    },
    Platform {
        kind: PlatformKind::Web,
        device_type: "Desktop",
        os: "Mac OS X",
        os_versions: &["14.5.0", "14.6.1", "15.1.0"],
        browser: "Safari",
        browser_versions: SAFARI,
        models: &[],
        lib: WEB_LIB,
        lib_version: WEB_LIB_VERSION,
        screens: MAC_SCREENS,
        user_agent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{bv} Safari/605.1.15",
        weight: 8.0,
    },
    Platform {
        kind: PlatformKind::Web,
        device_type: "Desktop",
        os: "Mac OS X",
        os_versions: &["14.5.0", "15.1.0"],
        browser: "Firefox",
        browser_versions: FIREFOX,
        models: &[],
        lib: WEB_LIB,
        lib_version: WEB_LIB_VERSION,
        screens: MAC_SCREENS,
        user_agent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:{bv}) Gecko/20100101 Firefox/{bv}",
        weight: 3.0,
    },
    Platform {
        kind: PlatformKind::Web,
        device_type: "Desktop",
        os: "Windows",
        os_versions: &["10.0", "11.0"],
        browser: "Chrome",
        browser_versions: CHROME,
        models: &[],
        lib: WEB_LIB,
        lib_version: WEB_LIB_VERSION,
        screens: PC_SCREENS,
        user_agent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{bv} Safari/537.36",
        weight: 20.0,
    },
    Platform {
        kind: PlatformKind::Web,
        device_type: "Desktop",
        os: "Windows",
        os_versions: &["10.0", "11.0"],
        browser: "Microsoft Edge",
        browser_versions: &["126.0.0.0", "127.0.0.0", "128.0.0.0"],
        models: &[],
        lib: WEB_LIB,
        lib_version: WEB_LIB_VERSION,
        screens: PC_SCREENS,
        user_agent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{bv} Safari/537.36 Edg/{bv}",
        weight: 7.0,
    },
    Platform {
        kind: PlatformKind::Web,
        device_type: "Desktop",
        os: "Windows",
        os_versions: &["10.0", "11.0"],
        browser: "Firefox",
        browser_versions: FIREFOX,
        models: &[],
        lib: WEB_LIB,
        lib_version: WEB_LIB_VERSION,
        screens: PC_SCREENS,
        user_agent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{bv}) Gecko/20100101 Firefox/{bv}",
        weight: 3.0,
    },
    Platform {
        kind: PlatformKind::Web,
        device_type: "Desktop",
        os: "Linux",
        os_versions: &["x86_64"],
        browser: "Chrome",
        browser_versions: CHROME,
        models: &[],
        lib: WEB_LIB,
        lib_version: WEB_LIB_VERSION,
        screens: PC_SCREENS,
        user_agent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{bv} Safari/537.36",
        weight: 4.0,
    },
    Platform {
        kind: PlatformKind::Web,
        device_type: "Mobile",
        os: "iOS",
        os_versions: &["17.5.1", "17.6.1", "18.0.1", "18.1.1"],
        browser: "Mobile Safari",
        browser_versions: SAFARI,
        models: &[],
        lib: WEB_LIB,
        lib_version: WEB_LIB_VERSION,
        screens: &[(390, 844), (393, 852), (430, 932), (375, 667)],
        user_agent: "Mozilla/5.0 (iPhone; CPU iPhone OS {os_} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{bv} Mobile/15E148 Safari/604.1",
        weight: 14.0,
    },
    Platform {
        kind: PlatformKind::Web,
        device_type: "Mobile",
        os: "Android",
        os_versions: &["13.0.0", "14.0.0", "15.0.0"],
        browser: "Chrome",
        browser_versions: CHROME,
        models: &[],
        lib: WEB_LIB,
        lib_version: WEB_LIB_VERSION,
        screens: &[(412, 915), (360, 800), (384, 854)],
        user_agent: "Mozilla/5.0 (Linux; Android {os}; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{bv} Mobile Safari/537.36",
        weight: 11.0,
    },
    Platform {
        kind: PlatformKind::Web,
        device_type: "Tablet",
        os: "iOS",
        os_versions: &["17.6.1", "18.1.1"],
        browser: "Mobile Safari",
        browser_versions: SAFARI,
        models: &[],
        lib: WEB_LIB,
        lib_version: WEB_LIB_VERSION,
        screens: &[(820, 1180), (1024, 1366)],
        user_agent: "Mozilla/5.0 (iPad; CPU OS {os_} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{bv} Mobile/15E148 Safari/604.1",
        weight: 3.0,
    },
    Platform {
        kind: PlatformKind::App,
        device_type: "Mobile",
        os: "iOS",
        os_versions: &["17.6.1", "18.0.1", "18.1.1"],
        browser: "",
        browser_versions: &[],
        models: &[
            ("Apple", "iPhone15,2"),
            ("Apple", "iPhone16,1"),
            ("Apple", "iPhone14,5"),
        ],
        lib: "posthog-ios",
        lib_version: "3.13.0",
        screens: &[(393, 852), (430, 932), (390, 844)],
        user_agent: "",
        weight: 55.0,
    },
    Platform {
        kind: PlatformKind::App,
        device_type: "Mobile",
        os: "Android",
        os_versions: &["13", "14", "15"],
        browser: "",
        browser_versions: &[],
        models: &[
            ("Samsung", "SM-S921B"),
            ("Google", "Pixel 8"),
            ("Xiaomi", "23049PCD8G"),
        ],
        lib: "posthog-android",
        lib_version: "3.8.0",
        screens: &[(412, 915), (360, 800), (384, 854)],
        user_agent: "",
        weight: 45.0,
    },
];

/// Platform indices by kind, for sampling within one kind.
pub(crate) static WEB_PLATFORMS: LazyLock<(Vec<u8>, Weighted)> =
    LazyLock::new(|| platforms_of(PlatformKind::Web));
pub(crate) static APP_PLATFORMS: LazyLock<(Vec<u8>, Weighted)> =
    LazyLock::new(|| platforms_of(PlatformKind::App));

fn platforms_of(kind: PlatformKind) -> (Vec<u8>, Weighted) {
    let indices: Vec<u8> = (0..PLATFORMS.len() as u8)
        .filter(|&i| PLATFORMS[i as usize].kind == kind)
        .collect();
    let weights = Weighted::new(indices.iter().map(|&i| PLATFORMS[i as usize].weight));
    (indices, weights)
}

/// Library reported by server-side events (purchases and invitations are tracked by
/// the backend, which is how real products avoid ad blockers on money events).
pub(crate) const SERVER_LIB: &str = "posthog-node";
pub(crate) const SERVER_LIB_VERSION: &str = "4.2.1";

/// How a person first found the product.
pub(crate) struct Channel {
    /// `utm_source`, when the landing URL carries UTM parameters.
    pub utm_source: Option<&'static str>,
    pub utm_medium: &'static str,
    pub campaigns: &'static [&'static str],
    /// `$referrer` of the first visit (`$direct` when the browser sent none).
    pub referrer: &'static str,
    pub referring_domain: &'static str,
    pub weight: f64,
    /// Multiplier on sign-up and purchase probability.
    pub conversion: f64,
    /// Where visitors from this channel land on their first visit.
    pub landing: LandingKind,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum LandingKind {
    Home,
    Blog,
    Docs,
    Pricing,
}

pub(crate) const DIRECT: &str = "$direct";

pub(crate) const CHANNELS: &[Channel] = &[
    Channel {
        utm_source: None,
        utm_medium: "",
        campaigns: &[],
        referrer: DIRECT,
        referring_domain: DIRECT,
        weight: 30.0,
        conversion: 1.0,
        landing: LandingKind::Home,
    },
    Channel {
        utm_source: None,
        utm_medium: "",
        campaigns: &[],
        referrer: "https://www.google.com/",
        referring_domain: "www.google.com",
        weight: 22.0,
        conversion: 1.0,
        landing: LandingKind::Docs,
    },
    Channel {
        utm_source: Some("google"),
        utm_medium: "cpc",
        campaigns: &["brand_search", "competitor_keywords", "analytics_generic"],
        referrer: "https://www.google.com/",
        referring_domain: "www.google.com",
        weight: 10.0,
        conversion: 0.9,
        landing: LandingKind::Pricing,
    },
    Channel {
        utm_source: Some("twitter"),
        utm_medium: "social",
        campaigns: &["launch_week", "feature_thread"],
        referrer: "https://t.co/",
        referring_domain: "t.co",
        weight: 6.0,
        conversion: 0.6,
        landing: LandingKind::Blog,
    },
    Channel {
        utm_source: Some("linkedin"),
        utm_medium: "social",
        campaigns: &["b2b_awareness", "case_study_promo"],
        referrer: "https://www.linkedin.com/",
        referring_domain: "www.linkedin.com",
        weight: 5.0,
        conversion: 1.25,
        landing: LandingKind::Home,
    },
    Channel {
        utm_source: Some("newsletter"),
        utm_medium: "email",
        campaigns: &["monthly_digest", "product_update", "onboarding_drip"],
        referrer: DIRECT,
        referring_domain: DIRECT,
        weight: 7.0,
        conversion: 1.5,
        landing: LandingKind::Blog,
    },
    Channel {
        utm_source: Some("producthunt"),
        utm_medium: "referral",
        campaigns: &["launch_day"],
        referrer: "https://www.producthunt.com/",
        referring_domain: "www.producthunt.com",
        weight: 4.0,
        conversion: 0.8,
        landing: LandingKind::Home,
    },
    Channel {
        utm_source: None,
        utm_medium: "",
        campaigns: &[],
        referrer: "https://news.ycombinator.com/",
        referring_domain: "news.ycombinator.com",
        weight: 5.0,
        conversion: 0.85,
        landing: LandingKind::Blog,
    },
    Channel {
        utm_source: Some("partner"),
        utm_medium: "referral",
        campaigns: &["agency_program", "integration_marketplace"],
        referrer: "https://partners.example.org/",
        referring_domain: "partners.example.org",
        weight: 3.0,
        conversion: 1.8,
        landing: LandingKind::Pricing,
    },
    Channel {
        utm_source: None,
        utm_medium: "",
        campaigns: &[],
        referrer: "https://github.com/",
        referring_domain: "github.com",
        weight: 4.0,
        conversion: 1.1,
        landing: LandingKind::Docs,
    },
    Channel {
        utm_source: None,
        utm_medium: "",
        campaigns: &[],
        referrer: "https://www.bing.com/",
        referring_domain: "www.bing.com",
        weight: 4.0,
        conversion: 0.95,
        landing: LandingKind::Docs,
    },
];

pub(crate) static CHANNEL_DIST: LazyLock<Weighted> =
    LazyLock::new(|| Weighted::new(CHANNELS.iter().map(|c| c.weight)));

pub(crate) struct Page {
    pub path: String,
    pub title: String,
}

/// All pages of a demo tenant's site, with the distributions visitors browse by.
pub(crate) struct PageCatalog {
    pub pages: Vec<Page>,
    /// Anonymous browsing (marketing site, docs, blog).
    pub anonymous: Weighted,
    /// Signed-in browsing (mostly the app, some docs).
    pub signed_in: Weighted,
    pub home: u16,
    pub pricing: u16,
    pub signup: u16,
    pub login: u16,
    pub new_project: u16,
    pub billing: u16,
    pub docs: Vec<u16>,
    pub blog: Vec<u16>,
}

const MARKETING_PAGES: &[(&str, &str, f64, f64)] = &[
    // (path, title, anonymous weight, signed-in weight)
    ("/", "Home", 14.0, 1.0),
    ("/pricing", "Pricing", 12.0, 2.0),
    ("/features", "Features", 7.0, 0.5),
    ("/customers", "Customers", 3.0, 0.2),
    ("/about", "About us", 2.0, 0.1),
    ("/changelog", "Changelog", 3.0, 2.0),
    ("/careers", "Careers", 1.0, 0.1),
    ("/contact-sales", "Contact sales", 1.5, 0.3),
    ("/signup", "Sign up", 4.0, 0.0),
    ("/login", "Log in", 3.0, 0.5),
];

const DOC_PAGES: &[(&str, &str)] = &[
    ("getting-started/installation", "Installation"),
    ("getting-started/quickstart", "Quickstart"),
    ("getting-started/concepts", "Core concepts"),
    ("sdks/javascript", "JavaScript SDK"),
    ("sdks/react", "React SDK"),
    ("sdks/node", "Node.js SDK"),
    ("sdks/python", "Python SDK"),
    ("sdks/ios", "iOS SDK"),
    ("sdks/android", "Android SDK"),
    ("api/capture", "Capture API"),
    ("api/query", "Query API"),
    ("api/authentication", "API authentication"),
    ("guides/funnels", "Building funnels"),
    ("guides/retention", "Measuring retention"),
    ("guides/identify-users", "Identifying users"),
    ("guides/group-analytics", "Group analytics"),
    ("guides/data-export", "Exporting data"),
    ("self-hosting/deploy", "Deploying"),
    ("self-hosting/upgrade", "Upgrading"),
    ("self-hosting/backups", "Backups"),
];

const BLOG_POSTS: &[(&str, &str)] = &[
    ("product-analytics-101", "Product analytics 101"),
    ("how-we-cut-churn-by-30-percent", "How we cut churn by 30%"),
    ("funnels-that-lie", "Funnels that lie"),
    ("retention-curves-explained", "Retention curves, explained"),
    ("self-hosting-is-back", "Self-hosting is back"),
    ("event-naming-conventions", "Event naming conventions"),
    ("north-star-metrics", "Picking a north-star metric"),
    ("ab-testing-pitfalls", "A/B testing pitfalls"),
    ("launch-week-recap", "Launch week recap"),
    ("engineering-columnar-storage", "Why columnar storage"),
    (
        "customer-story-fintech",
        "Customer story: a fintech scale-up",
    ),
    ("privacy-first-analytics", "Privacy-first analytics"),
    ("sql-for-product-managers", "SQL for product managers"),
    ("activation-metrics", "Finding your activation metric"),
    ("group-analytics-for-b2b", "Group analytics for B2B"),
    ("pricing-page-experiments", "Pricing page experiments"),
];

const APP_PAGES: &[(&str, &str, f64)] = &[
    ("/app/dashboard", "Dashboard", 20.0),
    ("/app/insights", "Insights", 14.0),
    ("/app/insights/new", "New insight", 6.0),
    ("/app/events", "Events", 10.0),
    ("/app/persons", "Persons", 6.0),
    ("/app/funnels", "Funnels", 6.0),
    ("/app/retention", "Retention", 5.0),
    ("/app/projects", "Projects", 5.0),
    ("/app/projects/new", "New project", 0.5),
    ("/app/settings", "Settings", 4.0),
    ("/app/team", "Team", 2.5),
    ("/app/billing", "Billing", 1.5),
    ("/app/onboarding", "Get started", 2.0),
];

pub(crate) static PAGES: LazyLock<PageCatalog> = LazyLock::new(build_pages);

fn build_pages() -> PageCatalog {
    let mut pages = Vec::new();
    let mut anonymous = Vec::new();
    let mut signed_in = Vec::new();
    for &(path, title, anon, signed) in MARKETING_PAGES {
        pages.push(Page {
            path: path.to_owned(),
            title: title.to_owned(),
        });
        anonymous.push(anon);
        signed_in.push(signed);
    }
    // Docs and blog traffic is spread over many pages with a long tail; the share of
    // the whole area is fixed and split by rank so a "top pages" chart looks real.
    let mut docs = Vec::new();
    for (rank, &(slug, title)) in DOC_PAGES.iter().enumerate() {
        docs.push(pages.len() as u16);
        pages.push(Page {
            path: format!("/docs/{slug}"),
            title: format!("Docs: {title}"),
        });
        let w = 1.0 / (rank as f64 + 2.0);
        anonymous.push(22.0 * w);
        signed_in.push(10.0 * w);
    }
    let mut blog = Vec::new();
    for (rank, &(slug, title)) in BLOG_POSTS.iter().enumerate() {
        blog.push(pages.len() as u16);
        pages.push(Page {
            path: format!("/blog/{slug}"),
            title: title.to_owned(),
        });
        let w = 1.0 / (rank as f64 + 2.0);
        anonymous.push(16.0 * w);
        signed_in.push(1.0 * w);
    }
    for &(path, title, w) in APP_PAGES {
        pages.push(Page {
            path: path.to_owned(),
            title: title.to_owned(),
        });
        anonymous.push(0.0);
        signed_in.push(w);
    }
    let index_of = |path: &str| -> u16 {
        pages
            .iter()
            .position(|p| p.path == path)
            .map_or(0, |i| i as u16)
    };
    PageCatalog {
        home: index_of("/"),
        pricing: index_of("/pricing"),
        signup: index_of("/signup"),
        login: index_of("/login"),
        new_project: index_of("/app/projects/new"),
        billing: index_of("/app/billing"),
        anonymous: Weighted::new(anonymous),
        signed_in: Weighted::new(signed_in),
        docs,
        blog,
        pages,
    }
}

/// Native app screens: `(name, anonymous weight, signed-in weight)`.
pub(crate) const SCREENS: &[(&str, f64, f64)] = &[
    ("Welcome", 10.0, 0.0),
    ("Onboarding", 6.0, 0.5),
    ("Sign Up", 2.0, 0.0),
    ("Log In", 3.0, 0.0),
    ("Dashboard", 0.0, 20.0),
    ("Insights", 0.0, 12.0),
    ("Insight Detail", 0.0, 10.0),
    ("Events", 0.0, 6.0),
    ("Activity", 0.0, 6.0),
    ("Projects", 0.0, 4.0),
    ("Notifications", 0.0, 5.0),
    ("Settings", 0.0, 3.0),
    ("Profile", 0.0, 2.0),
    ("Billing", 0.0, 0.5),
];
pub(crate) const SCREEN_SIGN_UP: u16 = 2;
pub(crate) const SCREEN_LOG_IN: u16 = 3;
pub(crate) const SCREEN_PROJECTS: u16 = 9;
pub(crate) const SCREEN_BILLING: u16 = 13;

pub(crate) static SCREENS_ANONYMOUS: LazyLock<Weighted> =
    LazyLock::new(|| Weighted::new(SCREENS.iter().map(|s| s.1)));
pub(crate) static SCREENS_SIGNED_IN: LazyLock<Weighted> =
    LazyLock::new(|| Weighted::new(SCREENS.iter().map(|s| s.2)));

/// In-app actions of signed-in people, beyond page views.
pub(crate) struct Action {
    pub name: &'static str,
    /// Property naming the action's variant, and the variants.
    pub variant_key: &'static str,
    pub variants: &'static [&'static str],
    /// Median of `duration_ms` (log-normal).
    pub median_duration_ms: f64,
    /// Mean of `items` (1 + geometric).
    pub mean_items: f64,
    pub weight: f64,
}

pub(crate) const ACTIONS: &[Action] = &[
    Action {
        name: "dashboard_viewed",
        variant_key: "dashboard",
        variants: &[
            "Overview",
            "Growth",
            "Engagement",
            "Revenue",
            "Web analytics",
        ],
        median_duration_ms: 420.0,
        mean_items: 8.0,
        weight: 30.0,
    },
    Action {
        name: "insight_viewed",
        variant_key: "insight_type",
        variants: &["trends", "funnel", "retention", "paths", "stickiness"],
        median_duration_ms: 380.0,
        mean_items: 3.0,
        weight: 24.0,
    },
    Action {
        name: "insight_created",
        variant_key: "insight_type",
        variants: &["trends", "funnel", "retention", "paths", "stickiness"],
        median_duration_ms: 650.0,
        mean_items: 2.0,
        weight: 8.0,
    },
    Action {
        name: "search_performed",
        variant_key: "search_scope",
        variants: &["events", "persons", "insights", "docs"],
        median_duration_ms: 120.0,
        mean_items: 12.0,
        weight: 14.0,
    },
    Action {
        name: "filter_applied",
        variant_key: "filter_type",
        variants: &["property", "cohort", "date_range", "breakdown"],
        median_duration_ms: 90.0,
        mean_items: 1.5,
        weight: 12.0,
    },
    Action {
        name: "report_exported",
        variant_key: "export_format",
        variants: &["csv", "png", "pdf"],
        median_duration_ms: 1800.0,
        mean_items: 400.0,
        weight: 4.0,
    },
];

pub(crate) static ACTION_DIST: LazyLock<Weighted> =
    LazyLock::new(|| Weighted::new(ACTIONS.iter().map(|a| a.weight)));

/// Person plans chosen at sign-up, with their effect on the funnel.
pub(crate) struct PersonPlan {
    pub name: &'static str,
    pub weight: f64,
    pub activation: f64,
    pub invite: f64,
    pub purchase: f64,
    /// Median purchase amount in the tenant's currency unit (log-normal).
    pub median_amount: f64,
}

pub(crate) const PERSON_PLANS: &[PersonPlan] = &[
    PersonPlan {
        name: "free",
        weight: 55.0,
        activation: 0.9,
        invite: 0.75,
        purchase: 0.55,
        median_amount: 19.0,
    },
    PersonPlan {
        name: "starter",
        weight: 25.0,
        activation: 1.05,
        invite: 1.1,
        purchase: 1.3,
        median_amount: 49.0,
    },
    PersonPlan {
        name: "pro",
        weight: 15.0,
        activation: 1.15,
        invite: 1.4,
        purchase: 1.7,
        median_amount: 149.0,
    },
    PersonPlan {
        name: "enterprise",
        weight: 5.0,
        activation: 1.3,
        invite: 1.9,
        purchase: 2.2,
        median_amount: 900.0,
    },
];

pub(crate) static PERSON_PLAN_DIST: LazyLock<Weighted> =
    LazyLock::new(|| Weighted::new(PERSON_PLANS.iter().map(|p| p.weight)));

pub(crate) const SIGNUP_METHODS: &[&str] = &["email", "google", "github", "sso"];
pub(crate) const PROJECT_TEMPLATES: &[&str] = &[
    "blank",
    "web-analytics",
    "product-analytics",
    "ecommerce",
    "mobile-app",
];
pub(crate) const TEAM_ROLES: &[&str] = &["member", "admin", "viewer"];

pub(crate) const FIRST_NAMES: &[&str] = &[
    "ada",
    "alan",
    "grace",
    "linus",
    "margaret",
    "dennis",
    "barbara",
    "ken",
    "frances",
    "edsger",
    "radia",
    "tim",
    "katherine",
    "john",
    "hedy",
    "donald",
    "sophie",
    "guido",
    "annie",
    "bjarne",
    "carol",
    "yukihiro",
    "jean",
    "james",
    "mary",
    "niklaus",
    "karen",
    "leslie",
    "shafi",
    "vint",
    "adele",
    "robin",
    "lynn",
    "brian",
    "evelyn",
    "ivan",
    "joan",
    "larry",
    "susan",
    "whitfield",
    "priya",
    "mateo",
    "amara",
    "kenji",
    "olga",
    "tariq",
    "ines",
    "wei",
];

pub(crate) const LAST_NAMES: &[&str] = &[
    "lovelace",
    "turing",
    "hopper",
    "torvalds",
    "hamilton",
    "ritchie",
    "liskov",
    "thompson",
    "allen",
    "dijkstra",
    "perlman",
    "berners-lee",
    "johnson",
    "mccarthy",
    "lamarr",
    "knuth",
    "wilson",
    "van rossum",
    "easley",
    "stroustrup",
    "shaw",
    "matsumoto",
    "sammet",
    "gosling",
    "keller",
    "wirth",
    "sparck jones",
    "lamport",
    "goldwasser",
    "cerf",
    "goldberg",
    "milner",
    "conway",
    "kernighan",
    "boyd",
    "sutherland",
    "clarke",
    "page",
    "kare",
    "diffie",
    "sharma",
    "garcia",
    "okafor",
    "tanaka",
    "petrova",
    "haddad",
    "moreau",
    "zhang",
];

pub(crate) const COMPANY_WORDS: &[&str] = &[
    "Blue", "Bright", "Cedar", "Copper", "Crimson", "Delta", "Ember", "Falcon", "Granite",
    "Harbor", "Indigo", "Juniper", "Keystone", "Lumen", "Maple", "Nimbus", "Orbit", "Pioneer",
    "Quartz", "Redwood", "Summit", "Tidal", "Vertex", "Willow",
];

/// Second word of a company name and the industry it implies.
pub(crate) const COMPANY_KINDS: &[(&str, &str)] = &[
    ("Analytics", "Software"),
    ("Labs", "Software"),
    ("Systems", "Software"),
    ("Cloud", "Software"),
    ("Health", "Healthcare"),
    ("Logistics", "Logistics"),
    ("Media", "Media"),
    ("Studios", "Media"),
    ("Bank", "Financial Services"),
    ("Capital", "Financial Services"),
    ("Robotics", "Manufacturing"),
    ("Works", "Manufacturing"),
    ("Foods", "Food & Beverage"),
    ("Energy", "Energy"),
    ("Learning", "Education"),
    ("Games", "Gaming"),
];

/// Relative likelihood of starting a session in each local hour of the day.
pub(crate) const DIURNAL: [f64; 24] = [
    0.20, 0.12, 0.08, 0.06, 0.06, 0.10, 0.25, 0.50, 0.80, 1.00, 1.10, 1.10, 1.00, 1.05, 1.10, 1.10,
    1.00, 0.90, 0.75, 0.65, 0.60, 0.55, 0.45, 0.30,
];

pub(crate) static DIURNAL_DIST: LazyLock<Weighted> =
    LazyLock::new(|| Weighted::new(DIURNAL.iter().copied()));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_indices_are_consistent() {
        let pages = &*PAGES;
        assert_eq!(pages.pages[pages.signup as usize].path, "/signup");
        assert_eq!(
            pages.pages[pages.new_project as usize].path,
            "/app/projects/new"
        );
        assert_eq!(pages.pages[pages.billing as usize].path, "/app/billing");
        assert_eq!(pages.pages[pages.login as usize].path, "/login");
        assert_eq!(pages.pages[pages.pricing as usize].path, "/pricing");
        assert_eq!(pages.pages[pages.home as usize].path, "/");
        assert_eq!(SCREENS[SCREEN_SIGN_UP as usize].0, "Sign Up");
        assert_eq!(SCREENS[SCREEN_LOG_IN as usize].0, "Log In");
        assert_eq!(SCREENS[SCREEN_PROJECTS as usize].0, "Projects");
        assert_eq!(SCREENS[SCREEN_BILLING as usize].0, "Billing");
        // Indices are stored as u8/u16 in the simulation.
        assert!(pages.pages.len() < u16::MAX as usize);
        assert!(PLATFORMS.len() < u8::MAX as usize);
        assert!(COUNTRIES.len() < u8::MAX as usize);
        assert!(CHANNELS.len() < u8::MAX as usize);
        for p in PLATFORMS {
            assert!(!p.os_versions.is_empty() && !p.screens.is_empty());
            match p.kind {
                PlatformKind::Web => {
                    assert!(!p.browser_versions.is_empty() && !p.user_agent.is_empty())
                }
                PlatformKind::App => assert!(!p.models.is_empty()),
            }
        }
        for c in CHANNELS {
            assert_eq!(c.utm_source.is_some(), !c.campaigns.is_empty());
        }
    }
}
