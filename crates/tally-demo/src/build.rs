//! Turns simulated [`Spec`]s into [`Event`]s with PostHog-shaped properties.
//!
//! This is the hot path of generation, so it avoids formatting per event: strings that
//! depend on the tenant (URLs, titles, user agents) are formatted once into pools of
//! `serde_json::Value`s; strings that depend on the person (ids, e-mail) once per
//! person-day; and each session keeps a template property map that page views update
//! in place and every event clones. This module decides what properties look like, not
//! what happens when (that is `person`).

use serde_json::{Map, Value};
use tally_core::event::names;
use tally_core::{Event, Properties};
use uuid::Uuid;

use crate::catalog::{
    ACTIONS, CHANNELS, COMPANY_KINDS, COMPANY_WORDS, COUNTRIES, DIRECT, FIRST_NAMES, LAST_NAMES,
    PAGES, PERSON_PLANS, PLATFORMS, PROJECT_TEMPLATES, PlatformKind, SCREENS, SERVER_LIB,
    SERVER_LIB_VERSION, SIGNUP_METHODS, TEAM_ROLES,
};
use crate::config::DemoTenant;
use crate::person::{Kind, MILLISECOND, Person, SECOND, Spec};
use crate::sample::{derive_seed, mix64, unit_from_hash};

/// Property key of the company group in `$groups` and `$group_type`.
pub const COMPANY_GROUP_TYPE: &str = "company";

const APP_VERSIONS: &[(&str, &str)] = &[("2.12.1", "2121"), ("2.13.0", "2130"), ("2.14.0", "2140")];

// Salts that separate the hash-derived streams of one person.
const SALT_COMPANY: u64 = 1;
const SALT_CITY: u64 = 2;
const SALT_ANON: u64 = 3;
const SALT_SESSION: u64 = 4;
const SALT_NAME: u64 = 5;

/// Tenant-level strings, formatted once.
struct Pools {
    host: Value,
    page_urls: Vec<Value>,
    page_paths: Vec<Value>,
    page_titles: Vec<Value>,
    screen_names: Vec<Value>,
    /// `[platform][os_version * browser_versions + browser_version]`.
    user_agents: Vec<Vec<Value>>,
    app_name: Value,
    app_namespace: Value,
}

impl Pools {
    fn new(tenant: &DemoTenant) -> Self {
        let host = tenant.host();
        let display = display_name(&tenant.name);
        let pages = &PAGES.pages;
        let user_agents = PLATFORMS
            .iter()
            .map(|p| {
                let mut v = Vec::new();
                for os in p.os_versions {
                    for bv in p.browser_versions {
                        v.push(Value::String(
                            p.user_agent
                                .replace("{os_}", &os.replace('.', "_"))
                                .replace("{os}", os)
                                .replace("{bv}", bv),
                        ));
                    }
                }
                v
            })
            .collect();
        Pools {
            page_urls: pages
                .iter()
                .map(|p| Value::String(format!("https://{host}{}", p.path)))
                .collect(),
            page_paths: pages
                .iter()
                .map(|p| Value::String(p.path.clone()))
                .collect(),
            page_titles: pages
                .iter()
                .map(|p| Value::String(format!("{} | {display}", p.title)))
                .collect(),
            screen_names: SCREENS.iter().map(|s| Value::from(s.0)).collect(),
            user_agents,
            app_name: Value::String(display),
            app_namespace: Value::String(format!("com.{}.app", tenant.name.replace('-', ""))),
            host: Value::String(host),
        }
    }
}

/// A customer company of the demo tenant (the `company` group).
#[derive(Debug, Clone)]
struct Company {
    name: String,
    key: String,
    industry: &'static str,
    employees: u64,
}

