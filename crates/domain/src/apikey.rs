//! API keys: 256 random bits behind a recognisable prefix, shown once, stored as SHA-256.

use std::fmt;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every key starts with this, so leaked keys are recognisable by secret scanners and people.
pub const KEY_PREFIX: &str = "gw_live_";
/// Random bytes in a key.
pub const KEY_BYTES: usize = 32;
/// Length of a whole key: the prefix plus the random part in lowercase hex.
pub const KEY_LEN: usize = KEY_PREFIX.len() + KEY_BYTES * 2;
/// Characters of the random part kept in the display prefix shown in lists.
const DISPLAY_CHARS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("an API key starts with '{KEY_PREFIX}'")]
    Prefix,
    #[error("an API key is {KEY_LEN} characters long")]
    Length,
    #[error("an API key holds only lowercase hex digits after its prefix")]
    Alphabet,
}

/// How much of a raw key its display prefix is: the recognisable prefix and the first
/// characters of the random part (less for a shorter string, never splitting a character).
pub fn display_len(raw: &str) -> usize {
    let mut n = (KEY_PREFIX.len() + DISPLAY_CHARS).min(raw.len());
    while !raw.is_char_boundary(n) {
        n -= 1;
    }
    n
}

/// A raw API key. It exists in memory only between generation and being shown to the user once,
/// or while a request that carried it is authenticated.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

/// Prefix of management API tokens: never confusable with a gateway key.
pub const TOKEN_PREFIX: &str = "gw_mgmt_";

/// `prefix` + 256 random bits in lowercase hex, from `rand`'s thread CSPRNG.
fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; KEY_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

impl ApiKey {
    /// A new key from the operating system's CSPRNG (through `rand`'s thread generator).
    pub fn generate() -> Self {
        Self(random_secret(KEY_PREFIX))
    }

    /// A new management API token (same strength, its own prefix).
    pub fn generate_token() -> Self {
        Self(random_secret(TOKEN_PREFIX))
    }

    /// Checks the shape of a key a caller sent, before any lookup.
    pub fn parse(raw: &str) -> Result<Self, ApiKeyError> {
        let Some(rest) = raw.strip_prefix(KEY_PREFIX) else {
            return Err(ApiKeyError::Prefix);
        };
        if raw.len() != KEY_LEN {
            return Err(ApiKeyError::Length);
        }
        if !rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ApiKeyError::Alphabet);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The part shown in lists (`gw_live_1a2b3c4d`): enough to recognise a key, useless to use it.
    pub fn display_prefix(&self) -> String {
        self.0[..display_len(&self.0)].to_owned()
    }

    /// Whether this secret is a management token rather than a gateway key.
    pub fn is_token(&self) -> bool {
        self.0.starts_with(TOKEN_PREFIX)
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…)", self.display_prefix())
    }
}

/// SHA-256 of a raw key: what the database stores and the data plane looks keys up by.
#[derive(Clone, Copy, Hash, PartialEq, Eq)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// Hashes any string a caller sent as a key; unknown shapes simply never match.
    pub fn of(raw: &str) -> Self {
        Self(Sha256::digest(raw.as_bytes()).into())
    }

    pub fn from_hex(hex_str: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_str, &mut out).ok()?;
        Some(Self(out))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Comparison whose time does not depend on where the hashes differ.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", &self.to_hex()[..12])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), KEY_LEN);
        assert!(a.expose().starts_with(KEY_PREFIX));
        assert_eq!(ApiKey::parse(a.expose()), Ok(a.clone()));
        assert!(a.expose().starts_with(&a.display_prefix()));
        assert_eq!(a.display_prefix().len(), KEY_PREFIX.len() + 8);
        assert!(
            !format!("{a:?}").contains(&a.expose()[20..]),
            "Debug must not print the secret"
        );
    }

    #[test]
    fn management_tokens_are_told_apart_from_keys() {
        let t = ApiKey::generate_token();
        assert!(t.expose().starts_with(TOKEN_PREFIX) && t.expose().len() == KEY_LEN);
        assert!(t.is_token());
        assert!(!ApiKey::generate().is_token());
        assert_eq!(
            ApiKey::parse(t.expose()),
            Err(ApiKeyError::Prefix),
            "a token is not a gateway key"
        );
    }

    #[test]
    fn hash_matches_a_known_sha256() {
        // sha256("abc")
        assert_eq!(
            KeyHash::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert_eq!(ApiKey::parse("sk_live_abc"), Err(ApiKeyError::Prefix));
        assert_eq!(ApiKey::parse("gw_live_abc"), Err(ApiKeyError::Length));
        let upper = format!("{KEY_PREFIX}{}", "A".repeat(64));
        assert_eq!(ApiKey::parse(&upper), Err(ApiKeyError::Alphabet));
    }

    proptest! {
        #[test]
        fn key_format_and_hash_round_trip(bytes in proptest::array::uniform32(any::<u8>())) {
            let raw = format!("{KEY_PREFIX}{}", hex::encode(bytes));
            let key = ApiKey::parse(&raw).unwrap();
            let hash = key.hash();
            let back = KeyHash::from_hex(&hash.to_hex()).unwrap();
            prop_assert!(back.ct_eq(&hash));
            prop_assert_eq!(back, KeyHash::of(&raw));
            prop_assert_eq!(hash.to_hex().len(), 64);
        }

        #[test]
        fn different_keys_never_share_a_hash(a in proptest::array::uniform32(any::<u8>()),
                                             b in proptest::array::uniform32(any::<u8>())) {
            prop_assume!(a != b);
            let ka = format!("{KEY_PREFIX}{}", hex::encode(a));
            let kb = format!("{KEY_PREFIX}{}", hex::encode(b));
            prop_assert!(!KeyHash::of(&ka).ct_eq(&KeyHash::of(&kb)));
        }

        #[test]
        fn parse_never_accepts_a_wrong_shape(s in "\\PC{0,80}") {
            if ApiKey::parse(&s).is_ok() {
                prop_assert_eq!(s.len(), KEY_LEN);
                prop_assert!(s.starts_with(KEY_PREFIX));
            }
        }
    }
}
