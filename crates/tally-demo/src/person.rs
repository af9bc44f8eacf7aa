//! The simulation of one person: who they are, when they come back, what they do in a
//! session, and how far down the sign-up funnel they get.
//!
//! A [`Person`] is a small state machine driven one session at a time. It emits
//! [`Spec`]s, compact descriptions of events with every random choice already made,
//! and never builds an [`Event`](tally_core::Event) itself: counting a tenant's events
//! (to hit the configured total exactly) runs this simulation without paying for JSON
//! properties, and the sweep that builds events runs it again with identical results.
//! All randomness comes from the person's own seeded RNG, so a person's events do not
//! depend on which other people are generated, in which order, or on which thread.

use std::sync::LazyLock;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tally_core::time::MICROS_PER_DAY;

use crate::catalog::{
    ACTION_DIST, ACTIONS, APP_PLATFORMS, CHANNEL_DIST, CHANNELS, COUNTRIES, COUNTRY_DIST,
    DIURNAL_DIST, LandingKind, PAGES, PERSON_PLAN_DIST, PERSON_PLANS, PLATFORMS, PROJECT_TEMPLATES,
    Platform, PlatformKind, SCREEN_BILLING, SCREEN_LOG_IN, SCREEN_PROJECTS, SCREEN_SIGN_UP,
    SCREENS_ANONYMOUS, SCREENS_SIGNED_IN, SIGNUP_METHODS, WEB_PLATFORMS,
};
use crate::model::{TenantModel, is_weekend};
use crate::sample::{Weighted, exponential, geometric, log_normal};

pub(crate) const MILLISECOND: i64 = 1_000;
pub(crate) const SECOND: i64 = 1_000_000;
pub(crate) const MINUTE: i64 = 60 * SECOND;
pub(crate) const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = MICROS_PER_DAY;
/// "Not scheduled": later than any window end.
pub(crate) const NEVER: i64 = i64::MAX;

/// How attached a person gets to the product; drives session frequency, length,
/// lifetime and the odds of signing up. The mix is tuned so that weekly retention
/// starts near 45 % and settles around 15 % (the regulars and power users).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engagement {
    /// Visits once (maybe twice within a day or so) and never returns.
    OneOff,
    /// Comes back a few times a week for a few weeks, then churns.
    Casual,
    /// Uses the product for months.
    Regular,
    /// Daily, long sessions, never churns.
    Power,
}

struct EngagementParams {
    weight: f64,
    /// Mean number of page views per session beyond the first.
    extra_pages: f64,
    /// Chance of an in-app action after a signed-in page view.
    action: f64,
    /// Mean gap between sessions, in days.
    gap_days: f64,
    /// Mean lifetime before churning, in weeks (infinite for power users).
    lifetime_weeks: f64,
    signup: f64,
    activation: f64,
    second_device: f64,
}

const ENGAGEMENTS: [(Engagement, EngagementParams); 4] = [
    (
        Engagement::OneOff,
        EngagementParams {
            weight: 0.38,
            extra_pages: 2.0,
            action: 0.2,
            gap_days: 0.0,
            lifetime_weeks: 0.0,
            signup: 0.12,
            activation: 0.75,
            second_device: 0.05,
        },
    ),
    (
        Engagement::Casual,
        EngagementParams {
            weight: 0.47,
            extra_pages: 3.5,
            action: 0.3,
            gap_days: 3.0,
            lifetime_weeks: 3.5,
            signup: 0.5,
            activation: 0.95,
            second_device: 0.15,
        },
    ),
    (
        Engagement::Regular,
        EngagementParams {
            weight: 0.12,
            extra_pages: 5.0,
            action: 0.4,
            gap_days: 1.6,
            lifetime_weeks: 40.0,
            signup: 0.72,
            activation: 1.15,
            second_device: 0.3,
        },
    ),
    (
        Engagement::Power,
        EngagementParams {
            weight: 0.03,
            extra_pages: 10.0,
            action: 0.55,
            gap_days: 0.6,
            lifetime_weeks: f64::INFINITY,
            signup: 0.92,
            activation: 1.3,
            second_device: 0.5,
        },
    ),
];

static ENGAGEMENT_DIST: LazyLock<Weighted> =
    LazyLock::new(|| Weighted::new(ENGAGEMENTS.iter().map(|e| e.1.weight)));

