//! API key formats, generation and hashing, plus the validation rules for the
//! operator-chosen names that sit next to keys (tenant slugs, time zones, attributes).
//!
//! Owns what a key looks like and how a secret is stored; does not own where keys are
//! stored (the SQL modules) or how requests present them (ingest and the query API).

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The three kinds of API key Tally issues. Every key is a fixed prefix followed by
/// random base62 characters, so a key pasted into the wrong place can be recognised
/// (and refused) without a database lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Public, per tenant: identifies the tenant for ingest and is safe to ship in a
    /// browser bundle. It grants write access only.
    Write,
    /// Secret, per tenant: reads the tenant's data. Shown once, stored hashed.
    Secret,
    /// Secret, installation-wide: queries across all tenants. Shown once, stored hashed.
    Operator,
}

impl KeyKind {
    pub fn prefix(self) -> &'static str {
        match self {
            KeyKind::Write => "tly_pub_",
            KeyKind::Secret => "tly_sec_",
            KeyKind::Operator => "tly_op_",
        }
    }

    /// Number of random base62 characters after the prefix. 32 characters carry ~190
    /// bits and 40 carry ~238: far beyond guessing, which is also why a fast hash is
    /// enough to store them (see [`hash_secret`]).
    pub fn random_len(self) -> usize {
        match self {
            KeyKind::Write => 32,
            KeyKind::Secret | KeyKind::Operator => 40,
        }
    }

    /// Whether `key` has this kind's shape (prefix, length, alphabet). Says nothing
    /// about whether the key exists.
    pub fn matches_format(self, key: &str) -> bool {
        key.strip_prefix(self.prefix()).is_some_and(|rest| {
            rest.len() == self.random_len() && rest.bytes().all(|b| b.is_ascii_alphanumeric())
        })
    }

    /// A fresh key of this kind from the thread-local CSPRNG (ChaCha, seeded by the OS).
    pub fn generate(self) -> String {
        let mut key = String::with_capacity(self.prefix().len() + self.random_len());
        key.push_str(self.prefix());
        key.extend(
            rand::rng()
                .sample_iter(Alphanumeric)
                .take(self.random_len())
                .map(char::from),
        );
        key
    }
}

/// The stored form of a secret or operator key: lower-case SHA-256 hex.
///
/// A deliberately slow password hash (argon2, bcrypt) protects low-entropy, human-chosen
/// passwords against offline guessing. These keys are 40 random base62 characters
/// (~238 bits), so brute-forcing even a fast hash is hopeless, and a fast hash keeps
/// key verification (once per query request) in the microseconds. No salt is needed
/// for the same reason, and an unsalted digest can be looked up through an index.
pub fn hash_secret(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Longest tenant name: slugs end up in URLs, paths and CLI tables.
pub const MAX_TENANT_NAME_LEN: usize = 63;

/// Checks a tenant slug against `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn validate_tenant_name(name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidTenantName {
            name: name.to_string(),
            reason,
        })
    };
    let Some(first) = name.bytes().next() else {
        return invalid("it is empty");
    };
    if name.len() > MAX_TENANT_NAME_LEN {
        return invalid("it is longer than 63 characters");
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return invalid("it must start with a lower-case letter or a digit");
    }
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-';
    if !name.bytes().all(allowed) {
        return invalid("it contains a character other than a-z, 0-9, '_' and '-'");
    }
    Ok(())
}

/// Resolves an IANA time zone name to its canonical spelling, using the same tz
/// database (chrono-tz) that the query engine uses for time bucketing, so a zone
/// accepted here is one the queries can use.
pub fn canonical_timezone(timezone: &str) -> Result<String> {
    timezone
        .parse::<chrono_tz::Tz>()
        .map(|tz| tz.name().to_string())
        .map_err(|_| Error::InvalidTimezone {
            timezone: timezone.to_string(),
        })
}

pub const MAX_ATTRIBUTE_KEY_LEN: usize = 128;
pub const MAX_ATTRIBUTE_VALUE_LEN: usize = 4096;

