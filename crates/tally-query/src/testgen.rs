//! Random small event sets and queries for property tests, as proptest strategies
//! (so failures shrink to a minimal case).
//!
//! Owns generation only: the engines' property tests run a generated query on a
//! generated event set through their engine and through [`crate::reference`], and
//! compare. The generator leans on the edge cases where implementations disagree:
//! timestamps tied to the microsecond, events exactly at and one microsecond either
//! side of the conversion window and of local midnights (including a daylight-saving
//! change inside the default range), persons with several distinct ids interleaved
//! mid-funnel (merged identities), the same person id in two tenants, exclusion events
//! at the same instants as step events, properties of every JSON type (numbers sent as
//! strings, mixed case), and empty sets.
//!
//! Available with the `testgen` feature (always in this crate's own tests).

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate, NaiveTime};
use proptest::prelude::*;
use serde_json::{Value, json};
use tally_core::{Properties, TenantId};
use uuid::Uuid;

use crate::breakdown::Breakdown;
use crate::filter::{Filter, FilterValue, Operator, PropertyRef, Scalar};
use crate::funnel::{FunnelExclusion, FunnelOrder, FunnelQuery, FunnelStep, FunnelView};
use crate::reference::{RefContext, RefEvent, RefGroup, RefTenant};
use crate::retention::{CohortKind, RetentionPeriod, RetentionQuery, ReturnMode};
use crate::scope::Scope;
use crate::time::{Calendar, DateRange, Interval, TimeRange, WeekStart, Window, parse_time_zone};
use crate::trends::{Math, PerPersonAggregation, PropertyAggregation, TrendsQuery, TrendsSeries};

/// The shape of generated data.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Tenants `1..=tenants`.
    pub tenants: u32,
    /// Most persons per tenant (0 persons is generated too).
    pub max_persons: usize,
    /// Most events per person.
    pub max_events_per_person: usize,
    /// Event names to draw from; queries use the same names.
    pub event_names: Vec<String>,
    /// The tenants' time zone (IANA).
    pub time_zone: String,
    /// The first local day of the generated period.
    pub first_day: NaiveDate,
    /// How many local days it spans.
    pub days: u32,
    /// The funnel window the timestamps are placed around (and generated funnels use).
    pub window: Window,
}

impl Default for GenConfig {
    /// Two tenants in New York over 2024-03-08 ..= 2024-03-14, which contains the
    /// spring-forward change of 2024-03-10 (a 23-hour day), with a 1-hour window.
    fn default() -> Self {
        GenConfig {
            tenants: 2,
            max_persons: 5,
            max_events_per_person: 7,
            event_names: ["a", "b", "c", "x"].into_iter().map(String::from).collect(),
            time_zone: "America/New_York".to_string(),
            first_day: NaiveDate::from_ymd_opt(2024, 3, 8).unwrap_or_default(),
            days: 7,
            window: Window::hours(1),
        }
    }
}

impl GenConfig {
    fn calendar(&self) -> Calendar {
        let tz = parse_time_zone("time_zone", &self.time_zone).unwrap_or(chrono_tz::Tz::UTC);
        Calendar::new(tz, WeekStart::Monday)
    }

    fn day_start(&self, day: u32) -> i64 {
        let date = self
            .first_day
            .checked_add_days(Days::new(u64::from(day)))
            .unwrap_or(self.first_day);
        self.calendar().period_start(date.and_time(NaiveTime::MIN))
    }

    /// The generated period as an instant range.
    pub fn range(&self) -> TimeRange {
        TimeRange {
            start: self.day_start(0),
            end: self.day_start(self.days),
        }
    }

    /// The generated period as a query date range (absolute local dates).
    pub fn date_range(&self) -> DateRange {
        let last = self
            .first_day
            .checked_add_days(Days::new(u64::from(self.days.saturating_sub(1))))
            .unwrap_or(self.first_day);
        DateRange::Absolute {
            from: self.first_day.format("%Y-%m-%d").to_string(),
            to: Some(last.format("%Y-%m-%d").to_string()),
        }
    }

    /// A context whose "now" is a day after the period, with the tenants' metadata.
    pub fn context(&self) -> RefContext {
        RefContext {
            now: self.day_start(self.days + 1),
            tenants: (1..=self.tenants)
                .map(|id| RefTenant {
                    id: TenantId(id),
                    name: format!("tenant-{id}"),
                    time_zone: self.time_zone.clone(),
                    attributes: BTreeMap::from([(
                        "plan".to_string(),
                        if id % 2 == 0 { "pro" } else { "free" }.to_string(),
                    )]),
                })
                .collect(),
        }
    }