fn params(e: Engagement) -> &'static EngagementParams {
    // The table is ordered by variant.
    &ENGAGEMENTS[e as usize].1
}

/// Base conversion of each funnel step from the previous one (sign-up is per
/// engagement, see [`EngagementParams::signup`]).
const ACTIVATION_RATE: f64 = 0.55;
const INVITE_RATE: f64 = 0.35;
const PURCHASE_RATE: f64 = 0.20;
const MAX_RATE: f64 = 0.95;

/// One device a person uses, fixed for life: same browser, OS and screen every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Device {
    pub platform: u8,
    pub os_version: u8,
    /// Browser version (web) or device model (app).
    pub variant: u8,
    pub screen: u8,
}

impl Device {
    fn sample(rng: &mut SmallRng, platform: u8) -> Self {
        let p = &PLATFORMS[platform as usize];
        let variants = match p.kind {
            PlatformKind::Web => p.browser_versions.len(),
            PlatformKind::App => p.models.len(),
        };
        Device {
            platform,
            os_version: rng.random_range(0..p.os_versions.len()) as u8,
            variant: rng.random_range(0..variants.max(1)) as u8,
            screen: rng.random_range(0..p.screens.len()) as u8,
        }
    }

    pub fn platform(&self) -> &'static Platform {
        &PLATFORMS[self.platform as usize]
    }

    pub fn is_app(&self) -> bool {
        self.platform().kind == PlatformKind::App
    }
}

/// Who a person is; drawn once, never changes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Profile {
    /// First visit (UTC microseconds).
    pub arrival: i64,
    pub country: u8,
    pub channel: u8,
    pub campaign: u8,
    pub engagement: Engagement,
    /// Plan picked at sign-up (index into `PERSON_PLANS`).
    pub plan: u8,
    pub signup_method: u8,
    /// The main device and, for people with `device2_at != NEVER`, a second one.
    pub devices: [Device; 2],
}

/// What an event is, with its random details decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `$pageview` of a page (web) or `$screen` of a screen (app), by index.
    Page {
        page: u16,
    },
    Action {
        action: u8,
        variant: u8,
        duration_ms: u32,
        items: u32,
    },
    Identify,
    GroupIdentify,
    SignedUp,
    ProjectCreated {
        template: u8,
        duration_ms: u32,
    },
    InvitedTeammate {
        role: u8,
        invitees: u32,
    },
    Purchase {
        amount_cents: u64,
        items: u32,
        annual: bool,
    },
}

/// A fully decided event, waiting to be given properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spec {
    pub at: i64,
    /// Random bits of the event's UUIDv7.
    pub entropy: [u8; 10],
    /// The person's session counter (0 for the first session).
    pub session: u32,
    /// 0 for the main device, 1 for the second.
    pub device: u8,
    /// Whether the device had identified when the event happened (it then carries
    /// the user id instead of the device's anonymous id).
    pub identified: bool,
    /// The person's very first event: it carries UTM parameters and `$set_once`.
    pub first: bool,
    pub kind: Kind,
}

/// One simulated person of one tenant.
#[derive(Debug, Clone)]
pub(crate) struct Person {
    pub index: u64,
    pub seed: u64,
    pub profile: Profile,
    /// When the second device is first used; `NEVER` for people with one device.
    pub device2_at: i64,
    /// Whether the person ever signs up (their user id then exists).
    pub signs_up: bool,
    /// Events this person may still emit; only a tenant's last person is capped, so
    /// that the tenant's total is exact.
    pub remaining: u64,
    rng: SmallRng,
    window_end: i64,
    churn_at: i64,
    next_natural: i64,
    /// Due times of sign-up, activation, invitation and purchase (`NEVER` if the
    /// person stops before that step).
    funnel: [i64; 4],
    funnel_step: u8,
    device2_started: bool,
    identified: [bool; 2],
    revisited: bool,
    first_pending: bool,
    finished: bool,
    last_at: i64,
    session: u32,
}