impl Company {
    fn new(tenant_seed: u64, index: u64) -> Self {
        let words = COMPANY_WORDS.len() as u64;
        let kinds = COMPANY_KINDS.len() as u64;
        let (kind, industry) = COMPANY_KINDS[((index / words) % kinds) as usize];
        let mut name = format!("{} {kind}", COMPANY_WORDS[(index % words) as usize]);
        let round = index / (words * kinds);
        if round > 0 {
            name.push_str(&format!(" {}", round + 1));
        }
        let key = name.to_ascii_lowercase().replace(' ', "-");
        // Employees: log-normal around 40 from the company's own hash, so every user
        // of a company reports the same size.
        let h = derive_seed(tenant_seed, &[SALT_COMPANY, index]);
        let u1 = 1.0 - unit_from_hash(h);
        let u2 = unit_from_hash(mix64(h));
        let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let employees = (40.0 * (1.4 * normal).exp()).round().clamp(1.0, 250_000.0) as u64;
        Company {
            name,
            key,
            industry,
            employees,
        }
    }
}

/// Per-person strings, rebuilt whenever the builder moves to another person.
struct PersonStrings {
    index: u64,
    user_id: String,
    anon_ids: [String; 2],
    city: &'static str,
    app_version: usize,
    /// Only people who sign up belong to a company.
    company: Option<Company>,
    groups: Value,
}

impl PersonStrings {
    fn new(person: &Person, tenant_seed: u64, company_pool: u64) -> Self {
        let anon = |device: u64, at: i64| {
            let h = derive_seed(person.seed, &[SALT_ANON, device]);
            uuid_v7(at, h).to_string()
        };
        let country = &COUNTRIES[person.profile.country as usize];
        let city_hash = derive_seed(person.seed, &[SALT_CITY]);
        let company = person.signs_up.then(|| {
            // Zipf-like: a few big customers with many users, a long tail of small ones.
            let u = unit_from_hash(derive_seed(person.seed, &[SALT_COMPANY]));
            let index =
                ((u.powf(2.2) * company_pool as f64) as u64).min(company_pool.saturating_sub(1));
            Company::new(tenant_seed, index)
        });
        let groups = match &company {
            Some(c) => {
                let mut m = Map::new();
                m.insert(COMPANY_GROUP_TYPE.to_owned(), Value::String(c.key.clone()));
                Value::Object(m)
            }
            None => Value::Null,
        };
        let device2_at = if person.device2_at == crate::person::NEVER {
            person.profile.arrival
        } else {
            person.device2_at
        };
        PersonStrings {
            index: person.index,
            user_id: format!("user-{}", person.index + 1),
            anon_ids: [anon(0, person.profile.arrival), anon(1, device2_at)],
            city: country.cities[(city_hash % country.cities.len() as u64) as usize],
            app_version: (city_hash >> 32) as usize % APP_VERSIONS.len(),
            company,
            groups,
        }
    }
}

/// A UUIDv7 for the instant `at` (microseconds) with random bits from `h`.
fn uuid_v7(at: i64, h: u64) -> Uuid {
    let mut entropy = [0u8; 10];
    entropy[..8].copy_from_slice(&h.to_le_bytes());
    entropy[8..].copy_from_slice(&(mix64(h) as u16).to_le_bytes());
    uuid::Builder::from_unix_timestamp_millis((at / MILLISECOND).max(0) as u64, &entropy)
        .into_uuid()
}

pub(crate) struct EventBuilder {
    tenant_seed: u64,
    company_pool: u64,
    pools: Pools,
    person: Option<PersonStrings>,
    /// `(person index, session)` the template belongs to.
    session: Option<(u64, u32)>,
    template: Properties,
    template_identified: bool,
    session_is_app: bool,
    prev_page: Option<(u16, i64)>,
}

impl EventBuilder {
    /// `people` is the tenant's person count; it sizes the pool of companies.
    pub fn new(tenant: &DemoTenant, tenant_seed: u64, people: u64) -> Self {
        EventBuilder {
            tenant_seed,
            company_pool: (people / 6).max(1),
            pools: Pools::new(tenant),
            person: None,
            session: None,
            template: Properties::new(),
            template_identified: false,
            session_is_app: false,
            prev_page: None,
        }
    }