    /// Instants events are placed relative to: the period's bounds and every local
    /// midnight in it.
    fn anchors(&self) -> Vec<i64> {
        (0..=self.days).map(|d| self.day_start(d)).collect()
    }
}

/// Where an event lands relative to its anchor.
#[derive(Debug, Clone, Copy)]
enum Offset {
    Exact,
    Plus(i64),
    Minus(i64),
}

fn offset(window: i64) -> impl Strategy<Value = i64> {
    let hour = 3_600_000_000i64;
    prop_oneof![
        Just(Offset::Exact),
        Just(Offset::Plus(1)),
        Just(Offset::Minus(1)),
        Just(Offset::Plus(window)),
        Just(Offset::Plus(window + 1)),
        Just(Offset::Plus(window - 1)),
        Just(Offset::Plus(window / 2)),
        Just(Offset::Plus(hour)),
        Just(Offset::Minus(hour)),
        (0..2 * window).prop_map(Offset::Plus),
    ]
    .prop_map(|o| match o {
        Offset::Exact => 0,
        Offset::Plus(d) => d,
        Offset::Minus(d) => -d,
    })
}

/// A value for a generated property: every JSON type, numbers as strings, case
/// variants.
fn plan_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(json!("free"))),
        Just(Some(json!("pro"))),
        Just(Some(json!("Pro"))),
        Just(Some(json!(1))),
        Just(Some(json!("1"))),
        Just(Some(json!(true))),
        Just(Some(Value::Null)),
    ]
}

fn amount_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        (0i64..5).prop_map(|n| Some(json!(n))),
        Just(Some(json!(2.5))),
        Just(Some(json!("3"))),
        Just(Some(json!("n/a"))),
    ]
}

fn url_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(json!("https://x.io/pricing"))),
        Just(Some(json!("https://x.io/PRICING/team"))),
        Just(Some(json!("https://x.io/docs"))),
    ]
}

#[derive(Debug, Clone)]
struct GenEvent {
    name: usize,
    /// `None`: the person's home anchor, so that a person's events cluster and
    /// funnels convert often; `Some`: another anchor.
    anchor: Option<usize>,
    offset: i64,
    distinct: usize,
    plan: Option<Value>,
    amount: Option<Value>,
    url: Option<Value>,
    company: Option<usize>,
}

#[derive(Debug, Clone)]
struct GenPerson {
    tenant: u32,
    /// 0: the person id is the first distinct id (anonymous); otherwise a merged
    /// person with its own id.
    merged: bool,
    country: Option<Value>,
    home: usize,
    events: Vec<GenEvent>,
}

/// A random event set for `cfg`. Uuids are unique; the order of the list is random.
pub fn events(cfg: &GenConfig) -> impl Strategy<Value = Vec<RefEvent>> {
    let names = cfg.event_names.len().max(1);
    let anchors = cfg.anchors();
    let window = cfg.window.micros();
    let event = (
        0..names,
        prop_oneof![3 => Just(None), 1 => (0..anchors.len()).prop_map(Some)],
        offset(window),
        0usize..3,
        plan_value(),
        amount_value(),
        url_value(),
        prop::option::of(0usize..2),
    )
        .prop_map(
            |(name, anchor, offset, distinct, plan, amount, url, company)| GenEvent {
                name,
                anchor,
                offset,
                distinct,
                plan,
                amount,
                url,
                company,
            },
        );
    let person = (
        1..=cfg.tenants.max(1),
        any::<bool>(),
        prop_oneof![Just(None), Just(Some(json!("FR"))), Just(Some(json!("US")))],
        0..anchors.len(),
        prop::collection::vec(event, 0..=cfg.max_events_per_person),
    )
        .prop_map(|(tenant, merged, country, home, events)| GenPerson {
            tenant,
            merged,
            country,
            home,
            events,
        });
    let max_people = cfg.max_persons * cfg.tenants.max(1) as usize;
    let cfg = cfg.clone();
    prop::collection::vec(person, 0..=max_people)
        .prop_map(move |people| build(&cfg, &anchors, people))
        .prop_shuffle()
        .prop_map(|mut events| {
            // Uuids follow the shuffled order, so that uuid order (the tie-breaker of
            // equal timestamps) is unrelated to time or person.
            for (i, e) in events.iter_mut().enumerate() {
                e.uuid = Uuid::from_u128(0x7a11_0000_0000_0000_0000_0000_0000_0000 + i as u128);
            }
            events
        })
}