/// Draws the parts of a person that the sweep needs before the person is simulated:
/// country (for local time) and arrival. Shared by [`Person::new`] and
/// [`Person::arrival_day`] so both consume the RNG identically.
fn draw_origin(model: &TenantModel, rng: &mut SmallRng) -> (u8, i64) {
    let country = COUNTRY_DIST.sample(rng) as u8;
    let offset = i64::from(COUNTRIES[country as usize].utc_offset_minutes) * MINUTE;
    // A local calendar day and a plausible local time on it; redrawn when that falls
    // outside the window, which only happens on the margin days and keeps the
    // distribution exact inside the window.
    for _ in 0..64 {
        let day = model.first_arrival_day + model.arrivals.sample(rng) as i64;
        let arrival = day * DAY + diurnal_time(rng) - offset;
        if (model.start..model.end).contains(&arrival) {
            return (country, arrival);
        }
    }
    // Practically unreachable (each draw lands inside with probability close to 1 for
    // any window of a few days); the middle of the window keeps the person valid.
    (country, model.start + (model.end - model.start) / 2)
}

/// A local time of day (microseconds since local midnight) following the diurnal curve.
fn diurnal_time(rng: &mut SmallRng) -> i64 {
    let hour = DIURNAL_DIST.sample(rng) as i64;
    hour * HOUR + rng.random_range(0..HOUR)
}

fn micros(days: f64) -> i64 {
    // `as` saturates, so absurd draws become NEVER-like rather than wrapping.
    (days * DAY as f64) as i64
}

impl Person {
    /// The window day (index from the tenant's start) on which person `index` arrives.
    pub fn arrival_day(model: &TenantModel, index: u64) -> usize {
        let mut rng = SmallRng::seed_from_u64(model.person_seed(index));
        let (_, arrival) = draw_origin(model, &mut rng);
        model.day_of(arrival).clamp(0, i64::from(model.days) - 1) as usize
    }

    pub fn new(model: &TenantModel, index: u64, remaining: u64) -> Self {
        let seed = model.person_seed(index);
        let mut rng = SmallRng::seed_from_u64(seed);
        let (country, arrival) = draw_origin(model, &mut rng);
        let channel = CHANNEL_DIST.sample(&mut rng) as u8;
        let campaigns = CHANNELS[channel as usize].campaigns.len();
        let campaign = rng.random_range(0..campaigns.max(1)) as u8;
        let engagement = ENGAGEMENTS[ENGAGEMENT_DIST.sample(&mut rng)].0;
        let main_platform = if rng.random::<f64>() < model.tenant.mobile_share {
            APP_PLATFORMS.0[APP_PLATFORMS.1.sample(&mut rng)]
        } else {
            WEB_PLATFORMS.0[WEB_PLATFORMS.1.sample(&mut rng)]
        };
        let main_device = Device::sample(&mut rng, main_platform);
        let plan = PERSON_PLAN_DIST.sample(&mut rng) as u8;
        let signup_method = rng.random_range(0..SIGNUP_METHODS.len()) as u8;
        let p = params(engagement);
        let churn_at = match engagement {
            // Room for one quick return visit.
            Engagement::OneOff => arrival + 3 * DAY,
            _ if p.lifetime_weeks.is_infinite() => NEVER,
            _ => arrival.saturating_add(micros(7.0 * exponential(&mut rng, p.lifetime_weeks))),
        };

        // The funnel is decided up front; each step is conditional on the previous one,
        // so step counts fall monotonically. Country and channel move sign-up and
        // purchase, the plan moves everything after sign-up.
        let country_conv = COUNTRIES[country as usize].conversion;
        let channel_conv = CHANNELS[channel as usize].conversion;
        let person_plan = &PERSON_PLANS[plan as usize];
        let mut funnel = [NEVER; 4];
        let mut device2_at = NEVER;
        let mut second_device = main_device;
        let signup_rate = (p.signup * (country_conv * channel_conv).sqrt()).min(MAX_RATE);
        if rng.random::<f64>() < signup_rate {
            let signup = if rng.random::<f64>() < 0.6 {
                // Right away, a few minutes into the first visit.
                arrival.saturating_add((log_normal(&mut rng, 3.0, 0.8) * MINUTE as f64) as i64)
            } else {
                arrival.saturating_add(micros(log_normal(&mut rng, 1.5, 1.0)).max(HOUR))
            };
            funnel[0] = signup;
            let activation_rate =
                (ACTIVATION_RATE * person_plan.activation * p.activation).min(MAX_RATE);
            if rng.random::<f64>() < activation_rate {
                let delay = (log_normal(&mut rng, 20.0, 1.6) * MINUTE as f64) as i64;
                funnel[1] = signup.saturating_add(delay.max(30 * SECOND));
                if rng.random::<f64>() < (INVITE_RATE * person_plan.invite).min(MAX_RATE) {
                    let delay = (log_normal(&mut rng, 18.0, 1.3) * HOUR as f64) as i64;
                    funnel[2] = funnel[1].saturating_add(delay.max(MINUTE));
                    let purchase_rate =
                        PURCHASE_RATE * person_plan.purchase * country_conv * channel_conv;
                    if rng.random::<f64>() < purchase_rate.min(MAX_RATE) {
                        let delay = micros(log_normal(&mut rng, 2.5, 1.1));
                        funnel[3] = funnel[2].saturating_add(delay.max(10 * MINUTE));
                    }
                }
            }
            if rng.random::<f64>() < p.second_device {
                device2_at =
                    signup.saturating_add(micros(log_normal(&mut rng, 3.0, 1.0)).max(HOUR));
                let platform = second_platform(&mut rng, model, &main_device);
                second_device = Device::sample(&mut rng, platform);
            }
        }

        Person {
            index,
            seed,
            profile: Profile {
                arrival,
                country,
                channel,
                campaign,
                engagement,
                plan,
                signup_method,
                devices: [main_device, second_device],
            },
            device2_at,
            signs_up: funnel[0] != NEVER,
            remaining,
            rng,
            window_end: model.end,
            churn_at,
            next_natural: arrival,
            funnel,
            funnel_step: 0,
            device2_started: false,
            identified: [false; 2],
            revisited: false,
            first_pending: true,
            finished: false,
            last_at: i64::MIN / 2,
            session: 0,
        }
    }