pub(crate) fn validate_attribute(key: &str, value: Option<&str>) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidAttribute {
            key: key.to_string(),
            reason,
        })
    };
    if key.trim().is_empty() {
        return invalid("the name is empty");
    }
    if key.len() > MAX_ATTRIBUTE_KEY_LEN {
        return invalid("the name is longer than 128 bytes");
    }
    if key.chars().any(char::is_control) {
        return invalid("the name contains a control character");
    }
    if key == "timezone" {
        // The time zone is a validated column with its own setter, not a free-form
        // attribute; accepting it here would let the two disagree.
        return invalid("the time zone is set with set_tenant_timezone");
    }
    if value.is_some_and(|v| v.len() > MAX_ATTRIBUTE_VALUE_LEN) {
        return invalid("the value is longer than 4096 bytes");
    }
    Ok(())
}

pub const MAX_LABEL_LEN: usize = 200;

pub(crate) fn validate_label(label: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidLabel {
            label: label.to_string(),
            reason,
        })
    };
    if label.trim().is_empty() {
        return invalid("it is empty");
    }
    if label.len() > MAX_LABEL_LEN {
        return invalid("it is longer than 200 bytes");
    }
    if label.chars().any(char::is_control) {
        return invalid("it contains a control character");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_their_documented_shape() {
        for kind in [KeyKind::Write, KeyKind::Secret, KeyKind::Operator] {
            let key = kind.generate();
            assert!(kind.matches_format(&key), "{key}");
            assert_eq!(key.len(), kind.prefix().len() + kind.random_len());
            assert_ne!(key, kind.generate(), "keys are random");
        }
        let write = KeyKind::Write.generate();
        assert!(write.starts_with("tly_pub_") && write.len() == 8 + 32);
        let secret = KeyKind::Secret.generate();
        assert!(secret.starts_with("tly_sec_") && secret.len() == 8 + 40);
        let op = KeyKind::Operator.generate();
        assert!(op.starts_with("tly_op_") && op.len() == 7 + 40);
    }

    #[test]
    fn format_check_refuses_wrong_kinds_and_shapes() {
        let secret = KeyKind::Secret.generate();
        assert!(!KeyKind::Write.matches_format(&secret));
        assert!(!KeyKind::Operator.matches_format(&secret));
        assert!(!KeyKind::Secret.matches_format(&secret[..secret.len() - 1]));
        assert!(!KeyKind::Secret.matches_format(&format!("{secret}x")));
        let mut bad = secret.clone();
        bad.replace_range(10..11, "-");
        assert!(!KeyKind::Secret.matches_format(&bad));
        assert!(!KeyKind::Write.matches_format(""));
        assert!(!KeyKind::Write.matches_format("phc_abc"));
    }

    #[test]
    fn secret_hash_is_sha256_hex() {
        // The SHA-256 of "abc", from FIPS 180-2.
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn tenant_names_follow_the_slug_rule() {
        for ok in ["a", "acme", "acme-prod", "0day", "a_b-c9", &"x".repeat(63)] {
            assert!(validate_tenant_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-acme",
            "_acme",
            "Acme",
            "acme prod",
            "acme.prod",
            "acmé",
            &"x".repeat(64),
        ] {
            let err = validate_tenant_name(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidTenantName { .. }), "{bad}");
        }
    }

    #[test]
    fn time_zones_are_checked_against_the_tz_database() {
        assert_eq!(canonical_timezone("UTC").unwrap(), "UTC");
        assert_eq!(
            canonical_timezone("Europe/Berlin").unwrap(),
            "Europe/Berlin"
        );
        assert_eq!(
            canonical_timezone("America/New_York").unwrap(),
            "America/New_York"
        );
        for bad in ["", "Mars/Olympus", "europe/berlin", "UTC+1", "Berlin"] {
            assert!(
                matches!(canonical_timezone(bad), Err(Error::InvalidTimezone { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn attributes_and_labels_are_validated() {
        assert!(validate_attribute("plan", Some("pro")).is_ok());
        assert!(validate_attribute("plan", None).is_ok());
        assert!(validate_attribute("", Some("x")).is_err());
        assert!(validate_attribute("timezone", Some("UTC")).is_err());
        assert!(validate_attribute("a\nb", Some("x")).is_err());
        assert!(validate_attribute("k", Some(&"v".repeat(4097))).is_err());
        assert!(validate_label("ci").is_ok());
        assert!(validate_label(" ").is_err());
        assert!(validate_label(&"l".repeat(201)).is_err());
    }
}