fn build(cfg: &GenConfig, anchors: &[i64], people: Vec<GenPerson>) -> Vec<RefEvent> {
    let mut out = Vec::new();
    for (index, person) in people.into_iter().enumerate() {
        // Person numbers repeat across tenants on purpose: `p0` of tenant 1 and `p0`
        // of tenant 2 are different persons.
        let number = index / cfg.tenants.max(1) as usize;
        let person_id = if person.merged {
            format!("person-{number}")
        } else {
            format!("p{number}-d0")
        };
        let mut person_properties = Properties::new();
        if let Some(c) = &person.country {
            person_properties.insert("country".into(), c.clone());
        }
        person_properties.insert("number".into(), json!(number));
        for g in person.events {
            let mut properties = Properties::new();
            for (key, value) in [
                ("plan", g.plan),
                ("amount", g.amount),
                ("$current_url", g.url),
            ] {
                if let Some(v) = value {
                    properties.insert(key.into(), v);
                }
            }
            let groups = g
                .company
                .map(|c| {
                    let mut props = Properties::new();
                    props.insert("tier".into(), json!(if c == 0 { "gold" } else { "silver" }));
                    BTreeMap::from([(
                        "company".to_string(),
                        RefGroup {
                            key: format!("company-{c}"),
                            properties: props,
                        },
                    )])
                })
                .unwrap_or_default();
            // An anonymous person has one distinct id; a merged one several, used
            // interleaved.
            let distinct = if person.merged { g.distinct } else { 0 };
            out.push(RefEvent {
                tenant: TenantId(person.tenant),
                uuid: Uuid::nil(),
                event: cfg.event_names.get(g.name).cloned().unwrap_or_default(),
                distinct_id: format!("p{number}-d{distinct}"),
                person_id: person_id.clone(),
                timestamp: anchors[g.anchor.unwrap_or(person.home)] + g.offset,
                properties,
                person_properties: person_properties.clone(),
                groups,
            });
        }
    }
    out
}

/// A random filter on the generated properties.
pub fn filter() -> impl Strategy<Value = Filter> {
    let scalar = |s: &str| Some(FilterValue::Scalar(Scalar::String(s.to_string())));
    let leaf = prop_oneof![
        Just(Filter::property(
            PropertyRef::event("plan"),
            Operator::Equals,
            scalar("pro")
        )),
        Just(Filter::property(
            PropertyRef::event("plan"),
            Operator::NotEquals,
            scalar("pro")
        )),
        Just(Filter::property(
            PropertyRef::event("plan"),
            Operator::Equals,
            Some(FilterValue::Scalar(Scalar::Number(1.0)))
        )),
        Just(Filter::property(
            PropertyRef::event("$current_url"),
            Operator::Contains,
            scalar("pricing")
        )),
        Just(Filter::property(
            PropertyRef::event("$current_url"),
            Operator::NotContains,
            scalar("pricing")
        )),
        Just(Filter::property(
            PropertyRef::event("$current_url"),
            Operator::Regex,
            scalar("/(docs|team)$")
        )),
        Just(Filter::property(
            PropertyRef::event("amount"),
            Operator::Gte,
            Some(FilterValue::Scalar(Scalar::Number(2.0)))
        )),
        Just(Filter::property(
            PropertyRef::event("amount"),
            Operator::Lt,
            Some(FilterValue::Scalar(Scalar::Number(3.0)))
        )),
        Just(Filter::property(
            PropertyRef::event("plan"),
            Operator::IsSet,
            None
        )),
        Just(Filter::property(
            PropertyRef::event("plan"),
            Operator::IsNotSet,
            None
        )),
        Just(Filter::property(
            PropertyRef::event("plan"),
            Operator::InList,
            Some(FilterValue::List(vec![
                Scalar::String("free".into()),
                Scalar::Bool(true)
            ])),
        )),
        Just(Filter::property(
            PropertyRef::person("country"),
            Operator::Equals,
            scalar("FR")
        )),
        Just(Filter::property(
            PropertyRef::group("company", "tier"),
            Operator::Equals,
            scalar("gold")
        )),
    ];
    leaf.prop_recursive(2, 6, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|filters| Filter::And { filters }),
            prop::collection::vec(inner, 0..3).prop_map(|filters| Filter::Or { filters }),
        ]
    })
}