    /// When the next session starts, or `NEVER`.
    pub fn next_start(&self) -> i64 {
        if self.finished {
            return NEVER;
        }
        let funnel = self
            .funnel
            .get(self.funnel_step as usize)
            .copied()
            .unwrap_or(NEVER);
        let device2 = if self.device2_started {
            NEVER
        } else {
            self.device2_at
        };
        self.next_natural.min(funnel).min(device2)
    }

    /// Simulates the next session into `out` (cleared first). Returns `false` when the
    /// person has no more sessions inside the window; `true` with a possibly empty
    /// `out` otherwise.
    pub fn next_session(&mut self, out: &mut Vec<Spec>) -> bool {
        out.clear();
        let trigger = self.next_start();
        if trigger >= self.window_end {
            self.finished = true;
            return false;
        }
        let session = self.session;
        self.session += 1;
        // Sessions are at least a few minutes apart, or analytics would merge them.
        let mut t = trigger.max(self.last_at + 5 * MINUTE);
        let device2_login = !self.device2_started && self.device2_at <= trigger;
        // Once both devices are in use, about 40 % of sessions happen on the second.
        let device = u8::from(device2_login || (self.device2_started && self.rng.random_bool(0.4)));
        let p = params(self.profile.engagement);
        let is_app = self.profile.devices[device as usize].is_app();

        'session: {
            if device2_login {
                // First use of the second device: anonymous until the person logs in,
                // which merges this device's anonymous id into the user.
                self.device2_started = true;
                let login = if is_app { SCREEN_LOG_IN } else { PAGES.login };
                if !self.emit(out, session, device, t, Kind::Page { page: login }) {
                    break 'session;
                }
                t += self.gap(20.0, 0.6);
                if !self.emit(out, session, device, t, Kind::Identify) {
                    break 'session;
                }
                self.identified[1] = true;
                t += SECOND;
            }
            let pages = 1 + geometric(&mut self.rng, p.extra_pages);
            for i in 0..pages {
                let now = t;
                if !self.emit_due_funnel(out, session, device, &mut t, now) {
                    break 'session;
                }
                let page = self.pick_page(device, session == 0 && i == 0);
                if !self.emit(out, session, device, t, Kind::Page { page }) {
                    break 'session;
                }
                if self.identified[device as usize] && self.rng.random_bool(p.action) {
                    t += self.gap(6.0, 0.8);
                    let kind = self.draw_action();
                    if !self.emit(out, session, device, t, kind) {
                        break 'session;
                    }
                }
                t += self.gap(25.0, 1.0).min(20 * MINUTE);
            }
            // Funnel steps due shortly after the last page view belong to this session.
            let until = t + 30 * MINUTE;
            self.emit_due_funnel(out, session, device, &mut t, until);
        }

