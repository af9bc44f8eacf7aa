//! The write-ahead-log record of an event batch.
//!
//! A record is the batch as `serde_json` writes an [`EventBatch`] (so replay is a
//! plain `serde_json::from_slice`), but it is written field by field here so that each
//! event's properties are serialised exactly once: the same text goes into the record
//! and, through [`EncodedBatch::properties_json`], into the store's `properties`
//! column. Serialising every property map twice cost ~8 % of the server's CPU at full
//! ingest. A property test holds the bytes equal to `serde_json::to_vec(&batch)`.
//!
//! Owns the record layout; does not own the log framing (tally-wal) nor decoding
//! (serde's derived `Deserialize` for [`EventBatch`]).

use std::io::Write;

use tally_core::{Event, EventBatch, Properties};

/// A batch encoded for the log, with the serialised properties of each event.
#[derive(Debug)]
pub struct EncodedBatch {
    /// The record payload: the batch as JSON.
    pub payload: Vec<u8>,
    /// `properties_json[i]` is `batch.events[i].properties` as compact JSON (`{}` when
    /// empty, although an empty map is left out of the record itself).
    pub properties_json: Vec<String>,
}

/// Encodes a batch as its log record.
pub fn encode(batch: &EventBatch) -> serde_json::Result<EncodedBatch> {
    let mut properties_json = Vec::with_capacity(batch.events.len());
    let mut payload_len = 32;
    for event in &batch.events {
        let text = serde_json::to_string(&event.properties)?;
        payload_len += text.len() + 160 + event.event.len() + event.distinct_id.len();
        properties_json.push(text);
    }
    let mut payload = Vec::with_capacity(payload_len);
    payload.extend_from_slice(b"{\"tenant\":");
    serde_json::to_writer(&mut payload, &batch.tenant)?;
    payload.extend_from_slice(b",\"events\":[");
    for (i, (event, properties)) in batch.events.iter().zip(&properties_json).enumerate() {
        if i > 0 {
            payload.push(b',');
        }
        write_event(&mut payload, event, properties)?;
    }
    payload.extend_from_slice(b"]}");
    Ok(EncodedBatch {
        payload,
        properties_json,
    })
}

/// Writes one event in the field order and with the omissions of `Event`'s derived
/// `Serialize`.
fn write_event(out: &mut Vec<u8>, event: &Event, properties: &str) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"uuid\":");
    serde_json::to_writer(&mut *out, &event.uuid)?;
    out.extend_from_slice(b",\"event\":");
    serde_json::to_writer(&mut *out, &event.event)?;
    out.extend_from_slice(b",\"distinct_id\":");
    serde_json::to_writer(&mut *out, &event.distinct_id)?;
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        ",\"timestamp\":{},\"received_at\":{}",
        event.timestamp, event.received_at
    );
    if !event.properties.is_empty() {
        out.extend_from_slice(b",\"properties\":");
        out.extend_from_slice(properties.as_bytes());
    }
    write_map(out, "person_set", &event.person_set)?;
    write_map(out, "person_set_once", &event.person_set_once)?;
    out.push(b'}');
    Ok(())
}

fn write_map(out: &mut Vec<u8>, name: &str, map: &Properties) -> serde_json::Result<()> {
    if !map.is_empty() {
        let _ = write!(out, ",\"{name}\":");
        serde_json::to_writer(&mut *out, map)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use tally_core::TenantId;
    use uuid::Uuid;

    use super::*;

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            // Quarters round-trip exactly through serde_json's float parser.
            (-4000i32..4000).prop_map(|n| json!(f64::from(n) / 4.0)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((".{0,6}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn arb_map() -> impl Strategy<Value = Properties> {
        prop::collection::vec(("[a-z$\"\\\\é\\n]{0,8}", arb_value()), 0..6)
            .prop_map(|kv| kv.into_iter().collect())
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        (
            any::<u128>(),
            ".{0,10}",
            ".{0,10}",
            any::<i64>(),
            any::<i64>(),
            arb_map(),
            arb_map(),
            arb_map(),
        )
            .prop_map(|(id, name, distinct_id, ts, rx, p, s, so)| Event {
                uuid: Uuid::from_u128(id),
                event: name,
                distinct_id,
                timestamp: ts,
                received_at: rx,
                properties: p,
                person_set: s,
                person_set_once: so,
            })
    }

    proptest! {
        #[test]
        fn record_is_the_derived_serialisation(
            tenant in any::<u32>(),
            events in prop::collection::vec(arb_event(), 0..5),
        ) {
            let batch = EventBatch { tenant: TenantId(tenant), events };
            let encoded = encode(&batch).unwrap();
            prop_assert_eq!(
                String::from_utf8(encoded.payload.clone()).unwrap(),
                serde_json::to_string(&batch).unwrap()
            );
            let decoded: EventBatch = serde_json::from_slice(&encoded.payload).unwrap();
            prop_assert_eq!(&decoded, &batch);
            prop_assert_eq!(encoded.properties_json.len(), batch.events.len());
            for (text, event) in encoded.properties_json.iter().zip(&batch.events) {
                prop_assert_eq!(text, &serde_json::to_string(&event.properties).unwrap());
            }
        }
    }
}