    pub fn build(&mut self, person: &Person, specs: &[Spec], out: &mut Vec<Event>) {
        // Taken out of `self` for the loop so the builder can be borrowed mutably
        // alongside it; put back for the person's next day.
        let strings = match self.person.take() {
            Some(s) if s.index == person.index => s,
            _ => PersonStrings::new(person, self.tenant_seed, self.company_pool),
        };
        for spec in specs {
            let event = self.event(person, &strings, spec);
            out.push(event);
        }
        self.person = Some(strings);
    }

    fn event(&mut self, person: &Person, strings: &PersonStrings, spec: &Spec) -> Event {
        if self.session != Some((person.index, spec.session)) {
            self.start_session(person, strings, spec);
        }
        if spec.identified && !self.template_identified {
            self.mark_identified(strings);
        }
        let distinct_id = if spec.identified {
            strings.user_id.clone()
        } else {
            strings.anon_ids[spec.device as usize].clone()
        };
        let plan = PERSON_PLANS[person.profile.plan as usize].name;
        match spec.kind {
            Kind::Page { page } => self.page(person, spec, page, distinct_id),
            Kind::Action {
                action,
                variant,
                duration_ms,
                items,
            } => {
                let a = &ACTIONS[action as usize];
                let mut props = self.template.clone();
                props.insert(
                    a.variant_key.to_owned(),
                    Value::from(a.variants[variant as usize]),
                );
                props.insert("duration_ms".to_owned(), Value::from(duration_ms));
                props.insert("items".to_owned(), Value::from(items));
                event(spec, a.name, distinct_id, props)
            }
            Kind::Identify => {
                let mut props = self.template.clone();
                props.insert(
                    names::ANON_DISTINCT_ID.to_owned(),
                    Value::String(strings.anon_ids[spec.device as usize].clone()),
                );
                let mut e = event(spec, names::IDENTIFY, strings.user_id.clone(), props);
                e.person_set = person_properties(person, strings);
                e
            }
            Kind::GroupIdentify => {
                let mut props = self.template.clone();
                if let Some(c) = &strings.company {
                    let mut set = Map::new();
                    set.insert("name".to_owned(), Value::String(c.name.clone()));
                    set.insert("industry".to_owned(), Value::from(c.industry));
                    set.insert("employees".to_owned(), Value::from(c.employees));
                    props.insert(
                        names::GROUP_TYPE.to_owned(),
                        Value::from(COMPANY_GROUP_TYPE),
                    );
                    props.insert(names::GROUP_KEY.to_owned(), Value::String(c.key.clone()));
                    props.insert(names::GROUP_SET.to_owned(), Value::Object(set));
                }
                event(spec, names::GROUP_IDENTIFY, strings.user_id.clone(), props)
            }
            Kind::SignedUp => {
                let mut props = self.template.clone();
                props.insert(
                    "signup_method".to_owned(),
                    Value::from(SIGNUP_METHODS[person.profile.signup_method as usize]),
                );
                props.insert("plan".to_owned(), Value::from(plan));
                event(spec, "signed_up", distinct_id, props)
            }
            Kind::ProjectCreated {
                template,
                duration_ms,
            } => {
                let mut props = self.template.clone();
                props.insert(
                    "project_template".to_owned(),
                    Value::from(PROJECT_TEMPLATES[template as usize]),
                );
                props.insert("duration_ms".to_owned(), Value::from(duration_ms));
                event(spec, "project_created", distinct_id, props)
            }
            Kind::InvitedTeammate { role, invitees } => {
                let mut props = server_properties(strings);
                props.insert("role".to_owned(), Value::from(TEAM_ROLES[role as usize]));
                props.insert("invitee_count".to_owned(), Value::from(invitees));
                event(spec, "invited_teammate", strings.user_id.clone(), props)
            }
            Kind::Purchase {
                amount_cents,
                items,
                annual,
            } => {
                let mut props = server_properties(strings);
                props.insert(
                    "amount".to_owned(),
                    Value::from(amount_cents as f64 / 100.0),
                );
                props.insert(
                    "currency".to_owned(),
                    Value::from(COUNTRIES[person.profile.country as usize].currency),
                );
                props.insert("plan".to_owned(), Value::from(plan));
                props.insert("items".to_owned(), Value::from(items));
                props.insert(
                    "billing_period".to_owned(),
                    Value::from(if annual { "annual" } else { "monthly" }),
                );
                event(spec, "purchase", strings.user_id.clone(), props)
            }
        }
    }