        if self.finished {
            return true;
        }
        if self.next_natural <= self.last_at + 30 * MINUTE {
            self.next_natural = self.schedule_after(self.last_at);
        }
        true
    }

    /// Appends a spec at `at` (pushed past the previous event so a person's events are
    /// strictly ordered). Returns `false`, and finishes the person, once `at` falls
    /// outside the window.
    fn emit(&mut self, out: &mut Vec<Spec>, session: u32, device: u8, at: i64, kind: Kind) -> bool {
        let at = at.max(self.last_at + MILLISECOND);
        if at >= self.window_end {
            self.finished = true;
            return false;
        }
        let a: u64 = self.rng.random();
        let b: u16 = self.rng.random();
        let mut entropy = [0u8; 10];
        entropy[..8].copy_from_slice(&a.to_le_bytes());
        entropy[8..].copy_from_slice(&b.to_le_bytes());
        out.push(Spec {
            at,
            entropy,
            session,
            device,
            identified: self.identified[device as usize],
            first: std::mem::take(&mut self.first_pending),
            kind,
        });
        self.last_at = at;
        true
    }

    /// A log-normal pause with the given median in seconds.
    fn gap(&mut self, median_seconds: f64, sigma: f64) -> i64 {
        let seconds = log_normal(&mut self.rng, median_seconds, sigma);
        ((seconds * SECOND as f64) as i64).max(MILLISECOND)
    }

    /// Emits every funnel step due by `until`, advancing `t`. Returns `false` if the
    /// window ended.
    fn emit_due_funnel(
        &mut self,
        out: &mut Vec<Spec>,
        session: u32,
        device: u8,
        t: &mut i64,
        until: i64,
    ) -> bool {
        let is_app = self.profile.devices[device as usize].is_app();
        while let Some(&due) = self.funnel.get(self.funnel_step as usize) {
            if due > until {
                break;
            }
            *t = (*t).max(due);
            let step = self.funnel_step;
            self.funnel_step += 1;
            match step {
                0 => {
                    // Sign-up happens on the main device, the only one before it.
                    let page = if is_app { SCREEN_SIGN_UP } else { PAGES.signup };
                    if !self.emit(out, session, device, *t, Kind::Page { page }) {
                        return false;
                    }
                    *t += self.gap(40.0, 0.6);
                    if !self.emit(out, session, device, *t, Kind::Identify) {
                        return false;
                    }
                    self.identified[device as usize] = true;
                    *t += SECOND;
                    if !self.emit(out, session, device, *t, Kind::SignedUp) {
                        return false;
                    }
                    *t += SECOND;
                    if !self.emit(out, session, device, *t, Kind::GroupIdentify) {
                        return false;
                    }
                    *t += self.gap(15.0, 0.8);
                }
                1 => {
                    let page = if is_app {
                        SCREEN_PROJECTS
                    } else {
                        PAGES.new_project
                    };
                    if !self.emit(out, session, device, *t, Kind::Page { page }) {
                        return false;
                    }
                    *t += self.gap(45.0, 0.8);
                    let template = self.rng.random_range(0..PROJECT_TEMPLATES.len()) as u8;
                    let duration_ms = log_normal(&mut self.rng, 2500.0, 0.7) as u32;
                    let kind = Kind::ProjectCreated {
                        template,
                        duration_ms,
                    };
                    if !self.emit(out, session, device, *t, kind) {
                        return false;
                    }
                    *t += 5 * SECOND;
                }
                2 => {
                    let role = match self.rng.random::<f64>() {
                        x if x < 0.7 => 0,
                        x if x < 0.9 => 1,
                        _ => 2,
                    };
                    let invitees = 1 + geometric(&mut self.rng, 0.6);
                    if !self.emit(
                        out,
                        session,
                        device,
                        *t,
                        Kind::InvitedTeammate { role, invitees },
                    ) {
                        return false;
                    }
                    *t += 10 * SECOND;
                }
                _ => {
                    let page = if is_app {
                        SCREEN_BILLING
                    } else {
                        PAGES.billing
                    };
                    if !self.emit(out, session, device, *t, Kind::Page { page }) {
                        return false;
                    }
                    *t += self.gap(60.0, 0.7);
                    let annual = self.rng.random_bool(0.25);
                    let median = PERSON_PLANS[self.profile.plan as usize].median_amount;
                    let amount =
                        log_normal(&mut self.rng, median, 0.7) * if annual { 10.0 } else { 1.0 };
                    let amount_cents = (amount * 100.0).round().max(100.0) as u64;
                    let items = 1 + geometric(&mut self.rng, 0.8);
                    if !self.emit(
                        out,
                        session,
                        device,
                        *t,
                        Kind::Purchase {
                            amount_cents,
                            items,
                            annual,
                        },
                    ) {
                        return false;
                    }
                    *t += 5 * SECOND;
                }
            }
        }
        true
    }

    fn draw_action(&mut self) -> Kind {
        let action = ACTION_DIST.sample(&mut self.rng);
        let a = &ACTIONS[action];
        Kind::Action {
            action: action as u8,
            variant: self.rng.random_range(0..a.variants.len()) as u8,
            duration_ms: log_normal(&mut self.rng, a.median_duration_ms, 0.9).min(600_000.0) as u32,
            items: 1 + geometric(&mut self.rng, a.mean_items - 1.0),
        }
    }

    fn pick_page(&mut self, device: u8, landing: bool) -> u16 {
        let signed_in = self.identified[device as usize];
        if self.profile.devices[device as usize].is_app() {
            let dist = if signed_in {
                &*SCREENS_SIGNED_IN
            } else {
                &*SCREENS_ANONYMOUS
            };
            return dist.sample(&mut self.rng) as u16;
        }
        let pages = &*PAGES;
        if landing {
            // Skewed towards the top posts and docs pages.
            let mut skewed = |list: &[u16]| {
                let u: f64 = self.rng.random();
                list[((u * u * list.len() as f64) as usize).min(list.len() - 1)]
            };
            return match CHANNELS[self.profile.channel as usize].landing {
                LandingKind::Home => pages.home,
                LandingKind::Pricing => pages.pricing,
                LandingKind::Blog => skewed(&pages.blog),
                LandingKind::Docs => skewed(&pages.docs),
            };
        }
        let dist = if signed_in {
            &pages.signed_in
        } else {
            &pages.anonymous
        };
        dist.sample(&mut self.rng) as u16
    }

    /// When the next natural (not funnel-driven) session starts after a session that
    /// ended at `after`.
    fn schedule_after(&mut self, after: i64) -> i64 {
        let p = params(self.profile.engagement);
        let offset =
            i64::from(COUNTRIES[self.profile.country as usize].utc_offset_minutes) * MINUTE;
        if self.profile.engagement == Engagement::OneOff {
            if self.revisited || !self.rng.random_bool(0.3) {
                return NEVER;
            }
            self.revisited = true;
            let at =
                after.saturating_add((log_normal(&mut self.rng, 5.0, 1.0) * HOUR as f64) as i64);
            return if at < self.churn_at {
                at.max(after + 20 * MINUTE)
            } else {
                NEVER
            };
        }
        let mut candidate = after;
        for _ in 0..16 {
            candidate = candidate.saturating_add(micros(exponential(&mut self.rng, p.gap_days)));
            // Weekends are quieter: half of the visits that would land on one are skipped.
            if !(is_weekend(candidate, offset.div_euclid(MINUTE) as i32)
                && self.rng.random_bool(0.5))
            {
                break;
            }
        }
        if candidate >= self.churn_at || candidate >= self.window_end {
            return NEVER;
        }
        // Keep the day, pick a plausible local time of day.
        let local_midnight = (candidate + offset).div_euclid(DAY) * DAY - offset;
        let mut at = local_midnight + diurnal_time(&mut self.rng);
        if at <= after + 20 * MINUTE {
            at += DAY;
        }
        if at >= self.churn_at { NEVER } else { at }
    }
}

