//! API keys: 190 random bits behind a recognisable prefix and a checksum, shown once, stored as
//! SHA-256.
//!
//! A key is `gw_live_`, 32 base62 characters from the CSPRNG, then 6 base62 characters of the
//! CRC32 of everything before them (GitHub's token scheme): secret scanners recognise a key by
//! [`KEY_PATTERN`] and tell a real one from a lookalike by its checksum, and the data plane
//! refuses a mistyped or made-up key before hashing it ([`plausible`]). Keys made before the
//! checksum (`gw_live_` and 64 lowercase hex digits) keep working.

use std::fmt;

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every key starts with this, so leaked keys are recognisable by secret scanners and people.
pub const KEY_PREFIX: &str = "gw_live_";
/// Random base62 characters in a key (190 bits).
pub const KEY_RANDOM_CHARS: usize = 32;
/// Base62 characters of a key's checksum: the CRC32 of the prefix and the random part.
pub const KEY_CHECKSUM_CHARS: usize = 6;
/// Length of a whole key: the prefix, the random part and the checksum.
pub const KEY_LEN: usize = KEY_PREFIX.len() + KEY_RANDOM_CHARS + KEY_CHECKSUM_CHARS;
/// Length of a key made before the checksum: the prefix and 64 lowercase hex digits.
pub const LEGACY_KEY_LEN: usize = KEY_PREFIX.len() + 64;
/// What a gateway key looks like, for secret scanners (gitleaks, GitHub's partner program): the
/// checksum then tells a real key from a lookalike. Keys made before it match
/// `gw_live_[0-9a-f]{64}`.
pub const KEY_PATTERN: &str = "gw_live_[0-9A-Za-z]{38}";

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Characters of the random part kept in the display prefix shown in lists.
const DISPLAY_CHARS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("an API key starts with '{KEY_PREFIX}'")]
    Prefix,
    #[error("an API key is {KEY_LEN} characters long")]
    Length,
    #[error("an API key holds only letters and digits after its prefix")]
    Alphabet,
    #[error("the API key's checksum does not match: it was mistyped or cut")]
    Checksum,
}

/// The checksum of a key's `body` (its prefix and random part): CRC32 in 6 base62 digits, the
/// most significant first.
fn checksum(body: &str) -> [u8; KEY_CHECKSUM_CHARS] {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut out = [b'0'; KEY_CHECKSUM_CHARS];
    for c in out.iter_mut().rev() {
        *c = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// Whether `raw` can be a key at all: this format with its checksum right, or the format before
/// it. What fails costs the data plane no hash and no lookup.
pub fn plausible(raw: &str) -> bool {
    check_shape(raw).is_ok()
}

fn check_shape(raw: &str) -> Result<(), ApiKeyError> {
    let Some(rest) = raw.strip_prefix(KEY_PREFIX) else {
        return Err(ApiKeyError::Prefix);
    };
    match raw.len() {
        KEY_LEN => {
            if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(ApiKeyError::Alphabet);
            }
            let (body, sum) = raw.split_at(KEY_LEN - KEY_CHECKSUM_CHARS);
            if checksum(body) != sum.as_bytes() {
                return Err(ApiKeyError::Checksum);
            }
            Ok(())
        }
        LEGACY_KEY_LEN => {
            if !rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(ApiKeyError::Alphabet);
            }
            Ok(())
        }
        _ => Err(ApiKeyError::Length),
    }
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

/// `prefix`, 32 random base62 characters from `rand`'s thread CSPRNG, and the checksum of both.
fn random_secret(prefix: &str) -> String {
    let mut rng = rand::rng();
    let mut s = String::with_capacity(KEY_LEN);
    s.push_str(prefix);
    for _ in 0..KEY_RANDOM_CHARS {
        s.push(char::from(BASE62[rng.random_range(0..BASE62.len())]));
    }
    let sum = checksum(&s);
    s.extend(sum.iter().map(|&b| char::from(b)));
    s
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

    /// Checks the shape (and the checksum) of a key a caller sent, before any lookup.
    pub fn parse(raw: &str) -> Result<Self, ApiKeyError> {
        check_shape(raw)?;
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
    fn a_key_is_its_prefix_32_base62_characters_and_their_checksum() {
        let k = ApiKey::generate();
        let raw = k.expose();
        assert_eq!(raw.len(), 46);
        assert!(
            raw[KEY_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        );
        // The pattern published for secret scanners: the prefix and 38 letters or digits.
        assert_eq!(
            KEY_PATTERN,
            format!("{KEY_PREFIX}[0-9A-Za-z]{{{}}}", KEY_LEN - KEY_PREFIX.len())
        );
        let (body, sum) = raw.split_at(KEY_LEN - KEY_CHECKSUM_CHARS);
        assert_eq!(checksum(body), sum.as_bytes());
        // The checksum read back as a number is the body's CRC32 (6 base62 digits hold any u32).
        let zeros = format!("{KEY_PREFIX}{}", "0".repeat(KEY_RANDOM_CHARS));
        let n = crc32fast::hash(zeros.as_bytes());
        let back = checksum(&zeros).iter().fold(0u64, |acc, &c| {
            acc * 62 + BASE62.iter().position(|&b| b == c).unwrap() as u64
        });
        assert_eq!(back, u64::from(n));
        // A key made before the checksum still parses.
        let legacy = format!("{KEY_PREFIX}{}", "ab".repeat(32));
        assert!(ApiKey::parse(&legacy).is_ok() && plausible(&legacy));
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
                prop_assert!(s.len() == KEY_LEN || s.len() == LEGACY_KEY_LEN);
                prop_assert!(s.starts_with(KEY_PREFIX));
            }
        }

        /// Any one character of a key changed (to another letter or digit) fails its checksum.
        #[test]
        fn one_changed_character_fails_the_checksum(at in 0..KEY_RANDOM_CHARS + KEY_CHECKSUM_CHARS,
                                                    to in 0..BASE62.len()) {
            let key = ApiKey::generate();
            let mut bytes = key.expose().as_bytes().to_vec();
            let i = KEY_PREFIX.len() + at;
            prop_assume!(bytes[i] != BASE62[to]);
            bytes[i] = BASE62[to];
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(ApiKey::parse(&changed), Err(ApiKeyError::Checksum));
            prop_assert!(!plausible(&changed));
        }
    }
}
