//! Turning a request body into JSON bytes: `Content-Encoding` (gzip, deflate),
//! PostHog's `compression=` hint (`gzip`, `gzip-js`, `base64`), form bodies with a
//! `data=` field, GET pixels with `?data=`, and base64 payloads.
//!
//! Every decompression goes through a reader capped at `max_decompressed_bytes`: the
//! output is never allowed to grow past the cap, so a gzip bomb costs at most the cap
//! in memory and the CPU to inflate that much, then a 413. This module knows nothing
//! of event shapes; it hands back bytes that should be JSON.

use std::io::Read;

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};

use crate::error::{IngestError, Result};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A compression scheme we can undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Gzip,
    /// HTTP's "deflate" is zlib-wrapped per RFC 9110, but some clients send a raw
    /// deflate stream; both are accepted.
    Deflate,
}

/// Query parameters PostHog SDKs put on capture URLs.
#[derive(Debug, Default)]
pub(crate) struct PostHogQuery {
    pub compression: Option<String>,
    /// GET pixel and some legacy SDKs: the payload itself.
    pub data: Option<String>,
    /// posthog-js: the send time in milliseconds since the epoch.
    pub sent_at_ms: Option<String>,
}

impl PostHogQuery {
    /// Parses a query string leniently: a malformed query must not cost the events,
    /// so undecodable input yields the empty query.
    pub fn parse(query: Option<&str>) -> Self {
        query
            .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
            .map(|pairs| {
                let mut out = PostHogQuery::default();
                for (k, v) in pairs {
                    match k.as_str() {
                        "compression" => out.compression = Some(v),
                        "data" => out.data = Some(v),
                        "_" => out.sent_at_ms = Some(v),
                        _ => {}
                    }
                }
                out
            })
            .unwrap_or_default()
    }

    /// The send time, if `_` holds a plausible millisecond timestamp. Old SDKs sent
    /// seconds; those are ignored rather than read as 1970.
    pub fn sent_at_micros(&self) -> Option<i64> {
        let ms: i64 = self.sent_at_ms.as_deref()?.trim().parse().ok()?;
        // 2001-09-09 in milliseconds; anything smaller is seconds or garbage.
        (1_000_000_000_000..7_258_118_400_000)
            .contains(&ms)
            .then(|| ms * 1000)
    }
}

/// Reads the `Content-Encoding` header.
pub(crate) fn content_encoding(headers: &HeaderMap) -> Result<Option<Codec>> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| IngestError::UnsupportedContentEncoding("<non-ASCII>".into()))?
        .trim()
        .to_ascii_lowercase();
    match text.as_str() {
        "" | "identity" => Ok(None),
        "gzip" | "x-gzip" => Ok(Some(Codec::Gzip)),
        "deflate" => Ok(Some(Codec::Deflate)),
        _ => Err(IngestError::UnsupportedContentEncoding(text)),
    }
}

/// Inflates `input`, refusing with [`IngestError::DecodedTooLarge`] as soon as the
/// output would exceed `cap` bytes. Memory use is bounded by `cap`, whatever the
/// compression ratio.
pub(crate) fn decompress_capped(codec: Codec, input: &[u8], cap: usize) -> Result<Vec<u8>> {
    match codec {
        Codec::Gzip => read_capped(flate2::read::MultiGzDecoder::new(input), input.len(), cap),
        Codec::Deflate => {
            match read_capped(flate2::read::ZlibDecoder::new(input), input.len(), cap) {
                Err(IngestError::InvalidCompressedData(_)) => {
                    read_capped(flate2::read::DeflateDecoder::new(input), input.len(), cap)
                }
                other => other,
            }
        }
    }
}

/// Reads at most `cap + 1` bytes from `reader`; one byte over the cap is proof
/// enough that the payload is too large, and nothing past it is ever produced.
pub(crate) fn read_capped(reader: impl Read, input_len: usize, cap: usize) -> Result<Vec<u8>> {
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    // Text compresses 5-10x; start there but never above the cap.
    let mut out = Vec::with_capacity(input_len.saturating_mul(4).min(cap.saturating_add(1)));
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(IngestError::InvalidCompressedData)?;
    if out.len() > cap {
        return Err(IngestError::DecodedTooLarge { limit: cap });
    }
    Ok(out)
}