/// The second device of a person who has one: the app for products that have one
/// (half the time), otherwise a browser on the other kind of device.
fn second_platform(rng: &mut SmallRng, model: &TenantModel, main: &Device) -> u8 {
    if model.tenant.mobile_share > 0.0 && !main.is_app() && rng.random_bool(0.5) {
        return APP_PLATFORMS.0[APP_PLATFORMS.1.sample(rng)];
    }
    // Someone who found the product on a phone uses a computer at work, and vice versa.
    let (candidates, weights) = if main.platform().device_type == "Desktop" {
        &*HANDHELD_WEB_PLATFORMS
    } else {
        &*DESKTOP_WEB_PLATFORMS
    };
    candidates[weights.sample(rng)]
}

static DESKTOP_WEB_PLATFORMS: LazyLock<(Vec<u8>, Weighted)> =
    LazyLock::new(|| web_platforms_where(|p| p.device_type == "Desktop"));
static HANDHELD_WEB_PLATFORMS: LazyLock<(Vec<u8>, Weighted)> =
    LazyLock::new(|| web_platforms_where(|p| p.device_type != "Desktop"));

fn web_platforms_where(keep: impl Fn(&Platform) -> bool) -> (Vec<u8>, Weighted) {
    let candidates: Vec<u8> = WEB_PLATFORMS
        .0
        .iter()
        .copied()
        .filter(|&i| keep(&PLATFORMS[i as usize]))
        .collect();
    let weights = Weighted::new(candidates.iter().map(|&i| PLATFORMS[i as usize].weight));
    (candidates, weights)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DemoConfig;
    use chrono::{TimeZone, Utc};

    fn model(mobile_share: f64) -> TenantModel {
        let mut tenants = crate::default_tenants(1);
        tenants[0].mobile_share = mobile_share;
        let cfg = DemoConfig {
            total_events: 1,
            tenants,
            days: 90,
            end: Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap(),
            seed: 42,
        };
        TenantModel::new(&cfg, 0)
    }

    fn run(person: &mut Person) -> Vec<Spec> {
        let mut all = Vec::new();
        let mut out = Vec::new();
        while person.next_session(&mut out) {
            all.extend_from_slice(&out);
        }
        all
    }

    #[test]
    fn a_person_is_reproducible_and_ordered_within_the_window() {
        let m = model(0.25);
        for index in 0..300 {
            let a = run(&mut Person::new(&m, index, u64::MAX));
            let b = run(&mut Person::new(&m, index, u64::MAX));
            assert_eq!(a, b);
            assert!(!a.is_empty(), "every person has a first visit");
            assert!(a[0].first && a[1..].iter().all(|s| !s.first));
            assert!(
                a.windows(2).all(|w| w[0].at < w[1].at),
                "strictly increasing"
            );
            assert!(a.iter().all(|s| (m.start..m.end).contains(&s.at)));
            assert_eq!(
                Person::arrival_day(&m, index) as i64,
                m.day_of(a[0].at),
                "arrival_day agrees with the simulation"
            );
        }
    }

    #[test]
    fn funnel_steps_follow_each_other_and_identify_precedes_user_events() {
        let m = model(0.25);
        let mut signed_up = 0;
        for index in 0..2000 {
            let mut person = Person::new(&m, index, u64::MAX);
            let specs = run(&mut person);
            let pos = |k: Kind| specs.iter().position(|s| s.kind == k);
            let signup = pos(Kind::SignedUp);
            if let Some(s) = signup {
                signed_up += 1;
                let identify = pos(Kind::Identify).unwrap();
                assert!(identify < s);
                assert!(!specs[identify].identified && specs[identify].device == 0);
                // Nothing identified happens before the first identify.
                assert!(specs[..identify].iter().all(|s| !s.identified));
            } else {
                assert!(specs.iter().all(|s| !s.identified && s.device == 0));
            }
            let later: Vec<Option<usize>> = specs
                .iter()
                .enumerate()
                .fold([None; 3], |mut acc, (i, s)| {
                    let slot = match s.kind {
                        Kind::ProjectCreated { .. } => 0,
                        Kind::InvitedTeammate { .. } => 1,
                        Kind::Purchase { .. } => 2,
                        _ => return acc,
                    };
                    acc[slot].get_or_insert(i);
                    acc
                })
                .into();
            let mut prev = signup;
            for step in later {
                if step.is_some() {
                    assert!(prev.is_some() && prev < step, "steps in order");
                }
                prev = step;
            }
            // A second device logs in (identifies) before acting as the user.
            if let Some(first) = specs.iter().position(|s| s.device == 1) {
                let login = if person.profile.devices[1].is_app() {
                    SCREEN_LOG_IN
                } else {
                    PAGES.login
                };
                assert_eq!(specs[first].kind, Kind::Page { page: login });
                assert_eq!(specs[first + 1].kind, Kind::Identify);
                assert!(!specs[first].identified);
            }
        }
        assert!(
            signed_up > 500 && signed_up < 1100,
            "about 40 % sign up: {signed_up}"
        );
    }
}