    fn page(&mut self, person: &Person, spec: &Spec, page: u16, distinct_id: String) -> Event {
        let p = page as usize;
        let pools = &self.pools;
        if self.session_is_app {
            set(
                &mut self.template,
                "$screen_name",
                pools.screen_names[p].clone(),
            );
            let props = self.template.clone();
            let mut e = event(spec, names::SCREEN, distinct_id, props);
            if spec.first {
                e.person_set_once = initial_properties(&e.properties);
            }
            return e;
        }
        set(
            &mut self.template,
            "$current_url",
            pools.page_urls[p].clone(),
        );
        set(&mut self.template, "$pathname", pools.page_paths[p].clone());
        set(&mut self.template, "$title", pools.page_titles[p].clone());
        if let Some((prev, prev_at)) = self.prev_page {
            set(
                &mut self.template,
                "$prev_pageview_pathname",
                pools.page_paths[prev as usize].clone(),
            );
            set(
                &mut self.template,
                "$prev_pageview_duration",
                Value::from((spec.at - prev_at) / SECOND),
            );
        }
        self.prev_page = Some((page, spec.at));
        let mut props = self.template.clone();
        if spec.first {
            // The landing URL of the very first visit carries the campaign.
            let channel = &CHANNELS[person.profile.channel as usize];
            if let Some(source) = channel.utm_source {
                let campaign = channel
                    .campaigns
                    .get(person.profile.campaign as usize)
                    .copied()
                    .unwrap_or_default();
                let url = format!(
                    "{}?utm_source={source}&utm_medium={}&utm_campaign={campaign}",
                    pools.page_urls[p].as_str().unwrap_or_default(),
                    channel.utm_medium
                );
                props.insert("$current_url".to_owned(), Value::String(url));
                props.insert("utm_source".to_owned(), Value::from(source));
                props.insert("utm_medium".to_owned(), Value::from(channel.utm_medium));
                props.insert("utm_campaign".to_owned(), Value::from(campaign));
            }
        }
        let mut e = event(spec, names::PAGEVIEW, distinct_id, props);
        if spec.first {
            e.person_set_once = initial_properties(&e.properties);
        }
        e
    }