fn lenient_engine(alphabet: &base64::alphabet::Alphabet) -> GeneralPurpose {
    GeneralPurpose::new(
        alphabet,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    )
}

/// Decodes base64 the way SDKs actually send it: standard or URL-safe alphabet,
/// padded or not, possibly wrapped across lines, and with `+` turned into a space by
/// a form decoder on the way.
pub(crate) fn decode_base64(input: &[u8]) -> Result<Vec<u8>> {
    let cleaned: Vec<u8> = input
        .iter()
        .filter(|b| !matches!(b, b'\n' | b'\r' | b'\t'))
        .map(|&b| if b == b' ' { b'+' } else { b })
        .collect();
    let url_safe = cleaned.iter().any(|b| matches!(b, b'-' | b'_'));
    let engine = if url_safe {
        lenient_engine(&base64::alphabet::URL_SAFE)
    } else {
        lenient_engine(&base64::alphabet::STANDARD)
    };
    engine
        .decode(&cleaned)
        .or_else(|_| general_purpose::STANDARD.decode(&cleaned))
        .map_err(|_| IngestError::InvalidBase64)
}

fn first_non_space(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

fn looks_like_json(bytes: &[u8]) -> bool {
    matches!(first_non_space(bytes), Some(b'{' | b'['))
}

fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

fn check_cap(bytes: Vec<u8>, cap: usize) -> Result<Vec<u8>> {
    if bytes.len() > cap {
        Err(IngestError::DecodedTooLarge { limit: cap })
    } else {
        Ok(bytes)
    }
}

/// Undoes `Content-Encoding`, then inflates a body that is gzip without saying so
/// (clients forget the header often enough that PostHog sniffs the magic bytes too).
pub(crate) fn decode_plain_body(headers: &HeaderMap, body: &[u8], cap: usize) -> Result<Vec<u8>> {
    let bytes = match content_encoding(headers)? {
        Some(codec) => decompress_capped(codec, body, cap)?,
        None => body.to_vec(),
    };
    if is_gzip(&bytes) {
        return decompress_capped(Codec::Gzip, &bytes, cap);
    }
    check_cap(bytes, cap)
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
        .unwrap_or(false)
}

/// Decodes a PostHog capture request into JSON bytes.
///
/// Order: `Content-Encoding`; the payload is the `data` query parameter when present
/// (GET pixel), else the body; a form body (`data=...&compression=...`) is unwrapped;
/// then the `compression` hint (form field wins over query) is applied, falling back
/// to sniffing: gzip magic bytes, JSON, else base64.
pub(crate) fn decode_posthog_body(
    headers: &HeaderMap,
    query: &PostHogQuery,
    body: &[u8],
    cap: usize,
) -> Result<Vec<u8>> {
    let body = match content_encoding(headers)? {
        Some(codec) => decompress_capped(codec, body, cap)?,
        None => body.to_vec(),
    };
    let mut compression = query.compression.clone();
    let mut payload = match query.data.as_deref() {
        Some(data) if !data.is_empty() => data.as_bytes().to_vec(),
        _ => body,
    };
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::NoEvents);
    }

    // A JSON or gzip payload is taken as such even under a form content type: some
    // SDKs label every body as a form.
    let form_like = !looks_like_json(&payload)
        && !is_gzip(&payload)
        && (is_form(headers) || payload.starts_with(b"data="));
    if form_like {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&payload)
            .map_err(|e| IngestError::InvalidForm(e.to_string()))?;
        let mut data = None;
        for (k, v) in pairs {
            match k.as_str() {
                "data" => data = Some(v),
                "compression" => compression = Some(v),
                _ => {}
            }
        }
        payload = data
            .ok_or_else(|| IngestError::InvalidForm("missing `data` field".into()))?
            .into_bytes();
    }

    let hint = compression
        .as_deref()
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let decoded = match hint.as_str() {
        "gzip" | "gzip-js" => {
            if is_gzip(&payload) {
                decompress_capped(Codec::Gzip, &payload, cap)?
            } else {
                sniff(payload, cap)?
            }
        }
        "base64" => {
            let raw = decode_base64(&payload)?;
            if is_gzip(&raw) {
                decompress_capped(Codec::Gzip, &raw, cap)?
            } else {
                raw
            }
        }
        "" | "none" | "identity" => sniff(payload, cap)?,
        // Includes `lz64`, which only posthog-js versions from before 2021 send.
        _ => return Err(IngestError::UnsupportedCompression(hint)),
    };
    check_cap(decoded, cap)
}

