//! The generated behaviour has the shape the demo promises: identity merges that
//! make sense, a falling funnel, decaying retention and weekly seasonality. Each
//! statistic is recomputed here from the raw events.

use std::collections::{HashMap, HashSet};

use tally_core::Event;
use tally_core::time::MICROS_PER_DAY;

use crate::data::DATA;

/// Maps every distinct id to a person key: anonymous ids that were identified map to
/// the user id, everything else to itself.
fn person_of(events: &[Event]) -> HashMap<&str, &str> {
    let mut map = HashMap::new();
    for e in events {
        if e.event == "$identify" {
            let anon = e.properties["$anon_distinct_id"].as_str().unwrap();
            map.insert(anon, e.distinct_id.as_str());
        }
    }
    map
}

fn person_key<'a>(person: &HashMap<&'a str, &'a str>, e: &'a Event) -> &'a str {
    person
        .get(e.distinct_id.as_str())
        .copied()
        .unwrap_or(&e.distinct_id)
}

#[test]
fn identify_merges_an_anonymous_id_the_same_person_used_before() {
    let events = &DATA.tenants[0];
    // Distinct id -> time of its first event.
    let mut first_seen: HashMap<&str, i64> = HashMap::new();
    let mut anon_owner: HashMap<&str, &str> = HashMap::new();
    let mut identified_at: HashMap<&str, i64> = HashMap::new();
    let mut anon_ids_per_user: HashMap<&str, HashSet<&str>> = HashMap::new();
    for e in events {
        if e.event == "$identify" {
            let anon = e.properties["$anon_distinct_id"].as_str().unwrap();
            let seen = first_seen.get(anon).copied();
            assert!(
                seen.is_some_and(|t| t < e.timestamp),
                "{anon} was never used before"
            );
            let owner = anon_owner.entry(anon).or_insert(e.distinct_id.as_str());
            assert_eq!(*owner, e.distinct_id, "{anon} identified as two users");
            identified_at.entry(&e.distinct_id).or_insert(e.timestamp);
            anon_ids_per_user
                .entry(&e.distinct_id)
                .or_default()
                .insert(anon);
            for key in ["email", "name", "plan", "company"] {
                assert!(e.person_set.contains_key(key), "$identify lacks $set {key}");
            }
        }
        first_seen.entry(&e.distinct_id).or_insert(e.timestamp);
    }
    // User ids only appear once they have been identified.
    for e in events {
        if let Some(at) = identified_at.get(e.distinct_id.as_str()) {
            assert!(*at <= e.timestamp, "{} used before identify", e.distinct_id);
        } else {
            assert!(
                !e.distinct_id.starts_with("user-"),
                "{} never identified",
                e.distinct_id
            );
        }
    }
    let users = anon_ids_per_user.len();
    let multi_device = anon_ids_per_user.values().filter(|s| s.len() > 1).count();
    assert!(users > 200, "{users} identified users");
    assert!(
        multi_device * 20 > users && multi_device * 2 < users,
        "{multi_device} of {users} users identify a second device"
    );
    // Identified users belong to companies, announced with $groupidentify.
    let group = events.iter().find(|e| e.event == "$groupidentify").unwrap();
    assert_eq!(group.properties["$group_type"], "company");
    let set = group.properties["$group_set"].as_object().unwrap();
    assert!(
        set.contains_key("name") && set.contains_key("industry") && set.contains_key("employees")
    );
}

#[test]
fn funnel_steps_fall_monotonically_and_in_order() {
    let events = &DATA.tenants[0];
    let person = person_of(events);
    let key = |e: &'static Event| person_key(&person, e);
    let steps = [
        "signed_up",
        "project_created",
        "invited_teammate",
        "purchase",
    ];
    let mut first: Vec<HashMap<&str, i64>> = vec![HashMap::new(); steps.len()];
    let mut visitors = HashSet::new();
    for e in events {
        visitors.insert(key(e));
        if let Some(i) = steps.iter().position(|s| *s == e.event) {
            first[i].entry(key(e)).or_insert(e.timestamp);
        }
    }
    let counts: Vec<usize> = first.iter().map(|m| m.len()).collect();
    assert!(counts.windows(2).all(|w| w[0] > w[1]), "funnel {counts:?}");
    assert!(counts[3] > 0, "funnel {counts:?}");
    let signup_rate = counts[0] as f64 / visitors.len() as f64;
    assert!(
        (0.25..0.6).contains(&signup_rate),
        "sign-up rate {signup_rate}"
    );
    // Nobody reaches a step without the previous one, and never before it.
    for i in 1..steps.len() {
        for (who, at) in &first[i] {
            let prev = first[i - 1]
                .get(who)
                .unwrap_or_else(|| panic!("{who} skipped {}", steps[i - 1]));
            assert!(prev < at, "{who}: {} not after {}", steps[i], steps[i - 1]);
        }
    }
}