    fn start_session(&mut self, person: &Person, strings: &PersonStrings, spec: &Spec) {
        let device = person.profile.devices[spec.device as usize];
        let platform = device.platform();
        let country = &COUNTRIES[person.profile.country as usize];
        let (width, height) = platform.screens[device.screen as usize];
        let session_hash = derive_seed(person.seed, &[SALT_SESSION, u64::from(spec.session)]);
        let session_id = uuid_v7(spec.at, session_hash).to_string();
        let device_id = Value::String(strings.anon_ids[spec.device as usize].clone());

        let mut m = Map::with_capacity(34);
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        put("$os", Value::from(platform.os));
        put(
            "$os_version",
            Value::from(platform.os_versions[device.os_version as usize]),
        );
        put("$device_type", Value::from(platform.device_type));
        match platform.kind {
            PlatformKind::Web => {
                let bv = platform.browser_versions[device.variant as usize];
                let major: u32 = bv
                    .split('.')
                    .next()
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(0);
                let ua_index = device.os_version as usize * platform.browser_versions.len()
                    + device.variant as usize;
                put("$browser", Value::from(platform.browser));
                put("$browser_version", Value::from(major));
                put(
                    "$raw_user_agent",
                    self.pools.user_agents[device.platform as usize][ua_index].clone(),
                );
                put("$browser_language", Value::from(country.locale));
                put("$screen_height", Value::from(height));
                put("$screen_width", Value::from(width));
                // Browser chrome and docked windows take part of the screen.
                put(
                    "$viewport_height",
                    Value::from(u32::from(height) * 86 / 100),
                );
                put("$viewport_width", Value::from(width));
            }
            PlatformKind::App => {
                let (manufacturer, model) = platform.models[device.variant as usize];
                let (version, build) = APP_VERSIONS[strings.app_version];
                put("$device_manufacturer", Value::from(manufacturer));
                put("$device_model", Value::from(model));
                put("$app_name", self.pools.app_name.clone());
                put("$app_version", Value::from(version));
                put("$app_build", Value::from(build));
                put("$app_namespace", self.pools.app_namespace.clone());
                put("$locale", Value::from(country.locale));
                put("$screen_height", Value::from(height));
                put("$screen_width", Value::from(width));
                put("$network_wifi", Value::Bool(session_hash & 3 != 0));
            }
        }
        put("$lib", Value::from(platform.lib));
        put("$lib_version", Value::from(platform.lib_version));
        put("$timezone", Value::from(country.timezone));
        put("$geoip_country_code", Value::from(country.code));
        put("$geoip_country_name", Value::from(country.name));
        put("$geoip_city_name", Value::from(strings.city));
        put("$geoip_continent_code", Value::from(country.continent));
        put("$device_id", device_id);
        put("$session_id", Value::String(session_id));
        put("$is_identified", Value::Bool(false));
        match platform.kind {
            PlatformKind::Web => {
                let window_id = uuid_v7(spec.at, mix64(session_hash)).to_string();
                let (referrer, referring_domain) =
                    session_referrer(person, spec.session, session_hash);
                put("$window_id", Value::String(window_id));
                put("$host", self.pools.host.clone());
                put("$referrer", Value::from(referrer));
                put("$referring_domain", Value::from(referring_domain));
                // Every web event says which page it happened on; start on the home page
                // until the session's first page view says otherwise.
                let home = PAGES.home as usize;
                put("$current_url", self.pools.page_urls[home].clone());
                put("$pathname", self.pools.page_paths[home].clone());
                put("$title", self.pools.page_titles[home].clone());
            }
            PlatformKind::App => {
                put("$screen_name", self.pools.screen_names[0].clone());
            }
        }
        self.template = m;
        self.template_identified = false;
        self.session_is_app = platform.kind == PlatformKind::App;
        self.session = Some((person.index, spec.session));
        self.prev_page = None;
    }

    fn mark_identified(&mut self, strings: &PersonStrings) {
        set(&mut self.template, "$is_identified", Value::Bool(true));
        if !strings.groups.is_null() {
            set(&mut self.template, "$groups", strings.groups.clone());
        }
        self.template_identified = true;
    }
}

/// The session's external referrer: the acquisition channel on the first visit, then
/// mostly direct traffic with some search.
fn session_referrer(
    person: &Person,
    session: u32,
    session_hash: u64,
) -> (&'static str, &'static str) {
    let channel = &CHANNELS[person.profile.channel as usize];
    if session == 0 {
        return (channel.referrer, channel.referring_domain);
    }
    match unit_from_hash(mix64(session_hash ^ 0x5eed)) {
        u if u < 0.6 => (DIRECT, DIRECT),
        u if u < 0.8 => ("https://www.google.com/", "www.google.com"),
        _ => (channel.referrer, channel.referring_domain),
    }
}

