//! Every event is well-formed: inside the window, valid names and ids, a UUIDv7 that
//! matches its timestamp, and per-person time order in the output stream.

use std::collections::{HashMap, HashSet};

use tally_core::identity::is_denylisted_distinct_id;
use tally_core::time::MICROS_PER_DAY;

use crate::data::DATA;

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 200 && s.chars().all(|c| !c.is_control()) && s.trim() == s
}

#[test]
fn events_are_inside_the_window_with_valid_names_and_ids() {
    let (start, end) = DATA.cfg.window_micros();
    let mut uuids = HashSet::new();
    for events in &DATA.tenants {
        for e in events {
            assert!(
                (start..end).contains(&e.timestamp),
                "{} outside window",
                e.timestamp
            );
            assert_eq!(e.received_at, e.timestamp);
            assert!(valid_name(&e.event), "event name {:?}", e.event);
            assert!(
                valid_name(&e.distinct_id),
                "distinct id {:?}",
                e.distinct_id
            );
            assert!(
                !is_denylisted_distinct_id(&e.distinct_id),
                "{:?}",
                e.distinct_id
            );
            assert!(uuids.insert(e.uuid), "duplicate uuid {}", e.uuid);
            assert_eq!(e.uuid.get_version_num(), 7);
            let (secs, nanos) = e.uuid.get_timestamp().unwrap().to_unix();
            let uuid_ms = secs as i64 * 1000 + i64::from(nanos) / 1_000_000;
            assert_eq!(uuid_ms, e.timestamp.div_euclid(1000), "uuid time matches");
            for key in e.properties.keys() {
                assert!(valid_name(key), "property {key:?}");
            }
            if let Some(anon) = e.properties.get("$anon_distinct_id") {
                let anon = anon.as_str().unwrap();
                assert!(!is_denylisted_distinct_id(anon) && anon != e.distinct_id);
            }
        }
    }
}

#[test]
fn output_is_day_ordered_and_each_id_is_time_ordered() {
    let (start, _) = DATA.cfg.window_micros();
    for events in &DATA.tenants {
        let mut last_by_id: HashMap<&str, i64> = HashMap::new();
        let mut max_day = 0;
        for e in events {
            if let Some(prev) = last_by_id.insert(&e.distinct_id, e.timestamp) {
                assert!(prev < e.timestamp, "{} goes back in time", e.distinct_id);
            }
            // Sessions started before midnight may run into the next day, no further.
            let day = (e.timestamp - start) / MICROS_PER_DAY;
            assert!(day + 1 >= max_day, "day {day} after day {max_day}");
            max_day = max_day.max(day);
        }
    }
}

#[test]
fn events_are_about_a_kilobyte_with_twenty_to_thirty_properties() {
    let events = &DATA.tenants[0];
    let sample: Vec<_> = events.iter().step_by(37).collect();
    let bytes: usize = sample
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap().len())
        .sum();
    let props: usize = sample.iter().map(|e| e.properties.len()).sum();
    let mean_bytes = bytes as f64 / sample.len() as f64;
    let mean_props = props as f64 / sample.len() as f64;
    assert!(
        (700.0..1500.0).contains(&mean_bytes),
        "mean size {mean_bytes}"
    );
    assert!(
        (20.0..=34.0).contains(&mean_props),
        "mean properties {mean_props}"
    );
    let pageview = events.iter().find(|e| e.event == "$pageview").unwrap();
    for key in [
        "$current_url",
        "$pathname",
        "$referrer",
        "$session_id",
        "$browser",
        "$os",
        "$device_type",
        "$lib",
        "$host",
        "$geoip_country_code",
    ] {
        assert!(
            pageview.properties.contains_key(key),
            "$pageview lacks {key}"
        );
    }
    let screen = events
        .iter()
        .find(|e| e.event == "$screen")
        .expect("some app traffic");
    assert!(screen.properties["$screen_name"].is_string());
    assert!(
        screen.properties["$lib"]
            .as_str()
            .unwrap()
            .starts_with("posthog-")
    );
}

#[test]
fn purchases_carry_log_normal_amounts() {
    let mut amounts: Vec<f64> = DATA
        .tenants
        .iter()
        .flatten()
        .filter(|e| e.event == "purchase")
        .map(|e| e.properties["amount"].as_f64().unwrap())
        .collect();
    assert!(amounts.len() > 20, "{} purchases", amounts.len());
    assert!(amounts.iter().all(|a| *a >= 1.0));
    amounts.sort_by(f64::total_cmp);
    let median = amounts[amounts.len() / 2];
    let mean = amounts.iter().sum::<f64>() / amounts.len() as f64;
    // Right-skewed: the mean sits well above the median.
    assert!(mean > median * 1.2, "mean {mean} median {median}");
}