#[test]
fn weekly_retention_decays_to_a_stable_tail() {
    let (_, end) = DATA.cfg.window_micros();
    let events = &DATA.tenants[0];
    let person = person_of(events);
    let mut active: HashMap<&str, (i64, HashSet<i64>)> = HashMap::new();
    for e in events {
        let who = person_key(&person, e);
        let entry = active.entry(who).or_insert((e.timestamp, HashSet::new()));
        let week = (e.timestamp - entry.0) / (7 * MICROS_PER_DAY);
        entry.1.insert(week);
    }
    // One cohort that has been observable for at least nine full weeks.
    let cohort: Vec<&HashSet<i64>> = active
        .values()
        .filter(|(first, _)| *first <= end - 63 * MICROS_PER_DAY)
        .map(|(_, weeks)| weeks)
        .collect();
    assert!(cohort.len() > 300, "cohort of {}", cohort.len());
    let retention = |week: i64| {
        cohort.iter().filter(|w| w.contains(&week)).count() as f64 / cohort.len() as f64
    };
    let (w1, w4, w8) = (retention(1), retention(4), retention(8));
    assert!(w1 > w4 && w4 > w8, "week 1 {w1}, week 4 {w4}, week 8 {w8}");
    assert!((0.3..0.6).contains(&w1), "week 1 {w1}");
    assert!((0.08..0.25).contains(&w8), "week 8 {w8}");
}

#[test]
fn weekdays_bring_more_new_people_than_weekends() {
    let events = &DATA.tenants[0];
    let person = person_of(events);
    let mut first_seen: HashMap<&str, i64> = HashMap::new();
    for e in events {
        let who = person_key(&person, e);
        first_seen.entry(who).or_insert(e.timestamp);
    }
    let mut per_weekday = [0usize; 7];
    for at in first_seen.values() {
        // 1970-01-01 was a Thursday; index 0 is Monday.
        per_weekday[((at.div_euclid(MICROS_PER_DAY) + 3) % 7) as usize] += 1;
    }
    let weekday = per_weekday[..5].iter().sum::<usize>() as f64 / 5.0;
    let weekend = per_weekday[5..].iter().sum::<usize>() as f64 / 2.0;
    assert!(weekday > weekend * 1.3, "{per_weekday:?}");
}

#[test]
fn breakdowns_differ_by_country_and_source() {
    let events = &DATA.tenants[0];
    let person = person_of(events);
    let key = |e: &'static Event| person_key(&person, e);
    let mut country: HashMap<&str, &str> = HashMap::new();
    let mut signed_up: HashSet<&str> = HashSet::new();
    let mut sources: HashSet<&str> = HashSet::new();
    for e in events {
        if let Some(c) = e
            .properties
            .get("$geoip_country_code")
            .and_then(|v| v.as_str())
        {
            country.entry(key(e)).or_insert(c);
        }
        if let Some(s) = e.properties.get("utm_source").and_then(|v| v.as_str()) {
            sources.insert(s);
        }
        if e.event == "signed_up" {
            signed_up.insert(key(e));
        }
    }
    let rate = |code: &str| {
        let people: Vec<_> = country
            .iter()
            .filter(|(_, c)| **c == code)
            .map(|(p, _)| *p)
            .collect();
        people.iter().filter(|p| signed_up.contains(*p)).count() as f64 / people.len() as f64
    };
    // The US converts better than India by construction (1.2 vs 0.55 multipliers).
    assert!(
        rate("US") > rate("IN"),
        "US {} IN {}",
        rate("US"),
        rate("IN")
    );
    let countries: HashSet<_> = country.values().collect();
    assert!(countries.len() >= 15, "{} countries", countries.len());
    assert!(sources.len() >= 5, "{sources:?}");
}