/// Overwrites `key` if present (no key allocation), inserts it otherwise.
fn set(map: &mut Properties, key: &str, value: Value) {
    match map.get_mut(key) {
        Some(slot) => *slot = value,
        None => {
            map.insert(key.to_owned(), value);
        }
    }
}

fn event(spec: &Spec, name: &str, distinct_id: String, properties: Properties) -> Event {
    let uuid = uuid::Builder::from_unix_timestamp_millis(
        (spec.at / MILLISECOND).max(0) as u64,
        &spec.entropy,
    )
    .into_uuid();
    Event {
        uuid,
        event: name.to_owned(),
        distinct_id,
        timestamp: spec.at,
        // Historic data: it is "received" when it happened.
        received_at: spec.at,
        properties,
        person_set: Properties::new(),
        person_set_once: Properties::new(),
    }
}

/// Properties of backend (`posthog-node`) events: no browser, no session.
fn server_properties(strings: &PersonStrings) -> Properties {
    let mut m = Map::with_capacity(8);
    m.insert("$lib".to_owned(), Value::from(SERVER_LIB));
    m.insert("$lib_version".to_owned(), Value::from(SERVER_LIB_VERSION));
    if !strings.groups.is_null() {
        m.insert("$groups".to_owned(), strings.groups.clone());
    }
    m
}

/// `$set` of the sign-up `$identify`.
fn person_properties(person: &Person, strings: &PersonStrings) -> Properties {
    let h = derive_seed(person.seed, &[SALT_NAME]);
    let first = FIRST_NAMES[(h % FIRST_NAMES.len() as u64) as usize];
    let last = LAST_NAMES[((h >> 32) % LAST_NAMES.len() as u64) as usize];
    let domain = match &strings.company {
        Some(c) => format!("{}.example", c.key),
        None => "mail.example".to_owned(),
    };
    let email = format!(
        "{first}.{}{}@{domain}",
        last.replace(' ', ""),
        person.index + 1
    );
    let mut m = Map::with_capacity(4);
    m.insert("email".to_owned(), Value::String(email));
    m.insert(
        "name".to_owned(),
        Value::String(format!("{} {}", title_case(first), title_case(last))),
    );
    m.insert(
        "plan".to_owned(),
        Value::from(PERSON_PLANS[person.profile.plan as usize].name),
    );
    if let Some(c) = &strings.company {
        m.insert("company".to_owned(), Value::String(c.name.clone()));
    }
    m
}

/// `$set_once` of a person's first event: where they came from and on what.
fn initial_properties(props: &Properties) -> Properties {
    const COPIED: &[(&str, &str)] = &[
        ("$referrer", "$initial_referrer"),
        ("$referring_domain", "$initial_referring_domain"),
        ("$current_url", "$initial_current_url"),
        ("$pathname", "$initial_pathname"),
        ("$screen_name", "$initial_screen_name"),
        ("utm_source", "$initial_utm_source"),
        ("utm_medium", "$initial_utm_medium"),
        ("utm_campaign", "$initial_utm_campaign"),
        ("$browser", "$initial_browser"),
        ("$os", "$initial_os"),
        ("$device_type", "$initial_device_type"),
        ("$geoip_country_code", "$initial_geoip_country_code"),
    ];
    let mut m = Map::with_capacity(COPIED.len());
    for (from, to) in COPIED {
        if let Some(v) = props.get(*from) {
            m.insert((*to).to_owned(), v.clone());
        }
    }
    m
}

/// `massive-dynamic` -> `Massive Dynamic`: a tenant's product name for titles.
fn display_name(tenant_name: &str) -> String {
    title_case(&tenant_name.replace('-', " "))
}

/// Capitalises each word: `berners-lee` -> `Berners-Lee`, `van rossum` -> `Van Rossum`.
fn title_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at_word_start = true;
    for c in s.chars() {
        if at_word_start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        at_word_start = c == ' ' || c == '-';
    }
    out
}