/// No (usable) hint: gzip magic, JSON, or base64 of either.
fn sniff(payload: Vec<u8>, cap: usize) -> Result<Vec<u8>> {
    if is_gzip(&payload) {
        return decompress_capped(Codec::Gzip, &payload, cap);
    }
    if looks_like_json(&payload) {
        return Ok(payload);
    }
    match decode_base64(&payload) {
        Ok(raw) if is_gzip(&raw) => decompress_capped(Codec::Gzip, &raw, cap),
        Ok(raw) if looks_like_json(&raw) => Ok(raw),
        // Not base64 of anything useful: hand the original to the JSON parser, whose
        // line/column error is the most useful thing we can say about it.
        _ => Ok(payload),
    }
}

/// Parses JSON, keeping serde's line and column in the error.
pub(crate) fn parse_json(bytes: &[u8]) -> Result<serde_json::Value> {
    serde_json::from_slice(bytes).map_err(IngestError::InvalidJson)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    const JSON: &[u8] = br#"{"event":"e","distinct_id":"d"}"#;

    #[test]
    fn posthog_variants_decode_to_the_same_json() {
        let b64 = general_purpose::STANDARD.encode(JSON);
        let gz = gzip(JSON);
        let q = |c: &str| PostHogQuery {
            compression: Some(c.to_string()),
            ..Default::default()
        };
        let none = PostHogQuery::default();
        let cap = 1 << 20;

        assert_eq!(
            decode_posthog_body(&HeaderMap::new(), &none, JSON, cap).unwrap(),
            JSON
        );
        assert_eq!(
            decode_posthog_body(&HeaderMap::new(), &q("gzip-js"), &gz, cap).unwrap(),
            JSON
        );
        // Compressed but the hint is missing: sniffed.
        assert_eq!(
            decode_posthog_body(&HeaderMap::new(), &none, &gz, cap).unwrap(),
            JSON
        );
        assert_eq!(
            decode_posthog_body(&headers(&[("content-encoding", "gzip")]), &none, &gz, cap)
                .unwrap(),
            JSON
        );
        assert_eq!(
            decode_posthog_body(&HeaderMap::new(), &q("base64"), b64.as_bytes(), cap).unwrap(),
            JSON
        );
        // Form body, base64 data whose '+' became ' ' in transit is still fine.
        let form = format!("data={}&compression=base64", urlencode(&b64));
        let form_headers = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        assert_eq!(
            decode_posthog_body(&form_headers, &none, form.as_bytes(), cap).unwrap(),
            JSON
        );
        // Form body with plain JSON in data=.
        let form = format!("data={}", urlencode(std::str::from_utf8(JSON).unwrap()));
        assert_eq!(
            decode_posthog_body(&form_headers, &none, form.as_bytes(), cap).unwrap(),
            JSON
        );
        // GET pixel.
        let pixel = PostHogQuery {
            data: Some(b64.clone()),
            ..Default::default()
        };
        assert_eq!(
            decode_posthog_body(&HeaderMap::new(), &pixel, b"", cap).unwrap(),
            JSON
        );
    }

    fn urlencode(s: &str) -> String {
        serde_urlencoded::to_string([("x", s)]).unwrap()[2..].to_string()
    }

    #[test]
    fn refuses_unknown_schemes_and_empty_bodies() {
        let cap = 1024;
        assert!(matches!(
            decode_posthog_body(
                &HeaderMap::new(),
                &PostHogQuery {
                    compression: Some("lz64".into()),
                    ..Default::default()
                },
                b"abc",
                cap
            ),
            Err(IngestError::UnsupportedCompression(_))
        ));
        assert!(matches!(
            decode_plain_body(&headers(&[("content-encoding", "br")]), b"abc", cap),
            Err(IngestError::UnsupportedContentEncoding(_))
        ));
        assert!(matches!(
            decode_posthog_body(&HeaderMap::new(), &PostHogQuery::default(), b"  ", cap),
            Err(IngestError::NoEvents)
        ));
        assert!(matches!(
            decode_plain_body(&headers(&[("content-encoding", "gzip")]), b"not gzip", cap),
            Err(IngestError::InvalidCompressedData(_))
        ));
    }

    #[test]
    fn deflate_accepts_zlib_and_raw() {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(JSON).unwrap();
        let zlib = z.finish().unwrap();
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        d.write_all(JSON).unwrap();
        let raw = d.finish().unwrap();
        let h = headers(&[("content-encoding", "deflate")]);
        assert_eq!(decode_plain_body(&h, &zlib, 1024).unwrap(), JSON);
        assert_eq!(decode_plain_body(&h, &raw, 1024).unwrap(), JSON);
    }

    #[test]
    fn cap_is_exact() {
        let data = vec![b'a'; 1000];
        let gz = gzip(&data);
        assert_eq!(
            decompress_capped(Codec::Gzip, &gz, 1000).unwrap().len(),
            1000
        );
        assert!(matches!(
            decompress_capped(Codec::Gzip, &gz, 999),
            Err(IngestError::DecodedTooLarge { limit: 999 })
        ));
    }

    /// A reader that counts how much compressed input the decoder pulled.
    struct Counting<'a> {
        inner: &'a [u8],
        read: std::rc::Rc<std::cell::Cell<usize>>,
    }
    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read.set(self.read.get() + n);
            Ok(n)
        }
    }

    #[test]
    fn gzip_bomb_stops_at_the_cap_without_inflating_the_rest() {
        // 512 MiB of zeros compresses to ~500 KiB. With a 1 MiB cap, the decoder must
        // stop after consuming only a small prefix of the compressed stream (its
        // input buffer is 32 KiB).
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..512 {
            enc.write_all(&chunk).unwrap();
        }
        let bomb = enc.finish().unwrap();
        let consumed = std::rc::Rc::new(std::cell::Cell::new(0));
        let reader = flate2::read::MultiGzDecoder::new(Counting {
            inner: &bomb,
            read: consumed.clone(),
        });
        let cap = 1 << 20;
        assert!(matches!(
            read_capped(reader, bomb.len(), cap),
            Err(IngestError::DecodedTooLarge { .. })
        ));
        assert!(
            consumed.get() < bomb.len() / 8,
            "decoder read {} of {} compressed bytes",
            consumed.get(),
            bomb.len()
        );
    }

    #[test]
    fn sent_at_query_parameter() {
        let q = PostHogQuery::parse(Some("compression=gzip-js&_=1700000000123&ver=1.2.3"));
        assert_eq!(q.compression.as_deref(), Some("gzip-js"));
        assert_eq!(q.sent_at_micros(), Some(1_700_000_000_123_000));
        // Seconds (old SDKs) are ignored, not read as 1970.
        assert_eq!(
            PostHogQuery::parse(Some("_=1700000000")).sent_at_micros(),
            None
        );
        assert_eq!(PostHogQuery::parse(Some("%%%")).sent_at_micros(), None);
    }

    proptest! {
        #[test]
        fn decoding_never_panics(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            compression in proptest::option::of("(gzip|gzip-js|base64|lz64|none|[a-z]{0,5})"),
            form in any::<bool>(),
            gzipped in any::<bool>(),
        ) {
            let body = if gzipped { gzip(&body) } else { body };
            let h = if form {
                headers(&[("content-type", "application/x-www-form-urlencoded")])
            } else {
                HeaderMap::new()
            };
            let q = PostHogQuery { compression, ..Default::default() };
            if let Ok(bytes) = decode_posthog_body(&h, &q, &body, 4096) {
                prop_assert!(bytes.len() <= 4096);
                let _ = parse_json(&bytes);
            }
            let _ = decode_plain_body(&h, &body, 4096);
            let _ = decode_base64(&body);
        }
    }
}