fn filters() -> impl Strategy<Value = Vec<Filter>> {
    prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(filter(), 1..=2)]
}

fn breakdown() -> impl Strategy<Value = Option<Breakdown>> {
    let property = prop_oneof![
        Just(PropertyRef::event("plan")),
        Just(PropertyRef::event("amount")),
        Just(PropertyRef::person("country")),
        Just(PropertyRef::group("company", "tier")),
    ];
    prop_oneof![
        2 => Just(None),
        1 => (prop::collection::vec(property, 1..=2), 1u32..4)
            .prop_map(|(properties, limit)| Some(Breakdown { properties, limit })),
    ]
}

fn event_name(cfg: &GenConfig) -> impl Strategy<Value = Option<String>> {
    let names = cfg.event_names.clone();
    prop_oneof![
        5 => (0..names.len().max(1)).prop_map(move |i| names.get(i).cloned()),
        1 => Just(None),
    ]
}

/// A random valid funnel query over the generated period (`Steps` view), tenant 1.
pub fn funnel_query(cfg: &GenConfig) -> impl Strategy<Value = FunnelQuery> {
    let step = (
        event_name(cfg),
        filters(),
        any::<bool>(),
        prop::option::of(1u32..90),
    )
        .prop_map(|(event, filters, optional, window)| FunnelStep {
            event,
            filters,
            optional,
            window: window.map(Window::minutes),
            label: None,
        });
    let order = prop_oneof![
        Just(FunnelOrder::Ordered),
        Just(FunnelOrder::Strict),
        Just(FunnelOrder::AnyOrder)
    ];
    let exclusion =
        (event_name(cfg), 0u32..4, 1u32..4).prop_map(|(event, from, len)| FunnelExclusion {
            event,
            filters: Vec::new(),
            from_step: from,
            to_step: from + len,
        });
    let base = funnel_base(cfg);
    (
        prop::collection::vec(step, 2..=4),
        order,
        prop::collection::vec(exclusion, 0..=1),
        filters(),
        breakdown(),
    )
        .prop_map(move |(mut steps, order, exclusions, filters, breakdown)| {
            let mut q = base.clone();
            steps[0].optional = false;
            steps[0].window = None;
            if order != FunnelOrder::Ordered {
                steps.iter_mut().for_each(|s| s.optional = false);
            }
            if order == FunnelOrder::AnyOrder {
                steps.iter_mut().for_each(|s| s.window = None);
            }
            q.steps = steps;
            q.order = order;
            q.filters = filters;
            q.breakdown = breakdown;
            // Keep the exclusions that are valid for these steps.
            q.exclusions = exclusions
                .into_iter()
                .filter(|x| {
                    order != FunnelOrder::AnyOrder
                        && (x.to_step as usize) < q.steps.len()
                        && !q.steps[x.from_step as usize].optional
                        && !q.steps[x.to_step as usize].optional
                })
                .collect();
            q
        })
}

fn funnel_base(cfg: &GenConfig) -> FunnelQuery {
    FunnelQuery {
        scope: Scope::Tenant(TenantId(1)),
        date_range: cfg.date_range(),
        time_zone: None,
        week_start: WeekStart::Monday,
        filters: Vec::new(),
        steps: Vec::new(),
        window: cfg.window,
        order: FunnelOrder::Ordered,
        exclusions: Vec::new(),
        breakdown: None,
        view: FunnelView::Steps,
    }
}

fn math() -> impl Strategy<Value = Math> {
    let amount = PropertyRef::event("amount");
    prop_oneof![
        Just(Math::Total),
        Just(Math::UniquePersons),
        Just(Math::Dau),
        Just(Math::Wau),
        Just(Math::Mau),
        prop_oneof![
            Just(PropertyAggregation::Sum),
            Just(PropertyAggregation::Avg),
            Just(PropertyAggregation::Min),
            Just(PropertyAggregation::Max),
            Just(PropertyAggregation::Median),
            Just(PropertyAggregation::P90),
        ]
        .prop_map(move |aggregation| Math::Property {
            aggregation,
            property: amount.clone(),
        }),
        prop_oneof![
            Just(PerPersonAggregation::Avg),
            Just(PerPersonAggregation::Median),
            Just(PerPersonAggregation::Max)
        ]
        .prop_map(|aggregation| Math::PerPerson { aggregation }),
    ]
}

