//! A minimal MaxMind DB (MMDB v2) writer, enough to build a City database for tests:
//! an IPv4 search tree with 24-bit records, a data section, and the metadata map.
//! Format: https://maxmind.github.io/MaxMind-DB/ (types, control bytes, tree layout).

use std::net::Ipv4Addr;

use serde_json::Value;

/// A value in the MMDB data section, with the integer widths the readers expect.
#[derive(Debug, Clone)]
pub enum Data {
    Str(String),
    Double(f64),
    U16(u16),
    U32(u32),
    U64(u64),
    Bool(bool),
    Map(Vec<(String, Data)>),
    Array(Vec<Data>),
}

impl From<&Value> for Data {
    /// Floats become doubles, non-negative integers uint32 (GeoNames ids), objects
    /// maps. `null` is not representable and must not be passed.
    fn from(v: &Value) -> Data {
        match v {
            Value::String(s) => Data::Str(s.clone()),
            Value::Bool(b) => Data::Bool(*b),
            Value::Number(n) if n.is_f64() => Data::Double(n.as_f64().unwrap()),
            Value::Number(n) => Data::U32(u32::try_from(n.as_u64().unwrap()).unwrap()),
            Value::Array(a) => Data::Array(a.iter().map(Data::from).collect()),
            Value::Object(o) => {
                Data::Map(o.iter().map(|(k, v)| (k.clone(), Data::from(v))).collect())
            }
            Value::Null => panic!("MMDB has no null"),
        }
    }
}

fn control(out: &mut Vec<u8>, type_num: u8, size: usize) {
    let (type_bits, extended) = if type_num <= 7 {
        (type_num << 5, None)
    } else {
        (0, Some(type_num - 7))
    };
    let (size_bits, size_bytes): (u8, Vec<u8>) = if size < 29 {
        (size as u8, vec![])
    } else if size < 29 + 256 {
        (29, vec![(size - 29) as u8])
    } else if size < 285 + 65_536 {
        (30, ((size - 285) as u16).to_be_bytes().to_vec())
    } else {
        (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec())
    };
    out.push(type_bits | size_bits);
    if let Some(ext) = extended {
        out.push(ext);
    }
    out.extend_from_slice(&size_bytes);
}

fn uint(out: &mut Vec<u8>, type_num: u8, value: u64, width: usize) {
    let bytes = value.to_be_bytes();
    let significant: Vec<u8> = bytes[8 - width..]
        .iter()
        .copied()
        .skip_while(|b| *b == 0)
        .collect();
    control(out, type_num, significant.len());
    out.extend_from_slice(&significant);
}

pub fn encode(out: &mut Vec<u8>, data: &Data) {
    match data {
        Data::Str(s) => {
            control(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Data::Double(f) => {
            control(out, 3, 8);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Data::U16(v) => uint(out, 5, u64::from(*v), 2),
        Data::U32(v) => uint(out, 6, u64::from(*v), 4),
        Data::U64(v) => uint(out, 9, *v, 8),
        Data::Bool(b) => control(out, 14, usize::from(*b)),
        Data::Map(entries) => {
            control(out, 7, entries.len());
            for (k, v) in entries {
                encode(out, &Data::Str(k.clone()));
                encode(out, v);
            }
        }
        Data::Array(items) => {
            control(out, 11, items.len());
            for item in items {
                encode(out, item);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Record {
    Empty,
    Node(usize),
    Data(usize),
}

/// Builds an IPv4 City database mapping each (network, prefix) to its record.
/// Networks must not overlap.
pub fn city_database(networks: &[(Ipv4Addr, u8, Value)]) -> Vec<u8> {
    let mut data_section = Vec::new();
    let mut nodes: Vec<[Record; 2]> = vec![[Record::Empty, Record::Empty]];
    for (network, prefix, record) in networks {
        assert!((1..=32).contains(prefix));
        let offset = data_section.len();
        encode(&mut data_section, &Data::from(record));
        let bits = u32::from(*network);
        let mut node = 0;
        for depth in 0..*prefix {
            let bit = ((bits >> (31 - depth)) & 1) as usize;
            if depth + 1 == *prefix {
                nodes[node][bit] = Record::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Record::Node(next) => next,
                    _ => {
                        nodes.push([Record::Empty, Record::Empty]);
                        let next = nodes.len() - 1;
                        nodes[node][bit] = Record::Node(next);
                        next
                    }
                };
            }
        }
    }
    let node_count = nodes.len();
    let mut out = Vec::new();
    for node in &nodes {
        for record in node {
            let value = match *record {
                Record::Empty => node_count,
                Record::Node(n) => n,
                Record::Data(offset) => node_count + 16 + offset,
            };
            out.extend_from_slice(&(value as u32).to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data_section);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let metadata = Data::Map(vec![
        ("binary_format_major_version".into(), Data::U16(2)),
        ("binary_format_minor_version".into(), Data::U16(0)),
        ("build_epoch".into(), Data::U64(1_700_000_000)),
        ("database_type".into(), Data::Str("GeoLite2-City".into())),
        (
            "description".into(),
            Data::Map(vec![("en".into(), Data::Str("Tally test City DB".into()))]),
        ),
        ("ip_version".into(), Data::U16(4)),
        (
            "languages".into(),
            Data::Array(vec![Data::Str("en".into())]),
        ),
        ("node_count".into(), Data::U32(node_count as u32)),
        ("record_size".into(), Data::U16(24)),
    ]);
    encode(&mut out, &metadata);
    out
}

/// A GeoIP2-City-shaped record.
pub fn city_record(
    country: (&str, &str),
    city: &str,
    subdivision: &str,
    lat: f64,
    lon: f64,
    tz: &str,
) -> Value {
    serde_json::json!({
        "city": {"geoname_id": 2643743, "names": {"en": city}},
        "continent": {"code": "EU", "names": {"en": "Europe"}},
        "country": {"iso_code": country.0, "names": {"en": country.1}},
        "location": {"latitude": lat, "longitude": lon, "time_zone": tz},
        "subdivisions": [{"iso_code": subdivision, "names": {"en": "England"}}],
        "postal": {"code": "EC1A"}
    })
}

#[test]
fn long_strings_and_sizes_round_trip_through_maxminddb() {
    // Sizes past each control-byte threshold (29, 285, 65821) must decode.
    for len in [0usize, 28, 29, 284, 285, 70_000] {
        let name = "n".repeat(len);
        let db = city_database(&[(
            Ipv4Addr::new(10, 0, 0, 0),
            8,
            serde_json::json!({"city": {"names": {"en": name}}}),
        )]);
        let reader = maxminddb::Reader::from_source(db).unwrap();
        let result = reader.lookup("10.1.2.3".parse().unwrap()).unwrap();
        let city: maxminddb::geoip2::City = result.decode().unwrap().unwrap();
        assert_eq!(city.city.names.english.unwrap().len(), len);
        assert!(
            !reader
                .lookup("11.0.0.1".parse().unwrap())
                .unwrap()
                .has_data()
        );
    }
}