/// A random valid trends query over the generated period, tenant 1.
pub fn trends_query(cfg: &GenConfig) -> impl Strategy<Value = TrendsQuery> {
    let series =
        (event_name(cfg), filters(), math()).prop_map(|(event, filters, math)| TrendsSeries {
            event,
            filters,
            math,
            label: None,
        });
    let interval = prop_oneof![
        Just(Interval::Hour),
        Just(Interval::Day),
        Just(Interval::Week)
    ];
    let date_range = cfg.date_range();
    (
        prop::collection::vec(series, 1..=3),
        interval,
        filters(),
        breakdown(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            move |(series, interval, filters, breakdown, compare, formula)| TrendsQuery {
                scope: Scope::Tenant(TenantId(1)),
                date_range: date_range.clone(),
                interval,
                time_zone: None,
                week_start: WeekStart::Monday,
                filters,
                formula: (formula && series.len() >= 2).then(|| "B / A * 100 - 1".to_string()),
                series,
                breakdown,
                compare,
            },
        )
}

/// A random valid retention query over the generated period, tenant 1.
pub fn retention_query(cfg: &GenConfig) -> impl Strategy<Value = RetentionQuery> {
    let date_range = cfg.date_range();
    (
        event_name(cfg),
        event_name(cfg),
        filters(),
        prop_oneof![Just(CohortKind::FirstTime), Just(CohortKind::Recurring)],
        prop_oneof![Just(RetentionPeriod::Day), Just(RetentionPeriod::Week)],
        1u32..8,
        prop_oneof![Just(ReturnMode::On), Just(ReturnMode::OnOrAfter)],
        breakdown(),
    )
        .prop_map(
            move |(start, ret, filters, cohort, period, periods, mode, breakdown)| RetentionQuery {
                scope: Scope::Tenant(TenantId(1)),
                date_range: date_range.clone(),
                time_zone: None,
                week_start: WeekStart::Monday,
                filters,
                start: crate::filter::EventMatcher {
                    event: start,
                    filters: Vec::new(),
                },
                return_event: crate::filter::EventMatcher {
                    event: ret,
                    filters: Vec::new(),
                },
                cohort,
                period,
                periods,
                mode,
                breakdown,
            },
        )
}

#[cfg(test)]
mod tests {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    use super::*;

    #[test]
    fn generated_data_has_the_advertised_edge_cases() {
        let cfg = GenConfig::default();
        let mut runner = TestRunner::deterministic();
        let strategy = events(&cfg);
        let (mut ties, mut empty, mut merged, mut boundary) = (false, false, false, false);
        let range = cfg.range();
        for _ in 0..200 {
            let events = strategy.new_tree(&mut runner).unwrap().current();
            empty |= events.is_empty();
            let mut times: Vec<i64> = events.iter().map(|e| e.timestamp).collect();
            times.sort();
            ties |= times.windows(2).any(|w| w[0] == w[1]);
            merged |= events.iter().any(|e| e.person_id != e.distinct_id);
            boundary |= events
                .iter()
                .any(|e| e.timestamp == range.end || e.timestamp == range.start - 1);
            let mut uuids: Vec<Uuid> = events.iter().map(|e| e.uuid).collect();
            uuids.sort();
            uuids.dedup();
            assert_eq!(uuids.len(), events.len(), "uuids are unique");
        }
        assert!(
            ties && empty && merged && boundary,
            "{ties} {empty} {merged} {boundary}"
        );
    }

    #[test]
    fn generated_queries_are_valid() {
        let cfg = GenConfig::default();
        let mut runner = TestRunner::deterministic();
        for _ in 0..200 {
            funnel_query(&cfg)
                .new_tree(&mut runner)
                .unwrap()
                .current()
                .validate()
                .unwrap();
            trends_query(&cfg)
                .new_tree(&mut runner)
                .unwrap()
                .current()
                .validate()
                .unwrap();
            retention_query(&cfg)
                .new_tree(&mut runner)
                .unwrap()
                .current()
                .validate()
                .unwrap();
        }
    }
}
